//! Guests: what runs inside a simulated VM once it has booted.
//!
//! A VM "boots" when its guest agent would answer: `agent_boot` (scaled,
//! with the agent faults applied) after a start. From then until it stops,
//! is rebooted or destroyed, it has:
//!
//! - an SSH server on `<its address>:<ssh_port>` ([`crate::ssh`])
//!   that accepts the cloud-init `sshkeys` for `ciuser` (default `debian`,
//!   the Debian cloud images' user), with a host key kept in the VM's root
//!   (`/etc/ssh/ssh_host_ed25519_key`), so it is stable across restarts;
//! - for a VM made from a PVE image, a nested PVE tier: another
//!   [`Simulator`](super::Simulator) on `<its address>:8006`
//!   ([`nested`]);
//! - services started with `systemctl` from unit files in its root
//!   ([`units`]), which may run the real `homestak` binary a parent tier
//!   uploaded ([`process`]);
//! - command shims in its shell (the `shims` module).
//!
//! One supervisor task per simulator converges this to the world: it wakes
//! on every world change (and when a pending boot is due), stops the guests
//! of VMs that stopped, rebooted, moved or vanished, and boots the guests of
//! VMs that are up. A VM whose agent never becomes ready never boots.
//! Stopping a guest stops its services (SIGTERM to each process group,
//! SIGKILL after the unit's stop timeout), then its SSH server (open
//! sessions and their commands end), then its nested tier, recursively.

pub mod apt;
pub mod nested;
pub(crate) mod power;
pub mod process;
mod shims;
pub mod units;
mod usercmds;
pub mod userdata;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::runtime::{Clock, Shared};
use super::ssh::{self as simssh, Server, Shell, VmRoot};
use homestak_ssh::BoxFuture;

/// The cloud-init user when the VM config sets no `ciuser`.
pub const DEFAULT_USER: &str = "debian";

/// Where a VM's host key lives in its root.
const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";

/// The guests of one simulator and their supervisor.
pub struct Guests {
    wake: Notify,
    running: Mutex<BTreeMap<u32, Arc<Guest>>>,
    /// VMs whose guest could not boot: start time and why.
    failed: Mutex<BTreeMap<u32, (i64, String)>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The first SSH bind failure is a warning, later ones are debug logs.
    warned_bind: AtomicBool,
}

