#!/usr/bin/env bash
# Where one keep-alive request spends its time at one connection: egress and the byte relay
# under benches/egress.sh's load (same rig, same cores), their system calls traced with perf,
# and every request cut into six phases by the calls that bound them:
#
#   request   the agent's request read -> its write to the origin begins   (the proxy's work)
#   write->o  the write to the origin                                      (the kernel's loopback
#                                                                           path, waking the origin)
#   origin    that write done -> the answer read                           (the origin's turn)
#   answer    the answer read -> its write to the agent begins             (the proxy's work)
#   write->a  the write to the agent                                       (waking the load)
#   agent     that write done -> the next request read                     (the load's turn)
#
#   bash benches/egress-timeline.sh          # needs perf (Debian: linux-perf) and root
#
# Prints the median of each phase in microseconds. The relay's two work phases are what copying
# costs; egress's less the relay's are egress's own work per request (parsing both ways,
# routing, DLP, the pooled client, TLS for https). Tracing adds a little to every call, so the
# phases add up to more than the untraced loop's time that egress.sh prints. Then what holding
# a request costs at one connection, whatever the work: the relay made to hold each read's
# bytes 2, 4 and 8 us, untraced, and the p50 that adds per microsecond held.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMUP=1
SECS=${SECS:-4}
bench=.bench
mkdir -p "$bench"

step() { printf '\n== %s\n' "$*" >&2; }

command -v perf >/dev/null || { echo "needs perf (Debian: apt-get install linux-perf)" >&2; exit 2; }

source benches/lib/egress-rig.sh

step "egress (core $PROXY_CORE, one worker) and the relay"
start_egress egress --access-log off
taskset -c "$PROXY_CORE" "$load_bin" relay > "$tmp/relay.out" &
relay_pid=$!
pids+=($relay_pid)
for _ in $(seq 50); do [ -s "$tmp/relay.out" ] && break; sleep 0.1; done
relay_port=$(sed 's/relay=//' "$tmp/relay.out")

# trace NAME PID URL ORIGIN_PORT [load args...]: one connection of load for SECS, one second
# of it traced.
trace() {
    local name=$1 pid=$2 url=$3 port=$4; shift 4
    taskset -c 1 "$load_bin" load "$url" --connections 1 --seconds "$SECS" --warmup "$WARMUP" "$@" > "$tmp/$name.load" &
    local load=$!
    sleep $((WARMUP + 1))
    local calls=() c
    for c in recvfrom read sendto write writev; do
        calls+=(-e "syscalls:sys_enter_$c" -e "syscalls:sys_exit_$c")
    done
    perf record -q "${calls[@]}" -p "$pid" -o "$tmp/$name.perf" -- sleep 1 >"$tmp/perf.err" 2>&1 || {
        cat "$tmp/perf.err" >&2
        echo "perf could not trace system calls: it needs root (or kernel.perf_event_paranoid=-1)" >&2
        exit 2
    }
    # The proxy's socket to the origin, told apart from the agent's by the port it dialled.
    local origin_fd
    origin_fd=$(ss -tnpH state established dst "127.0.0.1:$port" | grep -o "pid=$pid,fd=[0-9]*" | head -1 | sed 's/.*fd=//')
    wait "$load"
    perf script -i "$tmp/$name.perf" -F tid,time,event,trace --ns 2>/dev/null > "$tmp/$name.trace"
    python3 - "$name ${url%%:*}" "$tmp/$name.trace" "$(sed 's/.*"p50_us":\([0-9]*\).*/\1/' "$tmp/$name.load")" "$origin_fd" <<'PY'
import re, statistics, sys
label, path, p50, origin = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls, open_ = [], {}
for line in open(path):
    m = re.match(r"\s*(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)", line)
    if not m:
        continue
    tid, t, edge, call, rest = m.groups()
    t = float(t) * 1e6
    if edge == "enter":
        fd = re.search(r"fd: (0x[0-9a-f]+)", rest)
        open_[tid] = (call, int(fd.group(1), 16) if fd else -1, t)
    elif tid in open_:
        call, fd, start = open_.pop(tid)
        ret = int(re.search(r"(-?0x[0-9a-f]+|-?\d+)", rest).group(1), 0)
        if ret > 0:
            calls.append(("r" if call in ("recvfrom", "read") else "w", fd, start, t))
# The agent's fd is the one most often read right before a write to the origin.
before = {}
for a, b in zip(calls, calls[1:]):
    if a[0] == "r" and b[:2] == ("w", origin) and a[1] != origin:
        before[a[1]] = before.get(a[1], 0) + 1
agent = max(before, key=before.get)
# Consecutive calls of one kind on one fd (a TLS record read in two) count as one.
merged = []
for k, fd, s, e in (c for c in calls if c[1] in (agent, origin)):
    if merged and merged[-1][:2] == (k, fd):
        merged[-1][3] = e
    else:
        merged.append([k, fd, s, e])
want = [("r", agent), ("w", origin), ("r", origin), ("w", agent), ("r", agent)]
phases = {n: [] for n in ("request", "write->o", "origin", "answer", "write->a", "agent")}
i = 0
while i + 5 <= len(merged):
    w = merged[i:i + 5]
    if [tuple(x[:2]) for x in w] != want:
        i += 1
        continue
    r1, wo, ro, wa, r2 = w
    for n, v in zip(phases, (wo[2] - r1[3], wo[3] - wo[2], ro[3] - wo[3], wa[2] - ro[3], wa[3] - wa[2], r2[2] - wa[3])):
        phases[n].append(v)
    i += 4
med = {n: statistics.median(v) for n, v in phases.items()}
print(f"{label:<14} {len(phases['request']):>6}" + "".join(f" {med[n]:>9.1f}" for n in phases) + f" {sum(med.values()):>7.1f} {p50:>8}")
PY
}

