//! bottle's own settings, for every agent of one user: `<config dir>/config.yaml`.
//!
//! ```yaml
//! networks:
//!   pool: 10.213.0.0/16   # where each bottle's networks get their small subnets
//! ```
//!
//! The file is optional; every key has a default. It is read once at the CLI's edge into a
//! [`BottleConfig`], so nothing further in sees raw text.

use ipnet::Ipv4Net;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file's name in the config dir.
pub const CONFIG_FILE: &str = "config.yaml";

/// The default [`NetworkSettings::pool`]: a private range few hosts or engines use (Docker's
/// own pools are 172.17–31/16 and 192.168/16); a subnet of it that a host route or another
/// network holds is skipped anyway.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";

/// The smallest pool: one bottle's own network (a /28) must fit (its bundle's way out is the
/// bridge every bundle shares, on the engine's own addresses).
pub const SMALLEST_POOL_PREFIX: u8 = 28;

/// bottle's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BottleConfig {
    /// Where they were read from (named in messages), or where they would be.
    pub path: Option<PathBuf>,
    /// Docker networks.
    pub networks: NetworkSettings,
}

/// How bottle addresses its Docker networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The private range each bottle's networks are carved from.
    pub pool: Ipv4Net,
}

impl Default for BottleConfig {
    fn default() -> Self {
        BottleConfig {
            path: None,
            networks: NetworkSettings {
                pool: DEFAULT_POOL.parse().expect("the default pool parses"),
            },
        }
    }
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error(
        "cannot read {path}: {detail}; fix its permissions or remove it (every setting has a default)"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS's words.
        detail: String,
    },
    /// The file is not what bottle reads.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it, naming the field.
        detail: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    networks: Option<RawNetworks>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetworks {
    #[serde(default)]
    pool: Option<String>,
}

impl BottleConfig {
    /// The settings in `config_dir` (the defaults when it has no [`CONFIG_FILE`]).
    pub fn load(config_dir: Option<&Path>) -> Result<BottleConfig, ConfigError> {
        let Some(path) = config_dir.map(|d| d.join(CONFIG_FILE)) else {
            return Ok(BottleConfig::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BottleConfig {
                    path: Some(path),
                    ..BottleConfig::default()
                });
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path,
                    detail: e.to_string(),
                });
            }
        };
        Self::parse(&text, path)
    }

    /// The settings in `text`, read from `path`.
    pub fn parse(text: &str, path: PathBuf) -> Result<BottleConfig, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            path: path.clone(),
            detail,
        };
        let raw: Option<RawConfig> = serde_yaml::from_str(text).map_err(|e| {
            invalid(format!(
                "{e}; the file takes `networks: {{pool: CIDR}}` only"
            ))
        })?;
        let mut config = BottleConfig {
            path: Some(path.clone()),
            ..BottleConfig::default()
        };
        if let Some(pool) = raw.and_then(|r| r.networks).and_then(|n| n.pool) {
            config.networks.pool =
                parse_pool(&pool).map_err(|e| invalid(format!("networks.pool: {e}")))?;
        }
        Ok(config)
    }

    /// Where the settings live, for messages that tell the user to change one.
    pub fn where_to_set(&self) -> String {
        self.path.as_ref().map_or_else(
            || format!("$XDG_CONFIG_HOME/bottle/{CONFIG_FILE}"),
            |p| p.display().to_string(),
        )
    }
}

/// A pool as the user wrote it: a private IPv4 network, written at its own base, room for at
/// least one bottle.
fn parse_pool(text: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = text.trim().parse().map_err(|_| {
        format!("`{text}` is not an IPv4 network; write it as base/length, e.g. {DEFAULT_POOL}")
    })?;
    if net.network() != net.addr() {
        return Err(format!(
            "`{text}` has host bits set; its network is {}/{}: write that",
            net.network(),
            net.prefix_len()
        ));
    }
    if net.prefix_len() > SMALLEST_POOL_PREFIX {
        return Err(format!(
            "`{text}` is too small: one bottle needs a /{SMALLEST_POOL_PREFIX}; use a /{SMALLEST_POOL_PREFIX} or larger (a /16 holds thousands)"
        ));
    }
    let private: [Ipv4Net; 4] = [
        "10.0.0.0/8".parse().expect("literal"),
        "172.16.0.0/12".parse().expect("literal"),
        "192.168.0.0/16".parse().expect("literal"),
        "100.64.0.0/10".parse().expect("literal"),
    ];
    if !private.iter().any(|p| p.contains(&net)) {
        return Err(format!(
            "`{text}` is not a private range: the bundle could not reach real hosts with those addresses; pick one inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10"
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BottleConfig, String> {
        BottleConfig::parse(text, PathBuf::from("/c/bottle/config.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn no_file_and_an_empty_file_mean_the_defaults() {
        let t = tempfile::tempdir().unwrap();
        let c = BottleConfig::load(Some(t.path())).unwrap();
        assert_eq!(c.networks.pool.to_string(), DEFAULT_POOL);
        assert_eq!(c.path, Some(t.path().join(CONFIG_FILE)));
        assert_eq!(parse("").unwrap().networks.pool.to_string(), DEFAULT_POOL);
        assert_eq!(
            parse("networks: {}").unwrap().networks.pool.to_string(),
            DEFAULT_POOL
        );
        assert_eq!(BottleConfig::load(None).unwrap(), BottleConfig::default());
    }

    #[test]
    fn a_pool_is_read() {
        let c = parse("networks:\n  pool: 10.99.0.0/24\n").unwrap();
        assert_eq!(c.networks.pool.to_string(), "10.99.0.0/24");
        assert_eq!(c.where_to_set(), "/c/bottle/config.yaml");
    }

    #[test]
    fn bad_settings_name_the_file_the_field_and_the_fix() {
        for (text, wanted) in [
            (
                "networks: {pool: nonsense}",
                "networks.pool: `nonsense` is not an IPv4 network",
            ),
            (
                "networks: {pool: 10.1.2.3/16}",
                "its network is 10.1.0.0/16",
            ),
            ("networks: {pool: 10.1.2.0/29}", "too small"),
            ("networks: {pool: 8.8.0.0/16}", "not a private range"),
            ("networks: {pool: 'fd00::/64'}", "not an IPv4 network"),
            ("networks: {pools: 10.0.0.0/16}", "unknown field `pools`"),
            ("network: {}", "unknown field `network`"),
            ("[1, 2]", "networks: {pool: CIDR}"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with("/c/bottle/config.yaml: "), "{text}: {e}");
            assert!(e.contains(wanted), "{text}: {e}");
        }
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join(CONFIG_FILE)).unwrap();
        let e = BottleConfig::load(Some(t.path())).unwrap_err().to_string();
        assert!(e.contains("config.yaml") && e.contains("remove it"), "{e}");
    }
}
