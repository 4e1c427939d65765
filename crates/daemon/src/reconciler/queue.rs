//! The queue: pending jobs, one per manifest at most. Triggers only
//! enqueue; the worker takes them one at a time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;

use homestak_api::{Event, Kind, Reason};

use super::Reconciler;
use crate::reply::ApiError;

#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) name: String,
    pub(super) reason: Reason,
    /// Read every VM's config (the every-Nth-resync deep check).
    pub(super) deep: bool,
}

/// Pending jobs, one per manifest at most.
#[derive(Debug, Default)]
pub(super) struct Queue {
    items: Mutex<VecDeque<Job>>,
    notify: Notify,
}

impl Reconciler {
    /// Queues every managed, unsuspended manifest. Returns the names.
    pub fn enqueue_all(&self, reason: Reason) -> Vec<String> {
        // Every Nth resync reads every VM's config: what the fast path
        // cannot see (network, cloud-init) is found at least that often,
        // and so does the startup run (drift while the daemon was down).
        let deep = self.deep_every > 0
            && match reason {
                Reason::Startup => true,
                Reason::Resync => (self.resyncs.fetch_add(1, Ordering::Relaxed) + 1)
                    .is_multiple_of(self.deep_every),
                _ => false,
            };
        let names: Vec<String> = self
            .read_desired()
            .entries
            .values()
            .filter(|e| !e.suspended)
            .map(|e| e.name.clone())
            .collect();
        for name in &names {
            self.push(Job {
                name: name.clone(),
                reason,
                deep,
            });
        }
        names
    }

    /// Queues one manifest.
    pub fn enqueue(&self, name: &str, reason: Reason) -> Result<(), ApiError> {
        let entry = self.read_desired().entries.get(name).cloned();
        match entry {
            None => Err(ApiError::not_found(format!(
                "Manifest not managed here: {name}"
            ))),
            Some(e) if e.suspended => Err(ApiError::new(
                409,
                "E103",
                format!("Manifest '{name}' is suspended in controller.yaml"),
            )),
            Some(_) => {
                self.push(Job {
                    name: name.to_string(),
                    reason,
                    deep: false,
                });
                Ok(())
            }
        }
    }

    fn push(&self, job: Job) {
        let mut items = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
        match items.iter_mut().find(|j| j.name == job.name) {
            // Already queued: keep its place, keep the stronger reason.
            Some(queued) => {
                queued.reason = queued.reason.max(job.reason);
                queued.deep |= job.deep;
            }
            None => {
                self.events.emit(
                    Event::info(Kind::ReconcileQueued, job.reason.as_str()).manifest(&job.name),
                );
                items.push_back(job);
            }
        }
        self.metrics
            .queue_depth
            .store(items.len() as u64, Ordering::Relaxed);
        drop(items);
        self.queue.notify.notify_one();
    }

    pub(super) async fn pop(&self) -> Job {
        loop {
            {
                let mut items = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(job) = items.pop_front() {
                    self.metrics
                        .queue_depth
                        .store(items.len() as u64, Ordering::Relaxed);
                    return job;
                }
            }
            self.queue.notify.notified().await;
        }
    }

    /// Jobs waiting.
    pub fn queue_depth(&self) -> usize {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