echo
echo "machine: $(nproc) cores, $(uname -sr); egress $("$egress_bin" --version) ($EGRESS_BUILD build)"
echo "one connection, keep-alive, origin answers 200 B; proxies on core $PROXY_CORE, origin and load on core 1; medians in us (traced)"
printf '%-14s %6s %9s %9s %9s %9s %9s %9s %7s %8s\n' proxy reqs request "write->o" origin answer "write->a" agent sum p50_load
trace egress "${EGRESS_PID[egress]}" "http://127.0.0.1:$http_port/bytes/200" "$http_port" --proxy "http://${EGRESS_ADDR[egress]}"
trace relay "$relay_pid" "http://127.0.0.1:$http_port/bytes/200" "$http_port" --proxy "http://127.0.0.1:$relay_port"
trace egress "${EGRESS_PID[egress]}" "https://localhost:$https_port/bytes/200" "$https_port" --proxy "http://${EGRESS_ADDR[egress]}" --cacert "$tmp/eca-cert.pem"
trace relay "$relay_pid" "https://localhost:$https_port/bytes/200" "$https_port" --proxy "http://127.0.0.1:$relay_port" --cacert "$tmp/origin-ca.pem"
echo "  p50_load is the load generator's p50 over the whole run (the traced second included)."

# What a proxy's own work costs at one connection, whatever the work: the relay made to hold
# each read's bytes (twice a request: the request, the answer) before passing them on.
echo
echo "the relay holding each read (two a request), untraced, http:"
printf '%-14s %10s %9s %22s\n' hold_us req/s p50_us "added p50 per us held"
base=
for hold in 0 2 4 8; do
    taskset -c "$PROXY_CORE" "$load_bin" relay "$hold" > "$tmp/held$hold.out" &
    pids+=($!)
    for _ in $(seq 50); do [ -s "$tmp/held$hold.out" ] && break; sleep 0.1; done
    out=$(taskset -c 1 "$load_bin" load "http://127.0.0.1:$http_port/bytes/200" --connections 1 --seconds "$SECS" --warmup "$WARMUP" \
        --proxy "http://127.0.0.1:$(sed 's/relay=//' "$tmp/held$hold.out")")
    rps=$(sed 's/.*"rps":\([0-9]*\).*/\1/' <<<"$out")
    p50=$(sed 's/.*"p50_us":\([0-9]*\).*/\1/' <<<"$out")
    base=${base:-$p50}
    per=$(awk -v h="$hold" -v p="$p50" -v b="$base" 'BEGIN { if (h > 0) printf "%.1f", (p - b) / (2 * h); else print "-" }')
    printf '%-14s %10s %9s %22s\n' "$hold" "$rps" "$p50" "$per"
done
