//! Where things live: the files of a bottle's state dir and their modes, and the paths bottle
//! owns inside its containers.

/// Files of the state dir that belong to the host: no plugin may stage, mount or overwrite them.
pub const HOST_FILES: &[&str] = &["metadata.json", "plan.json", "compose.log"];
/// The host's record of a run (agent, manifest, plugins, start time).
pub const METADATA_FILE: &str = "metadata.json";
/// The full plan, as `--dry-run --json` prints it.
pub const PLAN_FILE: &str = "plan.json";
/// The kept log of a run.
pub const LOG_FILE: &str = "compose.log";
/// Held (flock) while a `bottle run` uses the state dir.
pub const LOCK_FILE: &str = "run.lock";
/// Where the CAs' files go, one dir per CA id.
pub const CA_DIR: &str = "ca";

/// Mode of every dir bottle creates in the state dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of private keys and of the host's own records: the user's only.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of certificates and other public files.
pub const PUBLIC_MODE: u32 = 0o644;

/// State-dir path of the daemon list.
pub const DAEMONS_STATE_PATH: &str = "bundle/daemons.json";
/// In-bundle path of the daemon list the bundle's init reads.
pub const DAEMONS_IN_BUNDLE: &str = "/etc/bottle/daemons.json";
/// The bundle's init.
pub const BUNDLE_INIT: &str = "/usr/local/bin/bottle-init";

/// Where the agent finds its MCP servers (Claude Code: `claude --mcp-config "$BOTTLE_MCP_CONFIG"`).
pub const MCP_CONFIG_IN_AGENT: &str = "/etc/bottle/mcp.json";
/// State-dir path of the agent's MCP config.
pub const MCP_CONFIG_STATE_PATH: &str = "agent/mcp.json";
/// The env var naming [`MCP_CONFIG_IN_AGENT`] for the agent.
pub const MCP_CONFIG_ENV: &str = "BOTTLE_MCP_CONFIG";

/// The engine-wide name of `slug`'s things: `bottle-<slug>`.
pub fn project(slug: &str) -> String {
    format!("bottle-{slug}")
}

/// The bundle container's name: `bottle-sidecars-<slug>`.
pub fn bundle_container(slug: &str) -> String {
    format!("bottle-sidecars-{slug}")
}

/// A CA's files in the state dir: its cert, its key, and the cert+key PEM some daemons load.
pub fn ca_files(id: &str) -> (String, String, String) {
    (
        format!("{CA_DIR}/{id}/cert.pem"),
        format!("{CA_DIR}/{id}/key.pem"),
        format!("{CA_DIR}/{id}/bundle.pem"),
    )
}
