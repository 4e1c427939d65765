//! The `pve` steps that deal with the child tier: `start_daemon`,
//! `delegate_subtree` and `destroy_subtree`, and reading the child's drift
//! report for `status`.
//!
//! The child is reached over HTTPS pinned to the fingerprint its daemon
//! wrote in its ready file (read over SSH), with the write token the parent
//! minted. Following is Kubernetes-style: the child answers a hand-over
//! with a generation, and records the generation each run started with;
//! the run the parent asked for is the first with a generation at least
//! that high.

use std::sync::Arc;

use super::host::{Step, install, marker, root, ssh_failed};
use super::inner::{self, File};
use super::{Lifecycle, Memory};
use crate::controllers::vm;
use crate::executor::{StepError, StepOutcome};
use crate::store::{Delegation, DelegationState, NodeKey, Store};
use homestak_api::client::{Client, Error as ClientError};
use homestak_api::ready::ReadyInfo;
use homestak_api::record::LastReconcile;
use homestak_api::v1::{ChildPlan, SubtreeRequest};
use homestak_api::{Outcome as RunEnd, Status};
use homestak_base::digest;
use homestak_base::error_chain as chain;
use homestak_base::id::NodeName;
use homestak_base::secret::Secret;
use homestak_core::model::Manifest;
use homestak_core::plan::{DesiredVm, NodePlan};
use homestak_tls::Fingerprint;

type Outcome = StepOutcome;

fn refuse(message: String) -> Outcome {
    StepOutcome::Failed(StepError::permanent(message))
}

/// A client of the child daemon a delegation record describes.
fn client_of(d: &Delegation) -> Option<Result<Client, String>> {
    let url = d.daemon_url.as_deref()?;
    let fingerprint = d.daemon_fingerprint.as_deref()?;
    let token = d.daemon_token.as_ref()?;
    Some(
        fingerprint
            .parse::<Fingerprint>()
            .map_err(|e| chain(&e))
            .and_then(|fp| Client::new(url, fp, token).map_err(|e| chain(&e))),
    )
}

/// Why the child's run did not converge: its message, else its summary.
fn reason_of(last: LastReconcile) -> String {
    last.message.or(last.summary).unwrap_or_default()
}

/// Keeps in `d` how the child's run ended, in the child's own outcome (a
/// drifted run is not a failed one); `Err` says why it did not converge.
fn record_end(d: &mut Delegation, last: LastReconcile) -> Result<(), String> {
    d.state = DelegationState::Ended(last.outcome);
    if last.outcome == RunEnd::Converged {
        d.message = None;
        return Ok(());
    }
    let why = reason_of(last);
    d.message = Some(why.clone());
    Err(why)
}

/// A digest of the subtree as sent, to tell a resumed hand-over from a new one.
fn subtree_digest(subtree: &Manifest) -> String {
    digest::hex(&digest::sha256(subtree.to_json().as_bytes()))
}

/// A fresh random token.
fn mint() -> Secret {
    Secret::new(digest::hex(&rand::random::<[u8; 32]>()))
}

/// What a parent knows of a child tier's view of a subtree.
#[derive(Debug, Clone)]
pub enum ChildStatus {
    /// The child observed it.
    Observed(Status),
    /// It could not be observed, and why.
    Unknown(String),
}

