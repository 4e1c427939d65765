//! Shared pieces of the daemon tests: a small site-config of our own (a
//! git repository in a temporary directory), a fake engine, an in-process
//! daemon on a loopback port with its real TLS, a pinned HTTPS client, and
//! a raw HTTP/1.1-over-TLS request for paths a URL library would normalise.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestak_api::{Mode, NodeStatus, Outcome, Reason, State, Status};
use homestak_base::time::Timestamp;
use homestak_core::site::Secret;
use homestak_daemon::auth::{ApiToken, ApiTokens, Scope};
use homestak_daemon::engine::{BoxFuture, Error as EngineError};
use homestak_daemon::metrics::PveMetrics;
use homestak_daemon::server::{ApiTokenSource, Config, RepoToken};
use homestak_daemon::shutdown::Shutdown;
use homestak_daemon::{Daemon, Engine, StatusRequest};
use homestak_engine::reconcile::{self, Request, RunOf, RunOutcome};
use homestak_engine::store::{self, Store};
use homestak_tls::Fingerprint;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub const SITE_TOKEN: &str = "test-site-token-5b1f0e";
pub const NODE_TOKEN: &str = "test-node-token-c3a9d1";
pub const PVE_TOKEN: &str = "root@pam!homestak=test-pve-token-0d2e77";
pub const PASSWORD_HASH: &str = "$6$testsalt$TESTPASSWORDHASHxyz";
pub const REPO_TOKEN: &str = "test-repo-token-77aa42";
pub const READ_TOKEN: &str = "test-read-token-19f3";
pub const WRITE_TOKEN: &str = "test-write-token-2c8b";
pub const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaTESTKEYops ops@test";

/// Every secret value the fixture and the daemon hold.
pub const SECRETS: &[&str] = &[
    SITE_TOKEN,
    NODE_TOKEN,
    PVE_TOKEN,
    PASSWORD_HASH,
    REPO_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
];

pub const DEMO_MANIFEST: &str = "schema_version: 2\nname: demo\ndescription: one VM\npattern: flat\nnodes:\n  - name: edge\n    type: vm\n    preset: vm-small\n    image: debian-12\n    vmid: 99001\n";

/// Runs git in `dir`, panicking on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@test.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@test.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes our test site-config into `root` and commits it (secrets.yaml
/// is ignored, as in a real site-config).
pub fn site_config(root: &Path) {
    write(
        root,
        "site.yaml",
        "defaults:\n  timezone: UTC\n  domain: test.invalid\n",
    );
    write(
        root,
        "secrets.yaml",
        &format!(
            "api_tokens:\n  father: \"{PVE_TOKEN}\"\npasswords:\n  vm_root: \"{PASSWORD_HASH}\"\nssh_keys:\n  ops: \"{SSH_KEY}\"\nauth:\n  site_token: \"{SITE_TOKEN}\"\n  node_tokens:\n    prodnode: \"{NODE_TOKEN}\"\n"
        ),
    );
    write(root, ".gitignore", "secrets.yaml\n");
    write(
        root,
        "nodes/father.yaml",
        "node: father\napi_endpoint: https://127.0.0.1:8006\napi_token: father\ndatastore: local\n",
    );
    write(root, "v2/postures/dev.yaml", "auth:\n  method: network\n");
    write(
        root,
        "v2/postures/stage.yaml",
        "auth:\n  method: site_token\n",
    );
    write(
        root,
        "v2/postures/prod.yaml",
        "auth:\n  method: node_token\n",
    );
    write(
        root,
        "v2/specs/base.yaml",
        "schema_version: 1\naccess:\n  users:\n    - name: ops\n      ssh_keys: [ops]\nplatform:\n  packages: [curl]\n",
    );
    write(
        root,
        "v2/specs/staged.yaml",
        "schema_version: 1\naccess:\n  posture: stage\n",
    );
    write(
        root,
        "v2/specs/prodnode.yaml",
        "schema_version: 1\naccess:\n  posture: prod\n",
    );
    write(root, "manifests/demo.yaml", DEMO_MANIFEST);
    write(
        root,
        "controller.yaml",
        "host: father\nmanifests:\n  demo:\n",
    );
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "site-config"]);
}