impl Default for Guests {
    fn default() -> Self {
        Guests {
            wake: Notify::new(),
            running: Mutex::default(),
            failed: Mutex::default(),
            stop: watch::channel(false).0,
            task: Mutex::default(),
            warned_bind: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for Guests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guests")
            .field("running", &self.lock().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Guests {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Arc<Guest>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, (i64, String)>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the supervisor the world changed.
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }

    /// Starts the supervisor of `shared`'s guests.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        let task = tokio::spawn(supervise(shared.clone(), self.stop.subscribe()));
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Asks the supervisor to stop every guest and end, without waiting.
    pub(crate) fn signal_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops every guest and the supervisor, and waits for both.
    pub(crate) async fn shutdown(&self) {
        self.signal_stop();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The running guest of `vmid`.
    pub(crate) fn get(&self, vmid: u32) -> Option<Arc<Guest>> {
        self.lock().get(&vmid).cloned()
    }

    /// What `/_sim/vms/{vmid}` shows about the guest: `null` while the VM
    /// has not booted.
    pub fn view(&self, vmid: u32) -> Value {
        if let Some(g) = self.get(vmid) {
            return g.view();
        }
        match self.failed().get(&vmid) {
            Some((_, error)) => json!({ "booted": false, "error": error }),
            None => Value::Null,
        }
    }
}

/// What a VM's config says its guest boots with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Boot {
    pub vmid: u32,
    /// The start time: a new one means a new boot.
    pub boot_id: i64,
    pub address: Ipv4Addr,
    pub hostname: String,
    pub user: String,
    pub keys: Vec<String>,
    /// Made from a PVE image; at boot, also when `proxmox-ve` is
    /// installed ([`apt`]).
    pub pve: bool,
    /// The image the boot disk came from (its Debian release).
    pub image: Option<String>,
    pub workdir: PathBuf,
    pub cpus: u32,
    pub memory: u64,
    /// The user-data snippet `cicustom` names, as it was at the start.
    pub user_data: Option<String>,
}

/// What the supervisor should converge to.
struct Wanted {
    /// VMs whose guest is up with the boot they should have.
    keep: BTreeSet<u32>,
    /// The boots of the other VMs that should be up.
    boot: BTreeMap<u32, Boot>,
    /// When the next pending boot is due.
    due: Option<i64>,
}

/// The VMs whose guests should be up. The world changes on every request,
/// so this runs often: a VM whose guest is already up with the same boot
/// (`up`: boot id and address by vmid) costs a comparison, not a [`Boot`].
fn wanted(shared: &Shared, now_ms: i64, up: &BTreeMap<u32, (i64, Ipv4Addr)>) -> Wanted {
    let w = shared.world();
    let mut wanted = Wanted {
        keep: BTreeSet::new(),
        boot: BTreeMap::new(),
        due: None,
    };
    for vm in w.vms.values() {
        let (true, Some(started), Some(ready), Some(workdir)) =
            (vm.running(), vm.started_at, vm.agent_ready_at, &vm.workdir)
        else {
            continue;
        };
        if ready > now_ms {
            wanted.due = Some(wanted.due.map_or(ready, |d| d.min(ready)));
            continue;
        }
        // A reboot inside the guest is a new boot too.
        let boot_id = vm.guest_boot_at.map_or(started, |g| g.max(started));
        if up.get(&vm.vmid) == Some(&(boot_id, vm.address)) {
            wanted.keep.insert(vm.vmid);
            continue;
        }
        wanted.boot.insert(
            vm.vmid,
            Boot {
                vmid: vm.vmid,
                boot_id,
                address: vm.address,
                hostname: hostname_of(&vm.name(), vm.vmid),
                user: vm.ciuser().unwrap_or(DEFAULT_USER).to_string(),
                keys: vm.ssh_keys(),
                pve: vm.pve_image,
                image: vm.image.clone(),
                workdir: workdir.clone(),
                cpus: u32::try_from(vm.cpus()).unwrap_or(1),
                memory: vm.memory_mib() << 20,
                user_data: vm
                    .config
                    .get("cicustom")
                    .and_then(|c| userdata::user_volume(c))
                    .and_then(|volid| userdata::snippet_text(&w, &vm.node, volid).ok()),
            },
        );
    }
    wanted
}

/// The guest's host name (and a nested tier's node name): the VM name
/// when it is a valid host name, else `vm<vmid>`.
pub fn hostname_of(name: &str, vmid: u32) -> String {
    if homestak_pve::schema::formats::is_node_name(name) {
        name.to_string()
    } else {
        format!("vm{vmid}")
    }
}

async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        // Only this task changes the running guests, so `up` stays true
        // until `converge` does.
        let up: BTreeMap<u32, (i64, Ipv4Addr)> = shared
            .guests
            .lock()
            .iter()
            .map(|(vmid, g)| (*vmid, (g.boot.boot_id, g.boot.address)))
            .collect();
        let want = wanted(&shared, Clock::now_ms(), &up);
        let due = want.due;
        converge(&shared, want).await;
        let wait = due.map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis((t - Clock::now_ms()).clamp(1, 3_600_000) as u64)
        });
        tokio::select! {
            () = shared.guests.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    let all: Vec<Arc<Guest>> = std::mem::take(&mut *shared.guests.lock())
        .into_values()
        .collect();
    let mut stopping = JoinSet::new();
    for guest in all {
        stopping.spawn(guest.stop());
    }
    while stopping.join_next().await.is_some() {}
}

async fn converge(shared: &Arc<Shared>, want: Wanted) {
    // Stale guests stay listed (as stopping) until they are down, so that
    // `/_sim/` shows a VM's guest gone only once its servers are.
    let stale: Vec<Arc<Guest>> = {
        let running = shared.guests.lock();
        running
            .iter()
            .filter(|(vmid, _)| !want.keep.contains(vmid))
            .map(|(_, g)| g.clone())
            .collect()
    };
    let want = want.boot;
    let mut work = JoinSet::new();
    for guest in &stale {
        guest.stopping.store(true, Ordering::Relaxed);
        work.spawn(guest.clone().stop());
    }
    while work.join_next().await.is_some() {}
    {
        let mut running = shared.guests.lock();
        for guest in stale {
            let vmid = guest.boot.vmid;
            if running.get(&vmid).is_some_and(|g| Arc::ptr_eq(g, &guest)) {
                running.remove(&vmid);
            }
        }
    }

    let to_boot: Vec<Boot> = {
        let running = shared.guests.lock();
        let mut failed = shared.guests.failed();
        // A failed boot is not retried until the VM starts again.
        failed.retain(|vmid, (boot_id, _)| want.get(vmid).is_some_and(|b| b.boot_id == *boot_id));
        want.into_values()
            .filter(|b| !running.contains_key(&b.vmid) && !failed.contains_key(&b.vmid))
            .collect()
    };
    let mut booting = JoinSet::new();
    for boot in to_boot {
        booting.spawn(Guest::boot(shared.clone(), boot));
    }
    while let Some(done) = booting.join_next().await {
        match done {
            Ok(Ok(guest)) => {
                shared.guests.lock().insert(guest.boot.vmid, guest);
            }
            Ok(Err((boot, error))) => {
                tracing::warn!(vmid = boot.vmid, %error, "the simulated VM cannot boot");
                shared
                    .guests
                    .failed()
                    .insert(boot.vmid, (boot.boot_id, error));
            }
            Err(_) => {}
        }
    }
}

/// What a guest's commands can reach: its root, services and nested tier.
pub(crate) struct GuestCtx {
    pub boot: Boot,
    pub root: VmRoot,
    pub units: units::Units,
    pub pve: Option<Arc<nested::Pve>>,
    /// The simulator it runs in (`reboot` asks it for a new boot).
    pub shared: std::sync::Weak<Shared>,
}

/// The SSH side of a booted guest.
#[derive(Clone, Debug, Default)]
struct SshState {
    listen: Option<SocketAddr>,
    host_key: Option<String>,
    error: Option<String>,
}

/// One booted VM.
pub(crate) struct Guest {
    boot: Boot,
    /// Set while its services and servers are being stopped.
    stopping: AtomicBool,
    pub ctx: Arc<GuestCtx>,
    ssh: Mutex<Option<Server>>,
    ssh_state: Mutex<SshState>,
}

impl Guest {
    /// Boots the guest; fails only when its root directory cannot be made.
    fn boot(
        shared: Arc<Shared>,
        boot: Boot,
    ) -> BoxFuture<'static, Result<Arc<Guest>, (Boot, String)>> {
        Box::pin(async move {
            let mut boot = boot;
            let root = match VmRoot::create(&boot.workdir.join("root")) {
                Ok(root) => root,
                Err(e) => return Err((boot, e.to_string())),
            };
            // Debian with proxmox-ve installed boots as a PVE host.
            boot.pve = boot.pve || apt::pve_installed(&root).await;
            // Only a first boot runs user-data, as cloud-init's per-instance
            // modules do.
            let first = root
                .resolve("/", FIRST_BOOT_DONE)
                .is_ok_and(|p| !p.host.exists());
            let cloud = boot
                .user_data
                .as_deref()
                .filter(|_| first)
                .map(userdata::parse);
            if let Some(cloud) = &cloud
                && let Some((user, keys)) = &cloud.user
            {
                boot.user.clone_from(user);
                boot.keys = keys.iter().chain(&cloud.keys).cloned().collect();
            } else if let Some(cloud) = &cloud {
                boot.keys.extend(cloud.keys.iter().cloned());
            }
            prepare_root(&root, &boot).await;
            users::prepare(&root, &boot.user).await;
            apt::prepare(
                &root,
                boot.image.as_deref(),
                boot.pve,
                &shared.config.pve_version,
            )
            .await;
            let pve = boot.pve.then(|| {
                Arc::new(nested::Pve::new(nested::inner_config(
                    &shared.config,
                    &boot,
                    &root,
                )))
            });
            if let Some(pve) = &pve {
                // A failure is recorded in the tier's status (see `/_sim/`).
                let _ = pve.start().await;
            }
            let ctx = Arc::new(GuestCtx {
                units: units::Units::new(root.clone(), boot.workdir.join("journal")),
                root,
                pve,
                boot,
                shared: Arc::downgrade(&shared),
            });
            ctx.units.start_enabled().await;
            if let Some(cloud) = &cloud {
                run_user_data(&ctx, cloud).await;
            }
            let guest = Guest {
                boot: ctx.boot.clone(),
                stopping: AtomicBool::new(false),
                ctx: ctx.clone(),
                ssh: Mutex::new(None),
                ssh_state: Mutex::new(SshState::default()),
            };
            guest.start_ssh(&shared).await;
            Ok(Arc::new(guest))
        })
    }

