//! The tarpit: a wrong token that leaves its address locked is answered
//! only once that lock has passed (at most [`Policy::max_hold`] later), so
//! the lock slows guessing again although a valid token is always served
//! at once ([`super::throttle`]).
//!
//! Why the hold keeps the connection's place ([`Place`]): a valid token is
//! answered at once, so a guesser need not wait for a held answer — no
//! answer within a few milliseconds already says "wrong". Hanging up
//! would then make the hold worthless (hyper drops the request as its
//! client goes). So the hold runs on its own task that owns the place in
//! the per-address connection cap until the hold ends, whether or not the
//! client still waits. Each guess beyond the free ones thus takes one of
//! the address's [`super::conn::Limits::max_connections_per_address`]
//! places for a whole hold: at most `cap / hold` verdicts a second from
//! one address (64 / 30 s ≈ 2 by default, instead of as many as the
//! network carries).
//!
//! The trade-off: a guesser at full speed keeps its address's places
//! taken, so a client behind the same NAT may find its connection refused
//! at accept until a hold ends — as it would if the guesser merely held
//! idle connections; a request that reached the daemon with a valid token
//! is never held. A kept place is no file descriptor: the total cap counts
//! open connections only.
//!
//! Holding is a sleep on the throttle's [`Clock`] (no thread is pinned;
//! tests move the clock by hand), and every hold ends at once when the
//! daemon shuts down, so the graceful shutdown never waits for one. Holds
//! are counted in `/metrics`: `homestak_auth_held` (now),
//! `homestak_auth_held_total`, `homestak_auth_held_abandoned_total`.
//!
//! [`Policy::max_hold`]: super::throttle::Policy::max_hold

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Place;
use super::metrics::Metrics;
use super::shutdown::Shutdown;
use super::throttle::Clock;

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Its time passed.
    Elapsed,
    /// The daemon is shutting down.
    Shutdown,
}

/// Holds wrong guesses (module docs).
pub struct Tarpit {
    clock: Arc<dyn Clock>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Tarpit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tarpit").finish_non_exhaustive()
    }
}

impl Tarpit {
    pub fn new(clock: Arc<dyn Clock>, shutdown: Shutdown, metrics: Arc<Metrics>) -> Tarpit {
        Tarpit {
            clock,
            shutdown,
            metrics,
        }
    }

    /// Waits `wait` on the clock (or until shutdown), keeping `place`
    /// taken that long even if this future is dropped.
    pub async fn hold(&self, wait: Duration, place: Option<Place>) -> Release {
        if wait.is_zero() {
            return Release::Elapsed;
        }
        let sleep = match self.clock.now().checked_add(wait) {
            Some(until) => self.clock.sleep_until(until),
            // Past what the clock can count: until shutdown.
            None => Box::pin(std::future::pending()),
        };
        let mut shutdown = self.shutdown.clone();
        let counted = Counted::new(&self.metrics);
        // Its own task: the hold (and the place) outlive this request when
        // its client hangs up and hyper drops it.
        let keeper = tokio::spawn(async move {
            let _counted = counted;
            let _place = place;
            tokio::select! {
                () = sleep => Release::Elapsed,
                () = shutdown.triggered() => Release::Shutdown,
            }
        });
        let mut waiting = Waiting {
            metrics: &self.metrics,
            answered: false,
        };
        // A join error: the runtime is going away, as at shutdown.
        let release = keeper.await.unwrap_or(Release::Shutdown);
        waiting.answered = true;
        release
    }
}

/// One hold in `homestak_auth_held` while it lives.
struct Counted(Arc<Metrics>);

impl Counted {
    fn new(metrics: &Arc<Metrics>) -> Counted {
        metrics.auth_held.fetch_add(1, Ordering::Relaxed);
        metrics.auth_held_total.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(metrics))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.auth_held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request waiting for its hold: counts it abandoned when dropped
/// before the answer.
struct Waiting<'a> {
    metrics: &'a Metrics,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .auth_held_abandoned
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown;
    use crate::throttle::{ManualClock, TokioClock};
    use tokio::time::Instant;

