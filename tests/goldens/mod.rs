//! Differential test against the Python iac-driver's recorded outputs.
//!
//! Every case file in `$HOMESTAK_GOLDENS_DIR` (default
//! `../shared/reference-goldens`) is one call of the reference on one
//! site-config tree (format: that folder's README). Each case's
//! `inputs.site_config` is resolved against `$HOMESTAK_SHARED_DIR` (default
//! `../shared`). Kinds are checked by the module that owns them; kinds no
//! module claims are listed as skipped, never counted as passed.
//!
//! Run alone with `cargo test --test goldens -- --nocapture` for the report.

// Helpers are used unevenly while checkers are filled in.
#[allow(dead_code)]
mod common;
mod daemon;
mod manifest;
mod site;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{Case, Verdict};

/// Kinds this runner must check (the foundation's and the controller's); a
/// case of one of these with no checker fails.
const MUST_CHECK_KINDS: &[&str] = &[
    "resolve_env",
    "resolve_ansible_vars",
    "resolve_inline_vm",
    "list",
    "host_config",
    "manifest_load",
    "manifest_graph",
    "manifest_subtree",
    "manifest_depth",
    "manifest_remaining",
    "manifest_json_roundtrip",
    "manifest_from_json",
    "spec_resolve",
    "auth_token",
    "spec_request",
    "spec_auth",
    "http_get",
    "repo_request",
    "repo_token",
];

fn check(case: &Case) -> Option<Verdict> {
    manifest::check(case)
        .or_else(|| site::check(case))
        .or_else(|| daemon::check(case))
}

/// Cases where homestak refuses on purpose what the reference accepted:
/// (case id prefix, text our failure must contain, why). Such a case
/// passes only when it fails in exactly that way.
const DEVIATIONS: &[(&str, &str, &str)] = &[];

/// Why `id` may fail with `why`, when it is a listed deviation.
fn deviation(id: &str, why: &str) -> Option<&'static str> {
    DEVIATIONS
        .iter()
        .find(|(prefix, text, _)| id.starts_with(prefix) && why.contains(text))
        .map(|(_, _, reason)| *reason)
}

#[test]
fn reference_goldens() {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("HOMESTAK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../shared"));
    let goldens = std::env::var_os("HOMESTAK_GOLDENS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("reference-goldens"));
    if !goldens.is_dir() {
        println!(
            "goldens: SKIPPED, no case directory at {} (set HOMESTAK_GOLDENS_DIR or provide ../shared)",
            goldens.display()
        );
        return;
    }
    let cases = common::load_cases(&goldens, &shared);
    assert!(!cases.is_empty(), "no case files in {}", goldens.display());

    // kind -> (passed, failed, skipped)
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut deviated = Vec::new();
    for case in &cases {
        let entry = counts.entry(case.kind.clone()).or_default();
        match check(case) {
            Some(Verdict::Pass) => entry.0 += 1,
            Some(Verdict::Fail(why)) if deviation(&case.id, &why).is_some() => {
                entry.0 += 1;
                let reason = deviation(&case.id, &why).unwrap_or_default();
                deviated.push(format!("{}: {reason}", case.id));
            }
            Some(Verdict::Fail(why)) => {
                entry.1 += 1;
                failures.push(format!("{}: {why}", case.id));
            }
            None if MUST_CHECK_KINDS.contains(&case.kind.as_str()) => {
                entry.1 += 1;
                failures.push(format!("{}: no checker for kind {}", case.id, case.kind));
            }
            None => entry.2 += 1,
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for (kind, (p, f, s)) in &counts {
        passed += p;
        failed += f;
        if *s > 0 {
            println!(
                "{kind:<24} {p:>3} passed {f:>3} failed {s:>3} skipped (kind not implemented here)"
            );
        } else {
            println!("{kind:<24} {p:>3} passed {f:>3} failed");
        }
    }
    for case in &deviated {
        println!("DEVIATES (on purpose) {case}");
    }
    for failure in &failures {
        println!("FAIL {failure}");
    }
    println!("{passed} passed, {failed} failed");
    assert!(
        failures.is_empty(),
        "{failed} golden case(s) failed; see the report above"
    );
}
