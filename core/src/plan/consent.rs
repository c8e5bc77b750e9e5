//! Consent to a manifest before its first use.
//!
//! A manifest decides which host secrets leave the machine and where to, which host files the
//! sidecars read and what the plugins may do. One that arrived with a cloned project (its
//! `agents/` dir, or a path) could send `AWS_SECRET_ACCESS_KEY` to a host its author owns.
//! So a manifest from anywhere but the user's own config dir is shown as a capability
//! [`report`] and runs only once the user has confirmed that exact text (its SHA-256): at a
//! prompt, or with `--yes`. A changed manifest is new again.

use crate::plan::manifest::CwdMode;
use crate::plan::manifest::Manifest;
use crate::plan::policy::Grants;
use sha2::{Digest, Sha256};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// SHA-256 of `bytes`, in lower-case hex.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `manifest` (with the command line's `cli_grants`) asks of the host, one line per
/// item, in words: host env vars and where they go, host files and who reads them, the working
/// dir, and grants.
pub fn report(manifest: &Manifest, cli_grants: &Grants) -> String {
    let mut lines = Vec::new();
    for r in &manifest.routes {
        if let Some(auth) = &r.auth {
            lines.push(format!(
                "host env {} is sent to {} (as the `{}` credential, by egress)",
                auth.token_ref, r.host, auth.scheme
            ));
        }
    }
    for name in &manifest.agent.secret_env {
        lines.push(format!("host env {name} is given to the agent"));
    }
    for g in &manifest.git {
        lines.push(format!(
            "host file {} (an SSH key) is read by git-gate, to fetch and push {}",
            g.key_file, g.url
        ));
        if let Some(p) = manifest.git_push.get(&g.name) {
            let grants: Vec<&str> = [
                (p.allow_force, "force-push (rewrite history)"),
                (p.allow_delete, "delete branches"),
                (p.allow_tags, "push tags"),
            ]
            .into_iter()
            .filter_map(|(on, what)| on.then_some(what))
            .collect();
            if !grants.is_empty() {
                lines.push(format!("the agent may {} on {}", grants.join(", "), g.url));
            }
        }
    }
    if let Some(ca) = &manifest.upstream_ca {
        lines.push(format!(
            "host file {ca} is trusted by egress as a CA for upstream servers"
        ));
    }
    if let Some(hosts) = manifest
        .settings
        .get("egress")
        .and_then(|t| t.get("hosts"))
        .and_then(|h| h.as_object())
    {
        use bottle_contract::egress::hosts::{StaticAddress, StaticHost};
        for (name, addr) in hosts {
            let addr = addr.as_str().unwrap_or("?");
            let to = match addr.parse::<StaticHost>() {
                Ok(StaticHost {
                    address: StaticAddress::HostGateway,
                    port: Some(p),
                }) => format!("the Docker host (this machine), port {p}"),
                Ok(StaticHost {
                    address: StaticAddress::Ip(ip),
                    port: None,
                }) => format!("{ip}, every port"),
                _ => addr.to_owned(),
            };
            lines.push(format!("the agent may reach {name} at {to}"));
        }
    }
    // What DLP lets out is what a hostile agent would send: each exception is consented to.
    if manifest.dlp.mode == bottle_contract::egress::dlp::DlpMode::Log {
        lines.push(
            "DLP only logs what it finds: a secret the agent sends to an allowed host goes out"
                .into(),
        );
    }
    for a in &manifest.dlp.allow {
        lines.push(format!(
            "DLP lets {} findings through to {}{}",
            a.rule,
            a.host,
            a.path.as_deref().unwrap_or("")
        ));
    }
    match manifest.cwd {
        CwdMode::Mount => lines.push("the working dir is mounted read-write into the agent".into()),
        CwdMode::Copy => lines.push("the agent gets a copy of the working dir".into()),
        CwdMode::None => {}
    }
    let hosts = manifest.allowed_hosts();
    lines.push(format!(
        "the agent may reach {} host(s): {}",
        hosts.len(),
        hosts.join(", ")
    ));
    for (source, grants) in [("the manifest", &manifest.grants), ("--grant", cli_grants)] {
        for (plugin, gs) in grants.iter() {
            for g in gs {
                lines.push(format!("grant {plugin}={g} (from {source})"));
            }
        }
    }
    lines.iter().map(|l| format!("  - {l}\n")).collect()
}

/// Whether `manifest` needs the user's consent: it is not under the user's own
/// `agents/` dir (`config_dir`).
pub fn needed(manifest: &Path, config_dir: Option<&Path>) -> bool {
    let own = config_dir.map(|d| d.join("agents"));
    let Some(own) = own.and_then(|d| d.canonicalize().ok()) else {
        return true;
    };
    manifest
        .canonicalize()
        .map(|m| !m.starts_with(own))
        .unwrap_or(true)
}

