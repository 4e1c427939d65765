//! `write_node_config`: a host's `nodes/<host>.yaml` and its token in
//! `secrets.yaml`, written into the site-config so `create` and
//! `reconcile` can use the host. Textual edits that keep every other key
//! and comment ([`homestak_base::yaml_edit`], as `homestak sim
//! --site-config` does).

use std::path::{Path, PathBuf};

use serde_json::Value;

use homestak_base::id::PveNode;
use homestak_base::secret::Secret;
use homestak_base::yaml_edit::{self, quote, set_top_level};

/// What the node file says about a host with PVE.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The PVE node name (its host name).
    pub node: PveNode,
    /// The host's address (the API at `https://IP:8006`, SSH).
    pub ip: String,
    pub fingerprint: String,
    pub datastore: String,
    pub ssh_user: String,
    /// The host's SSH port, written when not 22.
    pub ssh_port: u16,
}

/// The site-config could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: homestak_base::yaml::Error,
    },
    #[error("cannot update {}; set the keys by hand", path.display())]
    Edit {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn read(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse(text: &str, path: &Path) -> Result<Value, Error> {
    yaml_edit::parse(text, path).map_err(|source| Error::Yaml {
        path: path.to_path_buf(),
        source,
    })
}

fn edit_failed(path: &Path) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Edit { path, source }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let failed = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    homestak_base::fsutil::write_atomic(path, text.as_bytes(), mode).map_err(failed)
}

/// Writes `nodes/<host>.yaml` (keeping keys and comments of an existing
/// one) and `api_tokens.<host>` in `secrets.yaml`. Returns whether
/// anything changed.
pub fn write_node_config(
    site_root: &Path,
    host: &str,
    facts: &NodeFacts,
    token: &Secret,
) -> Result<bool, Error> {
    let node_path = site_root.join("nodes").join(format!("{host}.yaml"));
    let old = read(&node_path)?;
    let before = parse(&old, &node_path)?;
    let base = if old.trim().is_empty() {
        format!("# Written by homestak scenario pve-setup from hosts/{host}.yaml.\n")
    } else {
        old.clone()
    };
    let mut pairs: Vec<(&str, String)> = vec![
        ("node", quote(facts.node.as_str())),
        ("api_endpoint", quote(&format!("https://{}:8006", facts.ip))),
        ("api_token", quote(host)),
        ("api_fingerprint", quote(&facts.fingerprint)),
        ("datastore", quote(&facts.datastore)),
        ("ip", quote(&facts.ip)),
        ("ssh_user", quote(&facts.ssh_user)),
    ];
    if facts.ssh_port != 22 {
        pairs.push(("ssh_port", facts.ssh_port.to_string()));
    }
    let text = set_top_level(&base, &pairs);
    yaml_edit::verify(&node_path, &before, &text, |v| {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        if let Some(m) = v.as_object_mut() {
            for (key, value) in [
                ("node", &facts.node.to_string()),
                ("api_token", &host.to_string()),
                ("api_fingerprint", &facts.fingerprint),
                ("datastore", &facts.datastore),
                ("ip", &facts.ip),
                ("ssh_user", &facts.ssh_user),
            ] {
                m.insert(key.into(), Value::String(value.clone()));
            }
            m.insert(
                "api_endpoint".into(),
                Value::String(format!("https://{}:8006", facts.ip)),
            );
            if facts.ssh_port != 22 {
                m.insert("ssh_port".into(), Value::from(facts.ssh_port));
            }
        }
    })
    .map_err(|e| edit_failed(&node_path)(Box::new(e)))?;
    let mut changed = false;
    if text != old {
        write(&node_path, &text, 0o644)?;
        changed = true;
    }

    let secrets_path = site_root.join("secrets.yaml");
    let old = read(&secrets_path)?;
    let before = parse(&old, &secrets_path)?;
    let text = yaml_edit::set_entry(&old, "api_tokens", host, token.expose())
        .map_err(|e| edit_failed(&secrets_path)(Box::new(e)))?;
    yaml_edit::verify(&secrets_path, &before, &text, |v| {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        if let Some(m) = v.as_object_mut() {
            let tokens = m
                .entry("api_tokens")
                .or_insert_with(|| Value::Object(Default::default()));
            if !tokens.is_object() {
                *tokens = Value::Object(Default::default());
            }
            if let Some(t) = tokens.as_object_mut() {
                t.insert(host.to_string(), Value::String(token.expose().to_string()));
            }
        }
    })
    .map_err(|e| edit_failed(&secrets_path)(Box::new(e)))?;
    if text != old {
        write(&secrets_path, &text, 0o600)?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_file_and_token_are_written_keeping_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("hosts")).unwrap();
        std::fs::write(root.join("hosts/hv1.yaml"), "ip: 127.0.5.2\n").unwrap();
        std::fs::write(
            root.join("secrets.yaml"),
            "# keep me\napi_tokens:\n  other: \"root@pam!x=1\"\nssh_keys:\n  ops: \"ssh-ed25519 AAAA ops\"\n",
        )
        .unwrap();
        let facts = NodeFacts {
            node: "hv1".parse().unwrap(),
            ip: "127.0.5.2".into(),
            fingerprint: "AA:BB".into(),
            datastore: "local-zfs".into(),
            ssh_user: "debian".into(),
            ssh_port: 2222,
        };
        let token = Secret::new("root@pam!homestak=abc");
        assert!(write_node_config(root, "hv1", &facts, &token).unwrap());
        // Again: nothing changes.
        assert!(!write_node_config(root, "hv1", &facts, &token).unwrap());
        let secrets = std::fs::read_to_string(root.join("secrets.yaml")).unwrap();
        assert!(secrets.starts_with("# keep me\n"), "{secrets}");
        assert!(secrets.contains("  other: \"root@pam!x=1\"\n"), "{secrets}");
        let site = homestak_core::site::Site::load(root).unwrap();
        let host = site.host_config("hv1").unwrap();
        assert!(!host.is_host_only);
        assert_eq!(host.node_name.as_deref(), Some("hv1"));
        assert_eq!(host.api_endpoint.as_deref(), Some("https://127.0.5.2:8006"));
        assert_eq!(host.api_fingerprint.as_deref(), Some("AA:BB"));
        assert_eq!(host.ssh_user, "debian");
        assert_eq!(host.ssh_port, 2222);
        assert_eq!(
            host.api_token().map(|t| t.expose().to_string()).as_deref(),
            Some("root@pam!homestak=abc")
        );
    }
}
