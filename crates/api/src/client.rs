//! A typed client of a daemon's API, over HTTPS pinned to the daemon's
//! certificate fingerprint (a daemon's certificate is self-signed unless
//! given one). The CLI uses it to ask a running daemon; a parent tier will
//! use it to hand subtrees to its children and follow them.

use std::time::Duration;

use homestak_base::secret::Secret;
use homestak_tls::Fingerprint;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::v1::{
    Endpoint, ErrorBody, EventsResponse, ManifestStatus, PlanTree, ReconcileResponse,
    StatusResponse, SubtreeDeleteResponse, SubtreeRequest, SubtreeResponse,
};

/// A call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be set up (the token is not a header value,
    /// the base URL is not a URL).
    #[error("cannot set up the client of {url}")]
    Setup {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer: refused, reset, timed out, or TLS failed (a certificate
    /// that does not match the pinned fingerprint fails here).
    #[error("{method} {url} got no answer; is the daemon running there?")]
    Unreachable {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon refused the request with one of its error codes.
    #[error("{method} {url}: {status} {code}: {message}")]
    Refused {
        method: &'static str,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The answer is not what this version of the API sends.
    #[error("{method} {url}: the answer ({status}) is not a homestak API answer")]
    Unexpected {
        method: &'static str,
        url: String,
        status: u16,
        #[source]
        source: Option<serde_json::Error>,
    },
}

impl Error {
    /// The HTTP status the daemon answered; `None` when it did not answer
    /// (or the client could not be set up). Tells a refused token (401,
    /// 403) from a daemon that is not there.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } | Error::Unexpected { status, .. } => Some(*status),
            Error::Setup { .. } | Error::Unreachable { .. } => None,
        }
    }

    /// The daemon's error code (`E302`), when it refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A daemon's API, reached at one URL with one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the daemon at `base_url` (`https://10.0.12.1:44443`)
    /// whose certificate has `fingerprint`, calling with `token`.
    pub fn new(base_url: &str, fingerprint: Fingerprint, token: &Secret) -> Result<Client, Error> {
        homestak_tls::install_crypto_provider();
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| Error::Setup {
            url: base_url.to_string(),
            source,
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|e| setup(Box::new(e)))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(homestak_tls::pinned_client_config(fingerprint))
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // Below the daemon's idle timeout (60 s by default): a pooled
            // connection is dropped here before the daemon closes it.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("homestak/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(Box::new(e)))?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// `GET /v1/status`, of one manifest or of all; `observe: false` asks
    /// for the daemon's records only (no fresh look at PVE).
    pub async fn status(
        &self,
        manifest: Option<&str>,
        observe: bool,
    ) -> Result<StatusResponse, Error> {
        let mut query: Vec<(&str, &str)> = manifest.map(|m| ("manifest", m)).into_iter().collect();
        if !observe {
            query.push(("observe", "false"));
        }
        self.call(Endpoint::Status, &query, None::<&()>).await
    }

    /// `GET /v1/status?manifest=NAME`: the one manifest, or `None` when
    /// the daemon holds none of that name (its 404; how a parent learns
    /// that a subtree it deleted is gone).
    pub async fn manifest_status(
        &self,
        name: &str,
        observe: bool,
    ) -> Result<Option<ManifestStatus>, Error> {
        match self.status(Some(name), observe).await {
            Ok(status) => Ok(status.manifests.into_iter().find(|m| m.name == name)),
            Err(Error::Refused { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `GET /v1/events` after `since`, at most `limit`.
    pub async fn events(&self, since: u64, limit: usize) -> Result<EventsResponse, Error> {
        let (since, limit) = (since.to_string(), limit.to_string());
        self.call(
            Endpoint::Events,
            &[("since", since.as_str()), ("limit", limit.as_str())],
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/reconcile`, of one manifest or of all.
    pub async fn reconcile(&self, manifest: Option<&str>) -> Result<ReconcileResponse, Error> {
        let query: Vec<(&str, &str)> = manifest.map(|m| ("manifest", m)).into_iter().collect();
        self.call(Endpoint::Reconcile, &query, None::<&()>).await
    }

    /// `POST /v1/plan`: what converging `request` would do there and below.
    pub async fn plan(&self, request: &SubtreeRequest) -> Result<PlanTree, Error> {
        self.call(Endpoint::Plan, &[], Some(request)).await
    }

    /// `PUT /v1/subtree`.
    pub async fn put_subtree(&self, request: &SubtreeRequest) -> Result<SubtreeResponse, Error> {
        self.call(Endpoint::Subtree, &[], Some(request)).await
    }

    /// `DELETE /v1/subtree/{name}`: asks the daemon to destroy the
    /// subtree it holds under `name` (then forget it).
    pub async fn delete_subtree(&self, name: &str) -> Result<SubtreeDeleteResponse, Error> {
        self.call_at(Endpoint::DeleteSubtree, Some(name), &[], None::<&()>)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        query: &[(&str, &str)],
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        self.call_at(endpoint, None, query, body).await
    }

    /// Calls `endpoint`, with `name` in its path when it has one.
    async fn call_at<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        name: Option<&str>,
        query: &[(&str, &str)],
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let method = endpoint.method();
        let url = self.url(endpoint, name)?;
        let verb = match method {
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "DELETE" => reqwest::Method::DELETE,
            _ => reqwest::Method::GET,
        };
        let mut request = self
            .http
            .request(verb, url.as_str())
            .header(AUTHORIZATION, self.auth.clone())
            .query(query);
        if let Some(body) = body {
            request = request.json(body);
        }
        let url = url.to_string();
        let unreachable = |source| Error::Unreachable {
            method,
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|source| Error::Unexpected {
                method,
                url: url.clone(),
                status,
                source: Some(source),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(Error::Refused {
                method,
                url,
                status,
                code: body.error.code,
                message: body.error.message,
            }),
            Err(_) => Err(Error::Unexpected {
                method,
                url,
                status,
                source: None,
            }),
        }
    }

    /// The URL of `endpoint`, its `{name}` (the last segment of a path
    /// that has one) filled with `name` as one percent-encoded segment;
    /// the daemon refuses a name that needs encoding.
    fn url(&self, endpoint: Endpoint, name: Option<&str>) -> Result<reqwest::Url, Error> {
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| Error::Setup {
            url: self.base.clone(),
            source,
        };
        let path = endpoint.path();
        let (path, named) = match path.strip_suffix("{name}") {
            Some(prefix) => (prefix, true),
            None => (path, false),
        };
        let mut url =
            reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| setup(Box::new(e)))?;
        if let (true, Some(name)) = (named, name) {
            url.path_segments_mut()
                .map_err(|()| setup("the base URL cannot take a path".into()))?
                .pop_if_empty()
                .push(name);
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        let fingerprint = Fingerprint::of_der(b"test");
        Client::new(base, fingerprint, &Secret::new("token")).unwrap()
    }

    #[test]
    fn urls_carry_a_name_as_one_segment() {
        let c = client("https://10.0.12.1:44443/");
        let url = |e, n| c.url(e, n).unwrap().to_string();
        assert_eq!(
            url(Endpoint::Status, None),
            "https://10.0.12.1:44443/v1/status"
        );
        assert_eq!(
            url(Endpoint::DeleteSubtree, Some("hv-subtree")),
            "https://10.0.12.1:44443/v1/subtree/hv-subtree"
        );
        // Never a path of its own: the daemon sees one (refused) segment.
        assert_eq!(
            url(Endpoint::DeleteSubtree, Some("../x")),
            "https://10.0.12.1:44443/v1/subtree/..%2Fx"
        );
        assert!(matches!(
            client("not a url").url(Endpoint::Status, None),
            Err(Error::Setup { .. })
        ));
    }

    #[test]
    fn errors_tell_their_http_status() {
        let refused = Error::Refused {
            method: "DELETE",
            url: "u".into(),
            status: 403,
            code: "E302".into(),
            message: "m".into(),
        };
        assert_eq!(
            (refused.status(), refused.code()),
            (Some(403), Some("E302"))
        );
        let odd = Error::Unexpected {
            method: "GET",
            url: "u".into(),
            status: 502,
            source: None,
        };
        assert_eq!((odd.status(), odd.code()), (Some(502), None));
    }
}
