#!/usr/bin/env bash
# Many bottles on one host at once: `bash benches/many.sh [N]` (50 by default) starts N
# bottles together, each running one request through its own egress to a test origin on the
# host (reached as `host-gateway`, i.e. docker0's address, never anything else), and reports:
# successes, bring-up time (from `bottle run` to the agent's command starting) and whole-run
# time at p50/p95, the peak memory of the bottles' containers (sampled with `docker stats`),
# and what was left behind. Needs bottle-base/bottle-agent (tests/images/build-base.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
cargo build --release -q -p bottle
cargo build --release -q -p bottle-egress --features testing --example bench
bin=$PWD/target/release/bottle
load_bin=$PWD/target/release/examples/bench
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export BOTTLE_STATE_DIR=$work/state BOTTLE_CACHE_DIR=$work/cache XDG_CONFIG_HOME=$work/config
run_id=many$$

# The origin, on docker0's address only: what `host-gateway` names for the bundles.
gw=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
[ -n "$gw" ] || gw=$(ip -4 -o addr show docker0 | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
"$load_bin" origin "$work" "$gw" origin.test > "$work/origin.out" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/origin.out" ] && break; sleep 0.1; done
read -r _ https_kv < "$work/origin.out"
port=${https_kv#https=}
mkdir -p "$work/project/agents"
cat > "$work/project/agents/many.yaml" <<YAML
image: bottle-agent:latest
cwd: none
egress:
  default_allowlist: false
  hosts: {origin.test: host-gateway}
  upstream_ca: $work/origin-ca.pem
  routes:
    - host: origin.test
YAML
cd "$work/project"
"$bin" run many --yes --slug "$run_id-warm" -- true </dev/null >/dev/null 2>&1   # the bundle image, once

# Peak memory of every container bottle runs (the sum of their cgroups' usage), sampled until
# the runs end.
python3 - "$work" <<'PY' &
import os, subprocess, sys, time
work = sys.argv[1]
def usage(cid):
    for path in (f"/sys/fs/cgroup/memory/docker/{cid}/memory.usage_in_bytes",
                 f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.current",
                 f"/sys/fs/cgroup/docker/{cid}/memory.current"):
        try:
            return int(open(path).read())
        except OSError:
            pass
    return 0
peak = 0
while not os.path.exists(f"{work}/done"):
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", "label=io.bottle.slug"],
                         capture_output=True, text=True).stdout.split()
    peak = max(peak, sum(usage(i) for i in ids))
    with open(f"{work}/peak.tmp", "w") as f:
        f.write(str(peak))
    os.replace(f"{work}/peak.tmp", f"{work}/peak")
    time.sleep(0.2)
PY
sampler=$!
pids+=($sampler)

url=https://origin.test:$port/echo
start=$(date +%s%N)
for i in $(seq "$n"); do
    (
        t0=$(date +%s%N)
        set +e
        "$bin" run many --yes --slug "$run_id-$i" -- sh -c "date +%s%N; curl -sf -o /dev/null -w '%{http_code}' $url" \
            </dev/null >"$work/out.$i" 2>"$work/err.$i"
        echo "$? $t0 $(date +%s%N)" > "$work/rc.$i"
    ) &
done
# Each run's subshell writes its rc file last; a run still going after ten minutes is a failure.
deadline=$(( $(date +%s) + 600 ))
for i in $(seq "$n"); do
    while [ ! -s "$work/rc.$i" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    [ -s "$work/rc.$i" ] || echo "124 $start $(date +%s%N)" > "$work/rc.$i"
done
touch "$work/done"
wait "$sampler" 2>/dev/null || true
wall=$(( ($(date +%s%N) - start) / 1000000 ))

leftovers=$( (docker ps -aq --filter "label=io.bottle.slug"; docker network ls -q --filter "label=io.bottle.slug"; \
    docker volume ls -q --filter "label=io.bottle.slug") | while read -r id; do
        docker inspect -f '{{index .Config.Labels "io.bottle.slug"}}{{index .Labels "io.bottle.slug"}}' "$id" 2>/dev/null
    done | grep -c "^$run_id-" || true)

python3 - "$work" "$n" "$wall" "$(cat "$work/peak" 2>/dev/null || echo 0)" "$leftovers" <<'PY'
import sys
work, n, wall, peak, leftovers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ok, up, total, failed = 0, [], [], []
for i in range(1, n + 1):
    rc, t0, t1 = (int(x) for x in open(f"{work}/rc.{i}").read().split())
    out = open(f"{work}/out.{i}").read().split()
    total.append((t1 - t0) / 1e6)
    if out and out[0].isdigit():
        up.append((int(out[0]) - t0) / 1e6)
    if rc == 0 and out[-1:] == ["200"]:
        ok += 1
    else:
        err = open(f"{work}/err.{i}").read().strip().splitlines()
        failed.append(f"  #{i}: exit {rc}: {err[-1] if err else '(no output)'}")
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")
print(f"bottles at once:        {n}")
print(f"succeeded:              {ok}/{n}")
print(f"bring-up (run -> agent's command) p50/p95: {pct(up, 50):.0f} / {pct(up, 95):.0f} ms")
print(f"whole run (up, request, down)     p50/p95: {pct(total, 50):.0f} / {pct(total, 95):.0f} ms")
print(f"wall time for all:      {wall} ms")
print(f"peak memory of the bottles' containers: {peak / 2**20:.0f} MiB")
print(f"leftovers:              {leftovers}")
for f in failed[:10]:
    print(f)
goal = ok == n and leftovers == 0
print(f"goal ({n}/{n} succeed, 0 leftovers): {'met' if goal else 'NOT met'}")
PY
"$bin" cleanup --yes >/dev/null 2>&1 || true
