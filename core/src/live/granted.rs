//! Accesses a human approved through supervise (`bottle approve`), laid over a manifest.
//!
//! A run's approvals are kept in its state dir ([`APPROVED_FILE`]); `--persist` also adds
//! them to the manifest's file in the user's config dir ([`persisted_path`]), which every later
//! `bottle run` of that manifest lays over it. Either file is written whole (temp file,
//! fsync, rename), 0600, and read strictly: a file bottle did not write is an error naming
//! the file, not a silent grant.
//!
//! An access may end by itself (`bottle approve --for 10m --uses 5`): it then becomes a route
//! of its own with a [`GrantLimit`] egress enforces at each request, and once its time is up
//! the host marks it `ended` and takes the route out live ([`crate::live::apply::end_due`]); egress
//! keeps naming it when it refuses what it covered.

use crate::model::EgressRoute;
use crate::plan::manifest::Manifest;
use bottle_contract::egress::{EndedGrant, GrantLimit};
use bottle_contract::supervise::validate;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use bottle_contract::layout::APPROVED_FILE;

/// One approved access: a host, or a path prefix on a host; never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The host (lower case; `*.` over two labels or more for a whole domain).
    pub host: String,
    /// Only requests under this path prefix (a route with no credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The supervise request it answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// When it was approved (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approved: String,
    /// When it ends by itself (RFC 3339, UTC; `bottle approve --for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// How many requests it serves in a run (`bottle approve --uses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// When it ended and was taken out of the running bottle (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

impl Access {
    /// An access whose host and path prefix pass the rules supervise checks the agent's
    /// requests by (no IP literal, no internal name, `*.` over two labels or more).
    pub fn checked(host: &str, path_prefix: Option<&str>) -> Result<Access, ApprovedError> {
        let host = validate::host(host).map_err(ApprovedError::Refused)?;
        let path_prefix = path_prefix
            .map(validate::path_prefix)
            .transpose()
            .map_err(ApprovedError::Refused)?;
        if path_prefix.is_some() && host.starts_with("*.") {
            return Err(ApprovedError::Refused(format!(
                "{host}: a path prefix needs one host, not a wildcard; approve the host alone or name one host"
            )));
        }
        Ok(Access {
            host,
            path_prefix,
            request: String::new(),
            approved: String::new(),
            until: None,
            uses: None,
            ended: None,
        })
    }

    /// Whether it ends by itself.
    pub fn limited(&self) -> bool {
        self.until.is_some() || self.uses.is_some()
    }

    /// When it ended, or ends if that is at `now` or before: its `ended`, else its `until`
    /// once passed.
    pub fn ended_by(&self, now: SystemTime) -> Option<String> {
        if let Some(e) = &self.ended {
            return Some(e.clone());
        }
        let until = self.until.as_deref()?;
        (parse_time(until).ok()? <= now).then(|| until.to_owned())
    }

    /// The access in words.
    pub fn describe(&self) -> String {
        match &self.path_prefix {
            Some(p) => format!("{}{p}…", self.host),
            None => self.host.clone(),
        }
    }
}

/// `text` (RFC 3339) as a point in time.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e})"))
}

/// A file of approvals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approved {
    /// The accesses, oldest first.
    #[serde(default)]
    pub access: Vec<Access>,
}

/// Why approvals could not be read, laid over a manifest or written.
#[derive(Debug, thiserror::Error)]
pub enum ApprovedError {
    /// The file is not one bottle wrote.
    #[error(
        "{}: {message}; bottle writes this file (`bottle approve --persist`): fix it, or delete it to drop those approvals",
        file.display()
    )]
    Malformed {
        /// The file.
        file: PathBuf,
        /// What is wrong, with the field.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{}: {error}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The access cannot be granted this way.
    #[error("{0}")]
    Refused(String),
}

/// The persisted approvals of the manifest at `manifest_file`:
/// `<config dir>/approved/<name>-<digest>.yaml`, the digest (12 hex digits) of the manifest's
/// canonical path. Kept per manifest, not per name: another project's `agents/<name>.yaml`
/// (a cloned one, or one the agent wrote) gets none of them.
pub fn persisted_path(config_dir: &Path, manifest_file: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    let canonical = manifest_file
        .canonicalize()
        .unwrap_or_else(|_| manifest_file.to_owned());
    let name = manifest_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let digest = crate::plan::consent::digest(canonical.as_os_str().as_bytes());
    config_dir
        .join("approved")
        .join(format!("{name}-{}.yaml", &digest[..12]))
}

