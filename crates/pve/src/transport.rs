//! The seam between typed calls and the wire.
//!
//! [`Client`](super::Client) turns each typed call into a [`Request`] and
//! hands it to a [`Transport`]: [`super::http::Http`] for a real PVE (or the
//! simulator), [`super::fake::Scripted`] for controller tests. A transport
//! answers with the decoded `{"data":…}` envelope or an [`Error`]; the
//! client decodes `data` into the typed response.

use reqwest::Method;
use serde_json::Value;

use super::error::{Error, Target};
use super::form::{Form, encode_path_segment};

pub use homestak_base::BoxFuture;

/// One API request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// Path segments below `/api2/json`, unescaped.
    pub segments: Vec<String>,
    /// Query (GET, DELETE) or form body (POST, PUT) parameters.
    pub form: Form,
    /// The vmid the call concerns, for error messages.
    pub vmid: Option<u32>,
    /// Whether repeating the request is harmless. Only reads are; a write
    /// is never retried blindly, the caller re-observes and decides.
    pub retry_safe: bool,
}

impl Request {
    /// A request; only GETs are retry-safe.
    pub fn new(method: Method, segments: &[&str]) -> Self {
        Request {
            retry_safe: method == Method::GET,
            method,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            form: Form::new(),
            vmid: None,
        }
    }

    /// `GET`.
    pub fn get(segments: &[&str]) -> Self {
        Request::new(Method::GET, segments)
    }

    /// `POST`.
    pub fn post(segments: &[&str]) -> Self {
        Request::new(Method::POST, segments)
    }

    /// `PUT`.
    pub fn put(segments: &[&str]) -> Self {
        Request::new(Method::PUT, segments)
    }

    /// `DELETE`.
    pub fn delete(segments: &[&str]) -> Self {
        Request::new(Method::DELETE, segments)
    }

    /// Sets the parameters.
    pub fn with_form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// Names the vmid the call concerns.
    pub fn for_vmid(mut self, vmid: u32) -> Self {
        self.vmid = Some(vmid);
        self
    }

    /// The unescaped path, `/nodes/pve/qemu/100/config`.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            out.push_str(segment);
        }
        out
    }

    /// The path as sent, each segment percent-encoded.
    pub fn wire_path(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            out.push_str(&encode_path_segment(segment));
        }
        out
    }

    /// Whether parameters travel in the query string (GET, DELETE) rather
    /// than a form body; PVE answers 501 to a GET or DELETE with a body.
    pub fn params_in_query(&self) -> bool {
        self.method == Method::GET || self.method == Method::DELETE
    }

    /// The error context for this request on `host`.
    pub fn target(&self, host: &str) -> Box<Target> {
        Box::new(Target {
            host: host.to_string(),
            method: self.method.clone(),
            path: self.path(),
            vmid: self.vmid,
        })
    }
}

/// A successful answer: `data` plus the optional `total` some lists carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Envelope {
    pub data: Value,
    pub total: Option<u64>,
}

/// Sends requests somewhere that answers like PVE.
pub trait Transport: Send + Sync {
    /// `host:port` (or a label), for error messages.
    fn host(&self) -> &str;

    /// Sends one request and returns the envelope, or the error PVE gave.
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Envelope, Error>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_retry_safety() {
        let upid = "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam!t:";
        let req = Request::get(&["nodes", "pve", "tasks", upid, "status"]);
        assert!(req.retry_safe);
        assert!(req.params_in_query());
        assert_eq!(req.path(), format!("/nodes/pve/tasks/{upid}/status"));
        assert_eq!(req.wire_path(), req.path());
        let post = Request::post(&["nodes", "my node", "qemu"]).for_vmid(100);
        assert!(!post.retry_safe);
        assert!(!post.params_in_query());
        assert_eq!(post.wire_path(), "/nodes/my%20node/qemu");
        assert_eq!(
            post.target("h:8006").to_string(),
            "POST /nodes/my node/qemu on h:8006 (vmid 100)"
        );
        assert!(!Request::delete(&["x"]).retry_safe);
    }
}
