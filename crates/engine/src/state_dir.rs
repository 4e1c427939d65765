//! A tier's state directory: the store (`store/`), the VMs' known SSH host
//! keys, and the daemon's certificate, tokens and temporary repo clones.
//!
//! [`default()`] is the one place that decides where state lives, so every
//! command (`reconcile --once`, `status`, `serve`, parent tiers) agrees.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that overrides the default state directory.
pub const ENV: &str = "HOMESTAK_STATE_DIR";

/// Mode of the state directory and every directory made inside it.
pub const DIR_MODE: u32 = 0o700;

/// Mode of every file the daemon writes that holds a secret.
pub const SECRET_MODE: u32 = 0o600;

/// A state-directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory could not be created or its mode set.
    #[error("cannot prepare state directory {}; pass --state-dir DIR or set {ENV}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state directory lies inside a tree the daemon serves a
    /// snapshot of (the site-config): its tokens and keys would be served.
    #[error(
        "state directory {} is inside {}, which the daemon serves as a git snapshot: its tokens \
         and keys would be served too; pass --state-dir DIR outside it",
        state.display(),
        tree.display()
    )]
    InsideServedTree { state: PathBuf, tree: PathBuf },
    /// A file in it could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The default state directory:
/// 1. `$HOMESTAK_STATE_DIR` when set and not empty;
/// 2. `/var/lib/homestak` for root (a PVE host's daemon);
/// 3. `$XDG_STATE_HOME/homestak`, else `~/.local/state/homestak`.
pub fn default() -> PathBuf {
    from_env(
        std::env::var_os(ENV).map(PathBuf::from),
        is_root(),
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// [`default()`] as a pure function of its inputs.
fn from_env(
    explicit: Option<PathBuf>,
    root: bool,
    xdg_state: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if let Some(dir) = explicit.filter(|d| !d.as_os_str().is_empty()) {
        return dir;
    }
    if root {
        return PathBuf::from("/var/lib/homestak");
    }
    // XDG says relative values are invalid and must be ignored.
    if let Some(dir) = xdg_state.filter(|d| d.is_absolute()) {
        return dir.join("homestak");
    }
    home.unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/homestak")
}

fn is_root() -> bool {
    // Without libc: the owner of /proc/self is the effective user.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Prepares the state directory `path`: created 0700 (with its missing
/// parents) when it is not there. A directory that exists keeps its mode
/// unless it is homestak's own default (`/var/lib/homestak`, else the XDG
/// one): a directory the user chose (`--state-dir ~/work`, or
/// `$HOMESTAK_STATE_DIR`) is theirs, and homestak's secrets in it are 0600
/// files anyway. A warning says when others can read it.
pub fn ensure_dir(path: &Path) -> Result<(), Error> {
    let builtin = from_env(
        None,
        is_root(),
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    );
    ensure_dir_as(path, path == builtin)
}

/// [`ensure_dir`], told whether `path` is the default directory.
fn ensure_dir_as(path: &Path, is_default: bool) -> Result<(), Error> {
    let err = |source| Error::Create {
        path: path.to_path_buf(),
        source,
    };
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            if is_default {
                fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)).map_err(err)?;
            } else if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(), mode = format!("{mode:o}"),
                    "the state directory is open to other users; homestak leaves a directory \
                     it did not create as it is (its secrets are 0600 files): chmod 700 it to \
                     hide the store too"
                );
            }
            Ok(())
        }
        _ => create_private(path).map_err(err),
    }
}

/// Refuses a state directory inside `tree` (a directory whose snapshot is
/// served), comparing canonical paths. Either may be missing: a missing
/// path cannot hold the other.
pub fn check_outside(state: &Path, tree: &Path) -> Result<(), Error> {
    let (Ok(state_real), Ok(tree_real)) = (fs::canonicalize(state), fs::canonicalize(tree)) else {
        return Ok(());
    };
    if state_real.starts_with(&tree_real) {
        return Err(Error::InsideServedTree {
            state: state.to_path_buf(),
            tree: tree.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates `path` (and parents) if needed, readable by its owner only.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    // An existing directory keeps its mode through create(); tighten it.
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
}

/// Writes `contents` to `path` atomically with mode `mode`
/// ([`homestak_base::fsutil::write_atomic`]).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    homestak_base::fsutil::write_atomic(path, contents, mode).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_follows_env_then_root_then_xdg_then_home() {
        let p = PathBuf::from;
        assert_eq!(
            from_env(Some(p("/x")), true, Some(p("/s")), Some(p("/h"))),
            p("/x")
        );
        assert_eq!(
            from_env(Some(p("")), true, None, None),
            p("/var/lib/homestak")
        );
        assert_eq!(
            from_env(None, false, Some(p("/s")), Some(p("/h"))),
            p("/s/homestak")
        );
        assert_eq!(
            from_env(None, false, Some(p("rel")), Some(p("/h"))),
            p("/h/.local/state/homestak")
        );
        assert_eq!(
            from_env(None, false, None, Some(p("/h"))),
            p("/h/.local/state/homestak")
        );
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn only_a_directory_homestak_creates_or_its_default_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        // Chosen by the user and already there: left as it is.
        let chosen = tmp.path().join("chosen");
        fs::create_dir(&chosen).unwrap();
        fs::set_permissions(&chosen, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&chosen).unwrap();
        assert_eq!(mode(&chosen), 0o755);
        // Created by homestak: private.
        let made = tmp.path().join("new/state");
        ensure_dir(&made).unwrap();
        assert_eq!(mode(&made), 0o700);
        // The default directory is homestak's, even when it exists.
        let default = tmp.path().join("default");
        fs::create_dir(&default).unwrap();
        fs::set_permissions(&default, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir_as(&default, true).unwrap();
        assert_eq!(mode(&default), 0o700);
    }

    #[test]
    fn a_state_directory_inside_a_served_tree_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site-config");
        fs::create_dir_all(site.join("state")).unwrap();
        fs::create_dir_all(tmp.path().join("state")).unwrap();
        let err = check_outside(&site.join("state"), &site).unwrap_err();
        assert!(matches!(err, Error::InsideServedTree { .. }));
        assert!(err.to_string().contains("--state-dir"), "{err}");
        // Spelled another way, still inside.
        assert!(check_outside(&site.join("../site-config/state"), &site).is_err());
        assert!(check_outside(&site, &site).is_err());
        check_outside(&tmp.path().join("state"), &site).unwrap();
        // A sibling whose name starts the same is outside.
        fs::create_dir_all(tmp.path().join("site-config-state")).unwrap();
        check_outside(&tmp.path().join("site-config-state"), &site).unwrap();
    }

    #[test]
    fn write_atomic_sets_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        ensure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("secret");
        write_atomic(&file, b"one", SECRET_MODE).unwrap();
        write_atomic(&file, b"two", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }
}
