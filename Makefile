# homestak developer entry points. `make test` is what CI runs.
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
# cargo-deb for `make deb` and the .deb test (see deb below).
CARGO_DEB_VERSION := 3.8.0
CARGO_DEB := .tools/bin/cargo-deb
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: all build test lint deny deb fmt demo bench crds conformance venv clean fuzz reliability-load reliability-input reliability-crash

all: build

build:
	$(CARGO) build

## test: formatting, lints, cargo deny and every test of every crate (what
## .ci/run calls); the venv lets the binary's sim_conformance tests run the
## proxmoxer lifecycle and the ansible proxmox_kvm playbook, and cargo-deb
## the .deb test (tests/deb_package.rs, from the debug binary).
test: lint deny venv $(CARGO_DEB)
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## venv: Python clients for conformance runs (proxmoxer 2.3.0, requests,
## ansible 12.3.0 with community.proxmox 1.4.0). A cold install takes about
## 35 s and 550 MB; it is redone only when requirements.txt changes.
venv: $(VENV)/.installed

$(VENV)/.installed: conformance/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r conformance/requirements.txt
	touch $@

## conformance: real clients against a freshly started `homestak sim`
conformance: venv build
	$(VENV)/bin/python conformance/proxmoxer_lifecycle.py --homestak target/debug/homestak --time-scale 0.01
	$(VENV)/bin/python conformance/ansible_lifecycle.py --homestak target/debug/homestak --time-scale 0.01

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	CARGO=$(CARGO) ./scripts/release-features.sh

## deny: `cargo deny check advisories bans` against deny.toml. cargo-deny
## is installed into .tools/ on first use (a few minutes, once). The RustSec
## database comes from github.com: where that cannot be reached, the
## advisories check says SKIPPED and the bans still run.
CARGO_DENY_VERSION := 0.20.2
DENY := .tools/bin/cargo-deny

deny: $(DENY)
	$(DENY) deny check bans
	@if $(DENY) deny fetch db >/dev/null 2>&1; then \
		$(DENY) deny check --disable-fetch advisories; \
	else \
		echo "advisories: SKIPPED, the RustSec database (github.com/rustsec/advisory-db) cannot be fetched from this machine"; \
	fi

$(DENY):
	$(CARGO) install --locked --quiet --root .tools cargo-deny@$(CARGO_DENY_VERSION)

## deb: the release .deb, in <target dir>/debian/ (`apt install
## ./target/debian/homestak_*.deb`): a release build, then
## scripts/deb-assets.sh writes the completions and man pages from that
## binary, then cargo-deb packages them with the unit (Cargo.toml's
## [package.metadata.deb]). cargo-deb is installed into .tools/ on first
## use (about 2 CPU-minutes, once). The target dir is $CARGO_TARGET_DIR or
## ./target.
deb: $(CARGO_DEB)
	$(CARGO) build --release --locked -p homestak
	./scripts/deb-assets.sh $(TARGET_DIR)/release/homestak $(TARGET_DIR)/release/deb-assets
	$(CARGO_DEB) --no-build -p homestak

$(CARGO_DEB):
	$(CARGO) install --locked --quiet --root .tools cargo-deb@$(CARGO_DEB_VERSION)

fmt:
	$(CARGO) fmt --all

## demo: the main job against the built-in simulator
demo: build
	./scripts/demo.sh

