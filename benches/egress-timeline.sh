#!/usr/bin/env bash
# Where one keep-alive request spends its time at one connection: egress and the byte relay
# under benches/egress.sh's load (same rig, same cores), their system calls traced with perf,
# and every request cut into six phases at the calls that bound them (each phase ends where
# the next begins, so they add up to one request's cycle):
#
#   request   the agent's request read begins -> the write to the origin begins (the proxy's work)
#   write->o  the write to the origin                  (the kernel's loopback path, waking the origin)
#   wait->o   that write done -> the answer read begins (the origin's turn, and the proxy waking)
#   answer    the answer read begins -> the write to the agent begins          (the proxy's work)
#   write->a  the write to the agent                                           (waking the load)
#   wait->a   that write done -> the next request read begins (the load's turn, the proxy waking)
#
#   bash benches/egress-timeline.sh          # needs perf (Debian: linux-perf), as root
#
# Prints the median of each phase in microseconds. The relay's two work phases are what copying
# costs; egress's less the relay's are egress's own work per request (parsing both ways,
# routing, DLP, the pooled client, TLS for https). Tracing adds a little to every call. Then
# what holding a request costs at one connection: the relay made to hold each read's bytes 2,
# 4 and 8 us (spinning: time spent, not the caches or calls real work would also cost),
# untraced, and the p50 that adds per microsecond held.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMUP=1
SECS=${SECS:-4}
# The traced second starts 1 s after the warm-up and must end before the load does.
[ "$SECS" -ge 3 ] || { echo "SECS is at least 3 (the traced second must fall inside the load)" >&2; exit 2; }
bench=.bench
mkdir -p "$bench"

step() { printf '\n== %s\n' "$*" >&2; }

command -v perf >/dev/null || { echo "needs perf (Debian: apt-get install linux-perf)" >&2; exit 2; }

source benches/lib/egress-rig.sh

step "egress (core $PROXY_CORE, one worker) and the relay"
start_egress egress --access-log off
start_relay relay
relay_pid=${RELAY_PID[relay]}
relay_port=${RELAY_PORT[relay]}

# trace NAME PID URL PROXY_PORT ORIGIN_PORT [load args...]: one connection of load for SECS,
# one second of it traced.
trace() {
    local name=$1 pid=$2 url=$3 proxy_port=$4 origin_port=$5; shift 5
    taskset -c 1 "$load_bin" load "$url" --connections 1 --seconds "$SECS" --warmup "$WARMUP" "$@" > "$tmp/$name.load" &
    local load=$!
    pids+=($load)
    sleep $((WARMUP + 1))
    # The proxy's two sockets while the load runs, by port: the one it accepted from the load,
    # the one it dialled.
    local agent_fd origin_fd
    agent_fd=$(ss -tnpH state established sport = ":$proxy_port" | grep -m1 -o "pid=$pid,fd=[0-9]*" | sed 's/.*fd=//') || true
    origin_fd=$(ss -tnpH state established dst "127.0.0.1:$origin_port" | grep -m1 -o "pid=$pid,fd=[0-9]*" | sed 's/.*fd=//') || true
    local calls=() c
    for c in recvfrom read sendto write writev; do
        calls+=(-e "syscalls:sys_enter_$c" -e "syscalls:sys_exit_$c")
    done
    perf record -q "${calls[@]}" -p "$pid" -o "$tmp/$name.perf" -- sleep 1 >"$tmp/perf.err" 2>&1 || {
        cat "$tmp/perf.err" >&2
        echo "perf could not trace system calls: run this as root" >&2
        exit 2
    }
    wait "$load"
    if [ -z "$agent_fd" ] || [ -z "$origin_fd" ]; then
        echo "$name: no connection of pid $pid from the load (port $proxy_port) or to the origin (port $origin_port) while traced" >&2
        ss -tnpH state established >&2
        exit 1
    fi
    perf script -i "$tmp/$name.perf" -F tid,time,event,trace --ns > "$tmp/$name.trace" 2>"$tmp/perf.err" || {
        cat "$tmp/perf.err" >&2
        exit 2
    }
    python3 - "$name ${url%%:*}" "$tmp/$name.trace" "$(sed 's/.*"p50_us":\([0-9]*\).*/\1/' "$tmp/$name.load")" "$agent_fd" "$origin_fd" <<'PY'
import re, statistics, sys
label, path, p50 = sys.argv[1], sys.argv[2], sys.argv[3]
agent, origin = int(sys.argv[4]), int(sys.argv[5])
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
        continue
    entered = open_.pop(tid, None)
    if entered is None or entered[0] != call:
        continue  # an event lost in between: this call is not counted
    ret = int(re.search(r"0x([0-9a-f]+)", rest).group(1), 16)
    if ret >= 1 << 63:
        ret -= 1 << 64  # the kernel prints the return value unsigned: -EAGAIN is 0xff..f5
    if ret > 0:
        calls.append(["r" if call in ("recvfrom", "read") else "w", entered[1], entered[2], t])
# Calls of one kind on one fd back to back (a TLS record read in two) count as one; with
# anything between them they stay apart, and the request they are in is not counted.
merged = []
for c in (c for c in calls if c[1] in (agent, origin)):
    if merged and merged[-1][:2] == c[:2] and c[2] - merged[-1][3] < 3:
        merged[-1][3] = c[3]
    else:
        merged.append(c)
want = [["r", agent], ["w", origin], ["r", origin], ["w", agent], ["r", agent]]
phases = {n: [] for n in ("request", "write->o", "wait->o", "answer", "write->a", "wait->a")}
i = 0
while i + 5 <= len(merged):
    w = merged[i:i + 5]
    if [x[:2] for x in w] != want:
        i += 1
        continue
    r1, wo, ro, wa, r2 = w
    cut = (r1[2], wo[2], wo[3], ro[2], wa[2], wa[3], r2[2])
    for n, a, b in zip(phases, cut, cut[1:]):
        phases[n].append(b - a)
    i += 4
n = len(phases["request"])
if n == 0:
    sys.exit(f"{label}: no request matched in {len(calls)} calls (agent fd {agent}, origin fd {origin})")
med = {k: statistics.median(v) for k, v in phases.items()}
print(f"{label:<14} {n:>6}" + "".join(f" {med[k]:>9.1f}" for k in phases) + f" {sum(med.values()):>7.1f} {p50:>8}")
PY
}

