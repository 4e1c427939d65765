//! Driving packer on a build host over SSH, as the Python iac-driver's
//! packer scenarios did: sync a local packer tree there, build templates,
//! fetch the images here, publish them into the host's PVE storage and
//! check the API lists them. Each phase is a plain async function over an
//! SSH session ([`Session`]), so the scenarios are thin and the phases are
//! tested against the simulator.
//!
//! Layout (the homestak packer repository's): templates are
//! `templates/<template>.pkr.hcl`; a template writes
//! `images/<template without its last -part>/<template>.qcow2`
//! (`debian-12-custom` → `images/debian-12/debian-12-custom.qcow2`).

pub mod release;

use std::path::{Path, PathBuf};

use homestak_pve::{Api, PveNode};
use homestak_ssh::{Command, Download, Session, Upload, quote};

/// Where the packer tree lives on a build host.
pub const REMOTE_DIR: &str = "/opt/homestak/packer";
/// Where fetched images go by default.
pub const FETCH_DIR: &str = "/tmp/packer-images";
/// What a sync leaves out (rsync's excludes in the Python tool).
pub const SYNC_EXCLUDES: [&str; 4] = [".git", "images", "logs", "cache"];

/// Why a packer phase failed; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PackerError {
    #[error(
        "local packer directory {path} not found: set HOMESTAK_PACKER_DIR, or put packer_dir in \
         the --context-file"
    )]
    NoLocalDir { path: PathBuf },

    #[error("cannot read {path} to sync it to the build host")]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{action} on {host} failed; {hint}")]
    Ssh {
        action: String,
        host: String,
        hint: &'static str,
        #[source]
        source: Box<homestak_ssh::Error>,
    },

    #[error(
        "`packer {step}` of template {template} on {host} exited {status}{}; fix the template \
         or the host (`homestak install packer`), then run the scenario again",
        tail.as_deref().map(|t| format!(": {t}")).unwrap_or_default()
    )]
    Packer {
        step: &'static str,
        template: String,
        host: String,
        status: String,
        tail: Option<String>,
    },

    #[error(
        "template {template} was built, but {path} is not on {host}: the template must write \
         images/<name without its last -part>/<template>.qcow2"
    )]
    NoOutput {
        template: String,
        path: String,
        host: String,
    },

    #[error(
        "no templates to build in {dir}/templates on {host}: sync the packer tree (packer-sync) \
         or pass --templates"
    )]
    NoTemplates { dir: String, host: String },

    #[error("template name {name:?} is not a plain file name (letters, digits, - _ .)")]
    BadTemplate { name: String },

    #[error("cannot create {path} for the fetched images; pick another directory")]
    LocalDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot list storage {storage} of node {node} through the PVE API")]
    Api {
        storage: String,
        node: PveNode,
        #[source]
        source: homestak_pve::Error,
    },

    #[error(
        "{volid} is not listed by the PVE API of node {node} after publishing; check that \
         storage {storage} has the `import` content type"
    )]
    NotListed {
        volid: String,
        node: PveNode,
        storage: String,
    },
}

/// An image built on the build host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub template: String,
    /// Its path on the build host.
    pub path: String,
}

/// The image a template writes, relative to the packer directory.
pub fn image_path(template: &str) -> String {
    let dir = template.rsplit_once('-').map_or(template, |(d, _)| d);
    format!("images/{dir}/{template}.qcow2")
}

fn check_name(name: &str) -> Result<(), PackerError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PackerError::BadTemplate {
            name: name.to_string(),
        })
    }
}

fn host(shell: &dyn Session) -> String {
    shell.destination().to_string()
}

async fn exec(
    shell: &dyn Session,
    command: &Command,
    action: impl FnOnce() -> String,
    hint: &'static str,
) -> Result<homestak_ssh::ExecOutput, PackerError> {
    shell
        .exec(command, &mut |_, _| {})
        .await
        .map_err(|source| PackerError::Ssh {
            action: action(),
            host: host(shell),
            hint,
            source: Box::new(source),
        })
}

