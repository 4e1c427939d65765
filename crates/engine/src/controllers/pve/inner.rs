//! What a parent tier writes on a `pve` node's inner host: the child's
//! site-config, its daemon's token file, and the shipped systemd unit
//! with the child's settings. Pure: the steps
//! upload what these build.
//!
//! The inner site-config holds only what the child needs: `site.yaml`, the
//! presets, templates, postures and specs, the SSH public keys, the VMs'
//! root password hash and the inner host's own API token. No other host's
//! node file or token goes there.

use std::fmt::Write as _;
use std::path::Path;

use homestak_base::digest;
use homestak_base::id::{NodeName, PveNode};
use homestak_base::secret::Secret;
use homestak_core::site::Site;

/// Where things live on the inner host (guest paths).
pub const SITE_DIR: &str = "/usr/local/etc/homestak";
pub const BINARY: &str = "/usr/local/bin/homestak";
pub const ETC: &str = "/etc/homestak";
pub const STATE_DIR: &str = "/var/lib/homestak";
pub const UNIT: &str = "/etc/systemd/system/homestak.service";
/// The child's own SSH key (for its VMs and deeper tiers).
pub const CHILD_KEY: &str = "/etc/homestak/id_ed25519";
pub const TOKENS: &str = "/etc/homestak/api-tokens.yaml";
pub const READY: &str = "/var/lib/homestak/ready.json";
/// Markers: what was installed, so a later run skips what is current.
pub const BINARY_MARK: &str = "/etc/homestak/binary.id";
pub const SITE_MARK: &str = "/etc/homestak/site.id";
pub const UNIT_MARK: &str = "/etc/homestak/unit.id";

/// One file to install: guest path, contents, mode.
#[derive(Clone)]
pub struct File {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents may be secret (tokens, keys).
        write!(f, "File({}, {} bytes)", self.path, self.bytes.len())
    }
}

/// A digest of `files`, written next to them as a marker.
pub fn identity(files: &[File]) -> String {
    let mut all = Vec::new();
    for file in files {
        all.extend_from_slice(file.path.as_bytes());
        all.push(0);
        all.extend_from_slice(&file.bytes);
        all.push(0);
    }
    digest::hex(&digest::sha256(&all))
}

/// A YAML scalar for any string (JSON strings are YAML).
fn scalar(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// What the inner host's node file says.
#[derive(Debug, Clone)]
pub struct NodeFile<'a> {
    pub host: &'a NodeName,
    /// The PVE node name inside (its hostname).
    pub pve_node: &'a PveNode,
    pub address: &'a str,
    pub fingerprint: &'a str,
    pub datastore: &'a str,
    pub vm_ssh_port: u16,
}

/// Reading the parent's site-config failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {} for the inner site-config", path.display())]
pub struct ReadError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The inner site-config: the parent's shared files, `secrets.yaml` and
/// `nodes/<host>.yaml`.
pub fn site_files(
    site: &Site,
    node: &NodeFile<'_>,
    token: &Secret,
    child_key: &str,
    parent: &str,
) -> Result<Vec<File>, ReadError> {
    let mut files = Vec::new();
    let root = site.root();
    let mut copy = |relative: &str, path: &Path| -> Result<(), ReadError> {
        let bytes = std::fs::read(path).map_err(|source| ReadError {
            path: path.to_path_buf(),
            source,
        })?;
        files.push(File {
            path: format!("{SITE_DIR}/{relative}"),
            bytes,
            mode: 0o644,
        });
        Ok(())
    };
    if root.join("site.yaml").is_file() {
        copy("site.yaml", &root.join("site.yaml"))?;
    }
    let catalogs: [(&str, Vec<(String, std::path::PathBuf)>); 6] = [
        (site.templates().dir(), paths(site.templates())),
        (site.presets().dir(), paths(site.presets())),
        (site.postures().dir(), paths(site.postures())),
        (site.postures_v2().dir(), paths(site.postures_v2())),
        (site.presets_v2().dir(), paths(site.presets_v2())),
        (site.specs().dir(), paths(site.specs())),
    ];
    for (dir, entries) in catalogs {
        for (name, path) in entries {
            copy(&format!("{dir}/{name}.yaml"), &path)?;
        }
    }
    files.push(File {
        path: format!("{SITE_DIR}/secrets.yaml"),
        bytes: secrets(site, node.host.as_str(), token, child_key, parent).into_bytes(),
        mode: 0o600,
    });
    files.push(File {
        path: format!("{SITE_DIR}/nodes/{}.yaml", node.host),
        bytes: node_file(node, parent).into_bytes(),
        mode: 0o644,
    });
    Ok(files)
}

fn paths<T>(
    catalog: &homestak_core::site::loader::Catalog<T>,
) -> Vec<(String, std::path::PathBuf)> {
    catalog
        .names()
        .into_iter()
        .filter_map(|name| {
            let path = catalog.get(&name)?.path.clone();
            Some((name, path))
        })
        .collect()
}

