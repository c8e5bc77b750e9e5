//! Many bottles on one host, and the faults it must notice: bottle's own address pool, a bundle
//! that dies under the running agent, many bottles started at once. Real Docker, real egress.

use crate::docker_e2e::{
    MCP_SH, alone, bottle, docker, first_request, leftovers, origin_agent, shared, small_runtime,
    unique_slug,
};
use crate::support::{Running, Sandbox, run};
use std::time::{Duration, Instant};

/// An agent script: one request through egress to `origin.test:PORT` (prints `first CODE`),
/// then, once the host touches `/tmp/go`, requests until one goes through again (prints
/// `again CODE after N tries`).
fn before_and_after(port: u16) -> String {
    format!(
        r#"url=https://origin.test:{port}/echo
echo "first $(curl -s -o /dev/null -w '%{{http_code}}' $url)"
i=0
until [ -e /tmp/go ]; do i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1; done
i=0
until code=$(curl -s -o /dev/null -w '%{{http_code}}' $url) && [ "$code" = 200 ]; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done
echo "again $code after $i tries"
"#
    )
}

/// `bottle run AGENT` of an agent that may reach a test origin, running [`before_and_after`];
/// returns once its first request went through (and the origin, which must outlive it).
fn start_through_egress(
    sb: &Sandbox,
    rt: &tokio::runtime::Runtime,
    agent: &str,
    slug: &str,
) -> (Running, bottle_egress::testing::Origin) {
    let origin = origin_agent(sb, rt, agent, "  routes:\n    - host: origin.test\n");
    let script = before_and_after(origin.https.port());
    let mut bottled =
        Running::start(bottle(sb).args(["run", agent, "--slug", slug, "--", "sh", "-c", &script]));
    bottled.until("first 200");
    (bottled, origin)
}

/// `run`'s options for a bottle whose agent keeps its network: a sidecar not of bottle's own
/// (the SDK's example, which declares a port) is in its bundle, so the agent cannot be on no
/// network (`bottle_contract::handoff`).
fn networked(sb: &Sandbox) -> Vec<String> {
    let dir = sb.plugin_dir("networked", &[crate::support::plugins::hello()]);
    vec!["--plugin-dir".to_owned(), dir.display().to_string()]
}

/// How many restarts bottle `slug` has recorded so far.
fn restarts(sb: &Sandbox, slug: &str) -> usize {
    std::fs::read_to_string(sb.state().join(slug).join("bundle-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"restarted\""))
        .count()
}

/// Whether container `name` is running.
fn running(name: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", name]) == "true"
}

/// Wait until `ok` holds, or fail naming `what`.
fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bundle killed under a running agent (as an OOM would): bottle says so at once, starts it
/// again, and the agent's next request through egress goes through; the ledger holds both.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_killed_bundle_is_started_again_and_the_agent_gets_out_again() {
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let slug = unique_slug("e2e-phoenix");
    let (bottled, _origin) = start_through_egress(&sb, &rt, "phoenix", &slug);
    let bundle = format!("bottle-sidecars-{slug}");
    docker(&["kill", &bundle]);
    wait_for("the bundle's restart", 60, || restarts(&sb, &slug) == 1);
    assert!(running(&bundle));
    docker(&["exec", &format!("bottle-agent-{slug}"), "touch", "/tmp/go"]);
    let (status, out, err) = bottled.finish();
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("again 200 after "), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "the sidecar bundle {bundle} exited with status 137 (killed); the agent has no way out until it is back"
        )) && err.contains("starting it again (1 of 3 within 60s)")
            && err.contains("is back ("),
        "{err}"
    );
    let (code, ledger, e) = run(sb.bottle().args(["audit", "show", &slug, "--json"]));
    assert_eq!(code, 0, "{e}");
    let kinds: Vec<String> = ledger
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| r["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    let died = kinds.iter().position(|k| k == "bundle-died");
    let back = kinds.iter().position(|k| k == "bundle-restarted");
    assert!(died.is_some() && back.is_some() && died < back, "{kinds:?}");
    assert_eq!(leftovers(&slug), "");
}

