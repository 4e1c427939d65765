//! The HTTPS transport: reqwest over rustls (ring), one per PVE host.
//!
//! - Token auth header on every request, marked sensitive so reqwest never
//!   logs it.
//! - Trust by system CA, extra CA, pinned SHA-256 fingerprint, or nothing
//!   at all only when [`Trust::Insecure`] is chosen explicitly.
//! - A timeout on every request; per-host concurrency and rate limits.
//! - Retries only for retry-safe requests (reads), on transport errors,
//!   timeouts, 5xx without a definite answer and 595/596, with jittered
//!   exponential backoff. Writes are sent exactly once: after an ambiguous
//!   failure the caller re-observes PVE and decides.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::auth::ApiToken;
use super::error::Error;
use super::limits::{HostLimits, RateLimit, RetryPolicy};
use super::recorder::{Answered, Observer, RecordedRequest};
use super::transport::{BoxFuture, Envelope, Request, Transport};
use homestak_tls::Fingerprint;

/// How the client decides to trust the host's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The system's CA roots.
    System,
    /// The system roots plus the CA certificates of a PEM bundle.
    ExtraCa { pem: Vec<u8> },
    /// Only the CA certificates of a PEM bundle.
    CaOnly { pem: Vec<u8> },
    /// Exactly the certificate with this SHA-256 fingerprint (PVE's
    /// self-signed certificates; `api_fingerprint:` in node config).
    Pinned(Fingerprint),
    /// No verification. Only the CLI's explicit `--insecure` may choose it.
    Insecure,
}

/// Settings of a [`super::Client`] for one PVE host.
#[derive(Clone)]
pub struct Config {
    /// `https://host:port`; the API root `/api2/json` is appended.
    pub base_url: Url,
    pub token: ApiToken,
    pub trust: Trust,
    /// Whole-request timeout (connect, send, read the body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests in flight to this host at once.
    pub max_concurrent: usize,
    /// Largest answer body read, in bytes; a larger one is an error, so a
    /// hostile or wrong server cannot exhaust memory.
    pub max_body: usize,
    pub rate: Option<RateLimit>,
    /// Sees every attempt (tests, schema validation).
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url.as_str())
            .field("token", &self.token)
            .field("trust", &self.trust)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_concurrent", &self.max_concurrent)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// PVE's API port.
pub const DEFAULT_PORT: u16 = 8006;

/// Default [`Config::max_body`]: 32 MiB, about a hundred times the
/// `/cluster/resources` answer of a thousand VMs.
pub const DEFAULT_MAX_BODY: usize = 32 << 20;

impl Config {
    /// Settings for `host` with defaults: 30 s timeout, 10 s connect, 4
    /// attempts for reads, 8 concurrent requests, 50 req/s (burst 20).
    ///
    /// `host` may be `pve.lan`, `pve.lan:8006`, `127.0.0.2`, `[::1]:8006`
    /// or `https://pve.lan:8006`; a missing port means 8006. Plain `http`
    /// is refused: the token would travel in clear text.
    pub fn new(host: &str, token: ApiToken, trust: Trust) -> Result<Self, Error> {
        Ok(Config {
            base_url: base_url(host)?,
            token,
            trust,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_concurrent: 8,
            max_body: DEFAULT_MAX_BODY,
            rate: Some(RateLimit::default()),
            observer: None,
        })
    }
}

