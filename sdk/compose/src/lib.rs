//! Compose documents from a bottle [`Stack`], for backend plugins.
//!
//! The subset of the Compose spec bottle uses, typed, plus the pieces both built-in backends
//! share: the sidecar bundle's service and its daemon list. Maps are `BTreeMap`s so the same
//! stack always renders the same bytes. The output is accepted by `docker compose` v2 and by
//! `docker-compose` 1.29.

use bottle_plugin_sdk::types::*;
use serde::Serialize;
use std::collections::BTreeMap;

/// Label keys bottle puts on everything it creates.
pub mod labels {
    /// The bottle's slug.
    pub const SLUG: &str = "io.bottle.slug";
    /// The agent's name.
    pub const AGENT: &str = "io.bottle.agent";
    /// `agent`, `sidecars` or `service`.
    pub const ROLE: &str = "io.bottle.role";
    /// The plugin that added a service.
    pub const PLUGIN: &str = "io.bottle.plugin";
}

/// In-bundle path of the daemon list the bundle's init reads.
pub const DAEMONS_IN_BUNDLE: &str = "/etc/bottle/daemons.json";
/// State-dir path of the daemon list.
pub const DAEMONS_STATE_PATH: &str = "bundle/daemons.json";
/// The bundle's init.
pub const BUNDLE_INIT: &str = "/usr/local/bin/bottle-init";

/// A Compose file.
#[derive(Debug, Serialize, Default)]
pub struct ComposeFile {
    /// Services by name.
    pub services: BTreeMap<String, ComposeService>,
    /// Networks by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ComposeNetwork>,
    /// Named volumes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, ComposeVolume>,
}

/// A Compose service.
#[derive(Debug, Serialize, Default)]
pub struct ComposeService {
    /// Image.
    pub image: String,
    /// Fixed container name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Entrypoint override.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Command.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Run docker's init as PID 1.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Working dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid[:gid]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Env; `None` values are passed from the launching process's env (secrets).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    /// Mounts, long syntax.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ComposeMount>,
    /// Networks and aliases.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ServiceNetwork>,
    /// Published ports, `ip:host:container`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Start order.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependsOn>,
    /// Health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<ComposeHealth>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Privileged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Added capabilities.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Security options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Read-only root.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Time between SIGTERM and SIGKILL on stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
}

/// A long-syntax mount.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ComposeMount {
    /// `bind` or `volume`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Host path or volume name.
    pub source: String,
    /// Container path.
    pub target: String,
    /// Read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A service's attachment to a network.
#[derive(Debug, Serialize, Default)]
pub struct ServiceNetwork {
    /// Hostname aliases on that network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A `depends_on` entry.
#[derive(Debug, Serialize)]
pub struct DependsOn {
    /// `service_started` or `service_healthy`.
    pub condition: &'static str,
}

/// A health check.
#[derive(Debug, Serialize)]
pub struct ComposeHealth {
    /// `["CMD", …]`.
    pub test: Vec<String>,
    /// e.g. `1s`.
    pub interval: String,
    /// e.g. `5s`.
    pub timeout: String,
    /// Retries.
    pub retries: u32,
}

/// A network.
#[derive(Debug, Serialize, Default)]
pub struct ComposeNetwork {
    /// Engine-wide name.
    pub name: String,
    /// Driver.
    pub driver: &'static str,
    /// No route out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The bridge option that gives the host no address on a network: an `internal` bridge
/// otherwise has the host as its gateway, and every host service listening on all addresses
/// is reachable from the agent there.
pub const INHIBIT_HOST_ADDRESS: (&str, &str) = ("com.docker.network.bridge.inhibit_ipv4", "true");

/// A named volume.
#[derive(Debug, Serialize, Default)]
pub struct ComposeVolume {
    /// Engine-wide name.
    pub name: String,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The daemon list the bundle's init reads.
#[derive(Debug, Serialize)]
pub struct DaemonList {
    /// Every secret env name of the bundle: the init hides each from the daemons not listed
    /// as seeing it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Daemons, by name.
    pub daemons: Vec<DaemonEntry>,
}

/// One daemon for the init.
#[derive(Debug, Serialize)]
pub struct DaemonEntry {
    /// Name, used as the log prefix.
    pub name: String,
    /// Exec form.
    pub command: Vec<String>,
    /// Readiness check, exec form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_check: Option<Vec<String>>,
    /// The secret env names this daemon sees: those of the plugin that added it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The ports it declares: the only ones the bundle may listen on beyond loopback.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// The prefix every secret env name of `plugin` carries (`egress` → `EGRESS_`); the host
/// refuses other names, so a secret reaches only the daemons of the plugin that asked for it.
pub fn secret_env_prefix(plugin: &str) -> String {
    format!("{}_", plugin.to_ascii_uppercase().replace('-', "_"))
}

/// Where the agent finds its MCP servers (Claude Code: `claude --mcp-config "$BOTTLE_MCP_CONFIG"`).
pub const MCP_CONFIG_IN_AGENT: &str = "/etc/bottle/mcp.json";
/// State-dir path of the agent's MCP config.
pub const MCP_CONFIG_STATE_PATH: &str = "agent/mcp.json";
/// The env var naming [`MCP_CONFIG_IN_AGENT`] for the agent.
pub const MCP_CONFIG_ENV: &str = "BOTTLE_MCP_CONFIG";

/// The agent's MCP config (`{"mcpServers": {name: {"type": "http", "url": …}}}`), when any
/// plugin registered a server.
pub fn mcp_config(stack: &Stack) -> Option<Document> {
    if stack.agent.mcp_servers.is_empty() {
        return None;
    }
    let servers: serde_json::Map<String, serde_json::Value> = stack
        .agent
        .mcp_servers
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                serde_json::json!({"type": "http", "url": m.url}),
            )
        })
        .collect();
    let contents = serde_json::to_string_pretty(&serde_json::json!({ "mcpServers": servers }))
        .expect("plain data serialises");
    Some(Document {
        path: MCP_CONFIG_STATE_PATH.into(),
        contents: contents + "\n",
        mode: 0o644,
    })
}

/// The engine-wide name of `slug`'s things: `bottle-<slug>`.
pub fn project(slug: &str) -> String {
    format!("bottle-{slug}")
}

/// The bundle container's name: `bottle-sidecars-<slug>`.
pub fn bundle_container(slug: &str) -> String {
    format!("bottle-sidecars-{slug}")
}

/// Labels for a thing of `role`.
pub fn labels_for(stack: &Stack, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::SLUG.to_owned(), stack.slug.clone()),
        (labels::AGENT.to_owned(), stack.agent.name.clone()),
        (labels::ROLE.to_owned(), role.to_owned()),
    ])
}

