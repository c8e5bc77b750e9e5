# The rig the egress benchmarks share (sourced, not run): the builds (see EGRESS_BUILD), a test origin on
# core 1, a routes file with a token route (`localhost`) and a token-less one (`127.0.0.1`),
# egress's CA, `start_egress NAME ARGS...` (core $PROXY_CORE, one worker; sets EGRESS_PID[NAME]
# and EGRESS_ADDR[NAME]), `start_relay NAME [HOLD_US]` (likewise RELAY_PID and RELAY_PORT) and
# `row NAME PID URL CONNS [load args...]`, which prints one row and records
# RPS[NAME-SCHEME-CONNS] and P50[...]. Expects `step`, WARMUP, SECS and $bench.

# EGRESS_BUILD=shipped (the default) measures egress as bottle embeds it in the bundle: the
# `bundle` profile as the workspace defines it (CI's lighter CARGO_PROFILE_BUNDLE_* are unset),
# static (musl). EGRESS_BUILD=release measures a glibc release build instead, as earlier runs did.
EGRESS_BUILD=${EGRESS_BUILD:-shipped}
# PROXY_CORE=1 runs the proxies on core 1 too, beside the origin and the load generator: at one
# connection every hop then wakes a process on its own core, not one across cores (on this
# VM, a cross-core wake-up costs more than egress's own work per request).
PROXY_CORE=${PROXY_CORE:-0}
step "build (egress: $EGRESS_BUILD; the load generator and the origin: release)"
cargo build -q --release -p bottle-egress --features testing --example bench
load_bin=target/release/examples/bench
case "$EGRESS_BUILD" in
shipped)
    musl="$(uname -m)-unknown-linux-musl"
    env -u CARGO_PROFILE_BUNDLE_OPT_LEVEL -u CARGO_PROFILE_BUNDLE_LTO -u CARGO_PROFILE_BUNDLE_CODEGEN_UNITS \
        cargo build -q --profile bundle --target "$musl" -p bottle-egress --bin bottle-egress
    egress_bin=target/$musl/bundle/bottle-egress ;;
release)
    cargo build -q --release -p bottle-egress --bin bottle-egress
    egress_bin=target/release/bottle-egress ;;
*) echo "EGRESS_BUILD is shipped or release, not $EGRESS_BUILD" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

step "origin (core 1)"
taskset -c 1 "$load_bin" origin "$tmp" > "$tmp/origin.out" &
pids+=($!)
for _ in $(seq 50); do [ -s "$tmp/origin.out" ] && break; sleep 0.1; done
read -r http_kv https_kv < "$tmp/origin.out"
http_port=${http_kv#http=}
https_port=${https_kv#https=}

token="bench-token-0123456789abcdef"
cat > "$tmp/routes.yaml" <<EOF
routes:
- host: localhost
  auth_scheme: Bearer
  token_env: EGRESS_TOKEN_0
- host: 127.0.0.1
hosts:
  localhost: 127.0.0.1
  127.0.0.1: 127.0.0.1
EOF

# The CA egress signs with, as bottle writes it: a SEC1 P-256 key, then the certificate.
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/eca-key.pem"
openssl req -x509 -new -key "$tmp/eca-key.pem" -days 2 -subj "/CN=bench egress CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -out "$tmp/eca-cert.pem" 2>/dev/null
cat "$tmp/eca-key.pem" "$tmp/eca-cert.pem" > "$tmp/eca-bundle.pem"

declare -A EGRESS_PID EGRESS_ADDR
# start_egress NAME [egress args...]: egress on core $PROXY_CORE with one worker, stdout to $tmp/NAME.out.
start_egress() {
    local name=$1; shift
    EGRESS_TOKEN_0=$token TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" "$egress_bin" \
        --listen 127.0.0.1:0 --routes "$tmp/routes.yaml" --ca "$tmp/eca-bundle.pem" \
        --upstream-ca "$tmp/origin-ca.pem" "$@" > "$tmp/$name.out" 2>&1 &
    EGRESS_PID[$name]=$!
    pids+=($!)
    for _ in $(seq 50); do grep -q 'listening on' "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
    EGRESS_ADDR[$name]=$(grep -o 'listening on [0-9.:]*' "$tmp/$name.out" | awk '{print $3}')
}

declare -A RELAY_PID RELAY_PORT
# start_relay NAME [HOLD_US]: the byte relay (`bench relay`) on core $PROXY_CORE, holding each
# read HOLD_US if given; sets RELAY_PID[NAME] and RELAY_PORT[NAME].
start_relay() {
    local name=$1; shift
    taskset -c "$PROXY_CORE" "$load_bin" relay "$@" > "$tmp/relay-$name.out" &
    RELAY_PID[$name]=$!
    pids+=($!)
    for _ in $(seq 50); do [ -s "$tmp/relay-$name.out" ] && break; sleep 0.1; done
    RELAY_PORT[$name]=$(sed 's/relay=//' "$tmp/relay-$name.out")
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

# run NAME PID URL CONNS [proxy args...] -> prints a row and records rps/p50
declare -A RPS P50 BODY_P50
row() {
    local name=$1 pid=$2 url=$3 conns=$4; shift 4
    local before after out
    before=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    out=$(taskset -c 1 "$load_bin" load "$url" --connections "$conns" --seconds "$SECS" --warmup "$WARMUP" "$@")
    after=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    local reqs rps p50 p99 cpu
    reqs=$(sed 's/.*"requests":\([0-9]*\).*/\1/' <<<"$out")
    rps=$(sed 's/.*"rps":\([0-9]*\).*/\1/' <<<"$out")
    p50=$(sed 's/.*"p50_us":\([0-9]*\).*/\1/' <<<"$out")
    p99=$(sed 's/.*"p99_us":\([0-9]*\).*/\1/' <<<"$out")
    # CPU over warm-up and run together, divided by the measured requests: an upper bound.
    cpu=$(awk -v d=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { if (n > 0 && d > 0) printf "%.4f", d * 1000 / hz / n; else print "-" }')
    printf '%-8s %-6s %5s %10s %9s %9s %12s\n' "$name" "${url%%:*}" "$conns" "$rps" "$p50" "$p99" "$cpu"
    RPS[$name-${url%%:*}-$conns]=$rps
    P50[$name-${url%%:*}-$conns]=$p50
}
