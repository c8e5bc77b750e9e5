//! egress: the agent's proxy, always: its only way out, in front of pipelock when the bundle
//! has one.
//!
//! The agent holds no real token: egress strips any `Authorization` it sends and injects the
//! real one for matching routes only. Token values reach egress as env vars `EGRESS_TOKEN_<n>`
//! that the host fills from the host env at launch; this plugin only ever sees their names.
//!
//! Every host the agent may reach must be a route, or egress answers 403: `routes.yaml` holds
//! the manifest's routes, then each allowlisted host (the defaults among them) as a plain
//! route, so egress and pipelock allow the same hosts. With no `bundle-proxy` endpoint (no
//! pipelock in the bundle) egress gets no `--upstream` and dials out itself, with its SSRF
//! guard and DLP as the whole firewall.

use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;

/// The hostname the agent uses.
pub const HOSTNAME: &str = "egress";
/// The proxy port.
pub const PORT: u16 = bottle_contract::ports::EGRESS;
/// The agent's DNS server, TLS and HTTP for clients that ignore the proxy env (see
/// `bottle-egress --agent-host`): the ports such clients dial.
pub const DIRECT_PORTS: [u16; 3] = [53, 443, 80];
/// In-container dir holding `routes.yaml` (a dir mount, so live edits are visible).
pub const CONFIG_DIR: &str = "/etc/egress";
/// In-container path of egress's CA, cert and key in one PEM.
pub const CA_BUNDLE: &str = "/etc/egress-ca/bundle.pem";
/// In-container path of the upstream (pipelock) CA egress trusts.
pub const UPSTREAM_CA: &str = "/etc/egress-ca/upstream.pem";
/// In-container path of the manifest's `egress.upstream_ca`.
pub const EXTRA_UPSTREAM_CA: &str = "/etc/egress-ca/extra-upstream.pem";
/// The manifest's `auth: {header: NAME}` reaches plugins as the scheme `header:NAME` (the
/// 0.1.0 contract has only `scheme`; see `wit/PENDING_CHANGES.md`).
pub const HEADER_SCHEME_PREFIX: &str = "header:";
/// The daemon binary in the bundle image.
pub const BINARY: &str = "/usr/local/bin/bottle-egress";
/// `plugins.egress`: what the host passes from the manifest's `egress` section that the 0.1.0
/// `bottle` record has no field for (`egress.hosts`, `egress.upstream_ca`, `egress.dlp`, each
/// route's `methods`, `allow` and `deny`); typos are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Static host entries: name to an IP, `IP:PORT` or `host-gateway:PORT` (see
    /// [`bottle_contract::egress::hosts`]).
    #[serde(default)]
    pub hosts: std::collections::BTreeMap<String, String>,
    /// Absolute host path of an extra CA upstream TLS trusts.
    pub upstream_ca: Option<String>,
    /// The request rules of the manifest's routes, by their place in `egress.routes`.
    #[serde(default)]
    pub route_rules: std::collections::BTreeMap<usize, RouteRules>,
    /// The manifest's DLP policy (`egress.dlp`), copied into the routes file.
    #[serde(default)]
    pub dlp: bottle_contract::egress::dlp::DlpPolicy,
    /// The limits of routes a human granted for a while, by their place in the routes (the
    /// host lays such a grant over the manifest as a route of its own).
    #[serde(default)]
    pub route_grants: std::collections::BTreeMap<usize, GrantLimit>,
    /// Grants that have ended, for egress to name when it refuses what they covered.
    #[serde(default)]
    pub ended_grants: Vec<EndedGrant>,
}

pub use bottle_contract::egress::{EndedGrant, GrantLimit};

pub use bottle_contract::egress::{RequestRule, Route, RouteRules, RoutesFile};

/// The env var egress reads its hop token from.
pub const HOP_TOKEN_ENV: &str = "EGRESS_HOP_TOKEN";

