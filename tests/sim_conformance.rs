//! Real clients against the simulator, run with the venv that `make venv`
//! creates (`.venv`: proxmoxer 2.3.0, requests, ansible 12.3.0):
//!
//! - the proxmoxer lifecycle in `conformance/proxmoxer_lifecycle.py`;
//! - the Ansible `community.proxmox.proxmox_kvm` playbook in
//!   `conformance/ansible_lifecycle.yml` (create, start, stop, delete).
//!
//! Each is skipped, with a message, when the venv (or ansible in it) is
//! missing; `make test` creates it first.

use std::path::Path;
use std::process::Command;

/// Runs `conformance/<script>` against a fresh `homestak sim`; `None` (after
/// a SKIPPED line) when the venv lacks `needs`. Returns stdout, asserting
/// the script succeeded.
fn run_script(script: &str, needs: &str, install_hint: &str) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let needed = root.join(".venv/bin").join(needs);
    if !python.exists() || !needed.exists() {
        println!(
            "SKIPPED: {} missing; run `make venv` (make test does){install_hint}",
            needed.display()
        );
        return None;
    }
    let out = Command::new(&python)
        .arg(root.join("conformance").join(script))
        .arg("--homestak")
        .arg(env!("CARGO_BIN_EXE_homestak"))
        .args(["--time-scale", "0.01"])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    Some(stdout)
}

#[test]
fn proxmoxer_lifecycle() {
    let Some(stdout) = run_script("proxmoxer_lifecycle.py", "python", "") else {
        return;
    };
    assert!(stdout.contains("proxmoxer lifecycle OK"), "{stdout}");
}

#[test]
fn ansible_proxmox_kvm_lifecycle() {
    let Some(stdout) = run_script(
        "ansible_lifecycle.py",
        "ansible-playbook",
        " to install ansible 12.3.0",
    ) else {
        return;
    };
    assert!(
        stdout.contains("ansible proxmox_kvm lifecycle OK"),
        "{stdout}"
    );
    assert!(stdout.contains("failed=0"), "{stdout}");
}
