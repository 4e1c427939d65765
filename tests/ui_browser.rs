//! The status page in a real headless Chromium: `homestak sim` and
//! `homestak serve` converge a two-tier manifest (a PVE host `hv` with two
//! VMs of its own tier, and a root VM), then Chromium, driven through
//! chromedriver's WebDriver protocol (plain JSON over loopback HTTP),
//! logs in with the form, checks the page's DOM (the tree with the inner
//! tier nested under `hv`, vmids, the last reconcile's outcome, events),
//! sees an event arrive live after a reconcile is requested, logs out and
//! back in by the URL fragment, and takes a screenshot (written under the
//! test's temporary directory, and to `HOMESTAK_UI_SCREENSHOT` when set;
//! docs/ui-status.png is one).
//!
//! Needs `chromium` and `chromium-driver` (Debian's packages, which
//! .ci/run installs): without them it prints SKIPPED, unless
//! `HOMESTAK_REQUIRE_BROWSER` is set (CI), when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{BIN, Guard, copy_dir, manifest_status};

const READ_TOKEN: &str = "ui-browser-read-token-3f9a";
const WRITE_TOKEN: &str = "ui-browser-write-token-77c1";
/// Hang guard of the converge.
const GUARD: Duration = Duration::from_secs(300);
/// Hang guard of each wait for the page.
const PAGE_GUARD: Duration = Duration::from_secs(60);
const MANIFEST: &str = "schema_version: 2\nname: lab\nnodes:\n\
    - {name: hv, type: pve, preset: vm-large, image: debian-13-pve, vmid: 99401}\n\
    - {name: app, type: vm, parent: hv, preset: vm-small, image: debian-12, vmid: 99411}\n\
    - {name: worker, type: vm, parent: hv, preset: vm-small, image: debian-12, vmid: 99412}\n\
    - {name: edge, type: vm, preset: vm-small, image: debian-12, vmid: 99402}\n\
    settings: {verify_ssh: false}\n";

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn wait_for_file(path: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(value) = serde_json::from_str::<Value>(&text)
        {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port (released for chromedriver to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A WebDriver session of chromedriver.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(
            answer["value"]["error"].is_null(),
            "WebDriver {path}: {answer:#}"
        );
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found:#}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Waits (hang guard only) until `script` returns something truthy.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PAGE_GUARD;
        loop {
            let value = self.script(script).await;
            if !(value.is_null() || value == json!(false) || value == json!([])) {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self
                    .script("return location.href + '\\n' + document.documentElement.outerHTML")
                    .await;
                panic!(
                    "the page never showed {what}: {}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_headless_chromium_shows_the_tier_tree_and_live_events() {
    let required = std::env::var_os("HOMESTAK_REQUIRE_BROWSER").is_some();
    let (Some(driver), Some(chromium)) = (
        on_path(&["chromedriver"]),
        on_path(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        assert!(
            !required,
            "HOMESTAK_REQUIRE_BROWSER is set but chromium or chromedriver is not installed"
        );
        println!(
            "SKIPPED: chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    homestak_tls::install_crypto_provider();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();

    // The simulator and a site-config pointed at it (as the crash proof).
    let site = dir.path().join("site-config");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("reconciler-tests/_site"),
        &site,
    );
    std::fs::create_dir_all(site.join("manifests")).unwrap();
    std::fs::write(site.join("manifests/lab.yaml"), MANIFEST).unwrap();
    std::fs::write(
        site.join("controller.yaml"),
        "host: pve\nmanifests:\n  lab: {}\n",
    )
    .unwrap();
    let sim_config = dir.path().join("sim.yaml");
    std::fs::write(&sim_config, "ssh_port: 2222\n").unwrap();
    let sim_ready = dir.path().join("sim.json");
    let _sim = Guard(
        Command::new(BIN)
            .arg("--site-config")
            .arg(&site)
            .args(["sim", "--listen", "127.0.0.1:0", "--time-scale", "0.01"])
            .arg("--config")
            .arg(&sim_config)
            .arg("--ready-file")
            .arg(&sim_ready)
            .env("HOMESTAK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_file(&sim_ready);

    // `homestak serve` with a read and a write token.
    let state = dir.path().join("state");
    let tokens = dir.path().join("api-tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n  - {{name: viewer, scope: read, token: {READ_TOKEN}}}\n  - {{name: ops, scope: write, token: {WRITE_TOKEN}}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let serve_ready = dir.path().join("serve.json");
    let _serve = Guard(
        Command::new(BIN)
            .arg("--site-config")
            .arg(&site)
            .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--no-watch"])
            .args(["--working-tree", "--resync", "1h"])
            .arg("--api-token-file")
            .arg(&tokens)
            .arg("--state-dir")
            .arg(&state)
            .arg("--ready-file")
            .arg(&serve_ready)
            .env("HOMESTAK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let info = wait_for_file(&serve_ready);
    let url = info["url"].as_str().unwrap().to_string();
    let fingerprint: homestak_tls::Fingerprint =
        info["fingerprint"].as_str().unwrap().parse().unwrap();
    let api = reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(fingerprint))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // Converged on both tiers.
    let deadline = Instant::now() + GUARD;
    loop {
        let s = manifest_status(&api, &url, "lab", READ_TOKEN).await;
        if s["in_sync"] == json!(true) && s["last_reconcile"]["outcome"] == "converged" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the manifest did not converge: {s:#}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converged = started.elapsed();

    // Chromium, through chromedriver on loopback.
    let port = free_port();
    let _driver = Guard(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session: Value = http
        .post(format!("{base}/session"))
        .json(&json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--ignore-certificate-errors",
                         "--window-size=1280,900", "--disable-dev-shm-usage", "--disable-gpu"]
            }
        }}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {session:#}"));
    let browser = Browser {
        http: http.clone(),
        session: format!("{base}/session/{id}"),
    };

    // The login form, then the page.
    browser.go(&format!("{url}/ui")).await;
    browser
        .until(
            "the login form",
            "return !!document.getElementById('token')",
        )
        .await;
    browser.type_in("#token", READ_TOKEN).await;
    browser.click("#login button[type=submit]").await;
    browser
        .until(
            "the manifest",
            "return document.querySelector('[data-manifest=\"lab\"]') !== null",
        )
        .await;

    // The tree: every node with its vmid, the inner tier's nodes nested
    // under hv, the last reconcile's outcome, events listed.
    let dom = browser
        .script(
            "const rows = {};\n\
             document.querySelectorAll('li.node').forEach(li => {\n\
               const p = li.parentElement.closest('li.node');\n\
               rows[li.dataset.node] = {vmid: li.querySelector('.vmid').textContent,\n\
                 state: li.querySelector('.state').textContent,\n\
                 parent: p ? p.dataset.node : null};\n\
             });\n\
             return {rows, outcome: document.querySelector('.outcome').textContent,\n\
               events: document.querySelectorAll('#events li').length,\n\
               next: Number(document.getElementById('events').dataset.next),\n\
               cookieVisible: document.cookie.includes('homestak_ui')};",
        )
        .await;
    let rows = &dom["rows"];
    for (node, vmid, parent) in [
        ("hv", "99401", Value::Null),
        ("edge", "99402", Value::Null),
        ("app", "99411", json!("hv")),
        ("worker", "99412", json!("hv")),
    ] {
        assert_eq!(rows[node]["vmid"], vmid, "{node}: {dom:#}");
        assert_eq!(rows[node]["parent"], parent, "{node}: {dom:#}");
        assert_eq!(rows[node]["state"], "in sync", "{node}: {dom:#}");
    }
    assert_eq!(dom["outcome"], "converged", "{dom:#}");
    assert!(dom["events"].as_u64().unwrap() > 0, "{dom:#}");
    assert_eq!(
        dom["cookieVisible"], false,
        "the session cookie is HttpOnly"
    );
    let seen = dom["next"].as_u64().unwrap();

    // Live: a reconcile requested now shows up in the list without a
    // reload.
    let answer = api
        .post(format!("{url}/v1/reconcile?manifest=lab"))
        .bearer_auth(WRITE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let live = browser
        .until(
            "a live event",
            &format!(
                "const li = [...document.querySelectorAll('#events li')]\n\
                   .find(li => Number(li.dataset.seq) > {seen} && li.querySelector('.kind').textContent === 'reconcile_finished');\n\
                 return li ? li.textContent : null;"
            ),
        )
        .await;
    assert!(live.as_str().unwrap().contains("lab"), "{live}");
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let shot = dir.path().join("ui-status.png");
    std::fs::write(&shot, &png).unwrap();
    if let Some(path) = std::env::var_os("HOMESTAK_UI_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
    }

    // Log out: the form again; back in by the URL fragment, which leaves
    // the address bar without the token.
    browser.click("header form button").await;
    browser
        .until(
            "the login form",
            "return !!document.getElementById('token')",
        )
        .await;
    // As a new tab opening the link would.
    browser.go("about:blank").await;
    browser.go(&format!("{url}/ui#token={READ_TOKEN}")).await;
    browser
        .until(
            "the page after a fragment login",
            "return document.querySelector('[data-manifest=\"lab\"]') !== null",
        )
        .await;
    let address = browser.script("return window.location.href").await;
    assert!(!address.as_str().unwrap().contains(READ_TOKEN), "{address}");

    let _ = http.delete(&browser.session).send().await;
    // The request log has paths only: the token never reached it.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("/ui/login"), "the log has the requests");
    assert!(!logged.contains(READ_TOKEN) && !logged.contains(WRITE_TOKEN));
    println!(
        "ui browser: converged in {:.1} s, whole test {:.1} s, screenshot {} ({} bytes)",
        converged.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        shot.display(),
        png.len()
    );
}