/// The routes file and the secret env slots: one `EGRESS_TOKEN_<n>` per distinct `token_ref`,
/// numbered in declaration order.
pub fn routes(bottle: &Bottle, settings: &Settings) -> (RoutesFile, Vec<SecretEnv>) {
    let mut secrets: Vec<SecretEnv> = Vec::new();
    let mut routes: Vec<Route> = bottle
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let token_env = r.auth.as_ref().map(|a| {
                match secrets.iter().find(|s| s.from_host_env == a.token_ref) {
                    Some(s) => s.name.clone(),
                    None => {
                        let name = format!("EGRESS_TOKEN_{}", secrets.len());
                        secrets.push(SecretEnv {
                            name: name.clone(),
                            from_host_env: a.token_ref.clone(),
                        });
                        name
                    }
                }
            });
            let scheme = r.auth.as_ref().map(|a| a.scheme.as_str());
            let header = scheme.and_then(|s| s.strip_prefix(HEADER_SCHEME_PREFIX));
            Route {
                host: r.host.to_ascii_lowercase(),
                path_allowlist: r.path_allowlist.clone(),
                auth_scheme: scheme.filter(|_| header.is_none()).map(str::to_owned),
                auth_header: header.map(str::to_ascii_lowercase),
                token_env,
                ..Route::default()
            }
            .with_rules(settings.route_rules.get(&i).cloned().unwrap_or_default())
            .with_grant(settings.route_grants.get(&i).cloned())
        })
        .collect();
    for host in &bottle.allowlist {
        let host = host.to_ascii_lowercase();
        if !routes.iter().any(|r| r.host == host) {
            routes.push(Route {
                host,
                ..Route::default()
            });
        }
    }
    let file = RoutesFile {
        routes,
        hosts: settings.hosts.clone(),
        dlp: settings.dlp.clone(),
        ended: settings.ended_grants.clone(),
    };
    (file, secrets)
}

/// The plugin.
pub struct Egress;

impl Sidecar for Egress {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "egress".into(),
            kind: PluginKind::Sidecar,
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "credential-injecting proxy: strips the agent's Authorization, injects real tokens per route".into(),
        }
    }

    fn prepare(bottle: &Bottle, settings: &Settings) -> Result<Plan, PluginError> {
        let (file, mut secrets) = routes(bottle, settings);
        // The hop token, minted by the host when egress's port is published beyond the bottle
        // (empty otherwise): egress then serves only requests that carry it.
        secrets.push(hop_token("egress"));
        let yaml =
            serde_yaml::to_string(&file).map_err(|e| PluginError::Internal(e.to_string()))?;
        Ok(Plan {
            // Read by the daemon's uid 1000; it holds hosts and env names, never a token.
            files: vec![StagedFile {
                path: "egress/routes.yaml".into(),
                contents: yaml,
                mode: 0o644,
            }],
            cas: vec![CaRequest {
                id: "egress".into(),
                common_name: format!("bottle egress CA {}", bottle.slug),
                combined_pem: true,
                trusted_by_agent: true,
            }],
            secrets,
            provides: vec![Endpoint {
                name: "agent-proxy".into(),
                url: format!("http://{HOSTNAME}:{PORT}"),
                priority: 20,
            }],
            ..Plan::default()
        })
    }

    fn render(ctx: &RenderContext, settings: &Settings) -> Result<Fragment, PluginError> {
        let mut mounts = vec![Mount::state_ro("egress", CONFIG_DIR)];
        let mut command = vec![
            BINARY.to_owned(),
            "--listen".into(),
            format!("0.0.0.0:{PORT}"),
            "--routes".into(),
            format!("{CONFIG_DIR}/routes.yaml"),
            // Clients that ignore the proxy env resolve allowed names to egress and speak to
            // it directly; only the agent's address is served there.
            "--agent-host".into(),
            bottle_contract::layout::AGENT_SERVICE.into(),
        ];
        // Never a default: with no next proxy in the bundle egress dials out itself.
        if let Some(up) = ctx.endpoints.iter().find(|e| e.name == "bundle-proxy") {
            command.extend(["--upstream".into(), up.url.clone()]);
        }
        if let Some(combined) = ctx
            .cas
            .iter()
            .find(|c| c.id == "egress")
            .and_then(|c| c.combined.clone())
        {
            mounts.push(Mount::state_ro(combined, CA_BUNDLE));
            command.extend(["--ca".into(), CA_BUNDLE.into()]);
        }
        if let Some(up) = ctx.cas.iter().find(|c| c.id == "pipelock") {
            mounts.push(Mount::state_ro(up.cert.clone(), UPSTREAM_CA));
            command.extend(["--upstream-ca".into(), UPSTREAM_CA.into()]);
        }
        if let Some(path) = &settings.upstream_ca {
            mounts.push(Mount {
                source: MountSource::Host(path.clone()),
                target: EXTRA_UPSTREAM_CA.into(),
                read_only: true,
            });
            command.extend(["--upstream-ca".into(), EXTRA_UPSTREAM_CA.into()]);
        }
        Ok(Fragment {
            daemons: vec![Daemon {
                name: HOSTNAME.into(),
                command,
                mounts,
                // The proxy port first: it is the one clients are given.
                ports: std::iter::once(PORT).chain(DIRECT_PORTS).collect(),
                ready_check: Some(vec![
                    BINARY.into(),
                    "health".into(),
                    format!("127.0.0.1:{PORT}"),
                ]),
                ..Daemon::default()
            }],
            ..Fragment::default()
        })
    }
}

