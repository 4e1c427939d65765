//! `homestak crds` as a user runs it: the binary writes the files core
//! renders, byte for byte what is committed in `crds/`, and `--check`
//! notices a stale one.

use std::path::Path;
use std::process::Command;

use crate::support::{BIN, text};

fn crds(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("crds").args(args).output().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn crds_writes_what_is_committed_and_check_notices_a_stale_file() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let tmp = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the command creates it.
    let out_dir = tmp.path().join("site-config/.schemas");
    let out_arg = out_dir.to_str().unwrap();

    let out = crds(&["--out", out_arg]);
    assert!(out.status.success(), "{}", text(&out));
    let names = names(&out_dir);
    assert_eq!(names, self::names(&committed));
    assert!(names.len() >= 10, "{names:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), names.len(), "{stdout}");
    for name in &names {
        assert_eq!(
            std::fs::read(out_dir.join(name)).unwrap(),
            std::fs::read(committed.join(name)).unwrap(),
            "{name} differs from crds/{name}"
        );
        let line = format!("wrote {}", out_dir.join(name).display());
        assert!(stdout.lines().any(|l| l == line), "{line} not in {stdout}");
    }

    let fresh = crds(&["--check", "--out", out_arg]);
    assert!(fresh.status.success(), "{}", text(&fresh));

    std::fs::write(out_dir.join("spec.schema.json"), "{}\n").unwrap();
    let stale = crds(&["--check", "--out", out_arg]);
    assert_eq!(stale.status.code(), Some(1), "{}", text(&stale));
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(stderr.contains("outdated: "), "{stderr}");
    assert!(stderr.contains("spec.schema.json"), "{stderr}");
}

#[test]
fn crds_json_lists_the_files_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--json", "crds", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: Vec<&str> = json["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let expected: Vec<String> = names(tmp.path())
        .iter()
        .map(|n| tmp.path().join(n).display().to_string())
        .collect();
    let mut sorted = written.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected);
}

#[test]
fn crds_says_which_directory_it_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocked = tmp.path().join("file");
    std::fs::write(&blocked, "x").unwrap();
    let out = crds(&["--out", blocked.join("sub").to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot write {}", blocked.join("sub").display())),
        "{stderr}"
    );
}
