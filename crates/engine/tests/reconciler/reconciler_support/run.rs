//! Runs one case: a temporary site-config and state directory, a fresh
//! simulator on loopback, then the steps in order through the same
//! `reconcile::Tier` the CLI and the daemon use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use homestak_api::v1::ChildPlan;
use homestak_api::{Kind, Mode, PhaseStatus, Reason};
use homestak_core::model::{Loader, Manifest};
use homestak_core::site::Site;
use homestak_engine::executor::{self, Event, NodeState};
use homestak_engine::reconcile::{self, Engine, Observer, Planned, Request, Setup};
use homestak_sim::{self as sim, Handle, Simulator, TierView};

use super::case::{
    ApplyStep, CancelAfter, Case, KillDaemon, NodeStatus, OneOrMany, Outcome, PlanStep,
    RequestsStep, StatusStep, Step,
};
use super::check::{self, Diffs, per_node};
use super::control::Control;
use super::release::Release;

/// What a passing case leaves to print.
#[derive(Debug, Default)]
pub struct Passed {
    pub steps: usize,
    /// Extra lines (`requests: {print: …}`).
    pub notes: Vec<String>,
}

/// Everything a case's steps act on.
struct Ctx {
    dir: PathBuf,
    site_dir: PathBuf,
    state_dir: PathBuf,
    handle: Handle,
    control: Control,
    site: Arc<Site>,
    engine: Option<Engine>,
    manifest: Option<String>,
    notes: Vec<String>,
    /// The case's `release:`, when it has one.
    release: Option<Release>,
}

/// Runs the case in `dir` with the shared site-config `template`.
pub async fn run(dir: &Path, template: &Path) -> anyhow::Result<Passed> {
    let case = Case::load(&dir.join("case.yaml"))?;
    let tmp = tempfile::tempdir().context("create a temporary directory")?;
    let site_dir = tmp.path().join("site-config");
    copy_tree(template, &site_dir)?;
    if dir.join("site").is_dir() {
        copy_tree(&dir.join("site"), &site_dir)?;
    }
    let state_dir = tmp.path().join("state");

    let mut config = case.sim.unwrap_or_default();
    config.listen = Some("127.0.0.1:0".parse()?);
    config.time_scale = case.time_scale;
    config.seed = case.seed;
    config.work_dir = Some(tmp.path().join("sim"));
    // The node's own SSH (joining split images) on a free port, for a key
    // made for this run.
    config.host_ssh_port = config.host_ssh_port.or(Some(0));
    let host_key = tmp.path().join("host_key");
    let identity = homestak_ssh::Identity::generate_to(&host_key)?;
    config.host_ssh_keys.push(identity.public_key_openssh());
    let release = match &case.release {
        Some(assets) => {
            let release = Release::start(assets.keys().cloned()).await?;
            for (asset, size) in assets {
                config
                    .downloads
                    .sizes
                    .insert(format!("{}{asset}", release.base_url), *size);
            }
            Some(release)
        }
        None => None,
    };
    let ssh_port = config.ssh_port;
    let handle = Simulator::start(config)
        .await
        .context("start the simulator")?;
    sim::site_config::update(&site_dir, &handle.ready_info(), &case.datastore, ssh_port)
        .context("point the site-config at the simulator")?;
    let node_file = site_dir
        .join("nodes")
        .join(format!("{}.yaml", handle.node()));
    let mut node = std::fs::read_to_string(&node_file)?;
    node.push_str(&format!("ssh_key: {:?}\n", host_key.display().to_string()));
    std::fs::write(&node_file, node)?;
    // VMs accept the run's key too: `pve` nodes are set up over SSH.
    let secrets_file = site_dir.join("secrets.yaml");
    let mut secrets: serde_json::Value = homestak_base::yaml::read_file(&secrets_file)?;
    secrets["ssh_keys"]["reconciler-run"] = identity.public_key_openssh().into();
    std::fs::write(&secrets_file, serde_json::to_string_pretty(&secrets)?)?;
    if let Some(release) = &release {
        let site_file = site_dir.join("site.yaml");
        let mut site: serde_json::Value = homestak_base::yaml::read_file(&site_file)?;
        site["defaults"]["image_source"] = release.base_url.clone().into();
        std::fs::write(&site_file, serde_json::to_string_pretty(&site)?)?;
    }
    let site = Arc::new(Site::load(&site_dir)?);
    let control = Control::new(&handle)?;
    let mut ctx = Ctx {
        dir: dir.to_path_buf(),
        site_dir,
        state_dir,
        handle,
        control,
        site,
        engine: None,
        manifest: None,
        notes: Vec::new(),
        release,
    };
    ctx.open_engine()?;

    let mut result = Ok(());
    for (i, step) in case.steps.iter().enumerate() {
        if let Err(err) = ctx.step(step).await {
            result = Err(err.context(format!("step {} ({})", i + 1, step.kind())));
            break;
        }
    }
    let Ctx {
        handle,
        engine,
        notes,
        ..
    } = ctx;
    drop(engine);
    let _ = handle.shutdown().await;
    result.map(|()| Passed {
        steps: case.steps.len(),
        notes,
    })
}

