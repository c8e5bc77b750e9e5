//! The host's own types for everything that crosses the plugin boundary, and the plan.
//!
//! Each WIT API version converts to and from these in its bindings module
//! (`core/src/plugin/since_v0_1_0.rs`), so merge, policy and the plan format never depend on
//! one ABI version. They serialise to the plan JSON that `bottle run --dry-run --json` prints.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An ordered map of env (or label) names to values.
pub type EnvMap = BTreeMap<String, String>;

/// A plugin's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Adds daemons, services or patches to a bottle.
    Sidecar,
    /// Turns the merged stack into an engine's documents.
    Backend,
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginKind::Sidecar => "sidecar",
            PluginKind::Backend => "backend",
        })
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Unique name; also its manifest settings key.
    pub name: String,
    /// Sidecar or backend.
    pub kind: PluginKind,
    /// The plugin's own version.
    pub version: String,
    /// One line for listings.
    pub summary: String,
}

/// A git upstream reached through git-gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitUpstream {
    /// Short repo name (`git://git-gate/<name>.git`).
    pub name: String,
    /// The real SSH URL.
    pub url: String,
    /// Host part of the URL.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Host path of the private key git-gate pushes with.
    pub key_file: String,
    /// The pinned known-host key, if any.
    pub known_host_key: Option<String>,
}

/// Credential injection for a route; `token_ref` names a host env var.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAuth {
    /// `Bearer` or `token`.
    pub scheme: String,
    /// Host env var holding the token.
    pub token_ref: String,
}

/// One egress route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRoute {
    /// Host name, lower case.
    pub host: String,
    /// Absolute path prefixes; empty means all.
    pub path_allowlist: Vec<String>,
    /// Injected credential.
    pub auth: Option<RouteAuth>,
}

/// The agent as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Agent name.
    pub name: String,
    /// Container image.
    pub image: String,
    /// Default command.
    pub command: Vec<String>,
    /// Working dir inside the container.
    pub workdir: String,
    /// Plain env.
    pub env: EnvMap,
    /// Env names passed from the host at launch.
    pub secret_env: Vec<String>,
}

/// The validated manifest as every sidecar sees it (settings are added per plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bottle {
    /// `<agent>-<5 base36>`.
    pub slug: String,
    /// The agent.
    pub agent: Agent,
    /// Git upstreams.
    pub git: Vec<GitUpstream>,
    /// Extra allowed hosts.
    pub allowlist: Vec<String>,
    /// Egress routes.
    pub routes: Vec<EgressRoute>,
    /// Whether supervise is on.
    pub supervise: bool,
}

/// A file to write into the state dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Relative path inside the state dir.
    pub path: String,
    /// Contents.
    pub contents: String,
    /// Unix mode.
    pub mode: u32,
}

/// A CA to mint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRequest {
    /// Id, unique in the bottle.
    pub id: String,
    /// Subject common name.
    pub common_name: String,
    /// Also write cert and key in one PEM.
    pub combined_pem: bool,
    /// Add to the agent's trust store.
    pub trusted_by_agent: bool,
}

/// A host env var copied into the bundle's env at launch, by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretEnv {
    /// Name inside the sidecar.
    pub name: String,
    /// Host env var to read.
    pub from_host_env: String,
}

/// Something a plugin offers others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Well-known name (`agent-proxy`, `bundle-proxy`).
    pub name: String,
    /// URL.
    pub url: String,
    /// Highest wins among plugins offering one name.
    pub priority: u32,
}

/// A sidecar's answer to `prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// False when the plugin adds nothing to this bottle.
    pub active: bool,
    /// Files to stage.
    pub files: Vec<StagedFile>,
    /// CAs to mint.
    pub cas: Vec<CaRequest>,
    /// Secret env for the bundle.
    pub secrets: Vec<SecretEnv>,
    /// Endpoints offered.
    pub provides: Vec<Endpoint>,
}

/// Where the host puts one CA's files (relative to the state dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaPaths {
    /// The request's id.
    pub id: String,
    /// Certificate PEM.
    pub cert: String,
    /// SEC1 private key PEM (0600).
    pub key: String,
    /// Cert and key in one PEM, when asked for.
    pub combined: Option<String>,
}

/// Input of `render`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderContext {
    /// The bottle.
    pub bottle: Bottle,
    /// Paths of every CA in the bottle.
    pub cas: Vec<CaPaths>,
    /// The winning endpoint of every name.
    pub endpoints: Vec<Endpoint>,
}

/// Where a mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountSource {
    /// Relative to the state dir.
    State(String),
    /// Absolute host path (capability-checked).
    Host(String),
    /// Named volume.
    Volume(String),
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mount {
    /// Source.
    pub source: MountSource,
    /// Path inside the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// A container health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Exec-form test.
    pub test: Vec<String>,
    /// Interval.
    pub interval_ms: u32,
    /// Timeout.
    pub timeout_ms: u32,
    /// Retries.
    pub retries: u32,
}

