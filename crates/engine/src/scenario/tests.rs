use std::time::Duration;

use super::*;

fn record(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let n = ctx
            .context
            .get("count")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        ctx.context.set("count", n + 1);
        Ok(format!("count {}", n + 1))
    })
}

fn slow(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ctx.context.set("slow", true);
        Ok("slept".into())
    })
}

fn boom(_: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        Err(PhaseError::failed(
            "the widget is missing",
            Some("install it".to_string()),
        ))
    })
}

fn three() -> Vec<PhaseDef> {
    vec![
        PhaseDef {
            name: "ensure_one",
            description: "one",
            run: record,
        },
        PhaseDef {
            name: "wait_slow",
            description: "slow",
            run: slow,
        },
        PhaseDef {
            name: "verify_two",
            description: "two",
            run: record,
        },
    ]
}

fn failing() -> Vec<PhaseDef> {
    vec![
        PhaseDef {
            name: "ensure_one",
            description: "one",
            run: record,
        },
        PhaseDef {
            name: "setup_boom",
            description: "fails",
            run: boom,
        },
        PhaseDef {
            name: "verify_two",
            description: "never runs",
            run: record,
        },
    ]
}

const OK: ScenarioDef = ScenarioDef {
    name: "test-ok",
    runtime: Duration::from_secs(30),
    description: "three phases",
    needs: Needs::Nothing,
    phases: three,
};

const FAILS: ScenarioDef = ScenarioDef {
    name: "test-fails",
    runtime: Duration::from_secs(180),
    description: "fails in the middle",
    needs: Needs::Target,
    phases: failing,
};

async fn go(def: &ScenarioDef, options: &RunOptions) -> (ScenarioRun, Ctx, Vec<String>) {
    let mut ctx = Ctx::new(Inputs::default(), Context::new());
    let mut heard = Vec::new();
    let run = run(
        def,
        &mut ctx,
        options,
        std::future::pending(),
        &mut |name, done| {
            heard.push(match done {
                None => format!("start {name}"),
                Some(r) => format!("{} {name}", r.status),
            });
        },
    )
    .await;
    (run, ctx, heard)
}

#[tokio::test]
async fn phases_run_in_order_and_share_the_context() {
    let (run, ctx, heard) = go(&OK, &RunOptions::default()).await;
    assert_eq!(run.outcome, Outcome::Converged);
    assert_eq!(run.error, None);
    let names: Vec<_> = run.phases.iter().map(|p| p.name).collect();
    assert_eq!(names, ["ensure_one", "wait_slow", "verify_two"]);
    assert_eq!(ctx.context.get("count"), Some(&serde_json::json!(2)));
    assert_eq!(run.phases[2].message, "count 2");
    assert_eq!(
        heard,
        [
            "start ensure_one",
            "passed ensure_one",
            "start wait_slow",
            "passed wait_slow",
            "start verify_two",
            "passed verify_two"
        ]
    );
}

#[tokio::test]
async fn a_failure_stops_the_run_and_names_the_phase_and_the_fix() {
    let (run, ctx, _) = go(&FAILS, &RunOptions::default()).await;
    assert_eq!(run.outcome, Outcome::Failed);
    assert_eq!(run.phases.len(), 2, "the phase after a failure never runs");
    assert_eq!(run.phases[1].status, PhaseStatus::Failed);
    assert_eq!(
        run.error.as_deref(),
        Some("setup_boom: the widget is missing; install it")
    );
    assert_eq!(ctx.context.get("count"), Some(&serde_json::json!(1)));
}

#[tokio::test]
async fn skipped_phases_are_reported_and_not_run() {
    let options = RunOptions {
        skip: vec!["ensure_one".into(), "wait_slow".into()],
        timeout: None,
    };
    let (run, ctx, _) = go(&OK, &options).await;
    assert_eq!(run.outcome, Outcome::Converged);
    let statuses: Vec<_> = run.phases.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [
            PhaseStatus::Skipped,
            PhaseStatus::Skipped,
            PhaseStatus::Passed
        ]
    );
    assert_eq!(ctx.context.get("slow"), None);
    assert_eq!(ctx.context.get("count"), Some(&serde_json::json!(1)));
}

