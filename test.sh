#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, simulator, sandbox, packaging and (as
# root) end-to-end tests with real daemons in network namespaces.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --all-targets --locked
# The end-to-end tests run the release build: what users run (panic = abort), and small
# enough for keyd to lock all its memory under the default RLIMIT_MEMLOCK.
cargo build --release --locked -p yavipin-parent -p yavipin-cli
# The key-erasure attack test's build, with netd's test-only key log, kept apart from the
# real binary (parent/tests/attacks.rs, old_traffic_keys_leave_memory).
cargo build --release --locked -p yavipin-parent --features test-keylog --target-dir "${CARGO_TARGET_DIR:-target}/keylog"
cargo test --workspace --locked --no-fail-fast
