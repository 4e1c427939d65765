//! `GET /v1/status`: the managed manifests with their records and, when
//! asked, a fresh drift report from the engine.

use std::sync::Arc;

use homestak_api::ManifestRecord;
use homestak_api::v1::{ManifestStatus, StatusResponse};

use super::{Entry, Reconciler, error_chain};
use crate::engine::StatusRequest;
use crate::reply::ApiError;

impl Reconciler {
    /// `GET /v1/status`: every managed manifest (or `only`), with its
    /// records and, when `observe`, a fresh drift report.
    pub async fn status(
        &self,
        only: Option<&str>,
        observe: bool,
    ) -> Result<StatusResponse, ApiError> {
        let (entries, error, revision) = {
            let d = self.read_desired();
            (
                d.entries.clone(),
                d.error.clone(),
                d.snapshot.as_ref().map(|s| s.revision.clone()),
            )
        };
        if let Some(name) = only
            && !entries.contains_key(name)
        {
            return Err(ApiError::not_found(format!(
                "Manifest not managed here: {name}"
            )));
        }
        let mut manifests = Vec::new();
        for entry in entries
            .values()
            .filter(|e| only.is_none_or(|n| n == e.name))
        {
            let record = self.record(&entry.name);
            manifests.push(self.entry_status(entry, record, observe).await);
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(StatusResponse {
            source: self.source.mode().as_str().to_string(),
            revision,
            source_error: error,
            queue_depth: self.queue_depth() as u64,
            running,
            manifests,
        })
    }

    async fn entry_status(
        &self,
        entry: &Entry,
        record: ManifestRecord,
        observe: bool,
    ) -> ManifestStatus {
        let (mut status, mut error) = (None, None);
        match (&entry.manifest, &entry.host) {
            // Records only: PVE is not asked.
            _ if !observe => {}
            (Err(problem), _) => error = Some(problem.clone()),
            (Ok(_), None) => error = Some("no target host".to_string()),
            (Ok(manifest), Some(host)) => {
                let request = StatusRequest {
                    manifest: Arc::clone(manifest),
                    host: host.clone(),
                    site: self.site.get(),
                };
                match self.engine.status(request).await {
                    Ok(report) => {
                        self.metrics.observed(&entry.name, &report);
                        status = Some(report);
                    }
                    Err(err) => error = Some(error_chain(&err)),
                }
            }
        }
        ManifestStatus {
            name: entry.name.clone(),
            origin: entry.origin,
            host: entry.host.clone(),
            drift: entry.drift,
            suspended: entry.suspended,
            revision: entry.revision.clone(),
            in_sync: status.as_ref().map(|s| s.in_sync),
            record,
            destroying: entry.destroying,
            status,
            error,
        }
    }
}
