//! Per-storage limits: how many steps that allocate or free volumes run on
//! one storage at once.
//!
//! PVE serializes allocations on a storage under its lock
//! (`cluster_lock_storage`, about 10 s before a waiter gives up); the
//! lock is held for the allocation only, not for a create's whole task
//! (the import copy runs outside it). How many creates keep the lock busy
//! without queueing past its timeout depends on the storage, so the limit
//! is learned, AIMD style, from how long a step holds its slot:
//! - a slot's sample runs from its admission to its step's `Done` (across
//!   requeues); the shortest seen per step kind is that step's uncontended
//!   time on the storage;
//! - a sample longer than that by more than min(uncontended, 5 s), and by
//!   at least 50 ms, is a long wait (5 s: half PVE's lock timeout; the
//!   relative part keeps it right at the simulator's scaled times; the
//!   floor keeps a 1 ms look from halving on jitter): the limit halves
//!   (floor 1);
//! - a lock timeout halves it too;
//! - any other success adds 1/limit (+1 per window of `limit` successes),
//!   up to the ceiling.
//!
//! A burst of long waits or timeouts halves once: only a slot taken after
//! the last decrease can decrease again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use homestak_api::step::Step;

/// Above this excess over the uncontended time a wait is long, whatever
/// the uncontended time: half PVE's storage-lock timeout.
const LONG_WAIT_MAX: Duration = Duration::from_secs(5);
/// Below this excess no wait is long: a step that only looked (an image
/// already there, about 1 ms) would otherwise halve on scheduler jitter.
const LONG_WAIT_MIN: Duration = Duration::from_millis(50);

/// How the per-storage limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerStorage {
    /// Learned per storage, starting at `initial` (or the value learned by
    /// an earlier run), never above `ceiling`.
    Learn { initial: usize, ceiling: usize },
    /// This many per storage, whatever happens.
    Fixed(usize),
}

impl Default for PerStorage {
    fn default() -> Self {
        PerStorage::Learn {
            initial: 2,
            ceiling: 16,
        }
    }
}

/// One storage at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// The limit the run ended with (what the next run starts from).
    pub limit: usize,
    /// PVE storage-lock timeouts seen (each retried).
    pub lock_timeouts: u64,
}

/// A slot a step holds on a storage, across its requeues.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) storage: String,
    since: Instant,
    /// The storage's decrease count when the slot was taken.
    epoch: u64,
}

/// One storage's limit and what it is learned from.
#[derive(Debug)]
struct Limit {
    /// Fractional, so additive increase can add 1/limit per success.
    value: f64,
    used: usize,
    /// Decreases so far.
    epoch: u64,
    /// Shortest sample per step kind: its uncontended time.
    fastest: HashMap<Step, Duration>,
    lock_timeouts: u64,
}

impl Limit {
    fn allowed(&self) -> usize {
        (self.value.floor() as usize).max(1)
    }
}

/// Every storage's limit in one run.
#[derive(Debug)]
pub(super) struct Storages {
    mode: PerStorage,
    /// Limits learned by earlier runs, by storage.
    learned: BTreeMap<String, usize>,
    by_id: HashMap<String, Limit>,
}

impl Storages {
    pub(super) fn new(mode: PerStorage, learned: BTreeMap<String, usize>) -> Storages {
        Storages {
            mode,
            learned,
            by_id: HashMap::new(),
        }
    }

    fn ceiling(&self) -> usize {
        match self.mode {
            PerStorage::Learn { ceiling, .. } => ceiling.max(1),
            PerStorage::Fixed(n) => n.max(1),
        }
    }

    fn limit(&mut self, storage: &str) -> &mut Limit {
        let start = match self.mode {
            PerStorage::Fixed(n) => n,
            PerStorage::Learn { initial, .. } => {
                self.learned.get(storage).copied().unwrap_or(initial)
            }
        }
        .clamp(1, self.ceiling());
        self.by_id
            .entry(storage.to_string())
            .or_insert_with(|| Limit {
                value: start as f64,
                used: 0,
                epoch: 0,
                fastest: HashMap::new(),
                lock_timeouts: 0,
            })
    }

    /// A slot on `storage`, if its limit allows one more.
    pub(super) fn take(&mut self, storage: &str, now: Instant) -> Option<Slot> {
        let limit = self.limit(storage);
        if limit.used >= limit.allowed() {
            return None;
        }
        limit.used += 1;
        Some(Slot {
            storage: storage.to_string(),
            since: now,
            epoch: limit.epoch,
        })
    }

    /// `step` is done: frees its slot and learns from how long it held it.
    pub(super) fn done(&mut self, slot: Slot, step: Step, now: Instant) {
        let learn = matches!(self.mode, PerStorage::Learn { .. });
        let ceiling = self.ceiling() as f64;
        let limit = self.free(&slot);
        if !learn {
            return;
        }
        let took = now.saturating_duration_since(slot.since);
        let fastest = *limit
            .fastest
            .entry(step)
            .and_modify(|f| *f = (*f).min(took))
            .or_insert(took);
        let excess = took.saturating_sub(fastest);
        if excess > fastest.min(LONG_WAIT_MAX).max(LONG_WAIT_MIN) {
            decrease(limit, &slot);
        } else {
            limit.value = (limit.value + 1.0 / limit.value).min(ceiling);
        }
    }

    /// PVE timed out waiting for the lock of `storage`: counted, and the
    /// slot (if the step held one on it) freed with a decrease. The step
    /// takes a slot again when it is retried.
    pub(super) fn lock_timeout(&mut self, storage: &str, slot: Option<Slot>) {
        let learn = matches!(self.mode, PerStorage::Learn { .. });
        self.limit(storage).lock_timeouts += 1;
        if let Some(slot) = slot {
            let limit = self.free(&slot);
            if learn {
                decrease(limit, &slot);
            }
        }
    }

