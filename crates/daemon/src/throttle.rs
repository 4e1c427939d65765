//! Slowing down token guessing: per-client-address backoff that never
//! refuses a valid token.
//!
//! Every request that presents a token is admitted in one step, under the
//! table's lock ([`Throttle::admit`]): either the address is locked, or a
//! guess is reserved and counted as a failure at once, before the token
//! is checked. So N guesses sent in parallel cannot all pass a check
//! before any failure is recorded: the `free_failures + 1`-th reservation
//! locks the address for the ones after it. A [`Guess`] whose token proves
//! valid is refunded ([`Guess::valid`], or on drop): the record is put
//! back as it was, so a valid token neither relocks the address nor
//! delays forgetting its failures; a wrong one stays counted
//! ([`Guess::failed`], a 403 `E301`).
//!
//! The first [`Policy::free_failures`] failures cost nothing (a VM whose
//! token is being rotated retries a few times); after that the address is
//! locked for `base · 2^(n-free-1)`, capped at [`Policy::max_delay`].
//! While locked, a request's token is still checked, in constant time like
//! every check: a valid one is served at once (a NAT or a bridge shared
//! with one guesser does not lock everyone out), a wrong one counts as one
//! more failure ([`Throttle::failed_while_locked`]) and is answered 429
//! `E303` instead of 403. Requests without a token (health checks,
//! network-posture specs) are never held back: they cannot guess.
//!
//! What slows guessing is not the lock itself (a 429 tells "wrong" as
//! well as a 403 does) but the tarpit ([`super::tarpit`]): a wrong token
//! that leaves its address locked is answered only when that lock has
//! passed, at most [`Policy::max_hold`] later ([`Policy::hold`]), and the
//! hold keeps its connection's place in the per-address connection cap
//! even if the client hangs up. So one address gets at most
//! `max_connections_per_address / max_hold` verdicts a second once
//! locked (64 / 30 s ≈ 2 by default), while a valid token is never held.
//!
//! A success does not reset the count (a caller holding one valid token
//! must not be able to interleave guesses for another); failures are
//! forgotten [`Policy::forget_after`] after the last one. Addresses are
//! grouped as [`super::conn::client_key`] does (an IPv6 /64 is one
//! client). The table is bounded ([`Policy::max_clients`]) so a flood of
//! addresses cannot grow it.
//!
//! Time comes from a [`Clock`], holds included, so tests drive it by hand.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::conn::client_key;

/// What [`Clock::sleep_until`] returns.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of "now", and of waiting for a later one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Resolves once [`Clock::now`] has reached `deadline`, without
    /// blocking a thread.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// Tokio's clock (paused in tests that pause it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline))
    }
}

/// A clock moved by hand (tests); [`ManualClock::advance`] wakes the
/// sleepers whose deadline it reaches.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<tokio::sync::watch::Sender<Instant>>);

#[cfg(any(test, feature = "testing"))]
impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Arc::new(tokio::sync::watch::Sender::new(Instant::now())))
    }
}

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    pub fn advance(&self, by: Duration) {
        self.0.send_modify(|now| *now += by);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.borrow()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut now = self.0.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: nothing will move it again.
            let _ = now.wait_for(|now| *now >= deadline).await;
        })
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
    /// Longest a wrong token is held before its answer (the tarpit, see
    /// [`super::tarpit`]); below the 60 s timeout of homestak's own client,
    /// so a misconfigured client still sees the 429.
    pub max_hold: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
            max_clients: 4096,
            max_hold: Duration::from_secs(30),
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

    /// How long a wrong token that leaves its address locked for `lock`
    /// is held before its answer: until the lock has passed, at most
    /// [`Policy::max_hold`]. Zero while the failures are free.
    pub fn hold(&self, lock: Duration) -> Duration {
        lock.min(self.max_hold)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    /// Failures counted, reserved guesses included.
    failures: u32,
    last_failure: Instant,
    locked_until: Instant,
}

