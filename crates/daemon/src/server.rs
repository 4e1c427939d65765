//! The daemon's lifecycle: [`Daemon::start`] does everything that can fail
//! before a request is accepted (state directory, lease, site-config,
//! certificate, socket, tokens, repos, `daemon.json`); [`Daemon::run`]
//! serves until the given shutdown future resolves (or the lease is lost),
//! then stops in order:
//! 1. stop accepting connections and let requests in flight finish
//!    (bounded by [`Config::shutdown_grace`]); wrong tokens held by the
//!    tarpit are answered at once ([`super::tarpit`]), so holds never
//!    delay it;
//! 2. signal the reconcile worker and the engine, and wait for the
//!    reconcile in flight to reach a safe point (same bound);
//! 3. give back the host leases, remove the temporary repos and
//!    `daemon.json`, release the store's lease;
//! 4. flush the store.
//!
//! Everything durable lives in the engine's one store (records, subtrees,
//! events, the lease); a `controller.json` left by an older homestak is
//! imported into it once ([`super::legacy`]).
//!
//! Any future can be the shutdown signal, so tests need no signals;
//! `homestak serve` passes SIGTERM/SIGINT and maps SIGHUP to
//! [`Control::reload`].

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use homestak_api::ready::{self, ReadyInfo};
use tokio::sync::mpsc;

use super::api::Api;
use super::auth::{self, ApiTokens, RepoAuth, Scope};
use super::cert::{self, Material};
use super::conn::{self, Gate, Limits};
use super::engine::Engine;
use super::events::EventLog;
use super::fds;
use super::http::{self, App};
use super::lease::{self, Lease};
use super::metrics::Metrics;
use super::reconciler::{self, Reconciler, error_chain};
use super::repos::{self, RepoSet, RepoSpec};
use super::shutdown;
use super::site_cell::SiteCell;
use super::source::{self, Source};
use super::tarpit::Tarpit;
use super::throttle::{self, Clock, Throttle, TokioClock};
use super::{legacy, watch};
use homestak_api::{Event, Kind, Reason};
use homestak_core::site::{Secret, Site, loader};
use homestak_engine::state_dir::{self, SECRET_MODE};
use homestak_engine::store::{self, Store};

/// The default port.
pub const DEFAULT_PORT: u16 = 44443;

/// Every how many resyncs the daemon observes deep (reads every VM's
/// config): 12 × the default 5 minutes is once an hour.
pub const DEFAULT_DEEP_EVERY: u64 = 12;

/// The default address: loopback only. Serving VMs on a bridge is a
/// choice the operator makes with `--bind` (child tiers are started with
/// their VM's address).
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How the repo token is chosen.
#[derive(Debug, Clone)]
pub enum RepoToken {
    /// This token (`--repo-token`, `$HOMESTAK_REPO_TOKEN`).
    Given(Secret),
    /// `<state>/repo-token`, generated on first start (default).
    Generated,
    /// No token (`--no-repo-auth`): anyone who reaches the port can clone.
    Disabled,
}

/// Where API tokens come from.
#[derive(Debug, Clone)]
pub enum ApiTokenSource {
    /// `<state>/api-tokens.yaml`; on first start it is created with one
    /// `write` token named `admin`, whose value goes to `<state>/api-token`.
    Default,
    /// `--api-token-file FILE` (must exist).
    File(PathBuf),
    /// Given in code (feature `testing`: the binary reads a file).
    #[cfg(any(test, feature = "testing"))]
    Tokens(ApiTokens),
}

