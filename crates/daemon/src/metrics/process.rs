//! `process_*` metrics, named as Prometheus' client libraries name them,
//! read from `/proc` at each scrape (Linux only; the module is not built
//! elsewhere):
//!
//! | metric | from |
//! |---|---|
//! | `process_cpu_seconds_total` | `/proc/self/stat` utime + stime |
//! | `process_resident_memory_bytes` | `/proc/self/status` VmRSS |
//! | `process_virtual_memory_bytes` | `/proc/self/stat` vsize |
//! | `process_open_fds` | entries of `/proc/self/fd` |
//! | `process_max_fds` | `/proc/self/limits` "Max open files" (soft) |
//! | `process_start_time_seconds` | `/proc/stat` btime + `/proc/self/stat` starttime |
//!
//! A file that cannot be read or parsed leaves its metrics out; nothing
//! here panics on what the kernel writes.

use super::Family;

/// Reads this process's figures and appends them to `out`.
pub(super) fn render(out: &mut String) {
    read().render(out);
}

/// What `/proc` says about one process; `None` where it could not be read.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    start_time: Option<f64>,
}

/// The texts of the files [`Process`] is read from.
#[derive(Debug, Default)]
struct Sources<'a> {
    /// `/proc/self/stat`.
    stat: Option<&'a str>,
    /// `/proc/self/status`.
    status: Option<&'a str>,
    /// `/proc/stat` (for the boot time).
    system_stat: Option<&'a str>,
    /// `/proc/self/limits`.
    limits: Option<&'a str>,
    /// Entries of `/proc/self/fd`.
    open_fds: Option<usize>,
    /// Clock ticks per second (`_SC_CLK_TCK`).
    ticks: f64,
}

fn read() -> Process {
    let file = |path: &str| std::fs::read_to_string(path).ok();
    let (stat, status, system_stat, limits) = (
        file("/proc/self/stat"),
        file("/proc/self/status"),
        file("/proc/stat"),
        file("/proc/self/limits"),
    );
    Process::read_from(&Sources {
        stat: stat.as_deref(),
        status: status.as_deref(),
        system_stat: system_stat.as_deref(),
        limits: limits.as_deref(),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count()),
        ticks: clock_ticks(),
    })
}

/// `_SC_CLK_TCK`: 100 on every Linux platform homestak runs on, asked
/// anyway.
fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

impl Process {
    fn read_from(sources: &Sources<'_>) -> Process {
        let stat = sources.stat.and_then(Stat::parse);
        let boot = sources.system_stat.and_then(boot_time);
        Process {
            cpu_seconds: stat
                .as_ref()
                .map(|s| (s.utime + s.stime) as f64 / sources.ticks),
            resident_bytes: sources
                .status
                .and_then(|s| status_kib(s, "VmRSS"))
                .map(|kib| kib as f64 * 1024.0),
            virtual_bytes: stat.as_ref().map(|s| s.vsize as f64),
            open_fds: sources.open_fds.map(|n| n as f64),
            max_fds: sources.limits.and_then(max_open_files).map(|n| n as f64),
            start_time: stat
                .as_ref()
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / sources.ticks),
        }
    }

    fn render(&self, out: &mut String) {
        let families = [
            (
                Family::counter(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                    &[],
                ),
                self.cpu_seconds,
            ),
            (
                Family::gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    &[],
                ),
                self.resident_bytes,
            ),
            (
                Family::gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    &[],
                ),
                self.virtual_bytes,
            ),
            (
                Family::gauge("process_open_fds", "Number of open file descriptors.", &[]),
                self.open_fds,
            ),
            (
                Family::gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                    &[],
                ),
                self.max_fds,
            ),
            (
                Family::gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    &[],
                ),
                self.start_time,
            ),
        ];
        for (family, value) in families {
            if let Some(value) = value {
                family.set(&[], value);
                family.render(out);
            }
        }
    }
}

/// The fields of `/proc/<pid>/stat` used here (proc(5) numbering).
#[derive(Debug, PartialEq)]
struct Stat {
    /// (14) user time, in clock ticks.
    utime: u64,
    /// (15) system time, in clock ticks.
    stime: u64,
    /// (22) start, in clock ticks after boot.
    starttime: u64,
    /// (23) virtual memory size, in bytes.
    vsize: u64,
}

