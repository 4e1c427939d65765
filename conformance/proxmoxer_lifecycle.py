#!/usr/bin/env python3
"""A VM lifecycle through proxmoxer 2.3.0 against a fresh `homestak sim`.

Starts the simulator (loopback, port 0, --ready-file), trusts its
certificate only after checking the fingerprint from the ready file, then
drives: create with import-from and cloud-init, start, wait for the guest
agent, the PVE errors a client must handle, stop, update, delete, with task
polling through proxmoxer.tools.Tasks.blocking_status. Any mismatch exits
non-zero with a message saying what differed.

Usage: proxmoxer_lifecycle.py --homestak PATH [--time-scale F]
"""

import argparse
import sys
import tempfile
import time
from urllib.parse import quote, urlparse

from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from simproc import Mismatch, check, pinned_cert, ssh_key, start_sim, stop_sim


def wait(prox, upid, poll):
    status = Tasks.blocking_status(prox, upid, timeout=120, polling_interval=poll)
    check(status is not None, f"task {upid} did not finish in 120 s")
    return status


def expect_error(call, status, text):
    try:
        call()
    except ResourceException as e:
        check(e.status_code == status, f"expected HTTP {status}, got {e.status_code}: {e}")
        check(text in str(e), f"expected {text!r} in {e}")
        return e
    raise Mismatch(f"expected HTTP {status} {text!r}, the call succeeded")


def lifecycle(prox, node, poll):
    version = prox.version.get()
    check(version["release"] == "8.4", f"release {version}")
    check(node in [n["node"] for n in prox.nodes.get()], "node missing from /nodes")
    nextid = prox.cluster.nextid.get()
    check(isinstance(nextid, str), f"/cluster/nextid must be a JSON string, got {nextid!r}")
    vmid = int(nextid)
    keys = ssh_key("conformance@example") + "\n" + ssh_key("second@example")

    upid = prox.nodes(node).qemu.create(
        vmid=vmid,
        name="conformance-vm",
        memory=1024,
        cores=2,
        sockets=1,
        scsihw="virtio-scsi-single",
        scsi0="local-zfs:0,import-from=local:import/debian-12.qcow2",
        ide2="local-zfs:cloudinit",
        ciuser="debian",
        cipassword="secret",
        sshkeys=quote(keys, safe=""),
        ipconfig0="ip=dhcp",
        nameserver="192.0.2.53",
        net0="virtio,bridge=vmbr0",
        agent="1",
        serial0="socket",
        vga="serial0",
        boot="order=scsi0",
        onboot=1,
        tags="Homestak;conformance",
        description="managed by homestak conformance",
    )
    decoded = Tasks.decode_upid(upid)
    check(decoded["type"] == "qmcreate" and decoded["id"] == str(vmid), f"UPID {upid}")
    status = wait(prox, upid, poll)
    check(status["exitstatus"] == "OK", f"create task: {status}")
    check(status.get("tokenid") == "homestak", f"tokenid missing in {status}")

    vm = prox.nodes(node).qemu(vmid)
    cfg = vm.config.get()
    check(cfg["scsi0"].startswith("local-zfs:vm-%d-disk-0," % vmid) and cfg["scsi0"].endswith("size=2G"), f"scsi0 {cfg['scsi0']}")
    check(cfg["ide2"] == "local-zfs:vm-%d-cloudinit,media=cdrom" % vmid, f"ide2 {cfg['ide2']}")
    check(cfg["tags"] == "conformance;homestak", f"tags not normalized: {cfg['tags']}")
    check(cfg["cipassword"] == "**********", "cipassword not masked")
    check(cfg["sshkeys"] == quote(keys, safe=""), "sshkeys must come back in their encoded form")
    check(cfg["cores"] == 2 and cfg["onboot"] == 1, f"integers and flags are numbers: {cfg}")
    check(len(cfg["digest"]) == 40, "digest")

    expect_error(lambda: vm.agent("network-get-interfaces").get(), 500, f"VM {vmid} is not running")
    status = wait(prox, vm.status.start.post(), poll)
    check(status["exitstatus"] == "OK", f"start: {status}")
    current = vm.status.current.get()
    check(current["status"] == "running" and current["qmpstatus"] == "running", f"status {current}")

    polls, address = 0, None
    deadline = time.monotonic() + 60
    while address is None:
        try:
            result = vm.agent("network-get-interfaces").get()["result"]
            for iface in result:
                if iface["name"] == "lo":
                    continue
                for a in iface.get("ip-addresses", []):
                    if a["ip-address-type"] == "ipv4":
                        address = a["ip-address"]
        except ResourceException as e:
            check(e.status_code == 500 and "QEMU guest agent is not running" in str(e), f"agent: {e}")
            polls += 1
            check(time.monotonic() < deadline, "agent never came up")
            time.sleep(poll)
    check(address.startswith("127.") and not address.startswith("127.0."), f"agent address {address}")

    status = wait(prox, vm.status.start.post(), poll)
    check(status["exitstatus"] == f"VM {vmid} already running", f"start while running: {status}")
    expect_error(lambda: prox.nodes(node).qemu.delete(vmid), 500, f"VM {vmid} is running - destroy failed")
    expect_error(lambda: prox.nodes(node).qemu.create(vmid=vmid), 500, f"VM {vmid} already exists on node '{node}'")

    status = wait(prox, vm.status.shutdown.post(forceStop=1, timeout=30), poll)
    check(status["exitstatus"] == "OK", f"shutdown: {status}")
    status = wait(prox, vm.status.stop.post(), poll)
    check(status["exitstatus"] == "OK", f"stop of a stopped VM is a no-op: {status}")
    check(vm.status.current.get()["status"] == "stopped", "still running after shutdown")

    digest = vm.config.get()["digest"]
    check(vm.config.set(memory=2048, digest=digest) is None, "PUT config returns null")
    expect_error(lambda: vm.config.set(memory=4096, digest=digest), 500, "checksum mismatch")
    check(vm.config.get()["memory"] == "2048", "memory update")

    status = wait(prox, prox.nodes(node).qemu.delete(vmid, purge=1), poll)
    check(status["exitstatus"] == "OK", f"delete: {status}")
    expect_error(lambda: vm.config.get(), 500, "does not exist")
    return polls, address


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--homestak", required=True, help="path to the homestak binary")
    ap.add_argument("--time-scale", type=float, default=0.01)
    args = ap.parse_args()
    poll = max(0.005, args.time_scale)
    with tempfile.TemporaryDirectory() as workdir:
        proc, ready = start_sim(args.homestak, args.time_scale, workdir)
        try:
            url = urlparse(ready["url"])
            cert = pinned_cert(url.hostname, url.port, ready["fingerprint"], workdir)
            user_token, secret = ready["token"].rsplit("=", 1)
            user, token_name = user_token.split("!", 1)
            prox = ProxmoxAPI(
                url.hostname, port=url.port, user=user, token_name=token_name, token_value=secret, verify_ssl=cert
            )
            t0 = time.monotonic()
            polls, address = lifecycle(prox, ready["node"], poll)
            took = time.monotonic() - t0
            print(
                f"proxmoxer lifecycle OK at time scale {args.time_scale}: {took:.2f} s wall "
                f"(agent answered after {polls} 'not running' polls, address {address})"
            )
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
