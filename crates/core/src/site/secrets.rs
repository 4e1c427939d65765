//! `secrets.yaml`: API tokens, passwords, SSH public keys and auth tokens.
//!
//! The file is read once with the rest of the site. Two consumers treat its
//! absence differently, as the reference does:
//! - the config resolver (tofu and ansible outputs, host configs) treats a
//!   missing or unreadable file as empty ([`SecretsFile::lenient`]), with a
//!   warning for the unreadable case;
//! - the spec resolver and the token getters report an unreadable file, and
//!   the spec resolver also a missing one ([`SecretsFile::strict`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::serde_util::OrderedMap;
use homestak_base::secret::Secret;

/// The contents of `secrets.yaml`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Secrets {
    /// PVE API tokens by key; `nodes/*.yaml` `api_token` names the key.
    #[serde(default)]
    pub api_tokens: OrderedMap<Secret>,
    /// Passwords by purpose (`vm_root` is the VMs' root password hash).
    #[serde(default)]
    pub passwords: OrderedMap<Secret>,
    /// SSH public keys by name, in file order. Public keys are not secret,
    /// so they are plain strings and may be printed.
    #[serde(default)]
    pub ssh_keys: OrderedMap<String>,
    /// Tokens VMs present when they fetch their spec.
    #[serde(default)]
    pub auth: Option<SecretsAuth>,
    /// The site's key for ownership marks: a MAC under it binds each VM's
    /// marks to its vmid (`openssl rand -hex 32`). Every homestak that
    /// converges this site's hosts needs the same key.
    #[serde(default)]
    pub ownership_key: Option<Secret>,
}

/// The `auth` section of `secrets.yaml`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct SecretsAuth {
    /// Shared token of the `site_token` posture method.
    #[serde(default)]
    pub site_token: Option<Secret>,
    /// Per-identity tokens of the `node_token` posture method.
    #[serde(default)]
    pub node_tokens: OrderedMap<Secret>,
}

impl Secrets {
    /// The API token stored under `key`.
    pub fn api_token(&self, key: &str) -> Option<&Secret> {
        self.api_tokens.get(key)
    }

    /// `passwords.vm_root`.
    pub fn vm_root_password(&self) -> Option<&Secret> {
        self.passwords.get("vm_root")
    }

    /// Every SSH public key, in file order.
    pub fn ssh_key_list(&self) -> Vec<String> {
        self.ssh_keys.values().cloned().collect()
    }

    /// `ownership_key`, when set and not empty.
    pub fn ownership_key(&self) -> Option<&Secret> {
        self.ownership_key.as_ref().filter(|k| !k.is_empty())
    }

    /// `auth.site_token`, when set.
    pub fn site_token(&self) -> Option<&Secret> {
        self.auth.as_ref().and_then(|a| a.site_token.as_ref())
    }

    /// `auth.node_tokens[identity]`, when set.
    pub fn node_token(&self, identity: &str) -> Option<&Secret> {
        self.auth.as_ref().and_then(|a| a.node_tokens.get(identity))
    }
}

/// Whether `secrets.yaml` could be used.
#[derive(Debug, Clone)]
pub enum SecretsStatus {
    /// Read and parsed.
    Loaded,
    /// No `secrets.yaml`. `encrypted` says a `secrets.yaml.enc` sits next to
    /// it (the usual cause: `make decrypt` was not run).
    Missing { encrypted: bool },
    /// Present but unreadable or not valid YAML of the expected shape.
    Unreadable(Arc<homestak_base::yaml::Error>),
}

/// `secrets.yaml` as loaded, with its status.
#[derive(Debug, Clone)]
pub struct SecretsFile {
    path: PathBuf,
    status: SecretsStatus,
    values: Secrets,
}

