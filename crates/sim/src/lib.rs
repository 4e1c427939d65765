//! The PVE 8.4 simulator: a digital twin of a Proxmox VE host served over
//! HTTPS, strict where PVE is strict (NOTES.md in the shared folder is the
//! reference). It routes and validates requests with PVE's route table
//! and parameter schema, `homestak_pve::schema`, which the PVE client
//! shares and a test holds to the real 8.4 schema.
//!
//! # Tour
//! - [`config`]: the YAML world description and runtime options.
//! - [`server`], [`auth`]: HTTPS, headers, envelopes, tokens and tickets.
//! - [`api`]: the handlers; [`world`], [`vm`], [`storage`], [`tasks`]: the
//!   state they act on; [`runtime`]: locks, clock, workers.
//! - [`faults`], [`control`]: injected faults and the `/_sim/` endpoints.
//! - [`addr`]: per-VM loopback addresses; [`site_config`]: writing a
//!   site-config that points at a running simulator.
//! - [`host`]: the node's own SSH server, whose shell shows the storages
//!   as directories (joining split images happens there).
//! - [`guest`]: what runs inside a VM once it boots: its SSH server
//!   ([`ssh`]), a nested PVE tier (another [`Simulator`] on the VM's
//!   address) for PVE images, services started with `systemctl`, and the
//!   command shims (`pveum`, `pvesh`, `systemctl`, `openssl`, `homestak`).
//!
//! Concurrency: the world mutex is never held across an await.

pub mod addr;
pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod faults;
pub mod guest;
pub mod host;
pub mod hostile;
pub mod nodeconfig;
pub mod runtime;
pub mod server;
pub mod site_config;
pub mod ssh;
pub mod storage;
pub mod tasks;
pub mod vm;
pub mod world;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use config::Config;

use homestak_tls::Fingerprint;
use runtime::{Clock, Shared};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use world::World;

pub use homestak_base::secret::Secret;

