//! A shutdown signal every long-running part of the daemon watches: the
//! reconcile worker, the watch loop, and the engine (through
//! [`super::engine::ReconcileRequest::shutdown`]) so in-flight work can
//! stop at a safe point.

use tokio::sync::watch;

/// Triggers a [`Shutdown`].
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Observes a shutdown; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Keeps the sender of [`Shutdown::never`] alive.
    _keep: Option<std::sync::Arc<watch::Sender<bool>>>,
}

/// A connected pair.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown { rx, _keep: None })
}

impl Trigger {
    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new observer.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.0.subscribe(),
            _keep: None,
        }
    }
}

impl Shutdown {
    /// A signal that never fires (for callers without a daemon, e.g. a
    /// one-shot reconcile from the CLI).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            rx,
            _keep: Some(std::sync::Arc::new(tx)),
        }
    }

    /// True once shutdown has started: stop at the next safe point.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown starts (at once if it already has).
    pub async fn triggered(&mut self) {
        // An error means the trigger is gone: treat as shut down.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_reaches_every_observer() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_triggered());
        trigger.trigger();
        a.triggered().await;
        b.triggered().await;
        assert!(b.is_triggered());
        let never = Shutdown::never();
        assert!(!never.is_triggered());
    }
}
