//! `routes.yaml`: what the egress plugin renders and the `bottle-egress` daemon reads, and the
//! request rules a route carries (`methods`, `allow`, `deny`).
//!
//! One schema both ways, unknown fields refused: a rule the plugin writes that the daemon
//! did not know would otherwise be a policy silently not applied.
//!
//! A rule's `path` is a prefix or a glob over whole path segments: `/repos/org/` matches that
//! path and everything under it; `*` is one segment (`/repos/*/*/hooks`); `**` is any number
//! of segments, none included (`/repos/**/contents/**`). Requests are compared segment by
//! segment after each segment is percent-decoded on its own ([`request_segments`]), so an
//! encoded `/` never makes a segment boundary the origin would not see.

pub mod dlp;
pub mod forge;
pub mod hosts;

use forge::{Forge, Verdict};

/// The name under which the engine puts its host-gateway address (Docker's `--add-host
/// NAME:host-gateway`: docker0's address by default) into the bundle's `/etc/hosts`; egress
/// reads it for `egress.hosts: {NAME: host-gateway}`, so the word means what it means to Docker.
pub const HOST_GATEWAY_NAME: &str = "bottle-host-gateway";
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The methods egress passes: HTTP's (RFC 9110, PATCH) and WebDAV's, which clients use (and
/// the only ones supervise lets an agent name in a request it attaches).
pub const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
    "MKCALENDAR",
];

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    /// The manifest's routes in manifest order, then the allowlisted hosts as plain routes.
    /// A host matches its first route; a host with no route gets 403.
    pub routes: Vec<Route>,
    /// Static host entries (`egress.hosts`): these names skip DNS and the SSRF guard.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, String>,
    /// The manifest's `egress.dlp`; absent means block every finding, no extra detectors.
    #[serde(default, skip_serializing_if = "dlp::DlpPolicy::is_default")]
    pub dlp: dlp::DlpPolicy,
    /// Grants that have ended (`bottle approve --for/--uses`): no route serves them any more;
    /// egress names them when it refuses a request they covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<EndedGrant>,
}

/// The limit on a route a human granted for a while (`bottle approve --for 10m --uses 5`):
/// egress serves the route until `until` and for `uses` requests, whichever ends first, and
/// refuses it after with the time it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantLimit {
    /// The supervise request the grant answered: egress counts uses under this id, across
    /// reloads.
    pub id: String,
    /// When it ends (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// How many requests it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// A grant that has ended and been taken out of the routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndedGrant {
    /// The host it covered.
    pub host: String,
    /// The path prefix it covered, if only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// When it ended (RFC 3339, UTC).
    pub ended: String,
}

/// One route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Host, lower case; `*.example.com` matches every subdomain of `example.com`.
    pub host: String,
    /// Path prefixes; absent means every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_allowlist: Vec<String>,
    /// `Bearer` or `token`: sent as `Authorization: <scheme> <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    /// A header the token is sent in as is (`x-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// Name of the env var holding the token inside the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// [`RouteRules::methods`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// [`RouteRules::allow`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<RequestRule>,
    /// [`RouteRules::deny`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<RequestRule>,
    /// Set on a route a human granted for a while only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantLimit>,
}

impl Route {
    /// Its request rules.
    pub fn rules(&self) -> RouteRules {
        RouteRules {
            methods: self.methods.clone(),
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }

    /// It with `rules` as its request rules.
    pub fn with_rules(self, rules: RouteRules) -> Route {
        Route {
            methods: rules.methods,
            allow: rules.allow,
            deny: rules.deny,
            ..self
        }
    }

    /// It with `grant` as its limit.
    pub fn with_grant(self, grant: Option<GrantLimit>) -> Route {
        Route { grant, ..self }
    }
}

/// A route's request rules, in the order egress applies them after the path allowlist:
/// `methods` (only these pass), then `allow` (exceptions: a request matching one passes, the
/// forge defaults included), then `deny`, then the forge defaults of a credentialed route to a
/// forge's API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRules {
    /// The methods that may pass at all (upper case); empty: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Requests that pass whatever `deny` and the forge defaults say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<RequestRule>,
    /// Requests refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<RequestRule>,
}

