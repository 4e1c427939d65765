//! Subtrees a parent tier hands over (`PUT` and `DELETE
//! /v1/subtree/{name}`): kept in the store, counted by generation, and
//! forgotten once their destroy run converged.

use homestak_api::{Event, Kind, Reason, Subtree};
use homestak_engine::store::Durability;

use super::{Reconciler, error_chain};
use crate::reply::ApiError;
use crate::source::short;

impl Reconciler {
    /// Stores a delegated subtree (replacing one of its name, even one
    /// being destroyed) and queues it. Returns the manifest's new
    /// generation.
    pub fn accept_subtree(&self, subtree: Subtree) -> Result<u64, ApiError> {
        let name = subtree.name.clone();
        let _one = self
            .subtree_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.refuse_git_managed(&name)?;
        let revision = subtree.revision.clone();
        let from = subtree.from.clone();
        let subtree = Subtree {
            destroy: false,
            ..subtree
        };
        self.keep_subtree(&subtree)?;
        self.reload_entries();
        let generation = self.bump_generation(&name)?;
        self.events.emit(
            Event::info(
                Kind::SubtreeAccepted,
                format!("subtree {} from '{from}'", short(&revision)),
            )
            .manifest(&name),
        );
        self.enqueue(&name, Reason::Subtree)?;
        Ok(generation)
    }

    /// Marks the delegated subtree `name` for destruction and queues its
    /// destroy run (again, if one failed). Returns the manifest's new
    /// generation.
    pub fn destroy_subtree(&self, name: &str, from: &str) -> Result<u64, ApiError> {
        let _one = self
            .subtree_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.refuse_git_managed(name)?;
        let kept = self.store.get_subtree(name).map_err(|e| {
            tracing::error!(error = %error_chain(&e), manifest = name, "cannot read a subtree");
            ApiError::internal("Cannot read the subtree")
        })?;
        let Some(subtree) = kept else {
            return Err(ApiError::not_found(format!("No subtree here: {name}")));
        };
        if !subtree.destroy {
            self.keep_subtree(&Subtree {
                destroy: true,
                ..subtree
            })?;
            self.reload_entries();
        }
        let generation = self.bump_generation(name)?;
        self.events.emit(
            Event::info(
                Kind::SubtreeDestroyRequested,
                format!("destroy asked by '{from}'"),
            )
            .manifest(name),
        );
        self.enqueue(name, Reason::Subtree)?;
        Ok(generation)
    }

    fn refuse_git_managed(&self, name: &str) -> Result<(), ApiError> {
        if self.is_git_managed(name) {
            return Err(ApiError::new(
                409,
                "E103",
                format!("Manifest '{name}' is managed from this tier's site-config"),
            ));
        }
        Ok(())
    }

    fn keep_subtree(&self, subtree: &Subtree) -> Result<(), ApiError> {
        self.store
            .put_subtree(subtree, Durability::Flush)
            .map_err(|e| {
                tracing::error!(error = %error_chain(&e), "cannot store a subtree");
                ApiError::internal("Cannot store the subtree")
            })
    }

    /// Durably counts a parent's request; returns the new generation.
    fn bump_generation(&self, name: &str) -> Result<u64, ApiError> {
        self.store
            .update_manifest(name, Durability::Flush, &mut |r| {
                r.generation = r.generation.saturating_add(1);
            })
            .map(|r| r.generation)
            .map_err(|e| {
                tracing::error!(error = %error_chain(&e), manifest = name, "cannot record a request");
                ApiError::internal("Cannot record the request")
            })
    }

    /// Forgets a subtree whose destroy run converged, unless a request
    /// came after the run started (its own run is queued).
    pub(super) fn forget_destroyed(&self, name: &str, generation: u64) {
        let _one = self
            .subtree_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.record(name).generation != generation {
            return;
        }
        match self.store.get_subtree(name) {
            Ok(Some(subtree)) if subtree.destroy => {}
            Ok(_) => return,
            Err(err) => {
                tracing::error!(error = %error_chain(&err), manifest = name, "cannot read a destroyed subtree; it is kept");
                return;
            }
        }
        // Kept on failure: the next resync destroys (nothing) and tries again.
        if let Err(err) = self.store.delete_subtree(name, Durability::Flush) {
            tracing::error!(error = %error_chain(&err), manifest = name, "cannot forget a destroyed subtree");
            return;
        }
        self.reload_entries();
        tracing::info!(manifest = name, "destroyed subtree forgotten");
        self.events
            .emit(Event::info(Kind::SubtreeForgotten, "destroyed").manifest(name));
    }
}