fn base_url(host: &str) -> Result<Url, Error> {
    let text = if host.contains("://") {
        host.to_string()
    } else {
        format!("https://{host}")
    };
    let mut url = Url::parse(&text)
        .map_err(|e| Error::config_with(format!("PVE host {host:?} is not a valid address"), e))?;
    if url.scheme() != "https" {
        return Err(Error::config(format!(
            "PVE host {host:?} must use https (the API token would travel in clear text)"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::config(format!("PVE host {host:?} has no host name")));
    }
    if url.port().is_none() {
        let _ = url.set_port(Some(DEFAULT_PORT));
    }
    url.set_path("/api2/json");
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The reqwest-backed transport.
pub struct Http {
    client: reqwest::Client,
    base: String,
    host: String,
    auth: HeaderValue,
    timeout: Duration,
    retry: RetryPolicy,
    limits: HostLimits,
    max_body: usize,
    observer: Option<Arc<dyn Observer>>,
}

impl Http {
    /// Builds the transport. Installs the ring crypto provider first.
    pub fn new(config: Config) -> Result<Self, Error> {
        homestak_tls::install_crypto_provider();
        let builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .https_only(true)
            // PVE never redirects the API; a redirect would be a surprise
            // carrying our token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("homestak/", env!("CARGO_PKG_VERSION")));
        let builder = match &config.trust {
            Trust::System => builder,
            Trust::ExtraCa { pem } => builder.tls_certs_merge(ca_bundle(pem)?),
            Trust::CaOnly { pem } => builder.tls_certs_only(ca_bundle(pem)?),
            Trust::Pinned(fingerprint) => {
                builder.tls_backend_preconfigured(homestak_tls::pinned_client_config(*fingerprint))
            }
            Trust::Insecure => {
                tracing::warn!(
                    url = %config.base_url,
                    "TLS verification is off for this PVE host (--insecure)"
                );
                builder.tls_danger_accept_invalid_certs(true)
            }
        };
        let client = builder
            .build()
            .map_err(|e| Error::config_with("cannot build the HTTPS client", e))?;
        let mut auth = HeaderValue::from_str(&config.token.header_value()).map_err(|_| {
            // The InvalidHeaderValue carries no text, but say why plainly.
            Error::config(format!(
                "API token {} contains characters not allowed in an HTTP header",
                config.token.id
            ))
        })?;
        auth.set_sensitive(true);
        let host = match (config.base_url.host_str(), config.base_url.port()) {
            (Some(h), Some(p)) if h.contains(':') => format!("[{h}]:{p}"),
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => config.base_url.to_string(),
        };
        Ok(Http {
            client,
            base: config.base_url.as_str().trim_end_matches('/').to_string(),
            host,
            auth,
            timeout: config.timeout,
            retry: config.retry,
            limits: HostLimits::new(config.max_concurrent, config.rate),
            max_body: config.max_body,
            observer: config.observer,
        })
    }

    async fn send_with_retries(&self, request: &Request) -> Result<Envelope, Error> {
        let attempts = if request.retry_safe {
            self.retry.attempts.max(1)
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            let result = self.attempt(request, attempt).await;
            match result {
                Err(err) if attempt < attempts && err.is_transient() => {
                    let delay = self.retry.backoff.delay(attempt);
                    tracing::warn!(
                        error = %err,
                        attempt,
                        retry_in = ?delay,
                        "retrying a safe PVE request"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, request: &Request, attempt: u32) -> Result<Envelope, Error> {
        let _permit = self.limits.acquire().await;
        if let Some(observer) = &self.observer {
            observer.on_request(&RecordedRequest {
                method: request.method.clone(),
                template: request.template(),
                path: request.path(),
                params: request.form.redacted_pairs(),
                attempt,
            });
        }
        let started = Instant::now();
        let mut status = None;
        let result = self.exchange(request, attempt, &mut status).await;
        if let Some(observer) = &self.observer {
            observer.on_answer(&Answered {
                method: &request.method,
                template: request.template(),
                attempt,
                status,
                error: result.as_ref().err(),
                elapsed: started.elapsed(),
            });
        }
        result
    }

    /// Sends one attempt and reads its answer; `answered` gets the HTTP
    /// status as soon as one comes.
    async fn exchange(
        &self,
        request: &Request,
        attempt: u32,
        answered: &mut Option<u16>,
    ) -> Result<Envelope, Error> {
        let mut url = format!("{}{}", self.base, request.wire_path());
        let mut builder;
        if request.params_in_query() {
            if !request.form.is_empty() {
                url.push('?');
                url.push_str(&request.form.encode());
            }
            builder = self.client.request(request.method.clone(), &url);
        } else {
            builder = self
                .client
                .request(request.method.clone(), &url)
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(request.form.encode());
        }
        builder = builder
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.timeout);
        tracing::debug!(method = %request.method, path = %request.path(), attempt, "PVE request");
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(request, e))?;
        let status = response.status();
        *answered = Some(status.as_u16());
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
        let body = self.read_body(request, response).await?;
        if status.is_success() {
            return decode_envelope(&body).map_err(|source| Error::Decode {
                target: request.target(&self.host),
                source,
            });
        }
        let (message, errors) = error_details(&body, reason, status);
        Err(Error::Api {
            target: request.target(&self.host),
            status: status.as_u16(),
            message,
            errors,
        })
    }

    /// The body, at most `max_body` bytes (checked against the declared
    /// length first, then while reading).
    async fn read_body(
        &self,
        request: &Request,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, Error> {
        let too_large = || Error::TooLarge {
            target: request.target(&self.host),
            limit: self.max_body,
        };
        let declared = response.content_length().unwrap_or(0);
        if usize::try_from(declared).map_or(true, |n| n > self.max_body) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(request, e))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, request: &Request, source: reqwest::Error) -> Error {
        if source.is_timeout() {
            Error::Timeout {
                target: request.target(&self.host),
                timeout: self.timeout,
            }
        } else {
            Error::Unreachable {
                target: request.target(&self.host),
                source,
            }
        }
    }
}

impl Transport for Http {
    fn host(&self) -> &str {
        &self.host
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Envelope, Error>> {
        Box::pin(self.send_with_retries(request))
    }
}

fn ca_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, Error> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| Error::config_with("cannot read the CA certificate PEM", e))?;
    if certs.is_empty() {
        return Err(Error::config("the CA certificate PEM holds no certificate"));
    }
    Ok(certs)
}

/// Parses `{"data":…,"total":N}`.
pub(crate) fn decode_envelope(body: &[u8]) -> Result<Envelope, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        data: Value,
        #[serde(default, deserialize_with = "super::de::opt_u64")]
        total: Option<u64>,
    }
    let raw: Raw = serde_json::from_slice(body)?;
    Ok(Envelope {
        data: raw.data,
        total: raw.total,
    })
}

/// PVE's message and parameter errors from an error answer. The JSON
/// `message` (8.4) wins; older servers only have the reason phrase.
pub(crate) fn error_details(
    body: &[u8],
    reason: Option<String>,
    status: reqwest::StatusCode,
) -> (String, BTreeMap<String, String>) {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let mut errors = BTreeMap::new();
    if let Some(Value::Object(map)) = json.as_ref().and_then(|j| j.get("errors")) {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.trim_end().to_string(),
                other => other.to_string(),
            };
            errors.insert(k.clone(), text);
        }
    }
    let message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.trim_end().to_string())
        .filter(|m| !m.is_empty())
        .or(reason.filter(|r| !r.is_empty()))
        .or_else(|| status.canonical_reason().map(str::to_string))
        .unwrap_or_else(|| pseudo_status_text(status.as_u16()).to_string());
    (message, errors)
}

