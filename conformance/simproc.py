"""Shared by the conformance runs: start a fresh `homestak sim`, trust its
certificate only after checking its fingerprint, stop it with SIGTERM.

Standard library only, so every client's runner can import it.
"""

import base64
import hashlib
import json
import os
import signal
import ssl
import subprocess
import time


class Mismatch(Exception):
    """The simulator (or the client) did not behave as expected."""


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def start_sim(binary, scale, workdir):
    """Starts `homestak sim` on 127.0.0.1, port 0; returns (process, ready info)."""
    ready = os.path.join(workdir, "ready.json")
    proc = subprocess.Popen(
        [binary, "sim", "--listen", "127.0.0.1:0", "--ready-file", ready, "--time-scale", str(scale)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise Mismatch("homestak sim exited early: " + proc.stderr.read().decode(errors="replace"))
        if time.monotonic() > deadline:
            proc.kill()
            raise Mismatch("homestak sim wrote no ready file within 60 s")
        time.sleep(0.02)
    with open(ready) as f:
        return proc, json.load(f)


def stop_sim(proc):
    """SIGTERM, then checks a clean exit; returns an error text or None."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "homestak sim did not stop on SIGTERM"
    if proc.returncode != 0:
        return f"homestak sim exited with {proc.returncode}"
    return None


def pinned_cert(host, port, fingerprint, workdir):
    """Fetches the served certificate and keeps it only if it matches."""
    pem = ssl.get_server_certificate((host, port))
    der = ssl.PEM_cert_to_DER_cert(pem)
    seen = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    check(seen == fingerprint, f"certificate fingerprint {seen} != ready file {fingerprint}")
    path = os.path.join(workdir, "sim.pem")
    with open(path, "w") as f:
        f.write(pem)
    return path


def ssh_key(comment):
    """A structurally valid ed25519 public key line (PVE validates sshkeys)."""
    blob = (11).to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big") + bytes([7]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " " + comment
