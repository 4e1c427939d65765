//! The PVE API token homestak uses on a host, its certificate's
//! fingerprint and its datastore, read or made over SSH. One code path for
//! `homestak scenario pve-setup` and the `pve` node controller's
//! `create_api_token` and `write_node_config` steps.

use serde_json::Value;

use super::remote::root;
use homestak_base::id::{InvalidPveNode, PveNode};
use homestak_base::secret::Secret;
use homestak_ssh::{self as ssh, quote};

/// The token's name under `root@pam`.
pub const TOKEN_NAME: &str = "homestak";
/// The host's PVE certificate.
pub const PVE_CERT: &str = "/etc/pve/local/pve-ssl.pem";

/// Reading or making the token, fingerprint or storages failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} over SSH")]
    Ssh {
        action: &'static str,
        #[source]
        source: ssh::Error,
    },
    #[error(
        "pveum user token add printed no token; check `pveum user token list root@pam` on the host"
    )]
    NoToken,
    #[error("the PVE certificate fingerprint {0:?} is not SHA-256; check {PVE_CERT} on the host")]
    Fingerprint(String),
    #[error("pvesh get {path} printed no JSON")]
    NotJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// `hostname` printed what PVE cannot name its node by.
    #[error("the host name of {host} cannot be its PVE node name; set one with hostnamectl")]
    NodeName {
        /// The SSH destination asked.
        host: String,
        /// What `hostname` printed (trimmed).
        read: String,
        #[source]
        source: InvalidPveNode,
    },
}

