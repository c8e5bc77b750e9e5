use super::*;

const GOOD: &str = r#"
image: bottle-agent:latest
command: [claude, --verbose]
env:
  EDITOR: vi
secrets: [ANTHROPIC_API_KEY]
git:
  - name: bottle
    url: git@github.com:example/bottle.git
    key: /keys/id_ed25519
    known_host: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl
egress:
  allowlist: [PyPI.org, "*.npmjs.org"]
  default_allowlist: true
  routes:
    - host: api.github.com
      path_allowlist: [/repos/example/]
      auth: {scheme: Bearer, token_ref: GITHUB_TOKEN}
supervise: true
plugins:
  pipelock:
    no_tls_interception: false
  hello:
    grants: [privileged]
"#;

/// The env the tests parse with: HOME is `/home/u`.
fn env() -> HostEnv {
    HostEnv::from_vars([("HOME".to_owned(), "/home/u".to_owned())])
}

fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
    parse(Path::new("agents/demo.yaml"), text, &env())
}

/// Assert `text` fails, naming `field` and containing `needle`; return the error.
fn fails(text: &str, field: &str, needle: &str) -> ManifestError {
    let err = parse_str(text).expect_err("the manifest should be rejected");
    let shown = err.to_string();
    assert!(
        shown.starts_with("agents/demo.yaml"),
        "names the file: {shown}"
    );
    assert!(shown.contains(needle), "expected {needle:?} in: {shown}");
    assert_eq!(err.field, field, "{shown}");
    err
}

#[test]
fn a_good_manifest_parses_into_typed_values() {
    let m = parse_str(GOOD).unwrap();
    assert_eq!(m.name, "demo");
    assert_eq!(m.agent.command, ["claude", "--verbose"]);
    assert_eq!(m.agent.workdir, "/workspace");
    assert_eq!(m.git[0].host, "github.com");
    assert_eq!(m.git[0].port, 22);
    assert_eq!(m.allowlist, ["pypi.org", "*.npmjs.org"]);
    assert_eq!(m.routes[0].auth.as_ref().unwrap().token_ref, "GITHUB_TOKEN");
    assert_eq!(m.backend, "docker");
    assert!(
        m.settings.contains_key("hello"),
        "an empty table still names the plugin"
    );
    assert_eq!(
        m.settings["hello"],
        serde_json::json!({}),
        "grants are not passed to the plugin"
    );
    assert_eq!(m.declared().paths["/keys/id_ed25519"], "git-gate");
    assert_eq!(m.declared().host_env["GITHUB_TOKEN"], "egress");
}

#[test]
fn the_default_allowlist_is_in_unless_turned_off() {
    let on = parse_str(
        "image: x
egress:
  allowlist: [sentry.io, pypi.org]
",
    )
    .unwrap();
    let hosts = on.bottle("x-00000").allowlist;
    assert_eq!(
        &hosts[..2],
        ["sentry.io", "pypi.org"],
        "manifest order first"
    );
    assert_eq!(
        hosts.len(),
        2 + DEFAULT_ALLOWLIST.len() - 1,
        "sentry.io once"
    );
    assert!(
        DEFAULT_ALLOWLIST
            .iter()
            .all(|h| hosts.iter().any(|x| x == h))
    );
    let off = parse_str(
        "image: x
egress:
  default_allowlist: false
  allowlist: [pypi.org]
",
    )
    .unwrap();
    assert_eq!(off.bottle("x-00000").allowlist, ["pypi.org"]);
    fails(
        "image: x
egress:
  default_allowlist: nope
",
        "egress.default_allowlist",
        "expected a boolean",
    );
}

#[test]
fn unknown_keys_are_errors_with_line_and_column() {
    let err = fails("image: x\nimgae: y\n", "", "unknown field `imgae`");
    assert_eq!((err.line, err.column), (Some(2), Some(1)));
    fails(
        "image: x\negress:\n  allowlst: [a.com]\n",
        "egress",
        "unknown field `allowlst`",
    );
    fails(
        "image: x\ngit:\n  - name: a\n    url: git@h:a\n    key: /k\n    pinned: x\n",
        "git[0]",
        "unknown field `pinned`",
    );
}

