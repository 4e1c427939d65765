//! Running the `git` CLI (tokio::process), for the served repos and for
//! reading manifests at the site-config's `HEAD`.
//!
//! Every call starts from a clean git environment (no inherited `GIT_DIR`,
//! index or object directory), never prompts, and is killed if its future is
//! dropped. git's own safety checks stay on: a repository owned by another
//! user is refused ("dubious ownership") rather than trusted, because
//! `git add` would run that repository's configured hooks and filters.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Variables that would redirect git away from the directory we name.
const SCRUBBED: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
];

/// Longest stderr excerpt kept in an error.
const STDERR_LIMIT: usize = 2000;

/// A git command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// git could not be started (not installed?).
    #[error("cannot run `git {command}` in {}; is git installed?", dir.display())]
    Spawn {
        command: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// git ran and failed.
    #[error("`git {command}` failed in {} ({status}): {stderr}", dir.display())]
    Failed {
        command: String,
        dir: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// One git invocation.
pub struct Git {
    cmd: tokio::process::Command,
    dir: PathBuf,
    command: String,
    stdin: Option<Vec<u8>>,
}

impl Git {
    /// `git <args>` run in `dir`.
    pub fn new<I, S>(dir: &Path, args: I) -> Git
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = tokio::process::Command::new("git");
        let mut command = Vec::new();
        for arg in args {
            command.push(arg.as_ref().to_string_lossy().into_owned());
            cmd.arg(arg.as_ref());
        }
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd.current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "homestak")
            .env("GIT_AUTHOR_EMAIL", "homestak@localhost")
            .env("GIT_COMMITTER_NAME", "homestak")
            .env("GIT_COMMITTER_EMAIL", "homestak@localhost")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Git {
            cmd,
            dir: dir.to_path_buf(),
            command: command.join(" "),
            stdin: None,
        }
    }

    /// Sets an environment variable for this call.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Git {
        self.cmd.env(key, value);
        self
    }

    /// Feeds `input` on stdin.
    pub fn stdin(mut self, input: Vec<u8>) -> Git {
        self.stdin = Some(input);
        self
    }

    /// Runs to completion; stdout on success.
    pub async fn output(mut self) -> Result<Vec<u8>, Error> {
        use tokio::io::AsyncWriteExt;
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let spawn_err = |source| Error::Spawn {
            command: self.command.clone(),
            dir: self.dir.clone(),
            source,
        };
        let mut child = self.cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            // A write error means git exited early; its status says why.
            let _ = pipe.write_all(&input).await;
            drop(pipe);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| Error::Spawn {
                command: self.command.clone(),
                dir: self.dir.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.len() > STDERR_LIMIT {
                let mut cut = STDERR_LIMIT;
                while !stderr.is_char_boundary(cut) {
                    cut -= 1;
                }
                stderr.truncate(cut);
                stderr.push('…');
            }
            Err(Error::Failed {
                command: self.command,
                dir: self.dir,
                status: out.status,
                stderr,
            })
        }
    }

    /// Runs and returns stdout as trimmed text.
    pub async fn text(self) -> Result<String, Error> {
        let out = self.output().await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }
}

