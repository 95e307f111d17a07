#!/usr/bin/env bash
# Coverage-guided fuzzing of yavipin's parsers and state machines with libFuzzer, on the
# stable toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   build every target, fuzz each for SECONDS (default 30)
#                                       starting from a copy of fuzz/seeds/<target> and
#                                       fuzz/regressions/<target>; exit non-zero if a target
#                                       crashes or breaks an invariant
#   fuzz/run.sh --seeds                 regenerate fuzz/seeds/ (examples/gen_seeds.rs);
#                                       fuzz/regressions/ holds inputs kept by hand
#
# Environment: FUZZ_JOBS=N runs N targets at once (default 1); CARGO_TARGET_DIR (default
# fuzz/target) keeps these instrumented builds apart from the workspace's.
#
# How: libfuzzer-sys (crates.io) compiles libFuzzer from source with the system C++
# compiler and provides `main`; rustc's SanitizerCoverage pass, enabled with stable -C flags
# (below), gives libFuzzer its edge counters and comparison operands. No nightly feature,
# no RUSTC_BOOTSTRAP, no sanitizer runtime: the targets' crates forbid `unsafe`, so
# AddressSanitizer would add cost and find nothing that safe Rust does not already check.
# The flags apply only to this crate's build (fuzz/ is not a workspace member); the
# shipped binaries never see them.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$PWD

TARGETS=(data_open handshake_parse tunnel_datagram ipc_decode keyd_requests config_parse)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$FUZZ_DIR/target}

if [[ ${1:-} == --seeds ]]; then
    # Plain build: the generator links no fuzzer, so it must not be instrumented.
    unset RUSTFLAGS
    rm -rf seeds.new
    cargo run --locked --release --example gen_seeds -- seeds.new
    rm -rf seeds
    mv seeds.new seeds
    du -sh seeds
    exit 0
fi

SECONDS_PER_TARGET=${1:-30}
if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
    echo "usage: $0 [SECONDS] [TARGET...] | --seeds" >&2
    exit 2
fi
shift || true
if (($# > 0)); then
    TARGETS=("$@")
fi
JOBS=${FUZZ_JOBS:-1}

# libFuzzer is C++: the one system package this needs.
if ! command -v c++ >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends g++ >/dev/null
    else
        echo "fuzz: a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2
        exit 1
    fi
fi

# The seed generator runs only with --seeds, but it must keep compiling as the cores change.
cargo check --locked --example gen_seeds

HOST=$(rustc -vV | sed -n 's/^host: //p')
# SanitizerCoverage, as cargo-fuzz sets it up: inline 8-bit edge counters and the PC table
# (coverage and features), comparison operands (so the fuzzer learns magic values and
# lengths). Given with an explicit --target so that build scripts and proc macros, which
# run on the host and link no fuzzer, stay uninstrumented.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cforce-frame-pointers=yes"

# fuzz/Cargo.lock pins the fuzzer's own dependencies. When the workspace crates gained a
# dependency it does not list yet, cargo adds just that one (existing pins stay) rather than
# the run failing; the note says to commit the updated lock file.
LOCKED=--locked
if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
    echo "fuzz: note: fuzz/Cargo.lock is behind the workspace's dependencies; updating it for this run (commit it)" >&2
    LOCKED=
fi

build_start=$(date +%s)
bins=()
for target in "${TARGETS[@]}"; do
    bins+=(--bin "$target")
done
cargo build $LOCKED --release --target "$HOST" "${bins[@]}"
echo "fuzz: built ${#TARGETS[@]} targets in $(($(date +%s) - build_start)) s"

BIN_DIR=$CARGO_TARGET_DIR/$HOST/release
RUN_DIR=$CARGO_TARGET_DIR/run
mkdir -p "$RUN_DIR"

fuzz_one() {
    local target=$1
    local corpus=$RUN_DIR/corpus/$target artifacts=$FUZZ_DIR/artifacts/$target log=$RUN_DIR/$target.log
    rm -rf "$corpus" "$RUN_DIR/$target.status" "$RUN_DIR/$target.seconds"
    mkdir -p "$corpus" "$artifacts"
    cp seeds/"$target"/* "$corpus"/
    if [[ -d regressions/$target ]]; then
        cp regressions/"$target"/* "$corpus"/
    fi
    local args=(
        -max_total_time="$SECONDS_PER_TARGET"
        -print_final_stats=1
        -timeout=30
        -rss_limit_mb=2048
        -artifact_prefix="$artifacts"/
    )
    if [[ -f dict/$target.dict ]]; then
        args+=(-dict="dict/$target.dict")
    fi
    local status=0 start
    start=$(date +%s)
    "$BIN_DIR/$target" "${args[@]}" "$corpus" >"$log" 2>&1 || status=$?
    echo $(($(date +%s) - start)) >"$RUN_DIR/$target.seconds"
    echo "$status" >"$RUN_DIR/$target.status"
}

# A target's exit status; one that did not even start left none, and that fails too.
status_of() {
    cat "$RUN_DIR/$1.status" 2>/dev/null || echo missing
}

summary() {
    local target=$1
    local status log=$RUN_DIR/$target.log
    status=$(status_of "$target")
    local execs inited last seeds corpus
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    inited=$(grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | tail -n1 || true)
    last=$(grep -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|DONE|RELOAD)' "$log" | tail -n1 || true)
    seeds=$(find seeds/"$target" -type f | wc -l)
    if [[ -d regressions/$target ]]; then
        seeds=$((seeds + $(find regressions/"$target" -type f | wc -l)))
    fi
    corpus=$(find "$RUN_DIR/corpus/$target" -type f | wc -l)
    field() { sed -n "s/.* $1: \([0-9]*\).*/\1/p" <<<"$2"; }
    local verdict=ok
    if [[ $status != 0 ]]; then
        verdict="FAILED (exit $status)"
    fi
    printf '%-16s %-18s %5ss  execs %9s  cov %5s -> %-5s  features %5s -> %-5s  corpus %3s -> %s\n' \
        "$target" "$verdict" "$(cat "$RUN_DIR/$target.seconds" 2>/dev/null || echo ?)" "${execs:-?}" \
        "$(field cov "$inited")" "$(field cov "$last")" "$(field ft "$inited")" "$(field ft "$last")" \
        "$seeds" "$corpus"
}

pids=()
for target in "${TARGETS[@]}"; do
    fuzz_one "$target" &
    pids+=($!)
    if ((${#pids[@]} >= JOBS)); then
        wait "${pids[@]}"
        pids=()
    fi
done
if ((${#pids[@]} > 0)); then
    wait "${pids[@]}"
fi

failed=0
echo "fuzz: up to ${SECONDS_PER_TARGET} s per target (cov: edges reached, features: libFuzzer's coverage features, corpus: seeds and regressions -> after the run)"
for target in "${TARGETS[@]}"; do
    summary "$target"
    if [[ $(status_of "$target") != 0 ]]; then
        failed=$((failed + 1))
    fi
done
for target in "${TARGETS[@]}"; do
    if [[ $(status_of "$target") != 0 ]]; then
        echo "---- $target: end of $RUN_DIR/$target.log"
        tail -n 40 "$RUN_DIR/$target.log"
        echo "---- reproduce (YAVIPIN_FUZZ_TRACE=1 prints each step):"
        echo "     $BIN_DIR/$target $FUZZ_DIR/artifacts/$target/<crash file>"
    fi
done
echo "fuzz: $((${#TARGETS[@]} - failed)) passed, $failed failed"
((failed == 0))
