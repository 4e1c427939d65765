//! A scripted PVE for controller tests.
//!
//! [`Scripted`] is a [`Transport`]: wrapped in a [`Client`] it runs the real
//! request-building and decoding code, so a controller test exercises the
//! same requests it would send to PVE, and can assert them afterwards.
//! Replies are scripted per method and path:
//! - [`Scripted::once`] replies are consumed in the order they were added
//!   and take precedence;
//! - [`Scripted::always`] replies stay; a later one for the same route
//!   replaces an earlier one.
//!
//! A path ending in `*` matches every path with that prefix. Requests that
//! match nothing get PVE's own answer to unknown routes: `501 Method '…'
//! not implemented`.
//!
//! For a test that needs only one or two calls, implementing [`Api`]
//! directly (every method has a "not implemented" default) is simpler.
//!
//! [`Api`]: super::Api

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::error::Error;
use super::recorder::RecordedRequest;
use super::transport::{BoxFuture, Envelope, Request, Transport};
use super::upid::Upid;

/// What a scripted route answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `{"data": …}`.
    Data(Value),
    /// `{"data": …, "total": …}`.
    Envelope(Envelope),
    /// An HTTP error as PVE sends it.
    Status {
        status: u16,
        message: String,
        errors: BTreeMap<String, String>,
    },
    /// The request times out.
    Timeout,
}

impl Reply {
    /// An error status with a message.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply::Status {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    /// `400 Parameter verification failed.` with one parameter error.
    pub fn param_error(param: &str, message: impl Into<String>) -> Self {
        Reply::Status {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: BTreeMap::from([(param.to_string(), message.into())]),
        }
    }
}

#[derive(Debug)]
struct Rule {
    method: Method,
    path: String,
    reply: Reply,
    once: bool,
}

impl Rule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method != *method {
            return false;
        }
        match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<RecordedRequest>,
}

/// A scripted transport. Create with [`Scripted::new`], script it, and hand
/// [`Scripted::client`] to the code under test.
#[derive(Debug)]
pub struct Scripted {
    host: String,
    state: Mutex<State>,
}

impl Scripted {
    /// An empty script that reports itself as host `fake-pve:8006`.
    pub fn new() -> Arc<Self> {
        Arc::new(Scripted {
            host: "fake-pve:8006".into(),
            state: Mutex::new(State::default()),
        })
    }

    /// A [`Client`] over this script.
    pub fn client(self: &Arc<Self>) -> Client {
        Client::with_transport(self.clone())
    }

    /// Answers every `method path` with `reply` from now on.
    pub fn always(&self, method: Method, path: &str, reply: Reply) -> &Self {
        self.add(method, path, reply, false)
    }

    /// Answers the next matching request with `reply`, once.
    pub fn once(&self, method: Method, path: &str, reply: Reply) -> &Self {
        self.add(method, path, reply, true)
    }

    /// Shorthand for `always(method, path, Reply::Data(data))`.
    pub fn data(&self, method: Method, path: &str, data: Value) -> &Self {
        self.always(method, path, Reply::Data(data))
    }

    fn add(&self, method: Method, path: &str, reply: Reply, once: bool) -> &Self {
        self.lock().rules.push(Rule {
            method,
            path: path.to_string(),
            reply,
            once,
        });
        self
    }

    /// Every request received, in order (secrets redacted).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().log.clone()
    }

    /// Number of non-GET requests received.
    pub fn writes(&self) -> usize {
        self.lock().log.iter().filter(|r| r.is_write()).count()
    }

    /// Scripted one-shot replies not consumed yet, as `METHOD path`.
    pub fn unused_once(&self) -> Vec<String> {
        self.lock()
            .rules
            .iter()
            .filter(|r| r.once)
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer(&self, request: &Request) -> Result<Envelope, Error> {
        let path = request.path();
        let reply = {
            let mut state = self.lock();
            state.log.push(RecordedRequest {
                method: request.method.clone(),
                template: request.template(),
                path: path.clone(),
                params: request.form.redacted_pairs(),
                attempt: 1,
            });
            let once = state
                .rules
                .iter()
                .position(|r| r.once && r.matches(&request.method, &path));
            match once {
                Some(index) => Some(state.rules.remove(index).reply),
                None => state
                    .rules
                    .iter()
                    .rev()
                    .find(|r| !r.once && r.matches(&request.method, &path))
                    .map(|r| r.reply.clone()),
            }
        };
        let target = || request.target(&self.host);
        match reply {
            Some(Reply::Data(data)) => Ok(Envelope { data, total: None }),
            Some(Reply::Envelope(envelope)) => Ok(envelope),
            Some(Reply::Status {
                status,
                message,
                errors,
            }) => Err(Error::Api {
                target: target(),
                status,
                message,
                errors,
            }),
            Some(Reply::Timeout) => Err(Error::Timeout {
                target: target(),
                timeout: Duration::ZERO,
            }),
            None => Err(Error::Api {
                target: target(),
                status: 501,
                message: format!(
                    "Method '{} /api2/json{path}' not implemented",
                    request.method
                ),
                errors: BTreeMap::new(),
            }),
        }
    }
}

impl Transport for Scripted {
    fn host(&self) -> &str {
        &self.host
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Envelope, Error>> {
        Box::pin(std::future::ready(self.answer(request)))
    }
}

static NEXT_PID: AtomicU32 = AtomicU32::new(0x1000);

/// A fresh, well-formed UPID for a scripted task.
///
/// Panics if `node`, `kind` or `id` cannot appear in a UPID (a bug in the
/// test that calls it).
pub fn upid(node: &str, kind: &str, id: &str) -> Upid {
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    format!("UPID:{node}:{pid:08X}:0000C9CC:6700A000:{kind}:{id}:root@pam!homestak:")
        .parse()
        .unwrap_or_else(|err| panic!("test helper built a bad UPID: {err}"))
}

/// The `data` of `GET …/tasks/{upid}/status`: running when `exitstatus` is
/// `None`, else stopped with that exit status.
pub fn task_status(upid: &Upid, exitstatus: Option<&str>) -> Value {
    let mut status = json!({
        "upid": upid.as_str(),
        "node": upid.node(),
        "pid": upid.pid(),
        "pstart": upid.pstart(),
        "starttime": upid.starttime(),
        "type": upid.kind(),
        "id": upid.id(),
        "user": upid.user(),
        "status": if exitstatus.is_some() { "stopped" } else { "running" },
    });
    if let (Some(exit), Some(map)) = (exitstatus, status.as_object_mut()) {
        map.insert("exitstatus".into(), json!(exit));
    }
    status
}

/// The path of a task's status, for scripting.
pub fn task_status_path(upid: &Upid) -> String {
    format!("/nodes/{}/tasks/{}/status", upid.node(), upid)
}

/// The path of a task's log, for scripting.
pub fn task_log_path(upid: &Upid) -> String {
    format!("/nodes/{}/tasks/{}/log", upid.node(), upid)
}