echo
echo "machine: $(nproc) cores, $(uname -sr); egress $("$egress_bin" --version) ($EGRESS_BUILD build)"
echo "one connection, keep-alive, origin answers 200 B; proxies on core $PROXY_CORE, origin and load on core 1; medians in us (traced)"
printf '%-14s %6s %9s %9s %9s %9s %9s %9s %7s %8s\n' proxy reqs request "write->o" "wait->o" answer "write->a" "wait->a" sum p50_load
egress_port=${EGRESS_ADDR[egress]##*:}
trace egress "${EGRESS_PID[egress]}" "http://127.0.0.1:$http_port/bytes/200" "$egress_port" "$http_port" --proxy "http://${EGRESS_ADDR[egress]}"
trace relay "$relay_pid" "http://127.0.0.1:$http_port/bytes/200" "$relay_port" "$http_port" --proxy "http://127.0.0.1:$relay_port"
trace egress "${EGRESS_PID[egress]}" "https://localhost:$https_port/bytes/200" "$egress_port" "$https_port" --proxy "http://${EGRESS_ADDR[egress]}" --cacert "$tmp/eca-cert.pem"
trace relay "$relay_pid" "https://localhost:$https_port/bytes/200" "$relay_port" "$https_port" --proxy "http://127.0.0.1:$relay_port" --cacert "$tmp/origin-ca.pem"
echo "  sum is the medians' sum; p50_load the load generator's p50 over its whole run (the traced second included)."

# What a proxy's time per request costs at one connection: the relay made to hold each read's
# bytes before passing them on. A small request and its 200 B answer are one read each way,
# so a request is held twice. One relay per hold, all on the proxies' core, loaded in turn
# for ROUNDS rounds so that drift hits every hold alike; the median of their p50s.
ROUNDS=${ROUNDS:-3}
echo
echo "the relay holding each read (two a request), untraced, http; median of $ROUNDS rounds of ${SECS}s each, in turn:"
printf '%-8s %10s %9s %22s\n' hold_us req/s p50_us "added p50 per us held"
holds=(0 2 4 8)
declare -A HELD_P50 HELD_RPS
for hold in "${holds[@]}"; do
    start_relay "held$hold" "$hold"
done
for _ in $(seq "$ROUNDS"); do
    for hold in "${holds[@]}"; do
        out=$(taskset -c 1 "$load_bin" load "http://127.0.0.1:$http_port/bytes/200" --connections 1 \
            --seconds "$SECS" --warmup "$WARMUP" --proxy "http://127.0.0.1:${RELAY_PORT[held$hold]}")
        HELD_RPS[$hold]+="$(sed 's/.*"rps":\([0-9]*\).*/\1/' <<<"$out") "
        HELD_P50[$hold]+="$(sed 's/.*"p50_us":\([0-9]*\).*/\1/' <<<"$out") "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
base=$(median "${HELD_P50[0]}")
for hold in "${holds[@]}"; do
    p50=$(median "${HELD_P50[$hold]}")
    per=$(awk -v h="$hold" -v p="$p50" -v b="$base" 'BEGIN { if (h > 0) printf "%.1f", (p - b) / (2 * h); else print "-" }')
    printf '%-8s %10s %9s %22s\n' "$hold" "$(median "${HELD_RPS[$hold]}")" "$p50" "$per"
done
