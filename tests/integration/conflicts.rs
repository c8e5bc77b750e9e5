//! Merge conflicts and refused capabilities, each with its message, through the real binary.

use crate::support::{Sandbox, plugins, run};

/// Run the `researcher` agent with the misbehave plugin configured by `settings` (YAML flow).
fn with_misbehave(settings: &str, extra: &[&str]) -> (i32, String) {
    let sb = Sandbox::new();
    sb.agent(
        "victim",
        &format!("image: bottle-agent:latest\nenv:\n  EDITOR: vi\negress:\n  allowlist: [docs.rs]\nplugins:\n  misbehave: {settings}\n"),
    );
    let dir = sb.plugin_dir("plugins", &[plugins::misbehave()]);
    let (code, _, err) = run(sb
        .bottle()
        .args(["run", "victim", "--dry-run", "--plugin-dir"])
        .arg(&dir)
        .args(extra));
    if code != 0 {
        assert!(
            !sb.state().exists() || std::fs::read_dir(sb.state()).unwrap().next().is_none(),
            "a failed plan writes nothing"
        );
    }
    (code, err)
}

#[test]
fn an_env_key_with_two_values_names_both_parties() {
    let (code, err) = with_misbehave("{agent_env: {EDITOR: emacs}}", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "conflict: env `EDITOR` of the agent is set by the manifest and by plugin `misbehave`"
        ),
        "{err}"
    );
    let (code, err) = with_misbehave("{agent_env: {HTTP_PROXY: 'http://evil:1'}}", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("env `HTTP_PROXY` of the agent is set by bottle's proxy wiring and by plugin `misbehave`"), "{err}");
}

#[test]
fn two_daemons_with_one_name_name_both_plugins() {
    let (code, err) = with_misbehave("{daemon: pipelock}", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("container name or alias `pipelock` of the bottle is set by plugin `misbehave` and by plugin `pipelock`"), "{err}");
}

#[test]
fn one_port_twice_names_both_plugins() {
    let (code, err) = with_misbehave("{daemon: proxy2, port: 8888}", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("port `8888` of the sidecar bundle is set by plugin `misbehave` and by plugin `pipelock`"), "{err}");
}

#[test]
fn a_patch_to_an_unknown_service_is_an_error() {
    let (code, err) = with_misbehave("{patch: database}", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "plugin `misbehave` patches `database`, which no plugin adds (known: agent, egress, pipelock)"
        ),
        "{err}"
    );
    let (code, _) = with_misbehave("{patch: pipelock}", &[]);
    assert_eq!(code, 0, "patching another plugin's daemon is fine");
}

