//! One reconcile of one manifest on one PVE tier, the same path for every
//! trigger (CLI, daemon timer, commit, restart, a parent tier's subtree):
//! [`Engine::run_once`] does
//!
//! 1. [`desired::resolve`]: the manifest through the site-config for the
//!    target host;
//! 2. [`observe::observe`]: one bulk read of the tier, config reads for
//!    candidates (fast: only those whose summary moved since the store saw
//!    them in sync, see [`seen`]; deep: all), and what the store remembers;
//! 3. [`homestak_core::plan::plan`]: pure decision, shown to the
//!    [`Observer`], which may stop here;
//! 4. [`Tier::apply`]: the executor runs the VM controller over the plan;
//! 5. the store records conditions, events and the last run, and the
//!    caller gets a [`RunOutcome`].
//!
//! A run that changes the host (apply, destroy) does all this under the
//! host lease ([`crate::hostlease`]), taken before step 2.

pub mod desired;
pub mod observe;
mod run;
pub mod seen;
mod setup;
pub mod status;

pub use run::{Engine, Observer, Request, RunOf, RunOutcome, open_store, record_run, summarize};
pub use setup::{Setup, host_ssh, known_hosts, ssh_check};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::controllers::pve::{self as pve_node, Lifecycle};
use crate::controllers::tier::TierController;
use crate::controllers::vm::{
    HostSsh, ImageSource, KnownHostsFile, RunState, SshCheck, Timing, VmController,
};
use crate::executor::{self, Event, Report};
use crate::hostlease;
use crate::store::{self, Durability, Store};
use homestak_base::id::{InvalidPveNode, NodeName, PveNode};
use homestak_core::model::{Manifest, Settings};
use homestak_core::plan::marks::OwnerKey;
use homestak_core::plan::{self, Observed, Plan, Remembered};
use homestak_core::site::{HostConfig, Site};
use homestak_pve::{self as pve, Api};
use homestak_tls::Fingerprint;

/// Reconciling failed before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cause carries the guidance (the paths tried, how to provision).
    #[error("cannot target host {host}")]
    Host {
        host: String,
        #[source]
        source: homestak_core::site::host::Error,
    },
    #[error(
        "host {host} has no PVE API ({}); install PVE and write nodes/{host}.yaml with `homestak scenario pve-setup --host {host}`",
        config.display()
    )]
    NoApi { host: String, config: PathBuf },
    /// Known only by `hosts/<host>.yaml`: a machine PVE is not installed on
    /// yet.
    #[error(
        "host {host} is known only by {} (PVE not installed?); install PVE and write \
         nodes/{host}.yaml with `homestak scenario pve-setup --host {host}`",
        config.display()
    )]
    HostOnly { host: String, config: PathBuf },
    #[error(
        "host {host}: api_fingerprint {value:?} in nodes/{host}.yaml is not a SHA-256 fingerprint"
    )]
    Fingerprint {
        host: String,
        value: String,
        #[source]
        source: homestak_tls::FingerprintParseError,
    },
    #[error(
        "secrets.yaml ssh_keys holds keys that are not OpenSSH public keys: {}; fix or \
         remove them in secrets.yaml (one `TYPE BASE64 [COMMENT]` line each, as in a .pub file)",
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    SshKeys {
        problems: Vec<homestak_core::site::BadSshKey>,
    },
    #[error("host {host}: no API token; add it to secrets.yaml api_tokens")]
    NoToken { host: String },
    #[error("host {host}: the API token in secrets.yaml is malformed")]
    Token {
        host: String,
        #[source]
        source: pve::auth::TokenParseError,
    },
    #[error("host {host}: cannot set up the PVE client")]
    Client {
        host: String,
        #[source]
        source: pve::Error,
    },
    #[error("cannot work out what manifest {manifest} wants on host {host}")]
    Desired {
        manifest: String,
        host: String,
        #[source]
        source: Box<desired::Error>,
    },
    #[error("cannot observe host {host}")]
    Observe {
        host: String,
        #[source]
        source: pve::Error,
    },
    #[error("the state directory {} cannot be used", dir.parent().unwrap_or(dir).display())]
    StoreOpen {
        dir: PathBuf,
        #[source]
        source: store::Error,
    },
    #[error(
        "cannot load the SSH key {}: verify_ssh needs the private key whose public half is in \
         secrets.yaml ssh_keys (pass --ssh-key, set ssh_key in the node file, or set \
         verify_ssh: false)",
        path.display()
    )]
    SshKey {
        path: PathBuf,
        #[source]
        source: Box<homestak_ssh::Error>,
    },
    #[error("cannot read the store")]
    Store {
        #[source]
        source: store::Error,
    },
    /// The host lease could not be taken (held by another homestak, or
    /// PVE refused the read or write). Boxed: it is the largest error.
    #[error(transparent)]
    HostLease(Box<hostlease::Error>),
    #[error(
        "{} has no ownership_key: homestak binds each VM's marks to its vmid under this key, \
         so it cannot tell its VMs from clones without it. Add `ownership_key: <64 hex digits>` \
         (make one with `openssl rand -hex 32`) and use the same key everywhere this site is \
         reconciled",
        secrets.display()
    )]
    NoOwnershipKey { secrets: PathBuf },
    #[error("{} ownership_key cannot be used", secrets.display())]
    OwnershipKey {
        secrets: PathBuf,
        #[source]
        source: homestak_core::plan::marks::WeakOwnerKey,
    },
    #[error(
        "host {host}: its PVE node name cannot be used in API paths; fix `node:` in nodes/{host}.yaml"
    )]
    PveNode {
        host: String,
        #[source]
        source: InvalidPveNode,
    },
}