/// The child tier's drift report of `subtree`, the part of `manifest`
/// below `node`, as the child answers it (with the deeper tiers): its
/// daemon, or `homestak status` over SSH (with `ssh`: our key and the
/// cloud-init user) for a child run that way.
pub async fn child_status(
    store: &dyn Store,
    manifest: &str,
    node: &NodeName,
    subtree: &Manifest,
    ssh: Option<(&super::SshCheck, &str)>,
) -> ChildStatus {
    let record = match store.get_node(&NodeKey::new(manifest, node)) {
        Ok(record) => record,
        Err(e) => return ChildStatus::Unknown(format!("cannot read the store: {}", chain(&e))),
    };
    let address = record.as_ref().and_then(|r| r.ip.clone());
    let Some(d) = record.and_then(|r| r.delegation) else {
        return ChildStatus::Unknown(format!("{node} is not yet bootstrapped as a PVE host"));
    };
    if d.mode == super::Delegate::Ssh {
        let (Some((check, user)), Some(address)) = (ssh, address) else {
            return ChildStatus::Unknown(format!(
                "the tier on {node} runs over SSH, and no SSH key or address is at hand"
            ));
        };
        let to = super::SshTo {
            check: check.clone(),
            user: user.to_string(),
            address,
        };
        return match super::over_ssh::status_over_ssh(&to, node.as_str(), subtree).await {
            Ok(status) => ChildStatus::Observed(status),
            Err(why) => ChildStatus::Unknown(format!("the tier on {node}: {why}")),
        };
    }
    let (Some(client), Some(name)) = (client_of(&d), d.subtree.as_deref()) else {
        return ChildStatus::Unknown(format!("no child tier runs on {node} yet"));
    };
    let client = match client {
        Ok(c) => c,
        Err(why) => return ChildStatus::Unknown(format!("cannot reach the tier on {node}: {why}")),
    };
    match client.manifest_status(name, true).await {
        Ok(Some(ms)) => match ms.status {
            Some(status) => ChildStatus::Observed(status),
            None => ChildStatus::Unknown(format!(
                "the tier on {node} reports: {}",
                ms.error.unwrap_or_else(|| "no drift report".into())
            )),
        },
        Ok(None) => ChildStatus::Unknown(format!(
            "the tier on {node} does not hold subtree {name}; `homestak reconcile --once` hands it over"
        )),
        Err(e) => ChildStatus::Unknown(format!("the tier on {node} is unreachable: {}", chain(&e))),
    }
}

/// The child tier's plan of `subtree` (with its own children's), as its
/// daemon makes it; or a note saying why there is none.
pub async fn child_plan(
    store: &dyn Store,
    manifest: &str,
    node: &NodeName,
    subtree: &Manifest,
) -> ChildPlan {
    let note = |text: String| ChildPlan {
        node: node.clone(),
        tree: None,
        note: Some(text),
    };
    let record = match store.get_node(&NodeKey::new(manifest, node)) {
        Ok(record) => record,
        Err(e) => return note(format!("cannot read the store: {}", chain(&e))),
    };
    let names: Vec<String> = match subtree.nodes() {
        Some(nodes) => nodes.iter().map(|n| n.name.to_string()).collect(),
        None => subtree
            .levels()
            .iter()
            .map(|l| l.name.to_string())
            .collect(),
    };
    let later = || {
        format!(
            "{node} is not a PVE host with a child tier yet; once it is, that tier converges: {}",
            names.join(", ")
        )
    };
    let Some(d) = record.and_then(|r| r.delegation) else {
        return note(later());
    };
    if d.mode == super::Delegate::Ssh {
        return note(format!(
            "the tier on {node} runs over SSH and plans when it runs: {}",
            names.join(", ")
        ));
    }
    let client = match client_of(&d) {
        Some(Ok(client)) => client,
        Some(Err(why)) => return note(format!("cannot reach the tier on {node}: {why}")),
        None => return note(later()),
    };
    let request = SubtreeRequest {
        host: node.clone(),
        manifest: subtree.to_value(),
    };
    match client.plan(&request).await {
        Ok(tree) => ChildPlan {
            node: node.clone(),
            tree: Some(Box::new(tree)),
            note: None,
        },
        Err(e) => note(format!("the tier on {node} could not plan: {}", chain(&e))),
    }
}

