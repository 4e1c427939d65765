//! Growth: converging 10, 100, 1,000 VMs by `homestak reconcile --once` in
//! a child process: wall time, requests the simulator answered and the
//! child's peak RSS (getrusage of a measuring child), so cost per VM as N
//! grows is visible.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::table::{Table, ratio, secs, x};
use crate::world::{MANIFEST, World};

pub struct Growth {
    pub vms: usize,
    pub wall: Duration,
    pub requests: u64,
    /// Peak resident set of the child, KiB.
    pub max_rss_kib: i64,
}

/// Converges `vms` VMs on `w` with the `homestak` binary at `bin`.
pub async fn converge(w: &World, bin: &Path, vms: usize) -> Growth {
    crate::progress(&format!("growth: {vms} VMs by `homestak reconcile --once`"));
    w.write_manifest(vms);
    w.sim.reset_requests();
    // Through this executable's `--rss-of` mode (see [`rss_of`]), whose
    // only child is the reconcile.
    let mut command = Command::new(std::env::current_exe().expect("exe"));
    command
        .arg(RSS_OF)
        .arg(bin)
        .arg("--site-config")
        .arg(&w.site_root)
        .args([
            "reconcile",
            "--once",
            "-M",
            MANIFEST,
            "-H",
            "pve",
            "--no-report",
        ])
        .arg("--state-dir")
        .arg(w.state_dir())
        .stdin(Stdio::null());
    // The simulator serves on this runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("the measuring child starts");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "homestak reconcile --once of {vms} VMs failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
    };
    Growth {
        vms,
        wall: Duration::from_secs_f64(field("wall")),
        requests: w.sim.requests().values().sum(),
        max_rss_kib: field("maxrss") as i64,
    }
}

/// The argument that makes this executable measure a command.
pub const RSS_OF: &str = "--rss-of";

/// `perf --rss-of CMD ARGS...`: runs CMD (output to null), then prints its
/// wall time (`wall S`) and peak RSS (`maxrss KiB`, from
/// getrusage(RUSAGE_CHILDREN): this process has no other child, so that is
/// CMD's own). Fails when CMD does.
pub fn rss_of(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{RSS_OF} needs a command");
        return std::process::ExitCode::FAILURE;
    };
    let started = Instant::now();
    let out = Command::new(cmd)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let wall = started.elapsed();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{}: {e}", Path::new(cmd).display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("wall {}", wall.as_secs_f64());
    println!("maxrss {}", usage.max_rss());
    if out.status.success() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        std::process::ExitCode::FAILURE
    }
}

pub fn rows(g: &[Growth], scale: f64, t: &mut Table) {
    let row = "Growth";
    for m in g {
        t.add(
            row,
            format!("{} VMs: wall, requests, peak RSS", m.vms),
            format!(
                "{}, {} req, {:.1} MiB",
                secs(m.wall),
                m.requests,
                m.max_rss_kib as f64 / 1024.0
            ),
        );
    }
    let per_vm = |m: &Growth| m.wall.as_secs_f64() / m.vms as f64;
    for pair in g.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        t.add(
            row,
            format!("per-VM wall {}/{}", b.vms, a.vms),
            x(ratio(per_vm(b), per_vm(a))),
        );
        t.add(
            row,
            format!("per-VM requests {}/{}", b.vms, a.vms),
            x(ratio(
                b.requests as f64 / b.vms as f64,
                a.requests as f64 / a.vms as f64,
            )),
        );
    }
    t.note(
        "growth",
        format!(
            "Growth: `homestak reconcile --once` in a child process at time scale {scale}, \
             one fresh simulator per size; peak RSS is the reconcile process's ru_maxrss \
             (getrusage(RUSAGE_CHILDREN) in an intermediate process whose only child it is)"
        ),
    );
}
