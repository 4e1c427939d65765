//! The scheduling loop behind [`execute`].
//!
//! One coordinator owns every node's state; steps run as spawned tasks that
//! take the node's memory with them and hand it back, so no lock is shared
//! between the coordinator and the controllers.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    AsStep, Config, Controller, Event, NodeState, OnError, PhaseRecord, Planned, Report,
    StepOutcome,
};
use homestak_core::plan::{Action, NodePlan, Plan};

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

struct NodeRun<W, M> {
    plan: Arc<NodePlan>,
    steps: Vec<Planned<W>>,
    cursor: usize,
    memory: Option<M>,
    attempts: u32,
    /// Storage token held by the current step, across requeues.
    storage: Option<String>,
    deps: Vec<usize>,
    phase: Phase,
    state: Option<NodeState>,
    step_started: Option<Instant>,
    /// The node's first step ran (it may have changed the world).
    started: bool,
}

/// Runs `plan` through `controller`. `parents` maps a node to its parent
/// node on this tier. `cancel` resolves when the run must wind down;
/// `events` sees progress as it happens.
pub async fn execute<C: Controller>(
    plan: &Plan,
    parents: &BTreeMap<String, String>,
    controller: Arc<C>,
    config: &Config,
    cancel: impl Future<Output = ()>,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Report {
    let index: HashMap<&str, usize> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.action != Action::Delete)
        .map(|(i, n)| (n.node.as_str(), i))
        .collect();
    let mut runs: Vec<NodeRun<C::Work, C::Memory>> = plan
        .nodes
        .iter()
        .map(|n| {
            let deps = if n.action == Action::Delete {
                Vec::new()
            } else {
                parents
                    .get(&n.node)
                    .and_then(|p| index.get(p.as_str()).copied())
                    .into_iter()
                    .collect()
            };
            let steps = if n.is_actionable() {
                controller.steps(n)
            } else {
                Vec::new()
            };
            NodeRun {
                plan: Arc::new(n.clone()),
                steps,
                cursor: 0,
                memory: Some(C::Memory::default()),
                attempts: 0,
                storage: None,
                deps,
                phase: Phase::Blocked,
                state: None,
                step_started: None,
                started: false,
            }
        })
        .collect();
    for run in &mut runs {
        let plan = &run.plan;
        if plan.action == Action::Conflict {
            run.state = Some(NodeState::Refused(
                plan.reason.clone().unwrap_or_else(|| "conflict".into()),
            ));
        } else if let Some(blocked) = &plan.blocked {
            run.state = Some(NodeState::Refused(blocked.clone()));
        } else if run.steps.is_empty() {
            run.state = Some(NodeState::Unchanged);
        }
        if run.state.is_some() {
            run.phase = Phase::Finished;
        }
    }

    let mut report = Report {
        nodes: BTreeMap::new(),
        phases: Vec::new(),
        cancelled: false,
    };
    let cancelled = drive(
        &mut runs,
        &controller,
        config,
        config.on_error,
        cancel,
        events,
        &mut report.phases,
    )
    .await;
    report.cancelled = cancelled.is_some();

    if config.on_error == OnError::Rollback
        && cancelled.is_none()
        && runs
            .iter()
            .any(|r| matches!(r.state, Some(NodeState::Failed(_))))
    {
        rollback(&mut runs, &controller, config, events, &mut report.phases).await;
    }

    for run in runs {
        let state = run.state.unwrap_or(NodeState::Interrupted);
        // A node can have two entries (its VM, and a duplicate to delete):
        // a success never hides the other entry's failure.
        let ok = |s: &NodeState| matches!(s, NodeState::Converged | NodeState::Unchanged);
        match report.nodes.entry(run.plan.node.clone()) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if ok(e.get()) && !(ok(&state) && *e.get() == NodeState::Converged) {
                    e.insert(state);
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(state);
            }
        }
    }
    report
}

