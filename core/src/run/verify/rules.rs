//! The suite's probes of the route rules: for each route, requests its rules refuse (a
//! method its `methods` leaves out, each `deny` entry, the forge defaults of a credentialed
//! route to a forge's API), chosen from the same rule code egress runs
//! ([`bottle_contract::egress::RouteRules::check`]).
//!
//! Each request is one that does no harm even if a broken egress let it through with the
//! real credential: it deletes or touches things that do not exist (`bottle-verify-probe`
//! names, id 0). A route whose `allow:` lifts every candidate gets a SKIP saying so, never a
//! request the user allowed.

use crate::plan::manifest::Manifest;
use bottle_contract::egress::RuleOutcome;
use bottle_contract::egress::forge::Forge;
use bottle_probe::{Finding, RuledRequest};

/// The name every probe request uses for what it pretends to touch.
const NAME: &str = "bottle-verify-probe";

/// Forge calls the defaults refuse, with `{o}`/`{r}` (owner, repo) or `{p}` (project) to
/// fill from the route's paths: each is harmless on a real forge (nothing by these names or
/// ids exists).
fn forge_candidates(host: &str) -> &'static [(&'static str, &'static str)] {
    match host {
        "api.github.com" => &[
            (
                "DELETE",
                "/repos/{o}/{r}/git/refs/heads/bottle-verify-probe",
            ),
            ("DELETE", "/repos/{o}/{r}/hooks/0"),
            ("DELETE", "/repos/{o}/{r}/keys/0"),
        ],
        "uploads.github.com" => &[("POST", "/repos/{o}/{r}/releases/0/assets")],
        "gitlab.com" => &[
            (
                "DELETE",
                "/api/v4/projects/{p}/repository/branches/bottle-verify-probe",
            ),
            ("DELETE", "/api/v4/projects/{p}/hooks/0"),
        ],
        _ => &[],
    }
}

