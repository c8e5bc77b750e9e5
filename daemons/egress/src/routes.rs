//! The route table: `routes.yaml` parsed into typed routes, host matching and the path rules.
//!
//! A route is the only way out: a host with no route gets 403 before any upstream connection.
//! Paths on a path-restricted route are compared after percent-decoding and dot-normalising,
//! by whole segments, and anything that could make the origin see another path than the one
//! checked (`%2f`, `%5c`, `%2e`, `..`, `//`, `\`) is refused outright.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use bottle_contract::egress::dlp::{DlpPolicy, DlpValidator};
use bottle_contract::egress::{RouteRules, RoutesFile};

/// How a route's credential is sent upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthForm {
    /// `Authorization: <scheme> <token>` (`Bearer`, `token`).
    Scheme(String),
    /// `<header>: <token>` (e.g. `x-api-key`), lower case.
    Header(String),
}

/// A route's credential: how it is sent and the env var it was read from.
#[derive(Clone)]
pub struct Credential {
    /// How it is sent.
    pub form: AuthForm,
    /// The env var it came from (a name, safe to log).
    pub token_env: String,
    /// The value; never logged, never shown.
    pub token: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("form", &self.form)
            .field("token_env", &self.token_env)
            .finish_non_exhaustive()
    }
}

/// How a host pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host exactly (lower case).
    Exact(String),
    /// Any subdomain of this suffix (`*.example.com` holds `example.com`); not the apex.
    Subdomains(String),
}

impl HostPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lower.clone()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "route host {s:?} is not a host name (`api.example.com` or `*.example.com`)"
            ));
        }
        Ok(if wild {
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether `host` (lower case, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
        }
    }
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Which hosts it covers.
    pub host: HostPattern,
    /// Allowed path prefixes, normalised, without a trailing `/`; empty means every path.
    pub path_allowlist: Vec<String>,
    /// The credential injected on this route.
    pub credential: Option<Credential>,
    /// Its request rules (methods, allow, deny), checked.
    pub rules: RouteRules,
    /// The forge whose API this credentialed route reaches, whose defaults then apply.
    pub forge: Option<bottle_contract::egress::forge::Forge>,
    /// Set when a human granted this route for a while only.
    pub grant: Option<crate::grants::Limit>,
}

pub use bottle_contract::egress::hosts::{StaticAddress, StaticHost};

/// The validated table the proxy runs on.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Routes in file order; the first match wins.
    pub routes: Vec<Route>,
    /// Hosts mapped to fixed addresses (the SSRF guard lets these through), each with the
    /// one port open there when the entry names one.
    pub hosts: BTreeMap<String, StaticHost>,
    /// sha256 of the file's bytes, reported by `/health` so a reload can be confirmed.
    pub sha256: String,
    /// What DLP does with a finding, and the manifest's exceptions.
    pub dlp: DlpPolicy,
    /// The manifest's own detectors, compiled.
    pub dlp_extra: Vec<bottle_dlp::ExtraRule>,
    /// Grants that have ended: what they covered, and when they ended.
    pub ended: Vec<Ended>,
}

/// A grant that has ended, as egress names it when it refuses what it covered.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The host it covered.
    pub host: HostPattern,
    /// The path prefix it covered, normalised; empty for every path.
    pub path_prefix: String,
    /// When it ended (RFC 3339).
    pub at: String,
}

/// The policy's extra detectors compiled; the error names the one that does not compile.
pub fn compile_extra(policy: &DlpPolicy) -> Result<Vec<bottle_dlp::ExtraRule>, String> {
    policy
        .extra
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let check = x.validator.map(|v| match v {
                DlpValidator::Luhn => bottle_dlp::Check::Luhn,
                DlpValidator::Mod97 => bottle_dlp::Check::Mod97,
                DlpValidator::Entropy => bottle_dlp::Check::Entropy,
            });
            bottle_dlp::ExtraRule::new(&x.id, &x.regex, check)
                .map_err(|e| format!("dlp.extra[{i}].regex: {e}"))
        })
        .collect()
}