/// Where approvals were kept by the agent's name alone (`approved/<name>.yaml`), which every
/// manifest of that name got: no longer read, only pointed out.
pub fn by_name_path(config_dir: &Path, name: &str) -> PathBuf {
    config_dir.join("approved").join(format!("{name}.yaml"))
}

impl Approved {
    /// The approvals in `file`; none when it does not exist.
    pub fn load(file: &Path) -> Result<Approved, ApprovedError> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Approved::default()),
            Err(error) => {
                return Err(ApprovedError::Io {
                    file: file.to_owned(),
                    error,
                });
            }
        };
        let approved: Approved =
            serde_yaml::from_str(&text).map_err(|e| ApprovedError::Malformed {
                file: file.to_owned(),
                message: e.to_string(),
            })?;
        for a in &approved.access {
            let again = Access::checked(&a.host, a.path_prefix.as_deref()).map_err(|e| {
                ApprovedError::Malformed {
                    file: file.to_owned(),
                    message: format!("access `{}`: {e}", a.describe()),
                }
            })?;
            for (field, t) in [("until", &a.until), ("ended", &a.ended)] {
                if let Some(t) = t {
                    parse_time(t).map_err(|e| ApprovedError::Malformed {
                        file: file.to_owned(),
                        message: format!("access `{}`: {field}: {e}", a.describe()),
                    })?;
                }
            }
            if a.uses == Some(0) {
                return Err(ApprovedError::Malformed {
                    file: file.to_owned(),
                    message: format!(
                        "access `{}`: uses: 0 would grant nothing; remove the entry",
                        a.describe()
                    ),
                });
            }
            if again.host != a.host {
                return Err(ApprovedError::Malformed {
                    file: file.to_owned(),
                    message: format!("access `{}`: hosts are written lower case", a.host),
                });
            }
        }
        Ok(approved)
    }

    /// These approvals plus `access`: it replaces one for the same host and path prefix (the
    /// newer decision holds: a grant for a while after one for good, or again after one ended).
    pub fn with(&self, access: Access) -> Approved {
        let mut out = self.clone();
        out.access
            .retain(|a| !(a.host == access.host && a.path_prefix == access.path_prefix));
        out.access.push(access);
        out
    }

    /// These approvals with every limited one whose time is up at `now` marked ended; `None`
    /// when none is newly due.
    pub fn end_due(&self, now: SystemTime) -> Option<Approved> {
        let mut out = self.clone();
        let mut changed = false;
        for a in &mut out.access {
            if a.ended.is_none()
                && let Some(at) = a.ended_by(now)
            {
                a.ended = Some(at);
                changed = true;
            }
        }
        changed.then_some(out)
    }

    /// These approvals with every running grant limited by uses marked ended at `now`
    /// (egress counted its uses in memory, and is about to start again with none); `None`
    /// when there is none.
    pub fn end_counted(&self, now: SystemTime) -> Option<Approved> {
        let mut out = self.clone();
        let at = crate::state::rfc3339(now);
        let mut changed = false;
        for a in &mut out.access {
            if a.ended.is_none() && a.uses.is_some() {
                a.ended = Some(at.clone());
                changed = true;
            }
        }
        changed.then_some(out)
    }

    /// The earliest time a limited access still running ends.
    pub fn next_end(&self) -> Option<SystemTime> {
        self.access
            .iter()
            .filter(|a| a.ended.is_none())
            .filter_map(|a| parse_time(a.until.as_deref()?).ok())
            .min()
    }

    /// Write them to `file`, whole, 0600 (its dir is made 0700 if missing).
    pub fn save(&self, file: &Path) -> Result<(), ApprovedError> {
        let io = |error| ApprovedError::Io {
            file: file.to_owned(),
            error,
        };
        let text = format!(
            "# Accesses approved with `bottle approve`; bottle lays them over the agent's manifest.\n{}",
            serde_yaml::to_string(self).map_err(|e| io(std::io::Error::other(e)))?
        );
        if let Some(dir) = file.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        crate::live::apply::write_whole(file, text.as_bytes(), 0o600).map_err(io)
    }

    /// Lay these approvals over `manifest` as they stand at `now`: a host joins its allowlist,
    /// a path prefix becomes a route with no credential (or widens such a route); a limited
    /// access becomes a route of its own carrying its limit, and an ended one is only named to
    /// egress. Returns what changed, in words; an access the manifest already gives changes
    /// nothing.
    pub fn apply(
        &self,
        manifest: &mut Manifest,
        now: SystemTime,
    ) -> Result<Vec<String>, ApprovedError> {
        let mut changed = Vec::new();
        let mut limits = std::collections::BTreeMap::new();
        let mut ended = Vec::new();
        for a in &self.access {
            if let Some(at) = a.ended_by(now) {
                ended.push(EndedGrant {
                    host: a.host.clone(),
                    path_prefix: a.path_prefix.clone(),
                    ended: at,
                });
                continue;
            }
            if covered(manifest, a) {
                continue;
            }
            let route = manifest.routes.iter_mut().find(|r| r.host == a.host);
            if a.limited() {
                refuse_over_a_credential(route.as_deref(), a)?;
                limits.insert(
                    manifest.routes.len(),
                    GrantLimit {
                        id: grant_id(a),
                        until: a.until.clone(),
                        uses: a.uses,
                    },
                );
                manifest.routes.push(EgressRoute {
                    host: a.host.clone(),
                    path_allowlist: a.path_prefix.iter().cloned().collect(),
                    auth: None,
                });
                changed.push(a.describe());
                continue;
            }
            match &a.path_prefix {
                None => match route {
                    // The route's own paths widen to the whole host.
                    Some(r) if r.auth.is_none() => r.path_allowlist.clear(),
                    Some(_) => {
                        return Err(ApprovedError::Refused(format!(
                            "{} has a route that injects a credential on some paths only; approving the whole host would hand that credential to every path. Widen the route's path_allowlist in the manifest if you mean it",
                            a.host
                        )));
                    }
                    None => manifest.allowlist.push(a.host.clone()),
                },
                Some(prefix) => match route {
                    Some(r) if r.auth.is_some() => {
                        return Err(ApprovedError::Refused(format!(
                            "{} has a route that injects a credential; approving {} through it would hand that credential to a new path. Widen the route's path_allowlist in the manifest if you mean it",
                            a.host,
                            a.describe()
                        )));
                    }
                    Some(r) => r.path_allowlist.push(prefix.clone()),
                    None => manifest.routes.push(EgressRoute {
                        host: a.host.clone(),
                        path_allowlist: vec![prefix.clone()],
                        auth: None,
                    }),
                },
            }
            changed.push(a.describe());
        }
        pass_to_egress(manifest, &limits, &ended)?;
        Ok(changed)
    }
}