impl RouteRules {
    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.allow.is_empty() && self.deny.is_empty()
    }

    /// Check every rule; the first problem names its place (`deny[1].path`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, m) in self.methods.iter().enumerate() {
            check_method(m).map_err(|e| (format!("methods[{i}]"), e))?;
        }
        for (list, rules) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, r) in rules.iter().enumerate() {
                r.validate()
                    .map_err(|(f, e)| (format!("{list}[{i}].{f}"), e))?;
            }
        }
        Ok(())
    }
}

/// Why a route's request rules refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRefusal {
    /// The rule: `methods`, `path`, `deny[N]`, or a forge row's id (`github-git-data`).
    pub rule: String,
    /// What the request would have done, in words.
    pub reason: String,
    /// How to let it through, if it can be.
    pub lift: String,
}

/// What a route's request rules say of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    /// It passes.
    Pass,
    /// Its body decides: a GraphQL document on a forge's API, whose mutations are checked.
    GraphQl(Forge),
    /// It is refused.
    Refuse(RuleRefusal),
}

impl RouteRules {
    /// What these rules, on a route to `forge`'s API with a credential (or `None`), say of
    /// `method` on `raw_path` (the request's path, still percent-encoded, no query), in their
    /// documented order: `methods`, `allow`, `deny`, then the forge defaults. The path
    /// allowlist was checked before.
    pub fn check(&self, forge: Option<Forge>, method: &str, raw_path: &str) -> RuleOutcome {
        let refuse = |rule: &str, reason: String, lift: String| {
            RuleOutcome::Refuse(RuleRefusal {
                rule: rule.to_owned(),
                reason,
                lift,
            })
        };
        if self.is_empty() && forge.is_none() {
            return RuleOutcome::Pass;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return refuse(
                "methods",
                format!(
                    "{method} is not one of this route's methods ({})",
                    self.methods.join(", ")
                ),
                format!("add {method} to the route's `methods` in the manifest"),
            );
        }
        let segments = match request_segments(raw_path) {
            Ok(s) => s,
            Err(why) => {
                return refuse(
                    "path",
                    format!("the path {why}, which this route's rules cannot judge"),
                    "send the path without it".into(),
                );
            }
        };
        // GitHub's paths never need an encoded `/`; an origin that decodes it before routing
        // would see other segments than the rules did.
        if forge == Some(Forge::GitHub) && segments.iter().any(|s| s.contains('/')) {
            return refuse(
                "path",
                "the path holds an encoded `/`, which GitHub's API never needs".into(),
                "send the path with plain `/`".into(),
            );
        }
        if self
            .allow
            .iter()
            .any(|r| r.matches(method, &segments, false))
        {
            return RuleOutcome::Pass;
        }
        if let Some((i, r)) = self
            .deny
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(method, &segments, true))
        {
            return refuse(
                &format!("deny[{i}]"),
                format!(
                    "this route's `deny[{i}]` ({} {}) refuses it",
                    if r.methods.is_empty() {
                        "any method".to_owned()
                    } else {
                        r.methods.join("|")
                    },
                    r.path
                ),
                "narrow or remove that entry in the manifest".into(),
            );
        }
        let Some(forge) = forge else {
            return RuleOutcome::Pass;
        };
        match forge.decide(method, &segments) {
            None => RuleOutcome::Pass,
            Some(row) => match row.verdict {
                Verdict::Pass => RuleOutcome::Pass,
                Verdict::GraphQl => RuleOutcome::GraphQl(forge),
                Verdict::Deny => refuse(
                    row.id,
                    format!("{method} {raw_path} {}", row.what),
                    format!(
                        "if you mean to let the agent do that with your credential, add `allow: [{{methods: [{method}], path: \"{}\"}}]` to this route in the manifest",
                        row.path
                    ),
                ),
            },
        }
    }
}

/// One `allow` or `deny` entry: the methods it covers (every method when empty) on a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRule {
    /// Upper case; empty: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// A prefix or a glob (see the module doc).
    pub path: String,
}