#[test]
fn legacy_keys_are_hard_errors_with_a_migration_hint() {
    let err = fails(
        "image: x\ncred_proxy:\n  routes: []\n",
        "cred_proxy",
        "egress.routes",
    );
    assert_eq!(err.line, Some(2));
    fails("image: x\nssh:\n  - host: github.com\n", "ssh", "git-gate");
}

#[test]
fn an_empty_auth_is_an_error() {
    let err = fails(
        "image: x\negress:\n  routes:\n    - host: api.github.com\n      auth: {}\n",
        "egress.routes[0].auth",
        "is empty",
    );
    assert_eq!(err.line, Some(5));
}

#[test]
fn auth_needs_a_known_scheme_and_an_env_name() {
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n      auth: {scheme: Basic, token_ref: T}\n",
        "egress.routes[0].auth.scheme",
        "Bearer",
    );
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n      auth: {scheme: Bearer}\n",
        "egress.routes[0].auth.token_ref",
        "missing",
    );
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n      auth: {token_ref: T}\n",
        "egress.routes[0].auth.scheme",
        "missing",
    );
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n      auth: {scheme: Bearer, token_ref: ghp_abc-123}\n",
        "egress.routes[0].auth.token_ref",
        "env var",
    );
}

#[test]
fn header_auth_is_a_header_name_and_never_with_a_scheme() {
    let m = parse_str(
        "image: x\negress:\n  routes:\n    - host: api.anthropic.com\n      auth: {header: X-Api-Key, token_ref: ANTHROPIC_API_KEY}\n",
    )
    .unwrap();
    let auth = m.routes[0].auth.as_ref().unwrap();
    assert_eq!(auth.scheme, "header:x-api-key");
    assert_eq!(m.declared().host_env["ANTHROPIC_API_KEY"], "egress");
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n      auth: {scheme: Bearer, header: x-k, token_ref: T}\n",
        "egress.routes[0].auth",
        "not both",
    );
    for bad in ["Host", "cookie", "x key", "x:y", "Transfer-Encoding"] {
        fails(
            &format!(
                "image: x\negress:\n  routes:\n    - host: a.com\n      auth: {{header: \"{bad}\", token_ref: T}}\n"
            ),
            "egress.routes[0].auth.header",
            "header name egress may set",
        );
    }
}

#[test]
fn static_hosts_and_an_upstream_ca_reach_egress_and_bad_ones_say_how() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let m = parse_str(&format!(
        "image: x\negress:\n  hosts: {{registry.internal: 10.1.2.3, Origin.Test: 'host-gateway:8443', db.test: '10.1.2.4:5432'}}\n  upstream_ca: {}\n",
        ca.display()
    ))
    .unwrap();
    let egress = &m.settings["egress"];
    assert_eq!(egress["hosts"]["registry.internal"], "10.1.2.3");
    assert_eq!(egress["hosts"]["origin.test"], "host-gateway:8443");
    assert_eq!(egress["hosts"]["db.test"], "10.1.2.4:5432");
    assert_eq!(egress["upstream_ca"], ca.display().to_string());
    assert_eq!(
        m.declared().paths[&ca.display().to_string()],
        "egress",
        "the CA path needs no grant for egress (and only for egress)"
    );
    let err = fails(
        "image: x\negress:\n  hosts: {a.test: nowhere}\n",
        "egress.hosts.a.test",
        "`host-gateway:PORT`",
    );
    assert_eq!(err.line, Some(3));
    // The Docker host is this machine: one port of it, named.
    fails(
        "image: x\negress:\n  hosts: {a.test: host-gateway}\n",
        "egress.hosts.a.test",
        "every port of this machine",
    );
    fails(
        "image: x\negress:\n  hosts: {'*.a.test': 10.0.0.1}\n",
        "egress.hosts.*.a.test",
        "no wildcard",
    );
    // Not where the user thinks, or where a cloud's metadata answers.
    for (addr, why) in [
        ("127.0.0.1", "the sidecar bundle's own loopback"),
        ("'127.0.0.2:9000'", "the sidecar bundle's own loopback"),
        ("'::1'", "the sidecar bundle's own loopback"),
        ("'::ffff:127.0.0.1'", "the sidecar bundle's own loopback"),
        ("0.0.0.0", "no address to send requests to"),
        ("169.254.169.254", "link-local"),
        ("'[fe80::1]:80'", "link-local"),
    ] {
        fails(
            &format!("image: x\negress:\n  hosts: {{a.test: {addr}}}\n"),
            "egress.hosts.a.test",
            why,
        );
    }
    fails(
        "image: x\negress:\n  upstream_ca: relative.pem\n",
        "egress.upstream_ca",
        "absolute path",
    );
    fails(
        "image: x\negress:\n  upstream_ca: /nonexistent/ca.pem\n",
        "egress.upstream_ca",
        "cannot read /nonexistent/ca.pem",
    );
    let not_pem = dir.path().join("x.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    fails(
        &format!("image: x\negress:\n  upstream_ca: {}\n", not_pem.display()),
        "egress.upstream_ca",
        "holds no PEM certificate",
    );
    fails(
        "image: x\negress:\n  hosts: {a.test: 10.0.0.1}\nplugins:\n  egress:\n    hosts: {b.test: 10.0.0.2}\n",
        "plugins.egress.hosts",
        "`egress.hosts` instead",
    );
}

