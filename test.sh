#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, simulator and (as root) end-to-end.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