    async fn start_ssh(&self, shared: &Shared) {
        let boot = &self.boot;
        let listen = SocketAddr::from((boot.address, shared.config.ssh_port));
        let mut state = SshState {
            listen: Some(listen),
            ..SshState::default()
        };
        let keys = match simssh::parse_authorized_keys(&boot.keys.join("\n")) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(vmid = boot.vmid, error = %e, "ignoring the VM's sshkeys");
                Vec::new()
            }
        };
        let host_key = match load_host_key(&self.ctx.root).await {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(vmid = boot.vmid, error = %e, "cannot keep the VM's SSH host key; using a fresh one");
                None
            }
        };
        let shell = guest_shell(&self.ctx);
        let config = simssh::Config {
            listen,
            user: boot.user.clone(),
            authorized_keys: keys,
            host_key,
            handler: Arc::new(shell),
            accounts: Some(Arc::new(accounts(&self.ctx))),
        };
        match Server::start(config).await {
            Ok(server) => {
                state.host_key = Some(server.host_key_fingerprint().to_string());
                *self.ssh.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
            }
            Err(e) => {
                let first = !shared.guests.warned_bind.swap(true, Ordering::Relaxed);
                let hint = if shared.config.ssh_port < 1024 {
                    " (ports below 1024 need root or CAP_NET_BIND_SERVICE; set ssh_port: 2222 in the simulator config)"
                } else {
                    ""
                };
                if first {
                    tracing::warn!(vmid = boot.vmid, %listen, error = %e, "simulated VMs get no SSH server{hint}");
                } else {
                    tracing::debug!(vmid = boot.vmid, %listen, error = %e, "no SSH server for this VM");
                }
                state.error = Some(format!("{e}{hint}"));
            }
        }
        *self.ssh_state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Stops services, then SSH, then the nested tier.
    fn stop(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.ctx.units.stop_all().await;
            let server = self.ssh.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(server) = server {
                server.shutdown().await;
            }
            if let Some(pve) = &self.ctx.pve {
                pve.stop().await;
            }
        })
    }

    fn view(&self) -> Value {
        let ssh = self
            .ssh_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let stopping = self.stopping.load(Ordering::Relaxed);
        json!({
            "booted": !stopping,
            "stopping": stopping,
            "hostname": self.boot.hostname,
            "ssh": {
                "address": ssh.listen.map(|a| a.to_string()),
                "user": self.boot.user,
                "host_key": ssh.host_key,
                "error": ssh.error,
            },
            "pve": self.ctx.pve.as_ref().map(|p| p.view()),
            "services": self.ctx.units.view(),
        })
    }
}

