//! Spec delivery: a node's `spec:` reaches its VM.
//!
//! - **push** (`execution.mode: push`, the default): `push_spec` writes the
//!   resolved spec (what `homestak serve` answers at `GET /spec/{identity}`)
//!   to `/etc/homestak/spec.json` (0600, root) over SSH once the VM answers,
//!   comparing SHA-256 digests first, so an unchanged spec is not written
//!   again.
//! - **pull**: `write_snippet` writes cloud-init user-data to a snippets
//!   storage of the PVE host over the host's SSH (PVE has no API for it),
//!   `create_vm` sets `cicustom: user=<storage>:snippets/<file>`, and at
//!   first boot the VM fetches `/spec/{identity}` from `spec_server` with its
//!   posture's token (`curl --cacert`, pinned to the server's certificate).
//!   `verify_spec` then reads the fetch's result over SSH, so a refused
//!   token fails the node visibly. `destroy_vm` removes the snippet.
//!
//! The snippet holds the token: it is written 0600, and neither it nor the
//! token ever reaches a log, event or report.

use std::net::Ipv4Addr;

use serde_json::json;

use super::*;
use homestak_core::model::ExecutionMode;
use homestak_core::plan::SpecDelivery;

/// Where the spec lands in the VM.
pub const SPEC_PATH: &str = "/etc/homestak/spec.json";
/// What the pull fetch leaves: `fetched` or `failed`.
pub const STATUS_PATH: &str = "/etc/homestak/spec.status";
/// The spec server's certificate in the VM (pull over HTTPS).
pub const CA_PATH: &str = "/etc/homestak/spec-server.pem";
/// Snippets homestak wrote start with this; only those are removed.
pub const SNIPPET_PREFIX: &str = "homestak-";

/// The snippet file of `node` of `manifest`.
pub fn snippet_file(manifest: &str, node: &NodeName) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{SNIPPET_PREFIX}{}-{}.yaml",
        clean(manifest),
        clean(node.as_str())
    )
}

/// Quotes `s` for a POSIX shell.
fn q(s: &str) -> String {
    ssh::quote(s)
}

/// The spec server a pull-mode VM fetches from. Resolution refuses pull
/// without one, so this only guards a hand-built delivery.
fn pull_server<'a>(node: &NodePlan, spec: &'a SpecDelivery) -> Result<&'a str, Outcome> {
    spec.server.as_deref().ok_or_else(|| {
        refuse(format!(
            "node {}: execution mode pull needs a spec server; set defaults.spec_server in \
             site.yaml",
            node.node
        ))
    })
}

