//! The compose file a backend wrote is checked against the plan before anything starts: a
//! `--plugin-dir` backend named `docker` cannot run more than the plan holds. Dry runs are
//! enough: the refusal comes before any Docker call.

use crate::support::{Sandbox, plugins, run};

/// A dry run of agent `rogue` with the rogue backend rendering `what`: exit code and stderr.
fn dry_run_rogue(what: &str) -> (i32, String) {
    let sb = Sandbox::new();
    sb.agent(
        "rogue",
        &format!("image: bottle-agent:latest\ncwd: none\nplugins:\n  docker: {{rogue: {what}}}\n"),
    );
    let dir = sb.plugin_dir("backend", &[plugins::rogue_backend()]);
    let (code, _, err) = run(sb
        .bottle()
        .args(["run", "rogue", "--dry-run", "--grant", &pinned()])
        .arg("--plugin-dir")
        .arg(&dir));
    (code, err)
}

/// The grant that lets the rogue backend replace the built-in `docker`.
fn pinned() -> String {
    format!(
        "docker=replace:sha256:{}",
        sha256_of(plugins::rogue_backend())
    )
}

fn sha256_of(file: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A replacement `pipelock` offering the agent's proxy: pinned, it still needs the grant for
/// the endpoint (the built-in egress has its own; a replacement has none).
#[test]
fn a_replacement_offering_the_agents_proxy_needs_that_grant_too() {
    let sb = Sandbox::new();
    sb.agent("plain", "image: bottle-agent:latest\ncwd: none\n");
    let dir = sb.plugin_dir("plugins", &[plugins::pipelock_override()]);
    let pin = format!(
        "pipelock=replace:sha256:{}",
        sha256_of(plugins::pipelock_override())
    );
    let base = |extra: &[&str]| {
        let mut cmd = sb.bottle();
        cmd.args(["run", "plain", "--dry-run", "--grant", &pin])
            .args(extra)
            .arg("--plugin-dir")
            .arg(&dir);
        run(&mut cmd)
    };
    let (code, _, err) = base(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("plugin `pipelock` asks for `endpoint:agent-proxy`")
            && err.contains("`--grant pipelock=endpoint:agent-proxy`"),
        "{err}"
    );
    let (code, _, err) = base(&["--grant", "pipelock=endpoint:agent-proxy"]);
    assert_eq!(code, 0, "{err}");
}

/// Replacing a built-in needs a grant pinned to the file's content hash; another hash does
/// not do.
#[test]
fn replacing_a_builtin_needs_a_grant_pinned_to_its_hash() {
    let sb = Sandbox::new();
    sb.agent("plain", "image: bottle-agent:latest\ncwd: none\n");
    let dir = sb.plugin_dir("backend", &[plugins::rogue_backend()]);
    let grant = pinned();
    let hash = grant.trim_start_matches("docker=replace:sha256:");
    let other = format!("docker=replace:sha256:{}", "0".repeat(64));
    for extra in [None, Some(other.as_str())] {
        let mut cmd = sb.bottle();
        cmd.args(["run", "plain", "--dry-run", "--plugin-dir"])
            .arg(&dir);
        if let Some(g) = extra {
            cmd.args(["--grant", g]);
        }
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("plugin `docker` from")
                && err.contains(&format!("pass `--grant docker=replace:sha256:{hash}`")),
            "{err}"
        );
    }
    let (code, _, err) = run(sb
        .bottle()
        .args([
            "run",
            "plain",
            "--dry-run",
            "--grant",
            &grant,
            "--plugin-dir",
        ])
        .arg(&dir));
    assert_eq!(code, 0, "{err}");
}

/// A plugin's service granted a way out gets one of its own bottle's: the bridge every bundle
/// shares is the bundle's alone, and a backend that puts another service on it is refused.
#[test]
fn only_the_bundle_joins_the_way_out_every_bottle_shares() {
    let run_with = |rogue: Option<&str>| {
        let sb = Sandbox::new();
        let docker = rogue.map_or_else(String::new, |r| format!("\n  docker: {{rogue: {r}}}"));
        sb.agent(
            "outward",
            &format!("image: bottle-agent:latest\ncwd: none\nplugins:\n  misbehave: {{outward: true}}{docker}\n"),
        );
        let mut wanted = vec![plugins::misbehave()];
        if rogue.is_some() {
            wanted.push(plugins::rogue_backend());
        }
        let dir = sb.plugin_dir("plugins", &wanted);
        let mut cmd = sb.bottle();
        cmd.args([
            "run",
            "outward",
            "--dry-run",
            "--grant",
            "misbehave=egress-network",
        ]);
        if rogue.is_some() {
            cmd.args(["--grant", &pinned()]);
        }
        let (code, out, err) = run(cmd.arg("--plugin-dir").arg(&dir));
        (code, out, err, sb)
    };
    let (code, out, err, sb) = run_with(None);
    assert_eq!(code, 0, "{out}{err}");
    let state = std::fs::read_dir(sb.state())
        .unwrap()
        .flatten()
        .map(|e| e.path().join("compose.yaml"))
        .find(|p| p.is_file())
        .expect("the dry run's compose file");
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    let nets = |service: &str| -> Vec<String> {
        file["services"][service]["networks"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(nets("outward"), ["own-egress"]);
    assert_eq!(nets("sidecars"), ["egress", "internal"]);
    assert_eq!(file["networks"]["egress"]["external"], true);
    assert!(file["networks"]["own-egress"]["external"].is_null());

    let (code, _, err, _) = run_with(Some("shared-service"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gives service `outward` the network bottle-shared-egress, which every bottle's bundle shares (only `sidecars` may join it"),
        "{err}"
    );
}

#[test]
fn a_backend_rendering_what_the_plan_holds_is_admitted() {
    let (code, err) = dry_run_rogue("none");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_backend_cannot_add_powers_mounts_networks_or_services() {
    for (what, expected) in [
        ("privileged", "gives service `agent` privileged mode"),
        (
            "root-mount",
            "gives service `agent` the host path / at /host, which the plan does not mount there",
        ),
        ("egress-agent", "may join internal ones only"),
        ("unconfined", "the security option `seccomp=unconfined`"),
        (
            "external-bridge",
            "makes network `egress` (bridge) external; only bottle's shared way out may be",
        ),
        (
            "external-options",
            "makes network `egress` (bottle-shared-egress) external; only bottle's shared way out may be, written as `{name: bottle-shared-egress, external: true}` and nothing more",
        ),
        (
            "host-env",
            "the host's env var `AWS_SECRET_ACCESS_KEY`, which the manifest does not pass to it",
        ),
        (
            "extra-service",
            "adds the service `extra`, which no plugin asked for",
        ),
        // The bundle's own compose file (a natively driven backend's) reaches Docker too.
        (
            "bundle-privileged",
            "bundle.compose.yaml gives service `sidecars` privileged mode",
        ),
        (
            "bundle-public-port",
            "bundle.compose.yaml gives service `sidecars` the published port `0.0.0.0:9099:9099`",
        ),
    ] {
        let (code, err) = dry_run_rogue(what);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains("the docker backend's compose file") && err.contains(expected),
            "{what}: {expected:?} missing in\n{err}"
        );
        assert!(err.contains("nothing was started"), "{err}");
    }
}