/// The id egress counts a grant's uses under: the request it answered, else what it covers.
fn grant_id(a: &Access) -> String {
    if a.request.is_empty() {
        a.describe()
    } else {
        a.request.clone()
    }
}

/// The refusals an unlimited access meets on a route with a credential, for a limited one:
/// the same rule whether or not a grant ends.
fn refuse_over_a_credential(route: Option<&EgressRoute>, a: &Access) -> Result<(), ApprovedError> {
    match route {
        Some(r) if r.auth.is_some() => Err(ApprovedError::Refused(format!(
            "{} has a route that injects a credential; approving {} beside it would be judged against that route. Widen the route's path_allowlist in the manifest if you mean it",
            a.host,
            a.describe()
        ))),
        _ => Ok(()),
    }
}

/// The 0.1.0 `bottle` record has no field for a route's grant or for ended grants, so egress
/// gets them in its settings table, as it gets the manifest's route rules.
fn pass_to_egress(
    manifest: &mut Manifest,
    limits: &std::collections::BTreeMap<usize, GrantLimit>,
    ended: &[EndedGrant],
) -> Result<(), ApprovedError> {
    if limits.is_empty() && ended.is_empty() {
        return Ok(());
    }
    let table = manifest
        .settings
        .entry(crate::plan::manifest::ROUTES_PLUGIN.to_owned())
        .or_insert_with(|| serde_json::json!({}));
    let json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| ApprovedError::Refused(format!("cannot pass the grants to egress: {e}")))
    };
    if !limits.is_empty() {
        table["route_grants"] = json(serde_json::to_value(limits))?;
    }
    if !ended.is_empty() {
        table["ended_grants"] = json(serde_json::to_value(ended))?;
    }
    Ok(())
}