/// A route table file that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RoutesError {
    /// The file.
    pub file: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl RouteTable {
    /// Read and validate `path`, taking token values from `env` (every `token_env` must be set).
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, RoutesError> {
        let err = |message: String| RoutesError {
            file: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        Self::parse(&bytes, env).map_err(err)
    }

    /// Validate the bytes of a routes file.
    pub fn parse(bytes: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        use sha2::Digest;
        let file: RoutesFile =
            serde_yaml::from_slice(bytes).map_err(|e| format!("not a routes file: {e}"))?;
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            let host = HostPattern::parse(&r.host).map_err(|e| format!("{at}: {e}"))?;
            let rules = r.rules();
            rules
                .validate()
                .map_err(|(field, why)| format!("{at}.{field}: {why}"))?;
            let mut path_allowlist = Vec::new();
            for p in &r.path_allowlist {
                let clean =
                    normalise_path(p).map_err(|why| format!("{at}.path_allowlist: {p:?} {why}"))?;
                path_allowlist.push(clean.trim_end_matches('/').to_owned());
            }
            let form = match (r.auth_scheme, r.auth_header) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{at}: give `auth_scheme` or `auth_header`, not both"
                    ));
                }
                (Some(s), None) if s == "Bearer" || s == "token" => Some(AuthForm::Scheme(s)),
                (Some(s), None) => {
                    return Err(format!(
                        "{at}.auth_scheme: {s:?} is not `Bearer` or `token`"
                    ));
                }
                (None, Some(h)) => {
                    let h = h.to_ascii_lowercase();
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err()
                        || matches!(h.as_str(), "host" | "proxy-authorization" | "cookie")
                    {
                        return Err(format!(
                            "{at}.auth_header: {h:?} is not a header egress can set"
                        ));
                    }
                    Some(AuthForm::Header(h))
                }
                (None, None) => None,
            };
            let credential = match (form, r.token_env) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(format!(
                        "{at}: `token_env` without `auth_scheme` or `auth_header`"
                    ));
                }
                (Some(_), None) => return Err(format!("{at}: auth without `token_env`")),
                (Some(form), Some(token_env)) => {
                    let token = env(&token_env).filter(|v| !v.is_empty()).ok_or_else(|| {
                        format!("{at}.token_env: {token_env} is empty or not set in egress's environment; the host fills it from the route's `token_ref`")
                    })?;
                    if http::HeaderValue::from_str(&token).is_err() {
                        return Err(format!(
                            "{at}.token_env: the value of {token_env} cannot be sent in a header (control characters)"
                        ));
                    }
                    Some(Credential {
                        form,
                        token_env,
                        token,
                    })
                }
            };
            let forge = match (&credential, &host) {
                (Some(_), HostPattern::Exact(h)) => crate::forge::Forge::of(h),
                _ => None,
            };
            let grant = r
                .grant
                .as_ref()
                .map(crate::grants::Limit::parse)
                .transpose()
                .map_err(|e| format!("{at}.{e}"))?;
            if grant.is_some() && credential.is_some() {
                return Err(format!(
                    "{at}.grant: a route with a credential is never granted for a while; only routes without one are"
                ));
            }
            routes.push(Route {
                host,
                path_allowlist,
                credential,
                rules,
                forge,
                grant,
            });
        }
        let mut hosts = BTreeMap::new();
        for (name, addr) in file.hosts {
            let HostPattern::Exact(name) =
                HostPattern::parse(&name).map_err(|e| format!("hosts: {e}"))?
            else {
                return Err(format!(
                    "hosts: {name:?}: a static entry names one host, no `*.`"
                ));
            };
            let entry: StaticHost = addr.parse().map_err(|why| format!("hosts.{name}: {why}"))?;
            hosts.insert(name, entry);
        }
        file.dlp
            .validate()
            .map_err(|(at, why)| format!("dlp.{at}: {why}"))?;
        let dlp_extra = compile_extra(&file.dlp)?;
        let mut ended = Vec::with_capacity(file.ended.len());
        for (i, e) in file.ended.iter().enumerate() {
            let at = format!("ended[{i}]");
            let host = HostPattern::parse(&e.host).map_err(|why| format!("{at}.host: {why}"))?;
            let path_prefix = match &e.path_prefix {
                None => String::new(),
                Some(p) => normalise_path(p)
                    .map_err(|why| format!("{at}.path_prefix: {p:?} {why}"))?
                    .trim_end_matches('/')
                    .to_owned(),
            };
            crate::grants::parse_time(&e.ended).map_err(|why| format!("{at}.ended: {why}"))?;
            ended.push(Ended {
                host,
                path_prefix,
                at: e.ended.clone(),
            });
        }
        let sha256 = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(RouteTable {
            routes,
            hosts,
            sha256,
            dlp: file.dlp,
            dlp_extra,
            ended,
        })
    }

    /// The first route for `host` (lower case, no port).
    pub fn find(&self, host: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.host.matches(host))
    }

    /// The routes a request to `host` may take, in file order: its first route and every later
    /// one for the same host pattern (a grant laid over a manifest's route is a route of its
    /// own). A route of another pattern never takes over: a wildcard behind an exact host's
    /// route must not widen that route's paths.
    pub fn candidates<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Route> + 'a {
        let first = self.find(host).map(|r| r.host.clone());
        self.routes
            .iter()
            .filter(move |r| first.as_ref() == Some(&r.host))
    }

    /// The one port a request to `host` may use, when its `hosts` entry names one.
    pub fn only_port(&self, host: &str) -> Option<u16> {
        self.hosts.get(host).and_then(|h| h.port)
    }

    /// Whether `host` has a route, or had one a grant gave (the agent's DNS then still answers
    /// it, so the refusal names the ended grant).
    pub fn knows(&self, host: &str) -> bool {
        self.find(host).is_some() || self.ended.iter().any(|e| e.host.matches(host))
    }

    /// The ended grant that covered `host` and `raw_path`, in words, if any.
    pub fn ended_for(&self, host: &str, raw_path: &str) -> Option<String> {
        let path = normalise_path(raw_path).ok()?;
        self.ended
            .iter()
            .rev()
            .find(|e| e.host.matches(host) && covers(&e.path_prefix, &path))
            .map(|e| {
                let what = if e.path_prefix.is_empty() {
                    e.host.to_string()
                } else {
                    format!("{}{}/…", e.host, e.path_prefix)
                };
                format!("the grant for {what} ended at {}", e.at)
            })
    }

    /// The table as `GET http://_egress.local/allowlist` shows it: no token values.
    pub fn public_view(&self) -> serde_json::Value {
        let routes: Vec<serde_json::Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({ "host": r.host.to_string() });
                if !r.path_allowlist.is_empty() {
                    v["path_allowlist"] = serde_json::json!(r.path_allowlist);
                }
                if let Some(c) = &r.credential {
                    v["auth"] = serde_json::json!({ "form": c.form, "token_env": c.token_env });
                }
                if !r.rules.is_empty() {
                    v["rules"] = serde_json::json!({
                        "methods": r.rules.methods,
                        "allow": r.rules.allow,
                        "deny": r.rules.deny,
                    });
                }
                if let Some(f) = r.forge {
                    v["forge_defaults"] = serde_json::json!(f);
                }
                if let Some(g) = &r.grant {
                    v["grant"] = serde_json::json!({
                        "until": g.until.as_ref().map(|(_, t)| t),
                        "uses": g.uses,
                    });
                }
                v
            })
            .collect();
        serde_json::json!({ "routes": routes, "config_sha256": self.sha256 })
    }
}

