//! Real clients against the simulator: the proxmoxer 2.3.0 lifecycle in
//! `conformance/proxmoxer_lifecycle.py`, run with the venv that
//! `make venv` creates (`.venv`, proxmoxer + requests). Skipped, with a
//! message, when the venv is missing; `make test` creates it first.

use std::path::Path;
use std::process::Command;

#[test]
fn proxmoxer_lifecycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        println!(
            "SKIPPED: {} missing; run `make venv` (make test does)",
            python.display()
        );
        return;
    }
    let out = Command::new(&python)
        .arg(root.join("conformance/proxmoxer_lifecycle.py"))
        .arg("--homestak")
        .arg(env!("CARGO_BIN_EXE_homestak"))
        .args(["--time-scale", "0.01"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "proxmoxer lifecycle failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("proxmoxer lifecycle OK"), "{stdout}");
}