#[test]
fn a_privileged_service_is_refused_unless_granted() {
    let (code, err) = with_misbehave("{privileged: true}", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("plugin `misbehave` asks for `privileged`, which you have not granted"),
        "{err}"
    );
    assert!(err.contains("--grant misbehave=privileged"), "{err}");
    let (code, err) = with_misbehave("{privileged: true}", &["--grant", "misbehave=privileged"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = with_misbehave("{privileged: true, grants: [privileged]}", &[]);
    assert_eq!(code, 0, "granted in the manifest: {err}");
    let (code, _) = with_misbehave("{privileged: true}", &["--grant", "pipelock=privileged"]);
    assert_eq!(code, 1, "a grant is for one plugin only");
}

#[test]
fn a_staged_file_outside_the_state_dir_is_refused() {
    let (code, err) = with_misbehave("{do: escape-file}", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("plugin `misbehave`: file path \"../../etc/evil\" must be relative"),
        "{err}"
    );
}

#[test]
fn a_panicking_plugin_fails_the_run_with_its_message() {
    let (code, err) = with_misbehave("{do: panic}", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("plugin `misbehave` panicked in `prepare`")
            && err.contains("misbehave was told to panic"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error, no traceback: {err}"
    );
}

#[test]
fn settings_for_an_unknown_plugin_are_an_error() {
    let sb = Sandbox::new();
    sb.agent("typo", "image: x\nplugins:\n  pipelok: {}\n");
    let (code, _, err) = run(sb.bottle().args(["run", "typo", "--dry-run"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("settings for `pipelok`, but no plugin has that name"),
        "{err}"
    );
    sb.agent("typo2", "image: x\nplugins:\n  pipelock: {mode: audit}\n");
    let (code, _, err) = run(sb.bottle().args(["run", "typo2", "--dry-run"]));
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "plugin `pipelock` refused in `prepare`: invalid settings: unknown field `mode`"
        ),
        "{err}"
    );
}

#[test]
fn a_staged_file_on_bottles_own_paths_is_refused() {
    for path in ["metadata.json", "ca/pipelock/key.pem", "compose.log"] {
        let (code, err) = with_misbehave(&format!("{{stage: '{path}'}}"), &[]);
        assert_eq!(code, 1, "{path}");
        assert!(
            err.contains(&format!("file path \"{path}\" is bottle's own")),
            "{path}: {err}"
        );
    }
    let (code, err) = with_misbehave("{stage: misbehave/config.yaml}", &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_state_mount_cannot_leave_the_state_dir_or_take_another_plugins_key() {
    for (path, why) in [
        ("../../..", "not a plain relative path inside the state dir"),
        (
            "ca/pipelock/key.pem",
            "the private key of a CA that `pipelock` owns",
        ),
        ("ca", "the private key of a CA that `egress` owns"),
        ("plan.json", "belongs to bottle itself"),
    ] {
        let (code, err) = with_misbehave(&format!("{{state_mount: '{path}'}}"), &[]);
        assert_eq!(code, 1, "{path}");
        assert!(
            err.contains(&format!("plugin `misbehave` mounts state path \"{path}\""))
                && err.contains(why),
            "{path}: {err}"
        );
        // No grant can allow it.
        let (code, _) = with_misbehave(
            &format!("{{state_mount: '{path}'}}"),
            &["--grant", "misbehave=host-path:/"],
        );
        assert_eq!(code, 1, "{path}");
    }
    let (code, err) = with_misbehave("{state_mount: ca/pipelock/cert.pem}", &[]);
    assert_eq!(code, 0, "a CA certificate is public: {err}");
}

#[test]
fn a_host_mount_with_dot_dot_is_refused_even_under_a_grant() {
    let grant = ["--grant", "misbehave=host-path:/tmp"];
    let (code, err) = with_misbehave("{host_mount: /tmp/../etc}", &grant);
    assert_eq!(code, 1);
    assert!(
        err.contains("mounts host path \"/tmp/../etc\", which is not a clean absolute path"),
        "{err}"
    );
    let (code, err) = with_misbehave("{host_mount: /tmp/x}", &grant);
    assert_eq!(code, 0, "{err}");
    let (code, err) = with_misbehave(
        "{host_mount: /var/run}",
        &["--grant", "misbehave=host-path:/var"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("`docker-socket`"),
        "a dir above the socket: {err}"
    );
}

#[test]
fn a_host_env_var_a_route_does_not_name_needs_a_grant() {
    let (code, err) = with_misbehave("{secret: AWS_SECRET_ACCESS_KEY}", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("asks for `host-env:AWS_SECRET_ACCESS_KEY`, which you have not granted")
            && err.contains("--grant misbehave=host-env:AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    let (code, err) = with_misbehave(
        "{secret: AWS_SECRET_ACCESS_KEY}",
        &["--grant", "misbehave=host-env:AWS_SECRET_ACCESS_KEY"],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_secret_env_name_must_carry_its_plugins_name() {
    let grant = ["--grant", "misbehave=host-env:GITHUB_TOKEN"];
    let (code, err) = with_misbehave(
        "{secret: GITHUB_TOKEN, secret_name: EGRESS_TOKEN_0}",
        &grant,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("plugin `misbehave`: secret env `EGRESS_TOKEN_0` must be an env name starting with `MISBEHAVE_`"),
        "{err}"
    );
}

/// The bundle's init runs a daemon's program by absolute path only: a bare name is refused when
/// the plan is made, not found missing in the bundle log after the bottle reported healthy.
#[test]
fn a_daemon_program_that_is_not_an_absolute_path_is_refused_at_plan_time() {
    for (program, expected) in [
        (
            "sh",
            "runs daemon `d1` as `sh`, which is not an absolute path",
        ),
        ("/bin/../bin/sh", "runs daemon `d1` as `/bin/../bin/sh`"),
    ] {
        let (code, err) = with_misbehave(&format!("{{daemon: d1, program: \"{program}\"}}"), &[]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("plugin `misbehave`") && err.contains(expected),
            "{err}"
        );
    }
    let (code, err) = with_misbehave("{daemon: d1, program: /bin/sh}", &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn shaping_the_bottle_beyond_its_own_part_needs_a_named_grant() {
    // (settings, the capability refused): each refusal names the plugin, the capability and
    // the grant that would allow it; with that grant the plan goes through.
    for (settings, cap) in [
        ("{lonely: true}", "default-network"),
        // git-gate takes no part in this bottle: its name is still not for another plugin.
        ("{alias: git-gate}", "alias:git-gate"),
        ("{alias: api.github.com}", "alias:api.github.com"),
        (
            "{mount_over: /etc/egress/routes.yaml}",
            "mount-over:/etc/egress/routes.yaml",
        ),
        (
            "{state_mount: misbehave/inbox, writable: true}",
            "agent-writable:misbehave/inbox",
        ),
    ] {
        let (code, err) = with_misbehave(settings, &[]);
        assert_eq!(code, 1, "{settings}: {err}");
        assert!(
            err.contains(&format!("plugin `misbehave` asks for `{cap}`"))
                && err.contains(&format!("--grant misbehave={cap}")),
            "{settings}: {err}"
        );
        let grant = format!("misbehave={cap}");
        let (code, err) = with_misbehave(settings, &["--grant", &grant]);
        assert_eq!(code, 0, "{settings} with {grant}: {err}");
    }
    // A read-only state mount of its own, and an alias of no plugin, need nothing.
    let (code, err) = with_misbehave("{state_mount: misbehave/inbox, alias: cache}", &[]);
    assert_eq!(code, 0, "{err}");
}