## bench: every performance figure as ONE table from one run (P1: 40 VMs
## on one storage against the storage-lock bound; P1 Ansible: the same by a
## proxmox_kvm playbook from the venv, skipped without it; P2: no-op
## reconcile/status of 100 and 1,000 VMs; P3: commit to converged through
## `homestak serve`; Growth: 10/100/1,000 VMs, wall, requests, peak RSS;
## Nested: three tiers; P4: plan, daemon RSS and status at 10,000 nodes).
## The homestak it runs is a release build, as users run it; the venv is
## made first. Sizes and time scales: BENCH_SECTIONS, BENCH_P4_NODES,
## BENCH_P1_VMS, BENCH_P1_TIME_SCALE, BENCH_ANSIBLE_TIME_SCALE,
## BENCH_ANSIBLE_FORKS, BENCH_VENV, BENCH_P2_VMS, BENCH_GROWTH_VMS,
## BENCH_SMALL_TIME_SCALE, BENCH_P3_VMS, BENCH_P3_TIME_SCALE,
## BENCH_P3_DEBOUNCE_MS, BENCH_NESTED_TIME_SCALE (crates/engine/benches/perf/main.rs).
## bench-converge / bench-nested: the older separate benches.
bench: venv
	$(CARGO) build --release -p homestak
	HOMESTAK_BIN=$(abspath $(TARGET_DIR))/release/homestak BENCH_VENV=$(CURDIR)/$(VENV) $(CARGO) bench -p homestak-engine --bench perf

.PHONY: bench-converge bench-nested
bench-converge:
	$(CARGO) bench -p homestak-engine --bench converge

bench-nested:
	$(CARGO) build -p homestak
	HOMESTAK_BIN=$(abspath $(TARGET_DIR))/debug/homestak $(CARGO) bench -p homestak-engine --bench nested

## reliability: the full-size reliability proofs, each printing its figures
## (CI runs them at a reduced size through `cargo test --all-targets`).
.PHONY: reliability
reliability: reliability-faults
reliability: reliability-load
reliability: reliability-input
reliability: reliability-crash

## reliability-faults: R2, 12 VMs converging under 10 % 5xx on reads and
## writes, 5 % connection resets before and after the work and 5 % failed
## tasks, over FAULTS_SEEDS seeds (5): at most 3x the fault-free time, no
## duplicate VM, no marked VM without a node
.PHONY: reliability-faults
reliability-faults:
	$(CARGO) bench -p homestak-engine --bench faults

## reliability-load: proof R4 at full size, printing its figures: 10,000
## mixed requests at 200 connections (0 errors, p50/p99) while 1,100 idle
## connections are held, then /health from a new client within 1 s; and the
## auth matrix. CI runs the same tests at a reduced size.
reliability-load:
	HOMESTAK_LOAD=full $(CARGO) test -p homestak-daemon --test tests -- r4_ --nocapture --test-threads 1

## fuzz: the property-based fuzzing of the parsers (manifest, site-config,
## PVE form and property strings, UPIDs, known_hosts) with a large budget.
## `make test` runs the same properties with PROPTEST_CASES' default, 256.
FUZZ_CASES ?= 100000
FUZZ_CRATES := -p homestak-core -p homestak-pve -p homestak-ssh

fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test $(FUZZ_CRATES) --test tests fuzz_

## reliability-input: proof R3 at full size (part of `make reliability`):
## the corpus of malformed inputs, which prints its count, then `fuzz`.
reliability-input:
	$(CARGO) test -p homestak --test tests bad_input -- --nocapture
	$(MAKE) fuzz

## reliability-crash: R1, 50 SIGKILLs at random moments of `reconcile
## --once`, then 50 of the daemon, during a two-tier converge against a
## `homestak sim` process; after each kill it runs again, and at the end the
## tree is converged with no duplicate and no stray owned VM, and the store
## opens. HOMESTAK_R1_SEED=N replays a run (the seed is printed).
R1_KILLS ?= 50
.PHONY: reliability-crash
reliability-crash:
	$(CARGO) build -p homestak
	HOMESTAK_R1_KILLS=$(R1_KILLS) $(CARGO) test -p homestak --test tests reliability_crash -- --nocapture --test-threads 1

## crds: regenerate the JSON Schemas in crds/ and in the demo site-config's
## .schemas/ (what its yaml-language-server modelines point at)
crds: build
	$(CARGO) run --quiet -- crds --out crds
	$(CARGO) run --quiet -- crds --out demo/site-config/.schemas

clean:
	$(CARGO) clean
	rm -rf $(VENV)
