#!/usr/bin/env bash
# Builds the Debian base image bottle's images and tests use, offline from a registry:
# debootstrap from Debian's package mirror, then `docker import`. Also builds the example agent
# image on it. Re-running when the images exist takes seconds.
#
#   bash tests/images/build-base.sh            # bottle-base:latest and bottle-agent:latest
#   FORCE=1 bash tests/images/build-base.sh    # rebuild both
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${BOTTLE_BASE_IMAGE:-bottle-base:latest}
agent=${BOTTLE_AGENT_IMAGE:-bottle-agent:latest}
suite=${SUITE:-bookworm}
# python3 and its venv: an agent's everyday tools (a venv's pip, a urllib client) are tried in
# the box by the tests.
packages=git,openssh-client,curl,ca-certificates,netcat-openbsd,procps,iproute2,python3,python3-venv,python3-pip
# What the images are made of: an image built from another recipe is rebuilt.
recipe=$(printf '%s %s\n' "$suite" "$packages" | sha256sum | cut -c1-16)

have() {
    [ "$(docker image inspect -f '{{index .Config.Labels "io.bottle.recipe"}}' "$1" 2>/dev/null)" = "$recipe" ]
}

if [ -z "${FORCE:-}" ] && have "$base"; then
    echo "$base exists"
else
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    }
    # The mirror apt already uses (the only package source these machines reach).
    sources=$(find /etc/apt -maxdepth 2 \( -name '*.list' -o -name '*.sources' \) -type f 2>/dev/null)
    mirror=$(cat $sources /dev/null | grep -oE '^(deb|URIs:)[^#]*https?://[^ ]+' \
        | grep -oE 'https?://[^ ]+' | grep -vE 'security|updates' | head -1 || true)
    mirror=${MIRROR:-${mirror:-http://deb.debian.org/debian}}
    root=$(mktemp -d)
    trap 'rm -rf "$root" "$root.log"' EXIT
    echo "debootstrap $suite from $mirror (minbase + $packages)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" > "$root.log" 2>&1 \
        || { tail -20 "$root.log"; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' -c "LABEL io.bottle.recipe=$recipe" \
        -m "bottle base: debootstrap $suite" - "$base" >/dev/null
    echo "built $base"
fi

if [ -z "${FORCE:-}" ] && have "$agent"; then
    echo "$agent exists"
else
    docker build -q -t "$agent" --build-arg "BASE=$base" "$here/agent" >/dev/null
    echo "built $agent"
fi
