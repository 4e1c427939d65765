//! `--delegate ssh`: a child tier with no daemon, the Python tool's way.
//! The parent runs `homestak reconcile --once --manifest-json … --json` on
//! the inner host over SSH and reads the run's JSON report; `status` runs
//! `homestak status … --json` the same way. The SSH command runs on a task
//! of its own, so following it holds no worker.

use std::sync::Arc;

use super::host::{Step, as_root, ssh_failed};
use super::inner;
use super::{Lifecycle, Memory};
use crate::controllers::vm;
use crate::executor::{StepError, StepOutcome};
use crate::store::DelegationState;
use homestak_api::{RunVerdict, Status};
use homestak_base::error_chain as chain;
use homestak_core::model::Manifest;
use homestak_core::plan::{DesiredVm, NodePlan};
use homestak_ssh::{self as ssh, quote};

type Outcome = StepOutcome;

fn refuse(message: String) -> Outcome {
    StepOutcome::Failed(StepError::permanent(message))
}

/// The homestak command line on the inner host for `verb` and its flags.
fn command_line(host: &str, subtree: &Manifest, verb: &[&str]) -> String {
    let mut words = vec![
        inner::BINARY.to_string(),
        format!("--site-config={}", inner::SITE_DIR),
        "--json".into(),
    ];
    words.extend(verb.iter().map(|w| (*w).to_string()));
    words.extend([
        "--manifest-json".into(),
        quote(&subtree.to_json()),
        "-H".into(),
        quote(host),
        format!("--state-dir={}", inner::STATE_DIR),
        format!("--ssh-key={}", inner::CHILD_KEY),
    ]);
    words.join(" ")
}

/// The `success` and `error` of the child's run report (`--json`).
fn report_outcome(stdout: &str) -> Option<(bool, Option<String>)> {
    let verdict: RunVerdict = serde_json::from_str(stdout.trim()).ok()?;
    Some((verdict.success, verdict.error))
}

/// How an SSH run of the child ended.
enum Ended {
    /// Still running: look again after this.
    Running(std::time::Duration),
    /// Its report: success, and why not.
    Report(bool, Option<String>),
}

impl Lifecycle {
    /// Starts `line` as root on the inner host on a task of its own.
    fn start_ssh_run(
        &self,
        session: Arc<dyn ssh::Session>,
        user: &str,
        line: &str,
        m: &mut Memory,
    ) {
        let command = as_root(user, line).timeout(self.timeouts.subtree_delegation);
        m.ssh_run = Some(tokio::spawn(async move {
            let mut sink = |_: ssh::Stream, _: &[u8]| {};
            session.exec(&command, &mut sink).await
        }));
        // The run's deadline starts now.
        m.reset_wait();
        let _ = m.expired(self.timeouts.subtree_delegation);
    }