/// A mount in long syntax; state paths become absolute under the stack's state dir.
pub fn mount(stack: &Stack, m: &Mount, volume_prefix: &str) -> ComposeMount {
    let (kind, source) = match &m.source {
        MountSource::State(p) => (
            "bind",
            format!("{}/{p}", stack.state_dir.trim_end_matches('/')),
        ),
        MountSource::Host(p) => ("bind", p.clone()),
        MountSource::Volume(v) => ("volume", format!("{volume_prefix}{v}")),
    };
    ComposeMount {
        kind,
        source,
        target: m.target.clone(),
        read_only: m.read_only,
    }
}

/// The env of a container: plain values, then secret names passed from the launcher's env.
pub fn environment(
    env: &[KeyValue],
    secrets: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = env
        .iter()
        .map(|kv| (kv.key.clone(), Some(kv.value.clone())))
        .collect();
    for s in secrets {
        out.insert(s, None);
    }
    out
}

/// The daemon list document for the bundle's init.
pub fn daemon_list(stack: &Stack) -> Document {
    let secret_env: Vec<String> = stack
        .bundle_secrets
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let list = DaemonList {
        daemons: stack
            .bundle
            .iter()
            .map(|o| {
                let prefix = secret_env_prefix(&o.plugin);
                DaemonEntry {
                    name: o.daemon.name.clone(),
                    command: o.daemon.command.clone(),
                    ready_check: o.daemon.ready_check.clone(),
                    ports: o.daemon.ports.clone(),
                    secrets: secret_env
                        .iter()
                        .filter(|n| n.starts_with(&prefix))
                        .cloned()
                        .collect(),
                }
            })
            .collect(),
        secret_env,
    };
    Document {
        path: DAEMONS_STATE_PATH.into(),
        contents: serde_json::to_string_pretty(&list).expect("plain data serialises") + "\n",
        mode: 0o644,
    }
}

/// The sidecar bundle's service: every daemon's env, mounts and aliases in one container.
///
/// `networks` gives the compose network keys it joins; the aliases go on the first.
pub fn bundle_service(stack: &Stack, image: &str, networks: &[&str]) -> ComposeService {
    let mut env: Vec<KeyValue> = Vec::new();
    let mut mounts: Vec<ComposeMount> = Vec::new();
    let mut aliases: Vec<String> = Vec::new();
    for o in &stack.bundle {
        env.extend(o.daemon.env.iter().cloned());
        mounts.extend(
            o.daemon
                .mounts
                .iter()
                .map(|m| mount(stack, m, &format!("{}-", project(&stack.slug)))),
        );
        aliases.push(o.daemon.name.clone());
        aliases.extend(o.daemon.aliases.iter().cloned());
    }
    mounts.push(ComposeMount {
        kind: "bind",
        source: format!(
            "{}/{DAEMONS_STATE_PATH}",
            stack.state_dir.trim_end_matches('/')
        ),
        target: DAEMONS_IN_BUNDLE.into(),
        read_only: true,
    });
    mounts.sort_by(|a, b| a.target.cmp(&b.target));
    mounts.dedup();
    let has_ready = stack.bundle.iter().any(|o| o.daemon.ready_check.is_some());
    ComposeService {
        image: image.to_owned(),
        container_name: Some(bundle_container(&stack.slug)),
        entrypoint: vec![BUNDLE_INIT.into()],
        command: vec![DAEMONS_IN_BUNDLE.into()],
        environment: environment(&env, stack.bundle_secrets.iter().map(|s| s.name.clone())),
        volumes: mounts,
        networks: networks
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let aliases = if i == 0 { aliases.clone() } else { vec![] };
                ((*n).to_owned(), ServiceNetwork { aliases })
            })
            .collect(),
        healthcheck: has_ready.then(|| ComposeHealth {
            test: vec![
                "CMD".into(),
                BUNDLE_INIT.into(),
                "ready".into(),
                DAEMONS_IN_BUNDLE.into(),
            ],
            interval: "1s".into(),
            timeout: "5s".into(),
            retries: 60,
        }),
        labels: labels_for(stack, "sidecars"),
        stop_grace_period: Some("10s".into()),
        ..ComposeService::default()
    }
}

/// Render a compose file as YAML.
pub fn to_yaml(file: &ComposeFile) -> Result<String, PluginError> {
    serde_yaml::to_string(file)
        .map_err(|e| PluginError::Internal(format!("rendering compose YAML: {e}")))
}
