//! Names bottle validates once, at the edge, and passes on typed: env names, relative paths
//! inside the state dir, host names; and the rule that ties a secret's name to its plugin.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The host env name of the hop token ([`crate::hop`]): not the user's env, a value the host
/// mints for each natively driven run (smolmachines), and empty otherwise. Each daemon asks
/// for it as `<PLUGIN>_HOP_TOKEN` and then serves only requests that carry it. As the host's
/// own value it needs no `host-env` grant.
pub const HOP_TOKEN_HOST_ENV: &str = "BOTTLE_HOP_TOKEN";

/// The env name under which a backend whose agent names the bundle by an address the bundle
/// cannot know itself (Kubernetes: the Service's cluster IP) tells the bundle's daemons that
/// address, so a daemon that checks the `Host` header (supervise) accepts it.
pub const BUNDLE_ADDRESS_ENV: &str = "BOTTLE_BUNDLE_ADDRESS";

/// Stands for the bundle's address in what a natively driven backend renders (the smolmachines
/// `Smolfile`, its address rewrites, the VM's MCP config): the address is the bundle
/// container's own on its network, which Docker gives when the bundle starts, after the render.
/// The host passes it to the driver, which puts it in place.
pub const BUNDLE_ADDRESS_PLACEHOLDER: &str = "@BOTTLE_BUNDLE_ADDRESS@";

/// Whether `s` is a portable env name: a letter or `_`, then letters, digits or `_`.
pub fn valid_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a DNS host name (RFC 1123 labels), optionally `*.`-prefixed.
pub fn valid_host(s: &str) -> bool {
    let h = s.strip_prefix("*.").unwrap_or(s);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Whether `path` is a plain relative path that stays inside the dir it is joined to: no
/// leading `/`, no empty, `.` or `..` component, no NUL.
pub fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !path.contains('\0')
}

/// The prefix every secret env name of `plugin` carries (`egress` → `EGRESS_`, `git-gate` →
/// `GIT_GATE_`); the host refuses other names, so a secret reaches only the daemons of the
/// plugin that asked for it.
pub fn secret_env_prefix(plugin: &str) -> String {
    format!("{}_", plugin.to_ascii_uppercase().replace('-', "_"))
}

/// A name that is not what its type needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not {what}")]
pub struct InvalidName {
    /// What was given.
    pub value: String,
    /// What was expected, in words.
    pub what: &'static str,
}

macro_rules! validated {
    ($(#[$doc:meta])* $name:ident, $check:path, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_from(s.to_owned())
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                if $check(&s) {
                    Ok($name(s))
                } else {
                    Err(InvalidName { value: s, what: $what })
                }
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

validated!(
    /// An env var name (`AWS_PROFILE`).
    EnvName,
    valid_env_name,
    "an env name (a letter or `_`, then letters, digits or `_`)"
);

validated!(
    /// A plain relative path inside the state dir (`egress/routes.yaml`).
    RelPath,
    safe_relative,
    "a plain relative path (no leading `/`, no `.` or `..`)"
);

fn lower_host(s: &str) -> bool {
    valid_host(s) && !s.chars().any(|c| c.is_ascii_uppercase())
}

validated!(
    /// A host name in lower case, optionally `*.`-prefixed (`api.github.com`).
    HostName,
    lower_host,
    "a host name in lower case (letters, digits, `-`, dots between labels)"
);

impl HostName {
    /// Parse `s` as a host name, lower-casing it first (host names are case-insensitive).
    pub fn lowercased(s: &str) -> Result<HostName, InvalidName> {
        s.to_ascii_lowercase().parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_at_the_edge_and_refuse_what_they_are_not() {
        assert!("AWS_PROFILE".parse::<EnvName>().is_ok());
        for bad in ["", "1X", "A-B", "A B", "Ä"] {
            assert!(bad.parse::<EnvName>().is_err(), "{bad}");
        }
        assert!("egress/routes.yaml".parse::<RelPath>().is_ok());
        for bad in ["", "/etc", "a/../b", "./a", "a//b", "a/\0"] {
            assert!(bad.parse::<RelPath>().is_err(), "{bad:?}");
        }
        assert_eq!(
            HostName::lowercased("API.GitHub.com").unwrap().as_str(),
            "api.github.com"
        );
        assert!("*.example.com".parse::<HostName>().is_ok());
        for bad in ["", "a..b", "-a.com", "a_b.com", "Upper.com", "a.com:443"] {
            assert!(bad.parse::<HostName>().is_err(), "{bad}");
        }
        let err = "a/../b".parse::<RelPath>().unwrap_err().to_string();
        assert!(
            err.contains("`a/../b` is not a plain relative path"),
            "{err}"
        );
    }

    #[test]
    fn names_round_trip_through_serde_and_are_checked_when_read() {
        let h: HostName = serde_json::from_str("\"api.github.com\"").unwrap();
        assert_eq!(serde_json::to_string(&h).unwrap(), "\"api.github.com\"");
        assert!(serde_json::from_str::<EnvName>("\"not-an-env\"").is_err());
    }

    #[test]
    fn a_secrets_prefix_is_its_plugins_name() {
        assert_eq!(secret_env_prefix("egress"), "EGRESS_");
        assert_eq!(secret_env_prefix("git-gate"), "GIT_GATE_");
    }
}
