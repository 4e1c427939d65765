//! Booted VMs for the `sim_*` tests: a tier (the top simulator or a nested
//! one) reached over HTTPS with a pinned fingerprint, VMs that boot, SSH
//! into them with our client, and nested tiers set up the way a parent
//! would (a token minted over SSH with `pveum`).
//!
//! Timeouts here are hang guards, never assertions.

use std::time::Duration;

use homestak_sim::Config;
use homestak_ssh::{
    Command, Destination, ExecOutput, HostKeyPolicy, Identity, RusshTransport, Session, Target,
    Transport,
};
use russh::keys::{Algorithm, PrivateKey};
use serde_json::{Value, json};

use super::Sim;

/// SSH port of simulated VMs in tests (no root needed; every VM has its
/// own address, so one port serves them all).
pub const SSH_PORT: u16 = 2222;

pub const GUARD: Duration = Duration::from_secs(60);

/// The default world with VMs serving SSH on [`SSH_PORT`].
pub fn config(scale: f64) -> Config {
    let mut c = super::config(scale);
    c.ssh_port = SSH_PORT;
    c
}

/// An ed25519 key pair and its `authorized_keys` line.
pub struct Key {
    pub private: PrivateKey,
    pub line: String,
}

pub fn key(comment: &str) -> Key {
    let private =
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let line = format!("{} {comment}", private.public_key().to_openssh().unwrap());
    Key { private, line }
}

/// One PVE API endpoint (the top simulator or a nested tier).
pub struct Tier {
    pub url: String,
    pub node: String,
    pub fingerprint: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Tier {
    pub fn of(sim: &Sim) -> Tier {
        Tier::new(
            sim.handle.url(),
            sim.handle.node(),
            &sim.handle.fingerprint().to_string(),
            sim.handle.token(),
        )
    }

    pub fn new(url: &str, node: &str, fingerprint: &str, token: &str) -> Tier {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(
                fingerprint.parse().unwrap(),
            ))
            .timeout(GUARD)
            .build()
            .unwrap();
        Tier {
            url: url.to_string(),
            node: node.to_string(),
            fingerprint: fingerprint.to_string(),
            token: token.to_string(),
            client,
        }
    }

    /// Our PVE client for this tier, trusting its pinned fingerprint.
    pub fn api(&self) -> homestak_pve::Client {
        let token = homestak_pve::ApiToken::parse(&self.token).unwrap();
        let config = homestak_pve::Config::new(
            &self.url,
            token,
            homestak_pve::Trust::Pinned(self.fingerprint.parse().unwrap()),
        )
        .unwrap();
        homestak_pve::Client::new(config).unwrap()
    }

