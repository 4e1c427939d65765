//! A release on 127.0.0.1 that the site's `image_source` points at, for
//! cases where homestak asks the source how an image ships (`release:` in
//! `case.yaml`). The listed assets answer a GET with 206, anything else
//! with 404; every request is counted by asset name. The simulator's
//! `download-url` still never fetches: the case's sizes are given to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

/// Requests by asset name.
type Hits = Arc<Mutex<BTreeMap<String, u64>>>;

/// A running release.
pub struct Release {
    /// `http://127.0.0.1:PORT/images/`
    pub base_url: String,
    hits: Hits,
    server: tokio::task::JoinHandle<()>,
}

impl Release {
    /// Serves `assets` (names under `/images/`) on a free loopback port.
    pub async fn start(assets: impl IntoIterator<Item = String>) -> anyhow::Result<Release> {
        let assets: Arc<Vec<String>> = Arc::new(assets.into_iter().collect());
        let hits = Hits::default();
        let seen = hits.clone();
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (assets, seen) = (assets.clone(), seen.clone());
            async move {
                let name = uri.path().strip_prefix("/images/").unwrap_or(uri.path());
                if let Ok(mut hits) = seen.lock() {
                    *hits.entry(name.to_string()).or_default() += 1;
                }
                if assets.iter().any(|a| a == name) {
                    (StatusCode::PARTIAL_CONTENT, "Q").into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the release's port")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Release {
            base_url: format!("http://{addr}/images/"),
            hits,
            server,
        })
    }

    /// Requests since the start, by asset name.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.server.abort();
    }
}