/// One reconcile the fake engine saw.
#[derive(Debug, Clone)]
pub struct Call {
    pub manifest: String,
    pub host: String,
    pub revision: String,
    pub reason: Reason,
    pub mode: Mode,
    /// The manifest's generation the daemon read when the run started.
    pub generation: u64,
    /// Whether the run reads every VM's config (`Options::deep`).
    pub deep: bool,
}

/// An engine that records calls and converges at once, or, when `hold`
/// is set, waits for shutdown and reports the reconcile interrupted. It
/// records its runs in its (in-memory) store as the real engine does.
/// When `gated`, each run waits for a permit of `gate` once it is
/// called; `fail_destroy` makes destroy runs fail.
pub struct FakeEngine {
    pub store: Arc<dyn Store>,
    pub calls: Mutex<Vec<Call>>,
    tx: mpsc::UnboundedSender<Call>,
    pub hold: AtomicBool,
    pub drifted: AtomicU64,
    pub interrupted_seen: AtomicBool,
    /// Panic in the next reconcile (once).
    pub panic_next: AtomicBool,
    pub gated: AtomicBool,
    pub gate: tokio::sync::Semaphore,
    pub fail_destroy: AtomicBool,
    /// One `GET /cluster/resources` per reconcile, as if PVE answered.
    pub pve: PveMetrics,
}

impl FakeEngine {
    pub fn new() -> (Arc<FakeEngine>, mpsc::UnboundedReceiver<Call>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(FakeEngine {
                store: Arc::new(store::memory()),
                calls: Mutex::new(Vec::new()),
                tx,
                hold: AtomicBool::new(false),
                drifted: AtomicU64::new(0),
                interrupted_seen: AtomicBool::new(false),
                panic_next: AtomicBool::new(false),
                gated: AtomicBool::new(false),
                gate: tokio::sync::Semaphore::new(0),
                fail_destroy: AtomicBool::new(false),
                pve: PveMetrics::new(),
            }),
            rx,
        )
    }
}

impl FakeEngine {
    /// What the real engine does at the end of a run: keep it in the store.
    fn finish(&self, request: &Request, run: RunOutcome) -> RunOutcome {
        let what = RunOf {
            manifest: request.manifest.name(),
            revision: request.revision.as_deref(),
            reason: request.reason,
            mode: request.mode,
            generation: request.generation,
        };
        reconcile::record_run(self.store.as_ref(), &what, &run)
            .expect("the fake engine records its run");
        run
    }
}

fn run(outcome: Outcome, changed: u64, drifted: u64, message: Option<&str>) -> RunOutcome {
    RunOutcome {
        outcome,
        report: None,
        status: None,
        changed_nodes: changed,
        drifted_nodes: drifted,
        summary: format!("{changed} changed"),
        message: message.map(String::from),
        started: Timestamp::now(),
        duration: Duration::ZERO,
    }
}

