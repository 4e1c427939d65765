//! `controller.yaml`: what the daemon on this tier reconciles, and how.
//!
//! It lives at the root of the site-config, next to `site.yaml`, and is
//! read at the same revision as the manifests (the committed `HEAD` by
//! default), so enabling, suspending or re-targeting a manifest is a
//! reviewed commit like any other change. Manifests themselves stay
//! untouched: the upstream manifest schema forbids extra keys.
//!
//! ```yaml
//! host: father            # default target node (nodes/father.yaml)
//! manifests:
//!   n2-quick:             # manifests/n2-quick.yaml
//!     drift: correct      # correct (default) | report
//!   n3-full:
//!     host: pve           # overrides the default host
//!     suspend: true       # status only; no reconcile
//! ```
//!
//! Only listed manifests are reconciled (plus `--manifest NAME` flags):
//! a site-config's `manifests/` is also a library of scenarios for
//! `homestak create -M …`, and applying all of them to one host would be
//! wrong. `--host` overrides `host` for every manifest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The file name, at the site-config root.
pub const FILE: &str = "controller.yaml";

pub use homestak_api::DriftPolicy;

/// Settings of one manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPolicy {
    /// Target node; default: the file's `host`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub drift: DriftPolicy,
    /// Skip reconciles (status is still reported).
    #[serde(default)]
    pub suspend: bool,
}

/// `controller.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerFile {
    /// Default target node for every manifest.
    #[serde(default)]
    pub host: Option<String>,
    /// Reconciled manifests by name; an empty entry takes the defaults.
    #[serde(default)]
    pub manifests: BTreeMap<String, Option<ManifestPolicy>>,
}

impl ControllerFile {
    /// Parses the text of `controller.yaml` (`origin` names it in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<ControllerFile, homestak_base::yaml::Error> {
        Ok(
            homestak_base::yaml::from_str::<Option<ControllerFile>>(text, origin)?
                .unwrap_or_default(),
        )
    }

    /// The effective policy of every reconciled manifest: the file's
    /// entries plus `extra` names (from `--manifest`), with `host_override`
    /// (from `--host`) applied.
    pub fn effective(
        &self,
        extra: &[String],
        host_override: Option<&str>,
    ) -> BTreeMap<String, ManifestPolicy> {
        let mut out: BTreeMap<String, ManifestPolicy> = self
            .manifests
            .iter()
            .map(|(name, p)| (name.clone(), p.clone().unwrap_or_default()))
            .collect();
        for name in extra {
            out.entry(name.clone()).or_default();
        }
        for policy in out.values_mut() {
            policy.host = host_override
                .map(str::to_string)
                .or_else(|| policy.host.take())
                .or_else(|| self.host.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_overrides_and_refuses_unknown_keys() {
        let text = "host: father\nmanifests:\n  a:\n  b:\n    drift: report\n    host: pve\n  c:\n    suspend: true\n";
        let file = ControllerFile::parse(text, Path::new("controller.yaml")).unwrap();
        let eff = file.effective(&["d".to_string()], None);
        assert_eq!(eff["a"].host.as_deref(), Some("father"));
        assert_eq!(eff["a"].drift, DriftPolicy::Correct);
        assert_eq!(eff["b"].host.as_deref(), Some("pve"));
        assert_eq!(eff["b"].drift, DriftPolicy::Report);
        assert!(eff["c"].suspend);
        assert_eq!(eff["d"].host.as_deref(), Some("father"));
        let forced = file.effective(&[], Some("x"));
        assert!(forced.values().all(|p| p.host.as_deref() == Some("x")));

        assert_eq!(
            ControllerFile::parse("", Path::new("c.yaml")).unwrap(),
            ControllerFile::default()
        );
        for bad in [
            "hosts: x\n",
            "manifests:\n  a:\n    drift: fix\n",
            "manifests:\n  a:\n    extra: 1\n",
        ] {
            assert!(
                ControllerFile::parse(bad, Path::new("c.yaml")).is_err(),
                "{bad}"
            );
        }
    }
}
