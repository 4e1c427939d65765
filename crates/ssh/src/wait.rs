//! Waiting for a freshly booted host to accept SSH.
//!
//! A new VM goes through "no route / port closed" (booting), "handshake cut
//! short" (sshd starting), "key refused" (cloud-init has not written
//! authorized_keys yet) and finally success. All of those are retried with
//! exponential backoff and jitter until the deadline; the error then says
//! how the last attempt failed ([`ErrorKind`](super::ErrorKind)) and carries it as its source.
//! A host key that fails the policy and an unusable private key end the wait
//! at once: retrying cannot fix them, and a changed key must be looked at.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{Error, Session, Target, Transport};

/// How long and how often to try.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Upper bound of the delay between attempts.
    pub max_delay: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            timeout: Duration::from_secs(300),
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Connects to `target`, retrying transient failures until
/// `options.timeout`; see the module docs. Each attempt is also cut short
/// at the deadline, so the wait never overruns it by more than a moment.
pub async fn wait_for_ssh<T: Transport + ?Sized>(
    transport: &T,
    target: &Target,
    options: &WaitOptions,
) -> Result<Box<dyn Session>, Error> {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let mut delay = options.initial_delay;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining, transport.connect(target)).await {
            Ok(Ok(session)) => {
                tracing::debug!(destination = %target.destination, attempts, "SSH is up");
                return Ok(session);
            }
            Ok(Err(e)) if !e.is_transient() => return Err(e),
            Ok(Err(e)) => e,
            Err(_) => Error::ConnectTimeout {
                destination: target.destination.clone(),
                after: remaining,
            },
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::WaitTimedOut {
                destination: target.destination.clone(),
                waited: now - started,
                attempts,
                last_kind: last.kind(),
                last: Box::new(last),
            });
        }
        tracing::debug!(
            destination = %target.destination, attempts, kind = %last.kind(),
            "SSH not ready yet"
        );
        // Full jitter on the upper half: spread retries of many VMs apart
        // without ever waiting less than half the nominal delay.
        let jittered = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
        tokio::time::sleep(jittered.min(deadline - now)).await;
        delay = (delay * 2).min(options.max_delay);
    }
}