impl Record {
    fn relock(&mut self, policy: &Policy) {
        self.locked_until = self.last_failure + policy.delay(self.failures);
    }
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

/// What [`Throttle::admit`] decided for a request that presents a token.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Not locked: a guess is reserved (counted as a failure until refunded).
    Guess(Guess<'a>),
    /// Locked for this long: served only when the token is valid.
    Locked(Duration),
}

/// A reserved guess: counted as a failure unless [`Guess::valid`] (or drop,
/// when the request ended before its token was judged) refunds it.
#[derive(Debug)]
pub struct Guess<'a> {
    throttle: &'a Throttle,
    key: IpAddr,
    settled: bool,
    /// The record before the reservation (`None`: there was none) and
    /// right after it: a refund puts `before` back when nothing else
    /// changed the record meanwhile, so a valid token neither relocks the
    /// address nor keeps its failures from being forgotten.
    before: Option<Record>,
    reserved: Record,
}

impl Guess<'_> {
    /// The token was wrong: the failure stays counted. Returns the lock the
    /// address now has.
    pub fn failed(mut self) -> Duration {
        self.settled = true;
        self.throttle.lock_of(self.key)
    }

    /// The token was valid (or not judged): the reservation is refunded.
    pub fn valid(self) {}
}

impl Drop for Guess<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.refund(self.key, self.before, self.reserved);
        }
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

    /// The backoff in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks and records in one step (module docs): `Locked` while `ip` is
    /// locked, else a reserved [`Guess`].
    pub fn admit(&self, ip: IpAddr) -> Admission<'_> {
        let key = client_key(ip);
        let now = self.clock.now();
        let mut table = self.table();
        if let Some(r) = table.get(&key)
            && r.locked_until > now
        {
            return Admission::Locked(r.locked_until - now);
        }
        let before = table.get(&key).copied();
        let reserved = *self.count_failure(&mut table, key, now);
        Admission::Guess(Guess {
            throttle: self,
            key,
            settled: false,
            before,
            reserved,
        })
    }

    /// A wrong token from a locked address: one more failure. Returns the
    /// lock the address now has.
    pub fn failed_while_locked(&self, ip: IpAddr) -> Duration {
        let key = client_key(ip);
        let now = self.clock.now();
        let mut table = self.table();
        let record = self.count_failure(&mut table, key, now);
        record.locked_until.saturating_duration_since(now)
    }

    fn count_failure<'t>(
        &self,
        table: &'t mut HashMap<IpAddr, Record>,
        key: IpAddr,
        now: Instant,
    ) -> &'t mut Record {
        if !table.contains_key(&key) && table.len() >= self.policy.max_clients {
            self.evict(table, now);
        }
        let record = table.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: now,
        });
        if now.duration_since(record.last_failure) > self.policy.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let before = record.locked_until;
        record.relock(&self.policy);
        // A failure never shortens a lock already in force.
        record.locked_until = record.locked_until.max(before);
        record
    }

    fn refund(&self, key: IpAddr, before: Option<Record>, reserved: Record) {
        let mut table = self.table();
        let Some(record) = table.get_mut(&key) else {
            return;
        };
        if *record == reserved {
            match before {
                Some(before) => *record = before,
                None => {
                    table.remove(&key);
                }
            }
            return;
        }
        // Other failures came since: they keep their time and lock.
        record.failures = record.failures.saturating_sub(1);
        if record.failures == 0 {
            table.remove(&key);
        } else {
            record.relock(&self.policy);
        }
    }

    fn lock_of(&self, key: IpAddr) -> Duration {
        let now = self.clock.now();
        self.table().get(&key).map_or(Duration::ZERO, |r| {
            r.locked_until.saturating_duration_since(now)
        })
    }

    /// `Err(wait)` while `ip` is locked (no side effect).
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now();
        match self.table().get(&client_key(ip)) {
            Some(r) if r.locked_until > now => Err(r.locked_until - now),
            _ => Ok(()),
        }
    }

    /// Failures currently counted for `ip`.
    pub fn failures(&self, ip: IpAddr) -> u32 {
        self.table().get(&client_key(ip)).map_or(0, |r| r.failures)
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

    /// One wrong guess from `ip`, as the HTTP front judges it.
    fn wrong(t: &Throttle, ip: IpAddr) -> Result<Duration, Duration> {
        match t.admit(ip) {
            Admission::Guess(guess) => Ok(guess.failed()),
            Admission::Locked(wait) => Err(wait),
        }
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

    /// A wrong token is held until the lock it leaves has passed, never
    /// longer than `max_hold`, and not at all while failures are free.
    #[test]
    fn hold_waits_out_the_lock_up_to_max_hold() {
        let p = Policy::default();
        assert_eq!(p.max_hold, Duration::from_secs(30));
        assert!(
            p.max_hold < Duration::from_secs(60),
            "under the client timeout"
        );
        let holds: Vec<u64> = (1..=12).map(|n| p.hold(p.delay(n)).as_secs()).collect();
        assert_eq!(holds, [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.hold(Duration::MAX), p.max_hold);

        // As the HTTP front computes it: from the lock the failure leaves.
        let clock = ManualClock::default();
        let t = Throttle::new(p, Arc::new(clock.clone()));
        let mut seen = Vec::new();
        for _ in 0..7 {
            let lock = match t.admit(ip(1)) {
                Admission::Guess(g) => g.failed(),
                Admission::Locked(_) => t.failed_while_locked(ip(1)),
            };
            seen.push(t.policy().hold(lock).as_secs());
        }
        assert_eq!(seen, [0, 0, 0, 0, 0, 1, 2]);
        // Parallel wrong guesses while locked grow the lock to the cap: each
        // of them is held the longest hold.
        for _ in 0..10 {
            t.failed_while_locked(ip(1));
        }
        let lock = t.failed_while_locked(ip(1));
        assert_eq!(t.policy().hold(lock), p.max_hold);
    }

    /// The hand-moved clock wakes a sleeper when it reaches its deadline,
    /// and not before.
    #[tokio::test]
    async fn manual_clock_sleeps_until_advanced_to_the_deadline() {
        let clock = ManualClock::default();
        let deadline = clock.now() + Duration::from_secs(10);
        let mut sleep = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(Duration::from_secs(9));
        let early = tokio::time::timeout(Duration::from_millis(100), &mut sleep).await;
        assert!(early.is_err(), "woke before the deadline");
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .expect("woke at the deadline (hang guard)")
            .unwrap();
        // A deadline already passed does not wait.
        clock.sleep_until(deadline).await;
    }

    #[test]
    fn lock_applies_grows_and_expires_with_the_clock() {
        let clock = ManualClock::default();
        let t = Throttle::new(Policy::default(), Arc::new(clock.clone()));
        let mut applied = Vec::new();
        for _ in 0..6 {
            applied.push(wrong(&t, ip(1)).unwrap());
        }
        assert_eq!(
            applied.iter().map(Duration::as_secs).collect::<Vec<_>>(),
            [0, 0, 0, 0, 0, 1]
        );
        assert_eq!(t.check(ip(1)), Err(Duration::from_secs(1)));
        assert_eq!(t.check(ip(2)), Ok(()), "other addresses are not affected");
        // A wrong guess while locked is not a guess slot, but counts.
        assert_eq!(wrong(&t, ip(1)), Err(Duration::from_secs(1)));
        assert_eq!(t.failed_while_locked(ip(1)), Duration::from_secs(2));
        assert_eq!(t.failures(ip(1)), 7);
        clock.advance(Duration::from_secs(2));
        assert_eq!(t.check(ip(1)), Ok(()));
        // The next failure doubles the lock again.
        assert_eq!(wrong(&t, ip(1)), Ok(Duration::from_secs(4)));
        // Forgotten after a quiet period.
        clock.advance(Duration::from_secs(901));
        assert_eq!(wrong(&t, ip(1)), Ok(Duration::ZERO));
        assert_eq!(t.failures(ip(1)), 1);
    }

    /// Check and record are one step: of many guesses admitted before any
    /// is judged, only `free_failures + 1` get a slot.
    #[test]
    fn parallel_guesses_reserve_their_slots_before_any_is_judged() {
        let clock = ManualClock::default();
        let t = Throttle::new(Policy::default(), Arc::new(clock));
        let admitted: Vec<Admission<'_>> = (0..50).map(|_| t.admit(ip(1))).collect();
        let slots = admitted
            .iter()
            .filter(|a| matches!(a, Admission::Guess(_)))
            .count();
        assert_eq!(slots, 6);
        for a in admitted {
            if let Admission::Guess(g) = a {
                g.failed();
            }
        }
        assert_eq!(t.failures(ip(1)), 6);
    }

    /// A valid token refunds its reservation, so a busy address with
    /// valid tokens never locks itself, and dropping an unjudged guess
    /// refunds it too.
    #[test]
    fn valid_tokens_refund_their_reservation() {
        let clock = ManualClock::default();
        let t = Throttle::new(Policy::default(), Arc::new(clock));
        for _ in 0..100 {
            match t.admit(ip(1)) {
                Admission::Guess(g) => g.valid(),
                Admission::Locked(_) => panic!("valid tokens locked the address"),
            }
        }
        assert_eq!(t.failures(ip(1)), 0);
        for _ in 0..5 {
            wrong(&t, ip(1)).unwrap();
        }
        // The 6th reservation locks; refunded, the lock is gone again.
        let Admission::Guess(g) = t.admit(ip(1)) else {
            panic!("locked too early")
        };
        assert!(t.check(ip(1)).is_err());
        drop(g);
        assert_eq!(t.check(ip(1)), Ok(()));
        assert_eq!(t.failures(ip(1)), 5);
    }

    /// A valid token once the lock has passed leaves the record as it
    /// was: no new lock from its refunded reservation, and the failures
    /// are still forgotten `forget_after` after the last real one.
    #[test]
    fn a_valid_token_neither_relocks_nor_keeps_failures_alive() {
        let clock = ManualClock::default();
        let t = Throttle::new(Policy::default(), Arc::new(clock.clone()));
        for _ in 0..6 {
            wrong(&t, ip(1)).unwrap();
        }
        clock.advance(Duration::from_secs(2));
        assert_eq!(t.check(ip(1)), Ok(()));
        for _ in 0..10 {
            clock.advance(Duration::from_secs(60));
            match t.admit(ip(1)) {
                Admission::Guess(g) => g.valid(),
                Admission::Locked(_) => panic!("locked by a valid token"),
            }
            assert_eq!(t.check(ip(1)), Ok(()), "a valid token relocked the address");
        }
        assert_eq!(t.failures(ip(1)), 6);
        // 902 s after the last wrong token: forgotten, a valid client's
        // requests in between notwithstanding.
        clock.advance(Duration::from_secs(300));
        assert_eq!(wrong(&t, ip(1)), Ok(Duration::ZERO));
        assert_eq!(t.failures(ip(1)), 1);
    }

    #[test]
    fn ipv6_neighbours_in_one_prefix_share_a_record() {
        let clock = ManualClock::default();
        let t = Throttle::new(Policy::default(), Arc::new(clock));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..6 {
            wrong(&t, a).unwrap();
        }
        assert!(t.check(b).is_err());
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
            wrong(&t, ip(n)).unwrap();
        }
        let tracked = (1..=5).filter(|n| t.failures(ip(*n)) > 0).count();
        assert_eq!(tracked, 3);
        assert_eq!(t.failures(ip(1)), 0, "the oldest is evicted first");
        assert_eq!(t.failures(ip(5)), 1);
    }
}
