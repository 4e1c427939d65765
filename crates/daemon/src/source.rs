//! Where desired state comes from: `controller.yaml` and the manifests it
//! names, read either at the site-config repository's `HEAD` (default:
//! only committed changes converge) or from the working tree
//! (`--working-tree`).
//!
//! The rest of the site-config (nodes, specs, presets, `secrets.yaml`,
//! which is normally not committed) is read from the directory as it is,
//! by [`homestak_core::site::Site`], reloaded on each new revision and on SIGHUP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::git;
use super::policy::{self, ControllerFile};
use homestak_core::model::{Loader, Manifest};

/// Which state of the site-config is desired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The committed `HEAD` of the site-config's git repository.
    GitHead,
    /// The files as they are on disk.
    WorkingTree,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::GitHead => "git-head",
            Mode::WorkingTree => "working-tree",
        }
    }
}

/// Reading desired state failed as a whole (a single bad manifest is
/// reported per manifest instead, in [`Snapshot::manifests`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The site-config is not in a git repository.
    #[error(
        "site-config {} is not in a git repository; commit it to git, or pass --working-tree",
        dir.display()
    )]
    NotARepo {
        dir: PathBuf,
        #[source]
        source: git::Error,
    },
    /// The repository has no commit yet.
    #[error("site-config {} has no commit yet; commit it, or pass --working-tree", dir.display())]
    NoCommit { dir: PathBuf },
    /// git failed.
    #[error("cannot read the site-config at HEAD")]
    Git {
        #[source]
        source: git::Error,
    },
    /// `controller.yaml` is invalid.
    #[error("{} is invalid; fix it and commit", path.display())]
    Controller {
        path: PathBuf,
        #[source]
        source: homestak_base::yaml::Error,
    },
    /// `controller.yaml` could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Desired state at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// A commit id, or `worktree:<digest>` of the files read.
    pub revision: String,
    pub controller: ControllerFile,
    /// Every manifest named in `names`, parsed; an error message per
    /// manifest that is missing or invalid.
    pub manifests: BTreeMap<String, Result<Arc<Manifest>, String>>,
}

/// Reads desired state from a site-config directory.
#[derive(Debug, Clone)]
pub struct Source {
    root: PathBuf,
    mode: Mode,
}

impl Source {
    pub fn new(root: &Path, mode: Mode) -> Source {
        Source {
            root: root.to_path_buf(),
            mode,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads `controller.yaml` and the manifests it lists plus `extra`.
    pub async fn read(&self, extra: &[String]) -> Result<Snapshot, Error> {
        match self.mode {
            Mode::GitHead => self.read_head(extra).await,
            Mode::WorkingTree => self.read_worktree(extra),
        }
    }

    /// `(HEAD commit, the site-config's path inside its repository)`: the
    /// site-config may be a sub-directory of its repository.
    async fn head(&self) -> Result<(String, String), Error> {
        let prefix = git::Git::new(&self.root, ["rev-parse", "--show-prefix"])
            .text()
            .await
            .map_err(|source| Error::NotARepo {
                dir: self.root.clone(),
                source,
            })?;
        let revision = git::resolve(&self.root, "HEAD")
            .await
            .map_err(|source| Error::Git { source })?
            .ok_or_else(|| Error::NoCommit {
                dir: self.root.clone(),
            })?;
        Ok((revision, prefix))
    }

    async fn read_head(&self, extra: &[String]) -> Result<Snapshot, Error> {
        let (revision, prefix) = self.head().await?;
        let at = |rel: &str| format!("{prefix}{rel}");
        let controller_path = self.root.join(policy::FILE);
        let controller = match git::file_at(&self.root, &revision, &at(policy::FILE))
            .await
            .map_err(|source| Error::Git { source })?
        {
            Some(bytes) => {
                ControllerFile::parse(&String::from_utf8_lossy(&bytes), &controller_path).map_err(
                    |source| Error::Controller {
                        path: controller_path,
                        source,
                    },
                )?
            }
            None => ControllerFile::default(),
        };
        let loader = Loader::new(&self.root);
        let mut manifests = BTreeMap::new();
        for name in names(&controller, extra) {
            let parsed = match loader.path_of(&name) {
                Err(e) => Err(e.to_string()),
                Ok(path) => {
                    let rel = format!("manifests/{name}.yaml");
                    match git::file_at(&self.root, &revision, &at(&rel)).await {
                        Err(e) => Err(e.to_string()),
                        Ok(None) => Err(format!(
                            "manifest '{name}' is not committed at {}: no {rel}",
                            short(&revision)
                        )),
                        Ok(Some(bytes)) => {
                            Manifest::from_yaml_str(&String::from_utf8_lossy(&bytes), &path)
                                .map(Arc::new)
                                .map_err(|e| e.located().to_string())
                        }
                    }
                }
            };
            manifests.insert(name, parsed);
        }
        Ok(Snapshot {
            revision,
            controller,
            manifests,
        })
    }

    fn read_worktree(&self, extra: &[String]) -> Result<Snapshot, Error> {
        let controller_path = self.root.join(policy::FILE);
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let controller = match std::fs::read_to_string(&controller_path) {
            Ok(text) => {
                digest.update(text.as_bytes());
                ControllerFile::parse(&text, &controller_path).map_err(|source| {
                    Error::Controller {
                        path: controller_path.clone(),
                        source,
                    }
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ControllerFile::default(),
            Err(source) => {
                return Err(Error::Read {
                    path: controller_path,
                    source,
                });
            }
        };
        let loader = Loader::new(&self.root);
        let mut manifests = BTreeMap::new();
        for name in names(&controller, extra) {
            digest.update(name.as_bytes());
            if let Ok(path) = loader.path_of(&name)
                && let Ok(bytes) = std::fs::read(&path)
            {
                digest.update(&bytes);
            }
            let parsed = loader
                .load(&name)
                .map(Arc::new)
                .map_err(|e| e.located().to_string());
            manifests.insert(name, parsed);
        }
        // A SHA-256 context always finishes with 32 bytes.
        let digest: [u8; 32] = digest.finish().as_ref().try_into().unwrap_or_default();
        Ok(Snapshot {
            revision: format!("worktree:{}", homestak_base::digest::short_hex(&digest)),
            controller,
            manifests,
        })
    }
}

fn names(controller: &ControllerFile, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = controller.manifests.keys().cloned().collect();
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The first 12 characters of a revision, for messages.
pub fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}
