//! The simulator over real HTTPS: pveproxy's wire protocol, envelopes,
//! parameter errors, token and ticket auth, UPID routing.

use crate::support::Sim;
use homestak_pve::form::encode_component;
use serde_json::{Value, json};

#[tokio::test]
async fn version_and_envelope() {
    let sim = Sim::start(0.001).await;
    let a = sim.call("GET", "/version", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(a.data()["release"], "8.4");
    assert!(a.data()["version"].as_str().unwrap().starts_with("8.4."));
    let nodes = sim.get("/nodes").await;
    assert_eq!(nodes[0]["node"], "pve");
    assert_eq!(
        nodes[0]["ssl_fingerprint"],
        sim.handle.fingerprint().to_string()
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn pveproxy_errors_for_paths_methods_and_auth() {
    let sim = Sim::start(0.001).await;
    let a = sim.call("GET", "/foo", &[]).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (501, "Method 'GET /foo' not implemented")
    );
    assert_eq!(a.json["message"], "Method 'GET /foo' not implemented\n");
    let a = sim.call("PUT", "/version", &[]).await;
    assert_eq!(a.status, 501);

    let head = sim
        .client
        .head(sim.url("/version"))
        .header("Authorization", sim.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 501);
    let body = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", sim.auth())
        .body("a=1")
        .send()
        .await
        .unwrap();
    let a = Sim::answer(body).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (501, "Unexpected content for method 'GET'")
    );
    let extjs = sim
        .client
        .get(format!("{}/api2/extjs/version", sim.handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(extjs.status().as_u16(), 501);

    // 401: empty body, no content type, PVE 8.4's reason phrases.
    let none = Sim::answer(sim.client.get(sim.url("/version")).send().await.unwrap()).await;
    assert_eq!(
        (none.status, none.reason.as_str(), none.body.as_str()),
        (401, "No ticket", "")
    );
    assert_eq!(none.content_type, None);
    let bad = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", "PVEAPIToken=root@pam!homestak=nope");
    let bad = Sim::answer(bad.send().await.unwrap()).await;
    assert_eq!(
        (bad.status, bad.reason.as_str(), bad.body.as_str()),
        (401, "Authentication failed!", "")
    );
    // The space variant of the header is accepted too.
    let space = sim
        .client
        .get(sim.url("/version"))
        .header(
            "Authorization",
            format!("PVEAPIToken {}", sim.handle.token()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(space.status().as_u16(), 200);
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn nextid_and_parameter_errors() {
    let sim = Sim::start(0.001).await;
    assert_eq!(sim.get("/cluster/nextid").await, json!("100"));
    let a = sim.call("GET", "/cluster/nextid", &[("vmid", "99")]).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (400, "Parameter verification failed.")
    );
    assert_eq!(
        a.json["errors"]["vmid"],
        "invalid format - value does not look like a valid VM ID\n"
    );
    assert_eq!(a.json["message"], "Parameter verification failed.\n");
    assert_eq!(a.json["data"], Value::Null);
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "100"), ("bogus", "1"), ("cores", "x")],
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.json["errors"]["bogus"]
            .as_str()
            .unwrap()
            .starts_with("property is not defined in schema")
    );
    assert_eq!(
        a.json["errors"]["cores"],
        "type check ('integer') failed - got 'x'"
    );
    // A raw `;` in a value splits the pair, as in PVE.
    let raw = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Authorization", sim.auth())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("vmid=100&tags=a;b")
        .send()
        .await
        .unwrap();
    let a = Sim::answer(raw).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.json["errors"]["b"]
            .as_str()
            .unwrap()
            .starts_with("property is not defined in schema")
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn ticket_auth_needs_csrf_for_writes() {
    let sim = Sim::start(0.001).await;
    let bad = sim
        .client
        .post(sim.url("/access/ticket"))
        .form(&[("username", "root@pam"), ("password", "wrong")]);
    let bad = Sim::answer(bad.send().await.unwrap()).await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (401, "authentication failure")
    );
    let t = sim.client.post(sim.url("/access/ticket")).form(&[
        ("username", "root@pam"),
        ("password", sim.handle.root_password()),
    ]);
    let t = Sim::answer(t.send().await.unwrap()).await;
    assert_eq!(t.status, 200);
    let ticket = t.data()["ticket"].as_str().unwrap().to_string();
    let csrf = t.data()["CSRFPreventionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = format!("PVEAuthCookie={}", encode_component(&ticket));
    let get = sim
        .client
        .get(sim.url("/nodes"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 200);
    let post = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Cookie", &cookie)
        .form(&[("vmid", "100")]);
    let a = Sim::answer(post.send().await.unwrap()).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (401, "Permission denied - invalid csrf token")
    );
    let post = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", &csrf)
        .form(&[("vmid", "100")]);
    let a = Sim::answer(post.send().await.unwrap()).await;
    assert_eq!(a.status, 200);
    assert!(
        a.data()
            .as_str()
            .unwrap()
            .ends_with(":qmcreate:100:root@pam:")
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn upids_route_raw_or_percent_encoded() {
    let sim = Sim::start(0.001).await;
    let s = sim
        .task_ok("POST", "/nodes/pve/qemu", &[("vmid", "100")])
        .await;
    let upid = s["upid"].as_str().unwrap();
    let raw = format!(
        "{}/api2/json/nodes/pve/tasks/{upid}/status",
        sim.handle.url()
    );
    let enc = format!(
        "{}/api2/json/nodes/pve/tasks/{}/status",
        sim.handle.url(),
        encode_component(upid)
    );
    for url in [raw, enc] {
        let a = Sim::answer(
            sim.client
                .get(&url)
                .header("Authorization", sim.auth())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.data()["upid"], upid, "{url}");
    }
    let a = sim
        .call("GET", "/nodes/pve/tasks/UPID:nope/status", &[])
        .await;
    assert_eq!(a.json["errors"]["upid"], "unable to parse worker upid");
    let list = sim.call("GET", "/nodes/pve/tasks", &[]).await;
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.data()[0]["status"], "OK");
    assert!(list.data()[0]["endtime"].is_i64());
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_bodies_and_query_over_body() {
    let sim = Sim::start(0.001).await;
    let post = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Authorization", sim.auth())
        .json(&json!({"vmid": 100, "cores": 2, "onboot": true, "name": "from-json"}));
    let a = Sim::answer(post.send().await.unwrap()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    sim.wait_task(a.data().as_str().unwrap()).await;
    let put = sim
        .client
        .put(format!("{}?cores=8", sim.url("/nodes/pve/qemu/100/config")))
        .header("Authorization", sim.auth())
        .form(&[("cores", "4")]);
    assert_eq!(put.send().await.unwrap().status().as_u16(), 200);
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(
        (
            cfg["cores"].as_i64(),
            cfg["onboot"].as_i64(),
            cfg["name"].as_str()
        ),
        (Some(8), Some(1), Some("from-json"))
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn node_notes_are_written_with_a_digest_and_a_stale_one_is_refused() {
    let sim = Sim::start(0.001).await;
    // A fresh node has an empty config: `{}`, no digest.
    assert_eq!(sim.get("/nodes/pve/config").await, json!({}));
    // With no digest to compare, PVE writes unconditionally.
    sim.ok(
        "PUT",
        "/nodes/pve/config",
        &[("description", "Rack 2: keep")],
    )
    .await;
    let config = sim.get("/nodes/pve/config").await;
    // Comment lines read back with a newline each.
    assert_eq!(config["description"], "Rack 2: keep\n");
    let first = config["digest"].as_str().unwrap().to_string();
    assert_eq!(first.len(), 40);
    assert_eq!(
        sim.ok("GET", "/nodes/pve/config", &[("property", "description")])
            .await,
        json!({"description": "Rack 2: keep\n"})
    );

    // A write with the current digest goes through and changes it.
    sim.ok(
        "PUT",
        "/nodes/pve/config",
        &[
            ("description", "Rack 2: keep\nlease: a"),
            ("digest", &first),
        ],
    )
    .await;
    let second = sim.get("/nodes/pve/config").await;
    assert_eq!(second["description"], "Rack 2: keep\nlease: a\n");
    assert_ne!(second["digest"], first);

    // One with the old digest is refused as PVE refuses it, and changes nothing.
    let stale = sim
        .call(
            "PUT",
            "/nodes/pve/config",
            &[("description", "lease: b"), ("digest", &first)],
        )
        .await;
    assert_eq!(stale.status, 500);
    assert_eq!(
        stale.reason,
        "detected modified configuration - file changed by other user? Try again."
    );
    assert_eq!(sim.get("/nodes/pve/config").await, second);

    // `delete=description` empties the file: no digest again.
    sim.ok("PUT", "/nodes/pve/config", &[("delete", "description")])
        .await;
    assert_eq!(sim.get("/nodes/pve/config").await, json!({}));
    // An unknown node: PVE's lookup failure.
    assert_eq!(sim.call("GET", "/nodes/nope/config", &[]).await.status, 500);
    sim.handle.shutdown().await.unwrap();
}
