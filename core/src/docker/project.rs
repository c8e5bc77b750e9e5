//! The compose file, read back into typed values for the Docker API (the schema is
//! [`bottle_contract::compose`], the one the backends write with).

use crate::model::SecretEnv;
use std::collections::BTreeMap;
use std::path::Path;

pub use bottle_contract::compose::{
    ComposeFile, ComposeHealth, ComposeMount, ComposeNetwork, ComposeService, ComposeVolume,
    DependsOn, ServiceNetwork, duration_ns,
};

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