/// The simulator could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to listen on {addr}: the simulator serves loopback addresses only (127.0.0.0/8, ::1)"
    )]
    NotLoopback { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}; is another simulator or PVE using it? Try --listen 127.0.0.1:0"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS for the simulator")]
    Cert(#[source] homestak_tls::CertError),
    #[error("cannot build the TLS server configuration")]
    Tls(#[source] rustls::Error),
    #[error("the simulator's TLS private key is not usable PEM")]
    TlsKey(#[source] pem::Error),
    #[error("cannot read the simulator state {}; delete it to start fresh", path.display())]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the simulator state {} is not valid; delete it to start fresh", path.display())]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the simulator state to {}", path.display())]
    SaveState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Addresses(#[from] addr::ClaimError),
    #[error("cannot create the simulator working directory {}", path.display())]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    #[error("cannot read the TLS certificate file {}; delete the certificate and key files to get new ones", path.display())]
    CertRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the TLS certificate file {}", path.display())]
    CertWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the TLS certificate file {}: {problem}; delete the certificate and key files to get new ones", path.display())]
    CertFile {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("the simulator's server stopped with an error")]
    Serve(#[source] std::io::Error),
}

/// What `--ready-file` holds and tests need to connect.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub url: String,
    pub node: String,
    /// `user@realm!tokenid=secret`
    pub token: String,
    pub fingerprint: String,
    pub root_password: String,
    /// `ip:port` of the node's own SSH server (user root), when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ssh: Option<String>,
}

impl fmt::Debug for ReadyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyInfo")
            .field("url", &self.url)
            .field("node", &self.node)
            .field("fingerprint", &self.fingerprint)
            .field("host_ssh", &self.host_ssh)
            .finish_non_exhaustive()
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: the simulator's
/// files (state, keys, tokens, ready file) hold secrets.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    homestak_base::fsutil::write_atomic(path, bytes, 0o600)
}

fn random_hex(bytes: usize) -> String {
    let random: Vec<u8> = (0..bytes).map(|_| rand::random()).collect();
    homestak_base::digest::hex(&random)
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Starts a simulator as `config` says and returns once it accepts
    /// connections.
    pub async fn start(config: Config) -> Result<Handle, Error> {
        homestak_tls::install_crypto_provider();
        let config = config.finish().map_err(Error::Config)?;
        let listen = config
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 8006)));
        let loopback = match listen.ip() {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => v6.is_loopback(),
        };
        if !loopback {
            return Err(Error::NotLoopback { addr: listen });
        }
        let listener = std::net::TcpListener::bind(listen).map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| Error::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
        let node = config.primary_node().to_string();
        let names = [addr.ip().to_string(), "localhost".into(), node.clone()];
        let cert = match &config.tls_files {
            Some(files) => load_or_create_cert(files, &names)?,
            None => homestak_tls::self_signed(&names).map_err(Error::Cert)?,
        };

        let now = Clock::now();
        let world = match &config.state_file {
            Some(path) if path.exists() => {
                let mut w = World::load(path)?;
                w.interrupt_running_tasks(now);
                if config.cold_boot {
                    let boot = Clock {
                        scale: config.time_scale,
                    }
                    .scaled(config.latency.agent_boot);
                    w.power_cycle(Clock::now_ms(), boot.as_millis() as i64);
                }
                w
            }
            _ => World::from_config(
                &config,
                now,
                Secret::new(vm::uuid_from(rand::random(), rand::random())),
                Secret::new(random_hex(12)),
                Secret::new(random_hex(32)),
            ),
        };
        let mut pool = addr::AddrPool::default();
        let mut world = world;
        reclaim_addresses(&mut world, &mut pool)?;

        let (work_dir, temp_work_dir) = match (&config.work_dir, &config.state_file) {
            (Some(d), _) => (d.clone(), false),
            (None, Some(state)) => (state.with_extension("d"), false),
            (None, None) => (
                std::env::temp_dir().join(format!(
                    "homestak-sim-{}-{}",
                    std::process::id(),
                    random_hex(4)
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&work_dir).map_err(|source| Error::WorkDir {
            path: work_dir.clone(),
            source,
        })?;

        let token_id = config.token_id.clone();
        let token = world
            .tokens
            .get(&token_id)
            .map(|t| format!("{token_id}={}", t.secret.expose()))
            .unwrap_or_default();
        let root_password = world.root_password.expose().to_string();
        let faults = faults::Faults::new(config.faults.clone(), config.seed);
        let state_file = config.state_file.clone();
        let shared = Arc::new(Shared::new(
            config,
            world,
            faults,
            pool,
            work_dir.clone(),
            Some(cert.fingerprint),
        ));

        let server_config = server_tls(&cert)?;
        let server_handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(server_config),
        )
        .map_err(|source| Error::Listen { addr, source })?
        .handle(server_handle.clone())
        .http1_only();
        let make = server::MakeSim {
            shared: shared.clone(),
        };
        let join = tokio::spawn(async move { server.serve(make).await });
        server_handle.listening().await;
        shared.guests.start(&shared);
        shared.host.start(&shared, addr.ip()).await;

        let saver = state_file.clone().map(|path| {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if shared.dirty.swap(false, Ordering::Relaxed) {
                        // Cloned under the mutex, written off the runtime's
                        // threads: with thousands of VMs, serializing takes
                        // a while and must not stall the answers.
                        let snapshot = shared.world().clone();
                        let to = path.clone();
                        let saved = tokio::task::spawn_blocking(move || snapshot.save(&to)).await;
                        if let Ok(Err(e)) = saved {
                            tracing::warn!(path = %path.display(), error = %e, "cannot save simulator state");
                        }
                    }
                }
            })
        });

        let ip = match addr.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        Ok(Handle {
            url: format!("https://{ip}:{}", addr.port()),
            addr,
            node,
            token: Secret::new(token),
            root_password: Secret::new(root_password),
            fingerprint: cert.fingerprint,
            shared,
            server: server_handle,
            join: Some(join),
            saver,
            state_file,
            temp_work_dir: temp_work_dir.then_some(work_dir),
        })
    }
}

impl Drop for Handle {
    /// Without [`Handle::shutdown`], guests are still stopped (in the
    /// background, while the runtime lives); their child processes are
    /// killed when dropped in any case.
    fn drop(&mut self) {
        self.shared.guests.signal_stop();
        self.shared.host.signal_stop();
        if self.join.is_some() {
            self.server.shutdown();
        }
        if let Some(s) = &self.saver {
            s.abort();
        }
    }
}

