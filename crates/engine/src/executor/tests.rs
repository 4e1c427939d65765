//! Executor tests with a scripted controller and paused Tokio time, so
//! waits are virtual and the tests are exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use homestak_api::step::Step;
use homestak_base::id::NodeName;
use homestak_core::plan::{Action, NodePlan, Plan};

#[derive(Debug, Clone, Copy)]
enum Out {
    Done,
    Requeue(u64),
    Transient,
    Permanent,
    Panic,
    /// PVE's storage-lock timeout on storage "s".
    LockTimeout,
}

#[derive(Default)]
struct Memory {
    created: bool,
}

#[derive(Default)]
struct Fake {
    /// (node, step) → outcomes to return in turn; `Done` once exhausted.
    script: Mutex<HashMap<(String, Step), VecDeque<Out>>>,
    /// Steps per node (default: create_vm on storage "s", start_vm).
    steps: HashMap<String, Vec<Planned<Step>>>,
    log: Mutex<Vec<(Instant, String, Step)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    fn script(self, node: &str, step: Step, outs: &[Out]) -> Self {
        self.script
            .lock()
            .unwrap()
            .insert((node.into(), step), outs.iter().copied().collect());
        self
    }

    fn starts(&self, node: &str, step: Step) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n, s)| n == node && *s == step)
            .map(|(t, _, _)| *t)
            .collect()
    }
}

impl Controller for Fake {
    type Memory = Memory;
    type Work = Step;

    fn steps(&self, node: &NodePlan) -> Vec<Planned<Step>> {
        self.steps
            .get(node.node.as_str())
            .cloned()
            .unwrap_or_else(|| {
                // As the real controllers: nothing to do for a no-op.
                if node.action == Action::NoOp {
                    return Vec::new();
                }
                vec![
                    Planned::on_storage(Step::CreateVm, "s"),
                    Planned::new(Step::StartVm),
                ]
            })
    }

    fn run<'a>(
        &'a self,
        node: &'a NodePlan,
        step: &'a Step,
        memory: &'a mut Memory,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push((Instant::now(), node.node.to_string(), *step));
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            // A step takes a little (virtual) time, like an API call.
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            let out = self
                .script
                .lock()
                .unwrap()
                .get_mut(&(node.node.to_string(), *step))
                .and_then(VecDeque::pop_front)
                .unwrap_or(Out::Done);
            match out {
                Out::Done => {
                    if *step == Step::CreateVm {
                        memory.created = true;
                    }
                    StepOutcome::Done
                }
                Out::Requeue(ms) => StepOutcome::Requeue(Duration::from_millis(ms)),
                Out::Transient => StepOutcome::Failed(StepError::transient("HTTP 500")),
                Out::Permanent => StepOutcome::Failed(StepError::permanent("refused")),
                Out::Panic => panic!("scripted controller bug"),
                Out::LockTimeout => StepOutcome::Failed(StepError::classified(
                    "create VM: task failed: unable to create VM 100 - can't lock file \
                     '/var/lock/pve-manager/pve-storage-s' - got timeout",
                )),
            }
        })
    }

    fn undo_steps(&self, _node: &NodePlan, memory: &Memory) -> Vec<Planned<Step>> {
        if memory.created {
            vec![Planned::new(Step::DestroyVm)]
        } else {
            Vec::new()
        }
    }
}

fn node(name: &str, action: Action) -> NodePlan {
    NodePlan {
        node: name.parse().unwrap(),
        action,
        vmid: None,
        changes: Vec::new(),
        reason: None,
        blocked: None,
        pve_node: None,
        foreign: false,
    }
}

fn plan_of(nodes: &[&str]) -> Plan {
    Plan {
        manifest: "m".into(),
        host: "pve".into(),
        nodes: nodes.iter().map(|n| node(n, Action::Create)).collect(),
    }
}

fn parents(pairs: &[(&str, &str)]) -> BTreeMap<NodeName, NodeName> {
    pairs
        .iter()
        .map(|(c, p)| (c.parse().unwrap(), p.parse().unwrap()))
        .collect()
}

fn config(concurrency: usize, on_error: OnError) -> Config {
    Config {
        concurrency,
        workers: concurrency,
        per_storage: PerStorage::Fixed(2),
        learned_storage: BTreeMap::new(),
        on_error,
        max_attempts: 3,
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
        lock_retry_for: Duration::from_secs(60),
    }
}

async fn run(
    fake: Arc<Fake>,
    plan: &Plan,
    parents: &BTreeMap<NodeName, NodeName>,
    cfg: &Config,
) -> Report {
    execute(plan, parents, fake, cfg, std::future::pending(), &|_| {}).await
}

use std::sync::Arc;

mod storage_limits;

