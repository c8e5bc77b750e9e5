#!/usr/bin/env bash
# Issue 12's speed goal: from `bottle approve` to the agent's first successful request through
# egress, median of 10 (goal: <= 1 s). See core/examples/approve-bench.rs for what is measured.
# Needs Docker and bottle-base/bottle-agent (tests/images/build-base.sh).
#
#   bash benches/approve.sh                  # release build
#   PROFILE=debug bash benches/approve.sh    # the test build (no second wasmtime build)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" -q -p bottle --bin bottle --example approve-bench
exec "./target/$profile/examples/approve-bench" "$PWD/target/$profile/bottle"