/// egress counts a grant's uses in memory: a restart must not hand the agent those uses afresh.
/// The host ends every grant limited by uses before it starts the bundle again, and the agent's
/// next request is refused naming the ended grant.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_restart_ends_grants_counted_by_uses_instead_of_counting_afresh() {
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let origin = origin_agent(&sb, &rt, "counted", "");
    let port = origin.https.port();
    let script = MCP_SH.to_owned()
        + &format!(
            r#"url=https://origin.test:{port}/echo
out=$(post '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"request_host_access","arguments":{{"host":"origin.test","reason":"fetch the echo","failed_url":"https://origin.test:{port}/echo"}}}}}}')
i=0
until curl -sf -o /dev/null $url; do i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1; done
echo THROUGH
i=0
until [ -e /tmp/go ]; do i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1; done
i=0
until curl -s $url | grep -q 'the grant for origin.test ended at'; do i=$((i+1)); [ $i -gt 300 ] && break; sleep 0.1; done
echo "ENDED after $i tries"
"#
        );
    let slug = unique_slug("e2e-counted");
    let mut bottled = Running::start(
        bottle(&sb).args(["run", "counted", "--slug", &slug, "--", "sh", "-c", &script]),
    );
    let id = first_request(&sb, &slug, &mut bottled.child);
    let (code, out, err) = run(sb.bottle().args(["approve", &id, "--yes", "--uses", "50"]));
    assert_eq!(code, 0, "{out}{err}");
    bottled.until("THROUGH");
    docker(&["kill", &format!("bottle-sidecars-{slug}")]);
    wait_for("the bundle's restart", 60, || restarts(&sb, &slug) == 1);
    docker(&["exec", &format!("bottle-agent-{slug}"), "touch", "/tmp/go"]);
    let (status, out, err) = bottled.finish();
    assert!(status.success(), "{out}\n{err}");
    let tries: u32 = out
        .split("ENDED after ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        tries <= 300,
        "the grant was served again after the restart:\n{out}\n{err}"
    );
    assert!(
        err.contains(
            "ended with the restart (egress counts uses in memory): the grant for origin.test"
        ),
        "{err}"
    );
    let (code, ledger, e) = run(sb.bottle().args(["audit", "show", &slug, "--json"]));
    assert_eq!(code, 0, "{e}");
    assert!(
        ledger.contains("\"grant-ended\"") && ledger.contains("the bundle restarted"),
        "{ledger}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// A bundle that keeps dying ends the run with its reason and a distinct exit code, torn down
/// as usual.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_bundle_that_keeps_dying_ends_the_run_with_its_reason() {
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let slug = unique_slug("e2e-doomed");
    let (bottled, _origin) = start_through_egress(&sb, &rt, "doomed", &slug);
    let bundle = format!("bottle-sidecars-{slug}");
    for restarted in 0..3 {
        wait_for("the bundle running", 60, || {
            restarts(&sb, &slug) == restarted && running(&bundle)
        });
        docker(&["kill", &bundle]);
        wait_for("the bundle's restart", 60, || {
            restarts(&sb, &slug) > restarted
        });
    }
    wait_for("the bundle running", 60, || running(&bundle));
    docker(&["kill", &bundle]);
    let (status, out, err) = bottled.finish();
    assert_eq!(status.code(), Some(69), "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "the sidecar bundle {bundle} died 4 times within 60s and was not started again: exited with status 137 (killed)"
        )),
        "{err}"
    );
    assert!(!out.contains("again 200"), "{out}");
    assert_eq!(leftovers(&slug), "");
    let (code, ledger, e) = run(sb.bottle().args(["audit", "show", &slug, "--json"]));
    assert_eq!(code, 0, "{e}");
    assert!(ledger.contains("\"bundle-lost\""), "{ledger}");
}

