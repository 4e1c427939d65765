//! Injected faults: error answers, dropped connections, failed tasks and
//! slow or dead guest agents, globally or per VM, drawn from one seeded RNG
//! so a sequential client sees the same faults for the same `--seed`.
//!
//! Request faults strike at one of two moments: *before* the work (the
//! handler never runs: nothing changed) or *after* it (the handler ran, a
//! create's task is started, but the client gets no answer or an error), the
//! way a proxy timeout or a dropped connection looks to a real client.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Fault rates (each a probability in 0..=1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRates {
    /// GET requests answered with `error_status`.
    pub read_error_rate: f64,
    /// POST/PUT/DELETE requests answered with `error_status`.
    pub write_error_rate: f64,
    /// Status of injected errors: 500, 503, or pveproxy's 595/596.
    pub error_status: u16,
    /// Requests whose connection is dropped without an answer, before the
    /// work is done.
    pub reset_rate: f64,
    /// Requests whose connection is dropped without an answer after the
    /// work is done (the change is made; the client cannot know).
    pub reset_after_rate: f64,
    /// GET requests answered with `error_status` after the work is done.
    pub read_error_after_rate: f64,
    /// POST/PUT/DELETE requests answered with `error_status` after the work
    /// is done (a create's task runs on).
    pub write_error_after_rate: f64,
    /// Tasks that end with an error instead of doing their work.
    pub task_failure_rate: f64,
    /// Started VMs whose guest agent never answers.
    pub agent_never_ready_rate: f64,
    /// Multiplies the agent boot time (2.0 = twice as slow).
    pub agent_delay_factor: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            read_error_rate: 0.0,
            write_error_rate: 0.0,
            error_status: 500,
            reset_rate: 0.0,
            reset_after_rate: 0.0,
            read_error_after_rate: 0.0,
            write_error_after_rate: 0.0,
            task_failure_rate: 0.0,
            agent_never_ready_rate: 0.0,
            agent_delay_factor: 1.0,
        }
    }
}

impl FaultRates {
    /// Refuses rates outside 0..=1 and unknown statuses.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("read_error_rate", self.read_error_rate),
            ("write_error_rate", self.write_error_rate),
            ("reset_rate", self.reset_rate),
            ("reset_after_rate", self.reset_after_rate),
            ("read_error_after_rate", self.read_error_after_rate),
            ("write_error_after_rate", self.write_error_after_rate),
            ("task_failure_rate", self.task_failure_rate),
            ("agent_never_ready_rate", self.agent_never_ready_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if !matches!(self.error_status, 500 | 502 | 503 | 595 | 596) {
            return Err(format!(
                "error_status must be 500, 502, 503, 595 or 596, got {}",
                self.error_status
            ));
        }
        if !(self.agent_delay_factor.is_finite() && self.agent_delay_factor >= 0.0) {
            return Err("agent_delay_factor must be a number ≥ 0".into());
        }
        Ok(())
    }
}

/// What an injected request fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFault {
    /// Close the connection without an answer.
    Reset,
    /// Answer with this status.
    Error(u16),
}

/// How many faults were injected since the simulator started, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    /// Error answers before the work (reads and writes).
    pub read_errors: u64,
    pub write_errors: u64,
    /// Connections dropped before the work.
    pub resets: u64,
    /// Connections dropped after the work.
    pub resets_after: u64,
    /// Error answers after the work (reads and writes).
    pub read_errors_after: u64,
    pub write_errors_after: u64,
    /// Tasks made to fail.
    pub failed_tasks: u64,
}

impl Injected {
    /// Every injected fault.
    pub fn total(&self) -> u64 {
        self.read_errors
            + self.write_errors
            + self.resets
            + self.resets_after
            + self.read_errors_after
            + self.write_errors_after
            + self.failed_tasks
    }
}

/// How a VM's guest agent behaves after a start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentFault {
    pub never_ready: bool,
    pub delay_factor: f64,
}

