//! P1: N VMs on one storage: the default limits, `--concurrency 1` and one
//! VM alone, against the bound the simulator's storage lock sets.

use std::time::Duration;

use homestak_engine::reconcile;

use crate::table::{Table, ratio, secs, x};
use crate::world::{self, Converged};

/// Allocations one create makes on the storage: its disk and its
/// cloud-init drive.
pub const ALLOCATIONS_PER_CREATE: u32 = 2;

/// What the P1 runs showed.
pub struct P1 {
    pub vms: usize,
    pub scale: f64,
    pub default: Converged,
    pub sequential: Converged,
    pub one: Converged,
    /// The simulator's `storage_lock_hold` (seconds at time scale 1).
    pub lock_hold: f64,
    /// One VM's path after its create (its wall minus its time through
    /// the end of `create_vm`).
    pub tail: Duration,
}

impl P1 {
    /// Allocations x lock hold x time scale + one VM's remaining path.
    pub fn bound(&self) -> Duration {
        let allocations = self.vms as f64 * f64::from(ALLOCATIONS_PER_CREATE);
        Duration::from_secs_f64(allocations * self.lock_hold * self.scale) + self.tail
    }

    pub fn default_over_bound(&self) -> f64 {
        ratio(self.default.wall.as_secs_f64(), self.bound().as_secs_f64())
    }
}

/// One converge of `vms` VMs on a fresh simulator; also its storage lock
/// hold.
pub async fn run_on_fresh(vms: usize, scale: f64, concurrency: Option<usize>) -> (Converged, f64) {
    crate::progress(&format!(
        "p1: {vms} VMs, concurrency {concurrency:?}, time scale {scale}"
    ));
    let w = world::fresh(scale).await;
    let mut options = reconcile::Options::default();
    if let Some(n) = concurrency {
        options.executor.concurrency = n;
    }
    let c = world::converge(&w, vms, options).await;
    let hold = w.lock_hold;
    w.shutdown().await;
    (c, hold)
}

/// One converge of `vms` VMs on a fresh simulator.
pub async fn run(vms: usize, scale: f64, concurrency: Option<usize>) -> Converged {
    run_on_fresh(vms, scale, concurrency).await.0
}

pub async fn measure(vms: usize, scale: f64) -> P1 {
    let (one, lock_hold) = run_on_fresh(1, scale, None).await;
    assert!(one.report.success(), "one VM failed: {:?}", one.report);
    let through = one
        .through_create
        .expect("the one-VM run reported its create_vm step done");
    let tail = one.wall.saturating_sub(through);
    let default = run(vms, scale, None).await;
    let sequential = run(vms, scale, Some(1)).await;
    P1 {
        vms,
        scale,
        default,
        sequential,
        one,
        lock_hold,
        tail,
    }
}

/// Failed nodes, for the table (a bench that failed says so, it does not
/// print a wall time as if it had converged).
fn outcome(c: &Converged) -> String {
    let failed = c
        .report
        .nodes
        .values()
        .filter(|s| {
            !matches!(
                s,
                homestak_api::NodeState::Converged | homestak_api::NodeState::Unchanged
            )
        })
        .count();
    if failed == 0 {
        secs(c.wall)
    } else {
        format!("{} ({failed} nodes not converged)", secs(c.wall))
    }
}

pub fn rows(p: &P1, t: &mut Table) {
    let n = p.vms;
    let row = "P1";
    t.add(row, format!("{n} VMs, default"), outcome(&p.default));
    t.add(
        row,
        format!("{n} VMs, --concurrency 1"),
        outcome(&p.sequential),
    );
    t.add(row, "one VM alone", outcome(&p.one));
    t.add(row, "bound [p1]", secs(p.bound()));
    t.goal(
        row,
        "storage-lock timeouts (default)",
        format!(
            "{} failed nodes, {} retried steps",
            p.default.lock_failed, p.default.lock_retries
        ),
        "0 failed",
        p.default.lock_failed == 0,
    );
    let over = p.default_over_bound();
    t.goal(row, "default / bound", x(over), "<= 1.10x", over <= 1.1);
    t.add(
        row,
        "sequential / default",
        x(ratio(
            p.sequential.wall.as_secs_f64(),
            p.default.wall.as_secs_f64(),
        )),
    );
    t.add(
        row,
        "sequential / bound (most the bound allows)",
        x(ratio(
            p.sequential.wall.as_secs_f64(),
            p.bound().as_secs_f64(),
        )),
    );
    t.note(
        "p1",
        format!(
            "bound = {n} VMs x {ALLOCATIONS_PER_CREATE} allocations (disk, cloud-init drive) x \
         storage_lock_hold {} s x time scale {} + one VM's remaining path after its create \
         ({}: the one-VM run's wall {} minus its time through the end of create_vm)",
            p.lock_hold,
            p.scale,
            secs(p.tail),
            secs(p.one.wall),
        ),
    );
}
