//! A hostile PVE, for clients' robustness tests (`hostile:` in the config):
//! every authenticated API answer that would succeed is replaced by one a
//! broken or malicious server might send. Errors, `/_sim` and unauthenticated
//! answers stay as they are, so a test can still set the world up.
//!
//! ```yaml
//! hostile: { answer: truncated_json }   # or wrong_types, huge_body, not_json
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How every successful answer is spoiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// `data` of another JSON type than the API documents: a list where an
    /// object belongs, an object for a list, a number for a string.
    WrongTypes,
    /// A JSON string of [`HUGE_BYTES`], streamed (the simulator holds one
    /// chunk at a time).
    HugeBody,
    /// The real answer cut in half.
    TruncatedJson,
    /// Text that is not JSON at all (an HTML error page).
    NotJson,
}

/// The `hostile:` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hostile {
    /// `None`: answers are honest.
    pub answer: Option<Answer>,
}

/// Size of a [`Answer::HugeBody`] answer: far above any real PVE answer.
pub const HUGE_BYTES: u64 = 1 << 30;

/// `data` with every JSON type swapped for another.
pub fn wrong_types(data: &Value) -> Value {
    match data {
        Value::Object(_) => Value::Array(vec![Value::from(1), Value::from("x")]),
        Value::Array(_) => serde_json::json!({"unexpected": true}),
        Value::String(_) => Value::from(42),
        Value::Number(_) => Value::from("not a number"),
        Value::Bool(_) => serde_json::json!([]),
        Value::Null => serde_json::json!({"data": "null expected"}),
    }
}

/// The body of a spoiled answer whose honest body is `body`.
pub fn body(answer: Answer, body: Value) -> Body {
    match answer {
        Answer::WrongTypes => {
            let data = body.get("data").cloned().unwrap_or(Value::Null);
            let spoiled = serde_json::json!({ "data": wrong_types(&data) });
            Body::from(serde_json::to_vec(&spoiled).unwrap_or_default())
        }
        Answer::HugeBody => Body::new(Huge {
            sent: 0,
            chunk: Bytes::from(vec![b'A'; 64 << 10]),
        }),
        Answer::TruncatedJson => {
            let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
            bytes.truncate(bytes.len() / 2);
            Body::from(bytes)
        }
        Answer::NotJson => Body::from("<html><body>502 Bad Gateway</body></html>"),
    }
}

/// `{"data":"AAAA…` for [`HUGE_BYTES`], never closed: a client reading it
/// all has already lost.
struct Huge {
    sent: u64,
    chunk: Bytes,
}

impl hyper::body::Body for Huge {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.sent >= HUGE_BYTES {
            return Poll::Ready(None);
        }
        let frame = if self.sent == 0 {
            Bytes::from_static(b"{\"data\":\"")
        } else {
            self.chunk.clone()
        };
        self.sent += frame.len() as u64;
        Poll::Ready(Some(Ok(hyper::body::Frame::data(frame))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_swapped() {
        for data in [
            serde_json::json!({"a": 1}),
            serde_json::json!([1]),
            serde_json::json!("s"),
            serde_json::json!(1),
            serde_json::json!(true),
            Value::Null,
        ] {
            let spoiled = wrong_types(&data);
            assert_ne!(
                std::mem::discriminant(&spoiled),
                std::mem::discriminant(&data),
                "{data}"
            );
        }
    }

    #[test]
    fn config_names_the_answers() {
        let h: Hostile = serde_json::from_str(r#"{"answer": "huge_body"}"#).unwrap();
        assert_eq!(h.answer, Some(Answer::HugeBody));
        assert!(serde_json::from_str::<Hostile>(r#"{"answer": "nice"}"#).is_err());
    }
}
