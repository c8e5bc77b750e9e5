//! A credential scoped to what it is for, through a real bottle: the agent holds a GitHub
//! token's placeholder on `api.github.com` (a local HTTPS origin answering as the forge,
//! through `egress.hosts`) and a git remote behind git-gate (a real sshd upstream). Every
//! call and push that would go around git-gate is refused before the origin or the upstream
//! sees it; issues, pull requests and a push to the agent's own branch go through. And the
//! bundle runs with its limits, every container with its log capped.

use crate::docker_e2e::{
    bottle, docker, docker_host_address, host_origin, leftovers, shared, small_runtime,
    start_agent_sleeping, unique_slug, verdict, verify,
};
use crate::support::{Sandbox, run};
use bottle_egress::testing::Origin;
use bottle_git_gate::testing::Upstream;

/// A sandbox whose agent `coder` has the implementer's route shape (a token on
/// `api.github.com`, paths under `/repos/example/`, a `deny` entry), a registry route that
/// only reads, and `proj` behind git-gate with no `push:` (the defaults); the local origin
/// answering as both hosts, and the sshd upstream.
struct Forge {
    sb: Sandbox,
    origin: Origin,
    up: Upstream,
    url: String,
    _rt: tokio::runtime::Runtime,
}

impl Forge {
    fn new() -> Forge {
        let sb = Sandbox::new();
        let rt = small_runtime();
        let (origin, ca) = host_origin(&sb, &rt, &["api.github.com", "registry.test"]);
        let up = Upstream::start(&docker_host_address());
        let url = up.repo("proj");
        sb.agent(
            "coder",
            &format!(
                "image: bottle-agent:latest\ncwd: none\n\
                 git:\n  - name: proj\n    url: {url}\n    key: {key}\n    known_host: {host_key}\n\
                 egress:\n  default_allowlist: false\n  routes:\n    \
                 - host: api.github.com\n      path_allowlist: [/repos/example/]\n      \
                 auth: {{scheme: Bearer, token_ref: E2E_GH_TOKEN}}\n      \
                 deny: [{{methods: [PUT, DELETE], path: /repos/example/*/issues/*/lock}}]\n    \
                 - host: registry.test\n      methods: [GET, HEAD]\n  \
                 hosts: {{api.github.com: 'host-gateway:{port}', registry.test: 'host-gateway:{port}'}}\n  upstream_ca: {ca}\n",
                port = origin.https.port(),
                key = up.client_key.display(),
                host_key = up.host_key,
                ca = ca.display(),
            ),
        );
        Forge {
            sb,
            origin,
            up,
            url,
            _rt: rt,
        }
    }
}

