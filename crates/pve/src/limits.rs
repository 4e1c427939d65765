//! Pacing: exponential backoff with jitter, retry policy, and the per-host
//! concurrency and rate limits.
//!
//! PVE serializes much of its work on the cluster filesystem lock, which
//! times out after about 10 s under parallel writers; a reconciler that
//! floods one host makes things slower, not faster. Every request therefore
//! takes a permit from a per-host semaphore and a token from a per-host
//! bucket before it is sent. Both are small and hand-written.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Exponential backoff with "equal jitter": attempt n waits a random time
/// in `[c/2, c]` where `c = min(max, initial · 2^(n-1))`. The jitter keeps
/// many reconcilers that failed together from retrying together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `initial` up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The upper bound of the wait before attempt `attempt + 1`, i.e. after
    /// `attempt` failures (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A jittered wait after `attempt` failures (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_micros() as u64;
        half + Duration::from_micros(rand::random_range(0..=spread))
    }
}

/// How safe (read-only) requests are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first. 1 disables retries.
    pub attempts: u32,
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        }
    }
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        // pveproxy answers a GET in milliseconds; this only stops a runaway
        // loop. Real load is bounded by the executor's node limit and by
        // task polls backing off to seconds.
        RateLimit {
            per_second: 200.0,
            burst: 50,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Rate {
    limit: RateLimit,
    bucket: Mutex<Bucket>,
}

impl Rate {
    /// Takes a token at `now` and returns how long to wait for it. Tokens may
    /// go negative: that is a reservation, so waiters are served in order.
    fn reserve(&self, now: Instant) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let rate = self.limit.per_second;
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(self.limit.burst));
        bucket.last = now;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }
}

/// The limits of one PVE host. Share one per host (the [`Client`] does).
///
/// [`Client`]: super::Client
#[derive(Debug)]
pub struct HostLimits {
    concurrency: Semaphore,
    max_concurrent: usize,
    rate: Option<Rate>,
}

impl HostLimits {
    /// At most `max_concurrent` requests in flight (at least 1), paced by
    /// `rate` when set.
    pub fn new(max_concurrent: usize, rate: Option<RateLimit>) -> Self {
        let max_concurrent = max_concurrent.max(1);
        let rate = rate
            .filter(|r| r.per_second > 0.0 && r.per_second.is_finite())
            .map(|limit| Rate {
                limit: RateLimit {
                    burst: limit.burst.max(1),
                    ..limit
                },
                bucket: Mutex::new(Bucket {
                    tokens: f64::from(limit.burst.max(1)),
                    last: Instant::now(),
                }),
            });
        HostLimits {
            concurrency: Semaphore::new(max_concurrent),
            max_concurrent,
            rate,
        }
    }

    /// The concurrency limit.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Waits for a concurrency permit and a rate token. Hold the permit for
    /// the duration of one HTTP exchange, not across retries' sleeps.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        // The semaphore is never closed, so Err cannot happen; proceeding
        // without a permit would be the safe degradation if it did.
        let permit = self.concurrency.acquire().await.ok();
        if let Some(rate) = &self.rate {
            let wait = rate.reserve(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_doubles_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(200), Duration::from_secs(1));
        for attempt in 1..10 {
            let d = b.delay(attempt);
            let c = b.ceiling(attempt);
            assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
        }
    }

    #[test]
    fn bucket_allows_burst_then_spaces_requests() {
        let limits = HostLimits::new(
            4,
            Some(RateLimit {
                per_second: 10.0,
                burst: 2,
            }),
        );
        let rate = limits.rate.as_ref().unwrap();
        let t0 = Instant::now();
        assert_eq!(rate.reserve(t0), Duration::ZERO);
        assert_eq!(rate.reserve(t0), Duration::ZERO);
        // Third at the same instant waits one token (100 ms), fourth two.
        let third = rate.reserve(t0);
        let fourth = rate.reserve(t0);
        assert!((third.as_secs_f64() - 0.1).abs() < 1e-6, "{third:?}");
        assert!((fourth.as_secs_f64() - 0.2).abs() < 1e-6, "{fourth:?}");
        // After a long idle the bucket is full again, but no fuller.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(rate.reserve(later), Duration::ZERO);
        assert_eq!(rate.reserve(later), Duration::ZERO);
        assert!(rate.reserve(later) > Duration::ZERO);
    }

    #[test]
    fn zero_or_nonsense_limits_are_clamped() {
        let limits = HostLimits::new(
            0,
            Some(RateLimit {
                per_second: 0.0,
                burst: 0,
            }),
        );
        assert_eq!(limits.max_concurrent(), 1);
        assert!(limits.rate.is_none());
    }
}
