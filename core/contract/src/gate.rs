//! `gate.yaml`: what the git-gate plugin renders and the `bottle-git-gate` daemon reads.
//!
//! One schema both ways, unknown fields refused: a field the plugin writes that the daemon
//! does not know would otherwise be a policy silently not applied.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    /// The pinned host keys (an OpenSSH `known_hosts` file); nothing else is trusted.
    pub known_hosts: String,
    /// A fetch that finished this recently serves a new clone without asking upstream again.
    /// 0 (the default): every fetch asks upstream, except when another fetch that started
    /// after it arrived has just finished.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fetch_coalesce_ms: u64,
    /// Limits of the secret scan of pushes.
    #[serde(default)]
    pub scan: ScanSettings,
    /// The repos served, by name.
    pub repos: Vec<GateRepo>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One mirrored upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateRepo {
    /// Name under `git://git-gate/`: `<name>.git`.
    pub name: String,
    /// The real SSH URL (`git@host:org/repo.git` or `ssh://…`).
    pub upstream: String,
    /// The upstream's SSH host (its `known_hosts` entry must exist).
    pub host: String,
    /// The upstream's SSH port.
    pub port: u16,
    /// In-container path of the private key the gate pushes and fetches with.
    pub key: String,
    /// What the agent may push.
    #[serde(default)]
    pub push: PushPolicy,
}

impl GateRepo {
    /// The name `known_hosts` lists this upstream under: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// What the agent may push to one repo. The default: new commits on branches, fast-forward
/// only, no deletes, no tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushPolicy {
    /// Full ref patterns the agent may update (`refs/heads/bottle/me/*`; `*` matches any run
    /// of characters, `/` included). Empty: every branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Non-fast-forward updates.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_force: bool,
    /// Deleting refs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_delete: bool,
    /// Creating or moving tags (`refs/tags/*`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_tags: bool,
    /// Adding or changing CI definitions (`.github/workflows/`, `.gitlab-ci.yml`, …), which
    /// run with the repository's secrets.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_ci_changes: bool,
    /// Refs one push may update.
    #[serde(default = "default_max_refs")]
    pub max_refs: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_max_refs() -> usize {
    PushPolicy::DEFAULT_MAX_REFS
}

impl PushPolicy {
    /// Refs one push may update unless the policy says otherwise.
    pub const DEFAULT_MAX_REFS: usize = 64;

    /// The policy of a repo whose manifest entry says nothing of pushing: the agent's own
    /// branches only (`refs/heads/bottle/<agent>/*`), no force, no delete, no tags, no CI
    /// changes.
    pub fn for_agent(agent: &str) -> PushPolicy {
        PushPolicy {
            allow: vec![format!("refs/heads/bottle/{agent}/*")],
            ..PushPolicy::default()
        }
    }

    /// The policy in words, for a plan's summary.
    pub fn describe(&self) -> String {
        let to = if self.allow.is_empty() {
            "any branch".to_owned()
        } else {
            self.allow
                .iter()
                .map(|p| p.strip_prefix("refs/heads/").unwrap_or(p))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut may = Vec::new();
        let mut not = Vec::new();
        for (yes, what) in [
            (self.allow_force, "force"),
            (self.allow_delete, "delete"),
            (self.allow_tags, "tags"),
            (self.allow_ci_changes, "CI changes"),
        ] {
            if yes { may.push(what) } else { not.push(what) }
        }
        let mut s = format!("push to {to}");
        if !may.is_empty() {
            s.push_str(&format!("; with {}", may.join(", ")));
        }
        if !not.is_empty() {
            s.push_str(&format!("; no {}", not.join(", ")));
        }
        s
    }
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy {
            allow: Vec::new(),
            allow_force: false,
            allow_delete: false,
            allow_tags: false,
            allow_ci_changes: false,
            max_refs: PushPolicy::DEFAULT_MAX_REFS,
        }
    }
}

/// Limits of the secret scan of pushed objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// A pushed file larger than this is refused (it cannot be scanned in bounded time).
    #[serde(default = "default_max_blob_bytes")]
    pub max_blob_bytes: u64,
    /// All the new objects of one push, together.
    #[serde(default = "default_max_push_bytes")]
    pub max_push_bytes: u64,
    /// A scan still running after this refuses the push.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_blob_bytes() -> u64 {
    ScanSettings::default().max_blob_bytes
}
fn default_max_push_bytes() -> u64 {
    ScanSettings::default().max_push_bytes
}
fn default_timeout_ms() -> u64 {
    ScanSettings::default().timeout_ms
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            max_blob_bytes: 16 << 20,
            max_push_bytes: 512 << 20,
            timeout_ms: 120_000,
        }
    }
}

/// Whether `pattern` (with `*` for any run of characters) matches the whole of `name`.
pub fn ref_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        assert!(ref_matches("refs/heads/*", "refs/heads/a/b"));
        assert!(ref_matches(
            "refs/heads/bottle/me/*",
            "refs/heads/bottle/me/x"
        ));
        assert!(!ref_matches(
            "refs/heads/bottle/me/*",
            "refs/heads/bottle/you/x"
        ));
        assert!(ref_matches("refs/heads/main", "refs/heads/main"));
        assert!(!ref_matches("refs/heads/main", "refs/heads/main2"));
        assert!(ref_matches("refs/heads/*-wip", "refs/heads/a-wip"));
        assert!(!ref_matches("refs/heads/*-wip", "refs/heads/a-wip2"));
        assert!(ref_matches("refs/heads/a*b*c", "refs/heads/aXbYc"));
        assert!(!ref_matches("refs/heads/ab*ba", "refs/heads/aba"));
    }

    #[test]
    fn defaults_round_trip_and_unknown_fields_are_refused() {
        let text = "known_hosts: /k\nrepos:\n- {name: a, upstream: 'git@h:a.git', host: h, port: 22, key: /k/a}\n";
        let gate: GateFile = serde_yaml::from_str(text).unwrap();
        assert_eq!(gate.repos[0].push, PushPolicy::default());
        assert_eq!(gate.scan, ScanSettings::default());
        let again: GateFile = serde_yaml::from_str(&serde_yaml::to_string(&gate).unwrap()).unwrap();
        assert_eq!(gate, again);
        let bad = text.replace("port: 22", "port: 22, forward: true");
        assert!(serde_yaml::from_str::<GateFile>(&bad).is_err());
    }
}