pub use bottle_contract::egress::{RuleOutcome, RuleRefusal};

impl Route {
    /// What this route's request rules say of `method` on `raw_path` (see
    /// [`bottle_contract::egress::RouteRules::check`]); the path allowlist was checked before.
    pub fn check_request(&self, method: &str, raw_path: &str) -> RuleOutcome {
        self.rules.check(self.forge, method, raw_path)
    }

    /// The route in words, for a grant's messages: its host, and its first path prefix if it has
    /// only some paths.
    pub fn describe(&self) -> String {
        match self.path_allowlist.first() {
            Some(p) if !p.is_empty() => format!("{}{p}/…", self.host),
            _ => self.host.to_string(),
        }
    }

    /// Whether `raw_path` (the request's path, still percent-encoded, no query) may pass.
    pub fn allows_path(&self, raw_path: &str) -> Result<(), String> {
        if self.path_allowlist.is_empty() {
            return Ok(());
        }
        let path = normalise_path(raw_path)?;
        let ok = self
            .path_allowlist
            .iter()
            .any(|prefix| covers(prefix, &path));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{path} is outside this route's paths ({})",
                self.path_allowlist.join(", ")
            ))
        }
    }
}

/// Whether the normalised `prefix` (no trailing `/`; empty for every path) covers the
/// normalised `path`: equal, or whole segments under it.
fn covers(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Decode `raw` and refuse anything an origin could read as another path: encoded `/`, `\`
/// or `.`, dot segments, empty segments, control bytes, non-UTF-8.
pub fn normalise_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err("does not start with `/`".into());
    }
    let lower = raw.to_ascii_lowercase();
    // `%u002e` is IIS's own escape for `.`.
    for bad in ["%2f", "%5c", "%2e", "%00", "%25", "%u"] {
        if lower.contains(bad) {
            return Err(format!("holds `{bad}`, which could hide another path"));
        }
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "is not UTF-8 once decoded".to_owned())?;
    if decoded.contains('\\') || decoded.chars().any(char::is_control) {
        return Err("holds `\\` or a control character".into());
    }
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        // Java servers drop a segment's `;parameters` before they resolve dots, so `..;x`
        // climbs a level there, and `;x` alone is an empty segment.
        let bare = bottle_contract::egress::without_parameters(s);
        if bare == "." || bare == ".." {
            return Err(
                "holds a `.` or `..` segment (a `;parameter` after it is dropped by some servers)"
                    .into(),
            );
        }
        if bare.is_empty() && !(last && s.is_empty()) {
            return Err("holds `//` (or a segment that is only a `;parameter`)".into());
        }
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::Forge;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn route(prefixes: &[&str]) -> Route {
        Route {
            host: HostPattern::Exact("api.github.com".into()),
            path_allowlist: prefixes
                .iter()
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect(),
            credential: None,
            rules: RouteRules::default(),
            forge: None,
            grant: None,
        }
    }

    #[test]
    fn hosts_match_case_insensitively_and_wildcards_need_a_subdomain() {
        let exact = HostPattern::parse("API.GitHub.com").unwrap();
        assert!(exact.matches("api.github.com"));
        assert!(!exact.matches("xapi.github.com"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("evilexample.com"));
        assert!(!wild.matches(".example.com"));
        for bad in ["", "a b", "http://x", "x/y", "*.", "-x.com", "1.2.3.4:80"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let r = route(&["/repos/example/"]);
        assert!(r.allows_path("/repos/example").is_ok());
        assert!(r.allows_path("/repos/example/x/y").is_ok());
        assert!(r.allows_path("/repos/example-evil").is_err());
        assert!(r.allows_path("/repos/exampl").is_err());
        assert!(r.allows_path("/repos").is_err());
        assert!(
            r.allows_path("/REPOS/example").is_err(),
            "paths are case-sensitive"
        );
    }

    #[test]
    fn encoded_and_dotted_bypasses_are_refused_on_restricted_routes() {
        let r = route(&["/repos/example/"]);
        for attack in [
            "/repos/example/../other",
            "/repos/example/%2e%2e/other",
            "/repos/example/%2E%2E/other",
            "/repos/example%2f..%2fother",
            "/repos/example/..%5cother",
            "/repos/example/.%2e/other",
            "/repos//example/x",
            "/repos/example/./x",
            "/repos/example\\..\\other",
            "/repos/example/%252e%252e/other",
            "/repos/example/%00",
            "/repos/%ff",
            "/repos/example/..;/other",
            "/repos/example/..;jsessionid=1/other",
            "/repos/example/.;x/../other",
            "/repos/example/;x/..;/..;/other",
            "/repos/example/%u002e%u002e/other",
            "/repos/example/%U002E%U002E/other",
        ] {
            assert!(r.allows_path(attack).is_err(), "{attack} must be refused");
        }
        assert!(r.allows_path("/repos/example/a;v=1").is_ok());
        assert!(r.allows_path("/repos/example/").is_ok());
        assert!(r.allows_path("/repos/example/a%20b").is_ok());
        let open = route(&[]);
        assert!(open.allows_path("/anything/../at/all").is_ok());
    }

    #[test]
    fn a_file_is_validated_whole() {
        let env = |k: &str| (k == "EGRESS_TOKEN_0").then(|| "t0k3n-value".to_owned());
        let good = b"routes:\n- host: api.github.com\n  path_allowlist: [/repos/example/]\n  auth_scheme: Bearer\n  token_env: EGRESS_TOKEN_0\n- host: api.anthropic.com\n  auth_header: X-Api-Key\n  token_env: EGRESS_TOKEN_0\n- host: pypi.org\nhosts:\n  origin.test: host-gateway:8443\n  other.test: 10.0.0.5\n";
        let t = RouteTable::parse(good, &env).unwrap();
        assert_eq!(t.routes.len(), 3);
        assert_eq!(
            t.routes[1].credential.as_ref().unwrap().form,
            AuthForm::Header("x-api-key".into())
        );
        assert_eq!(t.hosts["origin.test"].address, StaticAddress::HostGateway);
        assert_eq!(t.only_port("origin.test"), Some(8443));
        assert_eq!(t.only_port("other.test"), None);
        assert_eq!(t.sha256.len(), 64);
        assert!(
            !format!("{t:?}").contains("t0k3n-value"),
            "Debug hides tokens"
        );
        assert!(!t.public_view().to_string().contains("t0k3n-value"));

        for (bad, why) in [
            (&b"routes: [{host: x.com, token_env: T}]"[..], "without"),
            (
                b"routes: [{host: x.com, auth_scheme: Basic, token_env: T}]",
                "Bearer",
            ),
            (
                b"routes: [{host: x.com, auth_scheme: Bearer, token_env: MISSING}]",
                "not set",
            ),
            (b"routes: [{host: 'x.com/p'}]", "not a host"),
            (
                b"routes: [{host: x.com, path_allowlist: [nope]}]",
                "start with",
            ),
            (b"routes: [{host: x.com, extra: 1}]", "unknown field"),
            (
                b"routes: [{host: x.com}]\nhosts: {a.test: nowhere}",
                "not an address",
            ),
            (
                b"routes: [{host: x.com}]\nhosts: {a.test: host-gateway}",
                "every port",
            ),
            (
                b"routes: [{host: x.com, auth_header: host, token_env: EGRESS_TOKEN_0}]",
                "can set",
            ),
            (b"{{{", "not a routes file"),
        ] {
            let e = RouteTable::parse(bad, &env).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(
            RouteTable::parse(b"routes: []", &no_env)
                .unwrap()
                .find("x.com")
                .is_none()
        );
    }

    fn ruled(host: &str, rules: &str, credential: bool) -> Route {
        let env = |_: &str| Some("t0k3n".to_owned());
        let auth = if credential {
            "\n  auth_scheme: Bearer\n  token_env: T"
        } else {
            ""
        };
        let file = format!("routes:\n- host: {host}{auth}\n{rules}");
        RouteTable::parse(file.as_bytes(), &env)
            .unwrap()
            .routes
            .remove(0)
    }

    fn rule_of(o: RuleOutcome) -> Option<String> {
        match o {
            RuleOutcome::Refuse(r) => Some(r.rule),
            _ => None,
        }
    }

    #[test]
    fn methods_then_allow_then_deny_then_the_forge_defaults() {
        let r = ruled(
            "api.example.com",
            "  methods: [GET, HEAD, POST]\n  deny: [{methods: [POST], path: /admin}]\n  allow: [{path: /admin/ok/**}]",
            true,
        );
        assert_eq!(r.forge, None);
        assert_eq!(
            rule_of(r.check_request("DELETE", "/x")).as_deref(),
            Some("methods")
        );
        assert_eq!(
            rule_of(r.check_request("POST", "/admin/users")).as_deref(),
            Some("deny[0]")
        );
        assert_eq!(r.check_request("POST", "/admin/ok/1"), RuleOutcome::Pass);
        assert_eq!(r.check_request("GET", "/admin/users"), RuleOutcome::Pass);
        // On a forge's API with a credential: its defaults; `allow` lifts one.
        let gh = ruled(
            "api.github.com",
            "  allow: [{methods: [PUT], path: /repos/o/r/contents/docs/**}]",
            true,
        );
        assert_eq!(gh.forge, Some(Forge::GitHub));
        let refused = gh.check_request("PATCH", "/repos/o/r/git/refs/heads/main");
        let RuleOutcome::Refuse(r) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(r.rule, "github-git-data");
        assert!(
            r.lift
                .contains("allow: [{methods: [PATCH], path: \"/repos/*/*/git/**\"}]"),
            "{}",
            r.lift
        );
        assert_eq!(
            gh.check_request("PUT", "/repos/o/r/contents/docs/a.md"),
            RuleOutcome::Pass
        );
        assert_eq!(
            rule_of(gh.check_request("PUT", "/repos/o/r/contents/src/a.rs")).as_deref(),
            Some("github-contents")
        );
        assert_eq!(
            gh.check_request("POST", "/repos/o/r/issues"),
            RuleOutcome::Pass
        );
        assert_eq!(
            gh.check_request("POST", "/graphql"),
            RuleOutcome::GraphQl(Forge::GitHub)
        );
        assert_eq!(
            rule_of(gh.check_request("PUT", "/repos/o/r/issues/1/..%2F..%2Fgit%2Frefs")).as_deref(),
            Some("path")
        );
        assert_eq!(
            rule_of(gh.check_request("PUT", "/repos/o%2Fr/contents/a")).as_deref(),
            Some("path")
        );
        // Without a credential there is nothing of the user's to spend: no forge defaults.
        assert_eq!(ruled("api.github.com", "", false).forge, None);
    }

    #[test]
    fn bad_rules_name_their_field() {
        let env = |_: &str| None;
        for (rules, field) in [
            ("  methods: [get]", "routes[0].methods[0]"),
            ("  deny: [{path: /a/b*}]", "routes[0].deny[0].path"),
            (
                "  allow: [{methods: [FETCH], path: /a}]",
                "routes[0].allow[0].methods[0]",
            ),
            ("  deny: [{path: relative}]", "routes[0].deny[0].path"),
            ("  deny: [{paths: /a}]", "unknown field"),
        ] {
            let file = format!("routes:\n- host: x.com\n{rules}");
            let e = RouteTable::parse(file.as_bytes(), &env).unwrap_err();
            assert!(e.contains(field), "{rules}: {e}");
        }
    }
}
