//! File descriptors: the daemon raises its soft `RLIMIT_NOFILE` to the
//! hard limit at start, then caps HTTPS connections below it so that the
//! reconciler's own work (PVE HTTPS, SSH sessions, git subprocesses and
//! their pipes, the store's files, the watcher) always finds descriptors,
//! whatever clients do.
//!
//! Numbers: each connection holds one descriptor (its socket); a refused
//! one holds it only between accept and close. [`RESERVED`] descriptors
//! are kept back — a converge of a wide tier holds a few dozen (one PVE
//! connection pool per host, an SSH session per VM being configured, 3 to
//! 6 pipes per git or ssh subprocess, about 10 for the store). With the
//! usual hard limit of 524288 (systemd) the configured cap
//! (`--max-connections`, 4096) applies; where the hard limit is 1024 it
//! becomes 512.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors never given to HTTPS connections.
pub const RESERVED: u64 = 512;

/// The soft and hard `RLIMIT_NOFILE` after raising the soft one to the
/// hard one (kept as it was when the system refuses); `None` when the
/// limits cannot be read.
pub fn raise_nofile() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some((soft, hard));
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some((hard, hard)),
        Err(err) => {
            // RLIM_INFINITY as a hard limit is refused for NOFILE on Linux
            // (above fs.nr_open): keep what we have.
            tracing::warn!(soft, hard, error = %err, "cannot raise the open-file limit");
            Some((soft, hard))
        }
    }
}

/// The connection cap in force: `configured`, lowered so that [`RESERVED`]
/// descriptors stay free under a soft limit of `nofile` (at least half of
/// the limit is still given to connections when it is very low).
pub fn connection_cap(configured: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else {
        return configured;
    };
    let room = nofile.saturating_sub(RESERVED).max(nofile / 2);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_under_the_fd_limit() {
        assert_eq!(connection_cap(4096, Some(524_288)), 4096);
        assert_eq!(connection_cap(4096, Some(20_000)), 4096);
        assert_eq!(connection_cap(4096, Some(1024)), 512);
        assert_eq!(connection_cap(4096, Some(256)), 128);
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(0, Some(1024)), 1);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        if hard == nix::sys::resource::RLIM_INFINITY || hard < 2048 {
            return;
        }
        // Lowered first (still ample for the other tests), so the raise
        // has work to do.
        setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).unwrap();
        assert_eq!(raise_nofile(), Some((hard, hard)));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