/// Undo, children first, what this run created.
async fn rollback<C: Controller>(
    runs: &mut [NodeRun<C::Work, C::Memory>],
    controller: &Arc<C>,
    config: &Config,
    events: &(dyn Fn(Event) + Send + Sync),
    phases: &mut Vec<PhaseRecord>,
) {
    // Reverse dependencies: a parent's undo waits for its children's.
    let mut undo: Vec<NodeRun<C::Work, C::Memory>> = Vec::new();
    let mut origin: Vec<usize> = Vec::new();
    let mut map: HashMap<usize, usize> = HashMap::new();
    for (i, run) in runs.iter_mut().enumerate() {
        let created = matches!(run.plan.action, Action::Create | Action::Replace) && run.started;
        let memory = run.memory.take().unwrap_or_default();
        let steps = if created {
            controller.undo_steps(&run.plan, &memory)
        } else {
            Vec::new()
        };
        run.memory = Some(memory);
        if steps.is_empty() {
            continue;
        }
        map.insert(i, undo.len());
        origin.push(i);
        undo.push(NodeRun {
            plan: run.plan.clone(),
            steps,
            cursor: 0,
            memory: run.memory.take(),
            attempts: 0,
            storage: None,
            deps: Vec::new(),
            phase: Phase::Blocked,
            state: None,
            step_started: None,
            started: false,
        });
    }
    for (i, run) in runs.iter().enumerate() {
        if let (Some(&child), Some(&parent)) =
            (map.get(&i), run.deps.first().and_then(|p| map.get(p)))
        {
            undo[parent].deps.push(child);
        }
    }
    // Undo always runs to the end: stopping halfway would leave more debris.
    drive(
        &mut undo,
        controller,
        config,
        OnError::Continue,
        std::future::pending(),
        events,
        phases,
    )
    .await;
    for (u, i) in undo.into_iter().zip(origin) {
        let run = &mut runs[i];
        run.state = Some(match (u.state, run.state.take()) {
            (Some(NodeState::Converged), Some(NodeState::Failed(e))) => {
                NodeState::Failed(format!("{e} (rolled back)"))
            }
            (Some(NodeState::Converged), _) => NodeState::RolledBack,
            (Some(NodeState::Failed(e)), _) => NodeState::Failed(format!("rollback failed: {e}")),
            (_, previous) => previous.unwrap_or(NodeState::Interrupted),
        });
    }
}

