#!/usr/bin/env python3
"""Validate Kubernetes manifests the way the API server would, without a cluster.

    python3 tests/data/k8s-validate.py [-k VERSION] FILE...

Every document of every file (multi-document YAML streams are split; empty documents are
skipped) is checked against the Kubernetes JSON schemas of `kubernetes-validate` (PyPI) in
strict mode, so an unknown field fails, and against the API server's rules the schemas leave
out (object names, label and annotation keys and values, port names, volume references,
ConfigMap and Secret keys, CIDRs). A kind the package has no schema for fails too: nothing
passes unchecked.

Prints one line per document, `PASS file#n Kind/name` or `FAIL file#n Kind/name: why`, and
exits 0 when every document passed, 1 when any failed, 2 on a usage error (no file, an
unreadable file or bad YAML, a version the package does not ship, the package missing).
"""

import argparse
import base64
import binascii
import ipaddress
import re
import sys

try:
    import yaml
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
except ImportError as e:
    sys.exit(f"k8s-validate: {e}; pip install kubernetes-validate")

# The version the manifests are validated against by default (kubernetes-validate has shipped
# its schemas since 2025; `-k` picks another, e.g. the newest it ships).
DEFAULT_VERSION = "1.33.0"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def subdomain(s):
    return isinstance(s, str) and len(s) <= 253 and bool(DNS1123_SUBDOMAIN.match(s))


def label(s):
    return isinstance(s, str) and len(s) <= 63 and bool(DNS1123_LABEL.match(s))


def qualified_key(key):
    """A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain."""
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if "/" in key and not subdomain(prefix):
        return False
    return len(name) <= 63 and bool(QUALIFIED_NAME.match(name))


def port_name(s):
    """IANA_SVC_NAME: at most 15 characters, lowercase alnum and `-`, a letter, no `--`."""
    return (
        isinstance(s, str)
        and len(s) <= 15
        and bool(IANA_SVC_NAME.match(s))
        and "--" not in s
        and any(c.isalpha() for c in s)
    )


def check_metadata(doc, problems):
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if doc.get("kind") == "Service":
        if not (isinstance(name, str) and len(name) <= 63 and DNS1035_LABEL.match(name)):
            problems.append(f"metadata.name {name!r} is no DNS-1035 label (a Service's name)")
    elif not subdomain(name):
        problems.append(f"metadata.name {name!r} is no DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        if not qualified_key(key):
            problems.append(f"label key {key!r} is invalid")
        if not (isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value)):
            problems.append(f"label {key}={value!r}: the value is invalid")
    for key in meta.get("annotations") or {}:
        if not qualified_key(key):
            problems.append(f"annotation key {key!r} is invalid")


def check_data(doc, problems):
    for field in ("data", "binaryData", "stringData"):
        for key, value in (doc.get(field) or {}).items():
            if not (
                len(key) <= 253
                and CONFIG_KEY.match(key)
                and key not in (".", "..")
                and not key.startswith("..")
            ):
                problems.append(f"{field} key {key!r} is invalid")
            base64_field = field == "binaryData" or (doc["kind"] == "Secret" and field == "data")
            if base64_field:
                try:
                    base64.b64decode(value or "", validate=True)
                except (binascii.Error, TypeError):
                    problems.append(f"{field}.{key} is not base64")


def check_service(doc, problems):
    ports = (doc.get("spec") or {}).get("ports") or []
    names = [p.get("name") for p in ports]
    if len(ports) > 1 and not all(names):
        problems.append("spec.ports: every port needs a name when there are several")
    for n in names:
        if n is not None and not port_name(n):
            problems.append(f"spec.ports: name {n!r} is no IANA service name")
    if len(set(names)) != len(names):
        problems.append("spec.ports: names repeat")
    numbers = [(p.get("port"), p.get("protocol", "TCP")) for p in ports]
    if len(set(numbers)) != len(numbers):
        problems.append("spec.ports: ports repeat")
    ip = (doc.get("spec") or {}).get("clusterIP")
    if ip not in (None, "None", ""):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            problems.append(f"spec.clusterIP {ip!r} is no IP address")