/// Marks that cloud-init ran the VM's user-data (the instance's first boot).
const FIRST_BOOT_DONE: &str = "/var/lib/cloud/instance/boot-finished";

/// Where cloud-init's output goes.
const CLOUD_INIT_LOG: &str = "/var/log/cloud-init-output.log";

/// The shell of the guest's SSH sessions and of its cloud-init.
fn guest_shell(ctx: &Arc<GuestCtx>) -> Shell {
    let boot = &ctx.boot;
    let shell = Shell::new(ctx.root.clone(), &boot.hostname)
        .with_address(boot.address.into())
        .with_kernel(if boot.pve {
            "6.8.12-9-pve"
        } else {
            "6.12.41+deb13-amd64"
        })
        .with_accounts(Arc::new(accounts(ctx)));
    let shell = usercmds::install(shell, owners(ctx));
    shims::install(shell, ctx)
}

fn owners(ctx: &GuestCtx) -> users::Owners {
    users::Owners::new(&ctx.boot.workdir, &ctx.boot.user)
}

/// The guest's users, for its SSH server and `sudo`.
fn accounts(ctx: &GuestCtx) -> users::GuestAccounts {
    users::GuestAccounts {
        root: ctx.root.clone(),
        ciuser: ctx.boot.user.clone(),
        owners: owners(ctx),
    }
}

