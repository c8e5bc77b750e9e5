//! Compose documents from a bottle [`Stack`], for backend plugins.
//!
//! The schema (the subset of the Compose spec bottle uses), the state-dir layout and the label
//! keys are `bottle-contract`'s, re-exported here: the host reads back with the same types a
//! backend writes with. This crate adds the pieces both built-in backends share: the sidecar
//! bundle's service and the agent's MCP config. The bundle's daemon list is the host's to write
//! (`bundle/daemons.json`); a backend mounts it.

use bottle_plugin_sdk::types::*;
use std::collections::BTreeMap;

pub use bottle_contract::compose::{
    ComposeFile, ComposeHealth, ComposeMount, ComposeNetwork, ComposeService, ComposeVolume,
    DependsOn, INHIBIT_HOST_ADDRESS, SHARED_EGRESS_NETWORK, SHARED_EGRESS_OPTS, ServiceNetwork,
};
pub use bottle_contract::daemons::{DaemonEntry, DaemonList};
pub use bottle_contract::hop::{PLACEHOLDER as HOP_PLACEHOLDER, is_proxy_var};
pub use bottle_contract::labels;
pub use bottle_contract::layout::{
    AGENT_SERVICE, BUNDLE_COMPOSE_FILE, BUNDLE_IMAGE, BUNDLE_INIT, BUNDLE_SERVICE, COMPOSE_FILE,
    DAEMONS_IN_BUNDLE, DAEMONS_STATE_PATH, MCP_CONFIG_ENV, MCP_CONFIG_IN_AGENT,
    MCP_CONFIG_STATE_PATH, bundle_container, private_target, project,
};
pub use bottle_contract::names::{
    BUNDLE_ADDRESS_ENV, BUNDLE_ADDRESS_PLACEHOLDER, HOP_TOKEN_HOST_ENV, secret_env_prefix,
};

/// The agent's MCP config (`{"mcpServers": {name: {"type": "http", "url": …}}}`), when any
/// plugin registered a server. A server in the bundle gets the hop token as its bearer
/// (`headers: {Authorization: "Bearer @BOTTLE_HOP_TOKEN@"}`; the host fills it in): the
/// bundle's daemons serve only the agent.
pub fn mcp_config(stack: &Stack) -> Option<Document> {
    if stack.agent.mcp_servers.is_empty() {
        return None;
    }
    let in_bundle = |url: &str| {
        let host = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        stack
            .bundle
            .iter()
            .any(|o| o.daemon.name == host || o.daemon.aliases.iter().any(|a| a == host))
    };
    let servers: serde_json::Map<String, serde_json::Value> = stack
        .agent
        .mcp_servers
        .iter()
        .map(|m| {
            let mut server = serde_json::json!({"type": "http", "url": m.url});
            if in_bundle(&m.url) {
                server["headers"] = serde_json::json!({
                    "Authorization": format!("Bearer {}", bottle_contract::hop::PLACEHOLDER)
                });
            }
            (m.name.clone(), server)
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

/// Refuse `stack`'s plugin services on a backend that runs `what` alone (`"the agent and the
/// sidecar bundle"`): the error names the services and the backend that runs them.
pub fn refuse_services(stack: &Stack, backend: &str, what: &str) -> Result<(), PluginError> {
    if stack.services.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = stack
        .services
        .iter()
        .map(|o| o.service.name.as_str())
        .collect();
    Err(PluginError::Unsupported(format!(
        "the {backend} backend runs only {what}, not services ({}); use the docker backend",
        names.join(", ")
    )))
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
        kind: kind.to_owned(),
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

/// The sidecar bundle's service: every daemon's env, mounts and aliases in one container.
///
/// `networks` gives the compose network keys it joins; the aliases go on the first.
pub fn bundle_service(stack: &Stack, image: &str, networks: &[&str]) -> ComposeService {
    let mut env: Vec<KeyValue> = Vec::new();
    let mut mounts: Vec<ComposeMount> = Vec::new();
    let mut aliases: Vec<String> = Vec::new();
    for o in &stack.bundle {
        env.extend(o.daemon.env.iter().cloned());
        // A read-only mount is bound where the init installs it from (see
        // `bottle_contract::daemons::daemon_list`): a copy the daemon's user alone can read.
        mounts.extend(o.daemon.mounts.iter().enumerate().map(|(i, m)| {
            let mut bound = mount(stack, m, &format!("{}-", project(&stack.slug)));
            if m.read_only {
                bound.target = private_target(&o.daemon.name, i);
            }
            bound
        }));
        aliases.push(o.daemon.name.clone());
        aliases.extend(o.daemon.aliases.iter().cloned());
    }
    mounts.push(ComposeMount {
        kind: "bind".into(),
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
        labels: labels_for(stack, BUNDLE_SERVICE),
        stop_grace_period: Some("10s".into()),
        ..ComposeService::default()
    }
}

/// Render a compose file as YAML.
pub fn to_yaml(file: &ComposeFile) -> Result<String, PluginError> {
    serde_yaml::to_string(file)
        .map_err(|e| PluginError::Internal(format!("rendering compose YAML: {e}")))
}