    /// Looks at the SSH run in flight (there is one): still running, its
    /// report, or why it has none.
    async fn poll_ssh_run(&self, node: &NodePlan, m: &mut Memory) -> Result<Ended, Outcome> {
        let Some(run) = m.ssh_run.take() else {
            return Err(refuse("no SSH run of the child tier is in flight".into()));
        };
        if !run.is_finished() {
            if m.expired(self.timeouts.subtree_delegation) {
                run.abort();
                m.reset_wait();
                return Err(refuse(format!(
                    "the tier on {} did not finish within {}",
                    node.node,
                    humantime::format_duration(self.timeouts.subtree_delegation)
                )));
            }
            m.ssh_run = Some(run);
            return Ok(Ended::Running(m.next_poll(self)));
        }
        m.reset_wait();
        let output = match run.await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(ssh_failed(&e, "run the child tier over SSH")),
            Err(e) => return Err(refuse(format!("the SSH run of the child tier ended: {e}"))),
        };
        match report_outcome(&output.stdout_text()) {
            Some((success, error)) => Ok(Ended::Report(success, error)),
            None => Err(refuse(format!(
                "the tier on {} printed no run report (exit {:?}): {}",
                node.node,
                output.status.code(),
                output.stderr_text().trim()
            ))),
        }
    }

    /// `delegate_subtree` over SSH: runs the child's reconcile and waits for
    /// its report without holding a worker.
    pub(super) async fn delegate_over_ssh(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        subtree: &Arc<Manifest>,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        if m.ssh_run.is_none() {
            let session = self.connect(want, vm, m).await?;
            let mut d = self.delegation(node, vm)?;
            d.mode = super::Delegate::Ssh;
            d.subtree = Some(subtree.name().to_string());
            d.state = DelegationState::Following;
            d.message = None;
            self.save(node, &d)?;
            let line = command_line(
                node.node.as_str(),
                subtree,
                &["reconcile", "--once", "--no-report", "--delegate", "ssh"],
            );
            self.start_ssh_run(session, &want.user, &line, m);
            return Ok(StepOutcome::Requeue(m.next_poll(self)));
        }
        let (success, error) = match self.poll_ssh_run(node, m).await {
            Ok(Ended::Running(after)) => return Ok(StepOutcome::Requeue(after)),
            Ok(Ended::Report(success, error)) => (success, error),
            Err(outcome) => {
                if let StepOutcome::Failed(e) = &outcome {
                    self.record_failure(node, vm, &e.message);
                }
                return Err(outcome);
            }
        };
        let mut d = self.delegation(node, vm)?;
        if success {
            d.state = DelegationState::Ended(homestak_api::Outcome::Converged);
            self.save(node, &d)?;
            return Ok(StepOutcome::Done);
        }
        let why = error.unwrap_or_else(|| "the run failed".into());
        d.state = DelegationState::Ended(homestak_api::Outcome::Failed);
        d.message = Some(why.clone());
        let _ = self.save(node, &d);
        Err(refuse(format!(
            "the tier on {} did not converge: {why}",
            node.node
        )))
    }

    /// `destroy_subtree` over SSH: `homestak destroy --yes` on the inner
    /// host, children first. An inner host that cannot be reached is
    /// passed over (its VMs go with it).
    pub(super) async fn destroy_over_ssh(
        &self,
        node: &NodePlan,
        d: &crate::store::Delegation,
        subtree: &Manifest,
        m: &mut Memory,
    ) -> Result<(), Outcome> {
        if m.ssh_run.is_none() {
            let (Some(address), Some(user)) = (d.address.as_deref(), d.user.as_deref()) else {
                return Ok(());
            };
            let session = match self.connect_to(address, user, m).await {
                Ok(s) => s,
                Err(_) => {
                    tracing::warn!(node = %node.node, "the inner host cannot be reached over SSH; its VMs go with the VM");
                    return Ok(());
                }
            };
            let reports = format!("--report-dir={}/reports", inner::STATE_DIR);
            let line = command_line(
                node.node.as_str(),
                subtree,
                &["destroy", "--yes", &reports, "--delegate", "ssh"],
            );
            self.start_ssh_run(session, user, &line, m);
            return Err(StepOutcome::Requeue(m.next_poll(self)));
        }
        match self.poll_ssh_run(node, m).await? {
            Ended::Running(after) => Err(StepOutcome::Requeue(after)),
            Ended::Report(true, _) => Ok(()),
            Ended::Report(false, error) => Err(refuse(format!(
                "the tier on {} could not destroy its subtree: {}",
                node.node,
                error.unwrap_or_else(|| "the run failed".into())
            ))),
        }
    }
}

/// How to reach an inner host over SSH for `status`.
#[derive(Clone)]
pub struct SshTo {
    pub check: super::SshCheck,
    pub user: String,
    pub address: String,
}

/// The child tier's drift report over SSH (`homestak status --json`).
pub async fn status_over_ssh(to: &SshTo, host: &str, subtree: &Manifest) -> Result<Status, String> {
    let target = ssh::Target::new(
        ssh::Destination::new(&to.address, to.check.port, &to.user),
        to.check.identity.clone(),
        to.check.host_key.clone(),
    );
    let session = to
        .check
        .transport
        .connect(&target)
        .await
        .map_err(|e| format!("cannot SSH to it: {}", chain(&e)))?;
    let line = command_line(host, subtree, &["status"]);
    let output = session
        .exec(&as_root(&to.user, &line), &mut |_, _| {})
        .await
        .map_err(|e| format!("cannot run homestak status there: {}", chain(&e)))?;
    let _ = session.close().await;
    // Exit 2 is drift, still a report.
    serde_json::from_str(output.stdout_text().trim()).map_err(|_| {
        format!(
            "homestak status there printed no report (exit {:?}): {}",
            output.status.code(),
            output.stderr_text().trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_command_carries_the_subtree_quoted_and_guest_paths_as_flags() {
        let manifest = Manifest::from_json(
            r#"{"schema_version": 2, "name": "hv-subtree", "description": "it's",
                "nodes": [{"name": "app", "type": "vm"}]}"#,
        )
        .unwrap();
        let line = command_line("hv", &manifest, &["reconcile", "--once"]);
        assert!(line.starts_with(
            "/usr/local/bin/homestak --site-config=/usr/local/etc/homestak --json reconcile --once --manifest-json '"
        ));
        assert!(line.contains("it'\\''s"), "{line}");
        assert!(
            line.ends_with(
                " -H hv --state-dir=/var/lib/homestak --ssh-key=/etc/homestak/id_ed25519"
            )
        );
    }

    #[test]
    fn a_run_report_says_success_and_why_not() {
        assert_eq!(
            report_outcome(r#"{"success": true, "error": null}"#),
            Some((true, None))
        );
        assert_eq!(
            report_outcome(r#"{"success": false, "error": "x failed"}"#),
            Some((false, Some("x failed".into())))
        );
        assert_eq!(report_outcome("not json"), None);
    }
}
