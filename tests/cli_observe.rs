//! `homestak status` and `reconcile --once` observe fast by default (one
//! GET of `/cluster/resources` for a converged tier) and read every VM's
//! config with `--deep`; the JSON report says which ran.

use std::path::Path;

use serde_json::Value;

use crate::cli_output::demo_command;
use crate::support::{demo_sim, text};

/// The simulator's request counters since the last call, reset after.
async fn requests(info: &Value) -> Value {
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let base = info["url"].as_str().unwrap().trim_end_matches('/');
    let auth = format!("PVEAPIToken={}", info["token"].as_str().unwrap());
    let body: Value = client
        .get(format!("{base}/_sim/requests"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reset = client
        .delete(format!("{base}/_sim/requests"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    body["data"]["requests"].clone()
}

fn status_json(site: &Path, state: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "status"];
    args.extend_from_slice(extra);
    let out = demo_command(site, state, &args, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reconcile_observe_fast_unless_deep() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (_sim, site, info) = demo_sim(dir.path(), "0.01", None);
    let state = dir.path().join("state");
    let out = demo_command(&site, &state, &["create", "--skip-preflight"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    requests(&info).await;

    let fast = status_json(&site, &state, &[]);
    assert_eq!(
        (fast["in_sync"].as_bool(), fast["deep"].as_bool()),
        (Some(true), Some(false)),
        "{fast}"
    );
    let counts = requests(&info).await;
    assert_eq!(counts, serde_json::json!({"GET /cluster/resources": 1}));

    let deep = status_json(&site, &state, &["--deep"]);
    assert_eq!(
        (deep["in_sync"].as_bool(), deep["deep"].as_bool()),
        (Some(true), Some(true)),
        "{deep}"
    );
    let vms = deep["nodes"].as_array().unwrap().len() as u64;
    assert!(vms >= 2, "{deep}");
    let counts = requests(&info).await;
    assert_eq!(
        counts["GET /nodes/{node}/qemu/{vmid}/config"], vms,
        "{counts}"
    );

    for (flags, reads) in [(&[][..], Value::Null), (&["--deep"][..], Value::from(vms))] {
        let mut args = vec!["reconcile", "--once", "--no-report"];
        args.extend_from_slice(flags);
        let out = demo_command(&site, &state, &args, &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let counts = requests(&info).await;
        assert_eq!(
            counts["GET /nodes/{node}/qemu/{vmid}/config"], reads,
            "{flags:?}: {counts}"
        );
        assert_eq!(counts["POST /nodes/{node}/qemu"], Value::Null, "{counts}");
    }
}
