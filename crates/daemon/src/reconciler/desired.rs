//! Desired state: the managed manifests at the current revision, from the
//! site-config's snapshot and the subtrees parents handed over.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};

use homestak_api::v1::Origin;
use homestak_api::{DriftPolicy, Event, Kind};
use homestak_core::model::{Manifest, Origin as ManifestOrigin};

use super::{Desired, Entry, Reconciler, error_chain};
use crate::source::{self, Snapshot, short};

/// A manifest the daemon manages is known by one name: its records, events,
/// metrics and `homestak status` all use it, and so do the marks on its
/// VMs. So `manifests/NAME.yaml` must say `name: NAME`.
pub(super) fn named_like_its_file(
    file: &str,
    manifest: Arc<Manifest>,
) -> Result<Arc<Manifest>, String> {
    if manifest.name() == file {
        Ok(manifest)
    } else {
        Err(format!(
            "manifests/{file}.yaml names itself '{}'; the daemon knows a manifest by one name, \
             so rename the file to {}.yaml or set `name: {file}`",
            manifest.name(),
            manifest.name()
        ))
    }
}

impl Reconciler {
    /// Re-reads desired state. `Ok(true)` when the revision changed (or
    /// this is the first read).
    pub async fn refresh(&self) -> Result<bool, source::Error> {
        let snapshot = match self.source.read(&self.extra_manifests).await {
            Ok(s) => s,
            Err(err) => {
                let message = error_chain(&err);
                let changed = {
                    let mut d = self.write_desired();
                    let changed = d.error.as_deref() != Some(message.as_str());
                    d.error = Some(message.clone());
                    changed
                };
                if changed {
                    tracing::warn!(error = %message, "cannot read desired state");
                    self.events
                        .emit(Event::error(Kind::SourceError, message.clone()));
                }
                return Err(err);
            }
        };
        let mut d = self.write_desired();
        let changed = d.snapshot.as_ref().map(|s| &s.revision) != Some(&snapshot.revision);
        if changed {
            self.events.emit(Event::info(
                Kind::Revision,
                format!(
                    "desired state at {} ({})",
                    short(&snapshot.revision),
                    self.source.mode().as_str()
                ),
            ));
        }
        d.error = None;
        d.snapshot = Some(snapshot);
        d.entries = self.entries_of(d.snapshot.as_ref());
        let entries = &d.entries;
        self.metrics
            .retain_manifests(|name| entries.contains_key(name));
        Ok(changed)
    }

    fn entries_of(&self, snapshot: Option<&Snapshot>) -> BTreeMap<String, Entry> {
        let mut entries = BTreeMap::new();
        if let Some(s) = snapshot {
            let policies = s
                .controller
                .effective(&self.extra_manifests, self.host_override.as_deref());
            for (name, policy) in policies {
                let manifest = s
                    .manifests
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| Err(format!("manifest '{name}' was not read")))
                    .and_then(|m| named_like_its_file(&name, m));
                entries.insert(
                    name.clone(),
                    Entry {
                        name,
                        origin: Origin::Git,
                        host: policy.host,
                        drift: policy.drift,
                        suspended: policy.suspend,
                        revision: s.revision.clone(),
                        manifest,
                        destroying: false,
                    },
                );
            }
        }
        let subtrees = self.store.list_subtrees().unwrap_or_else(|err| {
            tracing::error!(error = %error_chain(&err), "cannot read the subtrees kept in the store");
            Vec::new()
        });
        for sub in subtrees {
            let name = sub.name.clone();
            if entries.contains_key(&name) {
                continue;
            }
            let manifest = Manifest::from_value(&sub.manifest, ManifestOrigin::Json)
                .map(Arc::new)
                .map_err(|e| e.located().to_string());
            entries.insert(
                name.clone(),
                Entry {
                    name,
                    origin: Origin::Delegated,
                    host: self.host_override.clone().or(Some(sub.host)),
                    drift: DriftPolicy::Correct,
                    suspended: false,
                    revision: sub.revision,
                    manifest,
                    destroying: sub.destroy,
                },
            );
        }
        entries
    }

    /// The managed manifests now.
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        self.read_desired().entries.clone()
    }

    /// True when `name` is a git-managed manifest.
    pub fn is_git_managed(&self, name: &str) -> bool {
        self.read_desired()
            .entries
            .get(name)
            .is_some_and(|e| e.origin == Origin::Git)
    }

    /// Re-reads the subtrees into the entries.
    pub(super) fn reload_entries(&self) {
        let mut d = self.write_desired();
        d.entries = self.entries_of(d.snapshot.as_ref());
        let entries = &d.entries;
        self.metrics
            .retain_manifests(|name| entries.contains_key(name));
    }

    pub(super) fn read_desired(&self) -> RwLockReadGuard<'_, Desired> {
        self.desired.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write_desired(&self) -> RwLockWriteGuard<'_, Desired> {
        self.desired.write().unwrap_or_else(|e| e.into_inner())
    }
}