#[test]
fn hosts_are_bare_names() {
    for bad in ["https://a.com", "a.com/x", "a.com:443", "-a.com", "a..com"] {
        fails(
            &format!("image: x\negress:\n  allowlist: [\"{bad}\"]\n"),
            "egress.allowlist[0]",
            "bare host name",
        );
    }
    fails(
        "image: x\negress:\n  routes:\n    - host: \"*.a.com\"\n",
        "egress.routes[0].host",
        "wildcard",
    );
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n    - host: A.com\n",
        "egress.routes[1].host",
        "two routes",
    );
    fails(
        "image: x\negress:\n  routes:\n    - host: a.com\n      path_allowlist: [repos]\n",
        "egress.routes[0].path_allowlist[0]",
        "start with `/`",
    );
}

#[test]
fn git_upstreams_are_checked() {
    let up = |name: &str, url: &str, key: &str| {
        format!(
            "image: x\ngit:\n  - name: {name}\n    url: {url}\n    key: {key}\n    known_host: ssh-ed25519 AAAA\n"
        )
    };
    fails(
        &up("a", "https://github.com/a/b.git", "/k"),
        "git[0].url",
        "not an SSH git URL",
    );
    fails(
        &up("a b", "git@h.com:a/b", "/k"),
        "git[0].name",
        "repo names",
    );
    fails(
        &up("a", "git@h.com:a/b", "keys/k"),
        "git[0].key",
        "absolute",
    );
    fails(
        "image: x\ngit:\n  - {name: a, url: 'git@h.com:a', key: /k, known_host: ssh-ed25519 A}\n  - {name: a, url: 'git@h.com:b', key: /k}\n",
        "git[1].name",
        "listed twice",
    );
    fails(
        &up("a", "git@h.com:a/b", "/k").replace(
            "known_host: ssh-ed25519 AAAA",
            "known_host: github.com ssh-ed25519 AAAA",
        ),
        "git[0].known_host",
        "<type> <base64>",
    );
    fails(
        &up("a", "ssh://git@h.com:2222/a/b", "/k")
            .replace("    known_host: ssh-ed25519 AAAA\n", ""),
        "git[0].known_host",
        "never trusts an SSH host on first use; add `known_host: <type> <base64>` (a line of `ssh-keyscan -p 2222 h.com`",
    );
    let m = parse_str(&up("a", "ssh://git@git.example.com:2222/a/b.git", "/k")).unwrap();
    assert_eq!(
        (m.git[0].host.as_str(), m.git[0].port),
        ("git.example.com", 2222)
    );
    assert_eq!(m.git[0].known_host_key.as_deref(), Some("ssh-ed25519 AAAA"));
}