    pub async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(m, format!("{}/api2/json{path}", self.url))
            .header("Authorization", format!("PVEAPIToken={}", self.token));
        req = if method == "POST" || method == "PUT" {
            req.form(form)
        } else {
            req.query(form)
        };
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(method, path, form).await;
        assert_eq!(status, 200, "{method} {} {path}: {body}", self.url);
        body["data"].clone()
    }

    /// Runs a task-returning call and waits for it to end OK.
    pub async fn task_ok(&self, method: &str, path: &str, form: &[(&str, &str)]) {
        let upid = self.ok(method, path, form).await;
        let upid = upid.as_str().unwrap().to_string();
        let status_path = format!("/nodes/{}/tasks/{upid}/status", self.node);
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let s = self.ok("GET", &status_path, &[]).await;
            if s["status"] == "stopped" {
                assert_eq!(s["exitstatus"], "OK", "{method} {path}: {s}");
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "hang guard: {upid}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A `/_sim/` control call: status and the whole body.
    pub async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(m, format!("{}{path}", self.url))
            .header("Authorization", format!("PVEAPIToken={}", self.token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Creates VM `vmid` from `image` with cloud-init `user` and `key`.
    pub async fn create_vm(&self, vmid: u32, name: &str, image: &str, user: &str, key: &Key) {
        let vmid = vmid.to_string();
        let image = format!("local-zfs:0,import-from=local:import/{image}.qcow2");
        let keys = homestak_pve::form::encode_component(&key.line);
        self.task_ok(
            "POST",
            &format!("/nodes/{}/qemu", self.node),
            &[
                ("vmid", &vmid),
                ("name", name),
                ("cores", "2"),
                ("memory", "2048"),
                ("scsi0", &image),
                ("ide2", "local-zfs:cloudinit"),
                ("ciuser", user),
                ("sshkeys", &keys),
                ("net0", "virtio,bridge=vmbr0"),
                ("agent", "1"),
            ],
        )
        .await;
    }

    pub async fn power(&self, vmid: u32, action: &str) {
        self.task_ok(
            "POST",
            &format!("/nodes/{}/qemu/{vmid}/status/{action}", self.node),
            &[],
        )
        .await;
    }

    /// The VM as `/_sim/vms/{vmid}` shows it.
    pub async fn sim_vm(&self, vmid: u32) -> Value {
        let (status, body) = self
            .control("GET", &format!("/_sim/vms/{vmid}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// Waits until the VM's guest has booted; its guest view.
    pub async fn wait_booted(&self, vmid: u32) -> Value {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let vm = self.sim_vm(vmid).await;
            if vm["guest"]["booted"] == true {
                return vm["guest"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hang guard: VM {vmid} never booted: {vm}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the VM has no running guest.
    pub async fn wait_down(&self, vmid: u32) {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let (status, body) = self
                .control("GET", &format!("/_sim/vms/{vmid}"), None)
                .await;
            if status == 404 || body["data"]["guest"].is_null() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "hang guard");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Creates and starts a VM and waits for its guest.
    pub async fn boot_vm(
        &self,
        vmid: u32,
        name: &str,
        image: &str,
        user: &str,
        key: &Key,
    ) -> Value {
        self.create_vm(vmid, name, image, user, key).await;
        self.power(vmid, "start").await;
        self.wait_booted(vmid).await
    }

    /// The nested tier of a booted PVE-image VM, as `/_sim/` shows it.
    pub async fn nested_view(&self, vmid: u32) -> Value {
        let (status, body) = self
            .control("GET", &format!("/_sim/vms/{vmid}/nested"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }
}

/// Connects to a booted guest (its view from [`Tier::wait_booted`]) as
/// `user` with `key`, pinning the host key `/_sim/` reports.
pub async fn ssh(
    guest: &Value,
    user: &str,
    key: &Key,
) -> Result<Box<dyn Session>, homestak_ssh::Error> {
    let addr: std::net::SocketAddr = guest["ssh"]["address"].as_str().unwrap().parse().unwrap();
    let host_key = guest["ssh"]["host_key"].as_str().unwrap().parse().unwrap();
    let target = Target::new(
        Destination::new(&addr.ip().to_string(), addr.port(), user),
        Identity::from_private_key(key.private.clone(), "test key"),
        HostKeyPolicy::Pinned(host_key),
    );
    tokio::time::timeout(GUARD, RusshTransport::default().connect(&target))
        .await
        .expect("hang guard")
}

pub async fn run(session: &dyn Session, line: &str) -> ExecOutput {
    tokio::time::timeout(GUARD, session.exec(&Command::shell(line), &mut |_, _| {}))
        .await
        .expect("hang guard")
        .unwrap()
}

/// Runs `line` and asserts exit 0; its stdout.
pub async fn run_ok(session: &dyn Session, line: &str) -> String {
    let out = run(session, line).await;
    assert!(
        out.success(),
        "{line}: {:?}\n{}\n{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

/// Sets up the nested tier of booted PVE-image VM `vmid` the way a parent
/// tier does: over SSH, reads the certificate fingerprint and mints an API
/// token with `pveum`. Returns the tier.
pub async fn nested_tier(parent: &Tier, vmid: u32, guest: &Value, user: &str, key: &Key) -> Tier {
    let view = parent.nested_view(vmid).await;
    let session = ssh(guest, user, key).await.unwrap();
    let sudo = if user == "root" { "" } else { "sudo " };
    let fp = run_ok(
        &*session,
        &format!("{sudo}openssl x509 -noout -fingerprint -sha256 -in /etc/pve/local/pve-ssl.pem"),
    )
    .await;
    let fp = fp
        .trim()
        .strip_prefix("sha256 Fingerprint=")
        .unwrap()
        .to_string();
    assert_eq!(json!(fp), view["fingerprint"]);
    let created = run_ok(
        &*session,
        &format!("{sudo}pveum user token add root@pam homestak --privsep 0 --output-format json"),
    )
    .await;
    let created: Value = serde_json::from_str(&created).unwrap();
    let token = format!(
        "{}={}",
        created["full-tokenid"].as_str().unwrap(),
        created["value"].as_str().unwrap()
    );
    session.close().await.unwrap();
    Tier::new(
        view["url"].as_str().unwrap(),
        view["node"].as_str().unwrap(),
        &fp,
        &token,
    )
}
