//! A fresh simulator with a flat site-config pointing at it, and the runs
//! the sections make on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use homestak_api::step::Step;
use homestak_api::{Event, Kind, Mode, NodeState, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::executor;
use homestak_engine::reconcile::{self, Engine, Observer, Request, Setup};

use crate::support;

/// The manifest's name, also its file under `manifests/`.
pub const MANIFEST: &str = "bench";

/// A fresh simulator (default latency model, seeded) and its site-config.
pub struct World {
    pub dir: tempfile::TempDir,
    pub sim: homestak_sim::Handle,
    pub site_root: PathBuf,
    pub site: Arc<Site>,
    /// The simulator's certificate (PEM), for clients that want a CA file.
    pub cert: PathBuf,
    /// The simulator's `latency.storage_lock_hold` (seconds at scale 1).
    pub lock_hold: f64,
}

/// Starts one at time scale `scale`.
pub async fn fresh(scale: f64) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let site_root = dir.path().join("site-config");
    support::flat_site(&site_root);
    let cert = dir.path().join("pve-ssl.pem");
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.time_scale = scale;
    config.seed = Some(1);
    config.work_dir = Some(dir.path().join("sim"));
    config.tls_files = Some(homestak_sim::config::TlsFiles {
        cert: cert.clone(),
        key: dir.path().join("pve-ssl.key"),
    });
    let lock_hold = config.latency.storage_lock_hold;
    let sim = homestak_sim::Simulator::start(config)
        .await
        .expect("simulator starts");
    homestak_sim::site_config::update(&site_root, &sim.ready_info(), "local-zfs", 22)
        .expect("site-config update");
    let site = Arc::new(Site::load(&site_root).expect("site loads"));
    World {
        dir,
        sim,
        site_root,
        site,
        cert,
        lock_hold,
    }
}

/// `vms` independent VMs of one image on the host's one storage.
pub fn manifest_text(vms: usize) -> String {
    let mut text = format!("schema_version: 2\nname: {MANIFEST}\nnodes:\n");
    for i in 0..vms {
        text.push_str(&format!(
            "  - {{name: vm-{i:04}, type: vm, preset: vm-small, image: debian-12}}\n"
        ));
    }
    text.push_str("settings:\n  verify_ssh: false\n");
    text
}

pub fn manifest(vms: usize) -> Arc<Manifest> {
    Arc::new(
        Manifest::from_yaml_str(&manifest_text(vms), Path::new("bench.yaml")).expect("manifest"),
    )
}

impl World {
    /// The state directory the engine (in process or a child) keeps.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes the manifest as `manifests/bench.yaml`, for child processes.
    pub fn write_manifest(&self, vms: usize) {
        support::write(
            &self.site_root.join(format!("manifests/{MANIFEST}.yaml")),
            &manifest_text(vms),
        );
    }

    /// An engine on this world's state directory (the store opened).
    pub fn engine(&self) -> Engine {
        Engine::open(Setup {
            state_dir: self.state_dir(),
            open_store: true,
            ..Setup::default()
        })
        .expect("engine")
    }

    pub fn request(
        &self,
        manifest: Arc<Manifest>,
        mode: Mode,
        options: reconcile::Options,
    ) -> Request {
        Request {
            manifest,
            host: "pve".to_string(),
            site: self.site.clone(),
            revision: None,
            reason: Reason::Cli,
            mode,
            options,
            generation: 0,
        }
    }

    /// Requests the simulator counted since the last reset, by method.
    pub fn requests_by_method(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (key, n) in self.sim.requests() {
            let method = key.split(' ').next().unwrap_or("?").to_string();
            *out.entry(method).or_insert(0) += n;
        }
        out
    }

    pub async fn shutdown(self) {
        let _ = self.sim.shutdown().await;
    }
}

/// True for the text of PVE's storage-lock timeout (local or shared).
pub fn is_storage_lock_timeout(text: &str) -> bool {
    (text.contains("pve-storage-") && text.contains("got timeout"))
        || text.contains("cfs-lock 'storage-")
}

/// Watches a run: storage-lock timeouts, and when the first create ended.
pub struct Watch {
    started: Instant,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Retried steps whose error was a storage-lock timeout.
    retries: u64,
    /// Nodes that ended failed with one.
    failed: u64,
    /// Since the run started, when a `create_vm` step was last done.
    create_done: Option<Duration>,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            started: Instant::now(),
            seen: Mutex::new(Seen::default()),
        }
    }
}

impl Observer for Watch {
    fn progress(&self, event: &Event) {
        let mut seen = self.seen.lock().expect("watch");
        match (&event.kind, &event.state) {
            (Kind::StepRetry, _) if is_storage_lock_timeout(&event.message) => seen.retries += 1,
            (Kind::NodeFinished, Some(NodeState::Failed(why)))
                if is_storage_lock_timeout(why) || is_storage_lock_timeout(&event.message) =>
            {
                seen.failed += 1
            }
            (Kind::StepDone, _) if event.step == Some(Step::CreateVm) => {
                seen.create_done = Some(self.started.elapsed());
            }
            _ => {}
        }
    }
}

/// What one in-process converge did.
pub struct Converged {
    pub wall: Duration,
    pub report: executor::Report,
    /// Retried steps whose error was a storage-lock timeout.
    pub lock_retries: u64,
    /// Nodes that failed with one.
    pub lock_failed: u64,
    /// From the run's start until the last `create_vm` step was done.
    pub through_create: Option<Duration>,
}

/// Converges `vms` VMs on `world` with `options`, in this process.
pub async fn converge(world: &World, vms: usize, options: reconcile::Options) -> Converged {
    let engine = world.engine();
    let request = world.request(manifest(vms), Mode::Apply, options);
    let watch = Watch::new();
    let started = Instant::now();
    let run = engine
        .run_once(request, std::future::pending(), &watch)
        .await
        .expect("plan");
    let wall = started.elapsed();
    let report = run.report.expect("the run applied its plan");
    let seen = watch.seen.into_inner().expect("watch");
    Converged {
        wall,
        report,
        lock_retries: seen.retries,
        lock_failed: seen.failed,
        through_create: seen.create_done,
    }
}