#[test]
fn push_policies_reach_git_gate_as_full_ref_patterns() {
    let text = "image: x\ngit:\n  - name: a\n    url: git@h.com:a/b\n    key: /k\n    known_host: ssh-ed25519 AAAA\n    push: {allow: ['bottle/me/*', 'refs/heads/x'], force: true}\n  - {name: b, url: 'git@h.com:b', key: /k, known_host: ssh-ed25519 A}\n";
    let m = parse_str(text).unwrap();
    // A repo with no `push:` gets the default, spelled out: the agent's own branches only.
    assert_eq!(
        m.settings["git-gate"]["push"],
        serde_json::json!({
            "a": {"allow": ["refs/heads/bottle/me/*", "refs/heads/x"], "allow_force": true, "max_refs": 64},
            "b": {"allow": ["refs/heads/bottle/demo/*"], "max_refs": 64},
        })
    );
    let m = parse_str(&text.replace(
        "push: {allow: ['bottle/me/*', 'refs/heads/x'], force: true}",
        "push: {allow_ci_changes: true}",
    ))
    .unwrap();
    assert_eq!(
        m.settings["git-gate"]["push"]["a"],
        serde_json::json!({"allow": ["refs/heads/bottle/demo/*"], "allow_ci_changes": true, "max_refs": 64})
    );
    fails(
        &text.replace("['bottle/me/*', 'refs/heads/x']", "[]"),
        "git[0].push.allow",
        "push nowhere",
    );
    fails(
        &text.replace("'bottle/me/*'", "'../x'"),
        "git[0].push.allow[0]",
        "branch pattern",
    );
    fails(
        &text.replace("force: true", "forse: true"),
        "git[0].push",
        "forse",
    );
    fails(
        "image: x\nplugins:\n  git-gate:\n    push: {}\n",
        "plugins.git-gate.push",
        "git[i].push",
    );
}

#[test]
fn env_and_secrets_are_checked() {
    fails(
        "image: x\nenv:\n  HTTP_PROXY: http://evil\n",
        "env.HTTP_PROXY",
        "bottle sets this",
    );
    fails("image: x\nenv:\n  1BAD: x\n", "env.1BAD", "env names");
    fails(
        "image: x\nenv:\n  TOKEN: x\nsecrets: [TOKEN]\n",
        "secrets[0]",
        "set twice",
    );
    fails(
        "image: x\nsecrets: [\"a-b\"]\n",
        "secrets[0]",
        "env var names",
    );
}

#[test]
fn required_and_malformed_basics() {
    fails("command: [claude]\n", "", "missing field `image`");
    fails("image: \"\"\n", "image", "empty");
    fails("image: x\nworkdir: work\n", "workdir", "absolute");
    fails("image: x\ncommand: []\n", "command", "empty");
    fails("image: x\ncwd: share\n", "cwd", "unknown variant `share`");
    fails("image: x\nsupervise: maybe\n", "supervise", "invalid type");
    fails("- image: x\n", "", "invalid type");
    fails(
        "image: x\nplugins:\n  hello:\n    grants: [rooot]\n",
        "plugins.hello.grants",
        "is not a grant",
    );
    fails(
        "image: x\nplugins:\n  hello:\n    grants: [root]\n",
        "plugins.hello.grants",
        "pass `--grant agent=root`",
    );
    fails(
        "image: x\nplugins:\n  hello:\n    grants: privileged\n",
        "plugins.hello.grants",
        "list of grants",
    );
}

#[test]
fn the_file_name_is_the_agent_name() {
    let err = parse(Path::new("agents/My Agent.yaml"), "image: x\n", &env()).unwrap_err();
    assert!(err.to_string().contains("rename the file"), "{err}");
}

