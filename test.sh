#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, simulator, sandbox, packaging and (as
# root) end-to-end tests with real daemons in network namespaces.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --all-targets --locked
# The end-to-end tests run the release build: what users run (panic = abort), and small
# enough for keyd to lock all its memory under the default RLIMIT_MEMLOCK.
cargo build --release --locked -p yavipin-parent -p yavipin-cli
cargo test --workspace --locked --no-fail-fast