impl Lifecycle {
    /// `start_daemon`: the child daemon runs as a systemd unit with the
    /// parent's token and answers; a daemon that is gone is brought back.
    pub(super) async fn start_daemon(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        let s = self.connect(want, vm, m).await?;
        let user = want.user.as_str();
        let ip = vm
            .ip
            .ok_or_else(|| refuse("the inner host's address is unknown".into()))?
            .to_string();
        let mut d = self.delegation(node, vm)?;
        let token = match &d.daemon_token {
            Some(token) => token.clone(),
            None => {
                // Kept before it is installed, so it is never lost.
                let token = mint();
                d.daemon_token = Some(token.clone());
                self.save(node, &d)?;
                token
            }
        };
        if !m.daemon_checked {
            let mut files = vec![inner::tokens_file(&token, &self.parent)];
            files.extend(inner::unit_files(&ip, self.daemon_port, &self.parent));
            // The site-config is read at start and the binary may be new:
            // either change restarts the daemon. This run's earlier steps
            // know both.
            let installed = |known: &Option<String>, path: &'static str| {
                let known = known.clone();
                let s = s.clone();
                async move {
                    match known {
                        Some(id) => Ok(id),
                        // An absent marker counts as empty in the unit's
                        // identity, as the hosts' unit markers have it.
                        None => marker(&*s, user, path)
                            .await
                            .map(Option::unwrap_or_default)
                            .map_err(|e| {
                                ssh_failed(&e, "read what is installed on the inner host")
                            }),
                    }
                }
            };
            let site = installed(&m.site_id, inner::SITE_MARK).await?;
            let binary = installed(&m.binary_id, inner::BINARY_MARK).await?;
            let id = format!("{} {site} {binary}", inner::identity(&files));
            let current = marker(&*s, user, inner::UNIT_MARK)
                .await
                .map_err(|e| ssh_failed(&e, "read the child daemon's marker"))?;
            let line = if current.as_deref() != Some(id.as_str()) {
                let mut files = files.clone();
                files.push(File {
                    path: inner::UNIT_MARK.into(),
                    bytes: id.into_bytes(),
                    mode: 0o644,
                });
                install(&*s, user, &files)
                    .await
                    .map_err(|e| ssh_failed(&e, "install the child daemon"))?;
                "systemctl daemon-reload && systemctl enable homestak && systemctl restart homestak"
            } else {
                "systemctl is-active homestak || systemctl restart homestak"
            };
            root(&*s, user, line)
                .await
                .map_err(|e| ssh_failed(&e, "start the child daemon"))?;
            m.daemon_checked = true;
        }
        // Wait until it answers with the parent's token.
        let line = format!("test -f {0} && cat {0} || true", inner::READY);
        let ready = root(&*s, user, &line)
            .await
            .map_err(|e| ssh_failed(&e, "read the child daemon's ready file"))?;
        if let Ok(info) = serde_json::from_str::<ReadyInfo>(&ready) {
            let candidate = Delegation {
                daemon_url: Some(info.url.clone()),
                daemon_fingerprint: Some(info.fingerprint.to_string()),
                ..d.clone()
            };
            if let Some(Ok(client)) = client_of(&candidate)
                && client.status(None, false).await.is_ok()
            {
                m.reset_wait();
                if candidate != d {
                    self.save(node, &candidate)?;
                }
                return Ok(StepOutcome::Done);
            }
        }
        if m.expired(self.timeouts.bootstrap) {
            m.reset_wait();
            return Err(refuse(format!(
                "the child daemon on {} did not answer within {}; see `journalctl -u homestak` there",
                node.node,
                humantime::format_duration(self.timeouts.bootstrap)
            )));
        }
        Ok(StepOutcome::Requeue(m.next_poll(self)))
    }

    /// `delegate_subtree`: hands the subtree to the child daemon (unless a
    /// restarted parent is resuming the same hand-over), then follows it.
    pub(super) async fn delegate_subtree(
        &self,
        node: &NodePlan,
        subtree: &Arc<Manifest>,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        let mut d = self.delegation(node, vm)?;
        let client = match client_of(&d) {
            Some(Ok(c)) => c,
            Some(Err(why)) => {
                return Err(refuse(format!("reach the tier on {}: {why}", node.node)));
            }
            None => return Err(refuse(format!("no child daemon runs on {} yet", node.node))),
        };
        let name = subtree.name().to_string();
        let generation = match m.generation {
            Some(g) => g,
            None => {
                let sent = subtree_digest(subtree);
                let resumable = d.state == DelegationState::Following
                    && d.subtree.as_deref() == Some(name.as_str())
                    && d.digest.as_deref() == Some(sent.as_str());
                let g = match d.generation {
                    Some(g) if resumable => g,
                    _ => {
                        let request = SubtreeRequest {
                            host: node.node.clone(),
                            manifest: subtree.to_value(),
                        };
                        client
                            .put_subtree(&request)
                            .await
                            .map_err(|e| self.unreachable(node, m, &e, "hand over the subtree"))?
                            .generation
                    }
                };
                d.subtree = Some(name.clone());
                d.digest = Some(sent);
                d.generation = Some(g);
                d.state = DelegationState::Following;
                d.message = None;
                self.save(node, &d)?;
                m.generation = Some(g);
                g
            }
        };
        let answer = client
            .manifest_status(&name, false)
            .await
            .map_err(|e| self.unreachable(node, m, &e, "follow the subtree"))?;
        match answer {
            Some(ms) => {
                tracing::debug!(node = %node.node, generation, record = ?ms.record, "following the child");
                if let Some(last) = ms.record.last_reconcile
                    && last.generation >= generation
                    && last.outcome != RunEnd::Interrupted
                {
                    m.generation = None;
                    m.reset_wait();
                    return match record_end(&mut d, last) {
                        Ok(()) => {
                            self.save(node, &d)?;
                            Ok(StepOutcome::Done)
                        }
                        Err(why) => {
                            let _ = self.save(node, &d);
                            Err(refuse(format!(
                                "the tier on {} did not converge: {why}",
                                node.node
                            )))
                        }
                    };
                }
            }
            // The child lost it (a new store): hand it over again.
            None => m.generation = None,
        }
        if m.expired(self.timeouts.subtree_delegation) {
            m.reset_wait();
            let why = format!(
                "the tier on {} did not finish within {}",
                node.node,
                humantime::format_duration(self.timeouts.subtree_delegation)
            );
            self.record_failure(node, vm, &why);
            return Err(refuse(why));
        }
        Ok(StepOutcome::Requeue(m.next_poll(self)))
    }

    /// A call to the child failed: wait for it (it restarts) until the
    /// delegation's timeout.
    fn unreachable(
        &self,
        node: &NodePlan,
        m: &mut Memory,
        err: &ClientError,
        what: &str,
    ) -> Outcome {
        let refused = matches!(err, ClientError::Refused { .. } | ClientError::Setup { .. });
        if !refused && !m.expired(self.timeouts.subtree_delegation) {
            return StepOutcome::Requeue(m.next_poll(self));
        }
        m.reset_wait();
        refuse(format!(
            "{what} to the tier on {}: {}",
            node.node,
            chain(err)
        ))
    }

    /// `destroy_subtree`: asks the child to destroy what it converged and
    /// waits until it has, before the VM goes. A child that cannot be
    /// reached is passed over: its VMs live inside the VM about to go.
    pub(super) async fn destroy_subtree(
        &self,
        node: &NodePlan,
        subtree: Option<&Manifest>,
        m: &mut Memory,
    ) -> Step {
        let found = self
            .store
            .get_node(&self.key(node))
            .map_err(|e| refuse(format!("read the store: {}", chain(&e))))?
            .and_then(|r| r.delegation);
        let Some(mut d) = found else {
            return Ok(StepOutcome::Done);
        };
        if d.mode == super::Delegate::Ssh {
            if let Some(subtree) = subtree {
                self.destroy_over_ssh(node, &d, subtree, m).await?;
            }
            return self.forgotten(node, d, m);
        }
        let (Some(Ok(client)), Some(name)) = (client_of(&d), d.subtree.clone()) else {
            return Ok(StepOutcome::Done);
        };
        let generation = match m.generation {
            Some(g) => g,
            None => match client.delete_subtree(&name).await {
                Ok(answer) => {
                    d.state = DelegationState::Destroying;
                    d.generation = Some(answer.generation);
                    self.save(node, &d)?;
                    m.generation = Some(answer.generation);
                    answer.generation
                }
                Err(ClientError::Refused { status: 404, .. }) => return self.forgotten(node, d, m),
                Err(e) => {
                    tracing::warn!(node = %node.node, error = %chain(&e), "the child tier cannot be reached; its VMs go with the VM");
                    return self.forgotten(node, d, m);
                }
            },
        };
        match client.manifest_status(&name, false).await {
            Ok(None) => return self.forgotten(node, d, m),
            Ok(Some(ms)) => {
                if let Some(last) = ms.record.last_reconcile
                    && last.generation >= generation
                    && last.outcome == RunEnd::Failed
                {
                    m.generation = None;
                    m.reset_wait();
                    let why = reason_of(last);
                    return Err(refuse(format!(
                        "the tier on {} could not destroy subtree {name}: {why}",
                        node.node
                    )));
                }
            }
            Err(e) => {
                tracing::warn!(node = %node.node, error = %chain(&e), "the child tier went away while destroying; its VMs go with the VM");
                return self.forgotten(node, d, m);
            }
        }
        if m.expired(self.timeouts.subtree_delegation) {
            m.reset_wait();
            return Err(refuse(format!(
                "the tier on {} did not destroy subtree {name} within {}",
                node.node,
                humantime::format_duration(self.timeouts.subtree_delegation)
            )));
        }
        Ok(StepOutcome::Requeue(m.next_poll(self)))
    }

    /// The subtree is gone from the child: the record forgets it, and so
    /// does this run (a replace hands the new VM's subtree over afresh).
    fn forgotten(&self, node: &NodePlan, mut d: Delegation, m: &mut Memory) -> Step {
        m.generation = None;
        m.reset_wait();
        d.subtree = None;
        d.digest = None;
        d.generation = None;
        d.state = DelegationState::Bootstrapping;
        d.message = None;
        self.save(node, &d)?;
        Ok(StepOutcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_api::{Mode, Reason};
    use homestak_base::time::Timestamp;

    fn run(outcome: RunEnd, summary: Option<&str>, message: Option<&str>) -> LastReconcile {
        LastReconcile {
            revision: None,
            at: Timestamp::EPOCH,
            reason: Reason::Subtree,
            mode: Mode::Apply,
            outcome,
            duration_ms: 1,
            changed_nodes: 0,
            drifted_nodes: 2,
            summary: summary.map(str::to_string),
            message: message.map(str::to_string),
            generation: 1,
        }
    }

    #[test]
    fn the_record_keeps_the_child_runs_own_outcome() {
        let mut d = Delegation {
            state: DelegationState::Following,
            message: Some("earlier".into()),
            ..Delegation::default()
        };
        assert_eq!(
            record_end(&mut d, run(RunEnd::Converged, Some("1 converged"), None)),
            Ok(())
        );
        assert_eq!(
            (d.state, d.message.as_deref()),
            (DelegationState::Ended(RunEnd::Converged), None)
        );

        // A drifted child is recorded as drifted, not failed.
        let why = record_end(&mut d, run(RunEnd::Drifted, Some("2 drifted"), None));
        assert_eq!(why, Err("2 drifted".to_string()));
        assert_eq!(d.state, DelegationState::Ended(RunEnd::Drifted));
        assert_eq!(d.message.as_deref(), Some("2 drifted"));

        let why = record_end(
            &mut d,
            run(RunEnd::Failed, Some("1 failed"), Some("a: no storage")),
        );
        assert_eq!(why, Err("a: no storage".to_string()));
        assert_eq!(d.state, DelegationState::Ended(RunEnd::Failed));

        // A run that ended before it counted nodes, with no message.
        let why = record_end(&mut d, run(RunEnd::Failed, None, None));
        assert_eq!(why, Err(String::new()));
    }
}
