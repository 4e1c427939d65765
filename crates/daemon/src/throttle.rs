//! Slowing down token guessing: per-client-address backoff.
//!
//! Each wrong token (a 403 `E301` reply) from an address counts as a
//! failure. The first [`Policy::free_failures`] cost nothing (a VM whose
//! token is being rotated retries a few times); after that the address is
//! locked for `base · 2^(n-free-1)`, capped at [`Policy::max_delay`]. While
//! locked, any request from it that carries an `Authorization` header is
//! answered 429 `E303` with `Retry-After`, without looking at the token, so
//! parallel guesses gain nothing. Requests without a header (health checks,
//! network-posture specs) are never held back: they cannot guess.
//!
//! A success does not reset the count (a caller holding one valid token
//! must not be able to interleave guesses for another); failures are
//! forgotten [`Policy::forget_after`] after the last one. The table is
//! bounded ([`Policy::max_clients`]) so a flood of addresses cannot grow it.
//!
//! Time comes from a [`Clock`], so tests drive it by hand.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A source of "now".
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// Tokio's clock (paused in tests that pause it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock moved by hand (tests).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

#[cfg(any(test, feature = "testing"))]
impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }
}

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Backoff parameters.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before any lock.
    pub free_failures: u32,
    /// Lock after the first failure beyond the free ones.
    pub base_delay: Duration,
    /// Longest lock.
    pub max_delay: Duration,
    /// Failures are forgotten this long after the last one.
    pub forget_after: Duration,
    /// Most addresses tracked at once.
    pub max_clients: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
            max_clients: 4096,
        }
    }
}

impl Policy {
    /// The lock after `failures` failures in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        let Some(over) = failures.checked_sub(self.free_failures + 1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Instant,
}

/// The per-address failure table.
pub struct Throttle {
    policy: Policy,
    clock: Arc<dyn Clock>,
    table: Mutex<HashMap<IpAddr, Record>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    pub fn new(policy: Policy, clock: Arc<dyn Clock>) -> Throttle {
        Throttle {
            policy,
            clock,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while `ip` is locked.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&ip) {
            Some(r) if r.locked_until > now => Err(r.locked_until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure from `ip`; returns the lock it now has.
    pub fn record_failure(&self, ip: IpAddr) -> Duration {
        let now = self.clock.now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&ip) && table.len() >= self.policy.max_clients {
            self.evict(&mut table, now);
        }
        let record = table.entry(ip).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: now,
        });
        if now.duration_since(record.last_failure) > self.policy.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let delay = self.policy.delay(record.failures);
        record.locked_until = now + delay;
        delay
    }

    /// Failures currently counted for `ip`.
    pub fn failures(&self, ip: IpAddr) -> u32 {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&ip).map_or(0, |r| r.failures)
    }

    fn evict(&self, table: &mut HashMap<IpAddr, Record>, now: Instant) {
        let forget = self.policy.forget_after;
        table.retain(|_, r| now.duration_since(r.last_failure) <= forget);
        if table.len() >= self.policy.max_clients
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, r)| r.last_failure)
                .map(|(ip, _)| *ip)
        {
            table.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn delay_grows_exponentially_after_the_free_failures_and_is_capped() {
        let p = Policy::default();
        let delays: Vec<u64> = (1..=16).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(
            delays,
            [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
        );
        assert_eq!(p.delay(u32::MAX), p.max_delay);
    }

    #[test]
    fn lock_applies_grows_and_expires_with_the_clock() {
        let clock = ManualClock::default();
        let t = Throttle::new(Policy::default(), Arc::new(clock.clone()));
        let mut applied = Vec::new();
        for _ in 0..8 {
            applied.push(t.record_failure(ip(1)));
        }
        assert_eq!(
            applied.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            [0, 0, 0, 0, 0, 1, 2, 4]
        );
        assert_eq!(t.check(ip(1)), Err(Duration::from_secs(4)));
        assert_eq!(t.check(ip(2)), Ok(()), "other addresses are not affected");
        clock.advance(Duration::from_secs(3));
        assert_eq!(t.check(ip(1)), Err(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.check(ip(1)), Ok(()));
        // The next failure doubles the lock again.
        assert_eq!(t.record_failure(ip(1)), Duration::from_secs(8));
        // Forgotten after a quiet period.
        clock.advance(Duration::from_secs(901));
        assert_eq!(t.record_failure(ip(1)), Duration::ZERO);
        assert_eq!(t.failures(ip(1)), 1);
    }

    #[test]
    fn table_is_bounded() {
        let clock = ManualClock::default();
        let policy = Policy {
            max_clients: 3,
            ..Policy::default()
        };
        let t = Throttle::new(policy, Arc::new(clock.clone()));
        for n in 1..=5 {
            clock.advance(Duration::from_secs(1));
            t.record_failure(ip(n));
        }
        let tracked = (1..=5).filter(|n| t.failures(ip(*n)) > 0).count();
        assert_eq!(tracked, 3);
        assert_eq!(t.failures(ip(1)), 0, "the oldest is evicted first");
        assert_eq!(t.failures(ip(5)), 1);
    }
}
