//! What every handler returns: a status, a content type and a body, plus
//! the seed's JSON error shape `{"error": {"code": "E…", "message": "…"}}`.
//!
//! Handlers produce a [`Reply`], not an axum response, so the golden runner
//! can drive them in-process and compare exactly what the reference
//! recorded. [`Reply::into_response`] is the only place that touches HTTP.
//!
//! Error codes (the seed's, extended for the reconciler API):
//!
//! | code | HTTP | meaning |
//! |---|---|---|
//! | E100 | 400 | unknown endpoint or invalid path |
//! | E101 | 400 | invalid request body or parameter |
//! | E102 | 405 | method not allowed |
//! | E103 | 409 | conflict (e.g. a subtree named like a git-managed manifest) |
//! | E104 | 413 | request body larger than `--max-body` |
//! | E105 | 408 | request body not received within `--idle-timeout` |
//! | E200 | 404 | spec, repository, file or manifest not found |
//! | E201, E202 | 500 | the spec's posture or an SSH key is missing (site-config defect) |
//! | E300 | 401 | authorization required (no `Bearer` token) |
//! | E301 | 403 | invalid token |
//! | E302 | 403 | the token's scope does not allow this endpoint |
//! | E303 | 429 | too many failed attempts from this address; see `Retry-After` |
//! | E500 | 500 | server-side error (misconfiguration, unreadable secrets, …) |
//! | E503 | 503 | the daemon is shutting down, or no engine is available |

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use homestak_api::v1::{ErrorBody, ErrorDetail};
use serde::Serialize;
use serde_json::Value;

/// `application/json`, as the reference sent it.
pub const JSON: &str = "application/json";
/// Plain text (git's `info/refs`, Prometheus metrics).
pub const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus text exposition format 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Anything else (git objects, raw files).
pub const BYTES: &str = "application/octet-stream";

/// A response body.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Bytes(Vec<u8>),
    /// A file streamed from disk (the daemon's own binary: tens of MB).
    File(std::path::PathBuf),
}

/// Marks a reply to a request that presented a token that was wrong, so
/// the throttle counts it (see [`super::throttle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadToken;

/// A handler's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub payload: Payload,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Set when the request presented a wrong token.
    pub bad_token: bool,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(value: Value) -> Reply {
        Reply::json_status(200, value)
    }

    /// A JSON body with `status`.
    pub fn json_status(status: u16, value: Value) -> Reply {
        Reply {
            status,
            content_type: JSON,
            payload: Payload::Json(value),
            retry_after: None,
            bad_token: false,
        }
    }

    /// 200 with `answer` as its JSON body.
    pub fn typed(answer: &impl Serialize) -> Reply {
        to_body(answer).map_or_else(|err| err.reply(), Reply::json)
    }

    /// 200 with raw bytes.
    pub fn bytes(content_type: &'static str, bytes: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            content_type,
            payload: Payload::Bytes(bytes),
            retry_after: None,
            bad_token: false,
        }
    }

    /// The JSON body, when the payload is JSON.
    pub fn body_json(&self) -> Option<&Value> {
        match &self.payload {
            Payload::Json(v) => Some(v),
            Payload::Bytes(_) | Payload::File(_) => None,
        }
    }

    /// Converts to an HTTP response. A `HEAD` request gets the same status
    /// and headers (Content-Length included) and no body.
    pub fn into_response(self, method: &Method) -> Response {
        let (body, len) = match self.payload {
            Payload::Json(v) => {
                let mut b = serde_json::to_vec(&v).unwrap_or_default();
                b.push(b'\n');
                let len = b.len();
                (Body::from(b), len)
            }
            Payload::Bytes(b) => {
                let len = b.len();
                (Body::from(b), len)
            }
            Payload::File(path) => match std::fs::File::open(&path).and_then(|f| {
                let len = f.metadata()?.len();
                Ok((f, len))
            }) {
                Ok((file, len)) => {
                    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
                    (
                        Body::from_stream(stream),
                        usize::try_from(len).unwrap_or(usize::MAX),
                    )
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot open a file to serve");
                    return ApiError::internal("the file to serve cannot be read")
                        .reply()
                        .into_response(method);
                }
            },
        };
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            body
        };
        let mut response = (
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.bad_token {
            response.extensions_mut().insert(BadToken);
        }
        response
    }
}

/// An error answer in the seed's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// E100: unknown endpoint or invalid path.
    pub fn bad_path(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "E100", message)
    }

    /// E101: invalid request body or parameter.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "E101", message)
    }

    /// E102: the endpoint exists but not for this method.
    pub fn method_not_allowed(method: &Method) -> ApiError {
        ApiError::new(405, "E102", format!("Method not allowed: {method}"))
    }

    /// E200: not found.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "E200", message)
    }

    /// E300: no usable `Bearer` token.
    pub fn auth_required() -> ApiError {
        ApiError::new(401, "E300", "Authorization required")
    }

    /// E301: a token was presented and is wrong.
    pub fn invalid_token() -> ApiError {
        ApiError::new(403, "E301", "Invalid token")
    }

    /// E302: the token is valid but its scope is too small.
    pub fn insufficient_scope(needed: &str) -> ApiError {
        ApiError::new(
            403,
            "E302",
            format!("Insufficient scope: this endpoint needs a '{needed}' token"),
        )
    }

    /// E303: locked out after repeated failures.
    pub fn throttled(retry_after: Duration) -> ApiError {
        ApiError::new(
            429,
            "E303",
            format!(
                "Too many failed authorization attempts; retry after {} s",
                retry_after_secs(retry_after)
            ),
        )
    }

    /// E500: a server-side error.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "E500", message)
    }

    /// E503: unavailable (shutting down, no engine).
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "E503", message)
    }

    /// The body, as the API's clients read it.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }

    /// As a [`Reply`].
    pub fn reply(&self) -> Reply {
        // Two strings always encode; not through `to_body`, whose own
        // failure is an `ApiError`.
        let body = serde_json::to_value(self.body()).unwrap_or_default();
        let mut reply = Reply::json_status(self.status, body);
        reply.bad_token = self.code == "E301";
        reply
    }
}

impl From<ApiError> for Reply {
    fn from(err: ApiError) -> Reply {
        err.reply()
    }
}

/// An answer as its JSON body. serde_json fails only on maps whose keys
/// are not strings; an answer with one is a 500, not a panic.
pub fn to_body(answer: &impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(answer)
        .map_err(|e| ApiError::internal(format!("Cannot encode the answer: {e}")))
}

/// Whole seconds for `Retry-After`, never 0 for a positive wait.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs();
    if wait.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn head_keeps_headers_and_drops_the_body() {
        let reply = Reply::json(json!({"status": "ok"}));
        let get = reply.clone().into_response(&Method::GET);
        let head = reply.into_response(&Method::HEAD);
        assert_eq!(
            get.headers()[header::CONTENT_LENGTH],
            head.headers()[header::CONTENT_LENGTH]
        );
        let body = axum::body::to_bytes(head.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());
        let body = axum::body::to_bytes(get.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"{\"status\":\"ok\"}\n");
    }

    #[test]
    fn an_error_answers_the_seed_shape() {
        let reply = ApiError::not_found("Spec not found: web").reply();
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.body_json(),
            Some(&json!({"error": {"code": "E200", "message": "Spec not found: web"}}))
        );
    }

    #[test]
    fn invalid_token_marks_the_reply_for_the_throttle() {
        assert!(ApiError::invalid_token().reply().bad_token);
        assert!(!ApiError::auth_required().reply().bad_token);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
