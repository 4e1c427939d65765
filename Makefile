# homestak developer entry points. `make test` is what CI runs.
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

.PHONY: all build test lint fmt demo bench crds conformance clean

all: build

build:
	$(CARGO) build

## test: formatting, lints and every test (what .ci/run calls)
test: lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## demo: the main job against the built-in simulator
demo: build
	./scripts/demo.sh

## crds: regenerate the JSON Schemas in crds/
crds: build
	$(CARGO) run --quiet -- crds --out crds

clean:
	$(CARGO) clean
	rm -rf $(VENV)
