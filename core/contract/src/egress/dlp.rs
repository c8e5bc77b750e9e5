//! `egress.dlp`: what DLP does with a finding, and the exceptions a manifest grants. The
//! manifest writes it, the egress plugin copies it into `routes.yaml`, the daemon applies it.

use super::{PathPattern, request_segments};
use serde::{Deserialize, Serialize};

/// The manifest's DLP policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpPolicy {
    /// `block` (the default): a finding refuses the request. `log`: it is logged and passes.
    #[serde(default, skip_serializing_if = "DlpMode::is_block")]
    pub mode: DlpMode,
    /// Findings let through: a rule on a host, optionally under a path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<DlpAllow>,
    /// Detectors of the manifest's own, run on every decoded layer like the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<DlpExtra>,
}

/// What a finding does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DlpMode {
    /// Refuse the request (403), close the WebSocket (1008).
    #[default]
    Block,
    /// Log the finding and let the request pass: for trying rules out, never for real secrets.
    Log,
}

impl DlpMode {
    fn is_block(&self) -> bool {
        *self == DlpMode::Block
    }
}

/// One exception: findings of `rule` on `host` (under `path`) pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpAllow {
    /// A rule id as findings name it (`jwt`, `high-entropy-query`, `payment-card`).
    pub rule: String,
    /// The host, or `*.example.com` for its subdomains.
    pub host: String,
    /// A path prefix or glob (as route rules have); absent means every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A detector of the manifest's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpExtra {
    /// Its id in findings and logs (`acme-internal-key`).
    pub id: String,
    /// A regular expression (Rust `regex` syntax over bytes, ASCII classes, no look-around).
    pub regex: String,
    /// A check the match must pass as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validator: Option<DlpValidator>,
}

/// Checks an extra detector's match can be held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DlpValidator {
    /// The digits pass Luhn's checksum.
    Luhn,
    /// The match is an IBAN-style mod-97 string.
    Mod97,
    /// The match looks random (letters and digits, high entropy).
    Entropy,
}

/// The longest regex an extra detector may have.
pub const MAX_REGEX_LEN: usize = 1000;

fn kebab(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl DlpPolicy {
    /// Whether this is the default (block, no exceptions, no extra detectors).
    pub fn is_default(&self) -> bool {
        *self == DlpPolicy::default()
    }

    /// Check it; the error names the field (relative to `dlp`) and says why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, a) in self.allow.iter().enumerate() {
            let at = |f: &str| format!("allow[{i}].{f}");
            if a.rule.starts_with("secret") {
                return Err((
                    at("rule"),
                    "a credential bottle holds never leaves; remove this exception".into(),
                ));
            }
            if matches!(a.rule.as_str(), "encoded-too-deep" | "decoded-too-large") {
                return Err((
                    at("rule"),
                    "what cannot be decoded cannot be judged, so it is never let through; remove this exception".into(),
                ));
            }
            if !kebab(&a.rule) {
                return Err((
                    at("rule"),
                    format!(
                        "`{}` is not a rule id (lower case, digits and `-`, as a refusal names it: `jwt`, `high-entropy-query`)",
                        a.rule
                    ),
                ));
            }
            if !crate::names::valid_host(&a.host) {
                return Err((
                    at("host"),
                    format!("`{}` is not a host name (or `*.example.com`)", a.host),
                ));
            }
            if let Some(p) = &a.path {
                PathPattern::parse(p).map_err(|e| (at("path"), e))?;
            }
        }
        for (i, x) in self.extra.iter().enumerate() {
            let at = |f: &str| format!("extra[{i}].{f}");
            if !kebab(&x.id) || x.id.starts_with("secret") {
                return Err((
                    at("id"),
                    format!(
                        "`{}` is not a usable id (lower case, digits and `-`, not starting with `secret`)",
                        x.id
                    ),
                ));
            }
            if self.extra[..i].iter().any(|y| y.id == x.id) {
                return Err((at("id"), format!("`{}` is used twice", x.id)));
            }
            if x.regex.is_empty() || x.regex.len() > MAX_REGEX_LEN {
                return Err((
                    at("regex"),
                    format!("give a regular expression of 1 to {MAX_REGEX_LEN} characters"),
                ));
            }
        }
        Ok(())
    }

    /// Whether a finding of `rule` (as findings name it, wrapping included:
    /// `jwt (in base64)`) on `host` at `path` is let through.
    pub fn allows(&self, rule: &str, host: &str, path: &str) -> bool {
        let id = rule
            .split(" (")
            .next()
            .unwrap_or(rule)
            .trim_end_matches(" in the host name");
        if id.starts_with("secret") {
            return false;
        }
        let Ok(segments) = request_segments(path) else {
            return false;
        };
        self.allow.iter().any(|a| {
            a.rule == id
                && host_matches(&a.host, host)
                && a.path.as_deref().is_none_or(|p| {
                    PathPattern::parse(p).is_ok_and(|p| p.matches(&segments, false))
                })
        })
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> DlpPolicy {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn an_exception_lets_its_rule_through_on_its_host_and_path_only() {
        let p = policy(
            "allow:\n- {rule: jwt, host: api.example.com, path: /auth/}\n- {rule: high-entropy-query, host: \"*.cdn.test\"}\n",
        );
        assert!(p.validate().is_ok());
        assert!(p.allows("jwt", "api.example.com", "/auth/token"));
        assert!(p.allows("jwt (in base64)", "api.example.com", "/auth/x"));
        assert!(!p.allows("jwt", "api.example.com", "/other"));
        assert!(!p.allows("jwt", "evil.example.com", "/auth/token"));
        assert!(!p.allows("github-pat", "api.example.com", "/auth/token"));
        assert!(p.allows("high-entropy-query", "a.cdn.test", "/x"));
        assert!(!p.allows("high-entropy-query", "cdn.test", "/x"));
    }

    #[test]
    fn bad_policies_name_their_field() {
        for (yaml, field) in [
            (
                "allow: [{rule: \"secret:EGRESS_TOKEN_0\", host: a.test}]",
                "allow[0].rule",
            ),
            ("allow: [{rule: JWT, host: a.test}]", "allow[0].rule"),
            (
                "allow: [{rule: encoded-too-deep, host: a.test}]",
                "allow[0].rule",
            ),
            ("allow: [{rule: jwt, host: \"a b\"}]", "allow[0].host"),
            (
                "allow: [{rule: jwt, host: a.test, path: nope}]",
                "allow[0].path",
            ),
            (
                "extra: [{id: x, regex: a}, {id: x, regex: b}]",
                "extra[1].id",
            ),
            ("extra: [{id: y, regex: \"\"}]", "extra[0].regex"),
        ] {
            let err = policy(yaml).validate().unwrap_err();
            assert_eq!(err.0, field, "{yaml}: {err:?}");
        }
        assert!(serde_yaml::from_str::<DlpPolicy>("mode: warn").is_err());
        assert!(serde_yaml::from_str::<DlpPolicy>("allow: [{rul: x, host: a.test}]").is_err());
        assert!(
            serde_yaml::from_str::<DlpPolicy>("extra: [{id: x, regex: a, validator: crc}]")
                .is_err()
        );
    }
}