impl Error {
    /// The SSH error under it, if the connection was the problem.
    pub fn ssh(&self) -> Option<&ssh::Error> {
        match self {
            Error::Ssh { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn ssh_err(action: &'static str) -> impl FnOnce(ssh::Error) -> Error {
    move |source| Error::Ssh { action, source }
}

/// Whether `root@pam!homestak` exists on the host.
pub async fn exists(s: &dyn ssh::Session, user: &str) -> Result<bool, Error> {
    let list = "pveum user token list root@pam --output-format json";
    let text = root(s, user, list)
        .await
        .map_err(ssh_err("list the host's API tokens"))?;
    Ok(serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|tokens| {
            tokens
                .iter()
                .any(|t| t.get("tokenid").and_then(Value::as_str) == Some(TOKEN_NAME))
        }))
}

/// Makes the token (`--privsep 0`), first removing one whose secret is
/// lost when `replace`; `root@pam!homestak=<uuid>`.
pub async fn create(s: &dyn ssh::Session, user: &str, replace: bool) -> Result<Secret, Error> {
    let mut line = String::new();
    if replace {
        line.push_str(&format!(
            "pveum user token remove root@pam {TOKEN_NAME} && "
        ));
    }
    line.push_str(&format!(
        "pveum user token add root@pam {TOKEN_NAME} --privsep 0 --output-format json"
    ));
    let text = root(s, user, &line)
        .await
        .map_err(ssh_err("create the host's API token"))?;
    let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
        Some((
            v.get("full-tokenid")?.as_str()?.to_string(),
            v.get("value")?.as_str()?.to_string(),
        ))
    });
    let (id, value) = parsed.ok_or(Error::NoToken)?;
    Ok(Secret::new(format!("{id}={value}")))
}

/// The SHA-256 fingerprint of the host's PVE certificate (`AA:BB:…`).
pub async fn fingerprint(s: &dyn ssh::Session, user: &str) -> Result<String, Error> {
    let line = format!("openssl x509 -noout -fingerprint -sha256 -in {PVE_CERT}");
    let fingerprint = root(s, user, &line)
        .await
        .map_err(ssh_err("read the PVE certificate's fingerprint"))?
        .trim()
        .split_once('=')
        .map(|(_, fp)| fp.trim().to_string())
        .unwrap_or_default();
    if fingerprint.parse::<homestak_tls::Fingerprint>().is_err() {
        return Err(Error::Fingerprint(fingerprint));
    }
    Ok(fingerprint)
}

/// `pvesh get PATH --output-format json`, parsed.
pub async fn pvesh_get(s: &dyn ssh::Session, user: &str, path: &str) -> Result<Value, Error> {
    let line = format!("pvesh get {} --output-format json", quote(path));
    let text = root(s, user, &line)
        .await
        .map_err(ssh_err("read the host's PVE API with pvesh"))?;
    serde_json::from_str(&text).map_err(|source| Error::NotJson {
        path: path.to_string(),
        source,
    })
}

/// The host's PVE node name: its host name, which must be one.
pub async fn node_name(s: &dyn ssh::Session, user: &str) -> Result<PveNode, Error> {
    let read = root(s, user, "hostname")
        .await
        .map_err(ssh_err("read the host's name"))?
        .trim()
        .to_string();
    PveNode::new(read.as_str()).map_err(|source| Error::NodeName {
        host: s.destination().host.to_string(),
        read,
        source,
    })
}

/// The datastore: `preferred` when the host has it for VM disks, else its
/// first storage for VM disks.
pub fn pick_datastore(storages: &Value, preferred: &str) -> Option<String> {
    let usable: Vec<&str> = storages
        .as_array()?
        .iter()
        .filter(|s| {
            s.get("content")
                .and_then(Value::as_str)
                .is_some_and(|c| c.split(',').any(|c| c.trim() == "images"))
        })
        .filter_map(|s| s.get("storage").and_then(Value::as_str))
        .collect();
    usable
        .iter()
        .find(|s| **s == preferred)
        .or(usable.first())
        .map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_ssh::fake::{Reply, ScriptedTransport};
    use homestak_ssh::{Destination, HostKeyPolicy, Identity, Target, Transport};

    #[tokio::test]
    async fn the_node_name_is_the_host_name_checked_as_a_pve_node() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate_to(&dir.path().join("id_ed25519")).unwrap();
        let fake = ScriptedTransport::new();
        fake.expect("hostname", Reply::ok("pve1\n"));
        fake.expect("hostname", Reply::ok("pve1.lab.example\n"));
        fake.expect("hostname", Reply::ok("\n"));
        let target = Target::new(
            Destination::new("127.0.0.9", 22, "root"),
            identity,
            HostKeyPolicy::InsecureAcceptAny,
        );
        let s = fake.connect(&target).await.unwrap();
        assert_eq!(node_name(&*s, "root").await.unwrap(), "pve1");
        for read in ["pve1.lab.example", ""] {
            let err = node_name(&*s, "root").await.unwrap_err();
            match &err {
                Error::NodeName {
                    host, read: got, ..
                } => {
                    assert_eq!((host.as_str(), got.as_str()), ("127.0.0.9", read));
                }
                other => panic!("{other:?}"),
            }
            let text = homestak_base::error_chain(&err);
            assert!(text.contains("127.0.0.9"), "{text}");
            assert!(
                text.contains(&format!("'{read}' is not a valid PVE node name")),
                "{text}"
            );
            assert!(err.ssh().is_none(), "not a connection problem");
        }
        assert!(fake.unmet().is_empty());
    }

    #[test]
    fn the_datastore_is_the_preferred_one_when_the_host_has_it() {
        let storages = serde_json::json!([
            {"storage": "local", "content": "iso,vztmpl,import"},
            {"storage": "local-lvm", "content": "images,rootdir"},
            {"storage": "local-zfs", "content": "rootdir,images"},
        ]);
        assert_eq!(
            pick_datastore(&storages, "local-zfs").as_deref(),
            Some("local-zfs")
        );
        assert_eq!(
            pick_datastore(&storages, "nfs").as_deref(),
            Some("local-lvm")
        );
        assert_eq!(pick_datastore(&serde_json::json!([]), "x"), None);
    }
}
