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

#[test]
fn ansible_proxmox_kvm_lifecycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let playbook = root.join(".venv/bin/ansible-playbook");
    if !python.exists() || !playbook.exists() {
        println!(
            "SKIPPED: {} missing; run `make venv` (make test does) to install ansible 12.3.0",
            playbook.display()
        );
        return;
    }
    let out = Command::new(&python)
        .arg(root.join("conformance/ansible_lifecycle.py"))
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
        "ansible lifecycle failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ansible proxmox_kvm lifecycle OK"),
        "{stdout}"
    );
    assert!(stdout.contains("failed=0"), "{stdout}");
}
