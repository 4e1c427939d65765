//! The .deb as `make deb` makes it, from the debug binary so CI needs no
//! release build: scripts/deb-assets.sh and cargo-deb (`--no-build`, with a
//! scratch target dir holding the binary as `release/homestak`), then
//! `dpkg-deb -x` into a scratch root and its contents checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BIN, text};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn runs(program: &Path, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// cargo-deb from `make deb`'s .tools/, else from PATH.
fn cargo_deb() -> Option<PathBuf> {
    [
        Path::new(ROOT).join(".tools/bin/cargo-deb"),
        PathBuf::from("cargo-deb"),
    ]
    .into_iter()
    .find(|p| runs(p, "--version"))
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn gunzip(path: &Path) -> String {
    run(Command::new("gzip").arg("-dc").arg(path))
}

#[test]
fn deb_installs_the_binary_unit_completions_and_man_pages() {
    let (Some(cargo_deb), true) = (cargo_deb(), runs(Path::new("dpkg-deb"), "--version")) else {
        let why = "cargo-deb (`make .tools/bin/cargo-deb`) or dpkg-deb (Debian's dpkg) is missing";
        // CI installs both (.ci/run, make test): there a skip would hide a broken package.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("deb package: SKIPPED, {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let release = target.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(BIN, release.join("homestak")).unwrap();
    run(Command::new(Path::new(ROOT).join("scripts/deb-assets.sh"))
        .arg(release.join("homestak"))
        .arg(release.join("deb-assets")));
    let deb = dir.path().join("homestak.deb");
    // --strip: the debug binary's line tables would double what xz
    // compresses (85 MB against 43 MB); --fast: xz's quick preset.
    run(Command::new(&cargo_deb)
        .args(["--no-build", "--strip", "--fast", "-p", "homestak"])
        .arg("--manifest-path")
        .arg(Path::new(ROOT).join("Cargo.toml"))
        .arg("--output")
        .arg(&deb)
        .env("CARGO_TARGET_DIR", &target));

    // Control fields.
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb).args([
        "Package",
        "Version",
        "Section",
        "Priority",
        "Depends",
        "Maintainer",
    ]));
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in\n{fields}"))
            .to_string()
    };
    assert_eq!(field("Package"), "homestak");
    assert!(
        field("Version").starts_with(env!("CARGO_PKG_VERSION")),
        "{fields}"
    );
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    let depends: Vec<String> = field("Depends")
        .split(',')
        .map(|d| d.trim().to_string())
        .collect();
    for needed in ["git", "ca-certificates"] {
        assert!(depends.iter().any(|d| d == needed), "{depends:?}");
    }
    // $auto: the binary links glibc.
    assert!(
        depends.iter().any(|d| d.starts_with("libc6")),
        "{depends:?}"
    );

    // Files, in a scratch root.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let version = run(Command::new(root.join("usr/bin/homestak")).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("homestak {}", env!("CARGO_PKG_VERSION"))
    );

    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/homestak.service")).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(Path::new(ROOT).join("contrib/homestak.service")).unwrap()
    );
    assert!(unit.contains("ExecStart=/usr/bin/homestak serve"), "{unit}");

    for (path, marker) in [
        (
            "usr/share/bash-completion/completions/homestak",
            "complete -F _homestak",
        ),
        (
            "usr/share/zsh/vendor-completions/_homestak",
            "#compdef homestak",
        ),
        (
            "usr/share/fish/vendor_completions.d/homestak.fish",
            "complete -c homestak",
        ),
    ] {
        let script = std::fs::read_to_string(root.join(path)).unwrap();
        assert!(script.contains(marker), "{path}");
        assert!(script.contains("reconcile"), "{path}");
    }

    // One gzipped page per command: the same set `homestak man` writes.
    let pages = dir.path().join("pages");
    run(Command::new(BIN).arg("man").arg("--out").arg(&pages));
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let man1 = root.join("usr/share/man/man1");
    let want: Vec<String> = names(&pages).iter().map(|n| format!("{n}.gz")).collect();
    assert_eq!(names(&man1), want);
    let serve = gunzip(&man1.join("homestak-serve.1.gz"));
    assert_eq!(
        serve,
        std::fs::read_to_string(pages.join("homestak-serve.1")).unwrap()
    );

    let doc = root.join("usr/share/doc/homestak");
    assert!(doc.join("README.md").is_file());
    let copyright = std::fs::read_to_string(doc.join("copyright")).unwrap();
    assert!(copyright.contains("Apache-2.0"), "{copyright}");

    // Maintainer scripts: daemon-reload; never enabled or started by the
    // install itself (only re-enabled if the admin had it enabled, and
    // restarted on upgrade only if it was running).
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("systemctl --system daemon-reload"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper debian-installed homestak.service"),
        "{postinst}"
    );
    assert!(
        postinst.contains("try-restart homestak.service"),
        "{postinst}"
    );
    assert!(!postinst.contains("_dh_action=start"), "{postinst}");
}
