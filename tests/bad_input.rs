//! Proof R3, bad input: a corpus of malformed inputs, one table per source
//! (manifests, site-config files, `secrets.yaml`, PVE answers, daemon
//! requests). Each case must end in an error, never a panic, and the
//! message must name what failed (the words listed with the case). The
//! total is printed; the test fails under 50 cases.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_pve::{self as pve, Api};
use homestak_sim::hostile::Answer;

use crate::daemon_support::{FakeEngine, WRITE_TOKEN, config, site_config, start};

/// Cases checked so far, over all tables.
static CHECKED: AtomicUsize = AtomicUsize::new(0);

/// Cases whose message lacks a word, reported together at the end.
static UNCLEAR: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// `text` must contain every one of `words` (case-insensitive); one case.
fn names(case: &str, text: &str, words: &[&str]) {
    also(case, text, words);
    CHECKED.fetch_add(1, Ordering::SeqCst);
}

/// [`names`] for a second look at a case already counted.
fn also(case: &str, text: &str, words: &[&str]) {
    let lower = text.to_lowercase();
    for word in words {
        if !lower.contains(&word.to_lowercase()) {
            UNCLEAR.lock().unwrap().push(format!(
                "case {case}: {word:?} missing from the error: {text}"
            ));
        }
    }
}

fn manifest_cases() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    vec![
        // The reference's words: to PyYAML an empty file is no mapping.
        ("empty", "", &["must be a yaml object"]),
        ("a list", "- a\n- b\n", &["must be a yaml object"]),
        ("a scalar", "just words\n", &["must be a yaml object"]),
        ("bad yaml", "name: [x\n", &["invalid yaml", ":"]),
        ("tab indent", "name: x\n\tnodes: []\n", &["invalid yaml"]),
        (
            "duplicate key",
            "name: a\nname: b\n",
            &["duplicate key", "name"],
        ),
        (
            "version 3",
            "schema_version: 3\nname: x\n",
            &["schema version", "3"],
        ),
        (
            "padded name",
            "schema_version: 2\nname: \" demo\"\nnodes: [{name: a, type: vm}]\n",
            &["manifest name", ":2:", "letters"],
        ),
        (
            "nodes a string",
            "schema_version: 2\nname: x\nnodes: web\n",
            &["nodes", "a list"],
        ),
        (
            "node a number",
            "schema_version: 2\nname: x\nnodes: [7]\n",
            &["node 0", "mapping"],
        ),
        (
            "bad node name",
            "schema_version: 2\nname: x\nnodes: [{name: \"a b\", type: vm}]\n",
            &["node 0", "not a valid node name", ":3:"],
        ),
        (
            "vmid text",
            "schema_version: 2\nname: x\nnodes: [{name: a, type: vm, vmid: lots}]\n",
            &["vmid", "whole number"],
        ),
        (
            "vmid huge",
            "schema_version: 2\nname: x\nnodes: [{name: a, type: vm, vmid: 99999999999999999999}]\n",
            &["vmid"],
        ),
        (
            "cycle",
            "schema_version: 2\nname: x\nnodes:\n  - {name: a, type: pve, parent: b}\n  - {name: b, type: pve, parent: a}\n",
            &["cycle"],
        ),
        (
            "unknown field",
            "schema_version: 2\nname: x\nnodes: [{name: a, type: vm, colour: red}]\n",
            &["unknown field", "colour"],
        ),
        (
            "alias bomb",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
            &["invalid yaml"],
        ),
    ]
}

fn malformed_manifests() {
    for (case, text, words) in manifest_cases() {
        let err = Manifest::from_yaml_str(text, Path::new("manifests/m.yaml"))
            .expect_err(case)
            .located()
            .to_string();
        names(case, &err, words);
        assert!(err.contains("manifests/m.yaml"), "case {case}: {err}");
    }
}

