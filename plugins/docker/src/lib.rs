//! docker: the default backend. One compose project `bottle-<slug>` with:
//!
//! - `agent`: the agent's image, idling (`sleep infinity` under docker's init; bottle's own
//!   Docker driver starts it with the agent's command waiting for its go-ahead instead); only
//!   on the internal network;
//! - `sidecars`: one bundle container `bottle-sidecars-<slug>` running every sidecar daemon,
//!   with each daemon's name as a hostname alias; on the internal network and on the way out
//!   every bundle shares (`bottle-shared-egress`, whose members cannot reach each other);
//! - any service a plugin adds, on the networks it asks for.
//!
//! The internal network is `internal: true`: the agent has no route out but through the bundle.

use bottle_plugin_compose::*;
use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Compose key of the agent's network.
pub const INTERNAL: &str = "internal";
/// Compose key of the way out the bundle shares with every other bottle's bundle.
pub const EGRESS: &str = "egress";
/// Compose key of this bottle's own way out, for a plugin's service granted one: only the
/// bundle joins the shared bridge, where a container could reach other bottles' bundles at
/// the link layer.
pub const OWN_EGRESS: &str = "own-egress";

/// `plugins.docker` in the manifest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The sidecar bundle image (default `bottle-sidecars:latest`).
    pub bundle_image: Option<String>,
}

/// The network a plugin's service with `role` joins.
fn network_key(role: &NetworkRole) -> &'static str {
    match role {
        NetworkRole::Internal => INTERNAL,
        NetworkRole::Egress => OWN_EGRESS,
    }
}

/// The compose file for `stack`.
pub fn compose(stack: &Stack, settings: &Settings) -> ComposeFile {
    let project = project(&stack.slug);
    let volume_prefix = format!("{project}-");
    let bundle_image = settings
        .bundle_image
        .clone()
        .unwrap_or_else(|| BUNDLE_IMAGE.to_owned());
    let mut services = BTreeMap::new();

    let mut agent_volumes: Vec<ComposeMount> = stack
        .agent
        .mounts
        .iter()
        .map(|m| mount(stack, m, &volume_prefix))
        .collect();
    let mut agent_env = environment(&stack.agent.env, stack.agent.secret_env.iter().cloned());
    if !stack.agent.mcp_servers.is_empty() {
        agent_volumes.push(ComposeMount {
            kind: "bind".into(),
            source: format!(
                "{}/{MCP_CONFIG_STATE_PATH}",
                stack.state_dir.trim_end_matches('/')
            ),
            target: MCP_CONFIG_IN_AGENT.into(),
            read_only: true,
        });
        agent_env.insert(MCP_CONFIG_ENV.into(), Some(MCP_CONFIG_IN_AGENT.into()));
    }
    agent_volumes.sort_by(|a, b| a.target.cmp(&b.target));
    let mut depends_on = BTreeMap::new();
    if !stack.bundle.is_empty() {
        let condition = if stack.bundle.iter().any(|o| o.daemon.ready_check.is_some()) {
            "service_healthy"
        } else {
            "service_started"
        };
        depends_on.insert(
            BUNDLE_SERVICE.to_owned(),
            DependsOn {
                condition: condition.into(),
            },
        );
        services.insert(
            BUNDLE_SERVICE.to_owned(),
            bundle_service(stack, &bundle_image, &[INTERNAL, EGRESS]),
        );
    }
    services.insert(
        AGENT_SERVICE.to_owned(),
        ComposeService {
            image: stack.agent.image.clone(),
            container_name: Some(format!("bottle-agent-{}", stack.slug)),
            // The agent idles; `bottle run` execs its command with the user's terminal attached.
            entrypoint: vec!["sleep".into(), "infinity".into()],
            init: true,
            working_dir: Some(stack.agent.workdir.clone()),
            environment: agent_env,
            volumes: agent_volumes,
            networks: BTreeMap::from([(INTERNAL.to_owned(), ServiceNetwork::default())]),
            depends_on,
            labels: labels_for(stack, AGENT_SERVICE),
            security_opt: vec!["no-new-privileges:true".into()],
            stop_grace_period: Some("2s".into()),
            ..ComposeService::default()
        },
    );
    for o in &stack.services {
        let s = &o.service;
        let mut labels = labels_for(stack, "service");
        labels.insert(labels::PLUGIN.into(), o.plugin.clone());
        let mut networks: BTreeMap<String, ServiceNetwork> = BTreeMap::new();
        for (i, role) in s.networks.iter().enumerate() {
            let aliases = if i == 0 { s.aliases.clone() } else { vec![] };
            networks.insert(network_key(role).to_owned(), ServiceNetwork { aliases });
        }
        services.insert(
            s.name.clone(),
            ComposeService {
                image: s.image.clone(),
                container_name: Some(format!("bottle-{}-{}", s.name, stack.slug)),
                command: s.command.clone(),
                user: s.user.clone(),
                environment: environment(&s.env, std::iter::empty()),
                volumes: s
                    .mounts
                    .iter()
                    .map(|m| mount(stack, m, &volume_prefix))
                    .collect(),
                networks,
                ports: s
                    .ports
                    .iter()
                    .map(|p| format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port))
                    .collect(),
                healthcheck: s.health.as_ref().map(|h| ComposeHealth {
                    test: h.test.clone(),
                    interval: format!("{}ms", h.interval_ms),
                    timeout: format!("{}ms", h.timeout_ms),
                    retries: h.retries,
                }),
                labels,
                privileged: s.privileged,
                cap_add: s.cap_add.clone(),
                read_only: s.read_only_root,
                ..ComposeService::default()
            },
        );
    }
    let mut networks = BTreeMap::from([
        (
            INTERNAL.to_owned(),
            ComposeNetwork {
                name: format!("{project}-internal"),
                driver: "bridge".into(),
                internal: true,
                // The host gets no address on it, so it is no gateway to the host either.
                driver_opts: [INHIBIT_HOST_ADDRESS]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .into(),
                labels: labels_for(stack, "network"),
                ..ComposeNetwork::default()
            },
        ),
        (
            EGRESS.to_owned(),
            // One bridge every bundle shares, made and kept by the host.
            ComposeNetwork {
                name: SHARED_EGRESS_NETWORK.into(),
                external: true,
                ..ComposeNetwork::default()
            },
        ),
    ]);
    if services
        .values()
        .any(|s| s.networks.contains_key(OWN_EGRESS))
    {
        networks.insert(
            OWN_EGRESS.to_owned(),
            ComposeNetwork {
                name: format!("{project}-egress"),
                driver: "bridge".into(),
                labels: labels_for(stack, "network"),
                ..ComposeNetwork::default()
            },
        );
    }
    let volumes = stack
        .volumes
        .iter()
        .map(|v| {
            (
                v.clone(),
                ComposeVolume {
                    name: format!("{volume_prefix}{v}"),
                    labels: labels_for(stack, "volume"),
                },
            )
        })
        .collect();
    ComposeFile {
        services,
        networks,
        volumes,
    }
}

