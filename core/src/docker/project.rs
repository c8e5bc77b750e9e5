//! The compose file, read back into typed values for the Docker API.

use crate::model::SecretEnv;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The subset of the Compose spec the docker backend writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Services by key.
    pub services: BTreeMap<String, Service>,
    /// Networks by key.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// Named volumes by key.
    #[serde(default)]
    pub volumes: BTreeMap<String, Volume>,
}

/// A service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs, reason = "fields are the Compose spec's")]
pub struct Service {
    pub image: String,
    pub container_name: Option<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub init: bool,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub volumes: Vec<Mount>,
    #[serde(default)]
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, DependsOn>,
    pub healthcheck: Option<Health>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub security_opt: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
    pub stop_grace_period: Option<String>,
}

/// A long-syntax mount.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs, reason = "fields are the Compose spec's")]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A service's network attachment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    /// Aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A dependency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOn {
    /// `service_started` or `service_healthy`.
    pub condition: String,
}

/// A health check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs, reason = "fields are the Compose spec's")]
pub struct Health {
    pub test: Vec<String>,
    pub interval: String,
    pub timeout: String,
    pub retries: u32,
}

/// A network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs, reason = "fields are the Compose spec's")]
pub struct Network {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A named volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs, reason = "fields are the Compose spec's")]
pub struct Volume {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A Compose duration (`10s`, `1500ms`, `2m`) in nanoseconds.
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
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Read the compose file at `path`.
pub fn read(path: &Path) -> Result<ComposeFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Values of the env names a compose file leaves open (`KEY: null`), from the host env.
///
/// `secrets` maps bundle env names to the host vars that fill them (`EGRESS_TOKEN_0` ←
/// `GITHUB_TOKEN`); any other open name is read from the host var of the same name.
pub fn resolve_secrets(
    file: &ComposeFile,
    secrets: &[SecretEnv],
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for s in file.services.values() {
        for (name, value) in &s.environment {
            if value.is_some() || out.contains_key(name) {
                continue;
            }
            let from = secrets
                .iter()
                .find(|s| &s.name == name)
                .map_or(name.as_str(), |s| s.from_host_env.as_str());
            match env(from) {
                Some(v) => {
                    out.insert(name.clone(), v);
                }
                None => missing.push(from.to_owned()),
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        missing.sort();
        missing.dedup();
        Err(format!(
            "these env vars are not set, and the bottle needs them (secrets are read from your env at launch): {}; export them and run again",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns("10s"), Some(10_000_000_000));
        assert_eq!(duration_ns("1500ms"), Some(1_500_000_000));
        assert_eq!(duration_ns("2m"), Some(120_000_000_000));
        assert_eq!(duration_ns("5"), Some(5_000_000_000));
        assert_eq!(duration_ns("5h"), None);
    }

    #[test]
    fn open_env_names_come_from_the_host_env_via_the_secret_map() {
        let file: ComposeFile = serde_yaml::from_str(
            "services:\n  s:\n    image: i\n    environment:\n      EGRESS_TOKEN_0: null\n      KEY: null\n      PLAIN: x\n",
        )
        .unwrap();
        let secrets = [SecretEnv {
            name: "EGRESS_TOKEN_0".into(),
            from_host_env: "GH".into(),
        }];
        let env = |k: &str| match k {
            "GH" => Some("t0k".to_owned()),
            "KEY" => Some("k".to_owned()),
            _ => None,
        };
        let got = resolve_secrets(&file, &secrets, env).unwrap();
        assert_eq!(got["EGRESS_TOKEN_0"], "t0k");
        assert_eq!(got["KEY"], "k");
        assert!(!got.contains_key("PLAIN"));
        let err = resolve_secrets(&file, &secrets, |_| None).unwrap_err();
        assert!(err.contains("GH, KEY"), "{err}");
    }
}