impl Engine for FakeEngine {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    fn reconcile(
        &self,
        request: Request,
        shutdown: Shutdown,
    ) -> BoxFuture<'_, Result<RunOutcome, EngineError>> {
        Box::pin(async move {
            let call = Call {
                manifest: request.manifest.name().to_string(),
                host: request.host.clone(),
                revision: request.revision.clone().unwrap_or_default(),
                reason: request.reason,
                mode: request.mode,
                generation: request.generation,
                deep: request.options.deep,
            };
            self.calls.lock().unwrap().push(call.clone());
            let _ = self.tx.send(call);
            homestak_pve::Observer::on_answer(
                &self.pve,
                &homestak_pve::Answered {
                    method: &reqwest::Method::GET,
                    template: "/cluster/resources",
                    attempt: 1,
                    status: Some(200),
                    error: None,
                    elapsed: Duration::from_millis(20),
                },
            );
            if self.panic_next.swap(false, Ordering::SeqCst) {
                panic!("fake engine: deliberate panic");
            }
            if self.gated.load(Ordering::SeqCst) {
                self.gate
                    .acquire()
                    .await
                    .expect("the gate is open")
                    .forget();
            }
            let nodes = request.manifest.nodes().unwrap_or_default().len() as u64;
            if request.mode == Mode::Destroy && self.fail_destroy.load(Ordering::SeqCst) {
                let failed = run(Outcome::Failed, 0, nodes, Some("cannot delete a VM"));
                return Ok(self.finish(&request, failed));
            }
            if self.hold.load(Ordering::SeqCst) {
                let mut shutdown = shutdown;
                shutdown.triggered().await;
                self.interrupted_seen.store(true, Ordering::SeqCst);
                let stopped = run(Outcome::Interrupted, 0, 0, Some("stopped at a safe point"));
                return Ok(self.finish(&request, stopped));
            }
            let drifted = self.drifted.load(Ordering::SeqCst);
            let done = if request.mode == Mode::ReportOnly {
                let outcome = if drifted > 0 {
                    Outcome::Drifted
                } else {
                    Outcome::Converged
                };
                run(outcome, 0, drifted, None)
            } else {
                run(Outcome::Converged, nodes, 0, None)
            };
            Ok(self.finish(&request, done))
        })
    }

    fn status(&self, request: StatusRequest) -> BoxFuture<'_, Result<Status, EngineError>> {
        Box::pin(async move {
            let drifted = self.drifted.load(Ordering::SeqCst);
            let nodes = (0..drifted)
                .map(|i| NodeStatus {
                    node: homestak_core::model::NodeName::new(format!("vm{i}")).unwrap(),
                    parent: None,
                    tier: Some(request.host.clone()),
                    vmid: None,
                    ip: None,
                    power: None,
                    state: State::Drifted,
                    changes: Vec::new(),
                    reason: None,
                })
                .collect();
            Ok(Status {
                manifest: request.manifest.name().to_string(),
                host: request.host,
                in_sync: drifted == 0,
                nodes,
                last_applied_commit: None,
                deep: false,
            })
        })
    }

    fn plan(
        &self,
        request: StatusRequest,
    ) -> BoxFuture<'_, Result<homestak_api::v1::PlanTree, EngineError>> {
        Box::pin(async move {
            Ok(homestak_api::v1::PlanTree {
                host: request.host.clone(),
                plan: homestak_core::plan::Plan {
                    manifest: request.manifest.name().to_string(),
                    host: request.host,
                    nodes: Vec::new(),
                },
                text: "nothing to do\n".into(),
                children: Vec::new(),
            })
        })
    }

    fn pve_metrics(&self) -> Option<&PveMetrics> {
        Some(&self.pve)
    }
}

/// API tokens of the tests.
pub fn api_tokens() -> ApiTokens {
    ApiTokens::new(vec![
        ApiToken::new("reader", Scope::Read, &Secret::new(READ_TOKEN)),
        ApiToken::new("writer", Scope::Write, &Secret::new(WRITE_TOKEN)),
    ])
}

/// A test configuration: loopback, any port, our tokens, no watch, an
/// hour between resyncs.
pub fn config(site: &Path, state: &Path) -> Config {
    let mut config = Config::new(site, state);
    config.bind = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.repo_token = RepoToken::Given(Secret::new(REPO_TOKEN));
    config.api_tokens = ApiTokenSource::Tokens(api_tokens());
    config.watch = false;
    config.resync = Duration::from_secs(3600);
    config.shutdown_grace = Duration::from_secs(10);
    config
}