/// The one network the agent of bottle `slug` is on.
fn agent_network(slug: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}",
        &format!("bottle-agent-{slug}"),
    ])
}

/// The networks bottle keeps for the next bottles, idle or not.
fn kept_networks() -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "network",
        "ls",
        "--filter",
        "label=io.bottle.role=kept-internal",
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

/// The agent's internal network outlives its bottle for the next one, and serves one bottle at
/// a time: a second bottle running beside the first gets another, a network with a container
/// still on it (a run killed before its teardown) is not taken, and a bottle whose network has
/// another bottle's container on it anyway (a lock that failed) starts nothing; no more than two
/// are left idle, and `bottle cleanup` removes the idle ones.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agents_network_is_kept_for_the_next_bottle_one_bottle_at_a_time() {
    let _g = alone();
    let sb = Sandbox::new();
    sb.agent(
        "kept",
        "image: bottle-agent:latest\ncwd: none\negress:\n  default_allowlist: false\n",
    );
    let net = networked(&sb);
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        kept_networks(),
        Vec::<String>::new(),
        "cleanup removed them"
    );
    let (code, out, err) = run(bottle(&sb)
        .arg("run")
        .args(&net)
        .args(["kept", "--", "true"]));
    assert_eq!(code, 0, "{out}{err}");
    let kept = kept_networks();
    assert_eq!(kept.len(), 1, "{kept:?}");

    // The next bottle takes it; one beside it gets another.
    let first = unique_slug("e2e-kept");
    let a = Running::idle_with(&mut bottle(&sb), &net, "kept", &first);
    assert_eq!(agent_network(&first), kept[0]);
    let second = unique_slug("e2e-kept2");
    let b = Running::idle_with(&mut bottle(&sb), &net, "kept", &second);
    let other = agent_network(&second);
    assert!(
        other.starts_with("bottle-internal-") && other != kept[0],
        "{other}"
    );
    let beside = unique_slug("e2e-kept-beside");
    let d = Running::idle_with(&mut bottle(&sb), &net, "kept", &beside);
    let last = agent_network(&beside);
    assert_eq!(kept_networks().len(), 3);
    for (running, slug) in [(a, &first), (b, &second), (d, &beside)] {
        let (status, out, err) = running.release(slug);
        assert!(status.success(), "{out}{err}");
        assert_eq!(leftovers(slug), "");
    }
    let both = kept_networks();
    assert_eq!(both.len(), 2, "two kept idle: {both:?}");
    assert!(both.contains(&last), "the last one used stays: {both:?}");

    // A container left on one (as by a run killed before its teardown): that one is not taken.
    let left = unique_slug("e2e-kept-left");
    docker(&[
        "create",
        "--name",
        &left,
        "--network",
        &both[0],
        "bottle-agent:latest",
        "true",
    ]);
    let third = unique_slug("e2e-kept3");
    let c = Running::idle_with(&mut bottle(&sb), &net, "kept", &third);
    let taken = agent_network(&third);
    let (status, out, err) = c.release(&third);
    docker(&["rm", "-f", &left]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(taken, both[1], "the one without a container");
    // One idle beside it: kept again.
    assert_eq!(kept_networks(), both);

    // The lock file of a kept network removed outside bottle.
    let stale = format!("bottle-internal-{}", unique_slug("stale"));
    std::fs::write(format!("/tmp/{stale}.lock"), "").unwrap();
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("removed 2 networks kept for the next bottles"),
        "{out}"
    );
    assert_eq!(kept_networks(), Vec::<String>::new());
    // Their lock files went with them, and so did those of the networks removed by others.
    for name in both.iter().chain([&kept[0], &other, &last, &stale]) {
        let lock = std::path::Path::new("/tmp").join(format!("{name}.lock"));
        assert!(!lock.exists(), "{}", lock.display());
    }
}

