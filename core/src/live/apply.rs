//! Live changes to a running bottle: a human's approval re-planned, written and reloaded while
//! the agent runs, or not applied at all.
//!
//! [`propose`] re-plans the bottle from what `bottle run` was given ([`RunRecord`]) with the
//! run's approvals plus the new one laid over its manifest, and compares the result with the
//! plan that runs: only the files of [`LIVE_PLUGINS`] may differ. Anything else (a compose
//! field, a mount, a daemon's command) cannot change under a running agent, so such a change is
//! refused rather than half-applied. [`apply`] then writes those files whole into the state
//! dir (the bundle binds their dirs), has the bundle's init reinstall them and reload, and
//! waits for egress to report the sha256 of the table it now runs. If egress refuses it, the
//! old files are put back and the old table runs on.

use crate::hostenv::HostEnv;
use crate::live::granted::{APPROVED_FILE, Access, Approved, ApprovedError};
use crate::model::{BottlePlan, StagedFile};
use crate::plan::policy::{Grant, Grants};
use crate::plan::prepare::{PrepareError, RunRequest};
use crate::plugin::PluginSet;
use crate::run::docker::DockerError;
use bottle_contract::layout;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use bottle_contract::layout::RUN_FILE;

/// The plugins whose files may change while a bottle runs, in the order they are reloaded
/// (pipelock first: it is the outer wall, so it opens before egress sends anything to it).
pub const LIVE_PLUGINS: [&str; 2] = ["pipelock", "egress"];

/// What `bottle run` was given: kept (0600) as [`RUN_FILE`] in the state dir, so an approval
/// re-plans the bottle that runs, not the manifest as it may have been edited since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The manifest file.
    pub manifest_file: PathBuf,
    /// Its text, as run.
    pub manifest_text: String,
    /// `--backend`.
    pub backend: Option<String>,
    /// `--grant`s, as `NAME=GRANT`.
    pub grants: Vec<String>,
    /// The host dir the agent works on.
    pub cwd: PathBuf,
    /// Whether the bundle carries pipelock.
    pub pipelock: bool,
    /// The host's Docker socket, when `DOCKER_HOST` named one.
    pub docker_socket: Option<String>,
    /// `--plugin-dir`s.
    pub plugin_dirs: Vec<PathBuf>,
}

/// Why a live change was not made.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The bottle's run has ended.
    #[error(
        "bottle {slug} is not running any more ({}): an approval cannot apply to it; the agent can ask again in its next run",
        dir.display()
    )]
    Gone {
        /// The slug.
        slug: String,
        /// Its state dir.
        dir: PathBuf,
    },
    /// The run record is missing or not bottle's.
    #[error(
        "{}: {message}; this bottle was started by an older bottle, or its state dir was edited: restart it to approve live",
        file.display()
    )]
    Record {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The change would touch more than the live files.
    #[error(
        "approving this would change {0} of the running bottle, which cannot change while it runs; add the access to the manifest and restart the bottle"
    )]
    NotLive(String),
    /// Planning again failed.
    #[error(transparent)]
    Plan(Box<PrepareError>),
    /// The approvals file.
    #[error(transparent)]
    Approved(#[from] ApprovedError),
    /// A file could not be written.
    #[error("cannot write {}: {error}; nothing was reloaded", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Docker failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The bundle did not confirm the new config; the old one runs on.
    #[error("{0}")]
    Reload(String),
    /// Another change was applied between planning this one and applying it.
    #[error(
        "another change was applied to this bottle meanwhile, so this one was planned against an old config and not applied; run the command again"
    )]
    Raced,
}

impl From<PrepareError> for LiveError {
    fn from(e: PrepareError) -> Self {
        LiveError::Plan(Box::new(e))
    }
}

impl RunRecord {
    /// The record of `req`.
    pub fn of(req: &RunRequest) -> RunRecord {
        RunRecord {
            manifest_file: req.manifest.file.clone(),
            manifest_text: req.manifest.text.clone(),
            backend: req.backend.clone(),
            grants: req
                .grants
                .iter()
                .flat_map(|(plugin, gs)| gs.iter().map(move |g| format!("{plugin}={g}")))
                .collect(),
            cwd: req.cwd.clone(),
            pipelock: req.pipelock,
            docker_socket: req.docker_socket.clone(),
            plugin_dirs: req.plugin_dirs.clone(),
        }
    }

