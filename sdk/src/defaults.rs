//! Empty values of the contract's records, so plugins can write `..Default::default()`.

use crate::types::*;

impl Default for Plan {
    fn default() -> Self {
        Plan { active: true, files: vec![], cas: vec![], secrets: vec![], provides: vec![] }
    }
}

impl Patch {
    /// An empty patch of `target` (`"agent"` for the agent's container).
    pub fn of(target: impl Into<String>) -> Self {
        Patch { target: target.into(), env: vec![], mounts: vec![], no_proxy: vec![], mcp_servers: vec![] }
    }
}

impl Default for Fragment {
    fn default() -> Self {
        Fragment { daemons: vec![], services: vec![], patches: vec![], volumes: vec![] }
    }
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            name: String::new(),
            command: vec![],
            env: vec![],
            mounts: vec![],
            ports: vec![],
            aliases: vec![],
            ready_check: None,
        }
    }
}

impl Default for Service {
    fn default() -> Self {
        Service {
            name: String::new(),
            image: String::new(),
            command: vec![],
            env: vec![],
            mounts: vec![],
            networks: vec![NetworkRole::Internal],
            aliases: vec![],
            user: None,
            read_only_root: false,
            health: None,
            privileged: false,
            cap_add: vec![],
            ports: vec![],
        }
    }
}

impl Mount {
    /// A read-only mount of a file the host staged in the state dir.
    pub fn state_ro(path: impl Into<String>, target: impl Into<String>) -> Self {
        Mount { source: MountSource::State(path.into()), target: target.into(), read_only: true }
    }
}