/// Every child plan of a tree, depth first.
fn flatten<'a>(children: &'a [ChildPlan], out: &mut Vec<&'a ChildPlan>) {
    for child in children {
        out.push(child);
        if let Some(tree) = &child.tree {
            flatten(&tree.children, out);
        }
    }
}

/// SIGKILLs the child daemon in the VM at the end of `vm`.
fn kill_daemon(handle: &Handle, vm: &[String]) -> anyhow::Result<()> {
    let Some((last, above)) = vm.split_last() else {
        bail!("name the VM: `vm: [hv]`");
    };
    let tier = super::control::tier(handle, above)?;
    let vmid = super::control::vmid_named(&tier, last)?;
    tier.kill_service(vmid, "homestak").map_err(|e| anyhow!(e))
}

/// The homestak binary `pve` nodes install on inner hosts: the one built
/// beside this test (`cargo test --workspace` builds it), or
/// `HOMESTAK_BIN`.
/// Never this test executable: a missing binary fails `bootstrap_host`
/// with a path that says what to do.
pub fn homestak_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HOMESTAK_BIN") {
        return Some(PathBuf::from(path));
    }
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("homestak")))
        .filter(|p| p.is_file());
    Some(built.unwrap_or_else(|| {
        PathBuf::from("target/debug/homestak (run `cargo build -p homestak` first)")
    }))
}

/// Copies `from` into `to`, merging directories and replacing files.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Fails with every difference, one per line.
fn differences(diffs: Diffs) -> anyhow::Result<()> {
    if diffs.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = diffs.iter().map(|d| format!("  - {d}")).collect();
    bail!("differences:\n{}", lines.join("\n"))
}

/// The executor and controller settings of one run: the product's limits
/// (concurrency, per-storage, attempts), with backoff and polling shortened
/// to match a simulator running 100× faster than a real host.
fn options(
    allow_replace: bool,
    (prune, prune_duplicates): (bool, bool),
    concurrency: Option<usize>,
    per_storage: Option<usize>,
    max_attempts: Option<u32>,
    delegate: Option<homestak_engine::controllers::pve::Delegate>,
) -> reconcile::Options {
    let mut executor = executor::Config {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        ..executor::Config::default()
    };
    if let Some(n) = concurrency {
        executor.concurrency = n;
    }
    if let Some(n) = per_storage {
        executor.per_storage = executor::PerStorage::Fixed(n);
    }
    if let Some(n) = max_attempts {
        executor.max_attempts = n;
    }
    reconcile::Options {
        timeouts: Default::default(),
        daemon_port: homestak_engine::controllers::pve::DAEMON_PORT,
        delegate: delegate.unwrap_or_default(),
        // Every converging run takes the host lease, as on the command line.
        lease: reconcile::Options::default().lease,
        spec_ca: None,
        packer_release: None,
        deep: false,
        allow_replace,
        prune,
        prune_duplicates,
        verify_ssh: None,
        executor,
        timing: homestak_engine::controllers::vm::Timing {
            poll_min: Duration::from_millis(20),
            poll_max: Duration::from_millis(250),
            agent_timeout: Duration::from_secs(30),
            ssh_timeout: Duration::from_secs(30),
            task_timeout: Duration::from_secs(60),
            download_timeout: Duration::from_secs(60),
        },
    }
}