    /// The record in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<RunRecord, LiveError> {
        let file = state_dir.join(RUN_FILE);
        let bytes = std::fs::read(&file).map_err(|e| LiveError::Record {
            file: file.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| LiveError::Record {
            file,
            message: e.to_string(),
        })
    }

    /// The run request this record describes, with `approved` laid over its manifest.
    fn request(
        &self,
        env: &HostEnv,
        state_dir: &Path,
        approved: &Approved,
    ) -> Result<RunRequest, LiveError> {
        let record_error = |message: String| LiveError::Record {
            file: state_dir.join(RUN_FILE),
            message,
        };
        let mut manifest =
            crate::plan::manifest::parse(&self.manifest_file, &self.manifest_text, env)
                .map_err(|e| record_error(e.to_string()))?;
        approved.apply(&mut manifest, std::time::SystemTime::now())?;
        let mut grants = Grants::default();
        for g in &self.grants {
            let (plugin, grant) = g
                .split_once('=')
                .ok_or_else(|| record_error(format!("grant `{g}` is not NAME=GRANT")))?;
            let grant: Grant = grant
                .parse()
                .map_err(|e| record_error(format!("grant `{g}`: {e}")))?;
            grants.add(plugin, grant);
        }
        Ok(RunRequest {
            manifest,
            backend: self.backend.clone(),
            grants,
            cwd: self.cwd.clone(),
            state_root: state_dir.parent().unwrap_or(state_dir).to_owned(),
            dry_run: false,
            slug: None,
            pipelock: self.pipelock,
            pipelock_note: None,
            docker_socket: self.docker_socket.clone(),
            protected: vec![],
            plugin_dirs: self.plugin_dirs.clone(),
            approved: approved.clone(),
        })
    }
}

/// A change ready to apply: the files to write and the plan and approvals they make.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The bottle's state dir.
    pub state_dir: PathBuf,
    /// The files that change (paths relative to the state dir), in [`LIVE_PLUGINS`] order.
    pub files: Vec<StagedFile>,
    /// The plan it was computed against (the running one then).
    pub base: BottlePlan,
    /// The plan once applied.
    pub plan: BottlePlan,
    /// The run's approvals once applied.
    pub approved: Approved,
}

