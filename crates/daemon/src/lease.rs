//! The reconciler lease of a tier's store, held while the daemon runs: one
//! reconciler per store.
//!
//! sled already keeps other processes out of the store, so a lease found
//! held by another process is a leftover of one that died (restarts are
//! immediate, never a TTL's wait); two daemons in one process conflict.
//! Each process tells its leases apart by a random nonce, not its pid,
//! which a restarted daemon (PID 1 in a container) gets again.
//!
//! The lease is renewed in the background; if another holder took it (it
//! expired while the daemon stalled), [`Lease::lost`] fires and the daemon
//! stops, since it no longer owns the work.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use homestak_base::error_chain;
use homestak_base::time::Timestamp;
use homestak_engine::store::{self, LeaseOutcome, Store};
use tokio::sync::Notify;

/// The lease's name in the store.
pub const NAME: &str = "reconciler";

/// Long enough to survive a stalled runtime, short enough to matter.
const TTL: Duration = Duration::from_secs(60);

/// Taking the lease failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "another reconciler in this process holds the lease ({holder}); stop it, or give this one its own --state-dir"
    )]
    Held { holder: String },
    #[error("cannot read or write the lease in the store")]
    Store(#[source] store::Error),
}

/// The lease, while held; dropping it gives it up.
pub struct Lease {
    store: Arc<dyn Store>,
    holder: String,
    lost: Arc<Notify>,
    renew: tokio::task::JoinHandle<()>,
}

/// This process's mark in a holder's name.
fn process_mark() -> &'static str {
    static MARK: OnceLock<String> = OnceLock::new();
    MARK.get_or_init(|| format!("process {:016x}", rand::random::<u64>()))
}

impl Lease {
    /// Takes the lease of `store`: free, expired, or left by a process that
    /// is gone.
    pub fn acquire(store: Arc<dyn Store>) -> Result<Lease, Error> {
        static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!(
            "pid {} {} (start {start}) since {}",
            std::process::id(),
            process_mark(),
            Timestamp::now()
        );
        let mut outcome = store
            .acquire_lease(NAME, &holder, TTL, Timestamp::now())
            .map_err(Error::Store)?;
        if let LeaseOutcome::Held(held) = &outcome
            && !held.holder.contains(process_mark())
        {
            tracing::info!(holder = %held.holder, "taking over the lease of a homestak that is gone");
            store
                .release_lease(NAME, &held.holder)
                .map_err(Error::Store)?;
            outcome = store
                .acquire_lease(NAME, &holder, TTL, Timestamp::now())
                .map_err(Error::Store)?;
        }
        if let LeaseOutcome::Held(held) = outcome {
            return Err(Error::Held {
                holder: held.holder,
            });
        }
        let lost = Arc::new(Notify::new());
        let renew = tokio::spawn(renew(Arc::clone(&store), holder.clone(), Arc::clone(&lost)));
        Ok(Lease {
            store,
            holder,
            lost,
            renew,
        })
    }

    /// Resolves when another holder took the lease.
    pub async fn lost(&self) {
        self.lost.notified().await;
    }

    /// Who holds it: pid, process mark, since when.
    pub fn holder(&self) -> &str {
        &self.holder
    }
}

/// Renews every third of the TTL. A store error is retried at the next
/// tick; a lease someone else took is given up for good.
async fn renew(store: Arc<dyn Store>, holder: String, lost: Arc<Notify>) {
    let mut tick = tokio::time::interval(TTL / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.renew_lease(NAME, &holder, TTL, Timestamp::now()) {
            Ok(_) => {}
            Err(err @ store::Error::LeaseLost { .. }) => {
                tracing::error!(error = %error_chain(&err), "the reconciler lease was taken over; stopping");
                // Stored, so a waiter that is not waiting yet still sees it.
                lost.notify_one();
                return;
            }
            Err(err) => {
                tracing::error!(error = %error_chain(&err), "cannot renew the reconciler lease");
            }
        }
    }
}

impl Drop for Lease {
    /// Given up however the daemon ends, a failed start included.
    fn drop(&mut self) {
        self.renew.abort();
        tracing::debug!(holder = %self.holder, "releasing the lease");
        if let Err(err) = self.store.release_lease(NAME, &self.holder) {
            tracing::error!(error = %error_chain(&err), "cannot release the reconciler lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_left_by_a_process_that_died_is_taken_over_at_once() {
        let store: Arc<dyn Store> = Arc::new(store::memory());
        // A crashed daemon with our pid (PID 1 in a container), but not ours.
        let dead = format!(
            "pid {} process 00000000deadbeef (start 0) since then",
            std::process::id()
        );
        store
            .acquire_lease(NAME, &dead, TTL, Timestamp::now())
            .unwrap();
        let lease = Lease::acquire(Arc::clone(&store)).unwrap();
        assert_eq!(
            store.get_lease(NAME).unwrap().unwrap().holder,
            lease.holder()
        );
        // A second reconciler in this process is refused while it is held,
        assert!(matches!(
            Lease::acquire(Arc::clone(&store)),
            Err(Error::Held { .. })
        ));
        // and the lease is free once given up.
        drop(lease);
        assert_eq!(store.get_lease(NAME).unwrap(), None);
        assert!(Lease::acquire(store).is_ok());
    }
}
