//! What the benches share.

use std::path::Path;

/// `name` from the environment, parsed; `default` when unset or unparsable.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `text` to `path`, making its directory.
pub fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    std::fs::write(path, text).expect("write");
}

/// A flat site-config under `site`: defaults, empty secrets (the simulator
/// adds its token and an ownership key) and the `vm-small` preset.
// The nested bench builds its own tiers.
#[allow(dead_code)]
pub fn flat_site(site: &Path) {
    write(
        &site.join("site.yaml"),
        "defaults:\n  automation_user: homestak\n  bridge: vmbr0\n",
    );
    write(&site.join("secrets.yaml"), "api_tokens: {}\nssh_keys: {}\n");
    write(
        &site.join("v2/presets/vm-small.yaml"),
        "cores: 1\nmemory: 1024\ndisk: 8\n",
    );
}

/// The `homestak` binary: `HOMESTAK_BIN`, else `target/<profile>/homestak`
/// beside this executable (`cargo build -p homestak` makes it).
// Only the benches that run child processes use it.
#[allow(dead_code)]
pub fn binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("HOMESTAK_BIN") {
        return std::path::PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("homestak");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p homestak` first",
        path.display()
    );
    path
}

/// The three-tier tree measurement (`--bench nested` and `--bench perf`).
#[allow(dead_code)]
pub mod tiers;