impl Proposal {
    /// Whether nothing changes: what was asked is allowed already.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Whether `state_dir` belongs to a bottle whose run is still going.
pub fn running(state_dir: &Path) -> Result<(), LiveError> {
    if crate::state::in_use(state_dir) {
        return Ok(());
    }
    Err(LiveError::Gone {
        slug: state_dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: state_dir.to_owned(),
    })
}

/// Plan the bottle in `state_dir` again with `access` approved, and say which files change.
/// Nothing is written.
pub fn propose(
    plugins: &PluginSet,
    env: &HostEnv,
    state_dir: &Path,
    record: &RunRecord,
    access: Access,
) -> Result<Proposal, LiveError> {
    let approved = Approved::load(&state_dir.join(APPROVED_FILE))?.with(access);
    propose_approved(plugins, env, state_dir, record, approved)
}

/// Plan the bottle in `state_dir` again with `approved` as its approvals, and say which files
/// change. Nothing is written.
pub fn propose_approved(
    plugins: &PluginSet,
    env: &HostEnv,
    state_dir: &Path,
    record: &RunRecord,
    approved: Approved,
) -> Result<Proposal, LiveError> {
    let req = record.request(env, state_dir, &approved)?;
    let plan = crate::plan::prepare::replan(plugins, &req, state_dir)?;
    let base = running_plan(state_dir)?;
    let files = changed_files(&base, &plan)?;
    Ok(Proposal {
        state_dir: state_dir.to_owned(),
        files,
        base,
        plan,
        approved,
    })
}

/// The plan the bottle in `state_dir` runs.
fn running_plan(state_dir: &Path) -> Result<BottlePlan, LiveError> {
    let file = state_dir.join(layout::PLAN_FILE);
    let bytes = std::fs::read(&file).map_err(|e| LiveError::Record {
        file: file.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| LiveError::Record {
        file,
        message: e.to_string(),
    })
}

/// The live plugins' files that differ from `running` in `new`; an error naming the part
/// when anything else differs.
pub fn changed_files(running: &BottlePlan, new: &BottlePlan) -> Result<Vec<StagedFile>, LiveError> {
    // Both plans with the live files' contents blanked must be the same plan.
    let blank = |plan: &BottlePlan| {
        let mut p = plan.clone();
        for s in &mut p.sidecars {
            if LIVE_PLUGINS.contains(&s.plugin.as_str()) {
                for f in &mut s.plan.files {
                    f.contents.clear();
                }
            }
        }
        p
    };
    let (a, b) = (blank(running), blank(new));
    if a != b {
        let part = if a.plugins != b.plugins {
            "the plugins (one was replaced since the bottle started)".to_owned()
        } else if a.sidecars != b.sidecars {
            let which = a
                .sidecars
                .iter()
                .zip(&b.sidecars)
                .find(|(x, y)| x != y)
                .map_or_else(
                    || "which sidecars run".to_owned(),
                    |(x, _)| format!("sidecar {}", x.plugin),
                );
            format!("the plan of {which}")
        } else if a.stack != b.stack {
            "the containers (their mounts, env or commands)".to_owned()
        } else if a.deployment != b.deployment {
            "the backend's documents".to_owned()
        } else {
            "the CAs or endpoints".to_owned()
        };
        return Err(LiveError::NotLive(part));
    }
    let mut files = Vec::new();
    for plugin in LIVE_PLUGINS {
        let find = |p: &BottlePlan| p.sidecars.iter().find(|s| s.plugin == plugin).cloned();
        if let (Some(old), Some(new)) = (find(running), find(new)) {
            for (o, n) in old.plan.files.iter().zip(&new.plan.files) {
                if o.contents != n.contents {
                    files.push(n.clone());
                }
            }
        }
    }
    Ok(files)
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the bundle's init said (egress's config hash).
    pub confirmed: String,
}

/// How long the bundle's reload may take, its own 5 s wait for egress included.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The command that reinstalls the bundle's files, reloads its daemons and waits for egress to
/// confirm the table it runs.
fn reload_command() -> Vec<String> {
    vec![
        layout::BUNDLE_INIT.to_owned(),
        "reload".to_owned(),
        layout::DAEMONS_IN_BUNDLE.to_owned(),
        "egress".to_owned(),
    ]
}

/// Apply `proposal` to the running bottle `slug`: write its files whole, reload and confirm;
/// on any failure the old files are put back and the old config runs on. Holds the state dir's
/// [`layout::LIVE_LOCK_FILE`] throughout, so two approvals never interleave.
pub async fn apply(
    docker: &bollard::Docker,
    slug: &str,
    proposal: &Proposal,
    change: &str,
) -> Result<Applied, LiveError> {
    let dir = &proposal.state_dir;
    let _lock = lock(dir)?;
    running(dir)?;
    if running_plan(dir)? != proposal.base {
        return Err(LiveError::Raced);
    }
    if proposal.files.is_empty() {
        return Ok(Applied {
            confirmed: "nothing to change".into(),
        });
    }
    // Every file the change rewrites, the host's records with them, so a failure at any step
    // puts all of them back: what runs and what the state dir says never part.
    let new = proposal_files(proposal)?;
    let mut old = Vec::new();
    for (path, _, mode) in &new {
        match std::fs::read(path) {
            Ok(bytes) => old.push((path.clone(), Some(bytes), *mode)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                old.push((path.clone(), None, *mode))
            }
            Err(error) => {
                return Err(LiveError::Write {
                    path: path.clone(),
                    error,
                });
            }
        }
    }
    let outcome = match write_all(new.into_iter()) {
        Ok(()) => reload(docker, slug).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(confirmed) => {
            // What the ledger shows of this change; it runs whether or not this is written.
            if let Err(e) = journal(dir, change, &proposal.base, &proposal.plan, &confirmed) {
                tracing::warn!("{}: {e}", dir.join(layout::LIVE_JOURNAL_FILE).display());
            }
            Ok(Applied { confirmed })
        }
        Err(e) => Err(restore(docker, slug, old, e).await),
    }
}

/// One line of [`layout::LIVE_JOURNAL_FILE`]: a change applied to a running bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journaled {
    /// When it was confirmed (RFC 3339).
    pub time: String,
    /// What changed, in words (`approve r1: api.example.com`).
    pub change: String,
    /// The sha256 of the plan before.
    pub plan_before: String,
    /// The sha256 of the plan after.
    pub plan_after: String,
    /// What the bundle confirmed (egress's config hash).
    pub confirmed: String,
}

