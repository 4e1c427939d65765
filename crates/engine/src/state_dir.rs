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

/// Creates `path` (and parents) if needed and sets it to 0700.
pub fn ensure_dir(path: &Path) -> Result<(), Error> {
    create_private(path).map_err(|source| Error::Create {
        path: path.to_path_buf(),
        source,
    })
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

    #[test]
    fn ensure_dir_tightens_mode_and_write_atomic_sets_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

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
