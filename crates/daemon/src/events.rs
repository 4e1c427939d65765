//! The daemon's event log (`GET /v1/events`): commits seen, reconciles
//! queued, started and finished, subtrees accepted, reloads, and what runs
//! report per node. It is the store's history ([`Store::append_event`]):
//! one durable log, numbered, so a client polls with `?since=<seq>` and a
//! restart loses nothing.

use std::sync::Arc;

use homestak_api::Event;
use homestak_engine::store::Store;

/// The log. Cloning shares it.
#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("store", &self.store.location())
            .finish()
    }
}

impl EventLog {
    /// The log kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> EventLog {
        EventLog { store }
    }

    /// Appends an event; returns its number (0 if the store refused it,
    /// which is logged: an event is never worth failing the work it
    /// reports).
    pub fn emit(&self, event: Event) -> u64 {
        match self.store.append_event(&event) {
            Ok(recorded) => recorded.seq,
            Err(err) => {
                tracing::warn!(error = %homestak_base::error_chain(&err), kind = %event.kind, "cannot record an event");
                0
            }
        }
    }

    /// Events numbered after `since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<Event> {
        self.store
            .events_since(since, limit)
            .inspect_err(|err| tracing::warn!(error = %homestak_base::error_chain(err), "cannot read events"))
            .unwrap_or_default()
    }

    /// The newest number (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.store.last_event_seq().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_api::Kind;

    #[test]
    fn the_log_is_the_stores_history_polled_by_number() {
        let log = EventLog::new(Arc::new(homestak_engine::store::memory()));
        for i in 0..5 {
            log.emit(Event::info(Kind::Revision, format!("{i}")).manifest("m"));
        }
        assert_eq!(log.last_seq(), 5);
        let tail = log.since(3, 10);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(log.since(0, 2).len(), 2);
        assert_eq!(log.since(5, 10).len(), 0);
    }
}