/// Append `change` to the state dir's journal of live changes (0600, one line, synced).
fn journal(
    dir: &Path,
    change: &str,
    before: &BottlePlan,
    after: &BottlePlan,
    confirmed: &str,
) -> std::io::Result<()> {
    use sha2::Digest as _;
    let sha = |p: &BottlePlan| {
        crate::audit::chain::hex(&sha2::Sha256::digest(crate::state::pretty_json(p)))
    };
    let line = Journaled {
        time: crate::state::rfc3339(std::time::SystemTime::now()),
        change: change.to_owned(),
        plan_before: sha(before),
        plan_after: sha(after),
        confirmed: confirmed.to_owned(),
    };
    let text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
    crate::state::append_line(&dir.join(layout::LIVE_JOURNAL_FILE), &text)
}

/// The changes journaled in `state_dir`, oldest first (lines that do not parse are skipped:
/// the ledger says what it could read).
pub fn journaled(state_dir: &Path) -> Vec<Journaled> {
    crate::state::read_lines(&state_dir.join(layout::LIVE_JOURNAL_FILE))
}

/// [`apply`] on an async runtime of its own, for callers that have none (plugins run before
/// any runtime exists: their WASI host blocks).
pub fn apply_blocking(slug: &str, proposal: &Proposal, change: &str) -> Result<String, LiveError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LiveError::Reload(format!("cannot start an async runtime: {e}")))?;
    rt.block_on(async {
        let docker = crate::run::docker::connect().await?;
        apply(&docker, slug, proposal, change).await
    })
    .map(|a| a.confirmed)
}

/// End the grants of the running bottle in `state_dir` whose time is up at `now`: mark them
/// ended in its approvals, re-plan without their routes and apply that live. Returns the
/// grants it ended (none when none was due). egress refuses an ended grant on its own from
/// its time on; this takes its route out and records it.
pub fn end_due(
    env: &HostEnv,
    state_dir: &Path,
    slug: &str,
    now: std::time::SystemTime,
) -> Result<Vec<Access>, LiveError> {
    let current = Approved::load(&state_dir.join(APPROVED_FILE))?;
    let Some(approved) = current.end_due(now) else {
        return Ok(vec![]);
    };
    let (ended, proposal) = plan_ending(env, state_dir, &current, approved)?;
    if proposal.is_empty() {
        // Nothing runs differently (a grant that had ended before this run began is named to
        // egress already): only the record changes, so the clock does not try again.
        let _lock = lock_unchanged(state_dir, &current)?;
        proposal.approved.save(&state_dir.join(APPROVED_FILE))?;
        return Ok(ended);
    }
    apply_blocking(
        slug,
        &proposal,
        &format!("grant ended: {}", describe_all(&ended)),
    )?;
    Ok(ended)
}

/// End every grant limited by uses of the bottle in `state_dir`, whose bundle is stopped and
/// about to start again: egress counts uses in memory, so a restarted egress would serve each
/// such grant's uses afresh. Marks them ended, re-plans without their routes and writes that
/// for the bundle to read when it starts (no reload: nothing runs). Returns the grants ended.
pub fn end_counted_grants(
    env: &HostEnv,
    state_dir: &Path,
    now: std::time::SystemTime,
) -> Result<Vec<Access>, LiveError> {
    let current = Approved::load(&state_dir.join(APPROVED_FILE))?;
    let Some(approved) = current.end_counted(now) else {
        return Ok(vec![]);
    };
    let (ended, proposal) = plan_ending(env, state_dir, &current, approved)?;
    let _lock = lock_unchanged(state_dir, &current)?;
    write_all(proposal_files(&proposal)?.into_iter())?;
    let change = format!(
        "grant ended (the bundle restarted; egress counts uses in memory): {}",
        describe_all(&ended)
    );
    if let Err(e) = journal(
        state_dir,
        &change,
        &proposal.base,
        &proposal.plan,
        "written while the bundle was stopped; read when it started",
    ) {
        tracing::warn!(
            "{}: {e}",
            state_dir.join(layout::LIVE_JOURNAL_FILE).display()
        );
    }
    Ok(ended)
}