#[test]
fn user_and_resources_parse_with_defaults_and_bad_ones_say_how() {
    use crate::run::confine::{DEFAULT_MEMORY, DEFAULT_PIDS, UserChoice};
    let m = parse_str("image: x\n").unwrap();
    assert_eq!(m.user, UserChoice::Invoker);
    assert_eq!(
        (m.resources.memory, m.resources.pids, m.resources.nano_cpus),
        (DEFAULT_MEMORY, DEFAULT_PIDS, None)
    );
    let m =
        parse_str("image: x\nuser: \"2000:2000\"\nresources: {memory: 2g, pids: 512, cpus: 1.5}\n")
            .unwrap();
    assert_eq!(m.user, UserChoice::Named("2000:2000".into()));
    assert_eq!(
        (m.resources.memory, m.resources.pids, m.resources.nano_cpus),
        (2 << 30, 512, Some(1_500_000_000))
    );
    fails("image: x\nuser: \"a b\"\n", "user", "give `UID`");
    fails(
        "image: x\nresources: {memory: lots}\n",
        "resources.memory",
        "not a size",
    );
    fails(
        "image: x\nresources: {memory: 1m}\n",
        "resources.memory",
        "at least `64m`",
    );
    fails(
        "image: x\nresources: {pids: 2}\n",
        "resources.pids",
        "from 16",
    );
    fails(
        "image: x\nresources: {cpus: 0}\n",
        "resources.cpus",
        "number of CPUs",
    );
    fails(
        "image: x\nresources: {disk: 1g}\n",
        "resources",
        "unknown field `disk`",
    );
}

/// The bundle has limits whether or not the manifest says so; `resources.bundle` changes
/// them, checked like the agent's, and leaves the agent's alone.
#[test]
fn the_bundle_has_limits_by_default_and_resources_bundle_sets_them() {
    use crate::run::confine::{BUNDLE_MEMORY, BUNDLE_PIDS, DEFAULT_MEMORY};
    let m = parse_str("image: x\n").unwrap();
    assert_eq!(
        (
            m.bundle_resources.memory,
            m.bundle_resources.pids,
            m.bundle_resources.nano_cpus
        ),
        (BUNDLE_MEMORY, BUNDLE_PIDS, None)
    );
    let m = parse_str("image: x\nresources: {bundle: {memory: 1g, cpus: 0.5}}\n").unwrap();
    assert_eq!(
        (
            m.bundle_resources.memory,
            m.bundle_resources.pids,
            m.bundle_resources.nano_cpus
        ),
        (1 << 30, BUNDLE_PIDS, Some(500_000_000))
    );
    assert_eq!(m.resources.memory, DEFAULT_MEMORY);
    fails(
        "image: x\nresources: {bundle: {memory: 10m}}\n",
        "resources.bundle.memory",
        "at least `64m`",
    );
    fails(
        "image: x\nresources: {bundle: {pids: 1}}\n",
        "resources.bundle.pids",
        "default 1024",
    );
    fails(
        "image: x\nresources: {bundle: {cpus: -1}}\n",
        "resources.bundle.cpus",
        "number of CPUs",
    );
    fails(
        "image: x\nresources: {bundle: {swap: 1g}}\n",
        "resources.bundle",
        "unknown field `swap`",
    );
}

#[test]
fn errors_point_at_the_field_not_a_comment_or_an_earlier_equal_value() {
    let err = parse_str(
        "image: x\n# two routes for api.github.com below\negress:\n  routes:\n    - host: api.github.com\n    - host: api.github.com\n",
    )
    .unwrap_err();
    assert_eq!(
        (err.line, err.column),
        (Some(6), Some(13)),
        "the second route's host: {err}"
    );
    let err = parse_str("image: x\n# secrets: [BAD-NAME]\nsecrets: [OK, BAD-NAME]\n").unwrap_err();
    assert_eq!((err.line, err.column), (Some(3), Some(15)), "{err}");
    let err = parse_str(
        "image: x\negress:\n  routes:\n    - host: a.example\n      auth: {scheme: Bearer}\n",
    )
    .unwrap_err();
    assert_eq!(err.field, "egress.routes[0].auth.token_ref");
    assert_eq!(
        err.line,
        Some(5),
        "a missing key is shown at its parent: {err}"
    );
}

#[test]
fn home_paths_expand_with_the_given_env_only() {
    let text = "image: x\ngit:\n  - {name: a, url: 'git@h.com:a/b', key: ~/.ssh/id, known_host: ssh-ed25519 A}\n";
    let m = parse_str(text).unwrap();
    assert_eq!(m.git[0].key_file, "/home/u/.ssh/id");
    let err = parse(Path::new("agents/demo.yaml"), text, &HostEnv::default()).unwrap_err();
    assert!(err.message.contains("`~/` needs HOME"), "{err}");
}

