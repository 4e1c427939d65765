//! The scheduler behind [`super::execute`] and its rollback.
//!
//! One coordinator owns every node's state; steps run as spawned tasks that
//! take the node's memory with them and hand it back, so no lock is shared
//! between the coordinator and the controllers. Each pass of
//! [`Scheduler::run`] applies the transitions in turn:
//! [`unblock`](Scheduler::unblock), [`admit`](Scheduler::admit), then waits
//! for one step outcome ([`settle`](Scheduler::settle)), a requeue coming
//! due, or `cancel`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::storage::{Slot, Storages};
use super::{
    AsStep, Config, Controller, Event, NodeState, OnError, PhaseRecord, Planned, StepErrorKind,
    StepOutcome,
};
use homestak_api::step::Step;
use homestak_api::{Kind, PhaseStatus};
use homestak_core::plan::NodePlan;

/// How a scheduler run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Every node finished, one way or another.
    Done,
    /// `cancel` fired: running steps finished, nothing new started.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a dependency.
    Blocked,
    Ready,
    Running,
    /// Requeued until the instant.
    Waiting(Instant),
    Finished,
}

/// One node going through its planned steps.
pub(super) struct NodeRun<C: Controller> {
    pub(super) plan: Arc<NodePlan>,
    steps: Vec<Planned<C::Work>>,
    /// The current step; Ready and Running nodes always have one.
    cursor: usize,
    /// With the running step while it runs.
    pub(super) memory: Option<C::Memory>,
    attempts: u32,
    /// Storage-lock timeouts of the current step, and when the first was.
    lock_timeouts: u32,
    lock_waits_since: Option<Instant>,
    /// Storage slot held by the current step, across requeues.
    storage: Option<Slot>,
    /// Indices of the nodes this one waits for.
    pub(super) deps: Vec<usize>,
    phase: Phase,
    /// How the node ended; `None` once finished means interrupted.
    pub(super) state: Option<NodeState>,
    step_started: Option<Instant>,
    /// The node's first step ran (it may have changed the world).
    pub(super) started: bool,
}

impl<C: Controller> NodeRun<C> {
    pub(super) fn new(
        plan: Arc<NodePlan>,
        steps: Vec<Planned<C::Work>>,
        deps: Vec<usize>,
        memory: C::Memory,
    ) -> Self {
        NodeRun {
            plan,
            steps,
            cursor: 0,
            memory: Some(memory),
            attempts: 0,
            lock_timeouts: 0,
            lock_waits_since: None,
            storage: None,
            deps,
            phase: Phase::Blocked,
            state: None,
            step_started: None,
            started: false,
        }
    }

    /// Ends a node that has nothing to run (unchanged, refused); no event,
    /// as nothing happened.
    pub(super) fn settled(mut self, state: NodeState) -> Self {
        self.state = Some(state);
        self.phase = Phase::Finished;
        self
    }

    fn step(&self) -> Step {
        self.steps[self.cursor].work.as_step()
    }
}

/// Where a blocked node's parents stand.
enum Parents {
    Pending,
    Converged,
    /// One did not converge: why the node is skipped.
    Failed(String),
}

pub(super) struct Scheduler<'a, C: Controller> {
    runs: Vec<NodeRun<C>>,
    controller: Arc<C>,
    config: &'a Config,
    on_error: OnError,
    events: &'a (dyn Fn(Event) + Send + Sync),
    phases: Vec<PhaseRecord>,
    tasks: JoinSet<(usize, StepOutcome, C::Memory)>,
    /// The node each running step task is for, so a task that panics
    /// fails its own node and no other.
    task_nodes: HashMap<tokio::task::Id, usize>,
    /// Per-storage limits and the slots taken.
    storages: Storages,
    /// Why no new node starts, once a failure stopped the run.
    halted: Option<String>,
    cancelled: bool,
}