/// The cloud-init user-data of a pull-mode VM: what cloud-init would make
/// of `ciuser`/`sshkeys` (which `cicustom: user=` replaces), the root
/// password, `/etc/profile.d/homestak.sh` (the Python tool's variables),
/// and the first-boot fetch from `server`. `ca` is the server's
/// certificate (PEM) for an HTTPS server.
pub fn user_data(want: &DesiredVm, spec: &SpecDelivery, server: &str, ca: Option<&str>) -> String {
    let url = format!("{}/spec/{}", server.trim_end_matches('/'), spec.identity);
    let mut files = vec![json!({
        "path": "/etc/profile.d/homestak.sh",
        "permissions": "0644",
        "content": format!(
            "export HOMESTAK_SPEC_SERVER={}\nexport HOMESTAK_IDENTITY={}\n",
            q(server),
            q(&spec.identity)
        ),
    })];
    let mut curl = vec!["curl".to_string(), "-fsS".into()];
    if let Some(pem) = ca {
        files.push(json!({"path": CA_PATH, "permissions": "0644", "content": pem}));
        curl.push("--cacert".into());
        curl.push(CA_PATH.into());
    }
    if let Some(token) = &spec.token {
        curl.push("-H".into());
        curl.push(q(&format!("Authorization: Bearer {}", token.expose())));
    }
    curl.push("-o".into());
    curl.push(format!("{SPEC_PATH}.tmp"));
    curl.push(q(&url));
    let fetch = format!(
        "mkdir -p /etc/homestak && {} && mv -f {SPEC_PATH}.tmp {SPEC_PATH} && chmod 600 \
         {SPEC_PATH} && echo fetched > {STATUS_PATH} || echo failed > {STATUS_PATH}",
        curl.join(" ")
    );
    let mut doc = json!({
        "users": [{
            "name": want.user,
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "ssh_authorized_keys": want.ssh_keys,
        }],
        "write_files": files,
        "runcmd": [["sh", "-c", fetch]],
    });
    if let Some(password) = &spec.root_password {
        doc["chpasswd"] = json!({
            "expire": false,
            "users": [{"name": "root", "password": password.expose(), "type": "hash"}],
        });
    }
    // JSON is YAML: no quoting rules to get wrong.
    format!(
        "#cloud-config\n{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    )
}

impl VmController {
    /// pull: the user-data snippet on the host, before the VM is created.
    pub(super) async fn write_snippet(&self, node: &NodePlan, want: &DesiredVm) -> Outcome {
        let Some(spec) = want.spec.as_ref().filter(|s| s.mode == ExecutionMode::Pull) else {
            return StepOutcome::Done;
        };
        let server = match pull_server(node, spec) {
            Ok(s) => s,
            Err(out) => return out,
        };
        let ca = if server.starts_with("https://") {
            match &self.spec_ca {
                Some(pem) => Some(pem.as_str()),
                None => {
                    return refuse(format!(
                        "node {}: the VM must trust the spec server {}, and homestak does not \
                         have its certificate; pass --spec-ca FILE (the server's \
                         tls/daemon.crt), let that daemon converge the manifest, or use an \
                         http:// spec_server on a trusted network",
                        node.node, server
                    ));
                }
            }
        } else {
            None
        };
        let storage = match self.snippet_storage().await {
            Ok(s) => s,
            Err(out) => return out,
        };
        let file = snippet_file(&self.manifest, &node.node);
        let text = user_data(want, spec, server, ca);
        let session = match self.host_session(node).await {
            Ok(s) => s,
            Err(out) => return out,
        };
        let volid = format!("{storage}:snippets/{file}");
        let result = async {
            let dir = host_dir(&*session, &volid, &file).await?;
            let path = format!("{dir}/{file}");
            // umask first: the snippet holds the token.
            let line = format!(
                "umask 077 && cat > {} && mv -f {} {}",
                q(&format!("{path}.tmp")),
                q(&format!("{path}.tmp")),
                q(&path)
            );
            let command = as_root(&*session, line).stdin(text.into_bytes());
            session.exec_ok(&command).await.map(|_| ())
        }
        .await;
        let _ = session.close().await;
        match result {
            Ok(()) => StepOutcome::Done,
            Err(err) => StepOutcome::Failed(StepError::transient(format!(
                "write the cloud-init snippet {volid} on the PVE host: {}",
                chain(&err)
            ))),
        }
    }

    /// The `cicustom` value of a pull-mode VM.
    pub(super) async fn cicustom(&self, node: &NodePlan, want: &DesiredVm) -> Option<String> {
        want.spec
            .as_ref()
            .filter(|s| s.mode == ExecutionMode::Pull)?;
        let storage = self.snippet_storage().await.ok()?;
        Some(format!(
            "user={storage}:snippets/{}",
            snippet_file(&self.manifest, &node.node)
        ))
    }

    /// A storage of the host holding snippets: `local` when it does, else
    /// the first one PVE lists.
    async fn snippet_storage(&self) -> Result<String, Outcome> {
        let list = self
            .api
            .storage_list(&self.pve_node, Some("snippets"))
            .await
            .map_err(|err| fail(&err, "list the host's storages for snippets"))?;
        let names: Vec<String> = list
            .into_iter()
            .filter(|s| s.content.split(',').any(|c| c == "snippets"))
            .map(|s| s.storage)
            .collect();
        names
            .iter()
            .find(|n| *n == "local")
            .or(names.first())
            .cloned()
            .ok_or_else(|| {
                refuse(format!(
                    "no storage of PVE node {} holds snippets (cloud-init user-data); add the \
                     content type, e.g. pvesm set local --content \
                     iso,vztmpl,backup,import,snippets",
                    self.pve_node
                ))
            })
    }

    async fn host_session(&self, node: &NodePlan) -> Result<Box<dyn ssh::Session>, Outcome> {
        let Some(host) = &self.host_ssh else {
            return Err(refuse(format!(
                "node {} (execution mode pull): its cloud-init snippet is written on the PVE \
                 host over SSH; set ssh_key (and ip, ssh_user) in nodes/HOST.yaml or pass \
                 --ssh-key",
                node.node
            )));
        };
        host.session().await.map_err(|err| {
            StepOutcome::Failed(StepError::permanent(format!(
                "SSH to the PVE host {} ({}): {}",
                host.destination,
                host.advice(err.kind()),
                chain(&err)
            )))
        })
    }

    /// Removes the snippet `volid` a destroyed VM used, when homestak
    /// wrote it (best effort: a warning event when it cannot).
    pub(super) async fn remove_snippet(&self, node: &NodePlan, volid: &str) {
        let Some((_, name)) = volid.split_once(':') else {
            return;
        };
        let Some(file) = name
            .strip_prefix("snippets/")
            .filter(|f| f.starts_with(SNIPPET_PREFIX) && !f.contains('/'))
        else {
            return;
        };
        let Ok(session) = self.host_session(node).await else {
            self.event(
                &node.node,
                Level::Warning,
                Kind::TaskFailed,
                format!("the cloud-init snippet {volid} is left on the host (no SSH to it)"),
            );
            return;
        };
        let result = async {
            let dir = host_dir(&*session, volid, file).await?;
            let line = format!("rm -f {}", q(&format!("{dir}/{file}")));
            session.exec_ok(&as_root(&*session, line)).await.map(|_| ())
        }
        .await;
        let _ = session.close().await;
        if let Err(err) = result {
            self.event(
                &node.node,
                Level::Warning,
                Kind::TaskFailed,
                format!(
                    "the cloud-init snippet {volid} is left on the host: {}",
                    chain(&err)
                ),
            );
        }
    }

    /// The VM's address: this run's, else the store's.
    fn vm_address(&self, node: &NodePlan, m: &Memory) -> Option<Ipv4Addr> {
        m.ip.or_else(|| {
            self.store
                .as_ref()?
                .get_node(&self.key(node))
                .ok()??
                .ip?
                .parse()
                .ok()
        })
    }

    async fn vm_session(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &Memory,
        step: Step,
    ) -> Result<Box<dyn ssh::Session>, Outcome> {
        let Some(check) = &self.ssh else {
            return Err(refuse(format!(
                "node {}: {step} needs SSH to the VM; set settings.verify_ssh: true and an SSH \
                 key (or use execution.mode pull)",
                node.node
            )));
        };
        let Some(ip) = self.vm_address(node, m) else {
            return Err(refuse(format!(
                "node {}: {step}: the VM's address is unknown",
                node.node
            )));
        };
        let target = ssh::Target::new(
            ssh::Destination::new(&ip.to_string(), check.port, &want.user),
            check.identity.clone(),
            check.host_key.clone(),
        );
        check.transport.connect(&target).await.map_err(|err| {
            let message = format!("SSH to {} ({ip}) for {step}: {}", node.node, chain(&err));
            if err.is_transient() {
                StepOutcome::Failed(StepError::transient(message))
            } else {
                refuse(message)
            }
        })
    }

    /// push: the resolved spec to the VM, unless it is there already.
    pub(super) async fn push_spec(&self, node: &NodePlan, want: &DesiredVm, m: &Memory) -> Outcome {
        let Some(spec) = want.spec.as_ref().filter(|s| s.mode == ExecutionMode::Push) else {
            return StepOutcome::Done;
        };
        let session = match self.vm_session(node, want, m, Step::PushSpec).await {
            Ok(s) => s,
            Err(out) => return out,
        };
        let result = async {
            // Read back and compared here: no tool on the VM is assumed.
            let there = session
                .exec_ok(&as_root(
                    &*session,
                    format!("test -f {SPEC_PATH} && cat {SPEC_PATH} || true"),
                ))
                .await?;
            let digest = homestak_base::digest::sha256(&there.stdout);
            if homestak_base::digest::hex(&digest) == spec.digest {
                return Ok(false);
            }
            let line = format!(
                "mkdir -p /etc/homestak && umask 077 && cat > {SPEC_PATH}.tmp && mv -f \
                 {SPEC_PATH}.tmp {SPEC_PATH}"
            );
            let command = as_root(&*session, line).stdin(spec.document.clone().into_bytes());
            session.exec_ok(&command).await.map(|_| true)
        }
        .await;
        let _ = session.close().await;
        match result {
            Ok(_) => StepOutcome::Done,
            Err(err) => StepOutcome::Failed(StepError::transient(format!(
                "write spec {} to {}:{SPEC_PATH}: {}",
                spec.identity,
                node.node,
                chain(&err)
            ))),
        }
    }

    /// pull: what the first boot's fetch left in the VM.
    pub(super) async fn verify_spec(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &Memory,
    ) -> Outcome {
        let Some(spec) = want.spec.as_ref().filter(|s| s.mode == ExecutionMode::Pull) else {
            return StepOutcome::Done;
        };
        let server = match pull_server(node, spec) {
            Ok(s) => s,
            Err(out) => return out,
        };
        let session = match self.vm_session(node, want, m, Step::VerifySpec).await {
            Ok(s) => s,
            Err(out) => return out,
        };
        let result = session
            .exec_ok(&as_root(
                &*session,
                format!("cloud-init status --wait; cat {STATUS_PATH} || true"),
            ))
            .await;
        let _ = session.close().await;
        match result {
            Ok(out) if last_line(&out.stdout_text()) == "fetched" => StepOutcome::Done,
            Ok(out) => refuse(format!(
                "node {}: the VM could not fetch spec {} from {} at first boot ({}); check the \
                 spec server is up and reachable from the VM, that --spec-ca is its \
                 certificate, and the posture's token in secrets.yaml; the VM's /var/log/cloud-init-output.log has curl's error",
                node.node,
                spec.identity,
                server,
                match last_line(&out.stdout_text()) {
                    "" | "status: done" => "no result".to_string(),
                    other => format!("result {other:?}"),
                }
            )),
            Err(err) => StepOutcome::Failed(StepError::transient(format!(
                "read {STATUS_PATH} on {}: {}",
                node.node,
                chain(&err)
            ))),
        }
    }
}

fn last_line(text: &str) -> &str {
    text.trim().lines().last().unwrap_or("").trim()
}

/// The directory `pvesm path` gives for `volid` (file name `file`).
async fn host_dir(
    session: &dyn ssh::Session,
    volid: &str,
    file: &str,
) -> Result<String, ssh::Error> {
    let out = session
        .exec_ok(&as_root(session, format!("pvesm path {}", q(volid))))
        .await?;
    let answer = out.stdout_text().trim().to_string();
    Ok(answer
        .strip_suffix(&format!("/{file}"))
        .unwrap_or(&answer)
        .to_string())
}

/// `line` as root: as is for root, else through `sudo -n sh -c`.
fn as_root(session: &dyn ssh::Session, line: String) -> ssh::Command {
    if &*session.destination().user == "root" {
        ssh::Command::shell(line)
    } else {
        ssh::Command::new("sudo").args(["-n", "sh", "-c"]).arg(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_base::secret::Secret;

    const SERVER: &str = "https://127.0.0.1:44443";

    fn delivery(mode: ExecutionMode, token: Option<&str>) -> SpecDelivery {
        SpecDelivery {
            identity: "web".into(),
            mode,
            server: Some(SERVER.into()),
            digest: "d".into(),
            document: "{}".into(),
            token: token.map(Secret::new),
            root_password: Some(Secret::new("$6$salt$hash")),
        }
    }

    #[test]
    fn user_data_keeps_users_and_keys_and_fetches_with_the_token() {
        let want = crate::controllers::vm::tests::want(Some(100));
        let text = user_data(
            &want,
            &delivery(ExecutionMode::Pull, Some("s3cret")),
            SERVER,
            Some("PEM"),
        );
        assert!(text.starts_with("#cloud-config\n"));
        let doc: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("#cloud-config\n")).unwrap();
        assert_eq!(doc["users"][0]["name"], json!(want.user));
        assert_eq!(doc["users"][0]["ssh_authorized_keys"], json!(want.ssh_keys));
        assert_eq!(doc["chpasswd"]["users"][0]["name"], "root");
        let fetch = doc["runcmd"][0][2].as_str().unwrap();
        assert!(fetch.contains("'Authorization: Bearer s3cret'"), "{fetch}");
        assert!(
            fetch.contains("--cacert /etc/homestak/spec-server.pem"),
            "{fetch}"
        );
        assert!(
            fetch.contains(" https://127.0.0.1:44443/spec/web "),
            "{fetch}"
        );
        assert!(!text.contains("Authorization: Bearer \n"));
    }

    #[test]
    fn network_trust_sends_no_header() {
        let want = crate::controllers::vm::tests::want(Some(100));
        let text = user_data(&want, &delivery(ExecutionMode::Pull, None), SERVER, None);
        assert!(!text.contains("Authorization"));
        assert!(!text.contains("--cacert"));
    }

    #[test]
    fn no_root_password_sets_none() {
        let want = crate::controllers::vm::tests::want(Some(100));
        let mut spec = delivery(ExecutionMode::Pull, None);
        spec.root_password = None;
        let text = user_data(&want, &spec, SERVER, None);
        let doc: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("#cloud-config\n")).unwrap();
        assert_eq!(doc.get("chpasswd"), None);
        assert_eq!(doc["users"][0]["name"], json!(want.user));
    }

    #[test]
    fn snippet_names_are_ours_and_plain() {
        let node = NodeName::new("web.1").unwrap();
        assert_eq!(snippet_file("demo", &node), "homestak-demo-web_1.yaml");
    }
}