/// The child's `secrets.yaml`.
fn secrets(site: &Site, host: &str, token: &Secret, child_key: &str, parent: &str) -> String {
    let all = site.secrets().lenient();
    let mut out = format!(
        "# Written by homestak on {parent}: only what the tier on {host} needs.\napi_tokens:\n  {host}: {}\nssh_keys:\n",
        scalar(token.expose())
    );
    for (name, key) in all.ssh_keys.iter() {
        let _ = writeln!(out, "  {}: {}", scalar(name), scalar(key));
    }
    let _ = writeln!(
        out,
        "  {}: {}",
        scalar(&format!("homestak-{host}")),
        scalar(child_key)
    );
    if let Some(root) = all.vm_root_password() {
        let _ = write!(out, "passwords:\n  vm_root: {}\n", scalar(root.expose()));
    }
    // The child marks its VMs with the site's key, so every tier (and a
    // root `status`) tells the site's VMs from copies the same way.
    if let Some(key) = all.ownership_key() {
        let _ = writeln!(out, "ownership_key: {}", scalar(key.expose()));
    }
    out
}

/// The child's `nodes/<host>.yaml`: its own PVE API, pinned.
fn node_file(node: &NodeFile<'_>, parent: &str) -> String {
    format!(
        "# Written by homestak on {parent}: the Proxmox VE host inside VM {host}.\n\
         node: {pve_node}\n\
         api_endpoint: {endpoint}\n\
         api_token: {host}\n\
         api_fingerprint: {fingerprint}\n\
         datastore: {datastore}\n\
         vm_ssh_port: {port}\n",
        host = node.host,
        pve_node = scalar(node.pve_node.as_str()),
        endpoint = scalar(&format!("https://{}:8006", node.address)),
        fingerprint = scalar(node.fingerprint),
        datastore = scalar(node.datastore),
        port = node.vm_ssh_port,
    )
}

/// The child daemon's token file: the parent's write token, by digest.
pub fn tokens_file(token: &Secret, parent: &str) -> File {
    let sha = digest::hex(&digest::sha256(token.expose().as_bytes()));
    File {
        path: TOKENS.to_string(),
        bytes: format!(
            "# Written by homestak on {parent}: the parent tier's token.\ntokens:\n  - name: {}\n    scope: write\n    sha256: {sha}\n",
            scalar(&format!("parent-{parent}"))
        )
        .into_bytes(),
        mode: 0o600,
    }
}

/// The unit every homestak daemon runs under (`contrib/homestak.service`,
/// the one the .deb ships): the child daemon uses it too, configured by
/// [`ENV_FILE`] and [`DROP_IN`], so an operator finds it where they expect.
pub const SHIPPED_UNIT: &str = include_str!("../../../../../contrib/homestak.service");
/// The unit's environment file: the child's `serve` settings.
pub const ENV_FILE: &str = "/etc/default/homestak";
/// The child's drop-in: its binary and restart policy.
pub const DROP_IN: &str = "/etc/systemd/system/homestak.service.d/tier.conf";

