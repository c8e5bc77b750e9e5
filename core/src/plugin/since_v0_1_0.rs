//! Bindings for API version 0.1.x (`wit/since_v0.1.0`) and their conversions to [`crate::model`].
//!
//! One module per API version (Zed's pattern): when 0.2.0 arrives it gets its own module beside
//! this one, and the host dispatches on the version a component exports.

use crate::model;
use semver::{Version, VersionReq};
use std::sync::LazyLock;

/// The oldest API version these bindings serve.
pub const MIN_VERSION: Version = Version::new(0, 1, 0);

/// Every version these bindings serve (`^0.1.0` means `>=0.1.0, <0.2.0`).
pub static SUPPORTED: LazyLock<VersionReq> =
    LazyLock::new(|| VersionReq::parse("^0.1.0").expect("static requirement parses"));

/// The sidecar world.
#[allow(missing_docs, reason = "generated bindings")]
pub mod sidecar {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/since_v0.1.0",
        world: "sidecar-plugin",
    });
}

/// The backend world; shares the `types` and `host` interfaces with [`sidecar`].
#[allow(missing_docs, reason = "generated bindings")]
pub mod backend {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/since_v0.1.0",
        world: "backend-plugin",
        with: {
            "bottle:plugin/types": super::sidecar::bottle::plugin::types,
            "bottle:plugin/host": super::sidecar::bottle::plugin::host,
        },
    });
}

pub use sidecar::bottle::plugin::host::Host as HostImports;
pub use sidecar::bottle::plugin::types as wit;

/// A guest value that breaks the contract's rules (a duplicate key, say).
pub type ContractViolation = String;

