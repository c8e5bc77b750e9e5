//! Label keys bottle puts on every container, network and volume it creates.

/// The bottle's slug.
pub const SLUG: &str = "io.bottle.slug";
/// The agent's name.
pub const AGENT: &str = "io.bottle.agent";
/// `agent`, `sidecars` or `service`.
pub const ROLE: &str = "io.bottle.role";
/// The plugin that added a service.
pub const PLUGIN: &str = "io.bottle.plugin";
/// The annotation on a rendered ConfigMap or Secret naming where its data comes from
/// (`state:<path in the state dir>` or `host:<absolute path>`); the host fills it.
pub const SOURCE: &str = "io.bottle.source";
