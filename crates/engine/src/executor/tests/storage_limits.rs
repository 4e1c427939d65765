//! Per-storage limits as the scheduler applies them: learned from how long
//! steps hold their slot, halved on long waits and lock timeouts, and lock
//! timeouts retried beyond `max_attempts`.

use super::*;

fn learning(concurrency: usize, initial: usize, ceiling: usize) -> Config {
    Config {
        per_storage: PerStorage::Learn { initial, ceiling },
        ..config(concurrency, OnError::Stop)
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("vm{i:02}")).collect()
}

/// Most nodes whose create_vm held a storage slot at once: a node holds
/// it from its first create_vm run until its start_vm starts (the next
/// step, admitted as soon as the create is done).
fn most_holding(fake: &Fake, nodes: &[String]) -> usize {
    let spans: Vec<(Instant, Instant)> = nodes
        .iter()
        .map(|n| {
            (
                fake.starts(n, Step::CreateVm)[0],
                fake.starts(n, Step::StartVm)[0],
            )
        })
        .collect();
    spans
        .iter()
        .map(|(at, _)| spans.iter().filter(|(s, e)| s <= at && at < e).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn short_waits_raise_the_limit_up_to_the_ceiling() {
    // Every create waits the same 100 ms task, contended or not.
    let nodes = names(40);
    let mut fake = Fake::default();
    for n in &nodes {
        fake = fake.script(n, Step::CreateVm, &[Out::Requeue(100)]);
    }
    let fake = Arc::new(fake);
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let cfg = learning(40, 2, 5);
    let report = run(fake.clone(), &plan_of(&refs), &BTreeMap::new(), &cfg).await;
    assert!(report.success(), "{report:?}");
    assert_eq!(report.storage["s"].limit, 5);
    assert_eq!(report.storage["s"].lock_timeouts, 0);
    let most = most_holding(&fake, &nodes);
    assert!(most > 2, "the limit never rose above its start: {most}");
    assert!(most <= 5, "more than the ceiling held the storage: {most}");
}

#[tokio::test(start_paused = true)]
async fn long_waits_halve_the_limit_down_to_one() {
    // One node after the other, so each create is alone on the storage:
    // the first is quick (its uncontended time), every later one waits a
    // second longer and halves the limit.
    let slow = |n: usize| {
        let nodes = names(n);
        let mut fake = Fake::default();
        for n in &nodes[1..] {
            fake = fake.script(n, Step::CreateVm, &[Out::Requeue(1000)]);
        }
        (Arc::new(fake), nodes)
    };
    for (n, limit) in [(2, 4), (3, 2), (4, 1), (6, 1)] {
        let (fake, nodes) = slow(n);
        let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let report = run(fake, &plan_of(&refs), &BTreeMap::new(), &learning(1, 8, 16)).await;
        assert!(report.success(), "{report:?}");
        assert_eq!(report.storage["s"].limit, limit, "after {n} creates");
    }
}

#[tokio::test(start_paused = true)]
async fn a_learned_limit_is_where_a_run_starts() {
    let nodes = names(6);
    let mut fake = Fake::default();
    for n in &nodes {
        fake = fake.script(n, Step::CreateVm, &[Out::Requeue(10_000)]);
    }
    let fake = Arc::new(fake);
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let mut cfg = learning(8, 2, 16);
    cfg.learned_storage.insert("s".into(), 4);
    run(fake.clone(), &plan_of(&refs), &BTreeMap::new(), &cfg).await;
    assert_eq!(most_holding(&fake, &nodes), 4);
}

#[tokio::test(start_paused = true)]
async fn lock_timeouts_are_retried_beyond_max_attempts_and_counted() {
    let events = Mutex::new(Vec::new());
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::LockTimeout; 5]));
    let cfg = learning(2, 4, 16);
    let report = execute(
        &plan_of(&["a"]),
        &BTreeMap::new(),
        fake.clone(),
        &cfg,
        std::future::pending(),
        &|e| events.lock().unwrap().push(e),
    )
    .await;
    assert!(report.success(), "{report:?}");
    // Five timeouts and the try that worked; max_attempts is 3.
    assert_eq!(fake.starts("a", Step::CreateVm).len(), 6);
    assert_eq!(report.storage["s"].lock_timeouts, 5);
    // Halved by the first, then once per slot taken after a decrease:
    // 4, 2, 1, 1, 1; the last success adds 1/1.
    assert_eq!(report.storage["s"].limit, 2);
    let events = events.lock().unwrap();
    let timeouts = events
        .iter()
        .filter(|e| e.kind == homestak_api::Kind::StorageLockTimeout)
        .count();
    assert_eq!(timeouts, 5);
    assert!(
        !events
            .iter()
            .any(|e| e.kind == homestak_api::Kind::StepRetry),
        "a lock timeout is not an attempt"
    );
    let phase = report
        .phases
        .iter()
        .find(|p| p.name == Step::CreateVm)
        .unwrap();
    assert_eq!(phase.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_storage_locked_for_good_fails_the_node_in_the_end() {
    let fake = Arc::new(Fake::default().script("a", Step::CreateVm, &[Out::LockTimeout; 1000]));
    let mut cfg = learning(2, 2, 16);
    cfg.lock_retry_for = Duration::from_secs(30);
    let t0 = Instant::now();
    let report = run(fake.clone(), &plan_of(&["a"]), &BTreeMap::new(), &cfg).await;
    assert!(
        matches!(&report.nodes["a"], NodeState::Failed(m) if m.contains("stayed locked")),
        "{report:?}"
    );
    let tries = fake.starts("a", Step::CreateVm).len();
    assert!(tries > 3 && tries < 1000, "{tries} tries");
    assert!(Instant::now() - t0 >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn steps_without_a_storage_run_while_every_slot_is_held() {
    // "a" and "b" hold both slots of "s" with a long create; "c" plans
    // only steps without a storage and must not wait for them.
    let mut fake = Fake::default()
        .script("a", Step::CreateVm, &[Out::Requeue(60_000)])
        .script("b", Step::CreateVm, &[Out::Requeue(60_000)]);
    fake.steps.insert(
        "c".into(),
        vec![
            Planned::new(Step::ResizeDisk),
            Planned::new(Step::StartVm),
            Planned::new(Step::WaitAgentIp),
        ],
    );
    let fake = Arc::new(fake);
    let t0 = Instant::now();
    let report = run(
        fake.clone(),
        &plan_of(&["a", "b", "c"]),
        &BTreeMap::new(),
        &config(8, OnError::Stop),
    )
    .await;
    assert!(report.success(), "{report:?}");
    let c_done = fake.starts("c", Step::WaitAgentIp)[0];
    assert!(c_done - t0 < Duration::from_secs(1), "c waited for a slot");
    assert!(fake.starts("c", Step::ResizeDisk)[0] < fake.starts("a", Step::StartVm)[0]);
}
