//! Git repositories served over dumb HTTP (`GET /{name}.git/...`).
//!
//! At startup each served repository is cloned bare into a temporary
//! directory under the state directory, and a `_working` branch records the
//! source's uncommitted changes (tracked edits and untracked files that are
//! not ignored), so a VM bootstrapping from this tier sees exactly what the
//! operator sees. The snapshot never touches the operator's worktree, index
//! or object store: git runs with a temporary index and writes objects into
//! the bare clone. `git update-server-info` then makes the clone fetchable
//! by any git client over plain HTTP. [`RepoSet::refresh`] repeats this on
//! a new commit or SIGHUP; [`RepoSet::remove`] deletes the clones on
//! shutdown.
//!
//! Paths under `/{name}.git/`:
//! - `HEAD`, `info/refs`, `objects/...` are the git protocol files, read
//!   from the bare clone;
//! - anything else is *raw file extraction*: the file of that path in the
//!   `_working` branch (regular files only; symlinks and submodules are
//!   never followed).
//!
//! Confinement: repository names come from a fixed table (never from the
//! filesystem), path segments `.`/`..`/empty/backslash/NUL are refused, the
//! path is not percent-decoded, and a bare-clone file is served only when
//! no component of its path is a symlink.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::git::{self, Git};
use super::reply::{self, ApiError, Reply};

/// The branch holding the snapshot of uncommitted changes.
pub const WORKING_BRANCH: &str = "_working";

/// The file in a directory of temporary clones (`<state>/repos.<pid>`)
/// that says homestak made it, so only such directories are ever deleted.
pub const MARKER: &str = ".homestak-repos";

/// Prefix of the directories of temporary clones in the state directory.
const ROOT_PREFIX: &str = "repos.";

/// Where this process keeps its clones: `<state>/repos.<pid>`.
pub fn root_in(state: &Path) -> PathBuf {
    state.join(format!("{ROOT_PREFIX}{}", std::process::id()))
}

/// Whether `dir` is a directory (not a symlink) homestak made for clones.
fn is_ours(dir: &Path) -> bool {
    let real_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    real_dir && std::fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file())
}

/// Deletes the clone directories a process that died left in `state`:
/// `repos.*` directories holding [`MARKER`]. Nothing else is touched, so a
/// user's `repos.backup` in a state directory they chose stays. Only call
/// it holding the store's lease (no live process uses them then).
pub fn remove_stale(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(ROOT_PREFIX)
            && is_ours(&path)
            && let Err(err) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove stale clones");
        }
    }
}

/// Makes `root` (0700) with [`MARKER`] in it. One left by an earlier
/// process of the same pid is replaced; anything else there is refused.
fn create_root(root: &Path) -> Result<(), Box<Error>> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| {
        Box::new(Error::Io {
            path: root.to_path_buf(),
            source,
        })
    };
    let make = || {
        std::fs::DirBuilder::new()
            .mode(homestak_engine::state_dir::DIR_MODE)
            .create(root)
    };
    match make() {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            if !is_ours(root) {
                return Err(Box::new(Error::NotOurs {
                    path: root.to_path_buf(),
                }));
            }
            std::fs::remove_dir_all(root).map_err(io)?;
            make().map_err(io)?;
        }
        Err(err) => return Err(io(err)),
    }
    std::fs::write(
        root.join(MARKER),
        "Temporary clones of a homestak daemon; deleted when it stops.\n",
    )
    .map_err(io)
}

/// A repository could not be prepared or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--repo` was not `NAME=PATH` with a plain name.
    #[error("invalid --repo {spec:?}: expected NAME=PATH, NAME of letters, digits, '.', '-', '_'")]
    BadSpec { spec: String },
    /// Two repositories share a name.
    #[error("repository name {name:?} is given twice")]
    Duplicate { name: String },
    /// The source is not a git repository.
    #[error("cannot serve {} as {name}.git: not a git repository", path.display())]
    NotARepo {
        name: String,
        path: PathBuf,
        #[source]
        source: git::Error,
    },
    /// A git step failed.
    #[error("cannot prepare {name}.git")]
    Git {
        name: String,
        #[source]
        source: git::Error,
    },
    /// The directory for the clones exists and homestak did not make it.
    #[error(
        "{} exists and is not a directory of homestak's clones (no {MARKER} in it); homestak \
         leaves it alone: move it away",
        path.display()
    )]
    NotOurs { path: PathBuf },
    /// The state directory lies inside a served repository.
    #[error("cannot serve {name}.git")]
    StateInside {
        name: String,
        #[source]
        source: homestak_engine::state_dir::Error,
    },
    /// A directory could not be created or removed.
    #[error("cannot prepare the repository directory {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A repository to serve: `name` (served as `name.git`) from `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    pub name: String,
    pub source: PathBuf,
}