/// Everything `homestak serve` can be told.
#[derive(Clone)]
pub struct Config {
    pub site_config: PathBuf,
    pub state_dir: PathBuf,
    pub bind: IpAddr,
    pub port: u16,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Extra subject alternative names for a generated certificate.
    pub cert_names: Vec<String>,
    pub repo_token: RepoToken,
    /// `None`: the site-config, as `site-config.git`, when it is a git
    /// repository.
    pub repos: Option<Vec<RepoSpec>>,
    pub api_tokens: ApiTokenSource,
    pub source: source::Mode,
    /// Manifests to reconcile besides those in `controller.yaml`.
    pub manifests: Vec<String>,
    /// Target node for every manifest (overrides `controller.yaml`).
    pub host: Option<String>,
    /// Watch the site-config for changes.
    pub watch: bool,
    pub debounce: Duration,
    pub resync: Duration,
    /// Every Nth resync reads every VM's config (a deep observe); 0: never.
    pub deep_every: u64,
    pub throttle: throttle::Policy,
    /// Connection caps, timeouts and the body cap.
    pub limits: Limits,
    pub clock: Arc<dyn Clock>,
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("site_config", &self.site_config)
            .field("state_dir", &self.state_dir)
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("limits", &self.limits)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for everything but the two directories. It listens on
    /// loopback ([`DEFAULT_BIND`]) unless told where VMs reach it.
    pub fn new(site_config: &Path, state_dir: &Path) -> Config {
        Config {
            site_config: site_config.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            bind: DEFAULT_BIND,
            port: DEFAULT_PORT,
            cert: None,
            key: None,
            cert_names: Vec::new(),
            repo_token: RepoToken::Generated,
            repos: None,
            api_tokens: ApiTokenSource::Default,
            source: source::Mode::GitHead,
            manifests: Vec::new(),
            host: None,
            watch: true,
            debounce: Duration::from_secs(2),
            resync: Duration::from_secs(300),
            deep_every: DEFAULT_DEEP_EVERY,
            throttle: throttle::Policy::default(),
            limits: Limits::default(),
            clock: Arc::new(TokioClock),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the state directory")]
    StateDir(#[source] state_dir::Error),
    #[error("cannot use the store")]
    Store(#[source] store::Error),
    #[error("only one reconciler may use a store")]
    Lease(#[source] lease::Error),
    #[error(
        "another reconciler took over the lease of this store (this daemon stalled past its expiry); stopped so only one converges"
    )]
    LeaseLost,
    #[error("cannot import the daemon state {} into the store", path.display())]
    Legacy {
        path: PathBuf,
        #[source]
        source: legacy::Error,
    },
    #[error("cannot load the site-config {}", path.display())]
    Site {
        path: PathBuf,
        #[source]
        source: loader::Error,
    },
    #[error("cannot set up TLS")]
    Cert(#[source] cert::Error),
    #[error("cannot listen on {addr}; is another daemon running, or pass --port/--bind")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the repo token {}", path.display())]
    RepoToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load API tokens")]
    ApiTokens(#[source] auth::TokenFileError),
    #[error("cannot prepare the served repositories")]
    Repos(#[source] Box<repos::Error>),
    #[error("the HTTPS server failed")]
    Serve(#[source] std::io::Error),
}

/// Messages to a running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlMessage {
    Reload,
}

/// Talks to a running daemon (SIGHUP in `homestak serve`).
#[derive(Debug, Clone)]
pub struct Control(mpsc::UnboundedSender<ControlMessage>);

impl Control {
    /// Reloads the site-config (clearing the resolver's cache), re-reads
    /// manifests and the served repos, and queues a resync.
    pub fn reload(&self) {
        let _ = self.0.send(ControlMessage::Reload);
    }
}

/// A started daemon, listening but not yet serving.
pub struct Daemon {
    config: Config,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    material: Material,
    store: Arc<dyn Store>,
    lease: Lease,
    app: Arc<App>,
    reconciler: Arc<Reconciler>,
    repos: Option<Arc<RepoSet>>,
    events: EventLog,
    site: SiteCell,
    trigger: shutdown::Trigger,
    control_tx: mpsc::UnboundedSender<ControlMessage>,
    control_rx: mpsc::UnboundedReceiver<ControlMessage>,
    repo_token_file: Option<PathBuf>,
    api_token_file: Option<PathBuf>,
    /// Connections held at once, at most (the fd headroom applied).
    connection_cap: usize,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("local_addr", &self.local_addr)
            .field("fingerprint", &self.material.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Prepares everything and binds the socket.
    pub async fn start(config: Config, engine: Arc<dyn Engine>) -> Result<Daemon, Error> {
        let state = config.state_dir.clone();
        state_dir::ensure_dir(&state).map_err(Error::StateDir)?;
        // Served as a git snapshot: a state directory inside would be too.
        state_dir::check_outside(&state, &config.site_config).map_err(Error::StateDir)?;
        let store = engine.store();
        let lease = Lease::acquire(Arc::clone(&store)).map_err(Error::Lease)?;
        legacy::import(&state, store.as_ref()).map_err(|source| Error::Legacy {
            path: state.join(legacy::FILE),
            source,
        })?;

        let site = Site::load(&config.site_config).map_err(|source| Error::Site {
            path: config.site_config.clone(),
            source,
        })?;
        let site = SiteCell::new(site);

        let names = cert::default_names(config.bind, &config.cert_names);
        let material = Material::load_or_generate(
            config.cert.as_deref(),
            config.key.as_deref(),
            &state,
            &names,
        )
        .map_err(Error::Cert)?;
        let tls = material.server_config().map_err(Error::Cert)?;

        // Before the socket: every connection is a descriptor, and the
        // reconciler keeps its own (see `fds`).
        let nofile = fds::raise_nofile();
        let connection_cap =
            fds::connection_cap(config.limits.max_connections, nofile.map(|l| l.0));
        tracing::info!(
            nofile = nofile.map(|l| l.0),
            connection_cap,
            per_address = config.limits.max_connections_per_address,
            "connection limits"
        );

        let addr = SocketAddr::new(config.bind, config.port);
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;

        let (repo_auth, repo_token_file) = repo_auth(&config.repo_token, &state)?;
        let (tokens, api_token_file) = api_tokens(&config.api_tokens, &state)?;

        let repos = prepare_repos(&config, &state).await?;

        let events = EventLog::new(Arc::clone(&store));
        let metrics = Arc::new(Metrics::default());
        let (trigger, shutdown) = shutdown::channel();
        let reconciler = Arc::new(Reconciler::new(reconciler::Parts {
            engine: Arc::clone(&engine),
            store: Arc::clone(&store),
            events: events.clone(),
            metrics: Arc::clone(&metrics),
            site: site.clone(),
            source: Source::new(&config.site_config, config.source),
            extra_manifests: config.manifests.clone(),
            host_override: config.host.clone(),
            // What it serves, `--cert` or generated: its runs' pull-mode
            // VMs fetch their spec from this daemon.
            spec_ca: std::fs::read_to_string(&material.cert_path).ok(),
            shutdown,
            deep_every: config.deep_every,
        }));
        let app = Arc::new(App {
            site: site.clone(),
            repos: repos.clone(),
            repo_auth,
            api: Api {
                tokens: Arc::new(tokens),
                reconciler: Arc::clone(&reconciler),
                engine,
                metrics: Arc::clone(&metrics),
                events: events.clone(),
                site: site.clone(),
            },
            throttle: Throttle::new(config.throttle, Arc::clone(&config.clock)),
            tarpit: Tarpit::new(
                Arc::clone(&config.clock),
                trigger.subscribe(),
                Arc::clone(&metrics),
            ),
            metrics,
            max_body: config.limits.max_body,
            body_timeout: config.limits.idle_timeout,
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let daemon = Daemon {
            config,
            listener,
            local_addr,
            tls,
            material,
            store,
            lease,
            app,
            reconciler,
            repos,
            events,
            site,
            trigger,
            control_tx,
            control_rx,
            repo_token_file,
            api_token_file,
            connection_cap,
        };
        // Commands on this machine find the daemon (and its token) here.
        let mut info = serde_json::to_vec_pretty(&daemon.ready_info()).unwrap_or_default();
        info.push(b'\n');
        state_dir::write_atomic(&state.join(ready::FILE), &info, SECRET_MODE)
            .map_err(Error::StateDir)?;
        Ok(daemon)
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://<addr>`; a loopback address when bound to all of them.
    pub fn url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("https://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// The server certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> homestak_tls::Fingerprint {
        self.material.fingerprint
    }

    /// The certificate's PEM file (a CA file for clients such as git).
    pub fn cert_path(&self) -> &Path {
        &self.material.cert_path
    }

    /// True when this start generated the certificate.
    pub fn cert_generated(&self) -> bool {
        self.material.generated
    }

    /// Names of the served repositories (without `.git`).
    pub fn repo_names(&self) -> Vec<String> {
        self.repos.as_ref().map(|r| r.names()).unwrap_or_default()
    }

    /// A handle to reload the running daemon.
    pub fn control(&self) -> Control {
        Control(self.control_tx.clone())
    }

    /// The event log (feature `testing`: the binary reads events over the API).
    #[cfg(any(test, feature = "testing"))]
    pub fn events(&self) -> EventLog {
        self.events.clone()
    }

    /// What the ready file holds: how to reach and trust this daemon. No
    /// secret values, only where they are.
    pub fn ready_info(&self) -> ReadyInfo {
        ReadyInfo {
            url: self.url(),
            fingerprint: self.material.fingerprint,
            cert: self.material.cert_path.clone(),
            pid: std::process::id(),
            state_dir: self.config.state_dir.clone(),
            repos: self.repo_names(),
            repo_token_file: self.repo_token_file.clone(),
            api_token_file: self.api_token_file.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then stops in order (module docs).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let handle: axum_server::Handle<SocketAddr> = axum_server::Handle::new();
        let listener = self.listener.try_clone().map_err(Error::Serve)?;
        let limits = self.config.limits;
        // Caps and timeouts first, on the bare TCP stream; TLS over it.
        let gate = Gate::new(limits, self.connection_cap, Arc::clone(&self.app.metrics));
        let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(self.tls.clone()))
            .handshake_timeout(limits.first_request_timeout)
            .acceptor(conn::Acceptor::new(gate));
        let mut server = axum_server::from_tcp(listener)
            .map_err(Error::Serve)?
            .acceptor(acceptor)
            .http1_only()
            .handle(handle.clone());
        server
            .http_builder()
            .http1()
            // Timeouts are conn.rs's: hyper's would also cut idle
            // keep-alive at the header timeout.
            .header_read_timeout(None)
            // Heads are small; the default buffer (about 400 KiB) times
            // the connection cap would be a lot of memory to hand out.
            .max_buf_size(64 * 1024);
        let server = server.serve(
            http::router(Arc::clone(&self.app)).into_make_service_with_connect_info::<SocketAddr>(),
        );
        let mut server_task = tokio::spawn(server);
        let worker = tokio::spawn(Arc::clone(&self.reconciler).run_worker());
        tracing::info!(url = %self.url(), fingerprint = %self.material.fingerprint, "serving");
        self.events.emit(Event::info(
            Kind::Started,
            format!("serving on {}", self.local_addr),
        ));

        if self.reconciler.refresh().await.is_ok() {
            self.reconciler.enqueue_all(Reason::Startup);
        }

        let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
        let _watch = if self.config.watch {
            match watch::start(&self.config.site_config, self.config.debounce, watch_tx) {
                Ok(w) => Some(w),
                Err(err) => {
                    tracing::warn!(error = %error_chain(&err), "changes will only be seen at resync");
                    None
                }
            }
        } else {
            None
        };
        let start = tokio::time::Instant::now() + self.config.resync;
        let mut resync = tokio::time::interval_at(start, self.config.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        tokio::pin!(shutdown);
        let mut result = Ok(());
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = self.lease.lost() => {
                    result = Err(Error::LeaseLost);
                    break;
                }
                served = &mut server_task => {
                    result = match served {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(Error::Serve(e)),
                        Err(e) => Err(Error::Serve(std::io::Error::other(e))),
                    };
                    break;
                }
                // Handled inline, one at a time: a refresh never races another.
                Some(()) = watch_rx.recv() => self.on_change(Reason::Commit, None).await,
                _ = resync.tick() => self.on_change(Reason::Commit, Some(Reason::Resync)).await,
                Some(message) = self.control_rx.recv() => match message {
                    ControlMessage::Reload => self.reload().await,
                },
            }
        }

        tracing::info!("shutting down");
        self.events
            .emit(Event::info(Kind::Stopping, "shutdown requested"));
        let grace = self.config.shutdown_grace;
        handle.graceful_shutdown(Some(grace));
        self.trigger.trigger();
        if !server_task.is_finished()
            && tokio::time::timeout(grace + Duration::from_secs(1), &mut server_task)
                .await
                .is_err()
        {
            server_task.abort();
        }
        match tokio::time::timeout(grace, worker).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("the reconcile in flight did not stop within the grace period")
            }
        }
        // No run is in flight now: the hosts' leases go back.
        self.app.api.engine.release_leases().await;
        if let Some(repos) = &self.repos {
            repos.remove().await;
        }
        let _ = std::fs::remove_file(self.config.state_dir.join(ready::FILE));
        drop(self.lease);
        if let Err(err) = self.store.flush() {
            tracing::error!(error = %error_chain(&err), "cannot flush the store");
        }
        result
    }

    /// After a settled change (or a resync tick): refresh the served repos
    /// and the site, and reconcile if the revision moved. `otherwise` is
    /// queued for every manifest when it did not.
    async fn on_change(&self, on_new: Reason, otherwise: Option<Reason>) {
        if let Some(repos) = &self.repos
            && let Err(err) = repos.refresh().await
        {
            tracing::warn!(error = %error_chain(&err), "cannot refresh served repos");
        }
        if let Err(err) = self.site.reload() {
            tracing::warn!(error = %error_chain(&err), "site-config reload failed; keeping the previous one");
        }
        let result = match self.reconciler.refresh().await {
            Ok(true) => {
                self.reconciler.enqueue_all(on_new);
                "changed"
            }
            Ok(false) => "unchanged",
            Err(_) => "error",
        };
        if result != "changed"
            && let Some(reason) = otherwise
        {
            self.reconciler.enqueue_all(reason);
        }
        // Counted last, so an observer that sees the count sees the queue.
        self.app.metrics.source_checks.inc(&[result]);
    }

    async fn reload(&self) {
        tracing::info!("reloading");
        match self.site.reload() {
            Ok(()) => {
                self.events
                    .emit(Event::info(Kind::Reload, "site-config reloaded"));
            }
            Err(err) => {
                let message = error_chain(&err);
                tracing::warn!(error = %message, "site-config reload failed");
                self.events.emit(Event::error(
                    Kind::Reload,
                    format!("site-config reload failed, keeping the previous one: {message}"),
                ));
            }
        }
        self.on_change(Reason::Commit, Some(Reason::Reload)).await;
    }
}

fn repo_auth(choice: &RepoToken, state: &Path) -> Result<(RepoAuth, Option<PathBuf>), Error> {
    Ok(match choice {
        RepoToken::Given(secret) if !secret.is_empty() => (RepoAuth::Token(secret.clone()), None),
        RepoToken::Given(_) | RepoToken::Disabled => {
            tracing::warn!(
                "repo authentication is disabled: anyone who reaches the port can clone"
            );
            (RepoAuth::Disabled, None)
        }
        RepoToken::Generated => {
            let path = state.join("repo-token");
            let secret = read_or_create_secret(&path)?;
            (RepoAuth::Token(secret), Some(path))
        }
    })
}

fn read_or_create_secret(path: &Path) -> Result<Secret, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim())),
        Ok(_) => write_new_secret(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new_secret(path),
        Err(source) => Err(Error::RepoToken {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_new_secret(path: &Path) -> Result<Secret, Error> {
    let secret = auth::generate_token();
    state_dir::write_atomic(
        path,
        format!("{}\n", secret.expose()).as_bytes(),
        SECRET_MODE,
    )
    .map_err(|e| Error::RepoToken {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(secret)
}

fn api_tokens(
    choice: &ApiTokenSource,
    state: &Path,
) -> Result<(ApiTokens, Option<PathBuf>), Error> {
    match choice {
        #[cfg(any(test, feature = "testing"))]
        ApiTokenSource::Tokens(tokens) => Ok((tokens.clone(), None)),
        ApiTokenSource::File(path) => {
            Ok((ApiTokens::from_file(path).map_err(Error::ApiTokens)?, None))
        }
        ApiTokenSource::Default => {
            let file = state.join("api-tokens.yaml");
            let token_path = state.join("api-token");
            if !file.exists() {
                let secret = auth::generate_token();
                state_dir::write_atomic(
                    &token_path,
                    format!("{}\n", secret.expose()).as_bytes(),
                    SECRET_MODE,
                )
                .map_err(Error::StateDir)?;
                state_dir::write_atomic(
                    &file,
                    ApiTokens::file_text("admin", Scope::Write, &secret).as_bytes(),
                    SECRET_MODE,
                )
                .map_err(Error::StateDir)?;
                tracing::info!(path = %token_path.display(), "generated the API token 'admin'");
            }
            let tokens = ApiTokens::from_file(&file).map_err(Error::ApiTokens)?;
            Ok((tokens, token_path.exists().then_some(token_path)))
        }
    }
}

async fn prepare_repos(config: &Config, state: &Path) -> Result<Option<Arc<RepoSet>>, Error> {
    let specs = match &config.repos {
        Some(specs) => specs.clone(),
        None => {
            let is_repo = super::git::Git::new(&config.site_config, ["rev-parse", "--git-dir"])
                .output()
                .await
                .is_ok();
            if is_repo {
                vec![RepoSpec {
                    name: "site-config".to_string(),
                    source: config.site_config.clone(),
                }]
            } else {
                tracing::warn!(
                    path = %config.site_config.display(),
                    "the site-config is not a git repository; no repos are served"
                );
                Vec::new()
            }
        }
    };
    // The state directory's tokens and keys must never be in a snapshot.
    for spec in &specs {
        state_dir::check_outside(state, &spec.source).map_err(|source| {
            Error::Repos(Box::new(super::repos::Error::StateInside {
                name: spec.name.clone(),
                source,
            }))
        })?;
    }
    // Clones left by a process that died: we hold the lease, so none is live.
    super::repos::remove_stale(state);
    let root = super::repos::root_in(state);
    let set = RepoSet::prepare(&root, &specs)
        .await
        .map_err(|e| Error::Repos(Box::new(e)))?;
    Ok(Some(Arc::new(set)))
}
