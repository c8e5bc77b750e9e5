//! The daemon list the sidecar bundle's init reads (`/etc/bottle/daemons.json`).

use crate::layout::{BUNDLE_UID_BASE, private_target};
use crate::model::Stack;
use crate::names::secret_env_prefix;
use serde::{Deserialize, Serialize};

/// Every daemon of the bundle, and which secret env each may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonList {
    /// Every secret env name of the bundle: the init hides each from the daemons not listed
    /// as seeing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Daemons, by name.
    pub daemons: Vec<DaemonEntry>,
}

/// One daemon for the init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonEntry {
    /// Name, used as the log prefix.
    pub name: String,
    /// Exec form; the program is an absolute path (no PATH lookup).
    pub command: Vec<String>,
    /// Readiness check, exec form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_check: Option<Vec<String>>,
    /// The secret env names this daemon sees: those of the plugin that added it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The ports it declares: the only ones the bundle may listen on beyond loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// The uid and gid it runs as (its plugin's); none: as the init's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Files and dirs the init installs for it before it starts (and again before a reload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<Install>,
}

/// A read-only mount of a daemon, installed as a copy it alone can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// Where the mount is bound in the bundle ([`private_target`]).
    pub from: String,
    /// Where the daemon expects it (the mount's target).
    pub to: String,
}

/// The daemon list for `stack`'s bundle: each daemon with its plugin's secrets, its plugin's
/// uid (`BUNDLE_UID_BASE` + the plugin's place among the bundle's plugins, by name) and its
/// read-only mounts to install. The host writes it; the backends only mount it.
pub fn daemon_list(stack: &Stack) -> DaemonList {
    let secret_env: Vec<String> = stack
        .bundle_secrets
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let mut plugins: Vec<&str> = stack.bundle.iter().map(|o| o.plugin.as_str()).collect();
    plugins.sort_unstable();
    plugins.dedup();
    let uid_of = |plugin: &str| {
        let place = plugins
            .iter()
            .position(|p| *p == plugin)
            .unwrap_or_default();
        BUNDLE_UID_BASE + u32::try_from(place).unwrap_or(u32::MAX - BUNDLE_UID_BASE)
    };
    let daemons = stack
        .bundle
        .iter()
        .map(|o| {
            let prefix = secret_env_prefix(&o.plugin);
            let d = &o.daemon;
            DaemonEntry {
                name: d.name.clone(),
                command: d.command.clone(),
                ready_check: d.ready_check.clone(),
                ports: d.ports.clone(),
                secrets: secret_env
                    .iter()
                    .filter(|n| n.starts_with(&prefix))
                    .cloned()
                    .collect(),
                uid: Some(uid_of(&o.plugin)),
                install: d
                    .mounts
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.read_only)
                    .map(|(i, m)| Install {
                        from: private_target(&d.name, i),
                        to: m.target.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    DaemonList {
        secret_env,
        daemons,
    }
}