impl std::str::FromStr for RepoSpec {
    type Err = Error;

    /// `NAME=PATH`; a trailing `.git` on NAME is dropped.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadSpec {
            spec: s.to_string(),
        };
        let (name, path) = s.split_once('=').ok_or_else(bad)?;
        let name = name.strip_suffix(".git").unwrap_or(name);
        if !valid_name(name) || path.is_empty() {
            return Err(bad());
        }
        Ok(RepoSpec {
            name: name.to_string(),
            source: PathBuf::from(path),
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// One served repository.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Without `.git`.
    pub name: String,
    /// The operator's repository; `None` for a directory served as is.
    pub source: Option<PathBuf>,
    /// The bare clone served.
    pub dir: PathBuf,
}

/// The served repositories, by name.
#[derive(Debug, Default)]
pub struct RepoSet {
    repos: BTreeMap<String, Repo>,
    /// The temporary directory holding the clones, removed on shutdown.
    root: std::sync::Mutex<Option<PathBuf>>,
}

impl RepoSet {
    /// Serves existing directories as they are (`name` → bare directory),
    /// without cloning: for tests and the goldens.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_dirs(dirs: impl IntoIterator<Item = (String, PathBuf)>) -> RepoSet {
        RepoSet {
            repos: dirs
                .into_iter()
                .map(|(name, dir)| {
                    let name = name.strip_suffix(".git").unwrap_or(&name).to_string();
                    (
                        name.clone(),
                        Repo {
                            name,
                            source: None,
                            dir,
                        },
                    )
                })
                .collect(),
            root: std::sync::Mutex::new(None),
        }
    }

    /// Clones every spec into `<root>/<name>.git` and snapshots its
    /// working tree. `root` is created 0700 and marked as homestak's
    /// ([`MARKER`]); a directory there that is not is refused.
    pub async fn prepare(root: &Path, specs: &[RepoSpec]) -> Result<RepoSet, Error> {
        let mut repos = BTreeMap::new();
        for spec in specs {
            if repos.contains_key(&spec.name) {
                return Err(Error::Duplicate {
                    name: spec.name.clone(),
                });
            }
            repos.insert(spec.name.clone(), ());
        }
        create_root(root).map_err(|e| *e)?;
        let mut set = RepoSet {
            repos: BTreeMap::new(),
            root: std::sync::Mutex::new(Some(root.to_path_buf())),
        };
        for spec in specs {
            let repo = match clone(root, spec).await {
                Ok(repo) => repo,
                Err(e) => {
                    set.remove().await;
                    return Err(e);
                }
            };
            set.repos.insert(spec.name.clone(), repo);
        }
        Ok(set)
    }

    /// Fetches each source again and re-takes its snapshot.
    pub async fn refresh(&self) -> Result<(), Error> {
        for repo in self.repos.values() {
            let Some(source) = &repo.source else { continue };
            let err = |source| Error::Git {
                name: repo.name.clone(),
                source,
            };
            Git::new(
                &repo.dir,
                [
                    OsString::from("fetch"),
                    "--quiet".into(),
                    "--prune".into(),
                    "--no-tags".into(),
                    "--".into(),
                    source.into(),
                    "+refs/heads/*:refs/heads/*".into(),
                    "+refs/tags/*:refs/tags/*".into(),
                ],
            )
            .output()
            .await
            .map_err(err)?;
            snapshot(source, &repo.dir).await.map_err(err)?;
        }
        Ok(())
    }

    /// Deletes the clones (shutdown). Idempotent; a directory without
    /// [`MARKER`] is never deleted.
    pub async fn remove(&self) {
        let root = self.root.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(root) = root
            && is_ours(&root)
            && let Err(err) = tokio::fs::remove_dir_all(&root).await
        {
            tracing::warn!(path = %root.display(), error = %err, "cannot remove temporary repos");
        }
    }

    /// The repository served as `name` (without `.git`).
    pub fn get(&self, name: &str) -> Option<&Repo> {
        self.repos.get(name)
    }

    /// Served names, without `.git`.
    pub fn names(&self) -> Vec<String> {
        self.repos.keys().cloned().collect()
    }

    /// Answers a repo request for `path` (leading `/`, query removed), as
    /// the reference's handler does:
    /// - not `/{name}.git/{file}` (its `^/([^/]+\.git)/(.*)$`): 400 `E100`
    ///   "Invalid path: {path}" (`/`, `/x`, `/x.git`, `/a/b.git/c`,
    ///   `/.git/c`);
    /// - an unknown repo: 404 `E200` "Repository not found: {name}.git";
    /// - a file that is not there: 404 `E200` "File not found: {file}".
    ///   A file path that could leave the repo (`..`, `.`, empty segments,
    ///   backslashes, control characters) is answered the same way without
    ///   touching the disk: the reference answered 404 there too, since
    ///   git refuses such a path.
    pub async fn serve(&self, path: &str) -> Reply {
        match self.serve_inner(path).await {
            Ok(reply) => reply,
            Err(err) => err.reply(),
        }
    }

    async fn serve_inner(&self, path: &str) -> Result<Reply, ApiError> {
        let (repo_part, name, file) = parse_repo_path(path)
            .ok_or_else(|| ApiError::bad_path(format!("Invalid path: {path}")))?;
        let repo = self
            .repos
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("Repository not found: {repo_part}")))?;
        let not_found = || ApiError::not_found(format!("File not found: {file}"));
        if !file.split('/').all(safe_segment) {
            return Err(not_found());
        }
        if is_protocol_path(file) {
            let bytes = read_confined(&repo.dir, file).await.ok_or_else(not_found)?;
            return Ok(Reply::bytes(protocol_content_type(file), bytes));
        }
        match git::file_at(&repo.dir, WORKING_BRANCH, file).await {
            Ok(Some(bytes)) => Ok(Reply::bytes(reply::BYTES, bytes)),
            Ok(None) => Err(not_found()),
            Err(err) => {
                tracing::debug!(repo = %repo.name, error = %err, "raw extraction failed");
                Err(not_found())
            }
        }
    }
}

