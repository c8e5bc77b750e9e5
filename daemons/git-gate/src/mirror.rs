//! The gate's mirrors: one bare repo per upstream, brought up to date before every fetch and
//! push, under a lock per repo.
//!
//! An update asks upstream for its refs (`ls-remote --symref`, one SSH connection) and
//! fetches only when they differ from the mirror's, so an unchanged upstream costs one round
//! trip. Any failure is returned, never hidden: the caller refuses the request rather than
//! serve what may be stale. Requests that arrive while an update runs share the next one:
//! an update that *started* after a request arrived answers it (it saw upstream as of then).

use crate::gitcmd::{GitEnv, RunError, run};
use bottle_contract::gate::GateRepo;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long one upstream command (`ls-remote`, `fetch`) may run.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// Every mirror, under one dir.
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
    slots: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

/// One mirror's lock and what its last update was.
#[derive(Debug, Default)]
pub struct Slot {
    last_ok_started: Option<Instant>,
    last_ok_finished: Option<Instant>,
}

/// How a mirror was brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Synced {
    /// Upstream had new refs: fetched.
    Fetched,
    /// Upstream's refs were the mirror's already.
    UpToDate,
    /// An update that started after this request arrived answered it.
    Coalesced,
}

impl Mirrors {
    /// Mirrors under `root` (created 0700 if missing).
    pub fn new(root: PathBuf) -> std::io::Result<Mirrors> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        Ok(Mirrors {
            root,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Where `name`'s bare repo is.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.git"))
    }

    /// `name`'s lock, created on first use.
    pub fn slot(&self, name: &str) -> Arc<Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(name.to_owned()).or_default().clone()
    }
}

/// Lock a slot (a panic elsewhere leaves it usable: it holds only timestamps).
pub fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bring `dir` up to date with `repo`'s upstream; the slot must be held.
pub fn sync(
    dir: &Path,
    slot: &mut Slot,
    repo: &GateRepo,
    env: &GitEnv,
    arrival: Instant,
    coalesce: Duration,
) -> Result<Synced, String> {
    if slot.last_ok_started.is_some_and(|s| s >= arrival)
        || slot
            .last_ok_finished
            .is_some_and(|f| !coalesce.is_zero() && f.elapsed() < coalesce)
    {
        return Ok(Synced::Coalesced);
    }
    let started = Instant::now();
    init(dir, env)?;
    let remote = ls_remote(repo, env)?;
    let local = local_refs(dir, env)?;
    let synced = if remote.refs == local {
        Synced::UpToDate
    } else {
        let mut fetch = env.git();
        fetch
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "gc.auto=0",
                "fetch",
                "--prune",
                "--no-tags",
                "--no-write-fetch-head",
                "--quiet",
            ])
            .arg(&repo.upstream)
            .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
        let done = run(fetch, "git fetch", UPSTREAM_TIMEOUT).map_err(upstream_error)?;
        if !done.status.success() {
            return Err(format!("upstream fetch failed: {}", done.reason()));
        }
        Synced::Fetched
    };
    if let Some(head) = remote.head {
        set_head(dir, env, &head)?;
    }
    slot.last_ok_started = Some(started);
    slot.last_ok_finished = Some(Instant::now());
    Ok(synced)
}

fn upstream_error(e: RunError) -> String {
    format!("upstream fetch failed: {e}")
}