/// Whether `manifest` already lets the agent reach what `access` asks for.
fn covered(manifest: &Manifest, access: &Access) -> bool {
    let host_allowed = manifest
        .allowlist_with_defaults()
        .iter()
        .any(|h| h == &access.host);
    if host_allowed {
        return true;
    }
    manifest
        .routes
        .iter()
        .find(|r| r.host == access.host)
        .is_some_and(|r| {
            r.path_allowlist.is_empty()
                || access
                    .path_prefix
                    .as_ref()
                    .is_some_and(|p| r.path_allowlist.iter().any(|q| p.starts_with(q.as_str())))
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_restart_ends_grants_counted_by_uses_only() {
        let mut counted = Access::checked("a.example", None).unwrap();
        counted.uses = Some(3);
        let mut timed = Access::checked("b.example", None).unwrap();
        timed.until = Some("2999-01-01T00:00:00Z".into());
        let mut done = Access::checked("c.example", None).unwrap();
        done.uses = Some(1);
        done.ended = Some("2026-01-01T00:00:00Z".into());
        let approved = Approved::default().with(counted).with(timed).with(done);
        let now = parse_time("2026-12-05T10:00:00Z").unwrap();
        let after = approved.end_counted(now).unwrap();
        let ended: Vec<(&str, Option<&str>)> = after
            .access
            .iter()
            .map(|a| (a.host.as_str(), a.ended.as_deref()))
            .collect();
        assert_eq!(
            ended,
            [
                ("a.example", Some("2026-12-05T10:00:00Z")),
                ("b.example", None),
                ("c.example", Some("2026-01-01T00:00:00Z")),
            ]
        );
        assert_eq!(after.end_counted(now), None, "nothing left to end");
    }

    use super::*;
    use crate::hostenv::HostEnv;

    fn manifest() -> Manifest {
        crate::plan::manifest::parse(
            Path::new("/agents/coder.yaml"),
            "image: a\negress:\n  allowlist: [pypi.org]\n  routes:\n    - host: api.github.com\n      path_allowlist: [/repos/]\n      auth: {scheme: Bearer, token_ref: GH}\n    - host: docs.example.com\n      path_allowlist: [/v1/]\n",
            &HostEnv::from_vars([]),
        )
        .unwrap()
    }

    #[test]
    fn hosts_join_the_allowlist_and_prefixes_become_routes_without_credentials() {
        let mut m = manifest();
        let approved = Approved::default()
            .with(Access::checked("crates.io", None).unwrap())
            .with(Access::checked("pypi.org", None).unwrap())
            .with(Access::checked("docs.example.com", Some("/v2/")).unwrap())
            .with(Access::checked("docs.example.com", Some("/v1/x")).unwrap())
            .with(Access::checked("raw.example.org", Some("/a/")).unwrap());
        let changed = approved.apply(&mut m, SystemTime::now()).unwrap();
        assert_eq!(
            changed,
            ["crates.io", "docs.example.com/v2/…", "raw.example.org/a/…"]
        );
        assert!(m.allowlist.contains(&"crates.io".to_owned()));
        let docs = m
            .routes
            .iter()
            .find(|r| r.host == "docs.example.com")
            .unwrap();
        assert_eq!(docs.path_allowlist, ["/v1/", "/v2/"]);
        let raw = m
            .routes
            .iter()
            .find(|r| r.host == "raw.example.org")
            .unwrap();
        assert!(raw.auth.is_none());
    }

    fn at(t: &str) -> SystemTime {
        parse_time(t).unwrap()
    }

    #[test]
    fn a_limited_grant_is_a_route_of_its_own_with_its_limit_and_an_ended_one_is_named() {
        let mut m = manifest();
        let mut docs = Access::checked("docs.example.com", Some("/v2/")).unwrap();
        docs.request = "r1".into();
        docs.uses = Some(3);
        let mut crates = Access::checked("crates.io", None).unwrap();
        crates.request = "r2".into();
        crates.until = Some("2026-12-05T10:10:00Z".into());
        let approved = Approved::default().with(docs).with(crates);
        let changed = approved.apply(&mut m, at("2026-12-05T10:00:00Z")).unwrap();
        assert_eq!(changed, ["docs.example.com/v2/…", "crates.io"]);
        let hosts: Vec<(&str, &[String])> = m
            .routes
            .iter()
            .map(|r| (r.host.as_str(), r.path_allowlist.as_slice()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("api.github.com", &["/repos/".to_owned()][..]),
                ("docs.example.com", &["/v1/".to_owned()][..]),
                ("docs.example.com", &["/v2/".to_owned()][..]),
                ("crates.io", &[][..]),
            ],
            "the manifest's route keeps its paths; the grant is a route beside it"
        );
        assert!(!m.allowlist.contains(&"crates.io".to_owned()));
        let egress = &m.settings["egress"];
        assert_eq!(egress["route_grants"]["2"]["uses"], 3);
        assert_eq!(egress["route_grants"]["2"]["id"], "r1");
        assert_eq!(egress["route_grants"]["3"]["until"], "2026-12-05T10:10:00Z");
        assert!(egress.get("ended_grants").is_none());

        // At its time it is no route, only named.
        let mut m = manifest();
        approved.apply(&mut m, at("2026-12-05T10:10:00Z")).unwrap();
        assert!(!m.routes.iter().any(|r| r.host == "crates.io"));
        assert_eq!(
            m.settings["egress"]["ended_grants"][0],
            serde_json::json!({"host": "crates.io", "ended": "2026-12-05T10:10:00Z"})
        );
        let ended = approved.end_due(at("2026-12-05T10:10:00Z")).unwrap();
        assert_eq!(
            ended.access[1].ended.as_deref(),
            Some("2026-12-05T10:10:00Z")
        );
        assert!(ended.end_due(at("2026-12-05T11:00:00Z")).is_none());
        assert!(approved.end_due(at("2026-12-05T10:09:59Z")).is_none());
        assert_eq!(approved.next_end(), Some(at("2026-12-05T10:10:00Z")));
        assert_eq!(ended.next_end(), None);
    }

    #[test]
    fn a_newer_decision_replaces_an_older_one_for_the_same_access() {
        let mut limited = Access::checked("crates.io", None).unwrap();
        limited.until = Some("2026-12-05T10:10:00Z".into());
        limited.ended = Some("2026-12-05T10:10:00Z".into());
        let again = Access::checked("crates.io", None).unwrap();
        let a = Approved::default().with(limited).with(again.clone());
        assert_eq!(a.access, [again]);
    }

    #[test]
    fn a_limited_grant_beside_a_credential_route_is_refused() {
        let mut m = manifest();
        let mut a = Access::checked("api.github.com", Some("/orgs/")).unwrap();
        a.uses = Some(1);
        let e = Approved::default()
            .with(a)
            .apply(&mut m, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("injects a credential"), "{e}");
    }

    #[test]
    fn a_prefix_on_a_credential_route_is_refused() {
        let mut m = manifest();
        let e = Approved::default()
            .with(Access::checked("api.github.com", Some("/orgs/")).unwrap())
            .apply(&mut m, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("injects a credential"), "{e}");
        let e = Approved::default()
            .with(Access::checked("api.github.com", None).unwrap())
            .apply(&mut m, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("on some paths only"), "{e}");
    }

    #[test]
    fn bad_accesses_and_files_are_refused_naming_the_file() {
        for (host, prefix) in [
            ("10.0.0.1", None),
            ("localhost", None),
            ("*.com", None),
            ("*.example.com", Some("/x/")),
            ("ok.example.com", Some("x")),
        ] {
            assert!(Access::checked(host, prefix).is_err(), "{host} {prefix:?}");
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.yaml");
        assert_eq!(Approved::load(&f).unwrap(), Approved::default());
        for bad in [
            "access: [{host: pypi.org, until: soon}]",
            "access: [{host: pypi.org, ended: 12}]",
            "access: [{host: pypi.org, uses: 0}]",
            "access: [{host: 127.0.0.1}]",
            "access: [{host: pypi.org, token: x}]",
            "access: [{host: PyPI.org}]",
            "access: {",
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = Approved::load(&f).unwrap_err().to_string();
            assert!(
                e.starts_with(&f.display().to_string()) && e.contains("delete it"),
                "{e}"
            );
        }
        let saved = Approved::default().with(Access::checked("pypi.org", None).unwrap());
        saved.save(&d.path().join("sub/b.yaml")).unwrap();
        assert_eq!(Approved::load(&d.path().join("sub/b.yaml")).unwrap(), saved);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("sub/b.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
