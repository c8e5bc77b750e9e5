//! The daemon list the sidecar bundle's init reads (`/etc/bottle/daemons.json`).

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
}