/// Texts for AnyEvent::HTTP's pseudo statuses, which pveproxy forwards with
/// an empty body when it cannot reach the target node or daemon.
fn pseudo_status_text(status: u16) -> &'static str {
    match status {
        595 => "errors during connection establishment or proxy handshake (node offline?)",
        596 => "errors during TLS negotiation, request sending or header processing",
        597 => "errors during body receiving or processing",
        598 => "request cancelled",
        599 => "other proxy error",
        _ => "no message",
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn base_urls_default_to_https_8006() {
        for (input, want) in [
            ("pve.lan", "https://pve.lan:8006/api2/json"),
            ("pve.lan:8443", "https://pve.lan:8443/api2/json"),
            ("https://pve.lan", "https://pve.lan:8006/api2/json"),
            (
                "https://127.0.0.2:8006/",
                "https://127.0.0.2:8006/api2/json",
            ),
            ("[::1]:8006", "https://[::1]:8006/api2/json"),
        ] {
            assert_eq!(base_url(input).unwrap().as_str(), want, "{input}");
        }
        assert!(base_url("http://pve.lan").is_err());
        assert!(base_url("https://").is_err());
    }

    #[test]
    fn envelope_keeps_total() {
        let env = decode_envelope(br#"{"total":1,"data":[{"t":"TASK OK","n":1}]}"#).unwrap();
        assert_eq!(env.total, Some(1));
        assert!(env.data.is_array());
        assert!(decode_envelope(b"").is_err());
    }

    #[test]
    fn error_message_prefers_json_then_reason() {
        let body = br#"{"data":null,"message":"VM 100 is running - destroy failed\n"}"#;
        let (m, e) = error_details(
            body,
            Some("ignored".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        assert_eq!(m, "VM 100 is running - destroy failed");
        assert!(e.is_empty());
        let (m, _) = error_details(
            br#"{"data":null}"#,
            Some("unable to create VM 100 - VM 100 already exists on node 'pve'".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        assert!(m.starts_with("unable to create VM 100"));
        let (m, e) = error_details(
            br#"{"errors":{"vmid":"invalid format - value does not look like a valid VM ID\n"},"data":null}"#,
            Some("Parameter verification failed.".into()),
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(m, "Parameter verification failed.");
        assert_eq!(
            e["vmid"],
            "invalid format - value does not look like a valid VM ID"
        );
        let (m, _) = error_details(b"", None, StatusCode::from_u16(595).unwrap());
        assert!(m.contains("connection establishment"), "{m}");
        let (m, _) = error_details(b"", None, StatusCode::UNAUTHORIZED);
        assert_eq!(m, "Unauthorized");
    }
}
