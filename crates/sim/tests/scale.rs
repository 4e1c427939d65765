//! The simulator's own cost per request as the world grows (homestak issue
//! 13): wall time of the requests a reconcile makes, at 10, 1,000 and
//! 10,000 VMs, so a benchmark measures the engine and not the simulator.
//!
//! Not timed as a pass/fail test (the figures depend on the machine): run
//! `cargo test --release -p homestak-sim --test tests scale -- --ignored --nocapture`
//! (`SIM_SCALE_SIZES=10,1000` to choose the sizes). The non-ignored test
//! checks that the answers keep their shapes at a few hundred VMs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{Sim, config};

/// Adds `n` running VMs (with a disk each) through `/_sim/vms`, eight
/// requests at a time, then one asynchronous config change per VM so the
/// task list grows as a reconcile's would.
async fn load(sim: &Sim, n: usize) {
    let url = sim.handle.url().to_string();
    let auth = sim.auth();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8usize {
        let (client, url, auth) = (sim.client.clone(), url.clone(), auth.clone());
        workers.spawn(async move {
            for i in (w..n).step_by(8) {
                let vmid = 100 + i;
                let body = json!({
                    "vmid": vmid, "name": format!("vm-{i}"), "running": true,
                    "tags": "homestak", "disk_size": "1G",
                });
                let r = client
                    .post(format!("{url}/_sim/vms"))
                    .header("Authorization", &auth)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                let r = client
                    .post(format!("{url}/api2/json/nodes/pve/qemu/{vmid}/config"))
                    .header("Authorization", &auth)
                    .form(&[("description", "loaded")])
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
}

/// A running VM whose guest agent answers (without booting a guest).
async fn agent_vm(sim: &Sim, vmid: u32) {
    let path = format!("/_sim/vms/{vmid}");
    sim.control("PATCH", &path, Some(json!({"power": "stopped"})))
        .await;
    sim.ok(
        "PUT",
        &format!("/nodes/pve/qemu/{vmid}/config"),
        &[("agent", "1")],
    )
    .await;
    sim.control("PATCH", &path, Some(json!({"power": "running"})))
        .await;
}

/// A GET whose answer is read but not parsed (the client's JSON parsing
/// would dominate big answers); returns the body's length.
async fn raw_get(sim: &Sim, path: &str) -> usize {
    let r = sim
        .client
        .get(sim.url(path))
        .header("Authorization", sim.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.bytes().await.unwrap().len()
}

/// Mean wall time of `f` over `runs` sequential calls.
async fn mean<F, Fut>(runs: u32, mut f: F) -> Duration
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    for i in 0..runs {
        f(i).await;
    }
    started.elapsed() / runs
}

/// Mean wall time per request kind on a world of `n` VMs.
async fn measure(n: usize) -> Vec<(&'static str, Duration)> {
    let owned = Sim::start_with(config(0.0)).await;
    let sim = &owned;
    let started = Instant::now();
    load(sim, n).await;
    let loaded = started.elapsed() / (n as u32);
    agent_vm(sim, 100).await;
    // A task from the middle of the list: a poll of an older task.
    let tasks = sim.get("/nodes/pve/tasks?limit=10000").await;
    let tasks = tasks.as_array().unwrap();
    let upid = tasks[tasks.len() / 2]["upid"].as_str().unwrap().to_string();
    let big = if n >= 5000 { 20 } else { 200 };
    let mut out = vec![("load 1 VM (_sim/vms + config POST)", loaded)];
    out.push((
        "GET /cluster/resources?type=vm",
        mean(big, |_| async move {
            assert!(raw_get(sim, "/cluster/resources?type=vm").await > n * 100);
        })
        .await,
    ));
    out.push((
        "GET /nodes/{n}/qemu",
        mean(big, |_| async move {
            assert!(raw_get(sim, "/nodes/pve/qemu").await > n * 100);
        })
        .await,
    ));
    out.push((
        "GET /nodes/{n}/qemu/{id}/config",
        mean(500, |i| async move {
            let id = 100 + (i as usize * 7919) % n;
            raw_get(sim, &format!("/nodes/pve/qemu/{id}/config")).await;
        })
        .await,
    ));
    let path = &format!("/nodes/pve/tasks/{upid}/status");
    out.push((
        "GET /nodes/{n}/tasks/{upid}/status",
        mean(500, |_| async move {
            raw_get(sim, path).await;
        })
        .await,
    ));
    out.push((
        "GET /cluster/nextid",
        mean(500, |_| async move {
            raw_get(sim, "/cluster/nextid").await;
        })
        .await,
    ));
    out.push((
        "GET …/agent/network-get-interfaces",
        mean(500, |_| async move {
            raw_get(sim, "/nodes/pve/qemu/100/agent/network-get-interfaces").await;
        })
        .await,
    ));
    out.push((
        "POST /nodes/{n}/qemu (create)",
        mean(200, |i| async move {
            let id = (500_000 + i).to_string();
            let name = format!("new-{i}");
            sim.ok(
                "POST",
                "/nodes/pve/qemu",
                &[
                    ("vmid", id.as_str()),
                    ("name", name.as_str()),
                    ("scsi0", "local-zfs:1"),
                    ("net0", "virtio,bridge=vmbr0"),
                ],
            )
            .await;
        })
        .await,
    ));
    let _ = owned.handle.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run with --release --ignored --nocapture"]
async fn per_request_overhead_at_scale() {
    let sizes: Vec<usize> = std::env::var("SIM_SCALE_SIZES")
        .unwrap_or_else(|_| "10,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let mut rows: Vec<(usize, Vec<(&str, Duration)>)> = Vec::new();
    for n in sizes {
        rows.push((n, measure(n).await));
    }
    let base = &rows[0];
    println!(
        "{:<40} {}",
        "mean µs per request (ratio to first size)",
        rows.iter()
            .map(|(n, _)| format!("{:>18}", format!("{n} VMs")))
            .collect::<String>()
    );
    for (k, (name, _)) in base.1.iter().enumerate() {
        let cells: String = rows
            .iter()
            .map(|(_, r)| {
                let us = r[k].1.as_secs_f64() * 1e6;
                let ratio = r[k].1.as_secs_f64() / base.1[k].1.as_secs_f64();
                format!("{:>18}", format!("{us:.0} ({ratio:.1}x)"))
            })
            .collect();
        println!("{name:<40} {cells}");
    }
}

/// At a few hundred VMs the answers keep the shapes they have at one.
#[tokio::test]
async fn answers_keep_their_shapes_with_many_vms() {
    let sim = Sim::start_with(config(0.0)).await;
    load(&sim, 300).await;
    let vms = sim.get("/cluster/resources?type=vm").await;
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 300);
    assert!(
        vms.iter()
            .all(|v| v["type"] == "qemu" && v["status"] == "running")
    );
    let list = sim.get("/nodes/pve/qemu").await;
    assert_eq!(list.as_array().unwrap().len(), 300);
    assert_eq!(sim.get("/cluster/nextid").await, Value::from("400"));
    let config = sim.get("/nodes/pve/qemu/399/config").await;
    assert_eq!(config["name"], "vm-299");
    assert_eq!(config["description"], "loaded");
    // Every config change made a task, each findable by its UPID.
    let tasks = sim.get("/nodes/pve/tasks?limit=1000").await;
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 300);
    for t in [&tasks[0], &tasks[150], &tasks[299]] {
        let upid = t["upid"].as_str().unwrap();
        let s = sim.wait_task(upid).await;
        assert_eq!(s["upid"], upid);
        assert_eq!(s["exitstatus"], "OK");
    }
    // A new VM takes the next free address and disk name.
    sim.task_ok(
        "POST",
        "/nodes/pve/qemu",
        &[("vmid", "400"), ("scsi0", "local-zfs:1")],
    )
    .await;
    let config = sim.get("/nodes/pve/qemu/400/config").await;
    assert!(
        config["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-zfs:vm-400-disk-0,"),
        "{config}"
    );
    let _ = sim.handle.shutdown().await;
}