/// Loads the certificate and key from `files`, or generates them and
/// writes them there (the key with mode 0600).
fn load_or_create_cert(
    files: &config::TlsFiles,
    names: &[String],
) -> Result<homestak_tls::SelfSigned, Error> {
    let bad = |path: &Path, problem| Error::CertFile {
        path: path.to_path_buf(),
        problem,
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| Error::CertRead {
            path: path.to_path_buf(),
            source,
        })
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::CertWrite { path, source }
    };
    if files.cert.exists() && files.key.exists() {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let cert_der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| bad(&files.cert, "no PEM certificate in it"))?
            .to_vec();
        if PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).is_err() {
            return Err(bad(&files.key, "no PEM private key in it"));
        }
        return Ok(homestak_tls::SelfSigned {
            fingerprint: Fingerprint::of_der(&cert_der),
            cert_pem,
            key_pem,
            cert_der,
        });
    }
    let cert = homestak_tls::self_signed(names).map_err(Error::Cert)?;
    for (path, text) in [(&files.cert, &cert.cert_pem), (&files.key, &cert.key_pem)] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        }
        write_private(path, text.as_bytes()).map_err(write_err(path))?;
    }
    Ok(cert)
}

/// Claims the address blocks of persisted VMs; VMs whose block another
/// simulator holds now get a new address.
fn reclaim_addresses(world: &mut World, pool: &mut addr::AddrPool) -> Result<(), Error> {
    let mut lost = Vec::new();
    for vm in world.vms.values() {
        let o = vm.address.octets();
        if o[0] != 127 || !pool.try_claim(o[1], o[2]) {
            lost.push(vm.vmid);
        } else {
            pool.note(vm.address);
        }
    }
    for vmid in lost {
        let used = world.used_addresses();
        let ip = pool.allocate(&used)?;
        if let Some(vm) = world.vms.get_mut(&vmid) {
            vm.address = ip;
        }
    }
    Ok(())
}

/// rustls server config: our certificate, HTTP/1.1 only (as pveproxy).
fn server_tls(cert: &homestak_tls::SelfSigned) -> Result<Arc<rustls::ServerConfig>, Error> {
    let key_der = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(Error::TlsKey)?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert_der.clone())], key_der)
        .map_err(Error::Tls)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A running simulator.
pub struct Handle {
    url: String,
    addr: SocketAddr,
    node: String,
    token: Secret,
    root_password: Secret,
    fingerprint: Fingerprint,
    shared: Arc<Shared>,
    server: axum_server::Handle<SocketAddr>,
    join: Option<JoinHandle<std::io::Result<()>>>,
    saver: Option<JoinHandle<()>>,
    state_file: Option<PathBuf>,
    temp_work_dir: Option<PathBuf>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("url", &self.url)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A running tier of the simulator, nested any depth: its world and
/// request counters (for tests and benchmarks of nested trees).
#[derive(Clone)]
pub struct TierView {
    shared: Arc<Shared>,
}

impl TierView {
    fn of(shared: &Arc<Shared>) -> TierView {
        TierView {
            shared: shared.clone(),
        }
    }

    /// A snapshot of this tier's world.
    pub fn world(&self) -> World {
        self.shared.world().clone()
    }

    /// Requests by method and path template since the last reset.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared.counters.snapshot()
    }

    pub fn reset_requests(&self) {
        self.shared.counters.reset();
    }

    /// The faults this tier injected so far, by kind.
    pub fn faults_injected(&self) -> faults::Injected {
        self.shared.faults.injected()
    }

    /// Removes VM `vmid` and its volumes at once, as `DELETE
    /// /_sim/vms/{vmid}` does.
    pub fn delete_vm(&self, vmid: u32) -> Result<(), String> {
        control::remove_vm(&self.shared, vmid)
    }

    /// Kills the main process of service `unit` in VM `vmid` with
    /// SIGKILL, as a crash would (its `Restart=` then applies).
    pub fn kill_service(&self, vmid: u32, unit: &str) -> Result<(), String> {
        let guest = self
            .shared
            .guests
            .get(vmid)
            .ok_or_else(|| format!("VM {vmid} has not booted"))?;
        let pid = guest
            .ctx
            .units
            .state(&guest::units::unit_name(unit))
            .pid
            .ok_or_else(|| format!("{unit} does not run in VM {vmid}"))?;
        let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| format!("kill {unit} (pid {pid}): {e}"))
    }

    /// The nested tier inside this tier's VM `vmid`, while it runs.
    pub fn nested(&self, vmid: u32) -> Option<TierView> {
        let guest = self.shared.guests.get(vmid)?;
        let inner = guest.ctx.pve.as_ref()?.shared()?;
        Some(TierView { shared: inner })
    }
}