/// The route rule probes of `m`: requests for the probe to send, and SKIPs for routes with
/// rules the suite cannot exercise harmlessly.
pub fn probes(m: &Manifest) -> (Vec<RuledRequest>, Vec<Finding>) {
    let mut send = Vec::new();
    let mut skipped = Vec::new();
    for (i, route) in m.routes.iter().enumerate() {
        let rules = m.route_rules.get(&i).cloned().unwrap_or_default();
        let forge = route.auth.as_ref().and_then(|_| Forge::of(&route.host));
        let paths = &route.path_allowlist;
        let mut probe = |id: &str,
                         what: String,
                         tries: Vec<(String, String)>,
                         rule: &dyn Fn(&str) -> bool| {
            let found = tries.into_iter().find_map(|(method, path)| {
                if !inside(paths, &path) {
                    return None;
                }
                match rules.check(forge, &method, &path) {
                    RuleOutcome::Refuse(r) if rule(&r.rule) => Some(RuledRequest {
                        probe: id.to_owned(),
                        host: route.host.clone(),
                        method,
                        path,
                        rule: r.rule,
                    }),
                    _ => None,
                }
            });
            match found {
                Some(r) => send.push(r),
                None => skipped.push(Finding::skip(
                    id,
                    format!("{what} on {}", route.host),
                    "every request the suite could send harmlessly is outside the route's paths or let through by its `allow:`",
                )),
            }
        };
        if !rules.methods.is_empty() {
            let left_out = ["DELETE", "PATCH", "PUT", "POST"]
                .into_iter()
                .filter(|w| !rules.methods.iter().any(|m| m == w));
            let tries = left_out
                .map(|w| (w.to_owned(), under(paths, NAME)))
                .collect();
            probe(
                "route-method",
                format!(
                    "a method `methods: [{}]` leaves out",
                    rules.methods.join(", ")
                ),
                tries,
                &|r| r == "methods",
            );
        }
        for (j, d) in rules.deny.iter().enumerate() {
            // Its globs are placeholders, filled from the route's paths where they can be.
            let template = d
                .path
                .split('/')
                .map(|s| if s == "*" || s == "**" { "{*}" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let methods: Vec<String> = if d.methods.is_empty() {
                vec!["DELETE".into(), "GET".into()]
            } else {
                d.methods.clone()
            };
            let tries = methods
                .iter()
                .flat_map(|m| fills(paths, &template).map(move |p| (m.clone(), p)))
                .collect();
            let rule = format!("deny[{j}]");
            probe(
                "route-deny",
                format!("what `deny[{j}]` ({}) refuses", d.path),
                tries,
                &|r| r == rule,
            );
        }
        if forge.is_some() {
            let tries = forge_candidates(&route.host)
                .iter()
                .flat_map(|(method, template)| {
                    fills(paths, template).map(|p| (method.to_string(), p))
                })
                .collect();
            probe(
                "forge-default",
                "a call the forge defaults refuse (a ref deleted, a webhook, a deploy key, an asset upload)".into(),
                tries,
                &|r| r.starts_with("github-") || r.starts_with("gitlab-"),
            );
        }
    }
    (send, skipped)
}

/// A path under the route's first path prefix (or `/`), ending in `leaf`.
fn under(paths: &[String], leaf: &str) -> String {
    let prefix = paths.first().map_or("", |p| p.trim_end_matches('/'));
    format!("{prefix}/{leaf}")
}

/// Whether egress's path allowlist lets `path` through (a prefix matches itself and what is
/// below it, segment-wise; none means every path).
fn inside(paths: &[String], path: &str) -> bool {
    paths.is_empty()
        || paths.iter().any(|p| {
            let p = p.trim_end_matches('/');
            p.is_empty()
                || path == p
                || path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// `template` filled from each of the route's prefixes (its placeholders take the prefix's
/// segments where it has them, [`NAME`] elsewhere), or once from nothing when it has none.
fn fills<'a>(paths: &'a [String], template: &str) -> impl Iterator<Item = String> + 'a {
    let template = template.to_owned();
    let prefixes: Vec<&str> = if paths.is_empty() {
        vec![""]
    } else {
        paths.iter().map(String::as_str).collect()
    };
    prefixes.into_iter().filter_map(move |prefix| {
        let given: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        let mut out = Vec::new();
        for (k, seg) in template.split('/').filter(|s| !s.is_empty()).enumerate() {
            let placeholder = seg.starts_with('{') && seg.ends_with('}');
            match given.get(k) {
                Some(g) if placeholder => out.push((*g).to_owned()),
                Some(g) if *g == seg => out.push(seg.to_owned()),
                Some(_) => return None,
                None if placeholder => out.push(NAME.to_owned()),
                None => out.push(seg.to_owned()),
            }
        }
        // A prefix deeper than the template: the call is outside the route's paths.
        (given.len() <= out.len()).then(|| format!("/{}", out.join("/")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(egress: &str) -> Manifest {
        let text = format!("image: x\ncwd: none\negress:\n{egress}");
        let env = crate::hostenv::HostEnv::from_vars([("HOME".to_owned(), "/home/u".to_owned())]);
        crate::plan::manifest::parse(std::path::Path::new("agents/demo.yaml"), &text, &env).unwrap()
    }

    #[test]
    fn a_forge_route_gets_a_refused_call_inside_its_paths() {
        let m = manifest(
            "  routes:\n    - host: api.github.com\n      path_allowlist: [/repos/example/]\n      auth: {scheme: Bearer, token_ref: T}\n    - host: uploads.github.com\n      auth: {scheme: Bearer, token_ref: T}\n",
        );
        let (send, skipped) = probes(&m);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            send.iter()
                .map(|r| format!("{} {} {} {}", r.host, r.method, r.path, r.rule))
                .collect::<Vec<_>>(),
            [
                "api.github.com DELETE /repos/example/bottle-verify-probe/git/refs/heads/bottle-verify-probe github-git-data",
                "uploads.github.com POST /repos/bottle-verify-probe/bottle-verify-probe/releases/0/assets github-releases",
            ]
        );
    }

    #[test]
    fn what_allow_lifts_is_never_sent() {
        let m = manifest(
            "  routes:\n    - host: api.github.com\n      auth: {scheme: Bearer, token_ref: T}\n      allow: [{path: /repos/*/*/git/**}]\n",
        );
        let (send, _) = probes(&m);
        assert_eq!(send.len(), 1);
        assert_eq!(send[0].rule, "github-webhooks", "{send:?}");
        let m = manifest(
            "  routes:\n    - host: api.github.com\n      auth: {scheme: Bearer, token_ref: T}\n      allow: [{path: /repos/}]\n",
        );
        let (send, skipped) = probes(&m);
        assert!(send.is_empty(), "{send:?}");
        assert_eq!(skipped[0].probe, "forge-default");
    }

    #[test]
    fn method_and_deny_rules_are_probed_and_a_route_without_a_credential_has_no_forge_probe() {
        let m = manifest(
            "  routes:\n    - host: registry.npmjs.org\n      methods: [GET, HEAD]\n    - host: api.github.com\n      path_allowlist: [/repos/example/bottle/]\n      deny: [{methods: [POST], path: /repos/*/*/issues/*/lock}]\n",
        );
        let (send, skipped) = probes(&m);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            send.iter()
                .map(|r| format!("{} {} {} {} {}", r.probe, r.host, r.method, r.path, r.rule))
                .collect::<Vec<_>>(),
            [
                "route-method registry.npmjs.org DELETE /bottle-verify-probe methods",
                "route-deny api.github.com POST /repos/example/bottle/issues/bottle-verify-probe/lock deny[0]",
            ]
        );
    }

    #[test]
    fn a_deny_outside_the_routes_paths_is_skipped() {
        let m = manifest(
            "  routes:\n    - host: h.example\n      path_allowlist: [/api/]\n      deny: [{path: /admin}]\n",
        );
        let (send, skipped) = probes(&m);
        assert!(send.is_empty());
        assert_eq!(skipped[0].probe, "route-deny");
    }

    #[test]
    fn templates_take_the_prefixes_segments() {
        let f = |paths: &[&str], t: &str| {
            let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
            fills(&paths, t).collect::<Vec<_>>()
        };
        assert_eq!(
            f(&[], "/repos/{o}/{r}/hooks/0"),
            ["/repos/bottle-verify-probe/bottle-verify-probe/hooks/0"]
        );
        assert_eq!(
            f(&["/repos/a/b/"], "/repos/{o}/{r}/hooks/0"),
            ["/repos/a/b/hooks/0"]
        );
        assert!(f(&["/orgs/a/"], "/repos/{o}/{r}/hooks/0").is_empty());
        assert!(f(&["/repos/a/b/issues/"], "/repos/{o}/{r}/hooks/0").is_empty());
    }
}
