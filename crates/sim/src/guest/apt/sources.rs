//! The repositories apt reads in a simulated VM: one-line `.list` files
//! and deb822 `.sources` files, and whether a repository's key is there.

use std::collections::BTreeMap;

use super::{DEBIAN_REPO, LISTS, PVE_REPO, SOURCES_D, read, release_key};
use crate::ssh::VmRoot;

/// One configured repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Repo {
    pub(super) uri: String,
    pub(super) suite: String,
    pub(super) components: Vec<String>,
    pub(super) signed_by: Option<String>,
    /// The file it came from.
    pub(super) file: String,
}

/// `deb [opts] URI SUITE COMPONENT…` lines.
pub(super) fn parse_list(text: &str, file: &str) -> Result<Vec<Repo>, String> {
    let mut repos = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut rest = line;
        let Some(r) = rest.strip_prefix("deb ") else {
            if line.starts_with("deb-src ") {
                continue;
            }
            return Err(format!(
                "E: Malformed entry {} in list file {file} (Component)",
                n + 1
            ));
        };
        rest = r.trim_start();
        let mut signed_by = None;
        if let Some(r) = rest.strip_prefix('[') {
            let Some((opts, after)) = r.split_once(']') else {
                return Err(format!(
                    "E: Malformed entry {} in list file {file} (option)",
                    n + 1
                ));
            };
            for opt in opts.split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = after.trim_start();
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [uri, suite, components @ ..] = &words[..] else {
            return Err(format!(
                "E: Malformed entry {} in list file {file} (Suite)",
                n + 1
            ));
        };
        if components.is_empty() {
            return Err(format!(
                "E: Malformed entry {} in list file {file} (Component)",
                n + 1
            ));
        }
        repos.push(Repo {
            uri: uri.trim_end_matches('/').to_string(),
            suite: suite.to_string(),
            components: components.iter().map(|c| c.to_string()).collect(),
            signed_by,
            file: file.to_string(),
        });
    }
    Ok(repos)
}

/// deb822 `.sources` stanzas.
pub(super) fn parse_sources(text: &str, file: &str) -> Result<Vec<Repo>, String> {
    let mut repos = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields = BTreeMap::new();
        for line in stanza.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                return Err(format!("E: Malformed stanza in source file {file}"));
            };
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if fields.is_empty() || fields.get("enabled").is_some_and(|e| e == "no") {
            continue;
        }
        let get = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| format!("E: Malformed stanza in source file {file} ({k})"))
        };
        if !get("types")?.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        let components = get("components")?;
        for uri in get("uris")?.split_whitespace() {
            for suite in get("suites")?.split_whitespace() {
                repos.push(Repo {
                    uri: uri.trim_end_matches('/').to_string(),
                    suite: suite.to_string(),
                    components: components.split_whitespace().map(String::from).collect(),
                    signed_by: fields.get("signed-by").cloned(),
                    file: file.to_string(),
                });
            }
        }
    }
    Ok(repos)
}

/// Every configured repository, the Debian archive first.
pub(super) async fn repos(root: &VmRoot, suite: &str) -> Result<Vec<Repo>, String> {
    let mut repos = vec![Repo {
        uri: DEBIAN_REPO.into(),
        suite: suite.into(),
        components: vec!["main".into()],
        signed_by: None,
        file: "/etc/apt/sources.list.d/debian.sources".into(),
    }];
    if let Some(text) = read(root, "/etc/apt/sources.list").await {
        repos.extend(parse_list(&text, "/etc/apt/sources.list")?);
    }
    let Ok(dir) = root.resolve("/", SOURCES_D) else {
        return Ok(repos);
    };
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(&dir.host).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    for name in names {
        let guest = format!("{SOURCES_D}/{name}");
        let Some(text) = read(root, &guest).await else {
            continue;
        };
        if name.ends_with(".list") {
            repos.extend(parse_list(&text, &guest)?);
        } else if name.ends_with(".sources") {
            repos.extend(parse_sources(&text, &guest)?);
        }
        // apt ignores other names (with a notice).
    }
    Ok(repos)
}

/// The lists file `apt-get update` writes for a repository.
pub(super) fn list_file(repo: &Repo) -> String {
    let host_path = repo
        .uri
        .split_once("://")
        .map_or(repo.uri.as_str(), |(_, r)| r)
        .replace('/', "_");
    format!("{LISTS}/{host_path}_dists_{}_InRelease", repo.suite)
}

pub(super) fn is_pve_repo(repo: &Repo, suite: &str) -> bool {
    repo.uri == PVE_REPO
        && repo.suite == suite
        && repo.components.iter().any(|c| c == "pve-no-subscription")
}

/// Whether the repository's key is there: its `signed-by` file, else
/// Proxmox's release key in `trusted.gpg.d`.
pub(super) async fn signed(root: &VmRoot, repo: &Repo) -> bool {
    let want = release_key(&repo.suite);
    let has = |bytes: Option<Vec<u8>>| bytes.is_some_and(|b| b == want);
    let bytes = |guest: String| async move {
        let path = root.resolve("/", &guest).ok()?;
        tokio::fs::read(&path.host).await.ok()
    };
    match &repo.signed_by {
        Some(file) => has(bytes(file.clone()).await),
        None => has(bytes(format!(
            "/etc/apt/trusted.gpg.d/proxmox-release-{}.gpg",
            repo.suite
        ))
        .await),
    }
}