impl Handle {
    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The primary node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The API token, `user@realm!tokenid=secret`.
    pub fn token(&self) -> &str {
        self.token.expose()
    }

    /// SHA-256 fingerprint of the server certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Password of `root@pam` for ticket auth.
    pub fn root_password(&self) -> &str {
        self.root_password.expose()
    }

    /// What `--ready-file` holds.
    pub fn ready_info(&self) -> ReadyInfo {
        ReadyInfo {
            url: self.url.clone(),
            node: self.node.clone(),
            token: self.token.expose().to_string(),
            fingerprint: self.fingerprint.to_string(),
            root_password: self.root_password.expose().to_string(),
            host_ssh: self.host_ssh().map(|a| a.to_string()),
        }
    }

    /// Where the node's own SSH server listens (user root), when it runs.
    pub fn host_ssh(&self) -> Option<SocketAddr> {
        self.shared.host.address()
    }

    /// Why the node has no SSH server, if it could not start.
    pub fn host_ssh_error(&self) -> Option<String> {
        self.shared.host.error()
    }

    /// The command lines run over SSH on the node, oldest first.
    pub fn host_commands(&self) -> Vec<String> {
        self.shared.host.commands()
    }

    /// Request counts by `METHOD /path/{template}`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared.counters.snapshot()
    }

    pub fn reset_requests(&self) {
        self.shared.counters.reset();
    }

    /// The faults injected so far, by kind.
    pub fn faults_injected(&self) -> faults::Injected {
        self.shared.faults.injected()
    }

    /// Sets the global fault rates, as `PUT /_sim/faults` does.
    pub fn set_faults(&self, rates: faults::FaultRates) -> Result<(), String> {
        rates.check()?;
        self.shared.faults.set_global(rates);
        Ok(())
    }

    /// A snapshot of the world (for tests and the nested-tier seam).
    pub fn world(&self) -> World {
        self.shared.world().clone()
    }

    /// This tier as a [`TierView`].
    pub fn view(&self) -> TierView {
        TierView::of(&self.shared)
    }

    /// The nested PVE tier inside VM `vmid`, while it runs.
    pub fn nested(&self, vmid: u32) -> Option<TierView> {
        self.view().nested(vmid)
    }

    /// What the API handlers share (the guest shims act on a nested
    /// tier through it).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every guest (their services, SSH servers and nested tiers,
    /// recursively), stops accepting connections, ends workers, saves
    /// `--state` and removes a temporary working directory.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shared.host.stop().await;
        self.shared.guests.shutdown().await;
        self.server.graceful_shutdown(Some(Duration::from_secs(2)));
        let served = match self.join.take() {
            Some(join) => join.await,
            None => Ok(Ok(())),
        };
        self.shared.abort_all_tasks();
        if let Some(s) = self.saver.take() {
            s.abort();
        }
        if let Some(path) = &self.state_file {
            let snapshot = self.shared.world().clone();
            snapshot.save(path).map_err(|source| Error::SaveState {
                path: path.clone(),
                source,
            })?;
        }
        if let Some(dir) = &self.temp_work_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        match served {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(Error::Serve(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> config::TlsFiles {
        config::TlsFiles {
            cert: dir.join("pve-ssl.pem"),
            key: dir.join("pve-ssl.key"),
        }
    }

    #[test]
    fn written_certificates_load_back_and_serve() {
        homestak_tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let names = vec!["127.0.0.1".to_string()];
        let made = load_or_create_cert(&files, &names).unwrap();
        let loaded = load_or_create_cert(&files, &names).unwrap();
        assert_eq!(loaded.cert_der, made.cert_der);
        assert_eq!(loaded.fingerprint, made.fingerprint);
        assert!(server_tls(&loaded).is_ok());
    }

    #[test]
    fn files_without_pem_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path());
        let names = vec!["127.0.0.1".to_string()];
        let made = load_or_create_cert(&files, &names).unwrap();
        std::fs::write(&files.key, "not a key\n").unwrap();
        let err = load_or_create_cert(&files, &names).unwrap_err();
        assert!(
            matches!(&err, Error::CertFile { path, .. } if *path == files.key),
            "{err}"
        );
        std::fs::write(&files.key, &made.key_pem).unwrap();
        std::fs::write(&files.cert, "not a certificate\n").unwrap();
        let err = load_or_create_cert(&files, &names).unwrap_err();
        assert!(
            matches!(&err, Error::CertFile { path, .. } if *path == files.cert),
            "{err}"
        );
    }
}