/// Hold `state_dir`'s live lock, once its approvals are still `current`: an approval that
/// landed meanwhile is [`LiveError::Raced`] (the caller looks again with it).
fn lock_unchanged(state_dir: &Path, current: &Approved) -> Result<std::fs::File, LiveError> {
    let held = lock(state_dir)?;
    if Approved::load(&state_dir.join(APPROVED_FILE))? != *current {
        return Err(LiveError::Raced);
    }
    Ok(held)
}

/// The grants `approved` ends that `current` had running, and the re-plan without them.
fn plan_ending(
    env: &HostEnv,
    state_dir: &Path,
    current: &Approved,
    approved: Approved,
) -> Result<(Vec<Access>, Proposal), LiveError> {
    let ended: Vec<Access> = approved
        .access
        .iter()
        .filter(|a| {
            a.ended.is_some()
                && !current.access.iter().any(|c| {
                    c.ended.is_some() && c.host == a.host && c.path_prefix == a.path_prefix
                })
        })
        .cloned()
        .collect();
    let record = RunRecord::load(state_dir)?;
    let plugins = crate::plugin::discover(
        &crate::plugin::PluginHost::for_env(env),
        &record.plugin_dirs,
    )
    .map_err(|e| LiveError::Reload(e.to_string()))?;
    let proposal = propose_approved(&plugins, env, state_dir, &record, approved)?;
    Ok((ended, proposal))
}

