//! Request recording: every attempt a transport makes, as PVE would see it.
//!
//! Tests assert exact requests (method, path, parameters) and count writes;
//! the lead's conformance harness can install an [`Observer`] that runs each
//! request through the simulator's schema validator. Secrets are redacted
//! before an observer sees them. [`Observer::on_answer`] then sees how each
//! attempt ended and how long it took (the daemon's `/metrics`).

#[cfg(feature = "testing")]
use std::collections::BTreeMap;
#[cfg(feature = "testing")]
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use reqwest::Method;

use super::error::Error;

/// One request attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: Method,
    /// The endpoint's path template, `/nodes/{node}/qemu/{vmid}/config`.
    pub template: &'static str,
    /// Unescaped path below `/api2/json`.
    pub path: String,
    /// Parameters as PVE sees them after form decoding; secrets redacted.
    pub params: Vec<(String, String)>,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
}

impl RecordedRequest {
    /// The value of a parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this request changes state (anything but GET).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

/// How one request attempt ended.
#[derive(Clone, Copy, Debug)]
pub struct Answered<'a> {
    pub method: &'a Method,
    /// The endpoint's path template (a bounded label, unlike the path).
    pub template: &'static str,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// The HTTP status, when an answer came (error statuses included);
    /// `None` when the host was unreachable or the request timed out.
    pub status: Option<u16>,
    /// The error the attempt ended with, if any.
    pub error: Option<&'a Error>,
    /// From sending the request to the end of the answer's body; waiting
    /// for the host's concurrency and rate limits is not included.
    pub elapsed: Duration,
}

/// Sees every request attempt before it is sent, and how it ended.
pub trait Observer: Send + Sync {
    fn on_request(&self, request: &RecordedRequest);

    /// An attempt ended (answered, failed or timed out).
    fn on_answer(&self, _answer: &Answered<'_>) {}
}

/// How an attempt ended, as a [`Recorder`] keeps it.
#[cfg(feature = "testing")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedAnswer {
    pub method: Method,
    pub template: &'static str,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<super::error::ErrorKind>,
}

/// An [`Observer`] that keeps every request and answer, for assertions
/// (feature `testing`: it grows without bound).
#[cfg(feature = "testing")]
#[derive(Clone, Default)]
pub struct Recorder {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    answers: Arc<Mutex<Vec<RecordedAnswer>>>,
}

#[cfg(feature = "testing")]
impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// Everything recorded so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    /// How each attempt ended, in order.
    pub fn answers(&self) -> Vec<RecordedAnswer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Number of attempts per method (`GET` → 3, …).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in self.lock().iter() {
            *counts.entry(request.method.to_string()).or_insert(0) += 1;
        }
        counts
    }

    /// Number of non-GET attempts.
    pub fn writes(&self) -> usize {
        self.lock().iter().filter(|r| r.is_write()).count()
    }

    /// Forgets everything recorded.
    pub fn clear(&self) {
        self.lock().clear();
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panicking test thread must not hide the other tests' records.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(feature = "testing")]
impl Observer for Recorder {
    fn on_request(&self, request: &RecordedRequest) {
        self.lock().push(request.clone());
    }

    fn on_answer(&self, answer: &Answered<'_>) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(RecordedAnswer {
                method: answer.method.clone(),
                template: answer.template,
                attempt: answer.attempt,
                status: answer.status,
                error: answer.error.map(Error::kind),
            });
    }
}

#[cfg(feature = "testing")]
impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("requests", &self.lock().len())
            .finish()
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_writes() {
        let recorder = Recorder::new();
        for method in [Method::GET, Method::GET, Method::POST, Method::DELETE] {
            recorder.on_request(&RecordedRequest {
                method,
                template: "/x",
                path: "/x".into(),
                params: vec![("k".into(), "v".into())],
                attempt: 1,
            });
        }
        assert_eq!(recorder.counts().get("GET"), Some(&2));
        assert_eq!(recorder.writes(), 2);
        assert_eq!(recorder.requests()[0].param("k"), Some("v"));
        recorder.clear();
        assert!(recorder.requests().is_empty());
    }
}