/// A loadable site-config with `file` written as `text`.
fn site_with(file: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, body: &str| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    };
    write("site.yaml", "defaults: {domain: example.test}\n");
    write(
        "nodes/pve.yaml",
        "node: pve\napi_endpoint: https://127.0.0.1:8006\ndatastore: local\n",
    );
    write(file, text);
    dir
}

/// Every error loading or using the site: the load's, else its problems'.
fn site_errors(dir: &Path) -> String {
    match Site::load(dir) {
        Err(err) => homestak_base::error_chain(&err),
        Ok(site) => site
            .problems()
            .iter()
            .map(|p| homestak_base::error_chain(*p))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn malformed_site_config_files() {
    let cases: Vec<(&str, &str, &str, &[&str])> = vec![
        ("site.yaml list", "site.yaml", "- a\n", &["site.yaml"]),
        (
            "site.yaml bad yaml",
            "site.yaml",
            "defaults: {a\n",
            &["site.yaml", ":"],
        ),
        (
            "site.yaml wrong type",
            "site.yaml",
            "defaults: {image_parts: {debian: many}}\n",
            &["site.yaml", ":1:34"],
        ),
        ("node list", "nodes/pve.yaml", "- x\n", &["nodes/pve.yaml"]),
        (
            "node bad port",
            "nodes/pve.yaml",
            "node: pve\nvm_ssh_port: 99999\n",
            &["nodes/pve.yaml:2:14", "u16"],
        ),
        (
            "preset memory text",
            "v2/presets/small.yaml",
            "cores: many\n",
            &["v2/presets/small.yaml:1:8", "u32"],
        ),
        (
            "env bad yaml",
            "envs/dev.yaml",
            "vars: [\n",
            &["envs/dev.yaml"],
        ),
        (
            "posture auth typo",
            "v2/postures/stage.yaml",
            "auth:\n  methd: site_token\n",
            &["v2/postures/stage.yaml", "methd", "method"],
        ),
        (
            "posture auth key typo",
            "v2/postures/stage.yaml",
            "auth:\n  methd: node_token\n",
            &["v2/postures/stage.yaml", "methd", "method"],
        ),
        (
            "posture ssh port text",
            "v2/postures/dev.yaml",
            "ssh:\n  port: twenty-two\n",
            &["v2/postures/dev.yaml", ":"],
        ),
        (
            "spec identity a mapping",
            "v2/specs/web.yaml",
            "identity: a\nidentity: b\n",
            &["v2/specs/web.yaml:1:11", "mapping"],
        ),
    ];
    for (case, file, text, words) in cases {
        let dir = site_with(file, text);
        let errors = site_errors(dir.path());
        names(case, &errors, words);
    }
}

fn malformed_secrets() {
    // The values are secrets: no error may print them.
    let cases: Vec<(&str, &str, &[&str])> = vec![
        ("a list", "- hunter2-secret\n", &["secrets.yaml"]),
        (
            "bad yaml",
            "api_tokens: {a: hunter2-secret\n",
            &["secrets.yaml", ":"],
        ),
        (
            "tokens a list",
            "api_tokens: [hunter2-secret]\n",
            &["secrets.yaml:1:1", "message is not shown"],
        ),
        (
            "token a mapping",
            "api_tokens:\n  pve: {value: hunter2-secret}\n",
            &["secrets.yaml"],
        ),
        (
            "auth a string",
            "auth: hunter2-secret\n",
            &["secrets.yaml:1:7", "message is not shown"],
        ),
        (
            "node tokens a list",
            "auth:\n  node_tokens: [hunter2-secret]\n",
            &["secrets.yaml:2:3", "message is not shown"],
        ),
        (
            "duplicate key",
            "passwords:\n  vm_root: hunter2-secret\n  vm_root: hunter2-secret\n",
            &["secrets.yaml:3:3", "message is not shown"],
        ),
    ];
    for (case, text, words) in cases {
        let dir = site_with("secrets.yaml", text);
        let errors = site_errors(dir.path());
        names(case, &errors, words);
        assert!(
            !errors.contains("hunter2"),
            "case {case}: a secret is in the error: {errors}"
        );
    }
}

/// A simulator whose every successful answer is spoiled as `answer`, and a
/// client pinned to its certificate.
async fn hostile(answer: Answer) -> (homestak_sim::Handle, pve::Client) {
    homestak_tls::install_crypto_provider();
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.hostile.answer = Some(answer);
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    let info = sim.ready_info();
    let token = pve::ApiToken::parse(&info.token).unwrap();
    let trust = pve::Trust::Pinned(info.fingerprint.parse().unwrap());
    let mut client = pve::Config::new(&info.url, token, trust).unwrap();
    client.retry.attempts = 1;
    (sim, pve::Client::new(client).unwrap())
}

async fn hostile_pve_answers() {
    let node: homestak_base::id::PveNode = "pve".parse().unwrap();
    for (answer, words) in [
        (Answer::WrongTypes, &["unexpected response body"][..]),
        (Answer::TruncatedJson, &["unexpected response body"][..]),
        (Answer::NotJson, &["unexpected response body"][..]),
        (Answer::HugeBody, &["larger than", "bytes"][..]),
    ] {
        let (sim, client) = hostile(answer).await;
        let calls: Vec<(&str, pve::Error)> = vec![
            ("version", client.version().await.unwrap_err()),
            ("nodes", client.nodes().await.unwrap_err()),
            (
                "cluster/resources",
                client.cluster_resources(None).await.unwrap_err(),
            ),
            (
                "storage",
                client.storage_list(&node, None).await.unwrap_err(),
            ),
        ];
        for (path, err) in calls {
            let case = format!("{answer:?} {path}");
            let text = homestak_base::error_chain(&err);
            names(&case, &text, words);
            also(&case, &text, &[path]);
        }
        let _ = sim.shutdown().await;
    }
}

async fn hostile_pve_answers_through_the_engine() {
    use homestak_engine::reconcile::{self, Engine, Setup};
    for answer in [Answer::WrongTypes, Answer::TruncatedJson, Answer::HugeBody] {
        let dir = tempfile::tempdir().unwrap();
        let site_dir = dir.path().join("site-config");
        std::fs::create_dir_all(site_dir.join("v2/presets")).unwrap();
        std::fs::write(site_dir.join("site.yaml"), "defaults: {}\n").unwrap();
        std::fs::write(
            site_dir.join("v2/presets/small.yaml"),
            "cores: 1\nmemory: 512\ndisk: 4\n",
        )
        .unwrap();
        let (sim, _) = hostile(answer).await;
        homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
        let site = Arc::new(Site::load(&site_dir).unwrap());
        let setup = Setup {
            state_dir: dir.path().join("state"),
            ..Setup::default()
        };
        let tier = Engine::open(setup).unwrap().tier(site, "pve").unwrap();
        let manifest = Manifest::from_yaml_str(
            "schema_version: 2\nname: h\nnodes: [{name: a, type: vm, preset: small}]\n",
            Path::new("h.yaml"),
        )
        .unwrap();
        let err = tier
            .plan(&manifest, &reconcile::Options::default())
            .await
            .map(drop)
            .unwrap_err();
        let text = homestak_base::error_chain(&err);
        names(&format!("engine {answer:?}"), &text, &["pve"]);
        let _ = sim.shutdown().await;
    }
}

async fn malformed_daemon_requests() {
    use reqwest::Method;
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine).await;
    let url = |p: &str| d.url(p);
    let raw = |method: Method, path: &str, body: Vec<u8>, content_type: &str| {
        d.client
            .request(method, url(path))
            .bearer_auth(WRITE_TOKEN)
            .header("content-type", content_type.to_string())
            .body(body)
    };
    let json = "application/json";
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &[&str])> = vec![
        (
            "subtree not json",
            raw(Method::PUT, "/v1/subtree", b"{host:".to_vec(), json),
            400,
            &["invalid request body"],
        ),
        (
            "subtree not utf-8",
            raw(Method::PUT, "/v1/subtree", vec![0xff, 0xfe, 0x00], json),
            400,
            &["invalid request body"],
        ),
        (
            "subtree wrong types",
            raw(
                Method::PUT,
                "/v1/subtree",
                br#"{"host": 7, "manifest": "x"}"#.to_vec(),
                json,
            ),
            400,
            &["invalid request body", "host"],
        ),
        (
            "subtree bad host",
            raw(
                Method::PUT,
                "/v1/subtree",
                br#"{"host": "no such/host", "manifest": {}}"#.to_vec(),
                json,
            ),
            400,
            &["host"],
        ),
        (
            "subtree bad manifest",
            raw(
                Method::PUT,
                "/v1/subtree",
                br#"{"host": "father", "manifest": {"schema_version": 9, "name": "x"}}"#.to_vec(),
                json,
            ),
            400,
            &["invalid manifest", "schema version"],
        ),
        (
            "plan truncated",
            raw(
                Method::POST,
                "/v1/plan",
                br#"{"host": "father", "manif"#.to_vec(),
                json,
            ),
            400,
            &["invalid request body"],
        ),
        (
            "status bad flag",
            raw(Method::GET, "/v1/status?observe=maybe", Vec::new(), json),
            400,
            &["observe"],
        ),
        (
            "unknown endpoint",
            raw(Method::GET, "/v1/nothing-here", Vec::new(), json),
            400,
            &["unknown endpoint", "/v1/nothing-here"],
        ),
        (
            "wrong method",
            raw(Method::PUT, "/v1/status", Vec::new(), json),
            405,
            &["method not allowed"],
        ),
        (
            "spec traversal",
            raw(Method::GET, "/spec/..%2f..%2fsecrets", Vec::new(), json),
            404,
            &["spec"],
        ),
        (
            "repo traversal",
            // The client resolves the dots: it asks for /secrets.yaml.
            raw(
                Method::GET,
                "/site-config.git/../secrets.yaml",
                Vec::new(),
                json,
            ),
            400,
            &["unknown endpoint"],
        ),
    ];
    for (case, request, status, words) in cases {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        names(case, &format!("HTTP {got}: {text}"), words);
        also(case, &format!("HTTP {got}"), &[&format!("HTTP {status}")]);
    }
    d.stop().await.unwrap();
}