impl From<hostlease::Error> for Error {
    fn from(err: hostlease::Error) -> Error {
        Error::HostLease(Box::new(err))
    }
}

/// Switches of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub allow_replace: bool,
    pub prune: bool,
    /// Destroy a second VM of ours for a node that has one
    /// (`--prune-duplicates`); otherwise duplicates are reported and kept.
    pub prune_duplicates: bool,
    /// Check that VMs answer on SSH: `Some` overrides the manifest's
    /// `verify_ssh` (`test` forces it on).
    pub verify_ssh: Option<bool>,
    /// Executor limits; `on_error` comes from the manifest.
    pub executor: executor::Config,
    pub timing: Timing,
    /// Lifecycle timeouts from flags: each one set overrides the
    /// manifest's `settings.timeouts`, which override the defaults.
    pub timeouts: homestak_core::model::Timeouts,
    /// The port of the child daemons this tier starts.
    pub daemon_port: u16,
    /// How `pve` nodes run their child tiers.
    pub delegate: pve_node::Delegate,
    /// Take the host lease before a run that changes the host (apply,
    /// destroy), waiting as this says; `None` for runs that only plan
    /// (`homestak plan`, `--dry-run`).
    pub lease: Option<hostlease::Wait>,
    /// The spec server's certificate (PEM) that pull-mode VMs trust for
    /// their first-boot fetch over HTTPS (the daemon's `tls/daemon.crt`).
    pub spec_ca: Option<String>,
    /// `--packer-release TAG`: the release missing images come from, over
    /// site.yaml's `packer_release` and `image_source` (see
    /// [`crate::packer::release`]).
    pub packer_release: Option<String>,
    /// Read every candidate VM's config (`--deep`), instead of only those
    /// whose `/cluster/resources` summary changed since they were last
    /// seen in sync.
    pub deep: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_replace: false,
            prune: true,
            prune_duplicates: false,
            verify_ssh: None,
            executor: executor::Config::default(),
            timing: Timing::default(),
            timeouts: homestak_core::model::Timeouts::default(),
            daemon_port: pve_node::DAEMON_PORT,
            delegate: pve_node::Delegate::Daemon,
            lease: Some(hostlease::Wait::For(hostlease::DEFAULT_WAIT)),
            spec_ca: None,
            packer_release: None,
            deep: false,
        }
    }
}