/// Where the digests of confirmed manifests are kept: one empty-ish file per digest.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Why a manifest may not be used yet.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// Not confirmed, and no terminal to ask at.
    #[error(
        "{file} is new to bottle on this machine (or it changed since you confirmed it), and it asks for:\n{report}review it (`bottle run {agent} --dry-run` shows the same), then run again with --yes"
    )]
    Unconfirmed {
        /// The manifest.
        file: String,
        /// Its agent name.
        agent: String,
        /// What it asks for.
        report: String,
    },
    /// The user said no.
    #[error("{file}: not confirmed; nothing was started")]
    Declined {
        /// The manifest.
        file: String,
    },
    /// The record of confirmed manifests could not be read or written.
    #[error("cannot record your confirmation in {dir}: {source}; check that dir's permissions")]
    Store {
        /// The store dir.
        dir: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Store {
    /// The store under the user's config dir.
    pub fn new(config_dir: &Path) -> Store {
        Store {
            dir: config_dir.join("confirmed-manifests"),
        }
    }

    /// Whether the manifest with `digest` was confirmed.
    pub fn has(&self, digest: &str) -> bool {
        self.dir.join(digest).is_file()
    }

    /// Record `digest` as confirmed (for `file`), atomically.
    pub fn record(&self, digest: &str, file: &Path) -> Result<(), ConsentError> {
        let err = |source| ConsentError::Store {
            dir: self.dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!(".{digest}.{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", file.display())).map_err(err)?;
        std::fs::rename(&tmp, self.dir.join(digest)).map_err(err)
    }
}

/// Whether a typed answer means yes (`y` or `yes`, any case); anything else is no.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// How the user answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `--yes`: confirmed without asking.
    Yes,
    /// Ask at the terminal when there is one; refuse otherwise.
    Ask,
}

/// Make sure `manifest` may run: from the user's own dir, confirmed before, or confirmed now
/// (`answer`). A confirmation is recorded in `store`.
pub fn ensure(
    manifest: &Manifest,
    cli_grants: &Grants,
    config_dir: Option<&Path>,
    store: Option<&Store>,
    answer: Answer,
) -> Result<(), ConsentError> {
    if !needed(&manifest.file, config_dir) || store.is_some_and(|s| s.has(&manifest.digest)) {
        return Ok(());
    }
    let file = manifest.file.display().to_string();
    let confirmed = match answer {
        Answer::Yes => true,
        Answer::Ask if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            let mut err = std::io::stderr().lock();
            // A failed write to the terminal only loses the question; the answer decides.
            let _ = write!(
                err,
                "{file} is new to bottle on this machine (or it changed), and it asks for:\n{}Run it? [y/N] ",
                report(manifest, cli_grants)
            );
            let _ = err.flush();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).is_ok() && is_yes(&line)
        }
        Answer::Ask => {
            return Err(ConsentError::Unconfirmed {
                file,
                agent: manifest.name.clone(),
                report: report(manifest, cli_grants),
            });
        }
    };
    if !confirmed {
        return Err(ConsentError::Declined { file });
    }
    if let Some(store) = store {
        store.record(&manifest.digest, &manifest.file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, text: &str) -> Manifest {
        let file = dir.join("agents/a.yaml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
        crate::plan::manifest::load(&file, &crate::hostenv::HostEnv::default()).unwrap()
    }

    const ROUTED: &str = "image: img\negress:\n  routes:\n    - host: api.example.com\n      auth: {scheme: Bearer, token_ref: AWS_SECRET_ACCESS_KEY}\n";

    #[test]
    fn the_report_says_which_secret_goes_where_and_every_grant() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(
            dir.path(),
            &format!("{ROUTED}plugins:\n  hello:\n    grants: [privileged]\n"),
        );
        let mut cli = Grants::default();
        cli.add("x", "publish:8080".parse().unwrap());
        let r = report(&m, &cli);
        for part in [
            "host env AWS_SECRET_ACCESS_KEY is sent to api.example.com",
            "grant hello=privileged (from the manifest)",
            "grant x=publish:8080 (from --grant)",
            "the agent may reach",
        ] {
            assert!(r.contains(part), "{part}:\n{r}");
        }
    }

    #[test]
    fn dlp_exceptions_and_log_mode_are_shown_for_consent() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(
            dir.path(),
            &format!(
                "{ROUTED}  dlp:\n    mode: log\n    allow: [{{rule: jwt, host: api.example.com, path: /auth/}}]\n"
            ),
        );
        let r = report(&m, &Grants::default());
        assert!(r.contains("DLP only logs what it finds"), "{r}");
        assert!(
            r.contains("DLP lets jwt findings through to api.example.com/auth/"),
            "{r}"
        );
    }

    #[test]
    fn a_new_manifest_is_refused_without_a_terminal_until_confirmed_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let store = Store::new(&config);
        let m = manifest(dir.path(), ROUTED);
        let grants = Grants::default();
        let err = ensure(&m, &grants, Some(&config), Some(&store), Answer::Ask).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("agents/a.yaml is new to bottle"), "{text}");
        assert!(text.contains("AWS_SECRET_ACCESS_KEY is sent to api.example.com"));
        assert!(text.contains("--yes"), "{text}");
        ensure(&m, &grants, Some(&config), Some(&store), Answer::Yes).unwrap();
        ensure(&m, &grants, Some(&config), Some(&store), Answer::Ask).unwrap();
        let changed = manifest(dir.path(), &format!("{ROUTED}cwd: none\n"));
        assert!(ensure(&changed, &grants, Some(&config), Some(&store), Answer::Ask).is_err());
    }

    #[test]
    fn only_y_or_yes_is_yes() {
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "n", "yess", "ja", "y e s"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn the_users_own_manifests_need_no_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(dir.path(), ROUTED);
        assert!(!needed(&m.file, Some(dir.path())));
        assert!(needed(&m.file, Some(&dir.path().join("elsewhere"))));
        assert!(needed(&m.file, None));
    }
}
