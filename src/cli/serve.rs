//! `homestak serve`: the controller daemon of this tier (see
//! [`homestak_daemon`]).
//!
//! Prints the URL and the certificate's SHA-256 fingerprint at startup
//! (JSON with `--json`), writes `--ready-file` once listening, reloads on
//! SIGHUP and stops gracefully on SIGTERM/SIGINT.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{GlobalArgs, Outcome, output};
use homestak_core::site::{Secret, discover};
use homestak_daemon::conn::Limits;
use homestak_daemon::converge::ConvergeEngine;
use homestak_daemon::repos::RepoSpec;
use homestak_daemon::server::{ApiTokenSource, Config, DEFAULT_PORT, RepoToken};
use homestak_daemon::{Daemon, source};
use homestak_engine::hostlease::Policy;
use homestak_engine::reconcile::Setup;

/// Arguments of `homestak serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. The default, loopback, serves only this
    /// machine; give the bridge address VMs reach (e.g. 10.0.12.1) to serve
    /// their specs and repos, or 0.0.0.0 for every address.
    #[arg(
        long,
        default_value = "127.0.0.1",
        value_name = "IP",
        env = "HOMESTAK_BIND"
    )]
    pub bind: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT, env = "HOMESTAK_PORT")]
    pub port: u16,
    /// Certificate chain (PEM). Without --cert/--key a self-signed pair is
    /// generated once and kept in the state directory.
    #[arg(long, value_name = "PEM", value_hint = clap::ValueHint::FilePath, requires = "key", env = "HOMESTAK_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "PEM", value_hint = clap::ValueHint::FilePath, requires = "cert", env = "HOMESTAK_KEY")]
    pub key: Option<PathBuf>,
    /// Extra name or IP for a generated certificate (repeatable).
    #[arg(
        long = "san",
        value_name = "NAME",
        env = "HOMESTAK_SAN",
        value_delimiter = ','
    )]
    pub sans: Vec<String>,
    /// Bearer token for /{repo}.git/ requests. Default: generated once into
    /// repo-token in the state directory. Prefer the environment variable:
    /// arguments are visible in `ps`.
    #[arg(
        long,
        env = "HOMESTAK_REPO_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "no_repo_auth",
        value_parser = secret
    )]
    pub repo_token: Option<Secret>,
    /// Serve repos without a token (anyone who reaches the port can clone).
    #[arg(long, env = "HOMESTAK_NO_REPO_AUTH")]
    pub no_repo_auth: bool,
    /// Serve the git repository at PATH as NAME.git (repeatable). Default:
    /// the site-config as site-config.git, when it is a git repository.
    #[arg(
        long = "repo",
        value_name = "NAME=PATH",
        env = "HOMESTAK_REPOS",
        value_delimiter = ','
    )]
    pub repos: Vec<RepoSpec>,
    /// API tokens file (YAML: tokens: [{name, scope: read|write, sha256|token}]).
    /// Default: api-tokens.yaml in the state directory, created on first
    /// start with a write token whose value is in api-token next to it.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath, env = "HOMESTAK_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// State directory (certificate, tokens, lease, records, temporary
    /// repos). Default: $HOMESTAK_STATE_DIR, /var/lib/homestak for root,
    /// else $XDG_STATE_HOME/homestak or ~/.local/state/homestak.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, env = "HOMESTAK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Converge the site-config's working tree instead of its committed HEAD.
    #[arg(long, env = "HOMESTAK_WORKING_TREE")]
    pub working_tree: bool,
    /// Also reconcile this manifest (repeatable), besides those listed in
    /// controller.yaml.
    #[arg(
        long = "manifest",
        short = 'M',
        value_name = "NAME",
        env = "HOMESTAK_MANIFESTS",
        value_delimiter = ','
    )]
    pub manifests: Vec<String>,
    /// Target node for every manifest (overrides controller.yaml).
    #[arg(long, short = 'H', value_name = "NODE", env = "HOMESTAK_HOST")]
    pub host: Option<String>,
    /// Period of the drift-detecting resync.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration, env = "HOMESTAK_RESYNC")]
    pub resync: Duration,
    /// Every Nth resync reads every VM's config (a deep check: network,
    /// cloud-init and other config edits the fast path does not see); 0
    /// never.
    #[arg(long, default_value_t = homestak_daemon::server::DEFAULT_DEEP_EVERY, value_name = "N", env = "HOMESTAK_DEEP_EVERY")]
    pub deep_every: u64,
    /// Quiet time after a change before it is acted on.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = duration, env = "HOMESTAK_DEBOUNCE")]
    pub debounce: Duration,
    /// Do not watch the site-config; changes are seen at resync or SIGHUP.
    #[arg(long, env = "HOMESTAK_NO_WATCH")]
    pub no_watch: bool,
    /// How long shutdown waits for requests and the reconcile in flight.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = duration, env = "HOMESTAK_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
    /// Accept any PVE certificate of a host without api_fingerprint (a pin
    /// is always checked; labs only).
    #[arg(long, env = "HOMESTAK_INSECURE")]
    pub insecure: bool,
    /// Private key for SSH to VMs and to the host (default: ssh_key in the
    /// node file).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath, env = "HOMESTAK_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// Most connections held at once. Lowered at start when the open-file
    /// limit would leave fewer than 512 descriptors to the reconciler.
    #[arg(long, default_value_t = Limits::default().max_connections, value_name = "N", env = "HOMESTAK_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Most connections from one client address (an IPv6 /64 counts as one).
    #[arg(long, default_value_t = Limits::default().max_connections_per_address, value_name = "N", env = "HOMESTAK_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: usize,
    /// A new connection must finish TLS and send its first request head
    /// within this.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration, env = "HOMESTAK_FIRST_REQUEST_TIMEOUT")]
    pub first_request_timeout: Duration,
    /// A later request head must be complete this long after its first byte.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration, env = "HOMESTAK_HEADER_TIMEOUT")]
    pub header_timeout: Duration,
    /// A kept-alive connection with no request, or a write the client does
    /// not read, is closed after this; a request body must arrive within it.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = duration, env = "HOMESTAK_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// Largest request body in bytes (PUT /v1/subtree, POST /v1/plan).
    #[arg(long, default_value_t = Limits::default().max_body, value_name = "BYTES", env = "HOMESTAK_MAX_BODY")]
    pub max_body: usize,
    /// Write {url, fingerprint, cert, pid, ...} as JSON to FILE once listening.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath, env = "HOMESTAK_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Longest accepted `DURATION`: timers built from larger values would