/// Should the locks fail to keep a kept network to one bottle (a run with another `/tmp`), the
/// engine has the last word: a bottle with another bottle's container on its network refuses
/// to start, naming the container and what to do.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_kept_network_with_another_bottles_container_on_it_starts_nothing() {
    let _g = shared();
    let net = format!("bottle-internal-{}", unique_slug("e2e-only"));
    let other = unique_slug("e2e-only-other");
    docker(&["network", "create", "--internal", &net]);
    docker(&[
        "create",
        "--name",
        &other,
        "--network",
        &net,
        "--label",
        &format!("io.bottle.slug={other}"),
        "bottle-agent:latest",
        "true",
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = bollard::Docker::connect_with_socket_defaults().unwrap();
    let only = |slug: &str| {
        rt.block_on(bottle::run::docker::kept::only_ours(&engine, &net, slug))
            .map_err(|e| e.to_string())
    };
    let (theirs, mine) = (only(&other), only("e2e-only-mine"));
    docker(&["rm", "-f", &other]);
    docker(&["network", "rm", &net]);
    assert_eq!(theirs, Ok(()));
    let e = mine.unwrap_err();
    assert!(
        e.contains(&format!("network {net}")) && e.contains(&format!("({other})")),
        "{e}"
    );
    assert!(e.contains("nothing was started: run again"), "{e}");
}

/// Networks come from bottle's own pool, sized small; a pool with no room left is one line
/// saying how many bottles hold it and what to do, with nothing left behind.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn networks_come_from_bottles_pool_and_a_full_pool_says_who_holds_it() {
    let _g = alone();
    let sb = Sandbox::new();
    sb.agent(
        "pooled",
        "image: bottle-agent:latest\ncwd: none\negress:\n  default_allowlist: false\n",
    );
    let net = networked(&sb);
    let config = sb.dir.path().join("config/bottle");
    std::fs::create_dir_all(&config).unwrap();
    // A /28: one bottle's internal /28 fits, and nothing is left for another's. (Its bundle's
    // way out is the bridge every bundle shares, on the engine's own addresses.)
    std::fs::write(
        config.join("config.yaml"),
        "networks:\n  pool: 10.214.250.0/28\n",
    )
    .unwrap();
    let holder = unique_slug("e2e-pool");
    let first = Running::idle_with(&mut bottle(&sb), &net, "pooled", &holder);
    let held = agent_network(&holder);
    let subnet = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        &held,
    ]);
    assert_eq!(subnet, "10.214.250.0/28");
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=bottle-{holder}-egress")
        ]),
        "",
        "no way out of its own: the shared one"
    );
    let second = unique_slug("e2e-pool2");
    let (code, out, err) = run(bottle(&sb)
        .arg("run")
        .args(&net)
        .args(["pooled", "--slug", &second, "--", "true"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "bottle's address pool 10.214.250.0/28 has no free /28 left: 1 bottle holds subnets of it ({holder})"
        )) && err.contains(&format!(
            "`networks.pool` in {}",
            config.join("config.yaml").display()
        )),
        "{err}"
    );
    assert_eq!(leftovers(&second), "");
    let (status, out, err) = first.release(&holder);
    assert!(status.success(), "{out}{err}");
    assert_eq!(leftovers(&holder), "");
    // Kept for the next bottle with this pool; no other test's has it.
    docker(&["network", "rm", &held]);

    // A bad pool is refused before anything is made, naming the file and the field.
    std::fs::write(
        config.join("config.yaml"),
        "networks:\n  pool: 8.8.8.0/24\n",
    )
    .unwrap();
    let third = unique_slug("e2e-pool3");
    let (code, _, err) = run(bottle(&sb)
        .arg("run")
        .args(&net)
        .args(["pooled", "--slug", &third, "--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("config.yaml: networks.pool: `8.8.8.0/24` is not a private range"),
        "{err}"
    );
    assert!(!sb.state().join(&third).exists());
}

/// Every bundle's way out is one bridge, made once and kept: a bottle makes and removes one
/// network less. Its members cannot reach each other (a container on it, as another bundle is,
/// gets no answer from a bundle's egress port), while the host still reaches the bundle.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn bundles_share_one_kept_way_out_on_which_they_cannot_reach_each_other() {
    use bottle_contract::compose::SHARED_EGRESS_NETWORK as NET;
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "sharing",
        "image: bottle-agent:latest\ncwd: none\negress:\n  default_allowlist: false\n",
    );
    let slug = unique_slug("e2e-share");
    let running = Running::idle(&mut bottle(&sb), "sharing", &slug);
    let id = docker(&["network", "inspect", "-f", "{{.Id}}", NET]);
    assert_eq!(
        docker(&[
            "network",
            "inspect",
            "-f",
            "{{.Internal}} {{.Options}}",
            NET
        ]),
        "false map[com.docker.network.bridge.enable_icc:false]"
    );
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{NET}\").IPAddress}}}}"),
        &format!("bottle-sidecars-{slug}"),
    ]);
    // The init's few capabilities and no other: no raw sockets above all, which on one bridge
    // would reach the other bundles below its firewall.
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}}",
            &format!("bottle-sidecars-{slug}")
        ]),
        "[ALL] [CHOWN DAC_OVERRIDE FOWNER SETUID SETGID KILL]"
    );
    // As the kernel sees it: the bundle's init holds exactly those (bits 0, 1, 3, 5, 6, 7).
    let init = docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}}",
        &format!("bottle-sidecars-{slug}"),
    ]);
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "CapEff:\t00000000000000eb"),
        "{status}"
    );
    let addr: std::net::SocketAddr = format!("{ip}:9099").parse().unwrap();
    // The host reaches egress's port on the bundle (egress refuses it without the hop token).
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok(),
        "the host cannot reach {addr}"
    );
    // A neighbour on the same bridge does not.
    let probe = format!(
        "import socket\ntry:\n    socket.create_connection(('{ip}', 9099), timeout=3)\n    print('reached')\nexcept OSError as e:\n    print('refused', e)\n"
    );
    let neighbour = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", NET, "bottle-agent:latest"])
        .args(["python3", "-c", &probe])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&neighbour.stdout);
    assert!(
        said.starts_with("refused"),
        "a neighbour reached the bundle: {said}"
    );
    let (status, out, err) = running.release(&slug);
    assert!(status.success(), "{out}{err}");
    assert_eq!(leftovers(&slug), "");
    // Kept for the next bottle, the same network.
    assert_eq!(docker(&["network", "inspect", "-f", "{{.Id}}", NET]), id);
}

/// Thirty bottles at once, each sending a request through its own egress: all succeed and
/// nothing is left behind. (`benches/many.sh` measures the same at any size.)
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn thirty_bottles_at_once_all_get_out_and_leave_nothing() {
    let _g = alone();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let origin = origin_agent(&sb, &rt, "many", "  routes:\n    - host: origin.test\n");
    let url = format!("https://origin.test:{}/echo", origin.https.port());
    // Built once, so thirty runs do not race to build the bundle image.
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "many",
        "--slug",
        &unique_slug("e2e-warm"),
        "--",
        "true",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let slugs: Vec<String> = (0..30)
        .map(|i| format!("{}-{i}", unique_slug("e2e-many")))
        .collect();
    let children: Vec<_> = slugs
        .iter()
        .map(|slug| {
            bottle(&sb)
                .args([
                    "run",
                    "many",
                    "--slug",
                    slug,
                    "--",
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut failed = Vec::new();
    for (slug, child) in slugs.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || said.trim() != "200" {
            failed.push(format!(
                "{slug}: {:?} {said}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 30 failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    for slug in &slugs {
        assert_eq!(leftovers(slug), "", "{slug}");
    }
}
