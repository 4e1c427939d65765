//! Flags of the `pve` node lifecycle, shared by `reconcile --once` and the
//! seed verbs: how child tiers run, the lifecycle's timeouts (each
//! overrides the manifest's `settings.timeouts`), and how long to wait for
//! the host lease.

use std::time::Duration;

use homestak_core::model::Timeouts;
use homestak_engine::controllers::pve::Delegate;
use homestak_engine::hostlease;
use homestak_engine::reconcile;

/// Lifecycle flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// The packer release missing images are downloaded from (default:
    /// site.yaml `defaults.packer_release`, else `latest`); overrides
    /// `image_source`.
    #[arg(long, value_name = "TAG")]
    pub packer_release: Option<String>,
    /// How `pve` nodes run their child tiers: a child daemon (`PUT
    /// /v1/subtree`, then follow) or `homestak reconcile --once` over SSH.
    #[arg(long, value_name = "daemon|ssh", default_value = "daemon", value_parser = delegate)]
    pub delegate: Delegate,
    /// How long a VM's guest agent may take to report an address.
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub wait_ip_timeout: Option<u32>,
    /// How long setting up an inner PVE host (SSH, binary, token, daemon) may take.
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub bootstrap_timeout: Option<u32>,
    /// How long a missing image may take to download (and join) on the
    /// import storage.
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub download_images_timeout: Option<u32>,
    /// How long an inner host's bridge may take to appear.
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub configure_bridge_timeout: Option<u32>,
    /// How long a child tier may take to converge its subtree.
    #[arg(long, value_name = "DURATION", value_parser = seconds)]
    pub subtree_delegation_timeout: Option<u32>,
    /// How long to wait while another homestak (a daemon, another user's
    /// run) holds the host's lease before giving up.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = lease_timeout)]
    pub lease_timeout: Duration,
    /// Fail at once when another homestak holds the host's lease.
    #[arg(long, conflicts_with = "lease_timeout")]
    pub no_wait: bool,
    /// The spec server's certificate (PEM) that pull-mode VMs trust when
    /// they fetch their spec over https (default: `tls/daemon.crt` of the
    /// state directory, what `homestak serve` with it serves).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath, value_parser = pem_certificate)]
    pub spec_ca: Option<String>,
}

impl LifecycleArgs {
    /// `base` with these flags.
    pub fn options(&self, base: reconcile::Options) -> reconcile::Options {
        reconcile::Options {
            delegate: self.delegate,
            timeouts: Timeouts {
                wait_ip: self.wait_ip_timeout,
                bootstrap: self.bootstrap_timeout,
                configure_bridge: self.configure_bridge_timeout,
                download_images: self.download_images_timeout,
                subtree_delegation: self.subtree_delegation_timeout,
            },
            lease: base.lease.map(|_| self.lease_wait()),
            packer_release: self.packer_release.clone().or(base.packer_release),
            spec_ca: self.spec_ca.clone().or(base.spec_ca),
            ..base
        }
    }

    /// What to do while another homestak holds the host lease.
    pub fn lease_wait(&self) -> hostlease::Wait {
        if self.no_wait {
            hostlease::Wait::No
        } else {
            hostlease::Wait::For(self.lease_timeout)
        }
    }
}

/// A `DURATION` to wait for a lease (`0s` fails at once, like `--no-wait`).
fn lease_timeout(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// The text of a PEM certificate file.
fn pem_certificate(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{path} holds no PEM certificate; give the spec server's certificate (its tls/daemon.crt)"
        ));
    }
    Ok(text)
}

fn delegate(text: &str) -> Result<Delegate, String> {
    Delegate::parse(text).ok_or_else(|| format!("{text:?} is not a delegation mode: daemon or ssh"))
}

/// A `DURATION` (`90s`, `20m`) in whole seconds, at least one.
fn seconds(text: &str) -> Result<u32, String> {
    let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if value < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than a second"));
    }
    u32::try_from(value.as_secs()).map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_seconds_and_modes_parse() {
        assert_eq!(seconds("20m"), Ok(1200));
        assert_eq!(lease_timeout("90s"), Ok(Duration::from_secs(90)));
        assert!(lease_timeout("soon").is_err());
        assert!(seconds("10ms").is_err());
        assert_eq!(delegate("ssh"), Ok(Delegate::Ssh));
        assert!(delegate("carrier-pigeon").is_err());
    }

    #[test]
    fn spec_ca_must_be_a_readable_pem_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = dir.path().join("key.pem");
        std::fs::write(&bad, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert!(
            pem_certificate(good.to_str().unwrap())
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert!(
            pem_certificate(bad.to_str().unwrap())
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(
            pem_certificate("/nonexistent/ca.pem")
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
