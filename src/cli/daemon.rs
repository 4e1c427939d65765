//! Asking the daemon that runs on this machine, when it holds the store a
//! command would otherwise read (sled admits one process).

use std::path::Path;

use homestak_api::client;
use homestak_api::ready::ReadyInfo;

/// The revision the daemon on `state_dir` last applied of `manifest`, when
/// a daemon runs there and manages it. Only its records are read: PVE is
/// not asked twice. Failures are notes, not errors: the command's own
/// answer stands without it.
pub async fn applied_revision(state_dir: &Path, manifest: &str) -> Option<String> {
    let asked = async {
        let Some(info) = ReadyInfo::read(state_dir)? else {
            return Ok(None);
        };
        let status = match info.client()?.status(Some(manifest), false).await {
            Ok(status) => status,
            // The daemon runs, but this manifest is not one it manages.
            Err(client::Error::Refused { status: 404, .. }) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        Ok::<_, Box<dyn std::error::Error>>(
            status
                .manifests
                .into_iter()
                .find_map(|m| m.record.last_applied)
                .map(|a| a.revision),
        )
    };
    match asked.await {
        Ok(revision) => revision,
        Err(err) => {
            eprintln!(
                "note: cannot ask the daemon what it applied: {}",
                homestak_base::error_chain(err.as_ref())
            );
            None
        }
    }
}