/// The end state of a node as a case names it, and its detail.
fn state_name(state: &NodeState) -> (String, Option<String>) {
    let v = serde_json::to_value(state).unwrap_or_default();
    (
        v["state"].as_str().unwrap_or("?").to_string(),
        v["detail"].as_str().map(String::from),
    )
}

/// Plan labels by node (a node may have two entries: its VM and a
/// duplicate to delete).
fn labels(plan: &homestak_core::plan::Plan) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &plan.nodes {
        out.entry(n.node.to_string())
            .or_default()
            .push(n.label().to_string());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn check_labels(
    what: &str,
    want: &BTreeMap<String, OneOrMany>,
    plan: &homestak_core::plan::Plan,
) -> Diffs {
    per_node(what, want, &labels(plan), |want, got| {
        let want = want.sorted();
        (want != *got).then(|| format!("expected {}, got {}", want.join(" + "), got.join(" + ")))
    })
}

fn report_dump(report: &executor::Report) -> String {
    let lines: Vec<String> = report
        .nodes
        .iter()
        .map(|(node, state)| {
            let (name, detail) = state_name(state);
            match detail {
                Some(d) => format!("{node}: {name} ({d})"),
                None => format!("{node}: {name}"),
            }
        })
        .collect();
    format!("the run ended with: {}", lines.join("; "))
}

/// Keeps the plan of a run, and stops it there (`plan` steps) or goes on.
struct KeepPlan {
    apply: bool,
    plan: std::sync::Mutex<Option<homestak_core::plan::Plan>>,
}

impl KeepPlan {
    fn new(apply: bool) -> KeepPlan {
        KeepPlan {
            apply,
            plan: std::sync::Mutex::new(None),
        }
    }

    fn take(&self) -> anyhow::Result<homestak_core::plan::Plan> {
        self.plan
            .lock()
            .map_err(|_| anyhow!("the plan's lock is poisoned"))?
            .take()
            .ok_or_else(|| anyhow!("the run made no plan"))
    }
}

impl Observer for KeepPlan {
    fn planned(&self, planned: &Planned) -> bool {
        if let Ok(mut plan) = self.plan.lock() {
            *plan = Some(planned.plan.clone());
        }
        self.apply
    }
}

/// Keeps the plan, and cancels the run (Ctrl-C) after the N-th progress
/// event a case names.
struct Watch<'a> {
    plan: KeepPlan,
    cancel_after: Option<&'a CancelAfter>,
    cancel: &'a tokio::sync::Notify,
    seen: std::sync::atomic::AtomicU32,
    kill: Option<(&'a KillDaemon, &'a Handle)>,
    kill_seen: std::sync::atomic::AtomicU32,
    /// Why the kill failed, reported after the run.
    kill_error: std::sync::Mutex<Option<String>>,
}

/// Whether `event` is the `count`-th `after` (counted in `seen`).
fn nth(after: &CancelAfter, event: &Event, seen: &std::sync::atomic::AtomicU32) -> bool {
    let kind = match event.kind {
        Kind::StepStarted => "started",
        Kind::StepRequeued => "requeued",
        Kind::StepDone => "done",
        _ => return false,
    };
    let Some(name) = event.step else { return false };
    kind == after.event
        && name == after.step
        && seen.fetch_add(1, Ordering::SeqCst) + 1 == after.count
}

