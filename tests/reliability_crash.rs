//! R1, the crash proof: SIGKILL at random moments of a two-tier converge,
//! run again after each kill, and at the end the tree is converged, no VM
//! exists twice, no VM homestak owns is one no manifest node names, and
//! the killed process's store opens. Twice: killing `homestak reconcile
//! --once`, and killing the daemon (`homestak serve`).
//!
//! The simulator runs as its own process (`homestak sim`), so a kill hits
//! homestak alone; the child tier's daemon on the inner host lives inside
//! it and is not killed. Between runs the manifest alternates between two
//! versions that differ on both tiers (a root VM and an inner VM swapped),
//! so every run has work on both tiers when the kill lands; before every
//! fourth run the tree is destroyed (`homestak destroy --yes`, not
//! killed), so that run and the ones after it build the whole tree again
//! (the inner host's VM, bootstrap, child daemon, inner VMs).
//!
//! Kill moments are drawn from a seeded RNG, uniformly over the length of
//! such a run, measured in the same test: a whole tree from nothing, or a
//! swap. CI runs 8 kills of each; `make reliability-crash` runs 50
//! (`HOMESTAK_R1_KILLS`). `HOMESTAK_R1_SEED` replays a run; the seed is
//! printed either way, with the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{copy_dir, manifest_status};

/// Kills per test when `HOMESTAK_R1_KILLS` is not set (the CI size).
const CI_KILLS: usize = 8;
const SCALE: &str = "0.01";
/// Hang guard of one run or one daemon converge.
const RUN_GUARD: Duration = Duration::from_secs(600);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn homestak() -> Command {
    Command::new(env!("CARGO_BIN_EXE_homestak"))
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// `a` for even versions, `b` for odd ones.
fn suffix(version: usize) -> &'static str {
    if version.is_multiple_of(2) { "a" } else { "b" }
}

/// The two versions of the manifest: `hv` (a PVE host) and `app` in both,
/// the other root VM and the other inner VM swapped.
fn manifest(version: usize) -> String {
    let v = suffix(version);
    format!(
        "schema_version: 2\nname: r1\nnodes:\n\
         - {{name: hv, type: pve, preset: vm-large, image: debian-13-pve, vmid: 99401}}\n\
         - {{name: app, type: vm, parent: hv, preset: vm-small, image: debian-12, vmid: 99411}}\n\
         - {{name: w-{v}, type: vm, parent: hv, preset: vm-small, image: debian-12}}\n\
         - {{name: edge-{v}, type: vm, preset: vm-small, image: debian-12}}\n\
         settings: {{verify_ssh: false}}\n"
    )
}

/// The names each tier should hold once `version` converged.
fn expected(version: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let v = suffix(version);
    (
        ["hv".to_string(), format!("edge-{v}")].into(),
        ["app".to_string(), format!("w-{v}")].into(),
    )
}

/// A scratch site-config, state directory and a `homestak sim` process
/// pointed at by the site-config.
struct Lab {
    dir: tempfile::TempDir,
    site: PathBuf,
    state: PathBuf,
    sim: Child,
    sim_url: String,
    sim_token: String,
    sim_fingerprint: homestak_tls::Fingerprint,
}