/// A daemon in the sidecar bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// Name and hostname alias.
    pub name: String,
    /// Exec form.
    pub command: Vec<String>,
    /// Env.
    pub env: EnvMap,
    /// Mounts into the bundle.
    pub mounts: Vec<Mount>,
    /// Listening ports.
    pub ports: Vec<u16>,
    /// More aliases.
    pub aliases: Vec<String>,
    /// Readiness check, exec form.
    pub ready_check: Option<Vec<String>>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host IP.
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// Which bottle network a service joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkRole {
    /// No route out.
    Internal,
    /// The way out.
    Egress,
}

/// A plugin's own container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Exec form; empty keeps the image's.
    pub command: Vec<String>,
    /// Env.
    pub env: EnvMap,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Networks.
    pub networks: Vec<NetworkRole>,
    /// Hostname aliases.
    pub aliases: Vec<String>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    /// Read-only root filesystem.
    pub read_only_root: bool,
    /// Health check.
    pub health: Option<HealthCheck>,
    /// Privileged (capability).
    pub privileged: bool,
    /// Added kernel capabilities (capability).
    pub cap_add: Vec<String>,
    /// Published ports (capability).
    pub ports: Vec<PublishedPort>,
}

/// An MCP server for the agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct McpServer {
    /// Server name.
    pub name: String,
    /// URL.
    pub url: String,
}

/// Additions to another party's container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    /// `agent`, or a service or daemon name.
    pub target: String,
    /// Env to add.
    pub env: EnvMap,
    /// Mounts to add.
    pub mounts: Vec<Mount>,
    /// NO_PROXY additions (agent only).
    pub no_proxy: Vec<String>,
    /// MCP servers (agent only).
    pub mcp_servers: Vec<McpServer>,
}

/// A sidecar's answer to `render`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// Daemons for the bundle.
    pub daemons: Vec<Daemon>,
    /// Own services.
    pub services: Vec<Service>,
    /// Patches.
    pub patches: Vec<Patch>,
    /// Named volumes.
    pub volumes: Vec<String>,
}

/// The agent container after merging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// Agent name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Default command.
    pub command: Vec<String>,
    /// Working dir.
    pub workdir: String,
    /// Env.
    pub env: EnvMap,
    /// Env names from the host.
    pub secret_env: Vec<String>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// MCP servers.
    pub mcp_servers: Vec<McpServer>,
}

/// A bundle daemon and the plugin that added it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedDaemon {
    /// Plugin name.
    pub plugin: String,
    /// The daemon.
    pub daemon: Daemon,
}

/// A service and the plugin that added it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedService {
    /// Plugin name.
    pub plugin: String,
    /// The service.
    pub service: Service,
}

/// The merged bottle, input of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Slug.
    pub slug: String,
    /// Absolute state dir.
    pub state_dir: String,
    /// The agent.
    pub agent: AgentSpec,
    /// Bundle daemons, by name.
    pub bundle: Vec<OwnedDaemon>,
    /// Secret env of the bundle (names only).
    pub bundle_secrets: Vec<SecretEnv>,
    /// Own services, by name.
    pub services: Vec<OwnedService>,
    /// Named volumes.
    pub volumes: Vec<String>,
}

/// A document a backend wants written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Relative path in the state dir.
    pub path: String,
    /// Contents.
    pub contents: String,
    /// Unix mode.
    pub mode: u32,
}

/// A backend's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The engine's name for this bottle.
    pub project: String,
    /// Documents, main one first.
    pub documents: Vec<Document>,
}

/// An error a plugin returned (not a trap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PluginError {
    /// Bad settings; the message names the field.
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// The manifest asks for something the plugin cannot do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A bug in the plugin.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One plugin that took part, for `metadata.json` and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PluginKind,
    /// Its own version.
    pub version: String,
    /// API version.
    pub api: String,
    /// Where it came from.
    pub source: String,
    /// SHA-256 of its bytes.
    pub content_hash: String,
}

/// A sidecar's prepare result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarPlan {
    /// Plugin name.
    pub plugin: String,
    /// Its plan.
    pub plan: Plan,
}

/// Everything one bottle needs, computed without side effects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BottlePlan {
    /// Plugins that took part (active sidecars and the backend), by name.
    pub plugins: Vec<PluginRecord>,
    /// Active sidecars' plans.
    pub sidecars: Vec<SidecarPlan>,
    /// Where each CA's files go.
    pub cas: Vec<CaPaths>,
    /// Winning endpoints by name.
    pub endpoints: Vec<Endpoint>,
    /// The merged stack.
    pub stack: Stack,
    /// Backend name.
    pub backend: String,
    /// The backend's documents.
    pub deployment: Deployment,
}