/// Create the bare repo if it is not there (whole or not at all: made aside, then renamed).
fn init(dir: &Path, env: &GitEnv) -> Result<(), String> {
    if dir.join("HEAD").is_file() {
        return Ok(());
    }
    let aside = dir.with_extension(format!("init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&aside);
    let mut cmd = env.git();
    cmd.args(["init", "--bare", "--quiet"]).arg(&aside);
    let done = run(cmd, "git init", Duration::from_secs(30)).map_err(|e| e.to_string())?;
    if !done.status.success() {
        return Err(format!("cannot create the mirror: {}", done.reason()));
    }
    std::fs::rename(&aside, dir).map_err(|e| format!("cannot create the mirror: {e}"))
}

/// Upstream's branches and tags, and the branch its HEAD names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Remote {
    refs: BTreeMap<String, String>,
    head: Option<String>,
}

fn ls_remote(repo: &GateRepo, env: &GitEnv) -> Result<Remote, String> {
    let mut cmd = env.git();
    cmd.args(["ls-remote", "--symref", &repo.upstream]);
    let done = run(cmd, "git ls-remote", UPSTREAM_TIMEOUT).map_err(upstream_error)?;
    if !done.status.success() {
        return Err(format!("upstream fetch failed: {}", done.reason()));
    }
    Ok(parse_ls_remote(&String::from_utf8_lossy(&done.stdout)))
}

fn parse_ls_remote(text: &str) -> Remote {
    let mut remote = Remote::default();
    for line in text.lines() {
        let Some((value, name)) = line.split_once('\t') else {
            continue;
        };
        if let Some(target) = value.strip_prefix("ref: ") {
            if name == "HEAD" && target.starts_with("refs/heads/") {
                remote.head = Some(target.to_owned());
            }
        } else if (name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
            && !name.ends_with("^{}")
        {
            remote.refs.insert(name.to_owned(), value.to_owned());
        }
    }
    remote
}

fn local_refs(dir: &Path, env: &GitEnv) -> Result<BTreeMap<String, String>, String> {
    let mut cmd = env.git();
    cmd.arg("-C").arg(dir).args([
        "for-each-ref",
        "--format=%(objectname)\t%(refname)",
        "refs/heads",
        "refs/tags",
    ]);
    let done = run(cmd, "git for-each-ref", Duration::from_secs(60)).map_err(|e| e.to_string())?;
    if !done.status.success() {
        return Err(format!("cannot read the mirror: {}", done.reason()));
    }
    Ok(String::from_utf8_lossy(&done.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, name)| (name.to_owned(), id.to_owned()))
        .collect())
}

/// Point the mirror's HEAD at upstream's default branch.
fn set_head(dir: &Path, env: &GitEnv, head: &str) -> Result<(), String> {
    let current = std::fs::read_to_string(dir.join("HEAD")).unwrap_or_default();
    if current.trim() == format!("ref: {head}") {
        return Ok(());
    }
    let mut cmd = env.git();
    cmd.arg("-C").arg(dir).args(["symbolic-ref", "HEAD", head]);
    let done = run(cmd, "git symbolic-ref", Duration::from_secs(30)).map_err(|e| e.to_string())?;
    if done.status.success() {
        Ok(())
    } else {
        Err(format!("cannot set the mirror's HEAD: {}", done.reason()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_only_by_an_update_that_started_after_it_arrived() {
        let arrival = Instant::now();
        let mut slot = Slot {
            last_ok_started: Some(Instant::now()),
            last_ok_finished: Some(Instant::now()),
        };
        let repo = GateRepo {
            name: "r".into(),
            upstream: "/nonexistent/upstream.git".into(),
            host: "h".into(),
            port: 22,
            key: "/nonexistent/key".into(),
            push: Default::default(),
        };
        let env = GitEnv {
            home: std::env::temp_dir(),
            ssh: None,
        };
        let dir = std::env::temp_dir().join(format!("mirror-coalesce-{}", std::process::id()));
        let sync_at = |slot: &mut Slot, t: Instant, window: Duration| {
            sync(&dir, slot, &repo, &env, t, window)
        };
        assert_eq!(
            sync_at(&mut slot, arrival, Duration::ZERO),
            Ok(Synced::Coalesced)
        );
        // Arrived after that update started: it must ask upstream (which fails here).
        let late = Instant::now();
        let e = sync_at(&mut slot, late, Duration::ZERO).unwrap_err();
        assert!(e.starts_with("upstream fetch failed"), "{e}");
        // Unless a coalescing window is configured and the last update is within it.
        assert_eq!(
            sync_at(&mut slot, late, Duration::from_secs(60)),
            Ok(Synced::Coalesced)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ls_remote_keeps_branches_tags_and_head() {
        let r = parse_ls_remote(
            "ref: refs/heads/trunk\tHEAD\naaa\tHEAD\naaa\trefs/heads/trunk\nbbb\trefs/tags/v1\nccc\trefs/tags/v1^{}\nddd\trefs/pull/1/head\n",
        );
        assert_eq!(r.head.as_deref(), Some("refs/heads/trunk"));
        assert_eq!(
            r.refs,
            BTreeMap::from([
                ("refs/heads/trunk".to_owned(), "aaa".to_owned()),
                ("refs/tags/v1".to_owned(), "bbb".to_owned())
            ])
        );
    }
}
