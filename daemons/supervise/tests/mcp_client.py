"""A third-party MCP client (the `mcp` package from PyPI, 1.x or 2.x) against bottle-supervise.

usage: mcp_client.py modes                      # the connect modes this mcp version has
       mcp_client.py check URL QUEUE_DIR MODE   # the whole conversation, decisions included
       mcp_client.py flood URL QUEUE_DIR MODE   # requests until the rate limit answers

Prints one line per check; exits non-zero on the first failure.
"""
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import urllib.request

import mcp

V2 = hasattr(mcp, "Client")


def modes():
    return ["legacy", "2026-07-28"] if V2 else ["default"]


@contextlib.asynccontextmanager
async def session(url, mode):
    """A connected client: (object with list_tools/call_tool, protocol version)."""
    if V2:
        async with mcp.Client(url, mode=mode) as c:
            yield c, c.protocol_version
    else:
        from mcp.client.streamable_http import streamablehttp_client
        async with streamablehttp_client(url) as (read, write, _):
            async with mcp.ClientSession(read, write) as s:
                init = await s.initialize()
                yield s, init.protocolVersion


def decide(queue, id_, decision, note=""):
    """What the host CLI writes: a whole file, renamed into place."""
    d = os.path.join(queue, "decisions")
    tmp = os.path.join(d, f".{id_}.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"id": id_, "decision": decision, "note": note, "applied": decision == "approved",
                   "decided": "2026-01-01T00:00:00Z"}, f)
    os.rename(tmp, os.path.join(d, f"{id_}.json"))


def is_error(result):
    """`isError` in 1.x, `is_error` in 2.x."""
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))


def body(result):
    assert not is_error(result), result
    return json.loads(result.content[0].text)


async def call(s, name, args):
    return await s.call_tool(name, args)


async def check(url, queue, mode):
    async with session(url, mode) as (s, version):
        print("connected", mode, version)
        names = sorted(t.name for t in (await s.list_tools()).tools)
        assert names == ["list_access", "request_host_access", "request_route", "request_status"], names
        print("tools", ",".join(names))

        r = body(await call(s, "request_host_access", {"host": "PyPI.org", "reason": "pip install\x1b[2J requests"}))
        assert r["status"] == "pending" and r["host"] == "pypi.org", r
        assert f"bottle approve {r['id']}" in r["next"], r
        with open(os.path.join(queue, "pending", r["id"] + ".json")) as f:
            queued = json.load(f)
        assert "\x1b" not in queued["reason"], queued
        print("pending", r["id"])

        # The human answers while request_status waits.
        threading.Timer(0.5, decide, (queue, r["id"], "approved")).start()
        started = time.monotonic()
        st = body(await call(s, "request_status", {"id": r["id"]}))
        assert st["status"] == "approved", st
        print("approved while waiting", round(time.monotonic() - started, 1))

        r2 = body(await call(s, "request_route", {"host": "api.github.com", "path_prefix": "/repos/org/", "reason": "read issues"}))
        decide(queue, r2["id"], "rejected", "use the local copy")
        st = body(await call(s, "request_status", {"id": r2["id"]}))
        assert st["status"] == "rejected" and st["note"] == "use the local copy", st
        print("rejected", st["id"])

        bad = await call(s, "request_host_access", {"host": "10.0.0.1", "reason": "x"})
        assert is_error(bad) and "not an IP address" in bad.content[0].text, bad
        # DLP on the free text: a token (built here, never a literal) wrapped in base64.
        import base64
        token = "ghp" + "_" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0UvWxYz"
        wrapped = base64.b64encode(("use " + token).encode()).decode()
        bad = await call(s, "request_host_access", {"host": "pypi.org", "reason": "need it: " + wrapped})
        assert is_error(bad) and "reason carries github-pat" in bad.content[0].text, bad
        assert token not in bad.content[0].text and wrapped not in bad.content[0].text, bad
        label = base64.b32encode(token.encode()).decode().rstrip("=").lower()[:40]
        bad = await call(s, "request_host_access", {"host": label + ".example.com", "reason": "x"})
        assert is_error(bad) and "host name carries" in bad.content[0].text, bad
        # A URL on another host would show the human one name while the grant opens another.
        bad = await call(s, "request_host_access", {"host": "files-pythonhosted.org", "reason": "pip",
                                                    "failed_url": "https://files.pythonhosted.org/p/x.whl"})
        assert is_error(bad) and "is not a URL on files-pythonhosted.org" in bad.content[0].text, bad
        bad = await call(s, "request_host_access", {"host": "*.amazonaws.com", "reason": "boto3"})
        assert is_error(bad) and "anyone can register" in bad.content[0].text, bad
        bad = await call(s, "request_status", {"id": "../../etc/passwd"})
        assert is_error(bad), bad
        try:
            bad = await call(s, "request_host_access", {"host": 42})
            assert is_error(bad), bad
        except Exception as e:  # wrong types: a protocol error; the session goes on
            print("wrong types:", type(e).__name__)
        access = body(await call(s, "list_access", {}))
        assert [w["host"] for w in access["waiting"]] == [], access
        print("refused bad input; listed access")

    req = urllib.request.Request(url, data=b"{}", headers={
        "Host": "evil.example", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("a wrong Host header was served")
    except urllib.error.HTTPError as e:
        assert e.code in (400, 403, 421), e.code
    print("wrong host refused")


async def flood(url, queue, mode):
    async with session(url, mode) as (s, _):
        for i in range(50):
            r = await call(s, "request_host_access", {"host": f"h{i}.example.com", "reason": "x"})
            if is_error(r):
                text = r.content[0].text
                assert "requests in a minute" in text or "already waiting" in text, text
                print("flood refused after", i)
                return
        raise AssertionError("50 requests and no limit")


if __name__ == "__main__":
    if sys.argv[1] == "modes":
        print(" ".join(modes()))
    else:
        what, url, queue, mode = sys.argv[1:5]
        asyncio.run({"check": check, "flood": flood}[what](url, queue, mode))
