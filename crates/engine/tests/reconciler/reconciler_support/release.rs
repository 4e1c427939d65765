//! A release on 127.0.0.1 that the site's `image_source` points at, for
//! cases where homestak asks the source how an image ships (`release:` in
//! `case.yaml`). The listed assets answer a GET with 206, anything else
//! with 404; every request is counted by asset name. A listed
//! `<file>.sha256` answers 200 with `sha256sum`'s line for `<file>`, whose
//! digest is [`digest_of`]`(file)`. The simulator's `download-url` still
//! never fetches: the case's sizes are given to it (and digests, when the
//! case lists them under `sim: downloads: sha256:`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

/// The SHA-256 a release's checksum file gives `file`:
/// sha256("homestak-release:" + file), in hex.
pub fn digest_of(file: &str) -> String {
    homestak_base::digest::hex(&homestak_base::digest::sha256(
        format!("homestak-release:{file}").as_bytes(),
    ))
}

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
                if let Some(file) = name.strip_suffix(".sha256")
                    && assets.iter().any(|a| a == name)
                {
                    (StatusCode::OK, format!("{}  {file}\n", digest_of(file))).into_response()
                } else if assets.iter().any(|a| a == name) {
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