impl RequestRule {
    /// Check the methods and the path pattern; the problem names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, m) in self.methods.iter().enumerate() {
            check_method(m).map_err(|e| (format!("methods[{i}]"), e))?;
        }
        PathPattern::parse(&self.path).map_err(|e| ("path".to_owned(), e))?;
        Ok(())
    }

    /// Whether `method` on the path of `segments` matches (`fold`: compare literal segments
    /// without case).
    pub fn matches(&self, method: &str, segments: &[String], fold: bool) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && PathPattern::parse(&self.path).is_ok_and(|p| p.matches(segments, fold))
    }
}

/// The methods a rule may name.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

fn check_method(m: &str) -> Result<(), String> {
    if METHODS.contains(&m) {
        Ok(())
    } else {
        Err(format!(
            "`{m}` is not a method egress knows; use one of {} (upper case)",
            METHODS.join(", ")
        ))
    }
}

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: any number of segments.
    Any,
}

/// A rule's path: a prefix (no `*`) or a glob over whole segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Seg>,
    prefix: bool,
}

impl PathPattern {
    /// Parse `/a/*/b/**` (or a prefix such as `/repos/org/`).
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if !s.starts_with('/') {
            return Err(format!("`{s}` does not start with `/`"));
        }
        if s.len() > 512 || s.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!(
                "`{s}` is too long or holds a control character or `\\`"
            ));
        }
        let body = s[1..].trim_end_matches('/');
        let mut segments = Vec::new();
        let mut glob = false;
        if !body.is_empty() {
            for part in body.split('/') {
                let seg = match part {
                    "" => return Err(format!("`{s}` holds `//`")),
                    "." | ".." => return Err(format!("`{s}` holds a `.` or `..` segment")),
                    "*" => Seg::One,
                    "**" => Seg::Any,
                    p if p.contains('*') => {
                        return Err(format!(
                            "`{s}`: `*` stands for a whole segment (`/a/*/b`) and `**` for any number of them"
                        ));
                    }
                    p => Seg::Lit(p.to_owned()),
                };
                glob |= matches!(seg, Seg::One | Seg::Any);
                segments.push(seg);
            }
        }
        Ok(PathPattern {
            segments,
            prefix: !glob,
        })
    }

    /// Parse `s` as a glob even without `*`: `/api/v4/projects` then matches that path only.
    pub fn parse_exact(s: &str) -> Result<PathPattern, String> {
        let mut p = PathPattern::parse(s)?;
        p.prefix = false;
        Ok(p)
    }

    /// Whether a request's path (its [`request_segments`]) matches.
    pub fn matches(&self, path: &[String], fold: bool) -> bool {
        let eq = |a: &str, b: &str| {
            if fold {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        if self.prefix {
            return path.len() >= self.segments.len()
                && self.segments.iter().zip(path).all(|(s, p)| match s {
                    Seg::Lit(l) => eq(l, p),
                    _ => false,
                });
        }
        fn go(pat: &[Seg], path: &[String], eq: &dyn Fn(&str, &str) -> bool) -> bool {
            match pat.split_first() {
                None => path.is_empty(),
                Some((Seg::Any, rest)) => (0..=path.len()).any(|i| go(rest, &path[i..], eq)),
                Some((Seg::One, rest)) => !path.is_empty() && go(rest, &path[1..], eq),
                Some((Seg::Lit(l), rest)) => {
                    path.first().is_some_and(|p| eq(l, p)) && go(rest, &path[1..], eq)
                }
            }
        }
        go(&self.segments, path, &eq)
    }
}

/// A request path as rules see it: its segments, each percent-decoded on its own (an encoded
/// `/` stays inside its segment, as an origin that decodes after routing sees it). Refused:
/// `.` and `..` segments, `//`, control characters and `\`, encoded or not, and non-UTF-8. A
/// trailing `/` is dropped.
pub fn request_segments(raw: &str) -> Result<Vec<String>, String> {
    if !raw.starts_with('/') {
        return Err("does not start with `/`".into());
    }
    let body = raw[1..].strip_suffix('/').unwrap_or(&raw[1..]);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in body.split('/') {
        if part.is_empty() {
            return Err("holds `//`".into());
        }
        if part.to_ascii_lowercase().contains("%u") {
            return Err("holds `%u`, IIS's escape (`%u002e` is `.`)".into());
        }
        let decoded = percent_decode(part).ok_or("is not UTF-8 once decoded")?;
        // `.` or `..`, also behind an encoded `/` an origin might decode before it routes, or
        // before a `;parameter` a Java server drops before it resolves dots (`..;x`).
        if decoded
            .split('/')
            .map(without_parameters)
            .any(|p| p == "." || p == "..")
        {
            return Err(
                "holds a `.` or `..` segment (a `;parameter` after it is dropped by some servers)"
                    .into(),
            );
        }
        if without_parameters(&decoded).is_empty() {
            return Err(
                "holds a segment that is only a `;parameter` (an empty segment to some servers)"
                    .into(),
            );
        }
        if decoded.chars().any(|c| c.is_control() || c == '\\') {
            return Err("holds `\\` or a control character".into());
        }
        out.push(decoded);
    }
    Ok(out)
}

/// A path segment without its `;parameters` (`..;jsessionid=1` is `..`), as Java servers see
/// it when they resolve dots.
pub fn without_parameters(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

/// `%XX` decoded (a malformed escape is kept as it is); `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        request_segments(p).unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments_and_globs_match_segments() {
        let p = PathPattern::parse("/repos/org/").unwrap();
        assert!(p.matches(&segs("/repos/org"), false));
        assert!(p.matches(&segs("/repos/org/x/y"), false));
        assert!(!p.matches(&segs("/repos/org-evil"), false));
        assert!(!p.matches(&segs("/REPOS/org"), false));
        assert!(p.matches(&segs("/REPOS/org"), true));
        let g = PathPattern::parse("/repos/*/*/git/**").unwrap();
        assert!(g.matches(&segs("/repos/o/r/git/refs/heads/main"), false));
        assert!(g.matches(&segs("/repos/o/r/git"), false));
        assert!(!g.matches(&segs("/repos/o/git/refs"), false));
        let exact = PathPattern::parse("/repos/*/*").unwrap();
        assert!(exact.matches(&segs("/repos/o/r"), false));
        assert!(exact.matches(&segs("/repos/o/r/"), false));
        assert!(!exact.matches(&segs("/repos/o/r/issues"), false));
        let mid = PathPattern::parse("/**/contents/**").unwrap();
        assert!(mid.matches(&segs("/repos/o/r/contents/a/b"), false));
        assert!(!mid.matches(&segs("/repos/o/r/issues"), false));
        assert!(
            PathPattern::parse("/")
                .unwrap()
                .matches(&segs("/anything"), false)
        );
    }

    #[test]
    fn an_encoded_slash_stays_in_its_segment_and_dots_are_refused() {
        assert_eq!(segs("/a%2Fb/c"), ["a/b", "c"]);
        let g = PathPattern::parse("/repos/*/*/contents/**").unwrap();
        assert!(!g.matches(&segs("/repos/o%2Fr%2Fcontents/x"), false));
        for bad in [
            "/a/../b",
            "/a/%2e%2e/b",
            "/a//b",
            "/a/%5cb",
            "/a/%00",
            "x",
            "/%ff",
            "/issues/..%2F..%2Fgit%2Frefs",
            "/a/..;/b",
            "/a/..%3Bx/b",
            "/a/.;x/b",
            "/a/;x/b",
            "/a/%u002e%u002e/b",
        ] {
            assert!(request_segments(bad).is_err(), "{bad}");
        }
        assert_eq!(segs("/a;v=1/b"), ["a;v=1", "b"]);
    }

    #[test]
    fn rules_are_validated_naming_the_field() {
        let r = RouteRules {
            methods: vec!["GET".into(), "get".into()],
            ..RouteRules::default()
        };
        assert_eq!(r.validate().unwrap_err().0, "methods[1]");
        let r = RouteRules {
            deny: vec![RequestRule {
                methods: vec![],
                path: "/a/b*".into(),
            }],
            ..RouteRules::default()
        };
        let (field, why) = r.validate().unwrap_err();
        assert_eq!(field, "deny[0].path");
        assert!(why.contains("whole segment"), "{why}");
        for bad in ["a", "/a//b", "/a/../b", "/a\\b"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
