//! The simulated PVE node's own SSH server: what a real host offers for
//! the jobs its API cannot do (homestak joins images shipped in parts
//! there).
//!
//! It listens on the simulator's address at `host_ssh_port` (0 picks a free
//! port; by default the VMs' `ssh_port`, or a free port when that one
//! cannot be bound, such as 22 without root), lets `root` in with the keys in
//! `host_ssh_keys` (`homestak sim --site-config` adds the key it gives the
//! site-config), and runs the simulated shell in a root directory of its
//! own (`<work dir>/host/<node>/root`, where its host key is kept) with:
//!
//! - the node's file-based storages as directories
//!   ([`storagefs`]: `/var/lib/vz/import/…` ↔ `local:import/…`), backed by
//!   the world's volume records, so `cat a b > c`, `mv` and `rm` there
//!   change what the API lists;
//! - `pvesm path VOLUME` ([`pvesm`]).
//!
//! Only the first node of the simulator has a server; nested tiers have
//! none (their host is the VM, whose own SSH server shows the inner
//! storages the same way).

pub mod packer;
pub mod pvesm;
pub mod storagefs;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use super::runtime::Shared;
use super::ssh::{self as simssh, CommandHandler, ExecRequest, Server, Shell, VmRoot};
use homestak_ssh::BoxFuture;
use storagefs::StorageFs;

/// Host commands kept for `/_sim/host` and tests (the oldest are dropped).
const COMMAND_LOG: usize = 1000;

/// The host's SSH server and what it ran.
#[derive(Default)]
pub struct Host {
    server: Mutex<Option<Server>>,
    view: Mutex<View>,
    commands: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone, Debug, Default)]
struct View {
    listen: Option<SocketAddr>,
    host_key: Option<String>,
    error: Option<String>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("view", &*lock(&self.view))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records each command line, then runs it in the shell.
struct Logged {
    shell: Shell,
    log: Arc<Mutex<Vec<String>>>,
}

impl CommandHandler for Logged {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'static, u32> {
        {
            let mut log = lock(&self.log);
            if log.len() >= COMMAND_LOG {
                log.remove(0);
            }
            log.push(request.command.clone());
        }
        self.shell.exec(request)
    }
}

impl Host {
    /// Starts the server of `shared`'s first node on `ip`, as the config
    /// says. A port that cannot be bound leaves the simulator running
    /// without it; the reason is logged and shown in `/_sim/host`.
    pub(crate) async fn start(&self, shared: &Arc<Shared>, ip: IpAddr) {
        let config = &shared.config;
        if !config.host_ssh {
            return;
        }
        let node = config.primary_node().to_string();
        let port = config.host_ssh_port.unwrap_or(config.ssh_port);
        let listen = SocketAddr::new(ip, port);
        let mut view = View {
            listen: Some(listen),
            ..View::default()
        };
        let mut served = self.serve(shared, &node, listen).await;
        if let Err(error) = &served
            && config.host_ssh_port.is_none()
            && port != 0
        {
            // The port was only a default (the VMs' SSH port): any free
            // one will do, since the site-config learns the real one.
            tracing::info!(%listen, %error, "the simulated host's SSH takes a free port instead");
            served = self.serve(shared, &node, SocketAddr::new(ip, 0)).await;
        }
        match served {
            Ok(server) => {
                view.listen = Some(server.local_addr());
                view.host_key = Some(server.host_key_fingerprint().to_string());
                *lock(&self.server) = Some(server);
            }
            Err(error) => {
                let hint = if port < 1024 && port != 0 {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE; set host_ssh_port or ssh_port: 2222 in the simulator config)"
                } else {
                    ""
                };
                tracing::warn!(%listen, %error, "the simulated host gets no SSH server{hint}");
                view.error = Some(format!("{error}{hint}"));
            }
        }
        *lock(&self.view) = view;
    }

    async fn serve(
        &self,
        shared: &Arc<Shared>,
        node: &str,
        listen: SocketAddr,
    ) -> Result<Server, String> {
        let keys = simssh::parse_authorized_keys(&shared.config.host_ssh_keys.join("\n"))
            .map_err(|e| e.to_string())?;
        let root = VmRoot::create(&shared.work_dir.join("host").join(node).join("root"))
            .map_err(|e| e.to_string())?;
        prepare_root(shared, &root, node).await;
        let host_key = super::guest::load_host_key(&root).await?;
        let fs = StorageFs::node(shared, node);
        let shell = Shell::new(root, node)
            .with_address(listen.ip())
            .with_kernel("6.8.12-9-pve")
            .with_mounts(Arc::new(fs.clone()))
            .with_program("pvesm", Arc::new(pvesm::Pvesm(fs)))
            .with_program(
                "packer",
                Arc::new(packer::Packer {
                    clock: shared.clock,
                }),
            );
        let handler = Logged {
            shell,
            log: self.commands.clone(),
        };
        let config = simssh::Config {
            listen,
            user: "root".into(),
            authorized_keys: keys,
            host_key: Some(host_key),
            handler: Arc::new(handler),
            accounts: None,
        };
        Server::start(config).await.map_err(|e| e.to_string())
    }

    /// Stops the server without waiting for its connections.
    pub(crate) fn signal_stop(&self) {
        drop(lock(&self.server).take());
    }

    /// Stops the server and waits for its connections to end.
    pub(crate) async fn stop(&self) {
        let server = lock(&self.server).take();
        if let Some(server) = server {
            server.shutdown().await;
        }
    }

    /// Where the server listens, while it runs.
    pub fn address(&self) -> Option<SocketAddr> {
        lock(&self.server).as_ref().map(Server::local_addr)
    }

    /// Why there is no server, if it failed to start.
    pub fn error(&self) -> Option<String> {
        lock(&self.view).error.clone()
    }

    /// The command lines run over SSH on the host, oldest first.
    pub fn commands(&self) -> Vec<String> {
        lock(&self.commands).clone()
    }

    /// What `/_sim/host` shows.
    pub fn view(&self) -> Value {
        let view = lock(&self.view).clone();
        json!({
            "ssh": {
                "address": self.address().map(|a| a.to_string()),
                "user": "root",
                "host_key": view.host_key,
                "error": view.error,
            },
            "commands": self.commands(),
        })
    }
}

/// The directories of a freshly installed PVE host, and the storages'
/// mount points (so that `ls /var/lib` shows `vz`).
async fn prepare_root(shared: &Shared, root: &VmRoot, node: &str) {
    let mut dirs = vec![
        "/etc/ssh".to_string(),
        "/etc/pve/local".into(),
        "/root".into(),
        "/tmp".into(),
        "/var/log".into(),
    ];
    if let Some(n) = shared.world().nodes.get(node) {
        dirs.extend(
            n.storages
                .values()
                .filter(|s| s.kind.file_based())
                .map(|s| s.path()),
        );
    }
    for dir in &dirs {
        if let Ok(path) = root.resolve("/", dir) {
            let _ = tokio::fs::create_dir_all(&path.host).await;
        }
    }
    if let Ok(path) = root.resolve("/", "/etc/hostname") {
        let _ = tokio::fs::write(&path.host, format!("{node}\n")).await;
    }
    // KVM with nested guests allowed, as preflight reads it (`cat`).
    if let Ok(path) = root.resolve("/", NESTED_PARAMETER) {
        if let Some(dir) = path.host.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let _ = tokio::fs::write(&path.host, "Y\n").await;
    }
}

/// Where the host's KVM says whether nested guests are allowed.
pub const NESTED_PARAMETER: &str = "/sys/module/kvm_intel/parameters/nested";