#[test]
fn route_rules_reach_egress_by_route_and_bad_ones_name_the_field() {
    let m = parse_str(
        "image: x\negress:\n  routes:\n    - host: a.com\n    - host: api.github.com\n      auth: {scheme: Bearer, token_ref: GH}\n      methods: [GET, POST]\n      deny: [{methods: [POST], path: /repos/o/r/hooks}]\n      allow: [{methods: [PUT], path: \"/repos/o/r/contents/docs/**\"}]\n",
    )
    .unwrap();
    let rules = &m.settings["egress"]["route_rules"];
    assert!(rules.get("0").is_none(), "{rules}");
    assert_eq!(rules["1"]["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(rules["1"]["deny"][0]["path"], "/repos/o/r/hooks");
    assert_eq!(
        rules["1"]["allow"][0]["methods"],
        serde_json::json!(["PUT"])
    );
    for (rule, field, needle) in [
        (
            "methods: [get]",
            "egress.routes[0].methods[0]",
            "upper case",
        ),
        (
            "deny: [{path: /a/b*}]",
            "egress.routes[0].deny[0].path",
            "whole segment",
        ),
        (
            "allow: [{path: repos}]",
            "egress.routes[0].allow[0].path",
            "start with `/`",
        ),
        (
            "deny: [{method: [GET], path: /a}]",
            "egress.routes[0].deny[0]",
            "unknown field",
        ),
    ] {
        fails(
            &format!("image: x\negress:\n  routes:\n    - host: a.com\n      {rule}\n"),
            field,
            needle,
        );
    }
    fails(
        "image: x\nplugins:\n  egress:\n    route_rules: {}\n",
        "plugins.egress.route_rules",
        "under `egress.routes`",
    );
    for key in ["route_grants", "ended_grants"] {
        fails(
            &format!("image: x\nplugins:\n  egress:\n    {key}: {{}}\n"),
            &format!("plugins.egress.{key}"),
            "bottle approve --for",
        );
    }
}

#[test]
fn a_dlp_policy_reaches_egress_and_bad_ones_name_the_field() {
    let m = parse_str(
        "image: x\negress:\n  dlp:\n    mode: log\n    allow:\n    - {rule: jwt, host: api.example.com, path: /auth/}\n    extra:\n    - {id: acme-key, regex: 'ACME-[0-9]{6}', validator: entropy}\n",
    )
    .unwrap();
    assert_eq!(m.dlp.allow[0].rule, "jwt");
    let egress = &m.settings["egress"];
    assert_eq!(egress["dlp"]["mode"], "log");
    assert_eq!(egress["dlp"]["extra"][0]["id"], "acme-key");
    // The default policy adds nothing to the plugin's table.
    let plain = parse_str("image: x\n").unwrap();
    assert!(
        plain
            .settings
            .get("egress")
            .is_none_or(|e| e.get("dlp").is_none())
    );

    fails(
        "image: x\negress:\n  dlp:\n    allow: [{rule: 'secret:EGRESS_TOKEN_0', host: a.test}]\n",
        "egress.dlp.allow[0].rule",
        "never leaves",
    );
    fails(
        "image: x\negress:\n  dlp:\n    allow: [{rule: jwt, host: 'a b'}]\n",
        "egress.dlp.allow[0].host",
        "not a host name",
    );
    fails(
        "image: x\negress:\n  dlp:\n    extra: [{id: bad, regex: '(unclosed'}]\n",
        "egress.dlp.extra[0].regex",
        "not a usable regular expression",
    );
    fails(
        "image: x\negress:\n  dlp:\n    extra: [{id: empty, regex: 'a*'}]\n",
        "egress.dlp.extra[0].regex",
        "empty string",
    );
    let err = parse_str("image: x\negress:\n  dlp:\n    mode: warn\n").unwrap_err();
    assert!(err.field.starts_with("egress.dlp"), "{err}");
    assert!(err.to_string().contains("block"), "{err}");
    fails(
        "image: x\nplugins:\n  egress:\n    dlp: {mode: log}\n",
        "plugins.egress.dlp",
        "egress.dlp",
    );
    fails(
        "image: x\nplugins:\n  egress:\n    hosts: {a.test: 10.0.0.1}\n",
        "plugins.egress.hosts",
        "egress.hosts",
    );
}
