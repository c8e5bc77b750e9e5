//! The compose file, read back into typed values for the Docker API (the schema is
//! [`bottle_contract::compose`], the one the backends write with).

use crate::model::SecretEnv;
use std::collections::BTreeMap;
use std::path::Path;

pub use bottle_contract::compose::{
    ComposeFile, ComposeHealth, ComposeMount, ComposeNetwork, ComposeService, ComposeVolume,
    DependsOn, ServiceNetwork, duration_ns,
};

/// Why the compose file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not the compose subset bottle writes (an unknown field is refused, not dropped).
    #[error("{path}: {source}; the backend plugin wrote a field bottle does not run")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// An env name left open for the host to fill that no plugin or manifest declared.
    #[error(
        "the compose file leaves env `{0}` to be filled from your env, but nothing declared it a secret; refusing to pass it (check --plugin-dir backends)"
    )]
    Undeclared(String),
    /// Secrets the bottle needs are not in the env.
    #[error(
        "these env vars are not set, and the bottle needs them (secrets are read from your env at launch): {}; export them and run again",
        .0.join(", ")
    )]
    MissingSecrets(Vec<String>),
}

/// Read the compose file at `path`.
pub fn read(path: &Path) -> Result<ComposeFile, ProjectError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ProjectError::Read {
        path: shown(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| ProjectError::Parse {
        path: shown(),
        source,
    })
}

/// Values of the env names a compose file leaves open (`KEY: null`), from the host env.
///
/// `secrets` maps bundle env names to the host vars that fill them (`EGRESS_TOKEN_0` ←
/// `GITHUB_TOKEN`); an open name in `same_name` (the agent's `secrets:`) is read from the
/// host var of that name. Any other open name is refused: only declared secrets are filled.
pub fn resolve_secrets(
    file: &ComposeFile,
    secrets: &[SecretEnv],
    same_name: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ProjectError> {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for s in file.services.values() {
        for (name, value) in &s.environment {
            if value.is_some() || out.contains_key(name) {
                continue;
            }
            let from = match secrets.iter().find(|s| &s.name == name) {
                Some(s) => s.from_host_env.as_str(),
                None if same_name.contains(name) => name.as_str(),
                None => return Err(ProjectError::Undeclared(name.clone())),
            };
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
        Err(ProjectError::MissingSecrets(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let agent = ["KEY".to_owned()];
        let got = resolve_secrets(&file, &secrets, &agent, env).unwrap();
        assert_eq!(got["EGRESS_TOKEN_0"], "t0k");
        assert_eq!(got["KEY"], "k");
        assert!(!got.contains_key("PLAIN"));
        let err = resolve_secrets(&file, &secrets, &agent, |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GH, KEY"), "{err}");
        let err = resolve_secrets(&file, &secrets, &[], env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("env `KEY`"), "undeclared: {err}");
    }
}