impl Observer for Watch<'_> {
    fn planned(&self, planned: &Planned) -> bool {
        self.plan.planned(planned)
    }

    fn progress(&self, event: &Event) {
        if let Some((kill, handle)) = self.kill
            && nth(&kill.after, event, &self.kill_seen)
            && let Err(err) = kill_daemon(handle, &kill.vm)
            && let Ok(mut slot) = self.kill_error.lock()
        {
            *slot = Some(format!("{err:#}"));
        }
        if let Some(after) = self.cancel_after
            && nth(after, event, &self.seen)
        {
            self.cancel.notify_one();
        }
    }
}

impl Ctx {
    fn open_engine(&mut self) -> anyhow::Result<()> {
        let setup = Setup {
            insecure: false,
            state_dir: self.state_dir.clone(),
            open_store: true,
            ssh_key: None,
            binary: homestak_binary(),
            lease: Default::default(),
        };
        self.engine = Some(Engine::open(setup)?);
        Ok(())
    }

    fn engine(&self) -> anyhow::Result<&Engine> {
        self.engine
            .as_ref()
            .ok_or_else(|| anyhow!("no engine is open"))
    }

    /// A run of the case's manifest, as the CLI makes one.
    fn request(&self, mode: Mode, options: reconcile::Options) -> anyhow::Result<Request> {
        Ok(Request {
            manifest: Arc::new(self.manifest()?),
            host: self.handle.node().to_string(),
            site: self.site.clone(),
            revision: None,
            reason: Reason::Cli,
            mode,
            options,
            generation: 0,
        })
    }