/// Grants in words, for the journal: `r7 docs.example.com/v2/…, r9 api.example.com`.
fn describe_all(grants: &[Access]) -> String {
    grants
        .iter()
        .map(|a| format!("{} {}", a.request, a.describe()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Put `old` back after `error` and have the bundle reload it; the error to report.
async fn restore(
    docker: &bollard::Docker,
    slug: &str,
    old: Vec<(PathBuf, Option<Vec<u8>>, u32)>,
    error: LiveError,
) -> LiveError {
    let mut back = Vec::new();
    for (path, bytes, mode) in old {
        match bytes {
            Some(b) => back.push((path, b, mode)),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    if let Err(e) = write_all(back.into_iter()) {
        return LiveError::Reload(format!(
            "{error}; then putting the old files back failed too ({e}): what the bundle runs is unknown, so stop the bottle (`bottle stop {slug}`) and start it again"
        ));
    }
    match reload(docker, slug).await {
        Ok(_) => error,
        // The bundle was never told (it could not be reached) or took the old files back: in
        // both cases only a reload that answers tells; say what is known.
        Err(again) => LiveError::Reload(format!(
            "{error}; the old files are back in the state dir, but the bundle did not confirm them either ({again}); if the bottle misbehaves, restart it"
        )),
    }
}

/// Every file `proposal` rewrites with its mode: the bundle's files, the plan and the approvals.
fn proposal_files(proposal: &Proposal) -> Result<Vec<(PathBuf, Vec<u8>, u32)>, LiveError> {
    let dir = &proposal.state_dir;
    let approved = serde_yaml::to_string(&proposal.approved)
        .map_err(|e| LiveError::Reload(format!("cannot write the approvals: {e}")))?;
    let mut files: Vec<(PathBuf, Vec<u8>, u32)> = proposal
        .files
        .iter()
        .map(|f| (dir.join(&f.path), f.contents.as_bytes().to_vec(), f.mode))
        .collect();
    files.push((
        dir.join(layout::PLAN_FILE),
        crate::state::pretty_json(&proposal.plan).into_bytes(),
        layout::PRIVATE_MODE,
    ));
    files.push((
        dir.join(APPROVED_FILE),
        approved.into_bytes(),
        layout::PRIVATE_MODE,
    ));
    Ok(files)
}

fn write_all(files: impl Iterator<Item = (PathBuf, Vec<u8>, u32)>) -> Result<(), LiveError> {
    for (path, bytes, mode) in files {
        write_whole(&path, &bytes, mode).map_err(|error| LiveError::Write { path, error })?;
    }
    Ok(())
}

/// `bottle-init reload` in the bundle; its confirmation line, or why not.
async fn reload(docker: &bollard::Docker, slug: &str) -> Result<String, LiveError> {
    let bundle = layout::bundle_container(slug);
    let (code, out) = tokio::time::timeout(
        RELOAD_TIMEOUT,
        crate::run::docker::up::exec_output(docker, &bundle, &reload_command()),
    )
    .await
    .map_err(|_| {
        LiveError::Reload(format!(
            "the bundle's reload did not answer within {RELOAD_TIMEOUT:?}"
        ))
    })??;
    // Printed inside the bundle: shown here only without controls.
    let out = bottle_contract::supervise::validate::text(out.trim(), 1000);
    if code == 0 {
        Ok(out)
    } else {
        Err(LiveError::Reload(format!(
            "the bundle did not take the new config, so the old one runs on: {out}"
        )))
    }
}

/// Hold `dir`'s live lock (blocking) until dropped.
fn lock(dir: &Path) -> Result<std::fs::File, LiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(layout::LIVE_LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| LiveError::Write {
            path: path.clone(),
            error,
        })?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        LiveError::Write {
            path,
            error: e.into(),
        }
    })?;
    Ok(f)
}

/// The first of `names` that can be created new in `dir` (one that exists, even as a link, is
/// skipped), opened for writing with `mode`.
fn create_new_in(
    dir: &Path,
    names: impl Iterator<Item = String>,
    mode: u32,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    for name in names {
        let tmp = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free temp name in {}", dir.display()),
    ))
}

/// Write `path` whole with `mode`: a new dot-named temp file beside it, fsync, rename over it,
/// fsync the dir. A reader (or a reload) sees the old file or the new one, never a part. The
/// temp file is always created new (`O_EXCL`, which follows no link), so a link planted at its
/// name in a shared dir (the queue's are writable from the bundle) is never written through.
pub fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let names = (0..8).map(|_| {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!(".{name}.{}-{nanos:x}-{n}.tmp", std::process::id())
    });
    let (tmp, mut f) = create_new_in(dir, names, mode)?;
    let result = (|| {
        // The umask may have narrowed it.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Ends a running bottle's grants when their time is up ([`end_due`]), on a thread of its own
/// (re-planning runs plugins, whose WASI host blocks), until dropped.
pub struct GrantClock {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrantClock {
    /// How often the approvals are read again, so a grant approved meanwhile is watched too.
    const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);
    /// How long to wait after a failed attempt (egress refuses the grant on its own anyway).
    const AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(5);

    /// Watch the bottle `slug` in `state_dir`.
    pub fn start(env: HostEnv, state_dir: PathBuf, slug: String) -> GrantClock {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("grant-clock".into())
            .spawn(move || {
                let mut wait = Self::LOOK_AGAIN;
                loop {
                    match stopped.recv_timeout(wait) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = std::time::SystemTime::now();
                    wait = match end_due(&env, &state_dir, &slug, now) {
                        Ok(ended) => {
                            for a in &ended {
                                tracing::info!(
                                    "bottle {slug}: the grant for {} ended; egress refuses it now",
                                    a.describe()
                                );
                            }
                            Self::until_next(&state_dir)
                        }
                        Err(e) => {
                            tracing::warn!("bottle {slug}: ending a grant: {e}");
                            Self::AFTER_FAILURE
                        }
                    };
                }
            })
            .ok();
        GrantClock {
            stop: Some(stop),
            thread,
        }
    }

    /// How long until the next grant ends, at most [`Self::LOOK_AGAIN`].
    fn until_next(state_dir: &Path) -> std::time::Duration {
        Approved::load(&state_dir.join(APPROVED_FILE))
            .ok()
            .and_then(|a| a.next_end())
            .map_or(Self::LOOK_AGAIN, |t| {
                t.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .min(Self::LOOK_AGAIN)
            })
    }
}

impl Drop for GrantClock {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread; a change it is applying finishes first, so
        // teardown never races a reload.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_whole_replaces_with_the_mode_and_leaves_no_temp() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("routes.yaml");
        std::fs::write(&f, "old").unwrap();
        write_whole(&f, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let e = write_whole(&d.path().join("no/such/x"), b"", 0o600).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn write_whole_never_writes_through_a_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "mine").unwrap();
        let shared = d.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::os::unix::fs::symlink(&victim, shared.join(".planted")).unwrap();
        let (tmp, _) = create_new_in(
            &shared,
            [".planted".to_owned(), ".free".to_owned()].into_iter(),
            0o644,
        )
        .unwrap();
        assert_eq!(tmp, shared.join(".free"), "the planted link is skipped");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
        write_whole(&shared.join("r1.json"), b"decision", 0o644).unwrap();
        assert_eq!(
            std::fs::read_to_string(shared.join("r1.json")).unwrap(),
            "decision"
        );
    }
}