    fn held(metrics: &Metrics) -> u64 {
        metrics.auth_held.load(Ordering::Relaxed)
    }

    /// N holds one after the other take at least N × the hold, on tokio's
    /// (paused) clock, and each is counted while it lasts.
    #[tokio::test(start_paused = true)]
    async fn sequential_holds_take_their_whole_time_each() {
        let metrics = Arc::new(Metrics::default());
        let (_trigger, signal) = shutdown::channel();
        let tarpit = Tarpit::new(Arc::new(TokioClock), signal, Arc::clone(&metrics));
        let hold = Duration::from_secs(30);
        let started = Instant::now();
        for n in 1..=5u32 {
            let before = Instant::now();
            assert_eq!(tarpit.hold(hold, None).await, Release::Elapsed);
            assert!(before.elapsed() >= hold);
            assert!(started.elapsed() >= hold * n);
        }
        assert_eq!(held(&metrics), 0);
        assert_eq!(metrics.auth_held_total.load(Ordering::Relaxed), 5);
        assert_eq!(metrics.auth_held_abandoned.load(Ordering::Relaxed), 0);
        // No wait, no hold.
        assert_eq!(tarpit.hold(Duration::ZERO, None).await, Release::Elapsed);
        assert_eq!(metrics.auth_held_total.load(Ordering::Relaxed), 5);
    }

    /// A hold on a hand-moved clock ends when the clock reaches its end,
    /// not before.
    #[tokio::test]
    async fn a_hold_follows_the_manual_clock() {
        let metrics = Arc::new(Metrics::default());
        let clock = ManualClock::default();
        let (_trigger, signal) = shutdown::channel();
        let tarpit = Arc::new(Tarpit::new(
            Arc::new(clock.clone()),
            signal,
            Arc::clone(&metrics),
        ));
        let t = Arc::clone(&tarpit);
        let mut pending = tokio::spawn(async move { t.hold(Duration::from_secs(10), None).await });
        while held(&metrics) == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(9));
        let early = tokio::time::timeout(Duration::from_millis(100), &mut pending).await;
        assert!(early.is_err(), "answered before the clock reached the end");
        clock.advance(Duration::from_secs(1));
        assert_eq!(pending.await.unwrap(), Release::Elapsed);
        assert_eq!(held(&metrics), 0);
    }

    /// Shutdown ends every hold at once, however long it had to go.
    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_holds_at_once() {
        let metrics = Arc::new(Metrics::default());
        let (trigger, signal) = shutdown::channel();
        let tarpit = Arc::new(Tarpit::new(
            Arc::new(TokioClock),
            signal,
            Arc::clone(&metrics),
        ));
        let started = Instant::now();
        let holds: Vec<_> = (0..3)
            .map(|_| {
                let t = Arc::clone(&tarpit);
                tokio::spawn(async move { t.hold(Duration::from_secs(3600), None).await })
            })
            .collect();
        while held(&metrics) < 3 {
            tokio::task::yield_now().await;
        }
        trigger.trigger();
        for h in holds {
            assert_eq!(h.await.unwrap(), Release::Shutdown);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(held(&metrics), 0);
    }

    /// A request dropped while held (its client hung up) is counted as
    /// abandoned, and its hold runs to the end all the same.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_hold_runs_to_its_end() {
        let metrics = Arc::new(Metrics::default());
        let (_trigger, signal) = shutdown::channel();
        let tarpit = Arc::new(Tarpit::new(
            Arc::new(TokioClock),
            signal,
            Arc::clone(&metrics),
        ));
        let t = Arc::clone(&tarpit);
        let request = tokio::spawn(async move { t.hold(Duration::from_secs(30), None).await });
        while held(&metrics) == 0 {
            tokio::task::yield_now().await;
        }
        request.abort();
        let _ = request.await;
        assert_eq!(metrics.auth_held_abandoned.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(held(&metrics), 1, "the hold ended with its request");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(held(&metrics), 0, "the hold did not end");
    }
}