/// The issue's list, from inside a real bottle: the token's calls that would move or delete
/// a ref, write a file, add a webhook or a deploy key get 403 naming their rule and never
/// reach the origin; issues and pull requests do. Pushes to `main`, of a tag, deleting, forcing
/// and of a CI definition are refused by git-gate's defaults, and the upstream never gets
/// them; a push to `bottle/coder/x` lands.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn forge_calls_and_pushes_that_go_around_git_gate_are_refused_and_the_rest_works() {
    let _g = shared();
    let Forge {
        sb,
        origin,
        up,
        url,
        _rt,
    } = Forge::new();
    let seeded = up.rev("proj", "main").expect("a seeded main");
    let api = format!("https://api.github.com:{}", origin.https.port());
    let calls = [
        (
            "PATCH",
            "/repos/example/proj/git/refs/heads/main",
            r#"{"sha":"0000000000000000000000000000000000000000","force":true}"#,
        ),
        ("DELETE", "/repos/example/proj/git/refs/heads/main", ""),
        (
            "PUT",
            "/repos/example/proj/contents/src/a.rs",
            r#"{"message":"m","content":"aGVsbG8="}"#,
        ),
        (
            "POST",
            "/repos/example/proj/hooks",
            r#"{"config":{"url":"https://collector.invalid/"}}"#,
        ),
        (
            "POST",
            "/repos/example/proj/keys",
            r#"{"key":"ssh-ed25519 AAAA","read_only":false}"#,
        ),
        ("PUT", "/repos/example/proj/issues/1/lock", ""),
        ("POST", "/repos/example/proj/issues", r#"{"title":"t"}"#),
        (
            "POST",
            "/repos/example/proj/pulls",
            r#"{"title":"t","head":"bottle/coder/x","base":"main"}"#,
        ),
        (
            "POST",
            "/repos/example/proj/issues/1/comments",
            r#"{"body":"b"}"#,
        ),
        ("GET", "/repos/example/proj/pulls", ""),
    ];
    let mut script = String::from("set -u; cd /tmp\n");
    for (method, path, body) in calls {
        // Each call prints `CALL <method> <path> <status> <X-Bottle-Block>` (of the last
        // response: the CONNECT's comes first).
        script.push_str(&format!(
            "printf 'CALL {method} {path} %s\\n' \"$(curl -sS -o /dev/null -D - -X {method} \
             -H 'Authorization: Bearer placeholder' -H 'Content-Type: application/json' \
             --data '{body}' {api}{path} | tr -d '\\r' | awk '/^HTTP\\// {{s=$2; b=\"\"}} tolower($1)==\"x-bottle-block:\" {{b=$2}} END {{print s, b}}')\"\n"
        ));
    }
    script.push_str(&format!(
        "printf 'CALL PUT /registry %s\\n' \"$(curl -sS -o /dev/null -w '%{{http_code}}' -X PUT --data x https://registry.test:{}/pkg)\"\n",
        origin.https.port()
    ));
    script.push_str(&format!(
        "g='git -c user.name=agent -c user.email=agent@example.com'\n\
         $g clone -q {url} w && $g -C w log --format=%s\n\
         echo work > w/new.txt && $g -C w add new.txt && $g -C w commit -qm agent-work\n\
         $g -C w push -q origin HEAD:bottle/coder/x && echo PUSHED\n\
         $g -C w push origin HEAD:main 2>&1 | grep -q 'may push only to refs/heads/bottle/coder/\\*' && echo MAIN-REFUSED\n\
         $g -C w push origin HEAD:refs/tags/v1 2>&1 | grep -q 'tags may not be pushed' && echo TAG-REFUSED\n\
         $g -C w push origin :bottle/coder/x 2>&1 | grep -q 'deleting refs is not allowed' && echo DELETE-REFUSED\n\
         $g -C w push -f origin HEAD~1:bottle/coder/x 2>&1 | grep -q 'non-fast-forward' && echo FORCE-REFUSED\n\
         mkdir -p w/.github/workflows && echo 'on: push' > w/.github/workflows/ci.yml\n\
         $g -C w add .github && $g -C w commit -qm 'add ci'\n\
         $g -C w push origin HEAD:bottle/coder/ci > /tmp/ci.out 2>&1; \
         grep -q '.github/workflows/ci.yml' /tmp/ci.out && grep -q 'allow_ci_changes: true' /tmp/ci.out && echo CI-REFUSED\n",
    ));
    let slug = unique_slug("e2e-forge");
    let (code, out, err) = run(bottle(&sb)
        .env("E2E_GH_TOKEN", "e2e-gh-token-5d1f07")
        .args(["run", "coder", "--slug", &slug, "--", "sh", "-c", &script]));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let answered = |method: &str, path: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("CALL {method} {path} ")))
            .unwrap_or_else(|| panic!("no answer to {method} {path} in\n{out}\n{err}"))
            .trim()
            .to_owned()
    };
    for (method, path, _) in &calls[..6] {
        assert_eq!(
            answered(method, path),
            "403 route-rule",
            "{method} {path} is refused by egress's route rules:\n{out}"
        );
    }
    for (method, path, _) in &calls[6..] {
        // The origin knows none of these paths: its 404 is the proof the call got there.
        assert_eq!(answered(method, path), "404", "{method} {path}:\n{out}");
    }
    assert_eq!(
        answered("PUT", "/registry"),
        "403",
        "a read-only route:\n{out}"
    );
    let seen = origin.seen.lock().unwrap().clone();
    let expected: Vec<String> = calls[6..]
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        seen, expected,
        "the origin saw exactly the calls that passed"
    );
    for pushed in [
        "PUSHED",
        "MAIN-REFUSED",
        "TAG-REFUSED",
        "DELETE-REFUSED",
        "FORCE-REFUSED",
        "CI-REFUSED",
    ] {
        assert!(out.contains(pushed), "{pushed} missing in\n{out}\n{err}");
    }
    assert_eq!(up.rev("proj", "main").as_deref(), Some(seeded.as_str()));
    assert!(
        up.rev("proj", "bottle/coder/x").is_some(),
        "the agent's branch landed"
    );
    assert_eq!(up.rev("proj", "bottle/coder/ci"), None, "no CI change left");
    assert_eq!(up.rev("proj", "v1"), None, "no tag left");
    assert_eq!(leftovers(&slug), "");
}

