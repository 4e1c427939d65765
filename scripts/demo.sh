#!/usr/bin/env bash
# `make demo`: the main job end to end against the built-in simulator.
#   1. start `homestak sim` on loopback (it writes the node and token into a
#      scratch copy of demo/site-config);
#   2. converge manifests-examples/demo-flat.yaml with live progress;
#   3. `homestak status`;
#   4. change the manifest (demo-2 grows) and converge again;
#   5. destroy everything;
#   6. converge manifests-examples/tiered.yaml: a VM that becomes a PVE
#      host, with two VMs inside converged by a child homestak on it; show
#      the whole tree's status; destroy it, children first.
set -euo pipefail
cd "$(dirname "$0")/.."

H=${HOMESTAK:-target/debug/homestak}
SCALE=${DEMO_TIME_SCALE:-0.1}
work=$(mktemp -d "${TMPDIR:-/tmp}/homestak-demo.XXXXXX")
sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

cp -r demo/site-config "$work/site-config"
export HOMESTAK_STATE_DIR="$work/state"
sc=(--site-config "$work/site-config")
manifest="$work/demo-flat.yaml"
cp manifests-examples/demo-flat.yaml "$manifest"

step "Starting the PVE simulator (time scale $SCALE)"
"$H" "${sc[@]}" sim --config demo/sim.yaml --listen 127.0.0.1:0 --ready-file "$work/ready.json" --time-scale "$SCALE" \
  >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
[ -s "$work/ready.json" ] || { cat "$work/sim.log"; echo "simulator did not start" >&2; exit 1; }
sed -n 's/.*"url":"\([^"]*\)".*/simulator at \1/p' "$work/ready.json"

target=(--manifest-file "$manifest" -H pve)

step "homestak plan"
"$H" "${sc[@]}" plan "${target[@]}"

step "homestak reconcile --once"
"$H" "${sc[@]}" reconcile --once "${target[@]}" --report-dir "$work/reports"

step "homestak status"
"$H" "${sc[@]}" status "${target[@]}"

step "Changing the manifest: demo-2 becomes vm-medium (2 cores, 2048 MiB, 12 GiB)"
awk '/name: demo-2/{f=1} f&&/preset:/{sub(/vm-small/,"vm-medium");f=0} {print}' \
  manifests-examples/demo-flat.yaml >"$manifest"
"$H" "${sc[@]}" reconcile --once "${target[@]}" --report-dir "$work/reports"

step "homestak status"
"$H" "${sc[@]}" status "${target[@]}"

step "homestak destroy --yes"
"$H" "${sc[@]}" destroy --yes "${target[@]}" --report-dir "$work/reports"

step "Nested PVE: manifests-examples/tiered.yaml (hv becomes a PVE host; app and worker run inside it)"
tiered=(--manifest-file manifests-examples/tiered.yaml -H pve)
"$H" "${sc[@]}" reconcile --once "${tiered[@]}" --report-dir "$work/reports"

step "homestak status (one tree: each row says which tier observed it)"
"$H" "${sc[@]}" status "${tiered[@]}"

step "homestak destroy --yes (children first)"
"$H" "${sc[@]}" destroy --yes "${tiered[@]}" --report-dir "$work/reports"

step "Done"
