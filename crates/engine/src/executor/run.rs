//! [`execute`]: sets a plan's nodes up, runs them through the
//! [`Scheduler`], rolls back when `on_error` says so, and reports.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use super::scheduler::{End, NodeRun, Scheduler};
use super::storage::Storages;
use super::{Config, Controller, Event, NodeState, OnError, PhaseRecord, Report};
use homestak_base::id::NodeName;
use homestak_core::plan::{Action, NodePlan, Plan};

/// Runs `plan` through `controller`. `parents` maps a node to its parent
/// node on this tier. `cancel` resolves when the run must wind down;
/// `events` sees progress as it happens.
pub async fn execute<C: Controller>(
    plan: &Plan,
    parents: &BTreeMap<NodeName, NodeName>,
    controller: Arc<C>,
    config: &Config,
    cancel: impl Future<Output = ()>,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Report {
    // A parent is the entry kept, never a duplicate being deleted; a
    // deletion waits for nothing.
    let index: HashMap<&NodeName, usize> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.action != Action::Delete)
        .map(|(i, n)| (&n.node, i))
        .collect();
    let runs: Vec<NodeRun<C>> = plan
        .nodes
        .iter()
        .map(|n| {
            let deps = if n.action == Action::Delete {
                Vec::new()
            } else {
                parents
                    .get(&n.node)
                    .and_then(|p| index.get(p).copied())
                    .into_iter()
                    .collect()
            };
            // A no-op node may still have looking to do (a `pve` node asks
            // its child tier to converge); a controller plans none otherwise.
            let looks = n.action == Action::NoOp && n.blocked.is_none();
            let steps = if n.is_actionable() || looks {
                controller.steps(n)
            } else {
                Vec::new()
            };
            let state = unrunnable(n, steps.is_empty());
            let run = NodeRun::new(Arc::new(n.clone()), steps, deps, C::Memory::default());
            match state {
                Some(state) => run.settled(state),
                None => run,
            }
        })
        .collect();

    let storages = Storages::new(config.per_storage, config.learned_storage.clone());
    let mut scheduler = Scheduler::new(
        runs,
        controller.clone(),
        config,
        config.on_error,
        storages,
        events,
    );
    let end = scheduler.run(cancel).await;
    let (mut runs, mut phases, mut storages) = scheduler.into_parts();

    if config.on_error == OnError::Rollback
        && end == End::Done
        && runs
            .iter()
            .any(|r| matches!(r.state, Some(NodeState::Failed(_))))
    {
        let (undone, after) = rollback(&mut runs, controller, config, storages, events).await;
        phases.extend(undone);
        storages = after;
    }

    let mut report = Report {
        nodes: BTreeMap::new(),
        phases,
        cancelled: end == End::Cancelled,
        storage: storages.stats(),
    };
    for run in runs {
        let state = run.state.unwrap_or(NodeState::Interrupted);
        // A node can have two entries (its VM, and a duplicate to delete):
        // a success never hides the other entry's failure.
        let ok = |s: &NodeState| matches!(s, NodeState::Converged | NodeState::Unchanged);
        match report.nodes.entry(run.plan.node.clone()) {
            Entry::Occupied(mut e) => {
                if ok(e.get()) && !(ok(&state) && *e.get() == NodeState::Converged) {
                    e.insert(state);
                }
            }
            Entry::Vacant(e) => {
                e.insert(state);
            }
        }
    }
    report
}

/// How a node that runs nothing ends: refused (a conflict, a blocked
/// replace) or unchanged.
fn unrunnable(node: &NodePlan, no_steps: bool) -> Option<NodeState> {
    if node.action == Action::Conflict {
        Some(NodeState::Refused(
            node.reason.clone().unwrap_or_else(|| "conflict".into()),
        ))
    } else if let Some(blocked) = &node.blocked {
        Some(NodeState::Refused(blocked.clone()))
    } else if no_steps {
        Some(NodeState::Unchanged)
    } else {
        None
    }
}

/// Undoes, children first, what this run created; returns the undo
/// steps' phases and the storages' limits after them.
async fn rollback<C: Controller>(
    runs: &mut [NodeRun<C>],
    controller: Arc<C>,
    config: &Config,
    storages: Storages,
    events: &(dyn Fn(Event) + Send + Sync),
) -> (Vec<PhaseRecord>, Storages) {
    let mut undo: Vec<NodeRun<C>> = Vec::new();
    // The run each undo run is for, and back.
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
        if steps.is_empty() {
            run.memory = Some(memory);
            continue;
        }
        map.insert(i, undo.len());
        origin.push(i);
        undo.push(NodeRun::new(run.plan.clone(), steps, Vec::new(), memory));
    }
    // Reverse dependencies: a parent's undo waits for its children's.
    for (i, run) in runs.iter().enumerate() {
        if let (Some(&child), Some(&parent)) =
            (map.get(&i), run.deps.first().and_then(|p| map.get(p)))
        {
            undo[parent].deps.push(child);
        }
    }
    // Undo always runs to the end: stopping halfway would leave more debris.
    let mut scheduler = Scheduler::new(
        undo,
        controller,
        config,
        OnError::Continue,
        storages,
        events,
    );
    scheduler.run(std::future::pending()).await;
    let (undo, phases, storages) = scheduler.into_parts();
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
    (phases, storages)
}
