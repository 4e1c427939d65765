//! What runs learned about the PVE storages in `/metrics`: PVE
//! storage-lock timeouts (each was retried) and the per-storage limit the
//! executor ended a run with (see `homestak_engine::executor::storage`).
//!
//! Labels stay bounded: storage ids come from the site-config's hosts.

use homestak_engine::executor::Report;

use super::Family;

/// Storage counters and gauges, fed by each run's report.
#[derive(Debug)]
pub struct StorageMetrics {
    lock_timeouts: Family,
    concurrency: Family,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        StorageMetrics {
            lock_timeouts: Family::counter(
                "homestak_storage_lock_timeouts_total",
                "PVE storage-lock timeouts seen by runs (each retried, never a failure), by storage.",
                &["storage"],
            ),
            concurrency: Family::gauge(
                "homestak_storage_concurrency",
                "Steps allowed on the storage at once, as the last run using it learned or was given.",
                &["storage"],
            ),
        }
    }
}

impl StorageMetrics {
    /// Counts a run's lock timeouts and keeps its limits.
    pub fn ran(&self, report: &Report) {
        for (storage, stats) in &report.storage {
            self.lock_timeouts
                .add(&[storage], stats.lock_timeouts as f64);
            self.concurrency.set(&[storage], stats.limit as f64);
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        self.lock_timeouts.render(out);
        self.concurrency.render(out);
    }

    /// The current value of a series, for tests.
    #[cfg(test)]
    pub(super) fn get(&self, timeouts: bool, storage: &str) -> f64 {
        if timeouts {
            self.lock_timeouts.get(&[storage])
        } else {
            self.concurrency.get(&[storage])
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use homestak_engine::executor::StorageStats;

    use super::*;

    fn report(limit: usize, lock_timeouts: u64) -> Report {
        Report {
            nodes: BTreeMap::new(),
            phases: Vec::new(),
            cancelled: false,
            storage: BTreeMap::from([(
                "local-zfs".to_string(),
                StorageStats {
                    limit,
                    lock_timeouts,
                },
            )]),
        }
    }

    #[test]
    fn timeouts_add_up_and_the_limit_is_the_last_runs() {
        let metrics = StorageMetrics::default();
        metrics.ran(&report(6, 2));
        metrics.ran(&report(4, 1));
        assert_eq!(metrics.get(true, "local-zfs"), 3.0);
        assert_eq!(metrics.get(false, "local-zfs"), 4.0);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("homestak_storage_lock_timeouts_total{storage=\"local-zfs\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("homestak_storage_concurrency{storage=\"local-zfs\"} 4"),
            "{out}"
        );
    }
}
