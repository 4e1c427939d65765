//! Shared by the `sim_*` integration tests: start a simulator on
//! 127.0.0.1 port 0 and talk to it over real HTTPS with the pinned
//! fingerprint.

#![allow(dead_code)]

pub mod guest;

use std::time::Duration;

use homestak_sim::{Config, Handle, Simulator};
use serde_json::Value;

/// A running simulator and a client for it.
pub struct Sim {
    pub handle: Handle,
    pub client: reqwest::Client,
}

/// One answer: status, reason phrase, raw body, parsed JSON (or Null).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub content_type: Option<String>,
    pub body: String,
    pub json: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }
}

/// The default world at the given time scale.
pub fn config(scale: f64) -> Config {
    let mut c = Config::with_defaults();
    c.listen = Some("127.0.0.1:0".parse().unwrap());
    c.time_scale = scale;
    c
}

impl Sim {
    pub async fn start(scale: f64) -> Sim {
        Self::start_with(config(scale)).await
    }

    pub async fn start_with(config: Config) -> Sim {
        let handle = Simulator::start(config).await.expect("simulator starts");
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(handle.fingerprint()))
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Sim { handle, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.handle.url())
    }

    pub fn auth(&self) -> String {
        format!("PVEAPIToken={}", self.handle.token())
    }

    pub async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| resp.status().canonical_reason().unwrap_or("").to_string());
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Answer {
            status,
            reason,
            content_type,
            body,
            json,
        }
    }

    /// A request with the token; `form` goes in the body for POST/PUT and
    /// in the query string otherwise.
    pub async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(m, self.url(path))
            .header("Authorization", self.auth());
        req = if method == "POST" || method == "PUT" {
            req.form(form)
        } else {
            req.query(form)
        };
        Self::answer(req.send().await.expect("request sent")).await
    }

    pub async fn ok(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Value {
        let a = self.call(method, path, form).await;
        assert_eq!(a.status, 200, "{method} {path}: {} {}", a.reason, a.body);
        a.json["data"].clone()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.ok("GET", path, &[]).await
    }

    /// Polls a task until it stops; returns its status object.
    pub async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).unwrap().to_string();
        let path = format!("/nodes/{node}/tasks/{upid}/status");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.get(&path).await;
            if s["status"] == "stopped" {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {upid} still running (hang guard)"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs a task-returning call and asserts the task ends OK.
    pub async fn task_ok(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Value {
        let upid = self.ok(method, path, form).await;
        let upid = upid
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} gave no UPID: {upid}"));
        let s = self.wait_task(upid).await;
        assert_eq!(s["exitstatus"], "OK", "{method} {path}: {s}");
        s
    }

    /// Control endpoint call (`/_sim/...`) with a JSON body.
    pub async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(m, format!("{}{path}", self.handle.url()))
            .header("Authorization", self.auth());
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::answer(req.send().await.expect("request sent")).await
    }
}

/// A syntactically valid ed25519 public key line.
pub fn ssh_key(comment: &str) -> String {
    use base64::Engine;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[42u8; 32]);
    format!(
        "ssh-ed25519 {} {comment}",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    )
}
