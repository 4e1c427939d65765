//! Who this process is, and whether a holder on this machine still runs.
//!
//! A lease left by a process that is gone on this very machine (a
//! SIGKILLed `reconcile --once`, a crashed daemon) is taken over at once
//! rather than after its expiry. "This machine" is the same hostname,
//! `/etc/machine-id` and boot id; "still runs" is a process with the
//! holder's pid *and* its start time (`/proc/<pid>/stat`), so a reused pid
//! does not count. Inside this process, a holder is alive while its lease
//! object is (two engines in one process, or an engine dropped without
//! giving its lease back). Where `/proc` cannot be read, nothing is known
//! and only the expiry frees a lease.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use super::block::Holder;

/// This process as a lease holder sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub host: String,
    pub machine: Option<String>,
    pub boot: Option<String>,
    pub pid: u32,
    pub pid_start: Option<u64>,
}

/// Whether a holder still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// It runs: wait for it.
    Alive,
    /// It is gone: its lease may be taken now.
    Gone,
    /// Another machine (or no `/proc`): only the expiry says.
    Unknown,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The start time of process `pid`, in clock ticks after boot (field 22
/// of `/proc/<pid>/stat`; the command name before it may hold spaces and
/// parentheses, so fields are counted after its last `)`).
pub fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process, read once.
pub fn this_process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let pid = std::process::id();
        Process {
            host: read_trimmed("/proc/sys/kernel/hostname")
                .or_else(|| read_trimmed("/etc/hostname"))
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "unknown".into()),
            machine: read_trimmed("/etc/machine-id")
                .or_else(|| read_trimmed("/var/lib/dbus/machine-id")),
            boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid,
            pid_start: pid_start(pid),
        }
    })
}

/// Nonces of the leases this process holds now.
fn live() -> &'static Mutex<HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Marks a lease of this process as held.
pub fn register(nonce: &str) {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(nonce.to_string());
}

/// Marks it given back (or dropped).
pub fn unregister(nonce: &str) {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(nonce);
}

fn is_live(nonce: &str) -> bool {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(nonce)
}

/// Whether `holder` still runs, as far as this process can tell.
pub fn liveness(holder: &Holder) -> Liveness {
    liveness_from(holder, this_process(), pid_start)
}

fn liveness_from(holder: &Holder, me: &Process, started: impl Fn(u32) -> Option<u64>) -> Liveness {
    // Without both boot ids nothing tells the machines apart.
    let (Some(my_boot), Some(its_boot)) = (&me.boot, &holder.boot) else {
        return Liveness::Unknown;
    };
    if holder.host != me.host || holder.machine != me.machine {
        return Liveness::Unknown;
    }
    if its_boot != my_boot {
        // The machine rebooted since: every process of then is gone.
        return Liveness::Gone;
    }
    if holder.pid == me.pid && holder.pid_start == me.pid_start {
        return if is_live(&holder.nonce) {
            Liveness::Alive
        } else {
            Liveness::Gone
        };
    }
    match started(holder.pid) {
        Some(start) if Some(start) == holder.pid_start => Liveness::Alive,
        _ => Liveness::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Process {
        Process {
            host: "build-01".into(),
            machine: Some("m1".into()),
            boot: Some("b1".into()),
            pid: 100,
            pid_start: Some(5000),
        }
    }

    fn holder(pid: u32, pid_start: u64) -> Holder {
        Holder {
            command: Some("reconcile".into()),
            host: "build-01".into(),
            pid,
            state_dir: Some("/state".into()),
            version: Some("0".into()),
            nonce: format!("n-{pid}-{pid_start}"),
            machine: Some("m1".into()),
            boot: Some("b1".into()),
            pid_start: Some(pid_start),
        }
    }

    #[test]
    fn a_holder_on_this_machine_is_alive_only_with_its_pid_and_start_time() {
        let running = |pid: u32| (pid == 200).then_some(7000);
        assert_eq!(
            liveness_from(&holder(200, 7000), &me(), running),
            Liveness::Alive
        );
        // The pid runs, but it is another process (the pid was reused).
        assert_eq!(
            liveness_from(&holder(200, 6999), &me(), running),
            Liveness::Gone
        );
        assert_eq!(
            liveness_from(&holder(300, 7000), &me(), running),
            Liveness::Gone
        );
        // Rebooted since.
        let mut old = holder(200, 7000);
        old.boot = Some("b0".into());
        assert_eq!(liveness_from(&old, &me(), running), Liveness::Gone);
    }

    #[test]
    fn another_machine_is_unknown() {
        let mut other = holder(200, 7000);
        other.host = "build-02".into();
        assert_eq!(liveness_from(&other, &me(), |_| None), Liveness::Unknown);
        let mut other = holder(200, 7000);
        other.machine = Some("m2".into());
        assert_eq!(liveness_from(&other, &me(), |_| None), Liveness::Unknown);
        // Without /proc nothing is known.
        let blind = Process { boot: None, ..me() };
        assert_eq!(
            liveness_from(&holder(200, 7000), &blind, |_| None),
            Liveness::Unknown
        );
    }

    #[test]
    fn in_this_process_a_holder_lives_while_its_lease_does() {
        let mine = holder(100, 5000);
        assert_eq!(liveness_from(&mine, &me(), |_| None), Liveness::Gone);
        register(&mine.nonce);
        assert_eq!(liveness_from(&mine, &me(), |_| None), Liveness::Alive);
        unregister(&mine.nonce);
        assert_eq!(liveness_from(&mine, &me(), |_| None), Liveness::Gone);
    }

    #[test]
    fn this_process_reads_its_own_start_time() {
        let me = this_process();
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(me.pid_start.is_some_and(|start| start > 0));
            assert_eq!(pid_start(me.pid), me.pid_start);
        }
    }
}
