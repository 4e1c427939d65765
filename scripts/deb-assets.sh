#!/usr/bin/env bash
# Generates the .deb's completions and man pages from a built binary:
#   scripts/deb-assets.sh BINARY OUT_DIR
# OUT_DIR gets completions/{homestak.bash,_homestak,homestak.fish} and
# man/*.1.gz. `make deb` passes <target dir>/release/deb-assets, which
# Cargo.toml's [package.metadata.deb] assets name as
# target/release/deb-assets: cargo-deb maps that prefix onto the real target
# dir, so a test can package from a scratch one. It takes files there for
# build products and leaves them as they are, hence the gzip here (-n: no
# name or time stamp, so the same binary gives the same bytes).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY OUT_DIR" >&2
    exit 64
fi
bin=$1
out=$2

rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
"$bin" completions bash >"$out/completions/homestak.bash"
"$bin" completions zsh >"$out/completions/_homestak"
"$bin" completions fish >"$out/completions/homestak.fish"
"$bin" man --out "$out/man" >/dev/null
gzip -9n "$out"/man/*.1
