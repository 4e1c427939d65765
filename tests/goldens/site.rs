//! Checkers for the site-config kinds: resolve_env, resolve_ansible_vars,
//! resolve_inline_vm, list (all but the manifest list), host_config,
//! spec_resolve and auth_token.
//!
//! Each case loads a fresh [`Site`] from its directory and calls the public
//! API. The reference found the site-config for host_config and list_hosts
//! through `HOMESTAK_SITE_CONFIG`; our API takes the directory, so the
//! process environment is never touched.

use std::path::Path;

use homestak_core::site::{InlineVm, Site};
use serde_json::{Value, json};

use super::common::{Case, Expected, Verdict, compare, normalise_message};

/// Our failure, as the comparison needs it.
struct Failure {
    /// Top-level message (no cause chain).
    message: String,
    code: Option<&'static str>,
}

impl Failure {
    fn new(err: &dyn std::error::Error, code: Option<&'static str>) -> Failure {
        Failure {
            message: err.to_string(),
            code,
        }
    }
}

/// Checks `case` if its kind belongs here; `None` otherwise.
pub fn check(case: &Case) -> Option<Verdict> {
    match case.kind.as_str() {
        "resolve_env"
        | "resolve_ansible_vars"
        | "resolve_inline_vm"
        | "host_config"
        | "spec_resolve"
        | "auth_token" => {}
        // The manifest list belongs to the model's checker.
        "list" if input(case, "function") != Some("ManifestLoader.list_manifests") => {}
        _ => return None,
    }
    Some(Verdict::from_result(run(case)))
}

fn run(case: &Case) -> Result<(), String> {
    let actual = match Site::load(&case.site_config) {
        Ok(site) => call(case, &site)?,
        Err(err) => Err(Failure::new(&err, None)),
    };
    judge(case, actual)
}

fn input<'a>(case: &'a Case, key: &str) -> Option<&'a str> {
    case.inputs.get(key).and_then(Value::as_str)
}

fn required<'a>(case: &'a Case, key: &str) -> Result<&'a str, String> {
    input(case, key).ok_or_else(|| format!("case has no string input {key:?}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("outputs serialise")
}

/// Calls our API for the case. The outer error is a malformed case.
fn call(case: &Case, site: &Site) -> Result<Result<Value, Failure>, String> {
    Ok(match case.kind.as_str() {
        "resolve_env" => site
            .resolve_env(required(case, "env")?, required(case, "node")?)
            .map(|v| to_json(&v))
            .map_err(|e| Failure::new(&e, e.code())),
        "resolve_ansible_vars" => site
            .resolve_ansible_vars(required(case, "env")?)
            .map(|v| to_json(&v))
            .map_err(|e| Failure::new(&e, e.code())),
        "resolve_inline_vm" => {
            let opt = |k: &str| input(case, k).map(str::to_string);
            let vmid = match case.inputs.get("vmid") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| format!("vmid {v} is not a VM ID"))?,
                ),
            };
            let inline = InlineVm {
                node: required(case, "node")?.to_string(),
                vm_name: required(case, "vm_name")?.to_string(),
                vmid,
                template: opt("template"),
                vm_preset: opt("vm_preset"),
                image: opt("image"),
                posture: opt("posture"),
                ..InlineVm::default()
            };
            site.resolve_inline_vm(&inline)
                .map(|v| to_json(&v))
                .map_err(|e| Failure::new(&e, e.code()))
        }
        "list" => Ok(json!(match required(case, "function")? {
            "ConfigResolver.list_envs" => site.list_envs(),
            "ConfigResolver.list_postures" => site.list_postures(),
            "ConfigResolver.list_templates" => site.list_templates(),
            "ConfigResolver.list_presets" => site.list_presets(),
            "SpecResolver.list_specs" => site.list_specs(),
            "config.list_hosts" => site.list_hosts(),
            other => return Err(format!("unknown list function {other}")),
        })),
        "host_config" => site
            .host_config(required(case, "host")?)
            .map(|hc| {
                let mut v = to_json(&hc);
                // The golden adds the token getter's value to the attributes.
                v["api_token"] = json!(hc.api_token().map(|t| t.expose()).unwrap_or_default());
                v
            })
            .map_err(|e| Failure::new(&e, e.code())),
        "spec_resolve" => site
            .resolve_spec(required(case, "identity")?)
            .map(|v| to_json(&v))
            .map_err(|e| Failure::new(&e, e.code())),
        "auth_token" => {
            let identity = input(case, "identity").unwrap_or_default();
            let secret_json = |s: Option<&homestak_core::site::Secret>| match s {
                Some(s) => json!(s.expose()),
                None => Value::Null,
            };
            match required(case, "function")? {
                "get_auth_token" => site
                    .auth_token(required(case, "posture")?, identity)
                    .map(|s| json!(s.expose())),
                "get_site_token" => site.site_token().map(secret_json),
                "get_node_token" => site.node_token(identity).map(secret_json),
                other => return Err(format!("unknown auth function {other}")),
            }
            .map_err(|e| Failure::new(&e, e.code()))
        }
        other => return Err(format!("kind {other} is not handled here")),
    })
}

/// Compares our result with the golden, per the README's rules.
fn judge(case: &Case, actual: Result<Value, Failure>) -> Result<(), String> {
    if let Some(note) = &case.note {
        // A flagged reference defect: we must refuse, not reproduce it.
        return match actual {
            Err(_) => Ok(()),
            Ok(v) => Err(format!(
                "reproduced a flagged reference defect ({note}): {v}"
            )),
        };
    }
    match (&case.expected, actual) {
        (Expected::Output(expected), Ok(ours)) => {
            compare(expected, &normalise_paths(ours, &case.site_config))
        }
        (Expected::Output(_), Err(f)) => Err(format!("expected output, got error: {}", f.message)),
        (Expected::Error { message, .. }, Ok(ours)) => {
            Err(format!("expected error {message:?}, got output {ours}"))
        }
        (Expected::Error { .. }, Err(_)) if case.expected.is_crash() => Ok(()),
        (
            Expected::Error {
                error_code: Some(code),
                ..
            },
            Err(f),
        ) => match f.code {
            Some(ours) if ours == code => Ok(()),
            ours => Err(format!(
                "expected code {code}, got {ours:?} ({})",
                f.message
            )),
        },
        (Expected::Error { message, .. }, Err(f)) => {
            let ours = normalise_message(&f.message, &case.site_config);
            if &ours == message {
                Ok(())
            } else {
                Err(format!("expected error {message:?}, got {ours:?}"))
            }
        }
    }
}

/// Writes absolute paths in string values the way the goldens do: the
/// site-config directory as `{site_config}`, the home directory as `~`.
fn normalise_paths(value: Value, site_config: &Path) -> Value {
    let home = std::env::var("HOME").ok().filter(|h| h.len() > 1);
    match value {
        Value::String(s) => {
            let mut s = normalise_message(&s, site_config);
            if let Some(home) = &home
                && let Some(rest) = s.strip_prefix(home.as_str())
                && rest.starts_with('/')
            {
                s = format!("~{rest}");
            }
            Value::String(s)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| normalise_paths(v, site_config))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalise_paths(v, site_config)))
                .collect(),
        ),
        other => other,
    }
}
