//! Manifests of a site-config: `<site-config>/manifests/NAME.yaml`.

use std::path::{Path, PathBuf};

use super::error::Error;
use super::manifest::Manifest;

/// The manifest loaded when none is named (as in the reference).
pub const DEFAULT_MANIFEST: &str = "n2-quick";

/// Looks manifests up by name in a site-config's `manifests/` directory.
#[derive(Debug, Clone)]
pub struct Loader {
    dir: PathBuf,
}

impl Loader {
    /// The loader of the site-config at `site_config`.
    pub fn new(site_config: &Path) -> Loader {
        Loader {
            dir: site_config.join("manifests"),
        }
    }

    /// The `manifests/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of manifest `name`. Names are plain file stems: anything that
    /// could leave `manifests/` is refused.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, Error> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0'])
            && !name.chars().any(char::is_control);
        if !plain {
            return Err(Error::BadName {
                name: name.to_string(),
            });
        }
        Ok(self.dir.join(format!("{name}.yaml")))
    }

    /// Names of the manifests (file stems of `*.yaml`), sorted. A site-config
    /// without `manifests/` has none.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::List {
                    dir: self.dir.clone(),
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::List {
                dir: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml")
                && path.is_file()
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                names.push(stem.to_string());
            }
        }
        // By name, not file name: "n1-basic" sorts before "n1-basic-v2".
        names.sort();
        Ok(names)
    }

    /// Loads manifest `name`; when it does not exist, the error lists the
    /// ones that do.
    pub fn load(&self, name: &str) -> Result<Manifest, Error> {
        let path = self.path_of(name)?;
        if !path.is_file() {
            return Err(Error::NotFound {
                name: name.to_string(),
                path,
                available: self.list().unwrap_or_default(),
            });
        }
        Manifest::from_file(&path)
    }

    /// Loads [`DEFAULT_MANIFEST`].
    pub fn load_default(&self) -> Result<Manifest, Error> {
        self.load(DEFAULT_MANIFEST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("manifests").join(name), text).unwrap();
        }
        dir
    }

    const TINY: &str = "schema_version: 2\nname: tiny\nnodes:\n  - name: a\n    type: vm\n";

    #[test]
    fn lists_yaml_stems_sorted() {
        let site = site_with(&[
            ("n1-basic-v2.yaml", TINY),
            ("n1-basic.yaml", TINY),
            ("notes.txt", "x"),
            ("other.yml", TINY),
        ]);
        let names = Loader::new(site.path()).list().unwrap();
        assert_eq!(names, ["n1-basic", "n1-basic-v2"]);
    }

    #[test]
    fn missing_directory_lists_nothing() {
        let site = tempfile::tempdir().unwrap();
        assert!(Loader::new(site.path()).list().unwrap().is_empty());
    }

    #[test]
    fn not_found_names_the_path_and_the_alternatives() {
        let site = site_with(&[("b.yaml", TINY), ("a.yaml", TINY)]);
        let err = Loader::new(site.path()).load_default().unwrap_err();
        let expected = format!(
            "Manifest 'n2-quick' not found at {}. Available: a, b",
            site.path().join("manifests/n2-quick.yaml").display()
        );
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let site = site_with(&[]);
        let loader = Loader::new(site.path());
        for bad in ["../secrets", "a/b", ".hidden", "", "x\0y"] {
            assert!(
                matches!(loader.load(bad), Err(Error::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    /// An empty file, one of only comments and a bare `~` are all "not a
    /// YAML object", in the reference's words and with the path as given.
    #[test]
    fn empty_files_are_not_a_mapping() {
        let site = site_with(&[
            ("empty.yaml", ""),
            ("comments.yaml", "# nothing yet\n"),
            ("tilde.yaml", "~\n"),
        ]);
        let loader = Loader::new(site.path());
        for name in ["empty", "comments", "tilde"] {
            let err = loader.load(name).unwrap_err();
            assert!(matches!(err, Error::Empty { .. }), "{name}: {err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "Manifest {} must be a YAML object (dict)",
                    site.path().join(format!("manifests/{name}.yaml")).display()
                )
            );
        }
    }

    #[test]
    fn loads_by_name() {
        let site = site_with(&[("tiny.yaml", TINY)]);
        let manifest = Loader::new(site.path()).load("tiny").unwrap();
        assert_eq!(manifest.name(), "tiny");
    }
}