/// `bottle verify` on the same manifest: its route-method, route-deny and forge-default probes
/// hold. A PASS needs egress's own refusal (403 with `X-Bottle-Block: route-rule`), which it
/// gives before dialling anything; a refusal from elsewhere would not do.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn verify_probes_the_route_rules_and_the_forge_defaults() {
    let _g = shared();
    let forge = Forge::new();
    let sb = &forge.sb;
    let (code, findings, err) = verify(
        sb,
        bottle(sb)
            .env("E2E_GH_TOKEN", "e2e-gh-token-5d1f07")
            .args(["verify", "coder", "--json"]),
    );
    assert_eq!(code, 0, "{findings:#?}\n{err}");
    for id in ["route-method", "route-deny", "forge-default"] {
        assert_eq!(verdict(&findings, id), "PASS", "{id}: {findings:#?}");
    }
    let forge = findings
        .iter()
        .find(|f| f["probe"] == "forge-default")
        .unwrap();
    assert!(
        forge["tried"]
            .as_str()
            .unwrap()
            .contains("DELETE https://api.github.com/repos/example/bottle-verify-probe/git/refs/heads/bottle-verify-probe"),
        "{forge}"
    );
}

/// The bundle runs with its manifest limits and its log capped, and the agent's output (the
/// user's terminal session) is kept by no log, as `docker inspect` shows them.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn docker_inspect_shows_the_bundles_limits_and_log_cap_and_no_log_of_the_agent() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "capped",
        "image: bottle-agent:latest\ncwd: none\negress:\n  allowlist: [docs.rs]\n\
         resources:\n  bundle: {memory: 1g, pids: 512, cpus: 1.5}\n",
    );
    let slug = unique_slug("e2e-caps");
    let mut child = start_agent_sleeping(&sb, "capped", &slug);
    let agent = format!("bottle-agent-{slug}");
    let bundle = format!("bottle-sidecars-{slug}");
    let limits = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}}",
        &bundle,
    ]);
    assert_eq!(
        limits,
        format!("{} {} 512 1500000000", 1u64 << 30, 1u64 << 30)
    );
    let log = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}",
        &bundle,
    ]);
    assert_eq!(log, "json-file 10m 3", "{bundle}");
    // The agent's output is the user's terminal session: no log keeps it.
    let log = docker(&["inspect", "-f", "{{.HostConfig.LogConfig.Type}}", &agent]);
    assert_eq!(log, "none", "{agent}");
    let _ = run(sb.bottle().args(["stop", &slug]));
    let _ = child.wait();
    assert_eq!(leftovers(&slug), "");
}
