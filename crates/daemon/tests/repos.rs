//! Served repositories over real TLS: `git clone` with the real git client
//! (TLS pinned by giving git the daemon's certificate as its CA file), the
//! `_working` snapshot, raw file extraction, refresh on reload, and
//! symlinks that must not lead out of a repository.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// Runs the real git client against the daemon.
async fn git_client(cert: &Path, dir: &Path, args: &[&str], token: Option<&str>) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(t) = token {
        cmd.arg("-c")
            .arg(format!("http.extraHeader=Authorization: Bearer {t}"));
    }
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_SSL_CAINFO", cert)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("git finishes (hang guard)")
        .expect("git runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn index_digest(repo: &Path) -> Vec<u8> {
    std::fs::read(repo.join(".git/index")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_sees_commits_and_the_working_snapshot() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    site_config(site.path());
    // Uncommitted work: a tracked edit, a new file, and an ignored secret.
    std::fs::write(
        site.path().join("site.yaml"),
        "defaults:\n  timezone: Europe/Paris\n",
    )
    .unwrap();
    std::fs::write(site.path().join("notes.md"), "draft\n").unwrap();
    let status_before = git(site.path(), &["status", "--porcelain"]);
    let index_before = index_digest(site.path());
    let objects_before = git(site.path(), &["count-objects", "-v"]);

    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine).await;
    let url = d.url("/site-config.git");

    let (ok, out) = git_client(
        &d.cert_path,
        work.path(),
        &["clone", "-q", &url, "anon"],
        None,
    )
    .await;
    assert!(!ok, "cloning without the token must fail: {out}");

    let (ok, out) = git_client(
        &d.cert_path,
        work.path(),
        &["clone", "-q", &url, "clone"],
        Some(REPO_TOKEN),
    )
    .await;
    assert!(ok, "git clone failed: {out}");
    let clone = work.path().join("clone");
    // The default branch is the commit: no uncommitted change, no secret.
    let site_yaml = std::fs::read_to_string(clone.join("site.yaml")).unwrap();
    assert!(site_yaml.contains("UTC"), "{site_yaml}");
    assert!(!clone.join("notes.md").exists());
    assert!(!clone.join("secrets.yaml").exists());
    assert_eq!(
        git(&clone, &["rev-parse", "HEAD"]),
        git(site.path(), &["rev-parse", "HEAD"])
    );
    // `_working` holds the uncommitted changes, and still no secret.
    git(&clone, &["checkout", "-q", "_working"]);
    assert!(
        std::fs::read_to_string(clone.join("site.yaml"))
            .unwrap()
            .contains("Europe/Paris")
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("notes.md")).unwrap(),
        "draft\n"
    );
    assert!(
        !clone.join("secrets.yaml").exists(),
        "ignored files are never served"
    );
    let all = git(&clone, &["log", "--all", "--format=%H", "--name-only"]);
    assert!(!all.contains("secrets.yaml"), "{all}");

    // Raw extraction reads `_working`.
    let auth = format!("Bearer {REPO_TOKEN}");
    let (status, body) = d.raw("/site-config.git/notes.md", Some(&auth)).await;
    assert_eq!((status, body.as_str()), (200, "draft\n"));
    let (status, body) = d
        .raw("/site-config.git/v2/specs/staged.yaml", Some(&auth))
        .await;
    assert_eq!(status, 200);
    assert!(body.contains("posture: stage"));
    let (status, _) = d.raw("/site-config.git/v2/specs", Some(&auth)).await;
    assert_eq!(status, 404, "directories are not files");

    // The operator's repository is untouched.
    assert_eq!(git(site.path(), &["status", "--porcelain"]), status_before);
    assert_eq!(
        index_digest(site.path()),
        index_before,
        "the index is untouched"
    );
    assert_eq!(git(site.path(), &["count-objects", "-v"]), objects_before);

    // A new commit is served after a reload.
    git(site.path(), &["add", "notes.md"]);
    git(site.path(), &["commit", "-q", "-m", "notes"]);
    let new_head = git(site.path(), &["rev-parse", "HEAD"]);
    d.control.reload();
    let mut seen = false;
    for _ in 0..600 {
        let (_, refs) = d.raw("/site-config.git/info/refs", Some(&auth)).await;
        if refs.contains(&new_head) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "info/refs never showed {new_head}");
    let (ok, out) = git_client(
        &d.cert_path,
        &clone,
        &["fetch", "-q", "origin"],
        Some(REPO_TOKEN),
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(git(&clone, &["rev-parse", "origin/main"]), new_head);

    let repos_dir = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("repos."))
        .map(|e| e.path())
        .expect("a repos directory while serving");
    d.stop().await.unwrap();
    assert!(
        !repos_dir.exists(),
        "temporary repos are removed on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_never_lead_out_of_a_served_repo() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let marker = "OUTSIDE-SECRET-3f9c2a";
    std::fs::write(outside.path().join("target.txt"), marker).unwrap();
    site_config(site.path());
    // A committed symlink and an uncommitted one, both pointing outside.
    std::os::unix::fs::symlink(
        outside.path().join("target.txt"),
        site.path().join("link.txt"),
    )
    .unwrap();
    git(site.path(), &["add", "link.txt"]);
    git(site.path(), &["commit", "-q", "-m", "link"]);
    std::os::unix::fs::symlink(outside.path(), site.path().join("linkdir")).unwrap();

    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine).await;
    let auth = format!("Bearer {REPO_TOKEN}");

    // Symlinks planted in the bare clone itself, as an attacker with
    // write access to it would.
    let bare = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("repos."))
        .unwrap()
        .path()
        .join("site-config.git");
    std::os::unix::fs::symlink(outside.path().join("target.txt"), bare.join("objects/evil"))
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), bare.join("objects/zz")).unwrap();
    std::os::unix::fs::symlink(outside.path(), bare.join("info/evil")).unwrap();

    for target in [
        "/site-config.git/link.txt",
        "/site-config.git/linkdir/target.txt",
        "/site-config.git/objects/evil",
        "/site-config.git/objects/zz/target.txt",
        "/site-config.git/info/evil/target.txt",
    ] {
        let (status, body) = d.raw(target, Some(&auth)).await;
        assert_eq!(status, 404, "{target}: {body}");
        assert!(
            !body.contains(marker),
            "{target} served a file outside: {body}"
        );
    }
    // A regular file next to them is served.
    let (status, body) = d.raw("/site-config.git/HEAD", Some(&auth)).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ref: refs/heads/main"), "{body}");
    d.stop().await.unwrap();
}
