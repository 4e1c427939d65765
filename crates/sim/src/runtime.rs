//! What a running simulator shares between its connections and workers:
//! the world behind a short-held mutex, the clock with its time scale,
//! per-VM and per-storage locks with PVE's timeouts, request counters,
//! faults, and task workers.
//!
//! Rule: the world mutex is never held across an `.await`; workers sleep,
//! wait for locks, then take the mutex for one quick mutation.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::OwnedMutexGuard;
use tokio::task::AbortHandle;

use super::addr::AddrPool;
use super::config::Config;
use super::faults::Faults;
use super::world::World;

/// Wall-clock time and the time scale.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub scale: f64,
}

impl Clock {
    /// `secs` of simulated work as a real duration.
    pub fn scaled(&self, secs: f64) -> Duration {
        let s = secs * self.scale;
        if s.is_finite() && s > 0.0 {
            Duration::from_secs_f64(s.min(86_400.0))
        } else {
            Duration::ZERO
        }
    }

    pub async fn sleep(&self, secs: f64) {
        let d = self.scaled(secs);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    pub fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    pub fn now() -> i64 {
        Self::now_ms() / 1000
    }
}

/// Request counts by `METHOD /path/{template}`.
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn record(&self, key: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key.to_string()).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn reset(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

type LockMap<K> = Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>;

/// Everything one simulator shares.
pub struct Shared {
    pub config: Config,
    pub clock: Clock,
    world: Mutex<World>,
    /// Set when the world changed and `--state` should be written.
    pub dirty: AtomicBool,
    vm_locks: LockMap<u32>,
    storage_locks: LockMap<(String, String)>,
    pub counters: Counters,
    pub faults: Faults,
    pub addrs: Mutex<AddrPool>,
    tasks: Mutex<HashMap<String, AbortHandle>>,
    /// Base of the per-VM working directories.
    pub work_dir: std::path::PathBuf,
    fingerprint: Option<homestak_tls::Fingerprint>,
    /// What runs inside booted VMs (SSH, nested PVE, services).
    pub guests: super::guest::Guests,
    /// The node's own SSH server.
    pub host: super::host::Host,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.config.primary_node())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        config: Config,
        world: World,
        faults: Faults,
        addrs: AddrPool,
        work_dir: std::path::PathBuf,
        fingerprint: Option<homestak_tls::Fingerprint>,
    ) -> Self {
        Shared {
            clock: Clock {
                scale: config.time_scale,
            },
            config,
            world: Mutex::new(world),
            dirty: AtomicBool::new(false),
            vm_locks: Mutex::default(),
            storage_locks: Mutex::default(),
            counters: Counters::default(),
            faults,
            addrs: Mutex::new(addrs),
            tasks: Mutex::default(),
            work_dir,
            fingerprint,
            guests: super::guest::Guests::default(),
            host: super::host::Host::default(),
        }
    }

    /// The server certificate's fingerprint (shown in `GET /nodes`).
    pub fn fingerprint(&self) -> Option<homestak_tls::Fingerprint> {
        self.fingerprint
    }