/// The plugin.
pub struct Docker;

impl Backend for Docker {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "docker".into(),
            kind: PluginKind::Backend,
            version: env!("CARGO_PKG_VERSION").into(),
            summary:
                "one compose project: the agent on an internal network, sidecars in one bundle"
                    .into(),
        }
    }

    fn render(stack: &Stack, settings: &Settings) -> Result<Deployment, PluginError> {
        let file = compose(stack, settings);
        let mut documents = vec![Document {
            path: COMPOSE_FILE.into(),
            contents: to_yaml(&file)?,
            mode: 0o600,
        }];
        documents.extend(mcp_config(stack));
        Ok(Deployment {
            project: project(&stack.slug),
            documents,
        })
    }
}

#[cfg(feature = "export")]
bottle_plugin_sdk::export!(backend Docker);

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_plugin_sdk::testing;

    #[test]
    fn the_agent_is_internal_only_and_its_secrets_are_names() {
        let file = compose(&testing::stack(), &Settings::default());
        let agent = &file.services["agent"];
        assert_eq!(
            agent.environment["ANTHROPIC_API_KEY"], None,
            "the value is passed at launch, never written"
        );
        assert_eq!(
            agent.environment[MCP_CONFIG_ENV].as_deref(),
            Some(MCP_CONFIG_IN_AGENT)
        );
        assert_eq!(agent.networks.keys().collect::<Vec<_>>(), [INTERNAL]);
        assert!(file.networks[INTERNAL].internal);
        assert!(!file.networks[EGRESS].internal);
        let bundle = &file.services["sidecars"];
        assert_eq!(
            bundle.networks.keys().collect::<Vec<_>>(),
            [EGRESS, INTERNAL],
            "only the bundle is dual-homed"
        );
    }

    #[test]
    fn unknown_settings_are_refused() {
        let mut stack = testing::stack();
        stack.settings = r#"{"bundle_imag": "x"}"#.into();
        let err = bottle_plugin_sdk::plugin::render_backend::<Docker>(stack).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidSettings(m) if m.contains("bundle_imag")),
            "{err:?}"
        );
    }
}
