#!/usr/bin/env python3
"""Runs ansible_lifecycle.yml (community.proxmox.proxmox_kvm: create,
start, stop, delete) against a fresh `homestak sim`.

Starts the simulator (loopback, port 0, --ready-file), saves its
certificate after checking the fingerprint, and runs ansible-playbook from
this Python's environment with TLS verified against that certificate
(REQUESTS_CA_BUNDLE for proxmoxer, ca_path for the uri checks). Ansible
keeps all its files in a temporary directory: nothing is read from or
written to ~/.ansible or an ansible.cfg nearby.

Usage: ansible_lifecycle.py --homestak PATH [--time-scale F]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

from simproc import Mismatch, pinned_cert, ssh_key, start_sim, stop_sim

HERE = os.path.dirname(os.path.abspath(__file__))


def ansible_env(workdir, ca_bundle):
    home = os.path.join(workdir, "ansible")
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "ansible.cfg")
    with open(config, "w") as f:
        f.write("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_CONFIG": config,
            "ANSIBLE_HOME": home,
            "ANSIBLE_LOCAL_TEMP": os.path.join(home, "tmp"),
            "ANSIBLE_REMOTE_TEMP": os.path.join(home, "remote-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_NOCOWS": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "REQUESTS_CA_BUNDLE": ca_bundle,
        }
    )
    env.pop("CURL_CA_BUNDLE", None)
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--homestak", required=True, help="path to the homestak binary")
    ap.add_argument("--time-scale", type=float, default=0.01)
    args = ap.parse_args()
    playbook_bin = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(playbook_bin):
        print(f"CONFORMANCE FAILURE: {playbook_bin} missing; run `make venv`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        proc, ready = start_sim(args.homestak, args.time_scale, workdir)
        try:
            url = urlparse(ready["url"])
            cert = pinned_cert(url.hostname, url.port, ready["fingerprint"], workdir)
            user_token, secret = ready["token"].rsplit("=", 1)
            user, token_name = user_token.split("!", 1)
            variables = {
                "api_host": url.hostname,
                "api_port": url.port,
                "api_user": user,
                "api_token_id": token_name,
                "api_token_secret": secret,
                "node": ready["node"],
                "vmid": 150,
                "ca_bundle": cert,
                "sshkey": ssh_key("ansible@homestak"),
            }
            vars_file = os.path.join(workdir, "vars.json")
            with open(vars_file, "w") as f:
                json.dump(variables, f)
            t0 = time.monotonic()
            run = subprocess.run(
                [
                    playbook_bin,
                    "-i",
                    "localhost,",
                    "-e",
                    "@" + vars_file,
                    os.path.join(HERE, "ansible_lifecycle.yml"),
                ],
                env=ansible_env(workdir, cert),
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=600,
            )
            took = time.monotonic() - t0
            # The token secret is a lab secret, but keep it out of logs anyway.
            output = run.stdout.replace(secret, "<secret>")
            print(output)
            if run.returncode != 0:
                raise Mismatch(f"ansible-playbook exited with {run.returncode}")
            if "failed=0" not in output:
                raise Mismatch("the play recap reports failures")
            print(f"ansible proxmox_kvm lifecycle OK at time scale {args.time_scale}: {took:.2f} s wall")
        except Mismatch as e:
            print(f"CONFORMANCE FAILURE: {e}", file=sys.stderr)
            return 1
        finally:
            stopped = stop_sim(proc)
            if stopped:
                print(f"CONFORMANCE FAILURE: {stopped}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