/// A daemon serving in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub url: String,
    pub fingerprint: Fingerprint,
    pub cert_path: PathBuf,
    pub client: reqwest::Client,
    pub control: homestak_daemon::Control,
    pub events: homestak_daemon::events::EventLog,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), homestak_daemon::server::Error>>,
}

/// Starts `config` with `engine` and serves it on a spawned task.
pub async fn start(config: Config, engine: Arc<dyn Engine>) -> Running {
    let daemon = Daemon::start(config, engine).await.expect("daemon starts");
    let fingerprint = daemon.fingerprint();
    let (addr, url, cert_path) = (
        daemon.local_addr(),
        daemon.url(),
        daemon.cert_path().to_path_buf(),
    );
    let (control, events) = (daemon.control(), daemon.events());
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(daemon.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        url,
        fingerprint,
        cert_path,
        client: client(fingerprint),
        control,
        events,
        stop: Some(tx),
        task,
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// GET with an optional bearer token; status and body text.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// A GET sent byte for byte (no path normalisation).
    pub async fn raw(&self, target: &str, authorization: Option<&str>) -> (u16, String) {
        raw_request(self.addr, self.fingerprint, "GET", target, authorization).await
    }

    /// Stops the daemon and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), homestak_daemon::server::Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("daemon stops (hang guard)")
            .expect("daemon task")
    }
}

/// An HTTPS client that trusts exactly the daemon's certificate.
pub fn client(fingerprint: Fingerprint) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(fingerprint))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Sends `METHOD target HTTP/1.1` over TLS exactly as given.
pub async fn raw_request(
    addr: SocketAddr,
    fingerprint: Fingerprint,
    method: &str,
    target: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = Arc::new(homestak_tls::pinned_client_config(fingerprint));
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("tls");
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    // A close_notify-less close is fine here: we only read what came.
    let _ = tls.read_to_end(&mut bytes).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits for the next reconcile call (hang guard only).
pub async fn next_call(rx: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a reconcile call (hang guard)")
        .expect("engine alive")
}

/// Polls `f` until it is true (hang guard only).
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until the store in `state` can be opened (the daemon process
/// that held it is gone), and checks the daemon released its lease.
pub async fn wait_lease_free(state: &Path) {
    let path = state.join("store");
    eventually("the store to be free", || {
        store::open(&path, store::Options::default()).is_ok()
    })
    .await;
    let store = store::open(&path, store::Options::default()).unwrap();
    assert_eq!(
        store.get_lease(LEASE).unwrap(),
        None,
        "the lease was released"
    );
}

/// The name of the daemon's lease in the store.
pub use homestak_daemon::lease::NAME as LEASE;

/// A TCP connection to `addr` from the loopback address `from` (so tests
/// can be many clients: the daemon caps connections per address).
pub async fn tcp_from(
    addr: SocketAddr,
    from: std::net::IpAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// A TLS connection to the daemon from `from`, handshake done.
pub async fn tls_from(
    addr: SocketAddr,
    fingerprint: Fingerprint,
    from: std::net::IpAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = Arc::new(homestak_tls::pinned_client_config(fingerprint));
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tcp_from(addr, from).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from a
/// kept-alive stream: status and body text.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok((
        status,
        String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned(),
    ))
}

/// Waits until the peer closes `stream` (EOF or an error); `None` when it
/// is still open after `limit`. Any bytes the peer sends are dropped.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// The value of one sample line of `/metrics` (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the `/metrics` sample `series` is `value` (hang guard
/// only); returns the exposition it saw.
pub async fn wait_metric(d: &Running, series: &str, value: f64) -> String {
    let mut last = 0.0;
    for _ in 0..600 {
        let (status, text) = d.get("/metrics", Some(READ_TOKEN)).await;
        assert_eq!(status, 200, "{text}");
        last = metric(&text, series);
        if last == value {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {series} = {value} (last {last})");
}

/// An HTTPS client pinned to the daemon whose connections come from the
/// loopback address `from`.
pub fn client_from(fingerprint: Fingerprint, from: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(fingerprint))
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}
