//! Where things live: the files of a bottle's state dir and their modes, and the paths bottle
//! owns inside its containers.

/// Top-level names of the state dir that belong to the host: no plugin may stage, mount or
/// overwrite them (`bundle/` holds the daemon list the host writes for the bundle's init).
pub const HOST_FILES: &[&str] = &[
    METADATA_FILE,
    PLAN_FILE,
    LOG_FILE,
    BUNDLE_DIR,
    RUN_FILE,
    APPROVED_FILE,
    LIVE_LOCK_FILE,
    LIVE_JOURNAL_FILE,
    DECISIONS_FILE,
    BUNDLE_EVENTS_FILE,
    STOP_REQUESTED_FILE,
    LEDGER_FILE,
    LOCK_FILE,
    WORKDIR_LAYER_DIR,
];
/// The host's dir for the bundle's init (the daemon list).
pub const BUNDLE_DIR: &str = "bundle";
/// The agent's name on the bottle's network (its compose service key): the bundle's daemons
/// know the agent's address by it.
pub const AGENT_SERVICE: &str = "agent";
/// The sidecar bundle's compose service key (and its role label's value).
pub const BUNDLE_SERVICE: &str = "sidecars";
/// The compose file the docker backend writes into the state dir.
pub const COMPOSE_FILE: &str = "compose.yaml";
/// The compose file of the sidecar bundle alone, which a natively driven backend renders beside
/// its agent.
pub const BUNDLE_COMPOSE_FILE: &str = "bundle.compose.yaml";
/// The sidecar bundle's image, built locally by the host.
pub const BUNDLE_IMAGE: &str = "bottle-sidecars:latest";
/// The agent's `/etc/hosts` in the state dir: the bundle's names, written by the host once the
/// bundle has its address (bind-mounted read-only).
pub const AGENT_HOSTS_STATE_PATH: &str = "agent/hosts";
/// The agent's `/etc/resolv.conf` in the state dir: egress is its only DNS server.
pub const AGENT_RESOLV_STATE_PATH: &str = "agent/resolv.conf";
/// The agent's layer over the working dir (`cwd: mount`): what it wrote, before it is brought
/// back into the user's dir.
pub const WORKDIR_LAYER_DIR: &str = "workdir";
/// The host's record of a run (agent, manifest, plugins, start time).
pub const METADATA_FILE: &str = "metadata.json";
/// The full plan, as `--dry-run --json` prints it.
pub const PLAN_FILE: &str = "plan.json";
/// What `bottle run` was given, so a live approval re-plans the bottle that runs.
pub const RUN_FILE: &str = "run.json";
/// The accesses a human approved for this run (`bottle approve`), applied on top of its
/// manifest.
pub const APPROVED_FILE: &str = "approved.yaml";
/// Held (flock) while a live change is applied, so two approvals never interleave.
pub const LIVE_LOCK_FILE: &str = "live.lock";
/// The host's journal of live changes (JSON lines: what changed, the plan's sha256 before and
/// after, what egress confirmed), read into the audit ledger.
pub const LIVE_JOURNAL_FILE: &str = "live.jsonl";
/// The host's own record of the human's decisions on the agent's requests (JSON lines, one
/// `supervise::Decision` each), read into the audit ledger: the queue's copy, which tells the
/// agent, lives in a dir the bundle can write.
pub const DECISIONS_FILE: &str = "decisions.jsonl";
/// The host's record of the bundle's deaths and restarts during a run (JSON lines), read
/// into the audit ledger.
pub const BUNDLE_EVENTS_FILE: &str = "bundle-events.jsonl";
/// Written by `bottle stop` before it takes a running bottle down: the run's bundle watch then
/// knows the bundle's exit was asked for and does not start it again.
pub const STOP_REQUESTED_FILE: &str = "stop-requested";
/// The run's audit ledger, in the state dir during a run and beside the kept logs after it
/// (`<state root>/logs/<slug>.ledger.jsonl`).
pub const LEDGER_FILE: &str = "ledger.jsonl";
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
/// The line the bundle's init writes once every daemon's ready check passes: the host waits
/// for it in the bundle's log instead of running the check with `docker exec` (tens of ms a
/// try). The init prefixes every daemon's line with the daemon's name, so only the init can
/// write a line that starts with `[init]`.
pub const BUNDLE_READY_LINE: &str = "[init] every daemon is ready";
/// How the init's line starts when a daemon will never be ready (the reason follows).
pub const BUNDLE_NEVER_READY_PREFIX: &str = "[init] never ready: ";

/// The uid (and gid) of the first plugin's daemons in the bundle; the next plugin's get the
/// next one. Each plugin's daemons run as their own user, so no daemon can read another
/// plugin's files or its `/proc/<pid>/environ`.
pub const BUNDLE_UID_BASE: u32 = 61000;

/// The capabilities the bundle keeps; every other is dropped, whatever the backend. Its init
/// (root) needs these to install each daemon's files for that daemon's user (chown, chmod, and
/// reading what root's DAC would refuse: the host's 0600 files), to start each daemon as its
/// user (setuid, setgid, setgroups) and to signal daemons running as other users. The daemons
/// themselves, running as their own users, hold none. Left out of Docker's defaults: raw
/// sockets (on a bridge the bundles share they reach the others below its firewall), mknod,
/// file capabilities, chroot, audit writes, setuid bits kept on write, binding low ports (the
/// bundle's network namespace makes every port an ordinary one instead).
pub const BUNDLE_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];

/// Where a daemon's read-only mounts are bound in the bundle, for its init to install them.
pub const PRIVATE_IN_BUNDLE: &str = "/run/bottle/private";

/// The in-bundle path where mount `index` of daemon `daemon` is bound when it is read-only:
/// the init copies it from there to the mount's target, owned by the daemon's user, readable
/// by that user only (a bind mount keeps the host's owner, which only root could change).
pub fn private_target(daemon: &str, index: usize) -> String {
    format!("{PRIVATE_IN_BUNDLE}/{daemon}/{index}")
}

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
