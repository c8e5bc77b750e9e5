#!/usr/bin/env bash
# What each way of wiring a bottle costs the engine, nothing of bottle's: the engine's API by
# curl, interleaved rounds, each topology's mean as a ratio to a bare
# `docker run --rm --network none bottle-agent:latest true`. A round creates the two containers
# at once, starts them at once, waits for the agent's `true`, kills the other, removes both.
#   agent-net:     the agent on an internal network, the bundle on it and on a shared way out
#                  (what bottle's docker backend does when a sidecar not of bottle's own needs
#                  the agent's network)
#   agent-none:    the agent on no network, the bundle on the shared way out only (the agent's
#                  listeners handed to the bundle's daemons as sockets: what bottle's docker
#                  backend does for its own daemons; benches/up_down.sh's floor)
#   both-none:     neither on a network (the engine's floor for two containers)
#   one-internal:  the agent alone, on the internal network
#   one-none:      the agent alone, on no network (docker run's work by the API)
# Needs bottle-agent (tests/images/build-base.sh). RUNS=5 by default.
set -euo pipefail
runs=${RUNS:-5}
source "$(dirname "$0")/lib/engine-floor.sh"
now() { date +%s%N; }
internal=bench-topology-internal
shared=bench-topology-shared
gone() {
    floor_gone bench-topology
    for n in "$internal" "$shared"; do
        api -X DELETE "http://v1.41/networks/$n" >/dev/null 2>&1 || true
    done
}
gone # what an interrupted run left
trap gone EXIT
api -X POST http://v1.41/networks/create \
    -d "{\"Name\":\"$internal\",\"Internal\":true,\"Options\":{\"com.docker.network.bridge.inhibit_ipv4\":\"true\"}}" >/dev/null
api -X POST http://v1.41/networks/create \
    -d "{\"Name\":\"$shared\",\"Options\":{\"com.docker.network.bridge.enable_icc\":\"false\"}}" >/dev/null

pair() { floor_pair bench-topology "$@"; }
alone() { # NETWORK
    floor_container bench-topology-a "$1" '["true"]'
    api -X POST http://v1.41/containers/bench-topology-a/start >/dev/null
    api -X POST http://v1.41/containers/bench-topology-a/wait >/dev/null
    api -X DELETE "http://v1.41/containers/bench-topology-a?force=1" >/dev/null
}

names=(docker-run agent-net agent-none both-none one-internal one-none)
declare -A total
for n in "${names[@]}"; do total[$n]=0; done
timed() { # NAME COMMAND...
    local name=$1 t
    shift
    t=$(now)
    "$@" >/dev/null 2>&1
    total[$name]=$((total[$name] + $(now) - t))
}
docker run --rm --network none bottle-agent:latest true >/dev/null # warm the image's layers
for _ in $(seq "$runs"); do
    timed docker-run docker run --rm --network none bottle-agent:latest true
    timed agent-net pair "$internal" "$internal" "$shared"
    timed agent-none pair none "$shared"
    timed both-none pair none none
    timed one-internal alone "$internal"
    timed one-none alone none
done
base=$((total[docker-run] / runs))
printf '%-14s %8s %8s\n' topology ms ratio
for n in "${names[@]}"; do
    mean=$((total[$n] / runs))
    printf '%-14s %8d %8s\n' "$n" $((mean / 1000000)) "$(awk "BEGIN { printf \"%.2fx\", $mean / $base }")"
done