/// overflow the clock (and nobody means them).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a `DURATION` flag (`90s`, `5m`, `1h 30m`), at most a year.
fn duration(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if value > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than a year; give a shorter DURATION"
        ));
    }
    Ok(value)
}

/// A secret flag value, redacted from `Debug` from the start.
fn secret(text: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(text))
}

/// The connection limits the flags give; zero timeouts or caps are raised
/// to the smallest that still serves.
fn limits(args: &Args) -> Limits {
    let at_least = |d: Duration| d.max(Duration::from_millis(100));
    Limits {
        first_request_timeout: at_least(args.first_request_timeout),
        header_timeout: at_least(args.header_timeout),
        idle_timeout: at_least(args.idle_timeout),
        max_connections: args.max_connections.max(1),
        max_connections_per_address: args.max_connections_per_address.max(1),
        max_body: args.max_body,
    }
}

/// Runs `homestak serve`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let site_config = discover::find(global.site_config.as_deref())?;
    let state = super::target::state_dir(args.state_dir.as_ref());
    let mut config = Config::new(&site_config, &state);
    config.limits = limits(&args);
    config.bind = args.bind;
    config.port = args.port;
    config.cert = args.cert;
    config.key = args.key;
    config.cert_names = args.sans;
    config.repo_token = match (args.no_repo_auth, args.repo_token) {
        (true, _) => RepoToken::Disabled,
        (false, Some(token)) if !token.is_empty() => RepoToken::Given(token),
        (false, _) => RepoToken::Generated,
    };
    if !args.repos.is_empty() {
        config.repos = Some(args.repos);
    }
    if let Some(file) = args.api_token_file {
        config.api_tokens = ApiTokenSource::File(file);
    }
    config.source = if args.working_tree {
        source::Mode::WorkingTree
    } else {
        source::Mode::GitHead
    };
    config.manifests = args.manifests;
    config.host = args.host;
    config.resync = args.resync.max(Duration::from_secs(1));
    config.deep_every = args.deep_every;
    config.debounce = args.debounce;
    config.watch = !args.no_watch;
    config.shutdown_grace = args.shutdown_grace;

    let engine = Arc::new(
        ConvergeEngine::open(Setup {
            insecure: args.insecure,
            state_dir: state.clone(),
            open_store: true,
            ssh_key: args.ssh_key.clone(),
            binary: None,
            // One reconciler per tier: the daemon keeps each host's lease
            // while it serves.
            lease: Policy {
                hold: true,
                command: "serve".into(),
                ..Policy::default()
            },
        })
        .context("homestak serve cannot open its store")?,
    );
    let daemon = Daemon::start(config, engine)
        .await
        .context("homestak serve cannot start")?;

    let info = daemon.ready_info();
    if global.json {
        output::print_json(&info)?;
    } else {
        println!("homestak serve: listening on {}", daemon.url());
        println!("certificate SHA-256 fingerprint: {}", daemon.fingerprint());
        println!(
            "certificate: {}{}",
            daemon.cert_path().display(),
            if daemon.cert_generated() {
                " (generated)"
            } else {
                ""
            }
        );
        println!("site-config: {}", site_config.display());
        let repos = daemon.repo_names();
        if !repos.is_empty() {
            println!("repos: {}", repos.join(".git, ") + ".git");
        }
    }
    if let Some(path) = &args.ready_file {
        let mut text = serde_json::to_vec_pretty(&info)?;
        text.push(b'\n');
        homestak_base::fsutil::write_atomic(path, &text, 0o644)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }

    let control = daemon.control();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let reload = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            control.reload();
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        }
    };
    let result = daemon.run(shutdown).await;
    reload.abort();
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result.context("homestak serve stopped with an error")?;
    Ok(Outcome::Converged)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// contrib/homestak.service: what the unit must say for the daemon to
    /// run well under systemd, and a stop timeout longer than the shutdown
    /// grace (so systemd never kills a run mid-step).
    #[test]
    fn the_systemd_unit_has_what_the_daemon_needs() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/homestak.service");
        let text = std::fs::read_to_string(&path).expect("contrib/homestak.service");
        let mut section = String::new();
        let mut keys = std::collections::BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (key, value) = line.split_once('=').expect("key=value");
            keys.insert(format!("{section}.{key}"), value.to_string());
        }
        for (key, want) in [
            ("Service.Type", "exec"),
            ("Service.ExecReload", "/bin/kill -HUP $MAINPID"),
            ("Service.StateDirectory", "homestak"),
            ("Service.ProtectSystem", "strict"),
            ("Service.NoNewPrivileges", "true"),
            ("Service.PrivateTmp", "true"),
            (
                "Service.Environment",
                "HOMESTAK_STATE_DIR=/var/lib/homestak",
            ),
            ("Install.WantedBy", "multi-user.target"),
        ] {
            assert_eq!(keys.get(key).map(String::as_str), Some(want), "{key}");
        }
        assert!(keys["Service.ExecStart"].ends_with("homestak serve"));
        let stop: u64 = keys["Service.TimeoutStopSec"].parse().expect("seconds");
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["homestak", "serve"]).expect("defaults parse");
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert!(Duration::from_secs(stop) > args.shutdown_grace);
        // systemd's own check, where it is installed.
        match std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
        {
            Ok(out) => {
                let said = String::from_utf8_lossy(&out.stderr);
                // The binary path is not installed on a build machine.
                let real: Vec<&str> = said
                    .lines()
                    .filter(|l| !l.contains("/usr/bin/homestak") && !l.trim().is_empty())
                    .collect();
                assert!(real.is_empty(), "systemd-analyze verify: {said}");
            }
            Err(_) => println!("systemd-analyze: SKIPPED, not installed here"),
        }
    }

    /// Every flag of `serve` can come from a `HOMESTAK_*` variable (a
    /// systemd `EnvironmentFile`), each under its own name.
    #[test]
    fn every_serve_flag_has_its_own_environment_variable() {
        use clap::CommandFactory as _;
        let cli = crate::cli::Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve is a subcommand");
        let mut seen = std::collections::BTreeSet::new();
        for arg in serve.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") || arg.is_global_set() {
                continue;
            }
            let env = arg
                .get_env()
                .and_then(|e| e.to_str())
                .unwrap_or_else(|| panic!("--{id} has no environment variable"));
            assert!(env.starts_with("HOMESTAK_"), "{id}: {env}");
            assert!(seen.insert(env.to_string()), "{env} is used twice");
        }
        assert!(seen.len() >= 25, "{seen:?}");
    }

    #[test]
    fn the_repo_token_never_shows_in_debug() {
        use clap::Parser as _;
        let cli =
            crate::cli::Cli::try_parse_from(["homestak", "serve", "--repo-token", "hunter2-repo"])
                .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.repo_token.unwrap().expose(), "hunter2-repo");
    }

    /// Loopback unless told otherwise, and the limits' defaults are the
    /// daemon's own.
    #[test]
    fn defaults_are_loopback_and_the_daemons_limits() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["homestak", "serve"]).unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.bind, homestak_daemon::server::DEFAULT_BIND);
        assert!(args.bind.is_loopback());
        assert_eq!(limits(&args), Limits::default());
        let config = Config::new(std::path::Path::new("s"), std::path::Path::new("t"));
        assert!(config.bind.is_loopback());
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("365d"), Ok(MAX_DURATION));
        assert!(duration("366d").unwrap_err().contains("longer than a year"));
        // Parses (u64 seconds) but would overflow an Instant.
        assert!(duration("500000000000years").is_err());
        assert!(duration("soon").is_err());
    }
}