/// One PVE tier: where to act and with what.
#[derive(Clone)]
pub struct Tier {
    pub site: Arc<Site>,
    pub host: HostConfig,
    /// The PVE node the tier's API paths name.
    pub pve_node: PveNode,
    pub api: Arc<dyn Api>,
    pub store: Option<Arc<dyn Store>>,
    pub ssh: Option<SshCheck>,
    /// Why `ssh` could not be set up, when a `pve` node needs it.
    pub ssh_error: Option<String>,
    /// The homestak binary installed on inner PVE hosts.
    pub binary: PathBuf,
    /// Where VM host keys are recorded (dropped when a VM is destroyed).
    pub known_hosts: Option<KnownHostsFile>,
    /// SSH to the host itself (joining images shipped in parts).
    pub host_ssh: Option<HostSsh>,
    /// The site's key for ownership marks.
    pub owner_key: OwnerKey,
}

/// The site's ownership key from `secrets.yaml`.
pub fn owner_key(site: &Site) -> Result<OwnerKey, Error> {
    let secrets = site.secrets();
    let path = secrets.path().to_path_buf();
    let Some(secret) = secrets.lenient().ownership_key() else {
        return Err(Error::NoOwnershipKey { secrets: path });
    };
    OwnerKey::new(secret).map_err(|source| Error::OwnershipKey {
        secrets: path,
        source,
    })
}

/// How `host`'s certificate is trusted: a pinned `api_fingerprint` is
/// always checked, `--insecure` or not; `insecure` only turns verification
/// off where nothing is pinned, else the system roots verify.
pub fn trust(host: &HostConfig, insecure: bool) -> Result<pve::Trust, Error> {
    if let Some(text) = &host.api_fingerprint {
        let fingerprint: Fingerprint = text.parse().map_err(|source| Error::Fingerprint {
            host: host.name.clone(),
            value: text.clone(),
            source,
        })?;
        return Ok(pve::Trust::Pinned(fingerprint));
    }
    Ok(if insecure {
        pve::Trust::Insecure
    } else {
        pve::Trust::System
    })
}

/// Builds the PVE client for `host`, trusting its certificate as
/// [`trust`] says.
pub fn connect(
    host: &HostConfig,
    insecure: bool,
    observer: Option<Arc<dyn pve::Observer>>,
) -> Result<Arc<dyn Api>, Error> {
    let Some(endpoint) = &host.api_endpoint else {
        return Err(no_api(host));
    };
    let Some(secret) = host.api_token() else {
        return Err(Error::NoToken {
            host: host.name.clone(),
        });
    };
    let trust = trust(host, insecure)?;
    let client_err = |source| Error::Client {
        host: host.name.clone(),
        source,
    };
    let token = pve::ApiToken::parse(secret.expose()).map_err(|source| Error::Token {
        host: host.name.clone(),
        source,
    })?;
    let mut config = pve::Config::new(endpoint, token, trust).map_err(client_err)?;
    config.observer = observer;
    let client = pve::Client::new(config).map_err(client_err)?;
    Ok(Arc::new(client))
}

/// Where the site's images come from (`image_source`, else the packer
/// release, `packer_release` overriding site.yaml's), with the parts and
/// digests the site-config gives.
pub fn image_source(site: &Site, packer_release: Option<&str>) -> ImageSource {
    let d = site.defaults();
    let base_url = crate::packer::release::image_base_url(packer_release, d);
    ImageSource {
        base_url,
        parts: d
            .image_parts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        sha256: d
            .image_sha256
            .iter()
            .flatten()
            .map(|(image, digest)| (image.clone(), digest.as_str().to_string()))
            .collect(),
    }
}

