//! The subset of the Compose spec bottle uses: one schema that backends write and the host
//! reads back.
//!
//! Maps are `BTreeMap`s so the same stack always renders the same bytes. What a backend
//! writes is accepted by `docker compose` v2 and `docker-compose` 1.29. When the host reads a
//! file back, a field outside this subset is refused, not dropped: whatever reaches the engine
//! is what the host checked.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Compose file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Services by key.
    pub services: BTreeMap<String, ComposeService>,
    /// Networks by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ComposeNetwork>,
    /// Named volumes by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, ComposeVolume>,
}

/// A Compose service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    /// Image.
    pub image: String,
    /// Fixed container name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Run docker's init as PID 1.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Working dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid[:gid]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Env; `None` values are passed from the launching process's env (secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    /// Mounts, long syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ComposeMount>,
    /// Networks and aliases.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ServiceNetwork>,
    /// Published ports, `ip:host:container`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Start order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependsOn>,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<ComposeHealth>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Privileged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Added capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Security options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Read-only root.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Time between SIGTERM and SIGKILL on stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
}

/// A long-syntax mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeMount {
    /// `bind` or `volume`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Host path or volume name.
    pub source: String,
    /// Container path.
    pub target: String,
    /// Read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A service's attachment to a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    /// Hostname aliases on that network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOn {
    /// `service_started` or `service_healthy`.
    pub condition: String,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeNetwork {
    /// Engine-wide name.
    pub name: String,
    /// Driver (none on an `external` network: compose refuses one there).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Made by the host, not by the bottle, and kept after it: only bottle's shared way out,
    /// [`SHARED_EGRESS_NETWORK`], whose driver and options are the host's ([`SHARED_EGRESS_OPTS`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// No route out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A named volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeVolume {
    /// Engine-wide name.
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The bridge option that gives the host no address on a network: an `internal` bridge
/// otherwise has the host as its gateway, and every host service listening on all addresses
/// is reachable from the agent there.
pub const INHIBIT_HOST_ADDRESS: (&str, &str) = ("com.docker.network.bridge.inhibit_ipv4", "true");

/// The bridge every bottle's bundle shares as its way out: made once by the host and kept, so
/// a bottle's bring-up and teardown make and remove one network less (each costs the engine
/// tens to a hundred and more milliseconds of firewall work).
pub const SHARED_EGRESS_NETWORK: &str = "bottle-shared-egress";

/// The shared way out's bridge options: containers on it cannot reach each other, so no bundle
/// reaches another's daemons, as when each had a bridge of its own.
pub const SHARED_EGRESS_OPTS: [(&str, &str); 1] =
    [("com.docker.network.bridge.enable_icc", "false")];

/// A Compose duration (`10s`, `1500ms`, `2m`; a bare number is seconds) in nanoseconds.
pub fn duration_ns(s: &str) -> Option<i64> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: i64 = num.parse().ok()?;
    let scale = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_the_same_and_unknown_fields_are_refused() {
        let mut file = ComposeFile::default();
        file.services.insert(
            "agent".into(),
            ComposeService {
                image: "img".into(),
                volumes: vec![ComposeMount {
                    kind: "bind".into(),
                    source: "/s".into(),
                    target: "/t".into(),
                    read_only: true,
                }],
                ..ComposeService::default()
            },
        );
        let yaml = serde_yaml::to_string(&file).unwrap();
        assert_eq!(serde_yaml::from_str::<ComposeFile>(&yaml).unwrap(), file);
        let extra = yaml.replace("image: img", "image: img\n    pid: host");
        let err = serde_yaml::from_str::<ComposeFile>(&extra)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `pid`"), "{err}");
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(duration_ns("10s"), Some(10_000_000_000));
        assert_eq!(duration_ns("1500ms"), Some(1_500_000_000));
        assert_eq!(duration_ns("10"), Some(10_000_000_000));
        assert_eq!(duration_ns("1x"), None);
    }
}