/// The files of a local packer tree to sync, relative paths with their
/// modes, leaving out [`SYNC_EXCLUDES`] at the top.
pub fn local_files(dir: &Path) -> Result<Vec<(PathBuf, u32)>, PackerError> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.is_dir() {
        return Err(PackerError::NoLocalDir {
            path: dir.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let read = |source| PackerError::ReadLocal {
            path: here.clone(),
            source,
        };
        for entry in std::fs::read_dir(&here).map_err(read)? {
            let entry = entry.map_err(read)?;
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && SYNC_EXCLUDES.iter().any(|x| name.as_os_str() == *x) {
                continue;
            }
            let path = rel.join(&name);
            // Symbolic links are not followed: a tree may point anywhere.
            let meta = entry.file_type().map_err(read)?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let mode = entry.metadata().map_err(read)?.permissions().mode() & 0o777;
                out.push((path, mode));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `sync_packer`: makes `remote` hold the local packer tree `local`
/// (templates, scripts, …; not images, logs, cache or .git). What the tree
/// has at its top is replaced whole, so files deleted locally go away
/// there too, as with the Python tool's `rsync --delete`; built images
/// stay. Returns the number of files sent.
pub async fn sync_packer(
    shell: &dyn Session,
    local: &Path,
    remote: &str,
) -> Result<usize, PackerError> {
    let files = local_files(local)?;
    let user = shell.destination().user.to_string();
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|(p, _)| p.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    tops.dedup();
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|(p, _)| p.parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| format!("{remote}/{}", p.to_string_lossy()))
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut line = format!("mkdir -p {}", quote(remote));
    for top in &tops {
        line.push_str(&format!(" && rm -rf {}", quote(&format!("{remote}/{top}"))));
    }
    for dir in &dirs {
        line.push_str(&format!(" && mkdir -p {}", quote(dir)));
    }
    let prepare = Command::as_root(&user, &line);
    let hint = "check that the SSH user may write there (root, or password-less sudo)";
    exec(shell, &prepare, || format!("preparing {remote}"), hint)
        .await?
        .check(shell.destination(), &prepare)
        .map_err(|source| PackerError::Ssh {
            action: format!("preparing {remote}"),
            host: host(shell),
            hint,
            source: Box::new(source),
        })?;
    for (rel, mode) in &files {
        let target = format!("{remote}/{}", rel.to_string_lossy());
        shell
            .upload(&Upload::file(local.join(rel), target.clone(), *mode))
            .await
            .map_err(|source| PackerError::Ssh {
                action: format!("uploading {target}"),
                host: host(shell),
                hint: "check the disk space and permissions on the build host",
                source: Box::new(source),
            })?;
    }
    Ok(files.len())
}

/// The templates in `dir/templates` on the build host.
pub async fn list_templates(shell: &dyn Session, dir: &str) -> Result<Vec<String>, PackerError> {
    let listing = format!("{dir}/templates");
    let out = exec(
        shell,
        &Command::new("ls").arg("-1").arg(&listing),
        || format!("listing {listing}"),
        "check the SSH connection",
    )
    .await?;
    let names: Vec<String> = out
        .stdout_text()
        .lines()
        .filter_map(|l| l.trim().strip_suffix(".pkr.hcl"))
        .map(str::to_string)
        .collect();
    if !out.success() || names.is_empty() {
        return Err(PackerError::NoTemplates {
            dir: dir.to_string(),
            host: host(shell),
        });
    }
    Ok(names)
}

fn tail(out: &homestak_ssh::ExecOutput) -> Option<String> {
    let text = format!("{}\n{}", out.stdout_text(), out.stderr_text());
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    (!lines.is_empty()).then(|| lines[start..].join(" | "))
}

/// `build_images`: `packer init` then `packer build -force` of each
/// template in `dir` on the build host, and checks each image is there.
pub async fn build_images(
    shell: &dyn Session,
    dir: &str,
    templates: &[String],
) -> Result<Vec<Built>, PackerError> {
    let mut built = Vec::new();
    for template in templates {
        check_name(template)?;
        let file = format!("templates/{template}.pkr.hcl");
        for (step, args) in [("init", vec![]), ("build", vec!["-force"])] {
            let mut line = format!("cd {} && packer {step}", quote(dir));
            for a in args {
                line.push(' ');
                line.push_str(a);
            }
            line.push(' ');
            line.push_str(&quote(&file));
            let out = exec(
                shell,
                &Command::shell(line),
                || format!("packer {step} of {template}"),
                "check the SSH connection and run the scenario again",
            )
            .await?;
            if !out.success() {
                return Err(PackerError::Packer {
                    step,
                    template: template.clone(),
                    host: host(shell),
                    status: out.status.to_string(),
                    tail: tail(&out),
                });
            }
        }
        let path = format!("{dir}/{}", image_path(template));
        let out = exec(
            shell,
            &Command::new("test").arg("-s").arg(&path),
            || format!("checking {path}"),
            "check the SSH connection",
        )
        .await?;
        if !out.success() {
            return Err(PackerError::NoOutput {
                template: template.clone(),
                path,
                host: host(shell),
            });
        }
        built.push(Built {
            template: template.clone(),
            path,
        });
    }
    Ok(built)
}

/// `fetch_images`: copies each built image to `dest/<template>.qcow2`.
pub async fn fetch_images(
    shell: &dyn Session,
    built: &[Built],
    dest: &Path,
) -> Result<Vec<PathBuf>, PackerError> {
    std::fs::create_dir_all(dest).map_err(|source| PackerError::LocalDir {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut fetched = Vec::new();
    for b in built {
        let local = dest.join(format!("{}.qcow2", b.template));
        shell
            .download(&Download::new(b.path.clone(), local.clone()))
            .await
            .map_err(|source| PackerError::Ssh {
                action: format!("fetching {}", b.path),
                host: host(shell),
                hint: "build the image first (packer-build) and check the local disk space",
                source: Box::new(source),
            })?;
        fetched.push(local);
    }
    Ok(fetched)
}

/// The volume a published image becomes: `<storage>:import/<template>.qcow2`,
/// which manifests use as `image: <template>`.
pub fn published_volid(storage: &str, template: &str) -> String {
    format!("{storage}:import/{template}.qcow2")
}

/// `publish_images`: copies each built image into `storage`'s import
/// directory on the same host (under a temporary name, then renamed, so a
/// half-copied image is never used). Returns the volume ids.
pub async fn publish_images(
    shell: &dyn Session,
    built: &[Built],
    storage: &str,
) -> Result<Vec<String>, PackerError> {
    let user = shell.destination().user.to_string();
    let mut published = Vec::new();
    for b in built {
        let volid = published_volid(storage, &b.template);
        let out = exec(
            shell,
            &Command::as_root(&user, &format!("pvesm path {}", quote(&volid))),
            || format!("finding the file of {volid}"),
            "publishing needs a PVE host: build on one, or fetch the images instead",
        )
        .await?;
        let file = out.stdout_text().trim().to_string();
        if !out.success() || !file.starts_with('/') {
            return Err(PackerError::Packer {
                step: "publish",
                template: b.template.clone(),
                host: host(shell),
                status: out.status.to_string(),
                tail: tail(&out),
            });
        }
        let tmp = format!("{file}.tmp");
        let line = format!(
            "cat {src} > {tmp} && mv -f {tmp} {file}",
            src = quote(&b.path),
            tmp = quote(&tmp),
            file = quote(&file)
        );
        let out = exec(
            shell,
            &Command::as_root(&user, &line),
            || format!("copying {} to {file}", b.path),
            "check the SSH connection",
        )
        .await?;
        if !out.success() {
            return Err(PackerError::Packer {
                step: "publish",
                template: b.template.clone(),
                host: host(shell),
                status: out.status.to_string(),
                tail: tail(&out),
            });
        }
        published.push(volid);
    }
    Ok(published)
}

/// `verify_images`: the PVE API lists every published volume.
pub async fn verify_images(
    api: &dyn Api,
    node: &PveNode,
    storage: &str,
    volids: &[String],
) -> Result<(), PackerError> {
    let listed = api
        .storage_content(node, storage, Some("import"), None)
        .await
        .map_err(|source| PackerError::Api {
            storage: storage.to_string(),
            node: node.clone(),
            source,
        })?;
    for volid in volids {
        if !listed.iter().any(|c| &c.volid == volid) {
            return Err(PackerError::NotListed {
                volid: volid.clone(),
                node: node.clone(),
                storage: storage.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_follow_the_repository_layout() {
        assert_eq!(
            image_path("debian-12-custom"),
            "images/debian-12/debian-12-custom.qcow2"
        );
        assert_eq!(image_path("plain"), "images/plain/plain.qcow2");
        assert_eq!(
            published_volid("local", "debian-13-custom"),
            "local:import/debian-13-custom.qcow2"
        );
        assert!(check_name("debian-12-custom").is_ok());
        for bad in ["", "../x", "a b", ".hidden", "x;rm"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_local_tree_leaves_out_images_logs_cache_and_git() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "templates/a.pkr.hcl",
            "scripts/cleanup.sh",
            "images/a/a.qcow2",
            ".git/HEAD",
            "logs/x.log",
            "cache/base.img",
            "README.md",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let names: Vec<String> = local_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["README.md", "scripts/cleanup.sh", "templates/a.pkr.hcl"]
        );
        assert!(matches!(
            local_files(&dir.path().join("none")),
            Err(PackerError::NoLocalDir { .. })
        ));
    }
}