impl SecretsFile {
    /// Reads `<root>/secrets.yaml`.
    pub(super) fn load(root: &Path) -> SecretsFile {
        let path = root.join("secrets.yaml");
        if !path.exists() {
            let encrypted = root.join("secrets.yaml.enc").exists();
            return SecretsFile {
                path,
                status: SecretsStatus::Missing { encrypted },
                values: Secrets::default(),
            };
        }
        match homestak_base::yaml::read_file::<Option<Secrets>>(&path) {
            Ok(values) => SecretsFile {
                path,
                status: SecretsStatus::Loaded,
                values: values.unwrap_or_default(),
            },
            Err(err) => {
                // The parser's message may quote a value ("invalid type:
                // string \"root@pam!t=SECRET\""): only the position stays.
                let err = err.redacted();
                tracing::warn!(
                    error = %err,
                    "secrets.yaml is unusable; tokens, passwords and keys resolve as empty"
                );
                SecretsFile {
                    path,
                    status: SecretsStatus::Unreadable(Arc::new(err)),
                    values: Secrets::default(),
                }
            }
        }
    }

    /// Path of `secrets.yaml` (whether or not it exists).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file could be used.
    pub fn status(&self) -> &SecretsStatus {
        &self.status
    }

    /// The config resolver's view: empty when missing or unreadable.
    pub fn lenient(&self) -> &Secrets {
        &self.values
    }

    /// The spec resolver's view: `None` when missing, an error when
    /// unreadable.
    pub fn strict(&self) -> Result<Option<&Secrets>, Arc<homestak_base::yaml::Error>> {
        match &self.status {
            SecretsStatus::Loaded => Ok(Some(&self.values)),
            SecretsStatus::Missing { .. } => Ok(None),
            SecretsStatus::Unreadable(err) => Err(Arc::clone(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("secrets.yaml"), text).unwrap();
    }

    #[test]
    fn missing_file_is_missing_and_lenient_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = SecretsFile::load(dir.path());
        assert!(matches!(
            f.status(),
            SecretsStatus::Missing { encrypted: false }
        ));
        assert!(f.strict().unwrap().is_none());
        assert!(f.lenient().api_tokens.is_empty());
        std::fs::write(dir.path().join("secrets.yaml.enc"), "x").unwrap();
        let f = SecretsFile::load(dir.path());
        assert!(matches!(
            f.status(),
            SecretsStatus::Missing { encrypted: true }
        ));
    }

    #[test]
    fn broken_file_is_an_error_only_for_the_strict_view() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "api_tokens:\n  pve: [unclosed\n");
        let f = SecretsFile::load(dir.path());
        let err = f.strict().unwrap_err();
        assert!(err.position().is_some(), "{err}");
        assert!(f.lenient().api_tokens.is_empty());
    }

    /// A value where a mapping belongs, or the like: the error says where,
    /// never what the value was.
    #[test]
    fn a_malformed_file_never_shows_its_values() {
        for text in [
            "api_tokens: \"root@pam!x=SECRETVALUE\"\n",
            "api_tokens:\n  pve: [SECRETVALUE]\n",
            "auth: SECRETVALUE\n",
            "auth:\n  node_tokens: SECRETVALUE\n",
            "passwords: SECRETVALUE\n",
            "api_tokens:\n  SECRETVALUE: a\n  SECRETVALUE: b\n",
            "api_tokens:\n  pve: 'SECRETVALUE\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), text);
            let f = SecretsFile::load(dir.path());
            let err = f.strict().unwrap_err();
            let chain = homestak_base::error_chain(err.as_ref());
            for shown in [chain, format!("{err:?}"), format!("{f:?}")] {
                assert!(!shown.contains("SECRETVALUE"), "{text:?}: {shown}");
            }
            assert!(err.position().is_some(), "{text:?}: {err}");
        }
    }

    #[test]
    fn values_keep_file_order_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "api_tokens:\n  pve: tok-secret-1\nssh_keys:\n  z: ssh-ed25519 Z\n  a: ssh-ed25519 A\nauth:\n  site_token: site-secret\n  node_tokens:\n    n1: node-secret\n",
        );
        let f = SecretsFile::load(dir.path());
        let s = f.strict().unwrap().unwrap();
        assert_eq!(s.ssh_key_list(), ["ssh-ed25519 Z", "ssh-ed25519 A"]);
        assert_eq!(s.api_token("pve").unwrap().expose(), "tok-secret-1");
        assert_eq!(s.site_token().unwrap().expose(), "site-secret");
        assert_eq!(s.node_token("n1").unwrap().expose(), "node-secret");
        assert!(s.node_token("n2").is_none());
        let debug = format!("{f:?}");
        for secret in ["tok-secret-1", "site-secret", "node-secret"] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }
}
