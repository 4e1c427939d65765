//! Finding the site-config directory.
//!
//! Order, first match wins: `--site-config DIR`, `$HOMESTAK_SITE_CONFIG`,
//! `../site-config` and `./site-config` (from the working directory),
//! `/usr/local/etc/homestak/`, `/opt/homestak/site-config/`. An explicit
//! flag or variable that names a missing directory is an error rather than
//! a silent fall-through, so a typo never picks up some other site.

use std::path::{Path, PathBuf};

/// Environment variable naming the site-config directory.
pub const ENV_VAR: &str = "HOMESTAK_SITE_CONFIG";

/// No site-config directory was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "site-config directory {} (from {origin}) does not exist or is not a directory",
        path.display()
    )]
    Missing { path: PathBuf, origin: &'static str },
    #[error(
        "no site-config directory found; tried {}. Pass --site-config DIR or set {ENV_VAR}",
        tried_list(.tried)
    )]
    NotFound { tried: Vec<PathBuf> },
}

fn tried_list(tried: &[PathBuf]) -> String {
    tried
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the site-config directory, using the process environment and
/// working directory.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let env = std::env::var_os(ENV_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    find_in(explicit, env.as_deref(), &cwd)
}

/// [`find`] with its inputs passed in, so tests need not change the
/// process environment.
fn find_in(explicit: Option<&Path>, env: Option<&Path>, cwd: &Path) -> Result<PathBuf, Error> {
    if let Some(path) = explicit {
        return existing(path, "--site-config");
    }
    if let Some(path) = env {
        return existing(path, ENV_VAR);
    }
    let candidates = [
        cwd.join("../site-config"),
        cwd.join("site-config"),
        PathBuf::from("/usr/local/etc/homestak"),
        PathBuf::from("/opt/homestak/site-config"),
    ];
    for candidate in &candidates {
        if candidate.is_dir() {
            return Ok(clean(candidate));
        }
    }
    Err(Error::NotFound {
        tried: candidates.to_vec(),
    })
}

fn existing(path: &Path, origin: &'static str) -> Result<PathBuf, Error> {
    if path.is_dir() {
        Ok(clean(path))
    } else {
        Err(Error::Missing {
            path: path.to_path_buf(),
            origin,
        })
    }
}

/// Canonical form when possible, so messages and caches see one spelling.
fn clean(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_wins_over_env() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let found = find_in(Some(a.path()), Some(b.path()), b.path()).unwrap();
        assert_eq!(found, a.path().canonicalize().unwrap());
    }

    #[test]
    fn missing_explicit_is_an_error_not_a_fallthrough() {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir(cwd.path().join("site-config")).unwrap();
        let err = find_in(Some(Path::new("/nonexistent/sc")), None, cwd.path()).unwrap_err();
        assert!(err.to_string().contains("--site-config"), "{err}");
    }

    #[test]
    fn parent_directory_comes_before_working_directory() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        std::fs::create_dir_all(work.join("site-config")).unwrap();
        assert_eq!(
            find_in(None, None, &work).unwrap(),
            work.join("site-config").canonicalize().unwrap()
        );
        std::fs::create_dir(root.path().join("site-config")).unwrap();
        assert_eq!(
            find_in(None, None, &work).unwrap(),
            root.path().join("site-config").canonicalize().unwrap()
        );
    }

    #[test]
    fn not_found_lists_every_place_tried() {
        let cwd = tempfile::tempdir().unwrap();
        // Only meaningful when the system locations are absent, as on CI.
        if Path::new("/usr/local/etc/homestak").exists()
            || Path::new("/opt/homestak/site-config").exists()
        {
            return;
        }
        let text = find_in(None, None, cwd.path()).unwrap_err().to_string();
        for place in [
            "../site-config",
            "/site-config",
            "/usr/local/etc/homestak",
            "/opt/homestak/site-config",
        ] {
            assert!(text.contains(place), "{place} missing from: {text}");
        }
    }
}
