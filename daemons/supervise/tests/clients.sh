#!/usr/bin/env bash
# The MCP clients supervise's tests drive: the `mcp` package from PyPI, a current version and
# an older 1.x, each in its own venv under target/mcp-clients/ (seconds when they exist).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)/target/mcp-clients"
make() {
    local name=$1 spec=$2
    if "$root/$name/bin/python" -c 'import mcp' 2>/dev/null; then
        echo "$name: $("$root/$name/bin/python" -m pip show mcp 2>/dev/null | sed -n 's/^Version: //p')"
        return
    fi
    python3 -m venv "$root/$name"
    "$root/$name/bin/python" -m pip install -q --disable-pip-version-check "$spec"
    echo "$name: installed $spec"
}
make current 'mcp==2.3.0'
make v1 'mcp==1.30.0'