/// The whole corpus in one run, so the count is the corpus size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_malformed_inputs_get_clear_errors_and_no_panic() {
    let sections: [(&str, usize); 6] = [
        ("manifests", {
            malformed_manifests();
            CHECKED.load(Ordering::SeqCst)
        }),
        ("site-config files", {
            malformed_site_config_files();
            CHECKED.load(Ordering::SeqCst)
        }),
        ("secrets.yaml", {
            malformed_secrets();
            CHECKED.load(Ordering::SeqCst)
        }),
        ("PVE answers (client)", {
            hostile_pve_answers().await;
            CHECKED.load(Ordering::SeqCst)
        }),
        ("PVE answers (engine)", {
            hostile_pve_answers_through_the_engine().await;
            CHECKED.load(Ordering::SeqCst)
        }),
        ("daemon requests", {
            malformed_daemon_requests().await;
            CHECKED.load(Ordering::SeqCst)
        }),
    ];
    let mut before = 0;
    for (section, total) in sections {
        println!("R3 {section}: {} malformed inputs", total - before);
        before = total;
    }
    let unclear = UNCLEAR.lock().unwrap().clone();
    assert!(
        unclear.is_empty(),
        "unclear errors:\n{}",
        unclear.join("\n")
    );
    println!("R3 bad input: {before} malformed inputs, each a clear error, 0 panics");
    assert!(before >= 50, "only {before} malformed inputs checked");
}
