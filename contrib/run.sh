#!/bin/sh
# Drop-in for the Python iac-driver's ./run.sh: `./run.sh --scenario NAME`,
# `./run.sh --list-scenarios`, `./run.sh create -M M -H H` and the rest map
# onto homestak's subcommands (see README, "Scenarios").
exec "${HOMESTAK:-homestak}" "$@"