#[tokio::test(start_paused = true)]
async fn parents_finish_before_children_start() {
    let fake = Arc::new(Fake::default().script("root", Step::CreateVm, &[Out::Requeue(1000)]));
    let plan = plan_of(&["root", "child", "other"]);
    let report = run(
        fake.clone(),
        &plan,
        &parents(&[("child", "root")]),
        &config(4, OnError::Stop),
    )
    .await;
    assert!(report.success(), "{report:?}");
    let root_done = fake.starts("root", Step::StartVm)[0];
    assert!(fake.starts("child", Step::CreateVm)[0] > root_done);
    // Independent work did not wait for the root.
    assert!(fake.starts("other", Step::CreateVm)[0] < root_done);
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let fake = Arc::new(Fake::default());
    let names: Vec<String> = (0..12).map(|i| format!("vm{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cfg = config(3, OnError::Stop);
    cfg.per_storage = PerStorage::Fixed(100);
    let report = run(fake.clone(), &plan_of(&refs), &BTreeMap::new(), &cfg).await;
    assert!(report.success());
    assert_eq!(fake.max_running.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn requeue_releases_the_worker() {
    // One worker, two node slots: "slow" waits on a long task, "fast" must
    // finish meanwhile.
    let fake = Arc::new(Fake::default().script("slow", Step::CreateVm, &[Out::Requeue(60_000)]));
    let t0 = Instant::now();
    let mut cfg = config(2, OnError::Stop);
    cfg.workers = 1;
    let report = run(
        fake.clone(),
        &plan_of(&["slow", "fast"]),
        &BTreeMap::new(),
        &cfg,
    )
    .await;
    assert!(report.success());
    let fast_done = fake.starts("fast", Step::StartVm)[0];
    assert!(
        fast_done - t0 < Duration::from_secs(1),
        "fast waited for slow's task"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_one_converges_nodes_one_after_the_other() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Requeue(5_000)]));
    let mut cfg = config(1, OnError::Stop);
    cfg.workers = 8;
    let report = run(fake.clone(), &plan_of(&["a", "b"]), &BTreeMap::new(), &cfg).await;
    assert!(report.success());
    assert!(fake.starts("b", Step::CreateVm)[0] > fake.starts("a", Step::StartVm)[0]);
}

#[tokio::test(start_paused = true)]
async fn storage_slots_span_requeues() {
    // Three nodes on storage "s" (limit 2), each waiting on a 10 s task.
    let mut fake = Fake::default();
    for n in ["a", "b", "c"] {
        fake = fake.script(n, Step::CreateVm, &[Out::Requeue(10_000)]);
    }
    let fake = Arc::new(fake);
    let report = run(
        fake.clone(),
        &plan_of(&["a", "b", "c"]),
        &BTreeMap::new(),
        &config(8, OnError::Stop),
    )
    .await;
    assert!(report.success());
    let a_done = fake.starts("a", Step::CreateVm)[1];
    let c_first = fake.starts("c", Step::CreateVm)[0];
    assert!(
        c_first >= a_done,
        "c took a storage slot while a and b held both"
    );
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_then_succeed() {
    let fake =
        Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Transient, Out::Transient]));
    let report = run(
        fake.clone(),
        &plan_of(&["a"]),
        &BTreeMap::new(),
        &config(2, OnError::Stop),
    )
    .await;
    assert!(report.success(), "{report:?}");
    let tries = fake.starts("a", Step::CreateVm);
    assert_eq!(tries.len(), 3);
    assert!(tries[1] - tries[0] >= Duration::from_millis(50));
    assert!(
        tries[2] - tries[1] >= Duration::from_millis(100),
        "second backoff grows"
    );
    let phase = report
        .phases
        .iter()
        .find(|p| p.name == Step::CreateVm)
        .unwrap();
    assert_eq!(phase.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_give_up_after_max_attempts() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Transient; 5]));
    let report = run(
        fake.clone(),
        &plan_of(&["a"]),
        &BTreeMap::new(),
        &config(2, OnError::Stop),
    )
    .await;
    assert_eq!(fake.starts("a", Step::CreateVm).len(), 3);
    assert!(matches!(&report.nodes["a"], NodeState::Failed(m) if m.contains("create_vm")));
}

#[tokio::test(start_paused = true)]
async fn on_error_stop_skips_unstarted_nodes() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Permanent]));
    // One worker: b has not started when a fails.
    let report = run(
        fake.clone(),
        &plan_of(&["a", "b"]),
        &BTreeMap::new(),
        &config(1, OnError::Stop),
    )
    .await;
    assert!(matches!(report.nodes["a"], NodeState::Failed(_)));
    assert!(matches!(&report.nodes["b"], NodeState::Skipped(m) if m.contains("on_error: stop")));
    assert!(fake.starts("b", Step::CreateVm).is_empty());
}

#[tokio::test(start_paused = true)]
async fn on_error_continue_skips_only_descendants() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Permanent]));
    let plan = plan_of(&["a", "a-child", "b"]);
    let report = run(
        fake.clone(),
        &plan,
        &parents(&[("a-child", "a")]),
        &config(1, OnError::Continue),
    )
    .await;
    assert!(matches!(report.nodes["a"], NodeState::Failed(_)));
    assert!(matches!(&report.nodes["a-child"], NodeState::Skipped(m) if m.contains("parent a")));
    assert_eq!(report.nodes["b"], NodeState::Converged);
}