impl Lab {
    async fn start(seed: u64) -> Lab {
        homestak_tls::install_crypto_provider();
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("HOMESTAK_R1_KEEP").is_some() {
            // Logs, reports and state stay for a post-mortem.
            dir.disable_cleanup(true);
            println!("R1 keeps {}", dir.path().display());
        }
        let site = dir.path().join("site-config");
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("reconciler-tests/_site");
        copy_dir(&template, &site);
        std::fs::create_dir_all(site.join("manifests")).unwrap();
        let sim_config = dir.path().join("sim.yaml");
        // VM SSH on a port any user may bind.
        std::fs::write(&sim_config, "ssh_port: 2222\n").unwrap();
        let ready = dir.path().join("sim.json");
        let log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
        let sim = homestak()
            .arg("--site-config")
            .arg(&site)
            .args(["sim", "--listen", "127.0.0.1:0", "--time-scale", SCALE])
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--config")
            .arg(&sim_config)
            .arg("--ready-file")
            .arg(&ready)
            .env("HOMESTAK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("homestak sim starts");
        let info: Value = serde_json::from_str(&wait_for_file(&ready).await).unwrap();
        Lab {
            state: dir.path().join("state"),
            sim_url: info["url"].as_str().unwrap().to_string(),
            sim_token: info["token"].as_str().unwrap().to_string(),
            sim_fingerprint: info["fingerprint"].as_str().unwrap().parse().unwrap(),
            dir,
            site,
            sim,
        }
    }

    fn write_manifest(&self, version: usize) {
        std::fs::write(self.site.join("manifests/r1.yaml"), manifest(version)).unwrap();
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `homestak reconcile --once` of the manifest: stderr to `log`, the
    /// JSON report to `log` with `.json` added.
    fn reconcile(&self, log: &Path) -> Child {
        let mut report = log.as_os_str().to_owned();
        report.push(".json");
        homestak()
            .arg("--site-config")
            .arg(&self.site)
            .args(["--json", "reconcile", "--once", "-M", "r1", "-H", "pve"])
            .args(["--no-report", "--lease-timeout", "10m"])
            .arg("--state-dir")
            .arg(&self.state)
            .env("HOMESTAK_LOG", "warn")
            .stdout(std::fs::File::create(report).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("homestak reconcile starts")
    }

    /// `homestak serve` on loopback, converging the working tree.
    fn serve(&self, ready: &Path, log: &Path) -> Child {
        homestak()
            .arg("--site-config")
            .arg(&self.site)
            .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--no-watch"])
            .args(["--working-tree", "--resync", "1h"])
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--ready-file")
            .arg(ready)
            // The lease's waits are logged at info.
            .env("HOMESTAK_LOG", "warn,homestak_engine::hostlease=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("homestak serve starts")
    }

    fn client(fingerprint: homestak_tls::Fingerprint) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(fingerprint))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    async fn sim_get(&self, path: &str) -> Value {
        let answer: Value = Lab::client(self.sim_fingerprint)
            .get(format!("{}{path}", self.sim_url))
            .header("Authorization", format!("PVEAPIToken={}", self.sim_token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["data"].clone()
    }

    /// `(name, owned)` of every VM of the root tier and of the tier inside
    /// `hv` (owned: tagged `homestak`).
    async fn tiers(&self) -> (Vec<(String, bool)>, Vec<(String, bool)>) {
        let root = vms(&self.sim_get("/_sim/vms").await);
        let nested = self.sim_get("/_sim/vms/99401/nested").await;
        let url = nested["url"].as_str().expect("hv runs a nested tier");
        let client = Lab::client(nested["fingerprint"].as_str().unwrap().parse().unwrap());
        let ticket: Value = client
            .post(format!("{url}/api2/json/access/ticket"))
            .form(&[
                ("username", "root@pam"),
                ("password", nested["root_password"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cookie = format!(
            "PVEAuthCookie={}",
            ticket["data"]["ticket"].as_str().unwrap()
        );
        let inner: Value = client
            .get(format!("{url}/_sim/vms"))
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (root, vms(&inner["data"]))
    }

    /// `homestak destroy --yes` of the manifest, to its end (not killed):
    /// the next run builds the whole tree again.
    async fn destroy(&self) {
        let log = self.log("destroy.log");
        let mut child = homestak()
            .arg("--site-config")
            .arg(&self.site)
            .args(["destroy", "--yes", "-M", "r1", "-H", "pve"])
            .args(["--lease-timeout", "10m", "--json-output"])
            .arg("--report-dir")
            .arg(self.dir.path().join("reports"))
            .arg("--state-dir")
            .arg(&self.state)
            .env("HOMESTAK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("homestak destroy starts");
        let exit = wait_exit(&mut child, RUN_GUARD).await.expect("hang guard");
        assert!(
            exit.success(),
            "destroy: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The root node's notes (where the host lease is).
    async fn notes(&self) -> String {
        self.sim_get("/api2/json/nodes/pve/config").await["description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn stop(mut self) {
        signal(self.sim.id(), "TERM");
        let _ = wait_exit(&mut self.sim, Duration::from_secs(60)).await;
    }
}

fn vms(list: &Value) -> Vec<(String, bool)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            let tags = vm["tags"].as_str().unwrap_or_default();
            (
                vm["name"].as_str().unwrap_or_default().to_string(),
                tags.split([';', ',', ' ']).any(|t| t == "homestak"),
            )
        })
        .collect()
}

async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `guard` for `child` to exit.
async fn wait_exit(child: &mut Child, guard: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + guard;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sleeps `delay` unless `child` exits first; true when it still runs.
async fn runs_for(child: &mut Child, delay: Duration) -> bool {
    wait_exit(child, delay).await.is_none()
}

/// What the end state looks like on one tier.
struct Tally {
    vms: usize,
    owned: usize,
    duplicates: usize,
    unnamed: usize,
    missing: Vec<String>,
}

fn tally(vms: &[(String, bool)], wanted: &BTreeSet<String>) -> Tally {
    let mut owned_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, owned) in vms {
        if *owned {
            *owned_names.entry(name).or_default() += 1;
        }
    }
    Tally {
        vms: vms.len(),
        owned: owned_names.values().sum(),
        duplicates: owned_names.values().map(|n| n.saturating_sub(1)).sum(),
        unnamed: owned_names
            .iter()
            .filter(|(name, _)| !wanted.contains(**name))
            .map(|(_, n)| n)
            .sum(),
        missing: wanted
            .iter()
            .filter(|w| !owned_names.contains_key(w.as_str()))
            .cloned()
            .collect(),
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} VMs, {} owned, {} duplicates, {} owned but named by no node",
            self.vms, self.owned, self.duplicates, self.unnamed
        )
    }
}

/// Checks the end state, prints it, and returns it as one line.
async fn check_end(lab: &Lab, version: usize) -> String {
    let (root_vms, inner_vms) = lab.tiers().await;
    let (want_root, want_inner) = expected(version);
    let root = tally(&root_vms, &want_root);
    let inner = tally(&inner_vms, &want_inner);
    for (tier, t, vms) in [("root", &root, &root_vms), ("hv", &inner, &inner_vms)] {
        assert_eq!(t.duplicates, 0, "tier {tier}: duplicate VMs: {vms:?}");
        assert_eq!(
            t.unnamed, 0,
            "tier {tier}: owned VMs no node names: {vms:?}"
        );
        assert!(
            t.missing.is_empty(),
            "tier {tier}: missing {:?}: {vms:?}",
            t.missing
        );
    }
    // The killed process's store opens (and is not left locked).
    let store = homestak_engine::store::open(
        &lab.state.join("store"),
        homestak_engine::store::Options::default(),
    );
    assert!(store.is_ok(), "the store does not open: {:?}", store.err());
    drop(store);
    // The host lease was given back at the end.
    let notes = lab.notes().await;
    assert!(notes.contains("lease: free"), "{notes}");
    format!("root tier: {root}; tier hv: {inner}; store opens; host lease free")
}

/// Why a finished run did not converge: its report's `error`, else the
/// last line it wrote on stderr.
fn why_failed(log: &Path) -> String {
    let mut report = log.as_os_str().to_owned();
    report.push(".json");
    let json: Value = std::fs::read_to_string(PathBuf::from(report))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if let Some(error) = json["error"].as_str() {
        return error.to_string();
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last = text.lines().rev().find(|l| !l.trim().is_empty());
    last.unwrap_or_default().to_string()
}

/// How long each kind of run takes, measured in the same test.
#[derive(Clone, Copy)]
struct Windows {
    /// The whole tree from nothing.
    tree: Duration,
    /// One VM swapped on each tier.
    swap: Duration,
}

/// Whether run `n` (after the two measured ones) converges the whole tree.
fn rebuilds(n: usize) -> bool {
    n % 4 == 3
}

struct Figures {
    what: &'static str,
    seed: u64,
    kills: usize,
    /// Kills in the run right after a destroy (building the tree).
    kills_in_rebuilds: usize,
    runs: usize,
    finished_first: usize,
    failed: usize,
    /// The last line each failed run wrote (the first few).
    failures: Vec<String>,
    lease_waits: usize,
    windows: Windows,
    started: Instant,
}

impl Figures {
    fn new(what: &'static str, seed: u64, windows: Windows, started: Instant) -> Figures {
        Figures {
            what,
            seed,
            kills: 0,
            kills_in_rebuilds: 0,
            runs: 2,
            finished_first: 0,
            failed: 0,
            failures: Vec::new(),
            lease_waits: 0,
            windows,
            started,
        }
    }

    fn print(&self, end: &str) {
        println!(
            "R1 crash ({}): seed {}, {} SIGKILLs ({} in the first run after a destroy) \
             at random moments of runs lasting {:.1} s (whole tree) and {:.1} s (a swap on \
             each tier), {} runs ({} finished before their kill moment, {} of them not \
             converged), {} waited for the host lease; end: converged; {end}; total {:.1} s",
            self.what,
            self.seed,
            self.kills,
            self.kills_in_rebuilds,
            self.windows.tree.as_secs_f64(),
            self.windows.swap.as_secs_f64(),
            self.runs,
            self.finished_first,
            self.failed,
            self.lease_waits,
            self.started.elapsed().as_secs_f64()
        );
        for failure in &self.failures {
            println!("  a run that did not converge said: {failure}");
        }
    }
}

fn setup() -> (usize, u64, StdRng) {
    let kills = env_number("HOMESTAK_R1_KILLS").map_or(CI_KILLS, |n| n as usize);
    let seed = env_number("HOMESTAK_R1_SEED").unwrap_or_else(rand::random);
    println!("R1 seed {seed} (HOMESTAK_R1_SEED={seed} replays it), {kills} kills");
    (kills, seed, StdRng::seed_from_u64(seed))
}

/// Runs `reconcile --once` to its end; how long it took.
async fn full_run(lab: &Lab, name: &str) -> Duration {
    let log = lab.log(name);
    let began = Instant::now();
    let mut child = lab.reconcile(&log);
    let exit = wait_exit(&mut child, RUN_GUARD).await.expect("hang guard");
    assert!(
        exit.success(),
        "{name}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_crash_sigkilled_reconcile_once_converges_with_no_duplicates() {
    let (target, seed, mut rng) = setup();
    let started = Instant::now();
    let lab = Lab::start(seed).await;

    // The two kinds of run, measured whole.
    lab.write_manifest(0);
    let tree = full_run(&lab, "run-0.log").await;
    lab.write_manifest(1);
    let swap = full_run(&lab, "run-1.log").await;
    let windows = Windows { tree, swap };
    let mut figures = Figures::new("reconcile --once", seed, windows, started);
    let mut version = 1;
    while figures.kills < target {
        assert!(
            figures.runs < 6 * target + 10,
            "too few runs reached their kill moment"
        );
        version += 1;
        lab.write_manifest(version);
        let rebuild = rebuilds(figures.runs);
        if rebuild {
            lab.destroy().await;
        }
        let window = if rebuild { windows.tree } else { windows.swap };
        let log = lab.log(&format!("run-{}.log", figures.runs));
        let mut child = lab.reconcile(&log);
        if runs_for(&mut child, window.mul_f64(rng.random::<f64>())).await {
            child.kill().unwrap();
            child.wait().unwrap();
            figures.kills += 1;
            figures.kills_in_rebuilds += usize::from(rebuild);
        } else {
            figures.finished_first += 1;
            if !child.wait().unwrap().success() {
                figures.failed += 1;
                if figures.failures.len() < 3 {
                    figures.failures.push(why_failed(&log));
                }
            }
        }
        figures.runs += 1;
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("waiting for host")
        {
            figures.lease_waits += 1;
        }
    }

    // Run again, to the end.
    full_run(&lab, "final.log").await;
    figures.runs += 1;
    // A killed run's lease (its process gone, on this machine) is taken
    // over at once: nobody waited for one.
    assert_eq!(figures.lease_waits, 0, "runs waited for a dead run's lease");
    let status = homestak()
        .arg("--site-config")
        .arg(&lab.site)
        .args(["--json", "status", "-M", "r1", "-H", "pve"])
        .arg("--state-dir")
        .arg(&lab.state)
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "status after the last run: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    let end = check_end(&lab, version).await;
    figures.print(&end);
    lab.stop().await;
}

/// A started daemon: its process, URL, pin and token.
struct Daemon {
    /// When it was started: runs of earlier daemons ended before.
    started: homestak_base::time::Timestamp,
    child: Child,
    url: String,
    fingerprint: homestak_tls::Fingerprint,
    token: String,
}

async fn start_daemon(lab: &Lab, n: usize) -> Daemon {
    let ready = lab.log("daemon.json");
    let _ = std::fs::remove_file(&ready);
    let started = homestak_base::time::Timestamp::now();
    let mut child = lab.serve(&ready, &lab.log(&format!("daemon-{n}.log")));
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && !text.is_empty()
        {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "daemon {n} exited {status} before it was ready: {}",
                std::fs::read_to_string(lab.log(&format!("daemon-{n}.log"))).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "daemon {n} never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let info: Value = serde_json::from_str(&text).unwrap();
    let token = std::fs::read_to_string(lab.state.join("api-token")).unwrap();
    Daemon {
        started,
        child,
        url: info["url"].as_str().unwrap().to_string(),
        fingerprint: info["fingerprint"].as_str().unwrap().parse().unwrap(),
        token: token.trim().to_string(),
    }
}

/// Waits until a run of this daemon converged the revision it reads now
/// and the tree is in sync.
async fn wait_converged(d: &Daemon) -> Value {
    let deadline = Instant::now() + RUN_GUARD;
    loop {
        let status = manifest_status(&Lab::client(d.fingerprint), &d.url, "r1", &d.token).await;
        let last = &status["last_reconcile"];
        let ours = last["at"]
            .as_str()
            .and_then(|at| at.parse::<homestak_base::time::Timestamp>().ok())
            .is_some_and(|at| at >= d.started);
        let converged = ours
            && last["outcome"] == "converged"
            && last["revision"] == status["revision"]
            && !status["revision"].is_null();
        if converged && status["in_sync"] == Value::Bool(true) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not converge: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_daemon(mut d: Daemon) {
    signal(d.child.id(), "TERM");
    let status = wait_exit(&mut d.child, Duration::from_secs(120))
        .await
        .expect("the daemon stops after SIGTERM");
    assert!(status.success(), "the daemon's exit: {status}");
}

/// Starts daemon `n`, waits until it converged, stops it; how long it
/// took from ready to converged.
async fn full_daemon(lab: &Lab, n: usize) -> Duration {
    let d = start_daemon(lab, n).await;
    let began = Instant::now();
    wait_converged(&d).await;
    let took = began.elapsed();
    stop_daemon(d).await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_crash_sigkilled_daemon_converges_with_no_duplicates() {
    let (target, seed, mut rng) = setup();
    let started = Instant::now();
    let lab = Lab::start(seed).await;
    std::fs::write(
        lab.site.join("controller.yaml"),
        "host: pve\nmanifests:\n  r1: {}\n",
    )
    .unwrap();

    // The two kinds of daemon run, measured whole (ready to converged).
    lab.write_manifest(0);
    let tree = full_daemon(&lab, 0).await;
    lab.write_manifest(1);
    let swap = full_daemon(&lab, 1).await;
    let windows = Windows { tree, swap };
    let mut figures = Figures::new("the daemon", seed, windows, started);
    let mut version = 1;
    while figures.kills < target {
        version += 1;
        lab.write_manifest(version);
        let rebuild = rebuilds(figures.runs);
        if rebuild {
            // No daemon runs now: the command takes its store.
            lab.destroy().await;
        }
        let window = if rebuild { windows.tree } else { windows.swap };
        let mut d = start_daemon(&lab, figures.runs).await;
        // A daemon never ends by itself: every one is killed.
        assert!(
            runs_for(&mut d.child, window.mul_f64(rng.random::<f64>())).await,
            "daemon {} exited",
            figures.runs
        );
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        figures.kills += 1;
        figures.kills_in_rebuilds += usize::from(rebuild);
        figures.runs += 1;
    }

    // Started again, it converges; stopped cleanly, it gives the lease back.
    full_daemon(&lab, figures.runs).await;
    figures.runs += 1;
    for n in 0..figures.runs {
        let log = std::fs::read_to_string(lab.log(&format!("daemon-{n}.log"))).unwrap_or_default();
        if log.contains("waiting for the host lease") {
            figures.lease_waits += 1;
        }
    }
    assert_eq!(
        figures.lease_waits, 0,
        "daemons waited for a dead one's lease"
    );
    let end = check_end(&lab, version).await;
    figures.print(&end);
    lab.stop().await;
}
