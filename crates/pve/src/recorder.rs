//! Request recording: every attempt a transport makes, as PVE would see it.
//!
//! Tests assert exact requests (method, path, parameters) and count writes;
//! the lead's conformance harness can install an [`Observer`] that runs each
//! request through the simulator's schema validator. Secrets are redacted
//! before an observer sees them.

#[cfg(feature = "testing")]
use std::collections::BTreeMap;
#[cfg(feature = "testing")]
use std::sync::{Arc, Mutex, PoisonError};

use reqwest::Method;

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

/// Sees every request attempt before it is sent.
pub trait Observer: Send + Sync {
    fn on_request(&self, request: &RecordedRequest);
}

/// An [`Observer`] that keeps every request, for assertions (feature
/// `testing`: it grows without bound).
#[cfg(feature = "testing")]
#[derive(Clone, Default)]
pub struct Recorder {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
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
