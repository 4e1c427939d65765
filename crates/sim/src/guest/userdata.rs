//! cloud-init user-data from a snippet (`cicustom: user=<storage>:snippets/<file>`).
//!
//! PVE reads the snippet when the VM starts (a start fails when it cannot),
//! and cloud-init in the guest then runs it at first boot instead of what
//! PVE would generate from `ciuser`/`sshkeys`. The simulator honours:
//!
//! - `#cloud-config` as the first line (anything else is not cloud-config:
//!   the guest boots without it, and the log says so);
//! - `users`: the first user given as a mapping becomes the SSH user, with
//!   its `ssh_authorized_keys` (`default` entries are skipped; the
//!   simulated SSH server lets one user in);
//! - `ssh_authorized_keys` at the top: added to that user's keys;
//! - `write_files`: `path`, `content`, `permissions` (octal, default
//!   0644), `encoding: b64`, `append`; written before `runcmd` (as
//!   cloud-init's `write_files` module runs before the final stage);
//! - `runcmd`: each entry (a string, or a list of words quoted for the
//!   shell) runs as root through the guest's shell, in order, whatever the
//!   earlier ones returned; output goes to `/var/log/cloud-init-output.log`;
//! - `chpasswd`, `hostname`, `fqdn`, `manage_etc_hosts`, `package_update`,
//!   `ssh_pwauth`, `disable_root`, `timezone`: accepted (no effect here).
//!
//! Any other key is reported in the log and ignored, as cloud-init does.

use base64::Engine as _;
use serde_json::Value;

use crate::storage::Storage;
use crate::world::World;

/// The `user=` volume of a `cicustom` value.
pub fn user_volume(cicustom: &str) -> Option<&str> {
    cicustom
        .split(',')
        .find_map(|part| part.strip_prefix("user="))
}

/// The text of snippet `volid` on `node`, or PVE's error when it cannot
/// be read.
pub fn snippet_text(world: &World, node: &str, volid: &str) -> Result<String, String> {
    let (storage, name) = volid
        .split_once(':')
        .ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
    let s: &Storage = world
        .nodes
        .get(node)
        .and_then(|n| n.storages.get(storage))
        .ok_or_else(|| format!("storage '{storage}' does not exist"))?;
    if !s.kind.file_based() || !name.starts_with("snippets/") {
        return Err(format!("{volid} is not in the snippets directory"));
    }
    if !s.supports("snippets") {
        return Err(format!(
            "storage '{storage}' does not support content-type 'snippets'"
        ));
    }
    let path = crate::host::storagefs::volume_path(s, name).unwrap_or_default();
    match s.volumes.get(name) {
        Some(v) => Ok(v.text.clone().unwrap_or_default()),
        None => Err(format!(
            "error opening file '{path}' - No such file or directory"
        )),
    }
}

/// A file `write_files` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub append: bool,
}

/// What the simulated cloud-init does with one user-data document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// The SSH user and its keys, when `users` names one.
    pub user: Option<(String, Vec<String>)>,
    /// Keys for the SSH user from the top-level `ssh_authorized_keys`.
    pub keys: Vec<String>,
    pub files: Vec<WriteFile>,
    pub runcmd: Vec<String>,
    /// What cloud-init would warn about, for the log.
    pub warnings: Vec<String>,
}

const ACCEPTED: &[&str] = &[
    "users",
    "ssh_authorized_keys",
    "write_files",
    "runcmd",
    "chpasswd",
    "hostname",
    "fqdn",
    "manage_etc_hosts",
    "package_update",
    "ssh_pwauth",
    "disable_root",
    "timezone",
];

/// Reads user-data `text`.
pub fn parse(text: &str) -> CloudConfig {
    let mut config = CloudConfig::default();
    if text.lines().next().map(str::trim_end) != Some("#cloud-config") {
        config
            .warnings
            .push("user-data does not start with #cloud-config: not run".into());
        return config;
    }
    let doc: Value = match homestak_base::yaml::from_str(text, "user-data".as_ref()) {
        Ok(v) => v,
        Err(e) => {
            config
                .warnings
                .push(format!("user-data is not valid YAML: {e}"));
            return config;
        }
    };
    let Some(map) = doc.as_object() else {
        config
            .warnings
            .push("user-data is not a mapping: not run".into());
        return config;
    };
    for key in map.keys() {
        if !ACCEPTED.contains(&key.as_str()) {
            config
                .warnings
                .push(format!("unknown cloud-config key '{key}' ignored"));
        }
    }
    config.user = map
        .get("users")
        .and_then(Value::as_array)
        .and_then(|users| users.iter().find_map(Value::as_object))
        .and_then(|u| {
            let name = u.get("name")?.as_str()?.to_string();
            Some((name, strings(u.get("ssh_authorized_keys"))))
        });
    config.keys = strings(map.get("ssh_authorized_keys"));
    for entry in map
        .get("write_files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match write_file(entry) {
            Ok(f) => config.files.push(f),
            Err(why) => config.warnings.push(why),
        }
    }
    for entry in map
        .get("runcmd")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match entry {
            Value::String(line) => config.runcmd.push(line.clone()),
            Value::Array(words) => config.runcmd.push(
                words
                    .iter()
                    .map(|w| homestak_ssh::quote(&scalar(w)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            other => config.warnings.push(format!(
                "runcmd entry {other} is neither a string nor a list"
            )),
        }
    }
    config
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn write_file(entry: &Value) -> Result<WriteFile, String> {
    let path = entry
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| p.starts_with('/'))
        .ok_or("write_files entry without an absolute path")?;
    let raw = entry.get("content").map(scalar).unwrap_or_default();
    let content = match entry.get("encoding").and_then(Value::as_str) {
        None | Some("text/plain") => raw.into_bytes(),
        Some("b64" | "base64") => base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| format!("write_files {path}: content is not base64"))?,
        Some(other) => return Err(format!("write_files {path}: unknown encoding {other}")),
    };
    let mode = match entry.get("permissions") {
        None => 0o644,
        Some(p) => {
            let text = scalar(p);
            u32::from_str_radix(text.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or(format!("write_files {path}: bad permissions {text:?}"))?
        }
    };
    Ok(WriteFile {
        path: path.to_string(),
        content,
        mode,
        append: entry
            .get("append")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_files_and_commands() {
        let c = parse(
            "#cloud-config\nusers:\n  - default\n  - name: ops\n    ssh_authorized_keys: [\"ssh-ed25519 AAAA k\"]\n\
             write_files:\n  - path: /etc/homestak/a\n    content: hi\n    permissions: '0600'\n\
             runcmd:\n  - echo one\n  - [sh, -c, 'echo two > /tmp/x']\nbogus: 1\n",
        );
        assert_eq!(
            c.user,
            Some(("ops".into(), vec!["ssh-ed25519 AAAA k".to_string()]))
        );
        assert_eq!(c.files[0].mode, 0o600);
        assert_eq!(c.files[0].content, b"hi");
        assert_eq!(c.runcmd, ["echo one", "sh -c 'echo two > /tmp/x'"]);
        assert_eq!(c.warnings, ["unknown cloud-config key 'bogus' ignored"]);
    }

    #[test]
    fn text_without_the_cloud_config_header_is_not_run() {
        let c = parse("runcmd:\n  - echo x\n");
        assert!(c.runcmd.is_empty());
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn a_bad_file_entry_is_reported_not_written() {
        let c = parse("#cloud-config\nwrite_files:\n  - path: rel\n    content: x\n");
        assert!(c.files.is_empty());
        assert_eq!(c.warnings, ["write_files entry without an absolute path"]);
    }
}