/// Splits `/{name}.git/{file}` into (`{name}.git`, `name`, `file`): the
/// reference's `^/([^/]+\.git)/(.*)$`, whose `.` stops at a newline.
fn parse_repo_path(path: &str) -> Option<(&str, &str, &str)> {
    let (repo_part, file) = path.strip_prefix('/')?.split_once('/')?;
    let name = repo_part.strip_suffix(".git").filter(|n| !n.is_empty())?;
    if file.contains('\n') {
        return None;
    }
    Some((repo_part, name, file))
}

/// A path segment that cannot move out of its directory or hide tricks.
fn safe_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg != "."
        && seg != ".."
        && !seg.contains(['\\', '\0'])
        && !seg.chars().any(char::is_control)
}

/// The files a dumb-HTTP git client fetches.
fn is_protocol_path(file: &str) -> bool {
    file == "HEAD" || file == "info/refs" || file.starts_with("objects/")
}

fn protocol_content_type(file: &str) -> &'static str {
    match file {
        "HEAD" | "info/refs" | "objects/info/packs" => reply::TEXT,
        _ => reply::BYTES,
    }
}

/// Reads `base/rel` when every component below `base` exists, is not a
/// symlink, and the last is a regular file. The opened file's inode is
/// checked against the one inspected, so a swap in between is refused.
async fn read_confined(base: &Path, rel: &str) -> Option<Vec<u8>> {
    let base = base.to_path_buf();
    let rel = rel.to_string();
    tokio::task::spawn_blocking(move || {
        let mut path = base;
        let mut last = None;
        for seg in rel.split('/') {
            path.push(seg);
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.file_type().is_symlink() {
                tracing::warn!(path = %path.display(), "refusing to serve a symlink");
                return None;
            }
            last = Some(meta);
        }
        let meta = last?;
        if !meta.is_file() {
            return None;
        }
        // What was opened (fstat of the handle) must be the file inspected:
        // a component swapped for a symlink in between leads elsewhere.
        let mut file = std::fs::File::open(&path).ok()?;
        let opened = file.metadata().ok()?;
        if opened.ino() != meta.ino() || opened.dev() != meta.dev() {
            tracing::warn!(path = %path.display(), "refusing a file replaced while serving it");
            return None;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
        Some(bytes)
    })
    .await
    .ok()
    .flatten()
}

/// Clones `spec.source` bare into `root` and takes the first snapshot.
async fn clone(root: &Path, spec: &RepoSpec) -> Result<Repo, Error> {
    let source = &spec.source;
    let top = Git::new(source, ["rev-parse", "--absolute-git-dir"])
        .text()
        .await
        .map_err(|source_err| Error::NotARepo {
            name: spec.name.clone(),
            path: source.clone(),
            source: source_err,
        })?;
    tracing::debug!(repo = %spec.name, git_dir = %top, "preparing served repository");
    let dir = root.join(format!("{}.git", spec.name));
    let err = |source| Error::Git {
        name: spec.name.clone(),
        source,
    };
    Git::new(
        root,
        [
            OsString::from("clone"),
            "--bare".into(),
            "--quiet".into(),
            "--".into(),
            source.into(),
            dir.clone().into(),
        ],
    )
    .output()
    .await
    .map_err(err)?;
    snapshot(source, &dir).await.map_err(err)?;
    Ok(Repo {
        name: spec.name.clone(),
        source: Some(source.clone()),
        dir,
    })
}

/// Points `_working` of the bare clone `bare` at a commit holding the
/// source's working tree (or at `HEAD` when nothing is uncommitted), then
/// refreshes the dumb-HTTP info files.
pub async fn snapshot(source: &Path, bare: &Path) -> Result<(), git::Error> {
    let head = git::resolve(source, "HEAD").await?;
    if let Some(head) = &head {
        // A detached HEAD is not among the cloned branches.
        Git::new(
            bare,
            [
                OsString::from("fetch"),
                "--quiet".into(),
                "--no-tags".into(),
                "--".into(),
                source.into(),
                head.into(),
            ],
        )
        .output()
        .await?;
    }
    let is_bare = Git::new(source, ["rev-parse", "--is-bare-repository"])
        .text()
        .await?
        == "true";
    let commit = if is_bare {
        head.clone()
    } else {
        Some(working_commit(source, bare, head.as_deref()).await?)
    };
    if let Some(commit) = commit {
        let reference = format!("refs/heads/{WORKING_BRANCH}");
        Git::new(bare, ["update-ref", reference.as_str(), commit.as_str()])
            .output()
            .await?;
    }
    Git::new(bare, ["update-server-info"]).output().await?;
    Ok(())
}

/// Builds the snapshot commit with a temporary index, writing objects into
/// the bare clone only.
async fn working_commit(
    source: &Path,
    bare: &Path,
    head: Option<&str>,
) -> Result<String, git::Error> {
    let toplevel = PathBuf::from(
        Git::new(source, ["rev-parse", "--show-toplevel"])
            .text()
            .await?,
    );
    let index = bare.join("homestak-snapshot.index");
    let objects = bare.join("objects");
    let _ = tokio::fs::remove_file(&index).await;
    let run = |args: Vec<&str>| {
        Git::new(&toplevel, args)
            .env("GIT_INDEX_FILE", &index)
            .env("GIT_OBJECT_DIRECTORY", &objects)
    };
    let result = async {
        match head {
            Some(head) => run(vec!["read-tree", head]).output().await?,
            None => run(vec!["read-tree", "--empty"]).output().await?,
        };
        run(vec!["add", "--all", "--", "."]).output().await?;
        let tree = run(vec!["write-tree"]).text().await?;
        if let Some(head) = head {
            let head_tree = Git::new(bare, ["rev-parse", &format!("{head}^{{tree}}")])
                .text()
                .await?;
            if head_tree == tree {
                return Ok(head.to_string());
            }
        }
        let mut args = vec!["commit-tree", tree.as_str()];
        if let Some(head) = head {
            args.extend(["-p", head]);
        }
        args.extend(["-m", "homestak: snapshot of uncommitted changes"]);
        run(args).text().await
    }
    .await;
    let _ = tokio::fs::remove_file(&index).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_names_are_plain() {
        let spec: RepoSpec = "site-config.git=/srv/sc".parse().unwrap();
        assert_eq!(spec.name, "site-config");
        assert_eq!(spec.source, PathBuf::from("/srv/sc"));
        for bad in ["x", "=/p", "../x=/p", ".h=/p", "a/b=/p", "a=", "a b=/p"] {
            assert!(bad.parse::<RepoSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_marked_clone_directories_are_removed() {
        let state = tempfile::tempdir().unwrap();
        let ours = state.path().join("repos.1");
        create_root(&ours).unwrap();
        std::fs::write(ours.join("x"), "x").unwrap();
        let theirs = state.path().join("repos.backup");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("important"), "keep").unwrap();
        std::fs::write(state.path().join("repos.txt"), "keep").unwrap();
        // A symlink to a marked directory is not a directory of ours.
        let elsewhere = tempfile::tempdir().unwrap();
        create_root(&elsewhere.path().join("c")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("c"), state.path().join("repos.link"))
            .unwrap();
        remove_stale(state.path());
        assert!(!ours.exists());
        assert!(theirs.join("important").is_file());
        assert!(state.path().join("repos.txt").is_file());
        assert!(elsewhere.path().join("c").join(MARKER).is_file());
        // A directory that is not ours is refused, not replaced.
        assert!(matches!(
            create_root(&theirs).map_err(|e| *e),
            Err(Error::NotOurs { .. })
        ));
        assert!(theirs.join("important").is_file());
        // One of ours left at our path is replaced.
        create_root(&ours).unwrap();
        create_root(&ours).unwrap();
        assert!(ours.join(MARKER).is_file());
    }

    #[test]
    fn repo_paths_parse_like_the_reference() {
        assert_eq!(
            parse_repo_path("/bootstrap.git/HEAD"),
            Some(("bootstrap.git", "bootstrap", "HEAD"))
        );
        assert_eq!(
            parse_repo_path("/a.git/objects/pack/p.idx"),
            Some(("a.git", "a", "objects/pack/p.idx"))
        );
        // An empty or odd file is the handler's business (404), not a
        // malformed path.
        assert_eq!(parse_repo_path("/a.git/"), Some(("a.git", "a", "")));
        assert_eq!(parse_repo_path("/a.git//x"), Some(("a.git", "a", "/x")));
        assert_eq!(parse_repo_path("/a.git/../x"), Some(("a.git", "a", "../x")));
        for bad in [
            "",
            "/",
            "/a",
            "/a.git",
            "/.git/HEAD",
            "/x/a.git/HEAD",
            "a.git/HEAD",
            "/a.gitx/HEAD",
            "/a.git/x\ny",
        ] {
            assert_eq!(parse_repo_path(bad), None, "{bad:?}");
        }
    }

    /// Every malformed path is "Invalid path" with the path as sent; a
    /// file that could leave the repo is "File not found", never read.
    #[tokio::test]
    async fn malformed_paths_are_invalid_and_escapes_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present.git");
        std::fs::create_dir_all(present.join("objects")).unwrap();
        std::fs::write(present.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(dir.path().join("outside"), "secret").unwrap();
        let set = RepoSet::from_dirs([("present".to_string(), present)]);
        let answer = |reply: Reply| {
            let body = reply.body_json().cloned().unwrap_or_default();
            (
                reply.status,
                body["error"]["message"].as_str().unwrap_or("").to_string(),
            )
        };
        for path in [
            "/",
            "/present",
            "/present.git",
            "/.git/HEAD",
            "/a/present.git/HEAD",
        ] {
            assert_eq!(
                answer(set.serve(path).await),
                (400, format!("Invalid path: {path}")),
                "{path}"
            );
        }
        assert_eq!(
            answer(set.serve("/ghost.git/HEAD").await),
            (404, "Repository not found: ghost.git".to_string())
        );
        for file in [
            "../outside",
            "objects/../../outside",
            "",
            "/HEAD",
            "objects//x",
        ] {
            assert_eq!(
                answer(set.serve(&format!("/present.git/{file}")).await),
                (404, format!("File not found: {file}")),
                "{file}"
            );
        }
        assert_eq!(set.serve("/present.git/HEAD").await.status, 200);
    }

    #[test]
    fn segments_are_confined() {
        for bad in ["", ".", "..", "a\\b", "a\0", "a\nb"] {
            assert!(!safe_segment(bad), "{bad:?}");
        }
        for good in ["HEAD", "%2e%2e", "pack-1.idx", "..."] {
            assert!(safe_segment(good), "{good:?}");
        }
    }
}
