//! The daemon's event log (`GET /v1/events`): commits seen, reconciles
//! queued, started and finished, subtrees accepted, reloads, and whatever
//! the engine reports per node through an [`EventSink`].
//!
//! Events are kept in memory in a bounded ring with a monotonically
//! increasing sequence number, so a client polls with `?since=<seq>`.
//! Durable history belongs to the store; this is the live feed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Events kept before the oldest are dropped.
pub const CAPACITY: usize = 2000;

/// How notable an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Position in the log, from 1.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub level: Level,
    /// A short machine-readable kind: `commit`, `reconcile_started`, ...
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub message: String,
}

/// What an emitter provides; the log adds `seq` and `at`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub level: Level,
    pub kind: String,
    pub manifest: Option<String>,
    pub node: Option<String>,
    pub message: String,
}

impl NewEvent {
    pub fn info(kind: &str, message: impl Into<String>) -> NewEvent {
        NewEvent {
            level: Level::Info,
            kind: kind.to_string(),
            manifest: None,
            node: None,
            message: message.into(),
        }
    }

    pub fn warning(kind: &str, message: impl Into<String>) -> NewEvent {
        NewEvent {
            level: Level::Warning,
            ..NewEvent::info(kind, message)
        }
    }

    pub fn error(kind: &str, message: impl Into<String>) -> NewEvent {
        NewEvent {
            level: Level::Error,
            ..NewEvent::info(kind, message)
        }
    }

    pub fn manifest(mut self, name: &str) -> NewEvent {
        self.manifest = Some(name.to_string());
        self
    }

    pub fn node(mut self, name: &str) -> NewEvent {
        self.node = Some(name.to_string());
        self
    }
}

/// The log. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ring: Mutex<VecDeque<Event>>,
    last_seq: AtomicU64,
}

/// What the engine gets to report events with.
pub type EventSink = EventLog;

impl EventLog {
    /// Appends an event; returns its sequence number.
    pub fn emit(&self, event: NewEvent) -> u64 {
        let mut ring = self.inner.ring.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock, so sequence order is log order.
        let seq = self.inner.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        if ring.len() >= CAPACITY {
            ring.pop_front();
        }
        ring.push_back(Event {
            seq,
            at: now_rfc3339(),
            level: event.level,
            kind: event.kind,
            manifest: event.manifest,
            node: event.node,
            message: event.message,
        });
        seq
    }

    /// Events with `seq > since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<Event> {
        let ring = self.inner.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .filter(|e| e.seq > since)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest sequence number (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Relaxed)
    }
}

/// Now, RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_polled_by_sequence() {
        let log = EventLog::default();
        for i in 0..(CAPACITY + 10) {
            log.emit(NewEvent::info("tick", format!("{i}")).manifest("m"));
        }
        assert_eq!(log.last_seq(), (CAPACITY + 10) as u64);
        let all = log.since(0, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 11, "the oldest were dropped");
        let tail = log.since(log.last_seq() - 2, 10);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [2009, 2010]);
        assert_eq!(log.since(0, 3).len(), 3);
        assert!(all[0].at.ends_with('Z'));
    }
}