impl<'a, C: Controller> Scheduler<'a, C> {
    pub(super) fn new(
        runs: Vec<NodeRun<C>>,
        controller: Arc<C>,
        config: &'a Config,
        on_error: OnError,
        storages: Storages,
        events: &'a (dyn Fn(Event) + Send + Sync),
    ) -> Self {
        Scheduler {
            runs,
            controller,
            config,
            on_error,
            events,
            phases: Vec::new(),
            tasks: JoinSet::new(),
            task_nodes: HashMap::new(),
            storages,
            halted: None,
            cancelled: false,
        }
    }

    /// The node runs, every step as it ran, and the storages' limits.
    pub(super) fn into_parts(self) -> (Vec<NodeRun<C>>, Vec<PhaseRecord>, Storages) {
        (self.runs, self.phases, self.storages)
    }

    /// Runs until every node finished, or until `cancel` fired and the
    /// steps running then finished.
    pub(super) async fn run(&mut self, cancel: impl Future<Output = ()>) -> End {
        tokio::pin!(cancel);
        loop {
            self.unblock();
            self.admit();
            if self.idle() {
                self.skip_stuck();
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok((id, (i, outcome, memory))) => {
                            self.task_nodes.remove(&id);
                            self.settle(i, outcome, memory);
                        }
                        Err(err) => self.lost(&err),
                    }
                }
                () = sleep_until(wake), if wake.is_some() => {}
                () = &mut cancel, if !self.cancelled => self.cancel(),
            }
        }
        if self.cancelled {
            End::Cancelled
        } else {
            End::Done
        }
    }

    /// Nothing runs, waits or can start: the run is over.
    fn idle(&self) -> bool {
        self.tasks.is_empty()
            && !self
                .runs
                .iter()
                .any(|r| matches!(r.phase, Phase::Ready | Phase::Waiting(_)))
    }

    /// When the first requeued step comes due.
    fn next_wake(&self) -> Option<Instant> {
        self.runs
            .iter()
            .filter_map(|r| match r.phase {
                Phase::Waiting(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Moves nodes on without running anything: blocked to ready (or
    /// skipped, when a parent did not converge), due requeues to ready;
    /// once halted or cancelled, nodes that have not started never do.
    fn unblock(&mut self) {
        let now = Instant::now();
        for i in 0..self.runs.len() {
            if self.runs[i].phase == Phase::Blocked {
                match self.parents(i) {
                    Parents::Pending => {}
                    Parents::Converged => self.runs[i].phase = Phase::Ready,
                    Parents::Failed(why) => self.finish(i, NodeState::Skipped(why)),
                }
            }
            let run = &mut self.runs[i];
            if let Phase::Waiting(at) = run.phase
                && at <= now
            {
                run.phase = Phase::Ready;
            }
            if !run.started && matches!(run.phase, Phase::Blocked | Phase::Ready) {
                // Cancelled nodes keep no state: the report says interrupted.
                if self.cancelled {
                    run.phase = Phase::Finished;
                } else if let Some(why) = self.halted.clone() {
                    self.finish(i, NodeState::Skipped(why));
                }
            }
            let run = &mut self.runs[i];
            // A started node stops between steps; a task it left in flight
            // is in the store for the next run to resume.
            if self.cancelled && matches!(run.phase, Phase::Waiting(_) | Phase::Ready) {
                run.phase = Phase::Finished;
            }
        }
    }

    fn parents(&self, i: usize) -> Parents {
        let mut pending = false;
        for &d in &self.runs[i].deps {
            match &self.runs[d].state {
                None => pending = true,
                Some(NodeState::Converged | NodeState::Unchanged) => {}
                Some(_) => {
                    let parent = &self.runs[d].plan.node;
                    return Parents::Failed(format!("parent {parent} did not converge"));
                }
            }
        }
        if pending {
            Parents::Pending
        } else {
            Parents::Converged
        }
    }

    /// Starts the ready steps the limits allow, in plan order: a node that
    /// has not started yet needs a free node slot, a step on a storage one
    /// of its slots, any step a worker.
    fn admit(&mut self) {
        if self.cancelled {
            return;
        }
        let concurrency = self.config.concurrency.max(1);
        let workers = self.config.workers.max(1);
        let now = Instant::now();
        let mut in_progress = self
            .runs
            .iter()
            .filter(|r| r.started && r.phase != Phase::Finished)
            .count();
        for (i, run) in self.runs.iter_mut().enumerate() {
            if self.tasks.len() >= workers {
                break;
            }
            if run.phase != Phase::Ready {
                continue;
            }
            if !run.started {
                if in_progress >= concurrency {
                    continue;
                }
                // Taken even when the storage below is busy: a later node
                // does not overtake one waiting for a slot.
                in_progress += 1;
            }
            let step = &run.steps[run.cursor];
            if let Some(storage) = &step.storage
                && run.storage.as_ref().map(|s| &s.storage) != Some(storage)
            {
                let Some(slot) = self.storages.take(storage, now) else {
                    continue;
                };
                run.storage = Some(slot);
            }
            let work = step.work.clone();
            run.phase = Phase::Running;
            run.started = true;
            run.step_started.get_or_insert_with(Instant::now);
            if run.attempts == 0 {
                let step = work.as_step();
                (self.events)(
                    Event::info(Kind::StepStarted, format!("{step} started"))
                        .node(&run.plan.node)
                        .step(step),
                );
            }
            let controller = self.controller.clone();
            let plan = run.plan.clone();
            let mut memory = run.memory.take().unwrap_or_default();
            let task = self.tasks.spawn(async move {
                let outcome = controller.run(&plan, &work, &mut memory).await;
                (i, outcome, memory)
            });
            self.task_nodes.insert(task.id(), i);
        }
    }

    /// Applies one step outcome to node `i`: wait and run the step again,
    /// go on to the next step, retry after a backoff, or fail the node
    /// (and apply `on_error`).
    fn settle(&mut self, i: usize, outcome: StepOutcome, memory: C::Memory) {
        let run = &mut self.runs[i];
        run.memory = Some(memory);
        let step = run.step();
        let node = run.plan.node.clone();
        match outcome {
            StepOutcome::Requeue(after) => {
                (self.events)(
                    Event::info(
                        Kind::StepRequeued,
                        format!("{step} waits {}", humantime::format_duration(after)),
                    )
                    .node(&node)
                    .step(step),
                );
                run.phase = Phase::Waiting(Instant::now() + after);
            }
            StepOutcome::Done => {
                let attempts = run.attempts + 1;
                if let Some(slot) = run.storage.take() {
                    self.storages.done(slot, step, Instant::now());
                }
                let duration = self.close_step(i, PhaseStatus::Passed, attempts);
                let took = humantime::format_duration(Duration::from_millis(
                    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                ));
                (self.events)(
                    Event::info(Kind::StepDone, format!("{step} done in {took}"))
                        .node(&node)
                        .step(step),
                );
                let run = &mut self.runs[i];
                run.attempts = 0;
                run.lock_timeouts = 0;
                run.lock_waits_since = None;
                run.cursor += 1;
                if run.cursor == run.steps.len() {
                    // A no-op node's steps only looked (a `pve` node's
                    // child tier): nothing changed on this tier.
                    let end = if run.plan.action == homestak_core::plan::Action::NoOp {
                        NodeState::Unchanged
                    } else {
                        NodeState::Converged
                    };
                    self.finish(i, end);
                } else {
                    run.phase = Phase::Ready;
                }
            }
            StepOutcome::Failed(err) => {
                if let StepErrorKind::StorageLockTimeout { storage } = &err.kind {
                    self.lock_timeout(i, storage, &err.message);
                    return;
                }
                run.attempts += 1;
                let attempts = run.attempts;
                if err.transient && attempts < self.config.max_attempts {
                    (self.events)(
                        Event::warning(
                            Kind::StepRetry,
                            format!("{step} attempt {attempts}: {}", err.message),
                        )
                        .node(&node)
                        .step(step),
                    );
                    run.phase = Phase::Waiting(Instant::now() + backoff(self.config, attempts));
                    return;
                }
                self.fail(i, attempts, format!("{step}: {}", err.message));
            }
        }
    }

    /// PVE timed out waiting for `storage`'s lock in node `i`'s step: the
    /// step frees its slot (fewer run on the storage from now on) and runs
    /// again after a backoff, without using up an attempt, until
    /// `lock_retry_for` after the first timeout.
    fn lock_timeout(&mut self, i: usize, storage: &str, message: &str) {
        let now = Instant::now();
        let run = &mut self.runs[i];
        let step = run.step();
        let node = run.plan.node.clone();
        match run.storage.take() {
            Some(slot) if slot.storage == storage => {
                self.storages.lock_timeout(storage, Some(slot));
            }
            other => {
                if let Some(slot) = &other {
                    self.storages.release(slot);
                }
                self.storages.lock_timeout(storage, None);
            }
        }
        let run = &mut self.runs[i];
        run.lock_timeouts += 1;
        let since = *run.lock_waits_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.config.lock_retry_for {
            let attempts = run.attempts + 1;
            let waited = humantime::format_duration(self.config.lock_retry_for);
            self.fail(
                i,
                attempts,
                format!("{step}: storage {storage} stayed locked for {waited}: {message}"),
            );
            return;
        }
        (self.events)(
            Event::warning(
                Kind::StorageLockTimeout,
                format!("{step}: storage {storage} lock timed out; retrying: {message}"),
            )
            .node(&node)
            .step(step),
        );
        let delay = backoff(self.config, run.lock_timeouts);
        run.phase = Phase::Waiting(now + delay);
    }

    /// Node `i`'s current step failed for good: the step ends (freeing its
    /// storage slot), the node fails, and `on_error` decides the rest.
    fn fail(&mut self, i: usize, attempts: u32, why: String) {
        self.close_step(i, PhaseStatus::Failed, attempts);
        self.finish(i, NodeState::Failed(why));
        let on_error = self.on_error;
        if matches!(on_error, OnError::Stop | OnError::Rollback) {
            let node = &self.runs[i].plan.node;
            self.halted.get_or_insert_with(|| {
                format!("run stopped after {node} failed (on_error: {on_error})")
            });
        }
    }

    /// A step task panicked (a controller bug): its node fails, loudly,
    /// like any failed step; the other nodes go on as `on_error` says.
    fn lost(&mut self, err: &JoinError) {
        let Some(i) = self.task_nodes.remove(&err.id()) else {
            return;
        };
        let attempts = self.runs[i].attempts + 1;
        self.fail(
            i,
            attempts,
            format!("internal error: step task ended: {err}"),
        );
    }

    /// `cancel` fired: from the next pass on, nothing new starts and nodes
    /// stop at their next step boundary; running steps finish.
    fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// Nothing runs or waits, so blocked nodes can never start (a cycle,
    /// which the planner rules out).
    fn skip_stuck(&mut self) {
        for i in 0..self.runs.len() {
            if self.runs[i].phase == Phase::Blocked {
                self.finish(i, NodeState::Skipped("dependency never finished".into()));
            }
        }
    }

    /// Ends node `i`'s current step: frees its storage slot (if still
    /// held) and records the phase. Returns how long the step took.
    fn close_step(&mut self, i: usize, status: PhaseStatus, attempts: u32) -> Duration {
        let run = &mut self.runs[i];
        let duration = run
            .step_started
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if let Some(slot) = run.storage.take() {
            self.storages.release(&slot);
        }
        self.phases.push(PhaseRecord {
            node: run.plan.node.clone(),
            name: run.step(),
            status,
            duration,
            attempts,
        });
        duration
    }

    fn finish(&mut self, i: usize, state: NodeState) {
        let run = &mut self.runs[i];
        (self.events)(Event::node_finished(&run.plan.node, state.clone()));
        run.state = Some(state);
        run.phase = Phase::Finished;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with full jitter in the upper half: base·2^(n-1),
/// capped, times a random factor in [0.5, 1.0).
fn backoff(config: &Config, attempt: u32) -> Duration {
    let exp = config
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(config.backoff_max);
    let factor: f64 = rand::rng().random_range(0.5..1.0);
    exp.mul_f64(factor)
}
