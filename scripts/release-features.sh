#!/bin/sh
# Test doubles sit behind each crate's `testing` feature (pve::fake,
# ssh::fake, the engine's in-memory store, the daemon's hand-moved clock).
# Only dev-dependencies may turn it on: fail when the release binary's
# normal dependency graph enables any `testing` feature.
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
tree=$("$CARGO" tree --locked -e features,normal -p homestak)
if found=$(printf '%s\n' "$tree" | grep -F '"testing"'); then
    echo "release-features: the homestak binary's dependencies enable a testing feature:" >&2
    printf '%s\n' "$found" >&2
    exit 1
fi
echo "release-features: no testing feature in the homestak binary"