/// cloud-init's first boot: `write_files`, then each `runcmd` entry as
/// root, its output and any warning in the log; then the instance is
/// marked done. It runs before SSH answers, so a client that got in sees
/// its result (as after `cloud-init status --wait`).
async fn run_user_data(ctx: &Arc<GuestCtx>, cloud: &userdata::CloudConfig) {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    let Ok(log_path) = ctx.root.resolve("/", CLOUD_INIT_LOG) else {
        return;
    };
    let mut log = Vec::new();
    for warning in &cloud.warnings {
        log.extend_from_slice(format!("cloud-init: WARNING: {warning}\n").as_bytes());
    }
    for file in &cloud.files {
        let Ok(path) = ctx.root.resolve("/", &file.path) else {
            log.extend_from_slice(
                format!("cloud-init: write_files {}: outside the VM\n", file.path).as_bytes(),
            );
            continue;
        };
        if let Some(dir) = path.host.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).write(true);
        if file.append {
            options.append(true);
        } else {
            options.truncate(true);
        }
        let written = match options.open(&path.host).await {
            Ok(mut f) => f.write_all(&file.content).await,
            Err(e) => Err(e),
        };
        let moded =
            tokio::fs::set_permissions(&path.host, std::fs::Permissions::from_mode(file.mode))
                .await;
        if let Err(e) = written.and(moded) {
            log.extend_from_slice(
                format!("cloud-init: write_files {}: {e}\n", file.path).as_bytes(),
            );
        }
    }
    let _ = tokio::fs::write(&log_path.host, &log).await;
    let shell = guest_shell(ctx);
    for line in &cloud.runcmd {
        let out = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path.host)
            .await;
        let Ok(out) = out else { break };
        let Ok(err) = out.try_clone().await else {
            break;
        };
        let io = simssh::Stdio {
            stdin: Box::new(tokio::io::empty()),
            stdout: Box::new(out),
            stderr: Box::new(err),
        };
        shell.run_line(line, "root", io).await;
    }
    if let Ok(done) = ctx.root.resolve("/", FIRST_BOOT_DONE) {
        if let Some(dir) = done.host.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let _ = tokio::fs::write(&done.host, b"").await;
    }
}

/// The directories a freshly booted Debian (or PVE) image has.
async fn prepare_root(root: &VmRoot, boot: &Boot) {
    let home = if boot.user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{}", boot.user)
    };
    let mut dirs = vec![
        "/etc/ssh",
        "/etc/systemd/system/multi-user.target.wants",
        "/root",
        "/run",
        "/tmp",
        "/usr/local/bin",
        "/var/lib",
        "/var/log",
    ];
    if boot.pve {
        // `/var/lib/vz` shows the nested tier's `local` storage.
        dirs.extend(["/etc/pve/local", "/var/lib/vz", "/mnt/pve"]);
    }
    for dir in dirs.iter().copied().chain([home.as_str()]) {
        if let Ok(path) = root.resolve("/", dir) {
            let _ = tokio::fs::create_dir_all(&path.host).await;
        }
    }
    if let Ok(path) = root.resolve("/", "/etc/hostname") {
        let _ = tokio::fs::write(&path.host, format!("{}\n", boot.hostname)).await;
    }
    // As cloud-init's `manage_etc_hosts` writes it: the host name on
    // 127.0.1.1, which PVE refuses as the node's address.
    if let Ok(path) = root.resolve("/", "/etc/hosts")
        && tokio::fs::metadata(&path.host).await.is_err()
    {
        let text = format!(
            "127.0.0.1 localhost\n127.0.1.1 {0}.localdomain {0}\n::1 localhost ip6-localhost ip6-loopback\n",
            boot.hostname
        );
        let _ = tokio::fs::write(&path.host, text).await;
    }
}

/// The VM's (or host's) persistent ed25519 host key, created on first
/// boot.
pub(crate) async fn load_host_key(root: &VmRoot) -> Result<russh::keys::PrivateKey, String> {
    use russh::keys::{Algorithm, PrivateKey};
    let path = root.resolve("/", HOST_KEY).map_err(|e| e.to_string())?;
    if let Ok(text) = tokio::fs::read_to_string(&path.host).await {
        return PrivateKey::from_openssh(&text).map_err(|e| e.to_string());
    }
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .map_err(|e| e.to_string())?;
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    super::write_private(&path.host, text.as_bytes()).map_err(|e| e.to_string())?;
    if let Ok(public) = key.public_key().to_openssh() {
        let _ = tokio::fs::write(path.host.with_extension("pub"), format!("{public}\n")).await;
    }
    Ok(key)
}
