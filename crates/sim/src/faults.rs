//! Injected faults: error answers, dropped connections, failed tasks and
//! slow or dead guest agents, globally or per VM, drawn from one seeded RNG
//! so a sequential client sees the same faults for the same `--seed`.

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
    /// Requests whose connection is dropped without an answer.
    pub reset_rate: f64,
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

    /// Decides whether a request (about `vmid`, if any) fails.
    pub fn request(&self, write: bool, vmid: Option<u32>) -> Option<RequestFault> {
        self.with(|i| {
            let rates = vmid
                .and_then(|v| i.per_vm.get(&v))
                .unwrap_or(&i.global)
                .clone();
            if rates.reset_rate > 0.0 && i.rng.random::<f64>() < rates.reset_rate {
                return Some(RequestFault::Reset);
            }
            let rate = if write {
                rates.write_error_rate
            } else {
                rates.read_error_rate
            };
            (rate > 0.0 && i.rng.random::<f64>() < rate)
                .then_some(RequestFault::Error(rates.error_status))
        })
    }

    /// Decides whether a task of `vmid` fails.
    pub fn task_fails(&self, vmid: Option<u32>) -> bool {
        self.with(|i| {
            let rate = vmid
                .and_then(|v| i.per_vm.get(&v))
                .unwrap_or(&i.global)
                .task_failure_rate;
            rate > 0.0 && i.rng.random::<f64>() < rate
        })
    }

    /// Decides how the agent of `vmid` behaves after this start.
    pub fn agent(&self, vmid: u32) -> AgentFault {
        self.with(|i| {
            let rates = i.per_vm.get(&vmid).unwrap_or(&i.global).clone();
            let never_ready = rates.agent_never_ready_rate > 0.0
                && i.rng.random::<f64>() < rates.agent_never_ready_rate;
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
