//! A simulated VM's root filesystem: a host directory that guest paths are
//! confined to.
//!
//! Guest paths (`/etc/hosts`, `bin/x` relative to a working directory) are
//! normalized lexically and mapped below the VM's directory. Two things are
//! refused rather than followed:
//!
//! - `..` that would climb above the guest's `/` (a real kernel would stay
//!   at `/`; refusing makes an escape attempt visible instead of silently
//!   rewriting the path);
//! - any symbolic link on the way, existing or final: the simulated VM never
//!   creates one, so a symlink can only be a way out of the directory.
//!
//! The check runs before each operation; nothing else writes into a VM's
//! directory, so there is no race to exploit between check and use.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The root directory of one simulated VM. Cheap to clone.
#[derive(Clone)]
pub struct VmRoot {
    dir: Arc<PathBuf>,
}

impl fmt::Debug for VmRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VmRoot").field(&self.dir).finish()
    }
}

/// A guest path and where it lives on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPath {
    /// Normalized absolute guest path, e.g. `/usr/local/bin/homestak`.
    pub guest: String,
    /// The host path below the VM directory.
    pub host: PathBuf,
}

/// Why a guest path was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("Permission denied (path leaves the VM root)")]
    Escape,
    #[error("Permission denied (symbolic links are not followed in the simulated VM)")]
    Symlink,
    #[error("No such file or directory")]
    Empty,
}

impl VmRoot {
    /// Creates the directory if needed and uses its canonical path.
    pub fn create(dir: &Path) -> Result<Self, super::Error> {
        let prepare = || -> io::Result<PathBuf> {
            std::fs::create_dir_all(dir)?;
            dir.canonicalize()
        };
        let dir = prepare().map_err(|source| super::Error::VmRoot {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(VmRoot { dir: Arc::new(dir) })
    }

    /// The VM's directory on the host.
    pub fn host_dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves `path` (absolute, or relative to the guest directory `cwd`).
    pub fn resolve(&self, cwd: &str, path: &str) -> Result<VmPath, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        let mut parts: Vec<&str> = Vec::new();
        let relative_base = if path.starts_with('/') { "" } else { cwd };
        for part in relative_base.split('/').chain(path.split('/')) {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escape);
                    }
                }
                other => parts.push(other),
            }
        }
        let mut host = self.dir.as_ref().clone();
        let mut exists = true;
        for part in &parts {
            host.push(part);
            if exists {
                match std::fs::symlink_metadata(&host) {
                    Ok(meta) if meta.file_type().is_symlink() => return Err(PathError::Symlink),
                    Ok(_) => {}
                    // The rest does not exist (yet): nothing more to follow.
                    Err(_) => exists = false,
                }
            }
        }
        Ok(VmPath {
            guest: format!("/{}", parts.join("/")),
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_below_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(&dir.path().join("vm")).unwrap();
        let p = root.resolve("/root", "bin/../x/./y").unwrap();
        assert_eq!(p.guest, "/root/x/y");
        assert_eq!(p.host, root.host_dir().join("root/x/y"));
        assert_eq!(root.resolve("/root", "/").unwrap().guest, "/");
        assert_eq!(root.resolve("/root", "..").unwrap().guest, "/");
        assert_eq!(
            root.resolve("/", "/etc//hosts").unwrap().guest,
            "/etc/hosts"
        );
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(dir.path()).unwrap();
        for path in ["../x", "/..", "/etc/../../x", "../../../../etc/passwd"] {
            assert_eq!(root.resolve("/", path), Err(PathError::Escape), "{path}");
        }
        assert_eq!(root.resolve("/root", "../../x"), Err(PathError::Escape));
        assert_eq!(root.resolve("/", ""), Err(PathError::Empty));
    }

    #[test]
    fn symlinks_are_refused_wherever_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(&dir.path().join("vm")).unwrap();
        std::fs::create_dir_all(root.host_dir().join("etc")).unwrap();
        std::os::unix::fs::symlink("/", root.host_dir().join("etc/escape")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.host_dir().join("passwd")).unwrap();
        assert_eq!(
            root.resolve("/", "/etc/escape/etc/passwd"),
            Err(PathError::Symlink)
        );
        assert_eq!(root.resolve("/", "passwd"), Err(PathError::Symlink));
        // A path that merely does not exist yet is fine.
        assert!(root.resolve("/", "/etc/new/file").is_ok());
    }
}
