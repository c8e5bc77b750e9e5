#!/usr/bin/env bash
# What the audit ledger costs egress: req/s at 16 connections with egress's access log on (the
# ledger's source: one JSON line per request, written to a file as the bundle's init collects
# it) against the same egress with it off, side by side in one run, on loopback only.
#
#   bash benches/ledger.sh                  # ROUNDS=3 WARMUP=2 SECS=6 by default
#
# Both egresses run at once on core 0 with one worker each, and are loaded in turn (off, on,
# off, on, ...) by the load generator on core 1, so drift hits both alike. Goal (the ledger
# issue): with the log on, egress keeps >= 95% of its req/s at c=16.
set -euo pipefail
cd "$(dirname "$0")/.."
WARMUP=${WARMUP:-2}
SECS=${SECS:-6}
ROUNDS=${ROUNDS:-3}
bench=.bench
mkdir -p "$bench"

step() { printf '\n== %s\n' "$*" >&2; }

source benches/lib/egress-rig.sh

step "egress with the access log off, and with it on"
start_egress off --access-log off
start_egress on --access-log json

echo
echo "machine: $(nproc) cores, $(uname -sr); egress $("$egress_bin" --version)"
echo "each row: ${WARMUP}s warm-up, ${SECS}s measured, 16 connections, keep-alive; origin answers 200 B"
printf '%-8s %-6s %5s %10s %9s %9s %12s\n' egress scheme conns req/s p50_us p99_us cpu_ms/req
declare -A SUM
for round in $(seq "$ROUNDS"); do
    for log in off on; do
        pid=${EGRESS_PID[$log]}
        addr=${EGRESS_ADDR[$log]}
        row "$log" "$pid" "http://127.0.0.1:$http_port/bytes/200" 16 --proxy "http://$addr"
        SUM[$log-http]=$(( ${SUM[$log-http]:-0} + ${RPS[$log-http-16]} ))
        row "$log" "$pid" "https://localhost:$https_port/bytes/200" 16 --proxy "http://$addr" --cacert "$tmp/eca-cert.pem"
        SUM[$log-https]=$(( ${SUM[$log-https]:-0} + ${RPS[$log-https-16]} ))
    done
done
lines=$(grep -c '"decision"' "$tmp/on.out" || true)

echo
echo "goal (the ledger issue): the access log the ledger is built from costs < 5% of req/s at c=16"
for scheme in http https; do
    awk -v on="${SUM[on-$scheme]}" -v off="${SUM[off-$scheme]}" -v s="$scheme" -v r="$ROUNDS" 'BEGIN {
        printf "  %s c=16: log on / log off = %.3f (mean of %d rounds: %d vs %d req/s; goal >= 0.95)\n",
            s, on / off, r, on / r, off / r }'
done
echo "  (egress wrote $lines access-log lines in the run with the log on)"
