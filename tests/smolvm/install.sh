#!/usr/bin/env bash
# The smolvm engine the smolmachines tests drive: the PyPI wheel smolmachines (pinned), in a
# venv under target/ (no Docker, no registry needed). Seconds when it is there already.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/smolvm-venv
version=1.32.2
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('smolmachines') != '$version')" 2>/dev/null; then
    exit 0
fi
mkdir -p target
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "smolmachines==$version"
ls "$venv"/lib/python3*/site-packages/smol/smol-vmm >/dev/null