/// The commit id `rev` names in the repository at `dir`, or `None` when it
/// does not resolve (e.g. `HEAD` of a repository with no commits).
pub async fn resolve(dir: &Path, rev: &str) -> Result<Option<String>, Error> {
    let spec = format!("{rev}^{{commit}}");
    match Git::new(dir, ["rev-parse", "--verify", "--quiet", &spec])
        .text()
        .await
    {
        Ok(id) => Ok(Some(id)),
        Err(Error::Failed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One entry of `git ls-tree`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: String,
    pub kind: String,
    pub oid: String,
    pub path: String,
}

impl TreeEntry {
    /// A regular file (not a symlink, submodule or tree).
    pub fn is_regular_file(&self) -> bool {
        self.kind == "blob" && (self.mode == "100644" || self.mode == "100755")
    }
}

/// The entry at `path` (literal, from the root) in `rev`'s tree, if any.
pub async fn tree_entry(dir: &Path, rev: &str, path: &str) -> Result<Option<TreeEntry>, Error> {
    let out = match Git::new(
        dir,
        [
            "--literal-pathspecs",
            "ls-tree",
            "-z",
            "--full-tree",
            rev,
            "--",
            path,
        ],
    )
    .output()
    .await
    {
        Ok(out) => out,
        // An unknown revision (no such branch yet) is "no entry".
        Err(Error::Failed { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(parse_ls_tree(&out).into_iter().find(|e| e.path == path))
}

/// Parses `git ls-tree -z` output.
pub fn parse_ls_tree(out: &[u8]) -> Vec<TreeEntry> {
    out.split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|record| {
            let text = std::str::from_utf8(record).ok()?;
            let (meta, path) = text.split_once('\t')?;
            let mut parts = meta.split(' ');
            Some(TreeEntry {
                mode: parts.next()?.to_string(),
                kind: parts.next()?.to_string(),
                oid: parts.next()?.to_string(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The contents of blob `oid`.
pub async fn blob(dir: &Path, oid: &str) -> Result<Vec<u8>, Error> {
    Git::new(dir, ["cat-file", "blob", oid]).output().await
}

/// The contents of regular file `path` in `rev`, or `None` when absent or
/// not a regular file.
pub async fn file_at(dir: &Path, rev: &str, path: &str) -> Result<Option<Vec<u8>>, Error> {
    match tree_entry(dir, rev, path).await? {
        Some(entry) if entry.is_regular_file() => Ok(Some(blob(dir, &entry.oid).await?)),
        _ => Ok(None),
    }
}

/// Names of the regular files directly in directory `dir_path` of `rev`.
pub async fn list_dir(dir: &Path, rev: &str, dir_path: &str) -> Result<Vec<String>, Error> {
    let tree = format!("{rev}:{dir_path}");
    let out = match Git::new(dir, ["ls-tree", "-z", &tree]).output().await {
        Ok(out) => out,
        Err(Error::Failed { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_ls_tree(&out)
        .into_iter()
        .filter(TreeEntry::is_regular_file)
        .map(|e| e.path)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_tree_records_parse() {
        let out =
            b"100644 blob abc\tmanifests/a.yaml\x00120000 blob def\tlink\x00040000 tree 123\tdir\x00";
        let entries = parse_ls_tree(out);
        assert_eq!(entries.len(), 3);
        assert!(entries[0].is_regular_file());
        assert_eq!(entries[0].path, "manifests/a.yaml");
        assert!(!entries[1].is_regular_file(), "symlinks are not served");
        assert!(!entries[2].is_regular_file());
    }

    #[tokio::test]
    async fn reads_files_at_a_revision() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Git::new(d, ["init", "-q", "-b", "main"])
            .output()
            .await
            .unwrap();
        assert_eq!(resolve(d, "HEAD").await.unwrap(), None);
        std::fs::create_dir(d.join("m")).unwrap();
        std::fs::write(d.join("m/a.yaml"), "a: 1\n").unwrap();
        Git::new(d, ["add", "."]).output().await.unwrap();
        Git::new(d, ["commit", "-q", "-m", "one"])
            .output()
            .await
            .unwrap();
        std::fs::write(d.join("m/a.yaml"), "a: 2\n").unwrap();
        let head = resolve(d, "HEAD").await.unwrap().unwrap();
        assert_eq!(head.len(), 40);
        assert_eq!(
            file_at(d, "HEAD", "m/a.yaml").await.unwrap().unwrap(),
            b"a: 1\n",
            "the committed content, not the working tree"
        );
        assert_eq!(file_at(d, "HEAD", "m/b.yaml").await.unwrap(), None);
        assert_eq!(file_at(d, "HEAD", "m").await.unwrap(), None);
        assert_eq!(list_dir(d, "HEAD", "m").await.unwrap(), ["a.yaml"]);
        assert!(list_dir(d, "HEAD", "none").await.unwrap().is_empty());
    }
}