    /// Frees `slot` without learning (the step failed or was lost).
    pub(super) fn release(&mut self, slot: &Slot) {
        self.free(slot);
    }

    fn free(&mut self, slot: &Slot) -> &mut Limit {
        let limit = self.limit(&slot.storage);
        limit.used = limit.used.saturating_sub(1);
        limit
    }

    /// Where each storage used in the run stands.
    pub(super) fn stats(&self) -> BTreeMap<String, StorageStats> {
        self.by_id
            .iter()
            .map(|(id, l)| {
                let stats = StorageStats {
                    limit: l.allowed(),
                    lock_timeouts: l.lock_timeouts,
                };
                (id.clone(), stats)
            })
            .collect()
    }

    /// The current limit of `storage`.
    #[cfg(test)]
    pub(super) fn allowed(&mut self, storage: &str) -> usize {
        self.limit(storage).allowed()
    }
}

/// Halves the limit (floor 1), once per window: a slot taken before the
/// last decrease does not decrease again.
fn decrease(limit: &mut Limit, slot: &Slot) {
    if slot.epoch == limit.epoch {
        limit.value = (limit.value / 2.0).floor().max(1.0);
        limit.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn learn(initial: usize, ceiling: usize) -> Storages {
        Storages::new(PerStorage::Learn { initial, ceiling }, BTreeMap::new())
    }

    /// Takes a slot and finishes it `took` later.
    fn sample(s: &mut Storages, took: Duration) {
        let t0 = Instant::now();
        let slot = s.take("s", t0).unwrap();
        s.done(slot, Step::CreateVm, t0 + took);
    }

    #[test]
    fn short_waits_add_one_per_window_up_to_the_ceiling() {
        let mut s = learn(2, 4);
        sample(&mut s, 100 * MS);
        // 2 + 1/2: still 2 slots.
        assert_eq!(s.allowed("s"), 2);
        sample(&mut s, 100 * MS);
        // 2.5 + 1/2.5 = 2.9, then 3.24: 3 after a window of about 2.
        assert_eq!(s.allowed("s"), 2);
        sample(&mut s, 150 * MS);
        assert_eq!(s.allowed("s"), 3);
        for _ in 0..50 {
            sample(&mut s, 120 * MS);
        }
        assert_eq!(s.allowed("s"), 4, "capped at the ceiling");
    }

    #[test]
    fn a_long_wait_halves_once_per_window_and_never_below_one() {
        let mut s = learn(8, 16);
        sample(&mut s, 100 * MS);
        let t0 = Instant::now();
        // A burst: three slots taken together all wait long.
        let slots: Vec<Slot> = (0..3).map(|_| s.take("s", t0).unwrap()).collect();
        for slot in slots {
            s.done(slot, Step::CreateVm, t0 + 1000 * MS);
        }
        assert_eq!(s.allowed("s"), 4, "one halving for the burst");
        for _ in 0..5 {
            sample(&mut s, 1000 * MS);
        }
        assert_eq!(s.allowed("s"), 1, "floor 1");
    }

    #[test]
    fn the_long_wait_threshold_is_at_most_five_seconds() {
        let mut s = learn(8, 16);
        sample(&mut s, Duration::from_secs(20));
        // 6 s over a 20 s uncontended time: long, though less than 20 s.
        sample(&mut s, Duration::from_secs(26));
        assert_eq!(s.allowed("s"), 4);
    }

    #[test]
    fn lock_timeouts_halve_and_are_counted() {
        let mut s = learn(6, 16);
        let t0 = Instant::now();
        let a = s.take("s", t0).unwrap();
        let b = s.take("s", t0).unwrap();
        s.lock_timeout("s", Some(a));
        s.lock_timeout("s", Some(b));
        // A timeout on a step without a slot there is counted only.
        s.lock_timeout("s", None);
        assert_eq!(s.allowed("s"), 3);
        assert_eq!(
            s.stats()["s"],
            StorageStats {
                limit: 3,
                lock_timeouts: 3
            }
        );
    }

    #[test]
    fn jitter_on_a_quick_look_is_no_long_wait() {
        let mut s = learn(2, 16);
        // An image already there: 1 ms, then 40 ms of scheduler jitter.
        sample(&mut s, MS);
        sample(&mut s, 40 * MS);
        assert_eq!(s.allowed("s"), 2, "jitter under 50 ms must not halve");
        sample(&mut s, 200 * MS);
        assert_eq!(s.allowed("s"), 1, "a 199 ms excess is a long wait");
    }

    #[test]
    fn a_fixed_limit_never_moves_and_bounds_slots() {
        let mut s = Storages::new(PerStorage::Fixed(2), BTreeMap::new());
        let t0 = Instant::now();
        let a = s.take("s", t0).unwrap();
        let _b = s.take("s", t0).unwrap();
        assert!(s.take("s", t0).is_none());
        s.lock_timeout("s", Some(a));
        assert_eq!(s.allowed("s"), 2);
        for _ in 0..10 {
            let slot = s.take("s", t0).unwrap();
            s.done(slot, Step::CreateVm, t0 + 10 * MS);
        }
        assert_eq!(s.allowed("s"), 2);
    }

    #[test]
    fn a_learned_limit_is_the_start_within_the_ceiling() {
        let learned = BTreeMap::from([("s".to_string(), 9), ("big".to_string(), 99)]);
        let mut s = Storages::new(
            PerStorage::Learn {
                initial: 2,
                ceiling: 16,
            },
            learned,
        );
        assert_eq!(s.allowed("s"), 9);
        assert_eq!(s.allowed("big"), 16);
        assert_eq!(s.allowed("new"), 2);
    }
}