#[tokio::test(start_paused = true)]
async fn on_error_rollback_undoes_created_nodes_children_first() {
    let fake = Arc::new(Fake::default().script("child", Step::StartVm, &[Out::Permanent]));
    let plan = plan_of(&["root", "child"]);
    let report = run(
        fake.clone(),
        &plan,
        &parents(&[("child", "root")]),
        &config(4, OnError::Rollback),
    )
    .await;
    assert_eq!(report.nodes["root"], NodeState::RolledBack);
    assert!(matches!(&report.nodes["child"], NodeState::Failed(m) if m.ends_with("(rolled back)")));
    let child_undo = fake.starts("child", Step::DestroyVm);
    let root_undo = fake.starts("root", Step::DestroyVm);
    assert_eq!((child_undo.len(), root_undo.len()), (1, 1));
    assert!(child_undo[0] < root_undo[0], "children are undone first");
}

#[tokio::test(start_paused = true)]
async fn a_no_op_node_runs_the_looks_its_controller_plans_and_stays_unchanged() {
    let mut fake = Fake::default();
    fake.steps
        .insert("n".into(), vec![Planned::new(Step::DelegateSubtree)]);
    let fake = Arc::new(fake);
    let plan = Plan {
        manifest: "m".into(),
        host: "pve".into(),
        nodes: vec![node("n", Action::NoOp)],
    };
    let report = run(
        fake.clone(),
        &plan,
        &BTreeMap::new(),
        &config(2, OnError::Stop),
    )
    .await;
    assert_eq!(report.nodes["n"], NodeState::Unchanged);
    assert_eq!(fake.log.lock().unwrap().len(), 1);
    assert!(report.success());
}

#[tokio::test(start_paused = true)]
async fn unchanged_and_refused_nodes_run_nothing() {
    let fake = Arc::new(Fake::default());
    let mut blocked = node("r", Action::Replace);
    blocked.blocked = Some("needs --allow-replace".into());
    let plan = Plan {
        manifest: "m".into(),
        host: "pve".into(),
        nodes: vec![
            node("n", Action::NoOp),
            node("c", Action::Conflict),
            blocked,
        ],
    };
    let report = run(
        fake.clone(),
        &plan,
        &BTreeMap::new(),
        &config(2, OnError::Stop),
    )
    .await;
    assert_eq!(report.nodes["n"], NodeState::Unchanged);
    assert!(matches!(report.nodes["c"], NodeState::Refused(_)));
    assert!(matches!(&report.nodes["r"], NodeState::Refused(m) if m.contains("allow-replace")));
    assert!(fake.log.lock().unwrap().is_empty());
    assert!(!report.success());
}

#[tokio::test(start_paused = true)]
async fn cancel_lets_running_steps_finish_and_starts_nothing_new() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Requeue(60_000)]));
    let cancel = tokio::time::sleep(Duration::from_secs(1));
    let plan = plan_of(&["a"]);
    let report = execute(
        &plan,
        &BTreeMap::new(),
        fake.clone(),
        &config(2, OnError::Stop),
        cancel,
        &|_| {},
    )
    .await;
    assert!(report.cancelled);
    assert_eq!(report.nodes["a"], NodeState::Interrupted);
    // The requeued step was not run again after cancel.
    assert_eq!(fake.starts("a", Step::CreateVm).len(), 1);
    assert!(!report.success());
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_entry_never_hides_a_failure_of_the_same_node() {
    // "web" has two entries, as when a duplicate VM of it is pruned: one
    // fails, the other converges; the report must say failed.
    for outs in [[Out::Permanent, Out::Done], [Out::Done, Out::Permanent]] {
        let fake = Arc::new(Fake::default().script("web", Step::CreateVm, &outs));
        let plan = Plan {
            manifest: "m".into(),
            host: "pve".into(),
            nodes: vec![node("web", Action::Update), node("web", Action::Delete)],
        };
        let report = run(fake, &plan, &BTreeMap::new(), &config(4, OnError::Continue)).await;
        assert!(
            matches!(report.nodes["web"], NodeState::Failed(_)),
            "{report:?}"
        );
        assert!(!report.success());
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_fails_only_its_node_and_frees_its_storage() {
    // One slot on storage "s": b can only create once a's panicked step
    // gave the slot back.
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Panic]));
    let mut cfg = config(2, OnError::Continue);
    cfg.per_storage = PerStorage::Fixed(1);
    let report = run(fake.clone(), &plan_of(&["a", "b"]), &BTreeMap::new(), &cfg).await;
    assert!(
        matches!(&report.nodes["a"], NodeState::Failed(m) if m.contains("internal error")),
        "{report:?}"
    );
    assert_eq!(report.nodes["b"], NodeState::Converged, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_fails_its_node_instead_of_hanging() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::Panic]));
    let report = run(
        fake.clone(),
        &plan_of(&["a"]),
        &BTreeMap::new(),
        &config(1, OnError::Stop),
    )
    .await;
    assert!(
        matches!(&report.nodes["a"], NodeState::Failed(m) if m.contains("internal error")),
        "{report:?}"
    );
}