#[test]
fn unknown_skip_names_are_found() {
    let skip = vec!["wait_slow".to_string(), "wait_sloww".to_string()];
    assert_eq!(unknown_skips(&OK, &skip), ["wait_sloww"]);
}

#[tokio::test]
async fn the_timeout_is_checked_between_phases() {
    let options = RunOptions {
        skip: Vec::new(),
        timeout: Some(Duration::from_millis(20)),
    };
    let (run, ctx, _) = go(&OK, &options).await;
    assert_eq!(run.outcome, Outcome::Failed);
    // The slow phase finishes (the timeout is not preemptive, as in the
    // Python tool); the next one is refused.
    assert_eq!(ctx.context.get("slow"), Some(&serde_json::json!(true)));
    assert_eq!(run.phases.len(), 3);
    assert_eq!(run.phases[2].status, PhaseStatus::Failed);
    let error = run.error.unwrap_or_default();
    assert!(
        error.contains("timeout exceeded") && error.contains("verify_two"),
        "{error}"
    );
}

#[tokio::test]
async fn a_signal_interrupts_the_phase_in_flight() {
    let mut ctx = Ctx::new(Inputs::default(), Context::new());
    let cancel = tokio::time::sleep(Duration::from_millis(10));
    let run = run(
        &OK,
        &mut ctx,
        &RunOptions::default(),
        cancel,
        &mut |_, _| {},
    )
    .await;
    assert_eq!(run.outcome, Outcome::Interrupted);
    assert_eq!(run.phases.last().map(|p| p.name), Some("wait_slow"));
    assert_eq!(ctx.context.get("slow"), None);
}

#[test]
fn the_context_file_round_trips_and_a_missing_one_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctx.json");
    assert_eq!(Context::load(&path).unwrap(), Context::new());
    let mut ctx = Context::new();
    ctx.set("vm_ip", "127.0.0.5");
    ctx.set("vm_id", 99900);
    ctx.save(&path).unwrap();
    let back = Context::load(&path).unwrap();
    assert_eq!(back, ctx);
    assert_eq!(back.get_str("vm_id").as_deref(), Some("99900"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(&path, "[1, 2]").unwrap();
    let err = Context::load(&path).unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
}

#[test]
fn retired_scenarios_point_to_their_replacement() {
    for (name, expect) in [
        ("vm-roundtrip", "homestak test"),
        ("nested-pve-roundtrip", "tiered manifest"),
        ("recursive-pve-constructor", "tiered manifest"),
        ("vm-constructor", "homestak create"),
    ] {
        match find(name) {
            Lookup::Retired(hint) => assert!(hint.contains(expect), "{name}: {hint}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(find("no-such-scenario"), Lookup::Unknown));
}

#[test]
fn targets_come_from_the_flags() {
    let inputs = Inputs {
        remote: Some("127.0.0.9".into()),
        ssh_key: Some("/k".into()),
        ..Inputs::default()
    };
    match Where::of(&inputs).unwrap() {
        Where::Ssh { destination, key } => {
            assert_eq!(destination.to_string(), "root@127.0.0.9:22");
            assert_eq!(key, std::path::PathBuf::from("/k"));
        }
        other => panic!("{other:?}"),
    }
    let local = Inputs {
        local: true,
        ..Inputs::default()
    };
    assert_eq!(Where::of(&local).unwrap(), Where::Local);
    let err = check_needs(&FAILS, &Inputs::default()).unwrap_err();
    assert!(err.contains("--local, --remote IP or --host NAME"), "{err}");
    assert!(check_needs(&OK, &Inputs::default()).is_ok());
}

#[tokio::test]
async fn the_local_shell_runs_commands_and_writes_files() {
    use homestak_ssh::Session;
    let dir = tempfile::tempdir().unwrap();
    let shell = shell::LocalSession::new();
    let path = dir.path().join("f");
    let upload = homestak_ssh::Upload::bytes(b"hello".to_vec(), path.to_string_lossy(), 0o640);
    shell.upload(&upload).await.unwrap();
    let out = shell
        .exec_ok(&homestak_ssh::Command::shell(format!(
            "cat {} && echo err >&2",
            path.display()
        )))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "hello");
    assert_eq!(out.stderr_text(), "err\n");
    let failed = shell
        .exec(&homestak_ssh::Command::shell("exit 3"), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(3));
}