/// The fault state of one simulator.
#[derive(Debug)]
pub struct Faults {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    global: FaultRates,
    per_vm: BTreeMap<u32, FaultRates>,
    rng: StdRng,
    injected: Injected,
}

impl Faults {
    pub fn new(global: FaultRates, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Faults {
            inner: Mutex::new(Inner {
                global,
                per_vm: BTreeMap::new(),
                rng,
                injected: Injected::default(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn global(&self) -> FaultRates {
        self.with(|i| i.global.clone())
    }

    pub fn set_global(&self, rates: FaultRates) {
        self.with(|i| i.global = rates);
    }

    pub fn per_vm(&self) -> BTreeMap<u32, FaultRates> {
        self.with(|i| i.per_vm.clone())
    }

    pub fn set_vm(&self, vmid: u32, rates: Option<FaultRates>) {
        self.with(|i| match rates {
            Some(r) => {
                i.per_vm.insert(vmid, r);
            }
            None => {
                i.per_vm.remove(&vmid);
            }
        });
    }

    /// Decides whether a request (about `vmid`, if any) fails before its
    /// work is done.
    pub fn request(&self, write: bool, vmid: Option<u32>) -> Option<RequestFault> {
        self.with(|i| {
            let rates = i.rates(vmid);
            if i.draw(rates.reset_rate) {
                i.injected.resets += 1;
                return Some(RequestFault::Reset);
            }
            let rate = if write {
                rates.write_error_rate
            } else {
                rates.read_error_rate
            };
            if !i.draw(rate) {
                return None;
            }
            if write {
                i.injected.write_errors += 1;
            } else {
                i.injected.read_errors += 1;
            }
            Some(RequestFault::Error(rates.error_status))
        })
    }

    /// Decides whether the answer to a request whose work is done is lost:
    /// the connection dropped, or an error in place of the answer.
    pub fn answer(&self, write: bool, vmid: Option<u32>) -> Option<RequestFault> {
        self.with(|i| {
            let rates = i.rates(vmid);
            if i.draw(rates.reset_after_rate) {
                i.injected.resets_after += 1;
                return Some(RequestFault::Reset);
            }
            let rate = if write {
                rates.write_error_after_rate
            } else {
                rates.read_error_after_rate
            };
            if !i.draw(rate) {
                return None;
            }
            if write {
                i.injected.write_errors_after += 1;
            } else {
                i.injected.read_errors_after += 1;
            }
            Some(RequestFault::Error(rates.error_status))
        })
    }

    /// Decides whether a task of `vmid` fails.
    pub fn task_fails(&self, vmid: Option<u32>) -> bool {
        self.with(|i| {
            let rate = i.rates(vmid).task_failure_rate;
            let fails = i.draw(rate);
            if fails {
                i.injected.failed_tasks += 1;
            }
            fails
        })
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Injected {
        self.with(|i| i.injected)
    }

    /// Decides how the agent of `vmid` behaves after this start.
    pub fn agent(&self, vmid: u32) -> AgentFault {
        self.with(|i| {
            let rates = i.rates(Some(vmid));
            let never_ready = i.draw(rates.agent_never_ready_rate);
            AgentFault {
                never_ready,
                delay_factor: rates.agent_delay_factor,
            }
        })
    }

    /// A random u64 from the same seeded stream (MACs, UUIDs, secrets are
    /// drawn elsewhere from the OS; this is for reproducible choices).
    pub fn draw(&self) -> u64 {
        self.with(|i| i.rng.random())
    }
}

impl Inner {
    /// The rates that apply to `vmid`: its own, else the global ones.
    fn rates(&self, vmid: Option<u32>) -> FaultRates {
        vmid.and_then(|v| self.per_vm.get(&v))
            .unwrap_or(&self.global)
            .clone()
    }

    /// One draw against `rate`; no draw at all for a zero rate, so adding
    /// a kind of fault leaves the stream of the others as it was.
    fn draw(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_faults_repeat() {
        let rates = FaultRates {
            read_error_rate: 0.5,
            ..FaultRates::default()
        };
        let a = Faults::new(rates.clone(), Some(7));
        let b = Faults::new(rates, Some(7));
        let seq_a: Vec<_> = (0..64).map(|_| a.request(false, None)).collect();
        let seq_b: Vec<_> = (0..64).map(|_| b.request(false, None)).collect();
        assert_eq!(seq_a, seq_b);
        assert!(seq_a.contains(&Some(RequestFault::Error(500))));
        assert!(seq_a.contains(&None));
        // Writes are untouched by the read rate.
        assert!((0..64).all(|_| a.request(true, None).is_none()));
    }

    #[test]
    fn answers_are_lost_only_after_the_work_and_are_counted() {
        let rates = FaultRates {
            reset_after_rate: 0.3,
            write_error_after_rate: 0.3,
            error_status: 503,
            ..FaultRates::default()
        };
        let f = Faults::new(rates, Some(9));
        // Nothing strikes before the work.
        assert!((0..64).all(|_| f.request(true, None).is_none()));
        let after: Vec<_> = (0..200).map(|_| f.answer(true, None)).collect();
        assert!(after.contains(&Some(RequestFault::Reset)));
        assert!(after.contains(&Some(RequestFault::Error(503))));
        assert!(after.contains(&None));
        // Reads only meet the resets: no read rate is set.
        let reads: Vec<_> = (0..200).map(|_| f.answer(false, None)).collect();
        assert!(!reads.contains(&Some(RequestFault::Error(503))));
        let injected = f.injected();
        let count =
            |v: &[Option<RequestFault>], x| v.iter().filter(|a| **a == Some(x)).count() as u64;
        assert_eq!(
            injected.resets_after,
            count(&after, RequestFault::Reset) + count(&reads, RequestFault::Reset)
        );
        assert_eq!(
            injected.write_errors_after,
            count(&after, RequestFault::Error(503))
        );
        assert_eq!(
            injected.resets + injected.read_errors + injected.write_errors,
            0
        );
        assert_eq!(
            injected.total(),
            injected.resets_after + injected.write_errors_after
        );
    }

    #[test]
    fn unset_answer_faults_leave_the_fault_stream_as_it_was() {
        // A case seeded before answer faults existed meets the same faults.
        let rates = FaultRates {
            read_error_rate: 0.5,
            reset_rate: 0.1,
            ..FaultRates::default()
        };
        let a = Faults::new(rates.clone(), Some(13));
        let b = Faults::new(rates, Some(13));
        let plain: Vec<_> = (0..64).map(|_| a.request(false, None)).collect();
        let with_answers: Vec<_> = (0..64)
            .map(|_| {
                let before = b.request(false, None);
                assert_eq!(b.answer(false, None), None);
                before
            })
            .collect();
        assert_eq!(plain, with_answers);
    }

    #[test]
    fn per_vm_rates_override_global() {
        let f = Faults::new(FaultRates::default(), Some(1));
        f.set_vm(
            100,
            Some(FaultRates {
                task_failure_rate: 1.0,
                agent_never_ready_rate: 1.0,
                ..FaultRates::default()
            }),
        );
        assert!(f.task_fails(Some(100)));
        assert!(!f.task_fails(Some(101)));
        assert!(f.agent(100).never_ready);
        assert!(!f.agent(101).never_ready);
        f.set_vm(100, None);
        assert!(!f.task_fails(Some(100)));
    }

    #[test]
    fn rates_are_checked() {
        assert!(
            FaultRates {
                reset_rate: 1.5,
                ..FaultRates::default()
            }
            .check()
            .is_err()
        );
        assert!(
            FaultRates {
                error_status: 404,
                ..FaultRates::default()
            }
            .check()
            .is_err()
        );
        assert!(FaultRates::default().check().is_ok());
    }
}