    /// Read access to the world (short critical sections only).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write access; marks the world dirty for `--state` and wakes the
    /// guest supervisor, which looks once the guard is dropped.
    pub fn world_mut(&self) -> MutexGuard<'_, World> {
        self.dirty.store(true, Ordering::Relaxed);
        let guard = self.world();
        self.guests.poke();
        guard
    }

    /// Waits for the VM's config lock (`lock_config`) up to the lock
    /// timeout, failing with PVE's flock text.
    pub async fn lock_vm(&self, vmid: u32) -> Result<OwnedMutexGuard<()>, String> {
        let m = {
            let mut map = self.vm_locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(vmid).or_default().clone()
        };
        tokio::time::timeout(
            self.clock.scaled(self.config.latency.lock_timeout),
            m.lock_owned(),
        )
        .await
        .map_err(|_| {
            format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
        })
    }

    /// Runs `alloc` under the storage's lock after holding it for the
    /// storage's allocation time; fails like PVE when the lock cannot be had
    /// within the lock timeout (too many operations queued on one storage).
    pub async fn with_storage_lock<T>(
        &self,
        node: &str,
        storage: &str,
        alloc: impl FnOnce(&mut World) -> Result<T, String>,
    ) -> Result<T, String> {
        let (hold, timeout_msg) = {
            let w = self.world();
            let s = w.storage(node, storage).map_err(|e| e.message)?;
            (
                s.lock_hold.unwrap_or(self.config.latency.storage_lock_hold),
                s.lock_timeout_message(),
            )
        };
        let m = {
            let mut map = self.storage_locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry((node.to_string(), storage.to_string()))
                .or_default()
                .clone()
        };
        let _guard = tokio::time::timeout(
            self.clock.scaled(self.config.latency.lock_timeout),
            m.lock_owned(),
        )
        .await
        .map_err(|_| timeout_msg)?;
        self.clock.sleep(hold).await;
        let mut w = self.world_mut();
        alloc(&mut w)
    }

    /// Registers a task and runs `work` as its worker. `work` gets the UPID
    /// and whether an injected fault must make it fail; it returns extra log
    /// lines or the error that becomes the exit status.
    pub fn spawn_task<F, Fut>(
        self: &Arc<Self>,
        node: &str,
        kind: &str,
        id: &str,
        user: &str,
        vmid: Option<u32>,
        work: F,
    ) -> String
    where
        F: FnOnce(Arc<Shared>, String, bool) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let upid = self
            .world_mut()
            .new_task(node, kind, id, user, Clock::now());
        let inject = self.faults.task_fails(vmid);
        let fut = work(self.clone(), upid.clone(), inject);
        let shared = self.clone();
        let done_upid = upid.clone();
        let handle = tokio::spawn(async move {
            let res = fut.await;
            shared.finish_task(&done_upid, res);
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(upid.clone(), handle.abort_handle());
        upid
    }

    /// Appends a line to a task's log.
    pub fn task_log(&self, upid: &str, line: impl Into<String>) {
        if let Some(t) = self.world_mut().task_mut(upid) {
            t.log.push(line.into());
        }
    }

    fn finish_task(&self, upid: &str, res: Result<(), String>) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(upid);
        let mut w = self.world_mut();
        if let Some(t) = w.task_mut(upid) {
            t.exitstatus = Some(match res {
                Ok(()) => "OK".into(),
                // The exit status is the first line of the error.
                Err(e) => e.lines().next().unwrap_or("unknown error").to_string(),
            });
            t.endtime = Some(Clock::now());
        }
    }

    /// Stops a running task (`DELETE …/tasks/{upid}`).
    pub fn abort_task(&self, upid: &str) -> bool {
        let handle = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(upid);
        let Some(h) = handle else { return false };
        h.abort();
        let mut w = self.world_mut();
        if let Some(t) = w.task_mut(upid)
            && t.running()
        {
            t.exitstatus = Some("interrupted by signal".into());
            t.endtime = Some(Clock::now());
        }
        true
    }

    /// Aborts every worker (shutdown).
    pub fn abort_all_tasks(&self) {
        let handles: Vec<AbortHandle> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in handles {
            h.abort();
        }
    }

    /// A per-VM working directory under the simulator's work dir.
    pub fn vm_workdir(&self, vmid: u32) -> std::path::PathBuf {
        self.work_dir.join("vms").join(vmid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_scales_and_clamps() {
        let c = Clock { scale: 0.01 };
        assert_eq!(c.scaled(10.0), Duration::from_millis(100));
        assert_eq!(c.scaled(-1.0), Duration::ZERO);
        assert_eq!(Clock { scale: 0.0 }.scaled(5.0), Duration::ZERO);
    }

    fn shared(hold: f64) -> Arc<Shared> {
        let mut config = Config::with_defaults();
        config.latency.storage_lock_hold = hold;
        config.time_scale = 0.05;
        let world = World::from_config(
            &config,
            0,
            crate::Secret::new("t"),
            crate::Secret::new("p"),
            crate::Secret::new("k"),
        );
        let faults = Faults::new(config.faults.clone(), Some(1));
        Arc::new(Shared::new(
            config,
            world,
            faults,
            AddrPool::default(),
            std::env::temp_dir(),
            None,
        ))
    }

    #[tokio::test]
    async fn storage_lock_admits_what_fits_in_the_timeout() {
        // Hold 6 s, timeout 10 s: the second waits 6 s and gets the lock,
        // the third would wait 12 s and fails like PVE.
        let s = shared(6.0);
        let mut joins = Vec::new();
        for i in 0..3u32 {
            let s = s.clone();
            joins.push(tokio::spawn(async move {
                s.with_storage_lock("pve", "local-zfs", |w| {
                    let st = w.storage_mut("pve", "local-zfs").map_err(|e| e.message)?;
                    Ok(st.alloc_disk(100 + i, 1 << 30, None, 0))
                })
                .await
            }));
        }
        let mut results = Vec::new();
        for j in joins {
            results.push(j.await.unwrap());
        }
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            2,
            "{results:?}"
        );
        assert_eq!(
            results.iter().find_map(|r| r.clone().err()).unwrap(),
            "can't lock file '/var/lock/pve-manager/pve-storage-local-zfs' - got timeout"
        );
    }

    #[tokio::test]
    async fn vm_lock_times_out_with_the_flock_text() {
        let s = shared(0.0);
        let held = s.lock_vm(100).await.unwrap();
        let err = s.lock_vm(100).await.unwrap_err();
        assert_eq!(
            err,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        );
        // Other VMs are independent.
        assert!(s.lock_vm(101).await.is_ok());
        drop(held);
        assert!(s.lock_vm(100).await.is_ok());
    }

    #[tokio::test]
    async fn tasks_finish_with_ok_or_the_first_error_line() {
        let s = shared(0.0);
        let ok = s.spawn_task("pve", "qmstart", "100", "root@pam", None, |_, _, _| async {
            Ok(())
        });
        let bad = s.spawn_task(
            "pve",
            "qmstart",
            "101",
            "root@pam!t",
            None,
            |_, _, _| async { Err("VM 101 already running\nmore detail".to_string()) },
        );
        for _ in 0..1000 {
            if s.world().tasks.iter().all(|t| !t.running()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let w = s.world();
        assert_eq!(w.task(&ok).unwrap().exitstatus.as_deref(), Some("OK"));
        assert_eq!(
            w.task(&bad).unwrap().exitstatus.as_deref(),
            Some("VM 101 already running")
        );
        assert!(bad.ends_with(":qmstart:101:root@pam!t:"));
    }

    #[test]
    fn counters_count_and_reset() {
        let c = Counters::default();
        c.record("GET /version");
        c.record("GET /version");
        assert_eq!(c.snapshot()["GET /version"], 2);
        c.reset();
        assert!(c.snapshot().is_empty());
    }
}