/// Why `host` has no API: a `hosts/` machine still needs PVE; a node file
/// lacks `api_endpoint`.
fn no_api(host: &HostConfig) -> Error {
    let (host_name, config) = (host.name.clone(), host.config_file.clone());
    if host.is_host_only {
        Error::HostOnly {
            host: host_name,
            config,
        }
    } else {
        Error::NoApi {
            host: host_name,
            config,
        }
    }
}

/// The PVE node of `host`'s API paths.
pub fn pve_node(host: &HostConfig) -> Result<PveNode, Error> {
    let Some(name) = &host.node_name else {
        return Err(no_api(host));
    };
    PveNode::new(name.as_str()).map_err(|source| Error::PveNode {
        host: host.name.clone(),
        source,
    })
}

/// A plan with what it was made from.
#[derive(Debug, Clone)]
pub struct Planned {
    pub tier: desired::Tier,
    pub observed: Observed,
    pub plan: Plan,
    pub settings: Settings,
    /// Whether every candidate's config was read (a deep observe).
    pub deep: bool,
}

impl Tier {
    /// What the store remembers of `manifest`'s nodes, and the VMs it saw
    /// in sync.
    fn remembered(&self, manifest: &str) -> Result<(Vec<Remembered>, seen::Known), Error> {
        let Some(store) = &self.store else {
            return Ok(Default::default());
        };
        let nodes = store
            .list_nodes(manifest)
            .map_err(|source| Error::Store { source })?;
        let known = seen::Known::from_records(&nodes);
        let remembered = nodes
            .into_iter()
            .filter_map(|(node, record)| {
                let intent = record.create_intent.and_then(|i| i.vmid);
                Some(Remembered {
                    node,
                    vmid: record.vmid.or(intent)?,
                    spec_hash: record.spec_hash,
                    intent,
                })
            })
            .collect();
        Ok((remembered, known))
    }

    fn resolve(&self, manifest: &Manifest) -> Result<desired::Tier, Error> {
        desired::resolve(&self.site, manifest, &self.host.name).map_err(|source| Error::Desired {
            manifest: manifest.name().to_string(),
            host: self.host.name.clone(),
            source: Box::new(source),
        })
    }

    async fn observe(
        &self,
        manifest: &Manifest,
        tier: &desired::Tier,
        deep: bool,
    ) -> Result<observe::Observation, Error> {
        let (remembered, known) = self.remembered(manifest.name())?;
        let known = (!deep).then_some(&known);
        observe::observe(
            self.api.clone(),
            &tier.desired,
            remembered,
            &self.owner_key,
            known,
        )
        .await
        .map_err(|source| Error::Observe {
            host: self.host.name.clone(),
            source,
        })
    }

    /// Resolves, observes and plans. No writes.
    pub async fn plan(&self, manifest: &Manifest, options: &Options) -> Result<Planned, Error> {
        let tier = self.resolve(manifest)?;
        // Every VM gets every key: a bad one would fail at create with
        // PVE's nameless "SSH public key validation error". Refused here,
        // before PVE is asked anything.
        if !tier.desired.vms.is_empty() {
            let problems = self.site.ssh_key_problems();
            if !problems.is_empty() {
                return Err(Error::SshKeys { problems });
            }
        }
        let observation = self.observe(manifest, &tier, options.deep).await?;
        let observed = observation.observed;
        let plan = plan::plan(
            &tier.desired,
            &observed,
            plan::Options {
                allow_replace: options.allow_replace,
                prune: options.prune,
                prune_duplicates: options.prune_duplicates,
            },
        );
        if let Some(store) = &self.store {
            seen::remember(store.as_ref(), &plan, &observed.vms, &observation.summaries);
        }
        Ok(Planned {
            tier,
            observed,
            plan,
            settings: manifest.settings().clone(),
            deep: options.deep,
        })
    }

