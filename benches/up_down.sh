#!/usr/bin/env bash
# bottle's bring-up goals, measured side by side in one run on the same machine:
#   - bring-up + teardown: `bottle run AGENT -- true` (plan, keys, up, command, logs, down) versus
#     `docker-compose up -d` + `down` of the compose file bottle wrote (goal: ratio <= 0.8), and
#     versus a bare `docker run --rm --network none bottle-agent:latest true` (goal: <= 2.5x);
#   - time from `bottle run` to the first byte of the agent's output (goal: <= 0.6 s);
#   - the engine's floor for what a bottle is: the same engine work done through its API with
#     curl and nothing of bottle's (two containers made at once, the agent on no network and
#     the bundle on the shared way out, started together, `true` as the agent's process, the
#     bundle killed once it ended, both removed), so the ratio to `docker run` that the
#     topology itself costs is measured beside bottle's.
# Needs bottle-base/bottle-agent (tests/images/build-base.sh). RUNS=5 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib/engine-floor.sh
runs=${RUNS:-5}
cargo build --release -q -p bottle
bin=$PWD/target/release/bottle
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/agents"
printf 'image: bottle-agent:latest\ncwd: none\negress:\n  allowlist: [docs.rs]\n' > "$work/agents/bench.yaml"
cd "$work"
export BOTTLE_STATE_DIR=$work/state BOTTLE_CACHE_DIR=$work/cache
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi

"$bin" images build >/dev/null 2>&1 || true
"$bin" run bench --yes --slug bench-keep --keep-state -- true </dev/null >/dev/null   # warm caches, keep a keyed state dir
[ -f "$work/state/bench-keep/compose.yaml" ] || { echo "the warm-up run left no compose file" >&2; exit 1; }
file=$work/state/bench-keep/compose.yaml

now() { date +%s%N; }
gone() { floor_gone bench-floor; }
gone   # what an interrupted run of this bench left
trap 'gone; rm -rf "$work"' EXIT
# One round of the floor: as bottle's docker backend does it, the agent on no network (its
# listeners handed to the bundle) and the bundle on the shared way out alone.
floor_round() { floor_pair bench-floor none bottle-shared-egress; }
b_total=0; c_total=0; f_total=0; d_total=0; e_total=0
for i in $(seq "$runs"); do
    t=$(now); "$bin" run bench --yes --slug "bench-$i" -- true </dev/null >/dev/null 2>&1; b=$(( $(now) - t ))
    t=$(now); docker run --rm --network none bottle-agent:latest true >/dev/null 2>&1; d=$(( $(now) - t ))
    t=$(now); "${compose[@]}" -p bench-compose -f "$file" up -d >/dev/null 2>&1
    "${compose[@]}" -p bench-compose -f "$file" down >/dev/null 2>&1; c=$(( $(now) - t ))
    f=$(python3 - "$bin" "bench-first-$i" <<'PY'
import subprocess, sys, time
start = time.monotonic_ns()
p = subprocess.Popen([sys.argv[1], "run", "bench", "--yes", "--slug", sys.argv[2], "--", "echo", "first-byte"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
p.stdout.read(1)
print(time.monotonic_ns() - start)
p.wait()
PY
)
    t=$(now); floor_round; e=$(( $(now) - t ))
    b_total=$((b_total + b)); c_total=$((c_total + c)); f_total=$((f_total + f)); d_total=$((d_total + d)); e_total=$((e_total + e))
done
b=$((b_total / runs / 1000000)); c=$((c_total / runs / 1000000)); f=$((f_total / runs / 1000000)); d=$((d_total / runs / 1000000)); e=$((e_total / runs / 1000000))
echo "bottle run -- true (plan+keys+up+command+logs+down): ${b} ms"
echo "${compose[*]} up -d + down (same file):        ${c} ms"
awk -v b="$b" -v c="$c" 'BEGIN { r = b / c; printf "ratio bottle/compose: %.2f (goal <= 0.8: %s)\n", r, (r <= 0.8) ? "met" : "NOT met" }'
echo "docker run --rm --network none bottle-agent true: ${d} ms"
awk -v b="$b" -v d="$d" 'BEGIN { r = b / d; printf "ratio bottle/docker run: %.2f (goal <= 2.5: %s)\n", r, (r <= 2.5) ? "met" : "NOT met" }'
echo "the engine's floor for the same topology (API by curl, no bottle): ${e} ms = $(awk -v e="$e" -v d="$d" 'BEGIN { printf "%.2f", e / d }')x docker run; bottle/floor = $(awk -v b="$b" -v e="$e" 'BEGIN { printf "%.2f", b / e }')"
echo "bottle run to the agent's first output byte:      ${f} ms"
awk -v f="$f" 'BEGIN { printf "first byte goal <= 600 ms: %s\n", (f <= 600) ? "met" : "NOT met" }'
"$bin" cleanup --yes >/dev/null 2>&1 || true
