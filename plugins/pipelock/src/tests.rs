use super::*;
use bottle_plugin_sdk::testing;

fn yaml_of(plan: &Plan) -> serde_yaml::Value {
    serde_yaml::from_str(&plan.files[0].contents).unwrap()
}

#[test]
fn always_active_with_strict_mode_and_forward_proxy() {
    let plan = Pipelock::prepare(&testing::bottle(), &Settings::default()).unwrap();
    assert!(plan.active);
    let y = yaml_of(&plan);
    assert_eq!(y["mode"], "strict");
    assert_eq!(y["enforce"], true);
    assert_eq!(y["forward_proxy"]["enabled"], true);
    assert_eq!(plan.files[0].mode, 0o600);
}

#[test]
fn allowlist_is_the_bottles_and_the_routes_but_never_git_hosts() {
    let mut b = testing::bottle();
    b.allowlist = vec!["PyPI.org".into(), "api.anthropic.com".into()];
    b.routes = vec![EgressRoute {
        host: "api.github.com".into(),
        path_allowlist: vec![],
        auth: None,
    }];
    b.git = vec![testing::upstream("repo")];
    let y = yaml_of(&Pipelock::prepare(&b, &Settings::default()).unwrap());
    let hosts: Vec<&str> = y["api_allowlist"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["api.anthropic.com", "api.github.com", "pypi.org"]);
    assert!(!hosts.contains(&"github.com"));
    assert!(!y.as_mapping().unwrap().contains_key("trusted_domains"));
    assert!(!y.as_mapping().unwrap().contains_key("ssrf"));
}

#[test]
fn the_old_default_allowlist_setting_points_to_its_new_place() {
    let mut b = testing::bottle();
    b.settings = r#"{"no_default_allowlist": true}"#.into();
    let err = bottle_plugin_sdk::plugin::prepare::<Pipelock>(b).unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidSettings(m) if m.contains("egress: {default_allowlist: false}")),
        "{err:?}"
    );
}

#[test]
fn strict_mode_with_nothing_allowed_is_refused_with_the_fix() {
    let mut b = testing::bottle();
    b.allowlist = vec![];
    let err = Pipelock::prepare(&b, &Settings::default()).unwrap_err();
    assert!(
        matches!(&err, PluginError::Unsupported(m) if m.contains("egress.default_allowlist: false")),
        "{err:?}"
    );
}

#[test]
fn tls_interception_uses_fixed_in_container_paths() {
    let plan = Pipelock::prepare(&testing::bottle(), &Settings::default()).unwrap();
    let y = yaml_of(&plan);
    assert_eq!(y["tls_interception"]["enabled"], true);
    assert_eq!(y["tls_interception"]["ca_cert"], CA_CERT_IN_CONTAINER);
    assert_eq!(y["tls_interception"]["ca_key"], CA_KEY_IN_CONTAINER);
    assert_eq!(plan.cas.len(), 1);
    assert!(
        !plan.cas[0].trusted_by_agent,
        "egress is always in front: the agent never sees pipelock's certificates"
    );
    assert!(
        plan.provides.iter().all(|e| e.name != "agent-proxy"),
        "the agent never reaches pipelock directly"
    );
}

#[test]
fn no_tls_block_without_interception() {
    let mut b = testing::bottle();
    b.settings = r#"{"no_tls_interception": true}"#.into();
    let plan = bottle_plugin_sdk::plugin::prepare::<Pipelock>(b).unwrap();
    assert!(
        !yaml_of(&plan)
            .as_mapping()
            .unwrap()
            .contains_key("tls_interception")
    );
    assert!(plan.cas.is_empty());
}

#[test]
fn a_half_set_ca_pair_is_an_error() {
    let mut b = testing::bottle();
    b.settings = r#"{"ca_cert": "/x.pem"}"#.into();
    let err = bottle_plugin_sdk::plugin::prepare::<Pipelock>(b).unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidSettings(m) if m.contains("go together")),
        "{err:?}"
    );
}

#[test]
fn unknown_settings_are_errors() {
    let mut b = testing::bottle();
    b.settings = r#"{"moed": "audit"}"#.into();
    let err = bottle_plugin_sdk::plugin::prepare::<Pipelock>(b).unwrap_err();
    assert!(
        matches!(&err, PluginError::InvalidSettings(m) if m.contains("moed")),
        "{err:?}"
    );
}

#[test]
fn render_mounts_config_and_ca_and_listens_on_8888() {
    let mut ctx = testing::render_context(testing::bottle());
    ctx.cas = vec![CaPaths {
        id: "pipelock".into(),
        cert: "ca/pipelock/cert.pem".into(),
        key: "ca/pipelock/key.pem".into(),
        combined: None,
    }];
    let f = Pipelock::render(&ctx, &Settings::default()).unwrap();
    let d = &f.daemons[0];
    assert_eq!(d.name, "pipelock");
    assert_eq!(d.ports, [8888]);
    let targets: Vec<&str> = d.mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(
        targets,
        [CONFIG_DIR, CA_CERT_IN_CONTAINER, CA_KEY_IN_CONTAINER],
        "the config is a directory mount, so a rename on the host is seen"
    );
    assert!(
        d.command
            .windows(2)
            .any(|w| w == ["--config", CONFIG_IN_CONTAINER])
    );
    assert!(d.mounts.iter().all(|m| m.read_only));
    assert!(
        d.command
            .windows(2)
            .any(|w| w == ["--listen", "127.0.0.1:8888"]),
        "pipelock listens on the bundle's loopback only: egress reaches it, the agent cannot"
    );
}