impl Stat {
    fn parse(text: &str) -> Option<Stat> {
        // (2) comm is in parentheses and may hold spaces and `)`: fields
        // resume after the last `)`, at (3) state.
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// `btime` of `/proc/stat`: the boot time, in Unix seconds.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits` (`None`
/// when unlimited or unreadable).
fn max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/self/stat` line, with a command name that holds a
    /// space and a `)`.
    const STAT: &str = "4242 (home stak) ) S 1 4242 4242 0 -1 4194560 1837 0 0 0 250 75 0 0 20 0 9 0 123456 1073741824 4096 18446744073709551615 1 1 0 0 0 0 0 4096 17575 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    const STATUS: &str = "Name:\thomestak\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1050000 kB\nVmSize:\t 1048576 kB\nVmRSS:\t   16384 kB\nRssAnon:\t    8000 kB\nThreads:\t9\n";

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            524288               524288               files     \nMax locked memory         8388608              8388608              bytes     \n";

    const SYSTEM_STAT: &str =
        "cpu  1 2 3 4 5 6 7 0 0 0\nintr 1 2 3\nctxt 99\nbtime 1764633600\nprocesses 5000\n";

    #[test]
    fn stat_fields_come_after_the_command_name() {
        assert_eq!(
            Stat::parse(STAT),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 1073741824,
            })
        );
    }

    #[test]
    fn every_figure_is_read_from_its_file() {
        let p = Process::read_from(&Sources {
            stat: Some(STAT),
            status: Some(STATUS),
            system_stat: Some(SYSTEM_STAT),
            limits: Some(LIMITS),
            open_fds: Some(12),
            ticks: 100.0,
        });
        assert_eq!(
            p,
            Process {
                cpu_seconds: Some(3.25),
                resident_bytes: Some(16384.0 * 1024.0),
                virtual_bytes: Some(1073741824.0),
                open_fds: Some(12.0),
                max_fds: Some(524288.0),
                start_time: Some(1764633600.0 + 1234.56),
            }
        );
        let mut out = String::new();
        p.render(&mut out);
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 3.25",
            "# TYPE process_resident_memory_bytes gauge",
            "process_resident_memory_bytes 16777216",
            "process_virtual_memory_bytes 1073741824",
            "process_open_fds 12",
            "process_max_fds 524288",
            "process_start_time_seconds 1764634834.56",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
    }

    #[test]
    fn garbage_leaves_figures_out_without_panicking() {
        for junk in [
            "",
            "(",
            ")",
            "1 (x) S",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 x y",
            "\u{0}\u{ff}))) 9999999999999999999999 -1",
        ] {
            assert_eq!(Stat::parse(junk), None, "{junk:?}");
            assert_eq!(status_kib(junk, "VmRSS"), None);
            assert_eq!(boot_time(junk), None);
            assert_eq!(max_open_files(junk), None);
        }
        assert_eq!(status_kib("VmRSS:\t12 MB\n", "VmRSS"), None);
        assert_eq!(status_kib("VmRSSX:\t12 kB\n", "VmRSS"), None);
        assert_eq!(
            max_open_files("Max open files            unlimited            unlimited   files\n"),
            None
        );
        let p = Process::read_from(&Sources {
            stat: Some("1 (x) S 1"),
            status: Some("VmRSS: lots"),
            ticks: 100.0,
            ..Sources::default()
        });
        assert_eq!(p, Process::default());
        let mut out = String::new();
        p.render(&mut out);
        assert_eq!(out, "", "nothing read, nothing shown");
    }

    #[test]
    fn this_process_is_read_on_linux() {
        let p = read();
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|b| b > 0.0), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3.0), "{p:?}");
        assert!(p.max_fds >= p.open_fds, "{p:?}");
        let now = homestak_base::time::Timestamp::now().as_millis() as f64 / 1000.0;
        assert!(
            p.start_time.is_some_and(|t| t > 1e9 && t <= now + 1.0),
            "{p:?}"
        );
    }
}
