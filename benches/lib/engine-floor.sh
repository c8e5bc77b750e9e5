# The engine's floor for a bottle, by its API with curl and nothing of bottle's (sourced, not
# run): `api ARGS...` (one curl on the engine's local socket), `floor_pair PREFIX AGENT_NET
# BUNDLE_NET [ALSO_NET]`: as bottle's docker backend brings a bottle up and down, two
# containers PREFIX-a (the agent, `true` as its process) and PREFIX-b (the bundle) created at
# once, the bundle joined to ALSO_NET too when given, both started at once, the agent's end
# awaited, the bundle killed, both removed; `floor_gone PREFIX` removes what a cut-short
# round left.
case "${DOCKER_HOST:-}" in
unix://*) engine_socket=${DOCKER_HOST#unix://} ;;
*) engine_socket=/var/run/docker.sock ;;
esac
api() { curl -sf --unix-socket "$engine_socket" -H 'Content-Type: application/json' "$@"; }

floor_container() { # NAME NETWORK COMMAND-JSON
    api -X POST "http://v1.41/containers/create?name=$1" \
        -d "{\"Image\":\"bottle-agent:latest\",\"Cmd\":$3,\"HostConfig\":{\"NetworkMode\":\"$2\"}}" >/dev/null
}

floor_pair() { # PREFIX AGENT_NET BUNDLE_NET [ALSO_NET]
    local a=$1-a b=$1-b
    floor_container "$a" "$2" '["true"]' &
    floor_container "$b" "$3" '["sleep","infinity"]'
    if [ -n "${4:-}" ]; then
        api -X POST "http://v1.41/networks/$4/connect" -d "{\"Container\":\"$b\"}" >/dev/null
    fi
    wait
    api -X POST "http://v1.41/containers/$a/start" >/dev/null &
    api -X POST "http://v1.41/containers/$b/start" >/dev/null
    wait
    api -X POST "http://v1.41/containers/$a/wait" >/dev/null
    api -X POST "http://v1.41/containers/$b/kill" >/dev/null
    api -X DELETE "http://v1.41/containers/$a?force=1" >/dev/null &
    api -X DELETE "http://v1.41/containers/$b?force=1" >/dev/null
    wait
}

floor_gone() { # PREFIX
    api -X DELETE "http://v1.41/containers/$1-a?force=1" >/dev/null 2>&1 || true
    api -X DELETE "http://v1.41/containers/$1-b?force=1" >/dev/null 2>&1 || true
}
