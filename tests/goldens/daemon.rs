//! Checkers for the controller kinds: spec_request, spec_auth, http_get,
//! repo_request and repo_token.
//!
//! Each case drives the daemon's own handlers in-process, as the reference
//! drove its controller: a fresh [`Site`] per case, no socket. `http_get`
//! runs with no repositories initialised and an empty repo token, as
//! recorded; `repo_request` serves a temporary directory holding only an
//! empty `present.git/`.
//!
//! Cases with a `note` record the reference's path traversal
//! (`/spec/../../secrets` served `secrets.yaml`): they pass only when we
//! refuse the request, and the refusal must not carry the secrets.

use std::sync::Arc;

use homestak_core::site::Site;
use homestak_daemon::auth::RepoAuth;
use homestak_daemon::repos::RepoSet;
use homestak_daemon::seed::{self, Context};
use serde_json::{Value, json};

use super::common::{Case, Expected, Verdict, compare, normalise_message};

/// Checks `case` if its kind belongs here; `None` otherwise.
pub fn check(case: &Case) -> Option<Verdict> {
    match case.kind.as_str() {
        "spec_request" | "spec_auth" | "http_get" | "repo_request" | "repo_token" => {}
        _ => return None,
    }
    Some(Verdict::from_result(run(case)))
}

fn input<'a>(case: &'a Case, key: &str) -> Option<&'a str> {
    case.inputs.get(key).and_then(Value::as_str)
}

fn required<'a>(case: &'a Case, key: &str) -> Result<&'a str, String> {
    input(case, key).ok_or_else(|| format!("case has no string input {key:?}"))
}

/// One current-thread runtime per case: repo requests run git.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn run(case: &Case) -> Result<(), String> {
    let authorization = input(case, "authorization");
    let actual: Value = match case.kind.as_str() {
        "repo_token" => {
            let auth = RepoAuth::from_expected(required(case, "expected_token")?);
            match auth.check(authorization) {
                Ok(()) => Value::Null,
                Err(e) => json!({"code": e.code, "message": e.message, "http_status": e.status}),
            }
        }
        kind => {
            let site = Site::load(&case.site_config)
                .map_err(|e| format!("site-config does not load: {e}"))?;
            match kind {
                "spec_auth" => {
                    match seed::spec_auth(&site, required(case, "identity")?, authorization) {
                        Ok(_) => Value::Null,
                        Err(e) => {
                            json!({"code": e.code, "message": e.message, "http_status": e.status})
                        }
                    }
                }
                "spec_request" => {
                    let reply = match input(case, "function") {
                        Some("handle_specs_list") => seed::specs_list(&site),
                        Some(other) => return Err(format!("unknown function {other}")),
                        None => {
                            seed::spec_request(&site, required(case, "identity")?, authorization)
                        }
                    };
                    json!({"status": reply.status, "body": reply.body_json()})
                }
                "http_get" => {
                    let ctx = Context {
                        site: Arc::new(site),
                        repos: None,
                        repo_auth: RepoAuth::from_expected(""),
                    };
                    let path = required(case, "path")?;
                    let reply = block_on(seed::handle(&ctx, path, authorization))
                        .unwrap_or_else(|| seed::unknown_endpoint(path));
                    json!({"status": reply.status, "content_type": reply.content_type, "body": reply.body_json()})
                }
                "repo_request" => {
                    let serve_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let present = serve_dir.path().join("present.git");
                    std::fs::create_dir(&present).map_err(|e| e.to_string())?;
                    let ctx = Context {
                        site: Arc::new(site),
                        repos: Some(Arc::new(RepoSet::from_dirs([(
                            "present".to_string(),
                            present,
                        )]))),
                        repo_auth: RepoAuth::from_expected(required(case, "repo_token")?),
                    };
                    // The reference called its repo handler itself, with
                    // the path as given: no routing, no normalisation.
                    let path = required(case, "path")?;
                    let reply = block_on(seed::repo_request(&ctx, path, authorization));
                    json!({"status": reply.status, "content_type": reply.content_type, "body": reply.body_json()})
                }
                other => return Err(format!("kind {other} is not handled here")),
            }
        }
    };
    judge(case, &normalise_strings(actual, case))
}

/// Writes the site-config directory in our strings as `{site_config}`, as
/// the goldens record the reference's absolute paths (an E500 naming
/// `secrets.yaml`, for one).
fn normalise_strings(value: Value, case: &Case) -> Value {
    match value {
        Value::String(s) => Value::String(normalise_message(&s, &case.site_config)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| normalise_strings(v, case))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalise_strings(v, case)))
                .collect(),
        ),
        other => other,
    }
}

/// True when our answer is a refusal (an error object or an HTTP error).
fn is_refusal(case: &Case, actual: &Value) -> bool {
    match case.kind.as_str() {
        "spec_auth" | "repo_token" => actual.get("code").is_some(),
        _ => actual
            .get("status")
            .and_then(Value::as_u64)
            .is_some_and(|s| s >= 400),
    }
}

fn judge(case: &Case, actual: &Value) -> Result<(), String> {
    if let Some(note) = &case.note {
        // A flagged reference defect: we must refuse, and the refusal must
        // not carry what the reference leaked.
        if !is_refusal(case, actual) {
            return Err(format!(
                "reproduced a flagged reference defect ({note}): {actual}"
            ));
        }
        if let Expected::Output(leaked) = &case.expected
            && let Some(body) = leaked.get("body")
        {
            let ours = actual.to_string();
            for secret in secrets_in(body) {
                if ours.contains(&secret) {
                    return Err(format!("refusal leaks {secret:?}: {ours}"));
                }
            }
        }
        return Ok(());
    }
    match &case.expected {
        Expected::Output(expected) => compare(expected, actual),
        // The reference crashed (a Python exception): we must fail too; the
        // wording is not a contract.
        Expected::Error { .. } if case.expected.is_crash() => {
            if is_refusal(case, actual) {
                Ok(())
            } else {
                Err(format!("the reference failed, we answered {actual}"))
            }
        }
        Expected::Error { message, .. } => Err(format!("expected error {message:?}, got {actual}")),
    }
}

/// The token and password values of a leaked secrets.yaml body.
fn secrets_in(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for section in ["api_tokens", "passwords"] {
        if let Some(map) = body.get(section).and_then(Value::as_object) {
            out.extend(map.values().filter_map(Value::as_str).map(str::to_string));
        }
    }
    if let Some(auth) = body.get("auth") {
        if let Some(site) = auth.get("site_token").and_then(Value::as_str) {
            out.push(site.to_string());
        }
        if let Some(map) = auth.get("node_tokens").and_then(Value::as_object) {
            out.extend(map.values().filter_map(Value::as_str).map(str::to_string));
        }
    }
    out
}
