#!/usr/bin/env python3
"""Write src/supervise/psl_parents.txt: every domain (two labels or more) with a rule of the
Public Suffix List strictly below it (`amazonaws.com`: `s3.amazonaws.com` and hundreds more are
suffixes). A wildcard over one of them opens names anyone can register; see
`validate::host`. Made from the `psl` crate's own copy of the list, so it matches what
`psl::suffix` knows:

    python3 core/contract/tools/psl_parents.py ~/.cargo/registry/src/*/psl-VERSION/data/rules.txt

Run it again when Cargo.lock's psl changes (a test compares the versions).
"""
import pathlib
import re
import sys

rules_path = pathlib.Path(sys.argv[1])
version = re.search(r"psl-([0-9.]+)", str(rules_path.resolve()))
if not version:
    sys.exit("give the rules.txt of an unpacked psl-VERSION crate")
parents = set()
for line in rules_path.read_text(encoding="utf-8").splitlines():
    line = line.strip()
    if not line or line.startswith("//"):
        continue
    rule = line.split()[0].lstrip("!")
    if rule.startswith("*."):
        rule = rule[2:]
    rule = rule.encode("idna").decode() if not rule.isascii() else rule
    labels = rule.lower().split(".")
    for i in range(1, len(labels) - 1):
        parents.add(".".join(labels[i:]))
out = pathlib.Path(__file__).resolve().parent.parent / "src/supervise/psl_parents.txt"
out.write_text(
    f"# psl {version.group(1)}: domains with a public suffix below them (tools/psl_parents.py)\n"
    + "".join(p + "\n" for p in sorted(parents))
)
print(f"{out}: {len(parents)} domains")
