//! `homestak sim --site-config DIR`: points a site-config at a running
//! simulator so homestak can talk to it at once.
//!
//! - `nodes/<node>.yaml`: `api_endpoint`, `api_token` (a reference into
//!   `secrets.yaml`), `datastore` and `api_fingerprint` are set, and
//!   `vm_ssh_port` when the simulated VMs' SSH port is not 22 (or the key
//!   is already there); when the node's own SSH server runs, `ip`,
//!   `ssh_user: root` and `ssh_port` (unless 22) point at it; other keys
//!   and comments stay.
//! - `secrets.yaml`: `api_tokens.<node>` is set to the token, and a random
//!   `ownership_key` is added when the file has none; the rest of the file
//!   (other tokens, passwords, keys, comments) stays byte for byte.
//!
//! Edits are textual to keep comments; each result is parsed again and
//! compared with the intended data before it is written.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ReadyInfo;
use homestak_base::yaml_edit::{self, is_top_key, quote, set_top_level};

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
    #[error("cannot update the site-config")]
    Yaml(#[source] homestak_base::yaml::Error),
    #[error("cannot update {}: {problem}", path.display())]
    Unsupported { path: PathBuf, problem: String },
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse(text: &str, path: &Path) -> Result<Value, Error> {
    yaml_edit::parse(text, path).map_err(Error::Yaml)
}

/// Sets `section.node: value` (e.g. `api_tokens.<node>` in `secrets.yaml`).
fn set_entry(
    text: &str,
    section: &str,
    node: &str,
    value: &str,
    path: &Path,
) -> Result<String, Error> {
    yaml_edit::set_entry(text, section, node, value).map_err(|e| Error::Unsupported {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    super::write_private(path, text.as_bytes()).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn check(
    path: &Path,
    before: &Value,
    after_text: &str,
    expect: impl FnOnce(&mut Value),
) -> Result<(), Error> {
    yaml_edit::verify(path, before, after_text, expect).map_err(|e| match e {
        yaml_edit::VerifyError::Yaml(e) => Error::Yaml(e),
        yaml_edit::VerifyError::Differs => Error::Unsupported {
            path: path.to_path_buf(),
            problem: e.to_string(),
        },
    })
}

/// Writes or updates `nodes/<node>.yaml` and `secrets.yaml` under `dir`.
pub fn update(dir: &Path, info: &ReadyInfo, datastore: &str, ssh_port: u16) -> Result<(), Error> {
    let node = &info.node;
    let node_path = dir.join("nodes").join(format!("{node}.yaml"));
    let old = read(&node_path)?;
    let before = parse(old.as_deref().unwrap_or(""), &node_path)?;
    let base = old.unwrap_or_else(|| {
        format!(
            "# Written by `homestak sim`: a simulated Proxmox VE node on loopback.\nnode: {node}\n"
        )
    });
    let mut pairs = vec![
        ("api_endpoint", info.url.clone()),
        ("api_token", node.clone()),
        ("datastore", datastore.to_string()),
        ("api_fingerprint", quote(&info.fingerprint)),
    ];
    let port_key = ssh_port != 22 || base.lines().any(|l| is_top_key(l, "vm_ssh_port"));
    if port_key {
        pairs.push(("vm_ssh_port", ssh_port.to_string()));
    }
    // The node's own SSH (root, on the API's address): `ip` for the
    // tofu-shaped resolution, `ssh_port` when not 22.
    let host_ssh: Option<std::net::SocketAddr> =
        info.host_ssh.as_deref().and_then(|a| a.parse().ok());
    let host_port_key =
        host_ssh.is_some_and(|a| a.port() != 22 || base.lines().any(|l| is_top_key(l, "ssh_port")));
    if let Some(addr) = host_ssh {
        pairs.push(("ip", addr.ip().to_string()));
        pairs.push(("ssh_user", "root".to_string()));
        if host_port_key {
            pairs.push(("ssh_port", addr.port().to_string()));
        }
    }
    let text = set_top_level(&base, &pairs);
    check(&node_path, &before, &text, |v| {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        if let Some(m) = v.as_object_mut() {
            if !m.contains_key("node") && base.lines().any(|l| is_top_key(l, "node")) {
                m.insert("node".into(), Value::String(node.clone()));
            }
            m.insert("api_endpoint".into(), Value::String(info.url.clone()));
            m.insert("api_token".into(), Value::String(node.clone()));
            m.insert("datastore".into(), Value::String(datastore.to_string()));
            m.insert(
                "api_fingerprint".into(),
                Value::String(info.fingerprint.clone()),
            );
            if port_key {
                m.insert("vm_ssh_port".into(), Value::from(ssh_port));
            }
            if let Some(addr) = host_ssh {
                m.insert("ip".into(), Value::String(addr.ip().to_string()));
                m.insert("ssh_user".into(), Value::String("root".into()));
                if host_port_key {
                    m.insert("ssh_port".into(), Value::from(addr.port()));
                }
            }
        }
    })?;
    write(&node_path, &text)?;

    let secrets_path = dir.join("secrets.yaml");
    let old = read(&secrets_path)?.unwrap_or_default();
    let before = parse(&old, &secrets_path)?;
    let text = set_entry(&old, "api_tokens", node, &info.token, &secrets_path)?;
    check(&secrets_path, &before, &text, |v| {
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
                t.insert(node.clone(), Value::String(info.token.clone()));
            }
        }
    })?;
    // homestak needs the site's ownership key; a site without one gets a
    // fresh random key (an existing one is never replaced: the VMs' marks
    // are bound to it).
    let text = if before.get("ownership_key").is_some_and(|k| k.is_string()) {
        text
    } else {
        let key = homestak_base::digest::hex(&rand::random::<[u8; 32]>());
        let with_key = set_top_level(&text, &[("ownership_key", quote(&key))]);
        let tokens_before = parse(&text, &secrets_path)?;
        check(&secrets_path, &tokens_before, &with_key, |v| {
            if let Some(m) = v.as_object_mut() {
                m.insert("ownership_key".into(), Value::String(key.clone()));
            }
        })?;
        with_key
    };
    write(&secrets_path, &text)
}

/// Lets homestak reach the simulated VMs over SSH: `secrets.yaml`
/// `ssh_keys.<key_name>` gets `public_key` (cloud-init puts it in every new
/// VM) and `nodes/<node>.yaml` `ssh_key` points at the private half.
pub fn grant_ssh(
    dir: &Path,
    node: &str,
    key_name: &str,
    public_key: &str,
    private_key: &Path,
) -> Result<(), Error> {
    let node_path = dir.join("nodes").join(format!("{node}.yaml"));
    let old = read(&node_path)?.unwrap_or_default();
    let before = parse(&old, &node_path)?;
    let key_path = private_key.display().to_string();
    let text = set_top_level(&old, &[("ssh_key", quote(&key_path))]);
    check(&node_path, &before, &text, |v| {
        if let Some(m) = v.as_object_mut() {
            m.insert("ssh_key".into(), Value::String(key_path.clone()));
        }
    })?;
    write(&node_path, &text)?;

    let secrets_path = dir.join("secrets.yaml");
    let old = read(&secrets_path)?.unwrap_or_default();
    let before = parse(&old, &secrets_path)?;
    let text = set_entry(&old, "ssh_keys", key_name, public_key, &secrets_path)?;
    check(&secrets_path, &before, &text, |v| {
        if !v.is_object() {
            *v = Value::Object(Default::default());
        }
        if let Some(m) = v.as_object_mut() {
            let keys = m
                .entry("ssh_keys")
                .or_insert_with(|| Value::Object(Default::default()));
            if !keys.is_object() {
                *keys = Value::Object(Default::default());
            }
            if let Some(k) = keys.as_object_mut() {
                k.insert(key_name.to_string(), Value::String(public_key.to_string()));
            }
        }
    })?;
    write(&secrets_path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ReadyInfo {
        ReadyInfo {
            url: "https://127.0.0.1:8006".into(),
            node: "father".into(),
            token: "root@pam!homestak=11111111-2222-4333-8444-555555555555".into(),
            fingerprint: "AA:BB".into(),
            root_password: "pw".into(),
            host_ssh: None,
        }
    }

    #[test]
    fn the_node_points_at_the_hosts_own_ssh_server() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nodes")).unwrap();
        std::fs::write(
            dir.path().join("site.yaml"),
            "defaults:\n  ssh_user: pveadmin\n",
        )
        .unwrap();
        let info = ReadyInfo {
            host_ssh: Some("127.0.0.1:2222".into()),
            ..info()
        };
        update(dir.path(), &info, "local-zfs", 22).unwrap();
        let site = homestak_core::site::Site::load(dir.path()).unwrap();
        let host = site.host_config("father").unwrap();
        assert_eq!(
            (
                host.ssh_host.as_deref().unwrap_or_default(),
                host.ssh_port,
                host.ssh_user.as_str()
            ),
            ("127.0.0.1", 2222, "root")
        );
        // On port 22 the key is left out, unless it was there.
        let info = ReadyInfo {
            host_ssh: Some("127.0.0.1:22".into()),
            ..info
        };
        update(dir.path(), &info, "local-zfs", 22).unwrap();
        let text = std::fs::read_to_string(dir.path().join("nodes/father.yaml")).unwrap();
        assert!(text.contains("ssh_port: 22"), "{text}");
        let fresh = tempfile::tempdir().unwrap();
        update(fresh.path(), &info, "local-zfs", 22).unwrap();
        let text = std::fs::read_to_string(fresh.path().join("nodes/father.yaml")).unwrap();
        assert!(!text.contains("ssh_port"), "{text}");
        assert!(text.contains("ssh_user: root"), "{text}");
    }

    #[test]
    fn grant_ssh_adds_the_key_and_points_the_node_at_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nodes")).unwrap();
        std::fs::write(
            dir.path().join("secrets.yaml"),
            "# keep me\nssh_keys:\n  me: \"ssh-ed25519 AAAA me@x\"\n",
        )
        .unwrap();
        update(dir.path(), &info(), "local-zfs", 22).unwrap();
        let key = dir.path().join(".homestak-sim/id_ed25519");
        grant_ssh(
            dir.path(),
            "father",
            "homestak-sim",
            "ssh-ed25519 BBBB sim",
            &key,
        )
        .unwrap();
        let secrets = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
        assert!(secrets.starts_with("# keep me\n"), "{secrets}");
        assert!(
            secrets.contains("  me: \"ssh-ed25519 AAAA me@x\""),
            "{secrets}"
        );
        assert!(
            secrets.contains("  homestak-sim: \"ssh-ed25519 BBBB sim\""),
            "{secrets}"
        );
        let site = homestak_core::site::Site::load(dir.path()).unwrap();
        let host = site.host_config("father").unwrap();
        assert_eq!(host.ssh_key, key);
        // The key reaches VMs through the resolver, in file order.
        let vars = site
            .resolve_manifest_node_vm(&homestak_core::site::InlineVm {
                node: "father".into(),
                vm_name: "x".into(),
                vmid: None,
                template: None,
                vm_preset: None,
                image: Some("debian-12".into()),
                posture: None,
                overrides: Default::default(),
            })
            .unwrap();
        assert_eq!(
            vars.ssh_keys,
            vec!["ssh-ed25519 AAAA me@x", "ssh-ed25519 BBBB sim"]
        );
    }

    #[test]
    fn updates_keep_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nodes")).unwrap();
        let secrets = "# FAKE secrets\napi_tokens:\n  pve: \"root@pam!homestak=a\"\n  father: \"root@pam!homestak=b\"\n\npasswords:\n  vm_root: \"$6$x\"\n";
        std::fs::write(dir.path().join("secrets.yaml"), secrets).unwrap();
        let node = "# comment stays\nnode: father\nhost: father\napi_endpoint: https://127.0.0.2:8006\napi_token: father\ndatastore: local-lvm\nip: 127.0.0.22\n";
        std::fs::write(dir.path().join("nodes/father.yaml"), node).unwrap();
        update(dir.path(), &info(), "local-zfs", 22).unwrap();
        let s = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
        assert!(s.starts_with("# FAKE secrets\n"));
        assert!(s.contains("  pve: \"root@pam!homestak=a\"\n"));
        assert!(
            s.contains("  father: \"root@pam!homestak=11111111-2222-4333-8444-555555555555\"\n")
        );
        assert!(s.contains("passwords:\n  vm_root: \"$6$x\"\n"));
        let n = std::fs::read_to_string(dir.path().join("nodes/father.yaml")).unwrap();
        assert!(n.starts_with("# comment stays\nnode: father\nhost: father\n"));
        assert!(n.contains("api_endpoint: https://127.0.0.1:8006\n"));
        assert!(n.contains("datastore: local-zfs\n"));
        assert!(n.contains("ip: 127.0.0.22\n"));
        assert!(n.contains("api_fingerprint: \"AA:BB\"\n"));
        assert!(!n.contains("vm_ssh_port"), "{n}");
        // A high SSH port is written, and kept in step once there.
        update(dir.path(), &info(), "local-zfs", 2222).unwrap();
        let v: Value =
            homestak_base::yaml::read_file(&dir.path().join("nodes/father.yaml")).unwrap();
        assert_eq!(v["vm_ssh_port"], 2222);
        update(dir.path(), &info(), "local-zfs", 22).unwrap();
        let v: Value =
            homestak_base::yaml::read_file(&dir.path().join("nodes/father.yaml")).unwrap();
        assert_eq!(v["vm_ssh_port"], 22);
        assert_eq!(v["ip"], "127.0.0.22");
    }

    #[test]
    fn fresh_site_config_and_new_token_entries() {
        let dir = tempfile::tempdir().unwrap();
        update(dir.path(), &info(), "local-zfs", 22).unwrap();
        let v: Value = homestak_base::yaml::read_file(&dir.path().join("secrets.yaml")).unwrap();
        assert_eq!(v["api_tokens"]["father"], info().token);
        let key = v["ownership_key"].as_str().unwrap().to_string();
        assert_eq!(key.len(), 64, "a fresh random key: {key}");
        // The key is kept on the next update: the VMs' marks are bound to it.
        update(dir.path(), &info(), "local-zfs", 22).unwrap();
        let v: Value = homestak_base::yaml::read_file(&dir.path().join("secrets.yaml")).unwrap();
        assert_eq!(v["ownership_key"], key.as_str());
        let n: Value =
            homestak_base::yaml::read_file(&dir.path().join("nodes/father.yaml")).unwrap();
        assert_eq!(n["api_token"], "father");
        assert_eq!(n["node"], "father");
        // A secrets file with other tokens gains one entry.
        std::fs::write(
            dir.path().join("secrets.yaml"),
            "api_tokens:\n    pve: x # keep\nother: 1\nownership_key: \"k\"\n",
        )
        .unwrap();
        update(dir.path(), &info(), "local-zfs", 22).unwrap();
        let s = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
        assert_eq!(
            s,
            format!(
                "api_tokens:\n    pve: x # keep\n    father: \"{}\"\nother: 1\nownership_key: \"k\"\n",
                info().token
            )
        );
    }

    #[test]
    fn flow_mappings_are_refused_not_mangled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets.yaml"), "api_tokens: {pve: x}\n").unwrap();
        let err = update(dir.path(), &info(), "local-zfs", 22).unwrap_err();
        assert!(err.to_string().contains("not a block mapping"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap(),
            "api_tokens: {pve: x}\n"
        );
    }
}
