//! Declarative end-to-end tests: every directory of `reconciler-tests/`
//! with a `case.yaml` is one case, run against a fresh simulator (the
//! format is in `reconciler-tests/README.md`; adding a case needs no Rust).
//!
//! `cargo test --test reconciler` runs them all and prints one line per
//! case. Arguments that are not flags filter cases by name
//! (`cargo test --test reconciler -- 05 grow`, whole names with
//! `--exact`); `--list` lists them as libtest does.
//! `RECONCILER_TEST_JOBS=N` runs N cases at once (default 1; each case has
//! its own simulator and loopback address block, so they never collide).

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reconciler_support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reconciler_support::case::Case;
use reconciler_support::run;

/// libtest flags that take a value, so the value is not read as a filter.
const VALUE_FLAGS: &[&str] = &[
    "--test-threads",
    "--skip",
    "--format",
    "--color",
    "--logfile",
    "-Z",
];

fn cases(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(['_', '.']) || !entry.path().join("case.yaml").is_file() {
            continue;
        }
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skip_value = false;
    for arg in &args {
        if skip_value {
            skip_value = false;
        } else if VALUE_FLAGS.contains(&arg.as_str()) {
            skip_value = true;
        } else if !arg.starts_with('-') {
            filters.push(arg.clone());
        }
    }
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("reconciler-tests");
    let template = root.join("_site");
    let all = match cases(&root) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("cannot list {}: {err}", root.display());
            return ExitCode::FAILURE;
        }
    };
    // `--ignored` asks for ignored tests; no case is ignored.
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<(String, PathBuf)> = all
        .into_iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .filter(|_| !args.iter().any(|a| a == "--ignored"))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let jobs = std::env::var("RECONCILER_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(err) => {
            eprintln!("cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\nrunning {} reconciler-test cases ({jobs} at a time)",
        selected.len()
    );
    let began = Instant::now();
    let failures = runtime.block_on(run_all(selected, template, jobs));
    println!(
        "\nreconciler-tests: {} failed; finished in {:.1}s",
        failures.len(),
        began.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("\nfailures:");
        for (name, message) in &failures {
            println!("\n---- {name} ----\n{message}");
        }
        ExitCode::FAILURE
    }
}

/// Runs the cases in name order, `jobs` at a time, printing a line as
/// each ends. Returns the failures (name, message).
async fn run_all(
    cases: Vec<(String, PathBuf)>,
    template: PathBuf,
    jobs: usize,
) -> Vec<(String, String)> {
    let template = Arc::new(template);
    let mut set = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for (name, dir) in cases {
        while set.len() >= jobs {
            if let Some(joined) = set.join_next().await {
                report(joined, &mut failures);
            }
        }
        let template = template.clone();
        set.spawn(async move {
            let began = Instant::now();
            // A case that does not load fails in `run` with the YAML error.
            let (timeout, description) = Case::load(&dir.join("case.yaml"))
                .map_or((120, String::new()), |c| (c.timeout, c.description));
            let result =
                match tokio::time::timeout(Duration::from_secs(timeout), run::run(&dir, &template))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!(
                        "hang guard: the case ran longer than {timeout}s"
                    )),
                };
            (name, description, began.elapsed(), result)
        });
    }
    while let Some(joined) = set.join_next().await {
        report(joined, &mut failures);
    }
    failures
}

type Finished = (String, String, Duration, anyhow::Result<run::Passed>);

/// Prints one case's line (and its notes); keeps a failure for the summary.
fn report(joined: Result<Finished, tokio::task::JoinError>, failures: &mut Vec<(String, String)>) {
    let (name, description, took, result) = match joined {
        Ok(v) => v,
        Err(err) => {
            failures.push(("(a case task)".to_string(), err.to_string()));
            return;
        }
    };
    match result {
        Ok(passed) => {
            println!(
                "case {name:<44} ok     {:>3} steps  {:>6.2}s",
                passed.steps,
                took.as_secs_f64()
            );
            for note in passed.notes {
                println!("    {note}");
            }
        }
        Err(err) => {
            println!(
                "case {name:<44} FAILED            {:>6.2}s",
                took.as_secs_f64()
            );
            let about = if description.trim().is_empty() {
                String::new()
            } else {
                format!("\n  (the case: {})", description.trim())
            };
            failures.push((name.clone(), format!("case {name}: {err:#}{about}")));
        }
    }
}