/// The child daemon's unit, drop-in and environment file: the shipped unit,
/// pointed at the binary the parent installed, restarted whenever it dies,
/// with its flags as `HOMESTAK_*` variables.
pub fn unit_files(address: &str, port: u16, parent: &str) -> [File; 3] {
    let header = format!(
        "# Written by homestak on {parent}: the child tier's controller daemon.\n\
         # The parent rewrites this file when it converges this tier.\n"
    );
    let env = [
        ("HOMESTAK_SITE_CONFIG", SITE_DIR.to_string()),
        ("HOMESTAK_BIND", address.to_string()),
        ("HOMESTAK_PORT", port.to_string()),
        ("HOMESTAK_SAN", address.to_string()),
        ("HOMESTAK_WORKING_TREE", "true".into()),
        ("HOMESTAK_NO_WATCH", "true".into()),
        ("HOMESTAK_STATE_DIR", STATE_DIR.to_string()),
        ("HOMESTAK_API_TOKEN_FILE", TOKENS.to_string()),
        ("HOMESTAK_SSH_KEY", CHILD_KEY.to_string()),
        ("HOMESTAK_READY_FILE", READY.to_string()),
    ];
    let mut env_text = header.clone();
    for (key, value) in env {
        let _ = writeln!(env_text, "{key}={value}");
    }
    // `ExecStart=` empty first: a drop-in replaces the command, not adds one.
    let drop_in = format!(
        "{header}[Unit]\n\
         After=pveproxy.service\n\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={BINARY} serve\n\
         Restart=always\n\
         RestartSec=1\n"
    );
    [
        File {
            path: UNIT.to_string(),
            bytes: SHIPPED_UNIT.as_bytes().to_vec(),
            mode: 0o644,
        },
        File {
            path: DROP_IN.to_string(),
            bytes: drop_in.into_bytes(),
            mode: 0o644,
        },
        File {
            path: ENV_FILE.to_string(),
            bytes: env_text.into_bytes(),
            mode: 0o644,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_site_config_holds_only_the_inner_hosts_token() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("nodes")).unwrap();
        std::fs::create_dir_all(root.join("v2/presets")).unwrap();
        std::fs::write(root.join("site.yaml"), "defaults:\n  bridge: vmbr0\n").unwrap();
        std::fs::write(root.join("v2/presets/vm-small.yaml"), "cores: 1\n").unwrap();
        std::fs::write(root.join("nodes/other.yaml"), "api_endpoint: https://x\n").unwrap();
        std::fs::write(
            root.join("secrets.yaml"),
            "api_tokens:\n  other: \"root@pam!x=OTHER-SECRET\"\nssh_keys:\n  ops: \"ssh-ed25519 AAAA ops\"\npasswords:\n  vm_root: \"$6$hash\"\nownership_key: \"site-key-0123456789abcdef0123456789\"\n",
        )
        .unwrap();
        let site = Site::load(root).unwrap();
        let node = NodeFile {
            host: &"hv".parse().unwrap(),
            pve_node: &"hv".parse().unwrap(),
            address: "127.0.5.2",
            fingerprint: "AA:BB",
            datastore: "local-zfs",
            vm_ssh_port: 2222,
        };
        let files = site_files(
            &site,
            &node,
            &Secret::new("root@pam!homestak=INNER"),
            "ssh-ed25519 BBBB child",
            "pve",
        )
        .unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/usr/local/etc/homestak/site.yaml",
                "/usr/local/etc/homestak/v2/presets/vm-small.yaml",
                "/usr/local/etc/homestak/secrets.yaml",
                "/usr/local/etc/homestak/nodes/hv.yaml",
            ]
        );
        let all: String = files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
            .collect();
        assert!(!all.contains("OTHER-SECRET"), "{all}");
        // The node file's text, as earlier versions wrote it on hosts.
        assert_eq!(
            String::from_utf8_lossy(&files[3].bytes),
            "# Written by homestak on pve: the Proxmox VE host inside VM hv.\n\
             node: \"hv\"\n\
             api_endpoint: \"https://127.0.5.2:8006\"\n\
             api_token: hv\n\
             api_fingerprint: \"AA:BB\"\n\
             datastore: \"local-zfs\"\n\
             vm_ssh_port: 2222\n"
        );
        // The child reads back what was written.
        let inner = tempfile::tempdir().unwrap();
        for f in &files {
            let rel = f
                .path
                .strip_prefix(SITE_DIR)
                .unwrap()
                .trim_start_matches('/');
            let path = inner.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &f.bytes).unwrap();
        }
        let child = Site::load(inner.path()).unwrap();
        let host = child.host_config("hv").unwrap();
        assert_eq!(host.api_endpoint.as_deref(), Some("https://127.0.5.2:8006"));
        assert_eq!(host.api_fingerprint.as_deref(), Some("AA:BB"));
        assert_eq!(host.datastore, "local-zfs");
        assert_eq!(host.vm_ssh_port, 2222);
        assert_eq!(
            host.api_token().map(|t| t.expose().to_string()),
            Some("root@pam!homestak=INNER".into())
        );
        let secrets = child.secrets().lenient();
        assert_eq!(secrets.ssh_key_list().len(), 2);
        assert!(secrets.api_token("other").is_none());
        assert_eq!(
            secrets.vm_root_password().map(|p| p.expose().to_string()),
            Some("$6$hash".into())
        );
        assert_eq!(
            secrets.ownership_key().map(|k| k.expose().to_string()),
            Some("site-key-0123456789abcdef0123456789".into())
        );
    }

    #[test]
    fn the_child_runs_the_shipped_unit_with_its_flags_in_the_environment_file() {
        let [unit, drop_in, env] = unit_files("127.0.5.2", 44443, "pve");
        assert_eq!(unit.path, UNIT);
        let unit = String::from_utf8(unit.bytes).unwrap();
        assert!(unit.contains("EnvironmentFile=-/etc/default/homestak"));
        assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
        let drop_in = String::from_utf8(drop_in.bytes).unwrap();
        let exec: Vec<_> = drop_in
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(
            exec,
            ["ExecStart=", "ExecStart=/usr/local/bin/homestak serve"]
        );
        assert!(drop_in.contains("Restart=always"));
        assert_eq!(env.path, ENV_FILE);
        let env = String::from_utf8(env.bytes).unwrap();
        for line in [
            "HOMESTAK_BIND=127.0.5.2",
            "HOMESTAK_PORT=44443",
            "HOMESTAK_STATE_DIR=/var/lib/homestak",
            "HOMESTAK_SITE_CONFIG=/usr/local/etc/homestak",
            "HOMESTAK_WORKING_TREE=true",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
        }
        let tokens = tokens_file(&Secret::new("t0k"), "pve");
        let text = String::from_utf8(tokens.bytes).unwrap();
        assert!(!text.contains("t0k"));
        assert!(text.contains("scope: write"));
        assert_eq!(tokens.mode, 0o600);
    }
}