    /// Plans the removal of every VM this manifest owns on this tier
    /// (`destroy`): the manifest's VMs are found by their marks, so VMs
    /// whose nodes already left the manifest go too. Nothing else is
    /// touched.
    pub async fn plan_destroy(&self, manifest: &Manifest) -> Result<Planned, Error> {
        let mut tier = self.resolve(manifest)?;
        tier.desired.vms.clear();
        // Deep: what is deleted is judged on its config, as before.
        let observed = self.observe(manifest, &tier, true).await?.observed;
        let mut plan = plan::plan(
            &tier.desired,
            &observed,
            plan::Options {
                allow_replace: false,
                prune: true,
                // Destroy removes every VM of the manifest, duplicates too.
                prune_duplicates: true,
            },
        );
        for node in &mut plan.nodes {
            node.reason = Some(format!("destroy manifest {}", manifest.name()));
        }
        let mut settings = manifest.settings().clone();
        // Destroy goes on past one failure: leaving the rest is worse.
        settings.on_error = homestak_core::model::OnError::Continue;
        Ok(Planned {
            tier,
            observed,
            plan,
            settings,
            deep: true,
        })
    }

    /// Carries out a plan. `cancel` resolves to wind down at a safe point.
    pub async fn apply(
        &self,
        planned: &Planned,
        options: &Options,
        cancel: impl std::future::Future<Output = ()>,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Report {
        let desired: HashMap<NodeName, plan::DesiredVm> = planned
            .tier
            .desired
            .vms
            .iter()
            .map(|v| (v.name.clone(), v.clone()))
            .collect();
        let images = image_source(&self.site, options.packer_release.as_deref());
        let ssh = if planned.settings.verify_ssh {
            self.ssh.clone()
        } else {
            None
        };
        let timeouts = planned.settings.timeouts.overridden_by(&options.timeouts);
        let mut timing = options.timing.clone();
        let secs = |s: u32| std::time::Duration::from_secs(u64::from(s));
        if let Some(s) = timeouts.wait_ip {
            timing.agent_timeout = secs(s);
        }
        if let Some(s) = timeouts.download_images {
            timing.download_timeout = secs(s);
        }
        let vm = VmController {
            api: self.api.clone(),
            pve_node: self.pve_node.clone(),
            manifest: planned.tier.desired.manifest.clone(),
            image_storage: self.host.image_storage.clone(),
            default_storage: self.host.datastore.clone(),
            images,
            desired,
            store: self.store.clone(),
            ssh,
            known_hosts: self.known_hosts.clone(),
            host_ssh: self.host_ssh.clone(),
            owner_key: self.owner_key.clone(),
            spec_ca: options.spec_ca.clone(),
            timing,
            shared: RunState::default(),
        };
        vm.reserve(planned.plan.nodes.iter().filter_map(|n| n.vmid));
        let pve = self.store.clone().map(|store| Lifecycle {
            ssh: self.ssh.clone().ok_or_else(|| {
                self.ssh_error
                    .clone()
                    .unwrap_or_else(|| "no SSH key is loaded".into())
            }),
            binary: self.binary.clone(),
            parent: self.host.name.clone(),
            site: self.site.clone(),
            manifest: planned.tier.desired.manifest.clone(),
            store,
            bridge: self
                .site
                .defaults()
                .bridge
                .clone()
                .unwrap_or_else(|| "vmbr0".into()),
            daemon_port: options.daemon_port,
            delegate: options.delegate,
            timeouts: pve_node::Timeouts::with(&timeouts),
            poll_min: options.timing.poll_min,
            poll_max: options.timing.poll_max,
        });
        let controller = Arc::new(TierController {
            vm,
            pve,
            subtrees: planned.tier.subtrees.clone(),
            delegates: planned.tier.delegates.clone(),
        });
        if let Some(store) = &self.store {
            seen::forget(store.as_ref(), &planned.plan);
        }
        let mut config = options.executor.clone();
        config.on_error = planned.settings.on_error;
        let learn = matches!(config.per_storage, executor::PerStorage::Learn { .. });
        let tier = self.storage_tier();
        let store = self.store.as_ref().filter(|_| learn);
        if let Some(store) = store {
            match store.storage_limits(&tier) {
                Ok(learned) => {
                    for (storage, limit) in learned {
                        config.learned_storage.entry(storage).or_insert(limit);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %homestak_base::error_chain(&err), "cannot read the learned storage limits; starting from the defaults");
                }
            }
        }
        let report = executor::execute(
            &planned.plan,
            &planned.tier.parents,
            controller,
            &config,
            cancel,
            events,
        )
        .await;
        // Once per run: the next run starts where this one ended.
        if let Some(store) = store {
            let limits = report
                .storage
                .iter()
                .map(|(storage, stats)| (storage.clone(), stats.limit))
                .collect();
            if let Err(err) = store.put_storage_limits(&tier, &limits, Durability::Lazy) {
                tracing::warn!(error = %homestak_base::error_chain(&err), "cannot keep the learned storage limits");
            }
        }
        report
    }

    /// The key learned storage limits are kept under: the host and the
    /// endpoint the tier's API calls go to.
    pub fn storage_tier(&self) -> String {
        format!(
            "{}@{}",
            self.host.name,
            self.host.api_endpoint.as_deref().unwrap_or_default()
        )
    }
}

impl Tier {
    /// The drift report for `manifest`; `deep` reads every candidate's
    /// config.
    pub async fn status(&self, manifest: &Manifest, deep: bool) -> Result<status::Status, Error> {
        let options = Options {
            deep,
            ..Options::default()
        };
        let planned = self.plan(manifest, &options).await?;
        self.report(manifest, &planned).await
    }