fn kvs(map: &model::EnvMap) -> Vec<wit::KeyValue> {
    map.iter()
        .map(|(k, v)| wit::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn env_map(list: Vec<wit::KeyValue>, what: &str) -> Result<model::EnvMap, ContractViolation> {
    let mut map = model::EnvMap::new();
    for wit::KeyValue { key, value } in list {
        if let Some(old) = map.insert(key.clone(), value.clone())
            && old != value
        {
            return Err(format!(
                "{what} sets env `{key}` twice, to {old:?} and to {value:?}"
            ));
        }
    }
    Ok(map)
}

impl From<wit::PluginInfo> for model::PluginInfo {
    fn from(i: wit::PluginInfo) -> Self {
        model::PluginInfo {
            name: i.name,
            kind: match i.kind {
                wit::PluginKind::Sidecar => model::PluginKind::Sidecar,
                wit::PluginKind::Backend => model::PluginKind::Backend,
            },
            version: i.version,
            summary: i.summary,
        }
    }
}

impl From<wit::PluginError> for model::PluginError {
    fn from(e: wit::PluginError) -> Self {
        match e {
            wit::PluginError::InvalidSettings(m) => model::PluginError::InvalidSettings(m),
            wit::PluginError::Unsupported(m) => model::PluginError::Unsupported(m),
            wit::PluginError::Internal(m) => model::PluginError::Internal(m),
        }
    }
}

/// The host's [`model::Bottle`] plus this plugin's settings, as the guest sees it.
pub fn bottle(b: &model::Bottle, settings: &str) -> wit::Bottle {
    wit::Bottle {
        slug: b.slug.clone(),
        agent: wit::Agent {
            name: b.agent.name.clone(),
            image: b.agent.image.clone(),
            command: b.agent.command.clone(),
            workdir: b.agent.workdir.clone(),
            env: kvs(&b.agent.env),
            secret_env: b.agent.secret_env.clone(),
        },
        git: b
            .git
            .iter()
            .map(|g| wit::GitUpstream {
                name: g.name.clone(),
                url: g.url.clone(),
                host: g.host.clone(),
                port: g.port,
                key_file: g.key_file.clone(),
                known_host_key: g.known_host_key.clone(),
            })
            .collect(),
        allowlist: b.allowlist.clone(),
        routes: b
            .routes
            .iter()
            .map(|r| wit::EgressRoute {
                host: r.host.clone(),
                path_allowlist: r.path_allowlist.clone(),
                auth: r.auth.as_ref().map(|a| wit::RouteAuth {
                    scheme: a.scheme.clone(),
                    token_ref: a.token_ref.clone(),
                }),
            })
            .collect(),
        supervise: b.supervise,
        settings: settings.to_owned(),
    }
}

impl From<wit::Plan> for model::Plan {
    fn from(p: wit::Plan) -> Self {
        model::Plan {
            active: p.active,
            files: p
                .files
                .into_iter()
                .map(|f| model::StagedFile {
                    path: f.path,
                    contents: f.contents,
                    mode: f.mode,
                })
                .collect(),
            cas: p
                .cas
                .into_iter()
                .map(|c| model::CaRequest {
                    id: c.id,
                    common_name: c.common_name,
                    combined_pem: c.combined_pem,
                    trusted_by_agent: c.trusted_by_agent,
                })
                .collect(),
            secrets: p.secrets.into_iter().map(secret_from).collect(),
            provides: p.provides.into_iter().map(endpoint_from).collect(),
        }
    }
}

fn secret_from(s: wit::SecretEnv) -> model::SecretEnv {
    model::SecretEnv {
        name: s.name,
        from_host_env: s.from_host_env,
    }
}

fn secret_to(s: &model::SecretEnv) -> wit::SecretEnv {
    wit::SecretEnv {
        name: s.name.clone(),
        from_host_env: s.from_host_env.clone(),
    }
}

fn endpoint_from(e: wit::Endpoint) -> model::Endpoint {
    model::Endpoint {
        name: e.name,
        url: e.url,
        priority: e.priority,
    }
}

/// The render context as the guest sees it.
pub fn render_context(c: &model::RenderContext, settings: &str) -> wit::RenderContext {
    wit::RenderContext {
        bottle: bottle(&c.bottle, settings),
        cas: c
            .cas
            .iter()
            .map(|p| wit::CaPaths {
                id: p.id.clone(),
                cert: p.cert.clone(),
                key: p.key.clone(),
                combined: p.combined.clone(),
            })
            .collect(),
        endpoints: c
            .endpoints
            .iter()
            .map(|e| wit::Endpoint {
                name: e.name.clone(),
                url: e.url.clone(),
                priority: e.priority,
            })
            .collect(),
    }
}

fn mount_from(m: wit::Mount) -> model::Mount {
    model::Mount {
        source: match m.source {
            wit::MountSource::State(p) => model::MountSource::State(p),
            wit::MountSource::Host(p) => model::MountSource::Host(p),
            wit::MountSource::Volume(v) => model::MountSource::Volume(v),
        },
        target: m.target,
        read_only: m.read_only,
    }
}

fn mount_to(m: &model::Mount) -> wit::Mount {
    wit::Mount {
        source: match &m.source {
            model::MountSource::State(p) => wit::MountSource::State(p.clone()),
            model::MountSource::Host(p) => wit::MountSource::Host(p.clone()),
            model::MountSource::Volume(v) => wit::MountSource::Volume(v.clone()),
        },
        target: m.target.clone(),
        read_only: m.read_only,
    }
}

fn daemon_from(d: wit::Daemon) -> Result<model::Daemon, ContractViolation> {
    Ok(model::Daemon {
        env: env_map(d.env, &format!("daemon `{}`", d.name))?,
        name: d.name,
        command: d.command,
        mounts: d.mounts.into_iter().map(mount_from).collect(),
        ports: d.ports,
        aliases: d.aliases,
        ready_check: d.ready_check,
    })
}

fn daemon_to(d: &model::Daemon) -> wit::Daemon {
    wit::Daemon {
        name: d.name.clone(),
        command: d.command.clone(),
        env: kvs(&d.env),
        mounts: d.mounts.iter().map(mount_to).collect(),
        ports: d.ports.clone(),
        aliases: d.aliases.clone(),
        ready_check: d.ready_check.clone(),
    }
}

fn role_from(r: wit::NetworkRole) -> model::NetworkRole {
    match r {
        wit::NetworkRole::Internal => model::NetworkRole::Internal,
        wit::NetworkRole::Egress => model::NetworkRole::Egress,
    }
}

fn role_to(r: model::NetworkRole) -> wit::NetworkRole {
    match r {
        model::NetworkRole::Internal => wit::NetworkRole::Internal,
        model::NetworkRole::Egress => wit::NetworkRole::Egress,
    }
}

fn service_from(s: wit::Service) -> Result<model::Service, ContractViolation> {
    Ok(model::Service {
        env: env_map(s.env, &format!("service `{}`", s.name))?,
        name: s.name,
        image: s.image,
        command: s.command,
        mounts: s.mounts.into_iter().map(mount_from).collect(),
        networks: s.networks.into_iter().map(role_from).collect(),
        aliases: s.aliases,
        user: s.user,
        read_only_root: s.read_only_root,
        health: s.health.map(|h| model::HealthCheck {
            test: h.test,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
        }),
        privileged: s.privileged,
        cap_add: s.cap_add,
        ports: s
            .ports
            .into_iter()
            .map(|p| model::PublishedPort {
                host_ip: p.host_ip,
                host_port: p.host_port,
                container_port: p.container_port,
            })
            .collect(),
    })
}

fn service_to(s: &model::Service) -> wit::Service {
    wit::Service {
        name: s.name.clone(),
        image: s.image.clone(),
        command: s.command.clone(),
        env: kvs(&s.env),
        mounts: s.mounts.iter().map(mount_to).collect(),
        networks: s.networks.iter().copied().map(role_to).collect(),
        aliases: s.aliases.clone(),
        user: s.user.clone(),
        read_only_root: s.read_only_root,
        health: s.health.as_ref().map(|h| wit::HealthCheck {
            test: h.test.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
        }),
        privileged: s.privileged,
        cap_add: s.cap_add.clone(),
        ports: s
            .ports
            .iter()
            .map(|p| wit::PublishedPort {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                container_port: p.container_port,
            })
            .collect(),
    }
}

fn mcp_from(m: wit::McpServer) -> model::McpServer {
    model::McpServer {
        name: m.name,
        url: m.url,
    }
}

fn mcp_to(m: &model::McpServer) -> wit::McpServer {
    wit::McpServer {
        name: m.name.clone(),
        url: m.url.clone(),
    }
}

/// The guest's fragment in host types.
pub fn fragment(f: wit::Fragment) -> Result<model::Fragment, ContractViolation> {
    Ok(model::Fragment {
        daemons: f
            .daemons
            .into_iter()
            .map(daemon_from)
            .collect::<Result<_, _>>()?,
        services: f
            .services
            .into_iter()
            .map(service_from)
            .collect::<Result<_, _>>()?,
        patches: f
            .patches
            .into_iter()
            .map(|p| {
                Ok(model::Patch {
                    env: env_map(p.env, &format!("patch of `{}`", p.target))?,
                    target: p.target,
                    mounts: p.mounts.into_iter().map(mount_from).collect(),
                    no_proxy: p.no_proxy,
                    mcp_servers: p.mcp_servers.into_iter().map(mcp_from).collect(),
                })
            })
            .collect::<Result<_, ContractViolation>>()?,
        volumes: f.volumes,
    })
}

/// The merged stack plus the backend's settings, as the guest sees it.
pub fn stack(s: &model::Stack, settings: &str) -> wit::Stack {
    wit::Stack {
        slug: s.slug.clone(),
        state_dir: s.state_dir.clone(),
        agent: wit::AgentSpec {
            name: s.agent.name.clone(),
            image: s.agent.image.clone(),
            command: s.agent.command.clone(),
            workdir: s.agent.workdir.clone(),
            env: kvs(&s.agent.env),
            secret_env: s.agent.secret_env.clone(),
            mounts: s.agent.mounts.iter().map(mount_to).collect(),
            mcp_servers: s.agent.mcp_servers.iter().map(mcp_to).collect(),
        },
        bundle: s
            .bundle
            .iter()
            .map(|d| wit::OwnedDaemon {
                plugin: d.plugin.clone(),
                daemon: daemon_to(&d.daemon),
            })
            .collect(),
        bundle_secrets: s.bundle_secrets.iter().map(secret_to).collect(),
        services: s
            .services
            .iter()
            .map(|o| wit::OwnedService {
                plugin: o.plugin.clone(),
                service: service_to(&o.service),
            })
            .collect(),
        volumes: s.volumes.clone(),
        settings: settings.to_owned(),
    }
}

/// The guest's deployment in host types.
pub fn deployment(d: wit::Deployment) -> model::Deployment {
    model::Deployment {
        project: d.project,
        documents: d
            .documents
            .into_iter()
            .map(|doc| model::Document {
                path: doc.path,
                contents: doc.contents,
                mode: doc.mode,
            })
            .collect(),
    }
}
