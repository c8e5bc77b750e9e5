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
        .args(["run", "rogue", "--dry-run", "--plugin-dir"])
        .arg(&dir));
    (code, err)
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
            "host-env",
            "the host's env var `AWS_SECRET_ACCESS_KEY`, which the manifest does not pass to it",
        ),
        (
            "extra-service",
            "adds the service `extra`, which no plugin asked for",
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