bottle_plugin_sdk::export!(sidecar Egress);

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_plugin_sdk::testing;

    fn route(host: &str, token: Option<&str>) -> EgressRoute {
        EgressRoute {
            host: host.into(),
            path_allowlist: vec![],
            auth: token.map(|t| RouteAuth {
                scheme: "Bearer".into(),
                token_ref: t.into(),
            }),
        }
    }

    #[test]
    fn active_without_routes_too() {
        let plan = Egress::prepare(&testing::bottle(), &Settings::default()).unwrap();
        assert!(plan.active, "egress is always the agent's proxy");
        assert_eq!(plan.provides[0].name, "agent-proxy");
    }

    #[test]
    fn header_auth_and_static_hosts_reach_the_routes_file() {
        let mut b = testing::bottle();
        b.routes = vec![EgressRoute {
            host: "api.anthropic.com".into(),
            path_allowlist: vec![],
            auth: Some(RouteAuth {
                scheme: "header:X-Api-Key".into(),
                token_ref: "ANTHROPIC_API_KEY".into(),
            }),
        }];
        let settings = Settings {
            hosts: [("origin.test".to_owned(), "host-gateway:8443".to_owned())].into(),
            ..Settings::default()
        };
        let (file, _) = routes(&b, &settings);
        assert_eq!(file.routes[0].auth_header.as_deref(), Some("x-api-key"));
        assert_eq!(file.routes[0].auth_scheme, None);
        let yaml = serde_yaml::to_string(&file).unwrap();
        assert!(
            yaml.contains("hosts:\n  origin.test: host-gateway:8443"),
            "{yaml}"
        );
    }

    #[test]
    fn one_token_slot_per_distinct_token_ref_in_order() {
        let mut b = testing::bottle();
        b.routes = vec![
            route("api.github.com", Some("GH")),
            route("uploads.github.com", Some("GH")),
            route("api.anthropic.com", Some("ANTHROPIC")),
            route("pypi.org", None),
        ];
        let plan = Egress::prepare(&b, &Settings::default()).unwrap();
        let names: Vec<(&str, &str)> = plan
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.from_host_env.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("EGRESS_TOKEN_0", "GH"),
                ("EGRESS_TOKEN_1", "ANTHROPIC"),
                (HOP_TOKEN_ENV, bottle_contract::names::HOP_TOKEN_HOST_ENV)
            ]
        );
        let file: RoutesFile = serde_yaml::from_str(&plan.files[0].contents).unwrap();
        assert_eq!(file.routes[1].token_env.as_deref(), Some("EGRESS_TOKEN_0"));
        assert_eq!(file.routes[3].token_env, None);
        assert!(
            !plan.files[0].contents.contains("GH\n"),
            "the host env name stays on the host side"
        );
    }

    #[test]
    fn allowlisted_hosts_follow_the_routes_as_plain_routes() {
        let mut b = testing::bottle();
        b.allowlist = vec![
            "api.anthropic.com".into(),
            "PyPI.org".into(),
            "api.github.com".into(),
        ];
        b.routes = vec![route("api.github.com", Some("GH"))];
        let (file, _) = routes(&b, &Settings::default());
        let hosts: Vec<(&str, Option<&str>)> = file
            .routes
            .iter()
            .map(|r| (r.host.as_str(), r.token_env.as_deref()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("api.github.com", Some("EGRESS_TOKEN_0")),
                ("api.anthropic.com", None),
                ("pypi.org", None),
            ],
            "a host with a route keeps it; the rest pass without auth"
        );
    }

    #[test]
    fn chains_to_the_bundle_proxy_over_loopback() {
        let mut ctx = testing::render_context(testing::bottle());
        ctx.endpoints = vec![Endpoint {
            name: "bundle-proxy".into(),
            url: "http://127.0.0.1:8888".into(),
            priority: 10,
        }];
        let f = Egress::render(&ctx, &Settings::default()).unwrap();
        let d = &f.daemons[0];
        assert!(
            d.command
                .windows(2)
                .any(|w| w == ["--upstream", "http://127.0.0.1:8888"])
        );
        assert_eq!(d.ports, [9099, 53, 443, 80]);
        assert!(d.ready_check.is_some());
    }

    #[test]
    fn with_no_bundle_proxy_egress_dials_out_itself() {
        let f = Egress::render(
            &testing::render_context(testing::bottle()),
            &Settings::default(),
        )
        .unwrap();
        assert!(!f.daemons[0].command.iter().any(|a| a == "--upstream"));
    }

    #[test]
    fn route_rules_reach_their_route_in_the_routes_file() {
        let mut b = testing::bottle();
        b.routes = vec![route("a.com", None), route("api.github.com", Some("GH"))];
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "route_rules": {"1": {"methods": ["GET"], "deny": [{"path": "/x"}]}}
        }))
        .unwrap();
        let (file, _) = routes(&b, &settings);
        assert!(file.routes[0].rules().is_empty());
        assert_eq!(file.routes[1].methods, ["GET"]);
        assert_eq!(file.routes[1].deny[0].path, "/x");
        let yaml = serde_yaml::to_string(&file).unwrap();
        let back: RoutesFile = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, file, "the daemon reads what the plugin writes");
    }

    #[test]
    fn a_grants_limit_reaches_its_route_and_ended_grants_are_named() {
        let mut b = testing::bottle();
        b.routes = vec![route("a.com", None), route("crates.io", None)];
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "route_grants": {"1": {"id": "r4", "until": "2026-12-05T10:10:00Z", "uses": 2}},
            "ended_grants": [{"host": "pypi.org", "ended": "2026-12-05T09:00:00Z"}]
        }))
        .unwrap();
        let (file, _) = routes(&b, &settings);
        assert_eq!(file.routes[0].grant, None);
        let g = file.routes[1].grant.as_ref().unwrap();
        assert_eq!((g.id.as_str(), g.uses), ("r4", Some(2)));
        assert_eq!(file.ended[0].host, "pypi.org");
        let yaml = serde_yaml::to_string(&file).unwrap();
        let back: RoutesFile = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, file, "the daemon reads what the plugin writes");
        let (plain, _) = routes(&b, &Settings::default());
        let yaml = serde_yaml::to_string(&plain).unwrap();
        assert!(!yaml.contains("grant") && !yaml.contains("ended"), "{yaml}");
    }

    #[test]
    fn the_dlp_policy_reaches_the_routes_file_and_is_absent_by_default() {
        let b = testing::bottle();
        let (file, _) = routes(&b, &Settings::default());
        assert!(!serde_yaml::to_string(&file).unwrap().contains("dlp"));
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "dlp": {"mode": "log", "allow": [{"rule": "jwt", "host": "api.example.com"}],
                    "extra": [{"id": "acme-key", "regex": "ACME-[0-9]{6}", "validator": "entropy"}]}
        }))
        .unwrap();
        let (file, _) = routes(&b, &settings);
        let yaml = serde_yaml::to_string(&file).unwrap();
        let back: RoutesFile = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back.dlp, settings.dlp, "{yaml}");
    }
}
