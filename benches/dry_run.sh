#!/usr/bin/env bash
# Issue 3's speed goal: `bottle run --dry-run` of the largest example (warm plugin cache) is faster
# than `docker compose config` merely re-reading the file it wrote. Both are timed here, side by
# side, in one run; the script prints the means and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-20}
cargo build --release -q -p bottle
bin=$PWD/target/release/bottle
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BOTTLE_STATE_DIR=$work/state BOTTLE_CACHE_DIR=$work/cache
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi

"$bin" run implementer --dry-run >/dev/null   # warm the cache
file=$(ls -d "$work"/state/*/ | head -1)compose.yaml

mean_ms() {  # mean wall time of "$@" over $runs runs, in ms
    local start end
    start=$(date +%s%N)
    for _ in $(seq "$runs"); do "$@" >/dev/null; done
    end=$(date +%s%N)
    echo $(( (end - start) / runs / 1000000 ))
}
b=$(mean_ms "$bin" run implementer --dry-run)
c=$(mean_ms "${compose[@]}" -f "$file" config -q)
echo "bottle run implementer --dry-run (warm cache): ${b} ms"
echo "${compose[*]} config on the file it wrote:   ${c} ms"
awk -v b="$b" -v c="$c" 'BEGIN { r = (c > 0) ? b / c : 0; printf "ratio bottle/compose: %.2f (goal < 1: %s)\n", r, (r < 1) ? "met" : "NOT met" }'
