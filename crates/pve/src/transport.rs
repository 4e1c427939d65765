//! The seam between typed calls and the wire.
//!
//! [`Client`](super::Client) turns each typed call into a [`Request`] and
//! hands it to a [`Transport`]: [`super::http::Http`] for a real PVE (or the
//! simulator), `fake::Scripted` for controller tests. A transport
//! answers with the decoded `{"data":…}` envelope or an [`Error`]; the
//! client decodes `data` into the typed response.

use reqwest::Method;
use serde_json::Value;

use super::error::{Error, Target};
use super::form::{Form, encode_path_segment};
use homestak_base::id::VmId;

pub use homestak_base::BoxFuture;

/// One API request.
///
/// Built from its endpoint's path template and the values of the
/// template's placeholders, so every request knows its route: `/metrics`
/// counts by template (a bounded label) without re-routing the path.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The endpoint's path template, `/nodes/{node}/qemu/{vmid}/config`.
    template: &'static str,
    /// Path segments below `/api2/json`, unescaped: the template's, with
    /// each placeholder filled.
    segments: Vec<String>,
    /// Query (GET, DELETE) or form body (POST, PUT) parameters.
    pub form: Form,
    /// The vmid the call concerns, for error messages.
    pub vmid: Option<VmId>,
    /// Whether repeating the request is harmless. Only reads are; a write
    /// is never retried blindly, the caller re-observes and decides.
    pub retry_safe: bool,
}

impl Request {
    /// A request to `template` (`/nodes/{node}/qemu/{vmid}`) with its
    /// placeholders filled from `args`, in order. Only GETs are retry-safe.
    ///
    /// `args` must fill the placeholders exactly (a bug in the caller
    /// otherwise, asserted in debug builds; pve's tests check every call
    /// the client makes).
    pub fn new(method: Method, template: &'static str, args: &[&str]) -> Self {
        debug_assert_eq!(
            template_segments(template)
                .filter(|s| is_placeholder(s))
                .count(),
            args.len(),
            "arguments for {template}"
        );
        let mut args = args.iter();
        let segments = template_segments(template)
            .map(|segment| {
                if is_placeholder(segment) {
                    // A missing value leaves `{name}` in the path; PVE refuses it.
                    args.next().copied().unwrap_or(segment).to_string()
                } else {
                    segment.to_string()
                }
            })
            .collect();
        Request {
            retry_safe: method == Method::GET,
            method,
            template,
            segments,
            form: Form::new(),
            vmid: None,
        }
    }

    /// `GET`.
    pub fn get(template: &'static str, args: &[&str]) -> Self {
        Request::new(Method::GET, template, args)
    }

    /// `POST`.
    pub fn post(template: &'static str, args: &[&str]) -> Self {
        Request::new(Method::POST, template, args)
    }

    /// `PUT`.
    pub fn put(template: &'static str, args: &[&str]) -> Self {
        Request::new(Method::PUT, template, args)
    }

    /// `DELETE`.
    pub fn delete(template: &'static str, args: &[&str]) -> Self {
        Request::new(Method::DELETE, template, args)
    }

    /// The endpoint's path template, `/nodes/{node}/qemu/{vmid}/config`.
    pub fn template(&self) -> &'static str {
        self.template
    }

    /// Sets the parameters.
    pub fn with_form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// Names the vmid the call concerns.
    pub fn for_vmid(mut self, vmid: VmId) -> Self {
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

/// The segments of a path template: `/a/{b}` is `a`, `{b}`.
fn template_segments(template: &str) -> impl Iterator<Item = &str> {
    template.strip_prefix('/').unwrap_or(template).split('/')
}

/// `{node}`: a segment the request fills in.
fn is_placeholder(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
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
        let req = Request::get("/nodes/{node}/tasks/{upid}/status", &["pve", upid]);
        assert_eq!(req.template(), "/nodes/{node}/tasks/{upid}/status");
        assert!(req.retry_safe);
        assert!(req.params_in_query());
        assert_eq!(req.path(), format!("/nodes/pve/tasks/{upid}/status"));
        assert_eq!(req.wire_path(), req.path());
        let post =
            Request::post("/nodes/{node}/qemu", &["my node"]).for_vmid(VmId::new(100).unwrap());
        assert!(!post.retry_safe);
        assert!(!post.params_in_query());
        assert_eq!(post.wire_path(), "/nodes/my%20node/qemu");
        assert_eq!(
            post.target("h:8006").to_string(),
            "POST /nodes/my node/qemu on h:8006 (vmid 100)"
        );
        assert!(!Request::delete("/x", &[]).retry_safe);
    }
}