    fn manifest(&self) -> anyhow::Result<Manifest> {
        let name = self
            .manifest
            .as_deref()
            .ok_or_else(|| anyhow!("no manifest yet: add a `manifest: FILE` step first"))?;
        Ok(Loader::new(&self.site_dir).load(name)?)
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::Manifest(file) => self.install_manifest(file),
            Step::Plan(p) => self.plan(p).await,
            Step::Reconcile(a) => self.apply(a, false).await,
            Step::Destroy(a) => self.apply(a, true).await,
            Step::Status(s) => self.status(s).await,
            Step::Requests(r) => self.requests(r),
            Step::ResetRequests => {
                // Every tier, any depth.
                let mut tiers = vec![self.handle.view()];
                while let Some(tier) = tiers.pop() {
                    tier.reset_requests();
                    tiers.extend(tier.world().vms.keys().filter_map(|id| tier.nested(*id)));
                }
                Ok(())
            }
            Step::Sim(action) => {
                let key = reconcile::owner_key(&self.site)?;
                self.control.apply(&self.handle, action, &key).await
            }
            Step::DeleteStore => {
                // Every handle on the store goes with the engine.
                self.engine = None;
                let store = self.state_dir.join("store");
                if store.exists() {
                    std::fs::remove_dir_all(&store)
                        .with_context(|| format!("delete {}", store.display()))?;
                }
                self.open_engine()
            }
            Step::ReleaseRequests(expected) => {
                let release = self
                    .release
                    .as_ref()
                    .ok_or_else(|| anyhow!("release_requests needs a `release:` in case.yaml"))?;
                differences(check::release_requests(expected, &release.requests()))
            }
            Step::World(w) => differences(check::world(
                w,
                &self.tier(&w.tier)?.world(),
                &self.handle.host_commands(),
                &reconcile::owner_key(&self.site)?,
            )),
        }
    }

    /// Installs a case file as `manifests/<name>.yaml`, as a commit would.
    fn install_manifest(&mut self, file: &str) -> anyhow::Result<()> {
        let from = self.dir.join(file);
        let manifest = Manifest::from_file(&from)?;
        let name = manifest.name().to_string();
        let dir = self.site_dir.join("manifests");
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&from, dir.join(format!("{name}.yaml")))
            .with_context(|| format!("install {}", from.display()))?;
        self.manifest = Some(name);
        Ok(())
    }

    async fn plan(&mut self, step: &PlanStep) -> anyhow::Result<()> {
        let opts = options(
            step.allow_replace,
            (step.prune, step.prune_duplicates),
            None,
            None,
            None,
            None,
        );
        let request = self.request(Mode::Apply, opts)?;
        let keep = KeepPlan::new(false);
        let ran = self
            .engine()?
            .run_once(request, std::future::pending(), &keep)
            .await;
        let planned = match (ran, &step.error) {
            (Err(err), Some(text)) => {
                let message = format!("{:#}", anyhow::Error::from(err));
                return differences(if message.contains(text.as_str()) {
                    Vec::new()
                } else {
                    vec![format!(
                        "planning failed with {message:?}, which lacks {text:?}"
                    )]
                });
            }
            (Err(err), None) => return Err(anyhow::Error::from(err).context("planning failed")),
            (Ok(_), Some(text)) => bail!("planning succeeded; expected an error with {text:?}"),
            (Ok(_), None) => keep.take()?,
        };
        let plan = &planned;
        let mut diffs = check_labels("plan", &step.expect, plan);
        if step.children.is_some() || step.child_notes.is_some() {
            let tree = self
                .engine()?
                .plan_tree(self.site.clone(), &self.manifest()?, self.handle.node())
                .await?;
            let mut all = Vec::new();
            flatten(&tree.children, &mut all);
            for (node, want) in step.children.iter().flatten() {
                match all.iter().find(|c| c.node.as_str() == node) {
                    Some(ChildPlan { tree: Some(t), .. }) => {
                        diffs.extend(check_labels(
                            &format!("plan of the tier on {node}"),
                            want,
                            &t.plan,
                        ));
                    }
                    Some(c) => diffs.push(format!("tier on {node}: no plan ({:?})", c.note)),
                    None => diffs.push(format!("no child tier on {node} in the plan")),
                }
            }
            for (node, text) in step.child_notes.iter().flatten() {
                let note = all
                    .iter()
                    .find(|c| c.node.as_str() == node)
                    .and_then(|c| c.note.clone());
                if !note.as_deref().is_some_and(|n| n.contains(text.as_str())) {
                    diffs.push(format!("tier on {node}: note {note:?} lacks {text:?}"));
                }
            }
        }
        for (node, text) in step.reasons.iter().flatten() {
            let reasons: Vec<&str> = plan
                .nodes
                .iter()
                .filter(|n| n.node == *node)
                .filter_map(|n| n.reason.as_deref())
                .collect();
            if !reasons.iter().any(|r| r.contains(text.as_str())) {
                diffs.push(format!(
                    "plan: node {node}: no reason contains {text:?} ({reasons:?})"
                ));
            }
        }
        if let Some(changes) = &step.changes {
            for (node, want) in changes {
                let mut want = want.clone();
                want.sort();
                let mut got: Vec<String> = plan
                    .nodes
                    .iter()
                    .filter(|n| n.node == *node)
                    .flat_map(|n| n.changes.iter().map(|c| c.field.to_string()))
                    .collect();
                got.sort();
                if want != got {
                    diffs.push(format!(
                        "plan: node {node}: changes {got:?}, expected {want:?}"
                    ));
                }
            }
        }
        if let Some(blocked) = &step.blocked {
            let mut want = blocked.clone();
            want.sort();
            let mut got: Vec<String> = plan
                .nodes
                .iter()
                .filter(|n| n.blocked.is_some())
                .map(|n| n.node.to_string())
                .collect();
            got.sort();
            if want != got {
                diffs.push(format!("plan: blocked nodes {got:?}, expected {want:?}"));
            }
        }
        if !diffs.is_empty() {
            diffs.push(format!(
                "the plan: {}",
                serde_json::to_string(&plan.to_json())?
            ));
        }
        differences(diffs)
    }

    async fn apply(&mut self, step: &ApplyStep, destroy: bool) -> anyhow::Result<()> {
        let mut opts = options(
            step.allow_replace,
            (step.prune, step.prune_duplicates),
            step.concurrency,
            step.per_storage,
            step.max_attempts,
            step.delegate,
        );
        opts.deep = step.deep;
        let mode = if destroy { Mode::Destroy } else { Mode::Apply };
        let request = self.request(mode, opts)?;
        let cancel = tokio::sync::Notify::new();
        let watch = Watch {
            plan: KeepPlan::new(true),
            cancel_after: step.cancel_after.as_ref(),
            cancel: &cancel,
            seen: std::sync::atomic::AtomicU32::new(0),
            kill: step.kill_daemon.as_ref().map(|k| (k, &self.handle)),
            kill_seen: std::sync::atomic::AtomicU32::new(0),
            kill_error: std::sync::Mutex::new(None),
        };
        let ran = self
            .engine()?
            .run_once(request, cancel.notified(), &watch)
            .await;
        if let Some(kill) = &step.kill_daemon {
            let error = watch.kill_error.lock().ok().and_then(|mut e| e.take());
            if let Some(error) = error {
                bail!("kill_daemon: {error}");
            }
            if watch.kill_seen.load(Ordering::SeqCst) < kill.after.count {
                bail!("kill_daemon: the run never reached its event, so nothing was killed");
            }
        }
        let run = match (ran, step.expect) {
            (Err(err), Some(Outcome::Error)) => {
                let message = format!("{:#}", anyhow::Error::from(err));
                return differences(match &step.error {
                    Some(text) if !message.contains(text.as_str()) => {
                        vec![format!(
                            "planning failed with {message:?}, which lacks {text:?}"
                        )]
                    }
                    _ => Vec::new(),
                });
            }
            (Err(err), _) => return Err(anyhow::Error::from(err).context("planning failed")),
            (Ok(_), Some(Outcome::Error)) => bail!("planning succeeded; expected it to fail"),
            (Ok(run), _) => run,
        };
        let mut diffs = match &step.plan {
            Some(want) => check_labels("plan", want, &watch.plan.take()?),
            None => Vec::new(),
        };
        let report = run
            .report
            .ok_or_else(|| anyhow!("the run stopped after planning"))?;
        if let Some(want) = step.expect {
            let got = if report.cancelled {
                Outcome::Interrupted
            } else if report.success() {
                Outcome::Success
            } else {
                Outcome::Failed
            };
            if want != got {
                diffs.push(format!(
                    "expected the run to end {want:?}, it ended {got:?}"
                ));
            }
        }
        if let Some(nodes) = &step.nodes {
            let states: BTreeMap<String, NodeState> = report
                .nodes
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect();
            diffs.extend(per_node("state", nodes, &states, |want, got| {
                let (name, detail) = state_name(got);
                (*want != name).then(|| match detail {
                    Some(d) => format!("expected {want}, got {name}: {d}"),
                    None => format!("expected {want}, got {name}"),
                })
            }));
        }
        if let Some(counts) = &step.counts {
            for (state, want) in counts {
                let n = report
                    .nodes
                    .values()
                    .filter(|s| state_name(s).0 == *state)
                    .count() as u64;
                if let Err(e) = want.check(n) {
                    diffs.push(format!("nodes {state}: {e}"));
                }
            }
        }
        if let Some(phases) = &step.phases {
            for (node, want) in phases {
                let got: Vec<&str> = report
                    .phases
                    .iter()
                    .filter(|p| p.node == *node && p.status == PhaseStatus::Passed)
                    .map(|p| p.name.as_str())
                    .collect();
                if got != *want {
                    diffs.push(format!("node {node}: steps {got:?}, expected {want:?}"));
                }
            }
        }
        if let Some(texts) = &step.detail_contains {
            for (node, text) in texts {
                let details: Vec<String> = report
                    .nodes
                    .iter()
                    .filter(|(n, _)| node == "*" || *n == node)
                    .filter_map(|(_, s)| state_name(s).1)
                    .collect();
                if !details.iter().any(|d| d.contains(text.as_str())) {
                    diffs.push(format!("node {node}: no reason contains {text:?}"));
                }
            }
        }
        if !diffs.is_empty() {
            diffs.push(report_dump(&report));
        }
        differences(diffs)
    }

    async fn status(&mut self, step: &StatusStep) -> anyhow::Result<()> {
        let manifest = self.manifest()?;
        let result = self
            .engine()?
            .status(self.site.clone(), &manifest, self.handle.node(), step.deep)
            .await;
        let mut diffs = Vec::new();
        let exit = match &result {
            Ok(s) if s.in_sync => 0,
            Ok(_) => 2,
            Err(_) => 1,
        };
        if let Some(want) = step.exit
            && want != exit
        {
            let why = match &result {
                Err(e) => format!(": {:#}", anyhow!("{e}")),
                Ok(_) => String::new(),
            };
            diffs.push(format!("exit {exit}, expected {want}{why}"));
        }
        match (&result, &step.error) {
            (Err(err), Some(text)) if !err.to_string().contains(text.as_str()) => {
                diffs.push(format!("the error {err} lacks {text:?}"));
            }
            (Err(err), None) if step.exit != Some(1) => {
                diffs.push(format!("status failed: {err}"));
            }
            _ => {}
        }
        if let (Ok(status), Some(nodes)) = (&result, &step.nodes) {
            let by_node: BTreeMap<String, &homestak_engine::reconcile::status::NodeStatus> = status
                .nodes
                .iter()
                .map(|n| (n.node.to_string(), n))
                .collect();
            diffs.extend(per_node("status", nodes, &by_node, |want, got| {
                let state = serde_json::to_value(got.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                let mut fields: Vec<String> =
                    got.changes.iter().map(|c| c.field.to_string()).collect();
                fields.sort();
                let mut d = Vec::new();
                if want.state() != state {
                    d.push(format!("state {state}, expected {}", want.state()));
                }
                if let NodeStatus::Full(full) = want {
                    if let Some(want_fields) = &full.fields {
                        let mut w = want_fields.clone();
                        w.sort();
                        if w != fields {
                            d.push(format!("fields {fields:?}, expected {w:?}"));
                        }
                    }
                    if let Some(power) = &full.power {
                        let got_power = got.power.map(|p| p.to_string()).unwrap_or("-".into());
                        if *power != got_power {
                            d.push(format!("power {got_power}, expected {power}"));
                        }
                    }
                }
                (!d.is_empty()).then(|| {
                    let changes: Vec<String> = got
                        .changes
                        .iter()
                        .map(|c| format!("{}: {} → {}", c.field, c.from, c.to))
                        .collect();
                    format!("{} (changes: {})", d.join(", "), changes.join("; "))
                })
            }));
        }
        differences(diffs)
    }

    fn tier(&self, path: &[String]) -> anyhow::Result<TierView> {
        super::control::tier(&self.handle, path)
    }

    fn requests(&mut self, step: &RequestsStep) -> anyhow::Result<()> {
        let counts = self.tier(&step.tier)?.requests();
        if let Some(title) = &step.print {
            let total: u64 = counts.values().sum();
            let writes = check::writes(&counts);
            self.notes.push(format!(
                "{title}: {total} requests ({} reads, {writes} writes)",
                total - writes
            ));
            let width = counts.keys().map(String::len).max().unwrap_or(0);
            for (key, n) in &counts {
                self.notes.push(format!("  {key:<width$}  {n:>4}"));
            }
        }
        differences(check::requests(step, &counts))
    }
}