/// The loop: schedule ready steps, collect outcomes, honour limits,
/// `on_error` and cancellation. Returns `Some(())` when cancelled.
async fn drive<C: Controller>(
    runs: &mut [NodeRun<C::Work, C::Memory>],
    controller: &Arc<C>,
    config: &Config,
    on_error: OnError,
    cancel: impl Future<Output = ()>,
    events: &(dyn Fn(Event) + Send + Sync),
    phases: &mut Vec<PhaseRecord>,
) -> Option<()> {
    tokio::pin!(cancel);
    let mut tasks: JoinSet<(usize, StepOutcome, C::Memory)> = JoinSet::new();
    let mut storage_use: HashMap<String, usize> = HashMap::new();
    let mut halted: Option<String> = None;
    let mut cancelled = false;
    let concurrency = config.concurrency.max(1);
    let workers = config.workers.max(1);

    loop {
        let now = Instant::now();
        // Unblock, wake and skip.
        for i in 0..runs.len() {
            if runs[i].phase == Phase::Blocked {
                let dep_states: Vec<Option<&NodeState>> = runs[i]
                    .deps
                    .iter()
                    .map(|&d| runs[d].state.as_ref())
                    .collect();
                if let Some(why) =
                    dep_states
                        .iter()
                        .zip(&runs[i].deps)
                        .find_map(|(s, &d)| match s {
                            Some(NodeState::Converged | NodeState::Unchanged) | None => None,
                            Some(_) => {
                                Some(format!("parent {} did not converge", runs[d].plan.node))
                            }
                        })
                {
                    finish(&mut runs[i], NodeState::Skipped(why), events);
                } else if dep_states
                    .iter()
                    .all(|s| matches!(s, Some(NodeState::Converged | NodeState::Unchanged)))
                {
                    runs[i].phase = Phase::Ready;
                }
            }
            if let Phase::Waiting(at) = runs[i].phase
                && at <= now
            {
                runs[i].phase = Phase::Ready;
            }
            if (halted.is_some() || cancelled)
                && !runs[i].started
                && matches!(runs[i].phase, Phase::Blocked | Phase::Ready)
            {
                if cancelled {
                    runs[i].phase = Phase::Finished;
                } else {
                    let why = halted.clone().unwrap_or_default();
                    finish(&mut runs[i], NodeState::Skipped(why), events);
                }
            }
            if cancelled && matches!(runs[i].phase, Phase::Waiting(_) | Phase::Ready) {
                runs[i].phase = Phase::Finished;
            }
        }

        // Start what limits allow, in plan order: a node that has not
        // started yet needs a free node slot; any ready step needs a worker.
        if !cancelled {
            let mut in_flight = runs
                .iter()
                .filter(|r| r.started && r.phase != Phase::Finished)
                .count();
            for (i, run) in runs.iter_mut().enumerate() {
                if tasks.len() >= workers {
                    break;
                }
                if run.phase != Phase::Ready {
                    continue;
                }
                if !run.started {
                    if in_flight >= concurrency {
                        continue;
                    }
                    in_flight += 1;
                }
                let step = run.steps[run.cursor].clone();
                if let Some(storage) = &step.storage
                    && run.storage.as_ref() != Some(storage)
                {
                    let used = storage_use.entry(storage.clone()).or_default();
                    if *used >= config.per_storage.max(1) {
                        continue;
                    }
                    *used += 1;
                    run.storage = Some(storage.clone());
                }
                run.phase = Phase::Running;
                run.started = true;
                run.step_started.get_or_insert_with(Instant::now);
                if run.attempts == 0 {
                    events(Event::StepStarted {
                        node: run.plan.node.clone(),
                        step: step.work.as_step(),
                    });
                }
                let ctrl = controller.clone();
                let plan = run.plan.clone();
                let mut memory = run.memory.take().unwrap_or_default();
                let work = step.work;
                tasks.spawn(async move {
                    let outcome = ctrl.run(&plan, &work, &mut memory).await;
                    (i, outcome, memory)
                });
            }
        }

        if tasks.is_empty() {
            let waiting = runs.iter().any(|r| matches!(r.phase, Phase::Waiting(_)));
            let ready = runs.iter().any(|r| r.phase == Phase::Ready);
            let blocked = runs.iter().any(|r| r.phase == Phase::Blocked);
            if !waiting && !ready && !blocked {
                break;
            }
            if !waiting && !ready && blocked {
                // Dependencies can no longer finish (should not happen with a DAG).
                for run in runs.iter_mut().filter(|r| r.phase == Phase::Blocked) {
                    finish(
                        run,
                        NodeState::Skipped("dependency never finished".into()),
                        events,
                    );
                }
                continue;
            }
        }

        let next_wake = runs
            .iter()
            .filter_map(|r| match r.phase {
                Phase::Waiting(at) => Some(at),
                _ => None,
            })
            .min();
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let Some(joined) = joined else { continue };
                let (i, outcome, memory) = match joined {
                    Ok(v) => v,
                    Err(err) => {
                        // A panicking controller is a bug; fail the run loudly
                        // rather than hang. The node is unknown here, so fail
                        // every running node.
                        for run in runs.iter_mut().filter(|r| r.phase == Phase::Running) {
                            finish(run, NodeState::Failed(format!("internal error: step task ended: {err}")), events);
                        }
                        continue;
                    }
                };
                runs[i].memory = Some(memory);
                let failed = settle(&mut runs[i], outcome, config, &mut storage_use, events, phases);
                if let Some(name) = failed {
                    match on_error {
                        OnError::Continue => {}
                        OnError::Stop | OnError::Rollback => {
                            halted.get_or_insert_with(|| {
                                format!("run stopped after {name} failed (on_error: {})", on_error)
                            });
                        }
                    }
                }
            }
            _ = sleep_until(next_wake), if next_wake.is_some() => {}
            _ = &mut cancel, if !cancelled => {
                cancelled = true;
            }
        }
    }
    cancelled.then_some(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies a step outcome; returns the node name when the node failed.
fn settle<W: AsStep, M>(
    run: &mut NodeRun<W, M>,
    outcome: StepOutcome,
    config: &Config,
    storage_use: &mut HashMap<String, usize>,
    events: &(dyn Fn(Event) + Send + Sync),
    phases: &mut Vec<PhaseRecord>,
) -> Option<String> {
    let step = run.steps[run.cursor].work.as_step();
    let node = run.plan.node.clone();
    match outcome {
        StepOutcome::Requeue(after) => {
            events(Event::StepRequeued { node, step, after });
            run.phase = Phase::Waiting(Instant::now() + after);
            None
        }
        StepOutcome::Done => {
            let duration = close_step(run, storage_use, phases, "passed", run.attempts + 1);
            events(Event::StepDone {
                node,
                step,
                duration,
            });
            run.attempts = 0;
            run.cursor += 1;
            if run.cursor == run.steps.len() {
                finish(run, NodeState::Converged, events);
            } else {
                run.phase = Phase::Ready;
            }
            None
        }
        StepOutcome::Failed(err) => {
            run.attempts += 1;
            if err.transient && run.attempts < config.max_attempts {
                events(Event::StepRetry {
                    node,
                    step,
                    attempt: run.attempts,
                    error: err.message,
                });
                run.phase = Phase::Waiting(Instant::now() + backoff(config, run.attempts));
                return None;
            }
            close_step(run, storage_use, phases, "failed", run.attempts);
            finish(
                run,
                NodeState::Failed(format!("{step}: {}", err.message)),
                events,
            );
            Some(node)
        }
    }
}

/// Ends the current step: frees its storage slot and records the phase.
/// Returns how long the step took.
fn close_step<W: AsStep, M>(
    run: &mut NodeRun<W, M>,
    storage_use: &mut HashMap<String, usize>,
    phases: &mut Vec<PhaseRecord>,
    status: &'static str,
    attempts: u32,
) -> Duration {
    let duration = run
        .step_started
        .take()
        .map(|t| t.elapsed())
        .unwrap_or_default();
    release(run, storage_use);
    phases.push(PhaseRecord {
        node: run.plan.node.clone(),
        name: run.steps[run.cursor].work.as_step(),
        status,
        duration,
        attempts,
    });
    duration
}

fn release<W, M>(run: &mut NodeRun<W, M>, storage_use: &mut HashMap<String, usize>) {
    if let Some(storage) = run.storage.take()
        && let Some(n) = storage_use.get_mut(&storage)
    {
        *n = n.saturating_sub(1);
    }
}

fn finish<W, M>(run: &mut NodeRun<W, M>, state: NodeState, events: &(dyn Fn(Event) + Send + Sync)) {
    events(Event::NodeFinished {
        node: run.plan.node.clone(),
        state: state.clone(),
    });
    run.state = Some(state);
    run.phase = Phase::Finished;
}

/// Exponential backoff with full jitter in the upper half: base·2^(n-1),
/// capped, times a random factor in [0.5, 1.0).
pub(crate) fn backoff(config: &Config, attempt: u32) -> Duration {
    let exp = config
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(config.backoff_max);
    let factor: f64 = rand::rng().random_range(0.5..1.0);
    exp.mul_f64(factor)
}
