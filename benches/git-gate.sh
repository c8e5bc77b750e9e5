#!/usr/bin/env bash
# git-gate vs plain SSH on one upstream (sshd on loopback), in one run; see
# daemons/git-gate/examples/bench.rs for what is measured and the goals.
#
#   bash benches/git-gate.sh                 # 5000 commits, ~50 MB
#   COMMITS=500 RUNS=1 bash benches/git-gate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p bottle-git-gate --features testing --bins --examples
exec ./target/release/examples/gate-bench