    /// The drift report `planned` makes, with what the store knows
    /// (addresses, the last applied revision) and what the child tiers
    /// report of their subtrees.
    pub async fn report(
        &self,
        manifest: &Manifest,
        planned: &Planned,
    ) -> Result<status::Status, Error> {
        let mut records = std::collections::HashMap::new();
        let mut commit = None;
        if let Some(store) = &self.store {
            for (node, record) in store
                .list_nodes(manifest.name())
                .map_err(|source| Error::Store { source })?
            {
                records.insert(node, record);
            }
            commit = store
                .get_manifest(manifest.name())
                .map_err(|source| Error::Store { source })?
                .and_then(|m| m.last_applied)
                .map(|a| a.revision);
        }
        let mut report = status::report(planned, &records);
        report.last_applied_commit = commit;
        status::children(&mut report, planned, self.store.clone(), self.ssh.as_ref()).await;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine known only by `hosts/` is told to get PVE through
    /// pve-setup, naming the hosts/ file; a node file without `api_endpoint`
    /// keeps the no-API error.
    #[test]
    fn a_host_without_api_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("hosts")).unwrap();
        std::fs::create_dir_all(dir.path().join("nodes")).unwrap();
        std::fs::write(dir.path().join("hosts/metal.yaml"), "ip: 127.0.0.9\n").unwrap();
        std::fs::write(dir.path().join("nodes/bare.yaml"), "datastore: local\n").unwrap();
        let site = Site::load(dir.path()).unwrap();

        let metal = site.host_config("metal").unwrap();
        let err = connect(&metal, true, None).err().unwrap();
        assert!(matches!(err, Error::HostOnly { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("hosts/metal.yaml")
                && text.contains("homestak scenario pve-setup --host metal"),
            "{text}"
        );
        assert!(matches!(pve_node(&metal), Err(Error::HostOnly { .. })));

        let bare = site.host_config("bare").unwrap();
        let err = connect(&bare, true, None).err().unwrap();
        assert!(matches!(err, Error::NoApi { .. }), "{err:?}");
        assert!(err.to_string().contains("nodes/bare.yaml"), "{err}");
    }
}