def check_pod(doc, problems):
    spec = doc.get("spec") or {}
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    for v in volumes:
        if not label(v):
            problems.append(f"volume name {v!r} is no DNS-1123 label")
    if len(set(volumes)) != len(volumes):
        problems.append("spec.volumes: names repeat")
    for alias in spec.get("hostAliases") or []:
        try:
            ipaddress.ip_address(alias.get("ip", ""))
        except ValueError:
            problems.append(f"hostAliases: {alias.get('ip')!r} is no IP address")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    for c in containers:
        where = f"container {c.get('name')!r}"
        if not label(c.get("name")):
            problems.append(f"{where}: the name is no DNS-1123 label")
        for p in c.get("ports") or []:
            if "name" in p and not port_name(p["name"]):
                problems.append(f"{where}: port name {p['name']!r} is no IANA service name")
        for e in c.get("env") or []:
            name = e.get("name")
            if not name or "=" in name:
                problems.append(f"{where}: env name {name!r} is invalid")
            if "value" in e and "valueFrom" in e:
                problems.append(f"{where}: env {name} has both value and valueFrom")
        paths = []
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append(f"{where}: volumeMount {m.get('name')!r} names no volume")
            sub = m.get("subPath")
            if sub is not None and (sub.startswith("/") or ".." in sub.split("/")):
                problems.append(f"{where}: subPath {sub!r} leaves the volume")
            paths.append(m.get("mountPath"))
        if len(set(paths)) != len(paths):
            problems.append(f"{where}: a mountPath repeats")


def check_network_policy(doc, problems):
    spec = doc.get("spec") or {}
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction) or []:
            for peer in rule.get(peers_key) or []:
                block = peer.get("ipBlock")
                if not block:
                    continue
                try:
                    cidr = ipaddress.ip_network(block.get("cidr", ""))
                    for ex in block.get("except") or []:
                        ex_net = ipaddress.ip_network(ex)
                        if ex_net.version != cidr.version or not ex_net.subnet_of(cidr):
                            problems.append(f"{direction}: except {ex} is not inside {cidr}")
                except ValueError as e:
                    problems.append(f"{direction}: {e}")


RULES = {
    "ConfigMap": check_data,
    "Secret": check_data,
    "Service": check_service,
    "Pod": check_pod,
    "NetworkPolicy": check_network_policy,
}


def validate(doc, version):
    """The problems of one document (empty when it passes)."""
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        return ["not a Kubernetes object (no kind or apiVersion)"]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(top)"
        return [f"{path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    problems = []
    check_metadata(doc, problems)
    rule = RULES.get(doc["kind"])
    if rule:
        rule(doc, problems)
    return problems


def documents(path):
    # Plain scalars starting with `=` (https://github.com/yaml/pyyaml/issues/89), as
    # kubernetes-validate's own loader reads them.
    yaml.SafeLoader.add_constructor("tag:yaml.org,2002:value", kv_utils.construct_value)
    with open(path, encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-k",
        "--kubernetes-version",
        default=DEFAULT_VERSION,
        help=f"the Kubernetes version to validate against (default {DEFAULT_VERSION}; "
        f"this kubernetes-validate ships up to {kv_utils.latest_version()})",
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args()
    version = args.kubernetes_version.lstrip("v")
    if version not in kv_utils.all_versions() and kv_utils.major_minor(version) not in {
        kv_utils.major_minor(v) for v in kv_utils.all_versions()
    }:
        print(
            f"k8s-validate: kubernetes-validate {kubernetes_validate.__version__} does not ship "
            f"Kubernetes {version} (newest: {kv_utils.latest_version()})",
            file=sys.stderr,
        )
        return 2

    failed = 0
    for path in args.files:
        try:
            docs = documents(path)
        except (OSError, yaml.YAMLError) as e:
            print(f"k8s-validate: {path}: {e}", file=sys.stderr)
            return 2
        checked = 0
        for n, doc in enumerate(docs, 1):
            if doc is None:
                continue
            checked += 1
            what = "?"
            if isinstance(doc, dict):
                what = f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
            problems = validate(doc, version)
            if problems:
                failed += 1
                print(f"FAIL {path}#{n} {what}: {'; '.join(problems)}")
            else:
                print(f"PASS {path}#{n} {what}")
        if checked == 0:
            failed += 1
            print(f"FAIL {path}: no documents")
    print(
        f"k8s-validate: Kubernetes {version} (strict), {failed} failed",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
