//! The hop from the agent to the bundle's daemons, tried from outside the agent.
//!
//! On Docker the bundle container is reachable at its address on its egress bridge by any
//! local process: another user, another container. Only the agent holds the run's hop token,
//! and without it egress answers 407 (and injects nothing), git-gate refuses, supervise 401.

use crate::docker_e2e::{bottle, leftovers, shared, unique_slug};
use crate::support::{Running, Sandbox, run};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

/// A command run as `nobody`, an unprivileged local user (the tests may run as root; as
/// another user, they run as that user, which is no more the bottle's owner than nobody is).
fn as_local_user(program: &str) -> Command {
    let mut c = if rustix::process::getuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
        c
    } else {
        Command::new(program)
    };
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        // A dir every user may enter: the checkout may lie under one only its owner can (a
        // fresh clone in a 0700 temp dir), and git refuses to start where it cannot stat `.`.
        .current_dir("/");
    c
}

fn output(c: &mut Command) -> (bool, String) {
    let o = c.output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The issue's attack: a local user proxies through egress to a route that injects your
/// token, lists a repo through git-gate, and opens supervise's MCP session, at the bundle's
/// bridge address. Each is refused, the origin sees nothing, and the agent's own requests
/// (which carry the token) go through.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_local_user_cannot_spend_the_bottles_credentials_or_reach_its_daemons() {
    use bottle_git_gate::testing::Upstream;
    let _g = shared();
    let sb = Sandbox::new();
    let rt = crate::docker_e2e::small_runtime();
    let (origin, ca) = crate::docker_e2e::host_origin(&sb, &rt, &["origin.test"]);
    let up = Upstream::start(&crate::docker_e2e::docker_host_address());
    let url = up.repo("proj");
    sb.agent(
        "door",
        &format!(
            "image: bottle-agent:latest\ncwd: none\nsupervise: true\n\
             git:\n  - name: proj\n    url: {url}\n    key: {}\n    known_host: {}\n\
             egress:\n  default_allowlist: false\n  hosts: {{origin.test: 'host-gateway:{}'}}\n  upstream_ca: {}\n  \
             routes:\n    - host: origin.test\n      auth: {{scheme: Bearer, token_ref: DOOR_TOKEN}}\n",
            up.client_key.display(),
            up.host_key,
            origin.https.port(),
            ca.display()
        ),
    );
    let port = origin.https.port();
    let slug = unique_slug("e2e-hop");
    let script = format!(
        "curl -sS -o /dev/null -w 'AGENT %{{http_code}}\\n' https://origin.test:{port}/echo; \
         git ls-remote {url} >/dev/null 2>&1 && echo AGENT-GIT-OK; \
         echo READY; read done"
    );
    let mut agent = Running::start(
        bottle(&sb)
            .env("DOOR_TOKEN", "the-users-real-token")
            .args(["run", "door", "--slug", &slug, "--", "sh", "-c", &script]),
    );
    agent.until("READY");
    let seen = agent.seen.clone();
    assert!(
        seen.contains("AGENT 200") && seen.contains("AGENT-GIT-OK"),
        "the agent's own requests carry the token: {seen}"
    );
    let hits_before = origin.hits.load(Ordering::SeqCst);
    let bundle = format!("bottle-sidecars-{slug}");
    let ip = crate::docker_e2e::docker(&[
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            bottle_contract::compose::SHARED_EGRESS_NETWORK
        ),
        &bundle,
    ]);
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
    // egress: a proxied HTTPS request (CONNECT), a plain one, and one with a wrong token.
    for proxy in [
        format!("http://{ip}:9099"),
        format!("http://bottle:wrong@{ip}:9099"),
    ] {
        let (_, said) = output(
            as_local_user("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_connect}",
                ])
                .args(["--max-time", "10", "-x", &proxy, "-k"])
                .arg(format!("https://origin.test:{port}/echo")),
        );
        assert_eq!(said.trim(), "000 407", "via {proxy}: {said}");
        let (_, said) = output(
            as_local_user("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["--max-time", "10", "-x", &proxy])
                .arg(format!("http://origin.test:{}/echo", origin.http.port())),
        );
        assert_eq!(said.trim(), "407", "via {proxy}: {said}");
    }
    // egress's direct ports (for the agent's clients that ignore the proxy env) carry no hop
    // token: they serve the agent's address alone, so a local user's TLS and HTTP, sent
    // straight to the bundle under a routed name, are closed unanswered.
    for (url, port) in [
        ("https://origin.test/echo", 443),
        ("http://origin.test/echo", 80),
    ] {
        let (ok, said) = output(
            as_local_user("curl")
                .args(["-s", "-k", "--noproxy", "*", "--max-time", "10"])
                .args(["-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
                .arg(format!("origin.test:{port}:{ip}"))
                .arg(url),
        );
        assert!(
            !ok && said.trim() == "000",
            "{url} straight to {ip}: {said}"
        );
    }
    assert_eq!(
        origin.hits.load(Ordering::SeqCst),
        hits_before,
        "the origin saw a request no agent made"
    );
    // git-gate: the repo by name, and a guess at the token's place.
    for path in ["proj.git", "x/proj.git"] {
        let (ok, said) = output(
            as_local_user("git")
                .args(["ls-remote"])
                .arg(format!("git://{ip}/{path}")),
        );
        assert!(!ok, "git-gate served {path} to a local user: {said}");
        assert!(said.contains("hop token"), "{said}");
    }
    // supervise: an MCP initialize, by address and by name.
    for host in [format!("{ip}:9100"), "supervise:9100".to_owned()] {
        let (_, said) = output(
            as_local_user("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
                .args(["-H", &format!("Host: {host}")])
                .args(["-H", "Content-Type: application/json"])
                .args(["-H", "Accept: application/json, text/event-stream"])
                .args([
                    "-d",
                    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#,
                ])
                .arg(format!("http://{ip}:9100/")),
        );
        assert_eq!(said.trim(), "401", "Host {host}: {said}");
    }
    // The agent gets the token per command, never in its container's config.
    let env = crate::docker_e2e::docker(&["inspect", "-f", "{{json .Config.Env}}", &bundle]);
    let token = env
        .split('"')
        .find_map(|kv| kv.strip_prefix("EGRESS_HOP_TOKEN="))
        .unwrap_or_else(|| panic!("the bundle has no hop token: {env}"))
        .to_owned();
    assert!(token.len() >= 32, "{token}");
    let agent_config = crate::docker_e2e::docker(&["inspect", &format!("bottle-agent-{slug}")]);
    assert!(
        !agent_config.contains(&token),
        "the hop token is in the agent's container config"
    );
    let _ = run(sb.bottle().args(["stop", &slug]));
    let _ = agent.finish();
    assert_eq!(leftovers(&slug), "");
}
