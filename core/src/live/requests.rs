//! The host's side of supervise: the requests agents made, and the human's answers.
//!
//! Each bottle's queue is `<state root>/<slug>/supervise/queue/` (mounted into the bundle):
//! `pending/<id>.json` from `bottle-supervise`, `decisions/<id>.json` from here. A decision is
//! written whole (temp file, fsync, rename), once; the daemon picks it up within 100 ms.

use crate::hostenv::HostEnv;
use crate::live::apply::{self, LiveError, RunRecord};
use crate::live::granted::{Access, Approved, ApprovedError};
use bottle_contract::supervise::{Decision, Request, Verdict, validate};
use std::path::{Path, PathBuf};

/// A request and the bottle it came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Asked {
    /// The bottle's slug.
    pub slug: String,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
    /// What approving it would change, in words.
    pub effect: String,
    /// The decision, once made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// What is wrong with its decision file, when it holds none bottle can read (the request
    /// then stays open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What was granted, from the run's approvals (the host's file): with its end, if it has
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Access>,
}

impl Asked {
    /// Its state in one word: `pending`, `rejected`, `approved` (and applied) or `failed`
    /// (approved, not applied).
    pub fn status(&self) -> &'static str {
        match &self.decision {
            None => "pending",
            Some(d) if d.decision == Verdict::Rejected => "rejected",
            Some(d) if d.applied => "approved",
            Some(_) => "failed",
        }
    }
}

/// Why an answer could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No bottle has a request with that id.
    #[error("no request `{0}` in any bottle under {1}; `bottle approvals` lists the open ones")]
    NotFound(String, PathBuf),
    /// Two bottles have a request of that id.
    #[error("request `{0}` is in more than one bottle; name it as one of: {1}")]
    Ambiguous(String, String),
    /// It was answered already.
    #[error(
        "request `{0}` was already {1}; a decision is final (ask the agent to make a new request)"
    )]
    Decided(String, &'static str),
    /// The queue could not be written.
    #[error("cannot write the decision in {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

impl ApprovalError {
    fn decided(asked: &Asked) -> ApprovalError {
        ApprovalError::Decided(asked.request.id.clone(), asked.status())
    }
}

/// The queue dir of `slug` under `root`.
pub fn queue_dir(root: &Path, slug: &str) -> PathBuf {
    root.join(slug).join("supervise").join("queue")
}

/// Every request under `root` (of `slug` only, when given), oldest first, with its decision.
/// A malformed file is skipped: the daemon wrote it whole, so it is not one of its.
pub fn list(root: &Path, slug: Option<&str>) -> Vec<Asked> {
    let mut slugs: Vec<String> = match slug {
        Some(s) => vec![s.to_owned()],
        None => std::fs::read_dir(root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
    };
    slugs.sort();
    let mut out = Vec::new();
    for slug in slugs {
        let queue = queue_dir(root, &slug);
        let Ok(pending) = queue_fs::subdir(&queue, "pending") else {
            continue;
        };
        let decisions = queue_fs::subdir(&queue, "decisions").ok();
        let approved = Approved::load(&root.join(&slug).join(crate::live::granted::APPROVED_FILE))
            .unwrap_or_default();
        let mut files: Vec<String> = queue_fs::names(&pending)
            .into_iter()
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        files.sort();
        // The daemon keeps at most a few open; a bundle that floods the dir is cut off.
        files.truncate(MAX_LISTED);
        for name in files {
            let Ok(mut request) = queue_fs::read_at::<Request>(&pending, &name) else {
                continue;
            };
            // The id names the decision file: only the daemon's own kind of id.
            let safe_id = !request.id.is_empty()
                && request.id.len() <= 64
                && request
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !safe_id || name != format!("{}.json", request.id) {
                continue;
            }
            // Written inside the bundle: shown on the host's terminal only without controls.
            for field in [&mut request.host, &mut request.reason, &mut request.created]
                .into_iter()
                .chain(request.path_prefix.as_mut())
                .chain(request.failed_url.as_mut())
            {
                *field = validate::text(field, validate::MAX_REASON);
            }
            if let Some(p) = request.preview.as_mut() {
                p.method = validate::text(&p.method, 20);
                p.body = validate::text(&p.body, bottle_contract::supervise::PREVIEW_CHARS);
                p.findings.truncate(20);
                for f in &mut p.findings {
                    *f = validate::text(f, 80);
                }
            }
            let file = queue.join("decisions").join(format!("{}.json", request.id));
            let read = match &decisions {
                Some(d) => queue_fs::read_at::<Decision>(d, &format!("{}.json", request.id)),
                None => Err(None),
            };
            let (decision, problem) = match read {
                Ok(mut d) => {
                    // The decisions dir is writable from the bundle too.
                    d.note = validate::text(&d.note, validate::MAX_REASON);
                    d.decided = validate::text(&d.decided, 40);
                    d.by = validate::text(&d.by, 40);
                    d.id = request.id.clone();
                    d.apply_error = d.apply_error.map(|e| validate::text(&e, 2000));
                    (Some(d), None)
                }
                Err(None) => (None, None),
                Err(Some(e)) => (
                    None,
                    Some(format!(
                        "{} is not a decision bottle wrote ({}); the request stays open",
                        file.display(),
                        validate::text(&e, 300)
                    )),
                ),
            };
            let grant = approved
                .access
                .iter()
                .find(|a| a.request == request.id)
                .cloned();
            out.push(Asked {
                slug: slug.clone(),
                effect: request.effect(),
                request,
                decision,
                problem,
                grant,
            });
        }
    }
    out
}

/// The request `id` (or `SLUG/ID`), wherever it is; an id two bottles share needs its slug.
pub fn find(root: &Path, id: &str) -> Result<Asked, ApprovalError> {
    let (slug, bare) = match id.split_once('/') {
        Some((slug, bare)) if crate::state::valid_slug(slug) => (Some(slug), bare),
        _ => (None, id),
    };
    let mut found: Vec<Asked> = list(root, slug)
        .into_iter()
        .filter(|a| a.request.id == bare)
        .collect();
    match found.len() {
        0 => Err(ApprovalError::NotFound(id.to_owned(), root.to_owned())),
        1 => Ok(found.remove(0)),
        _ => Err(ApprovalError::Ambiguous(
            bare.to_owned(),
            found
                .iter()
                .map(|a| format!("{}/{}", a.slug, bare))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Refuse request `id`, with a note the agent sees; `by` is the command that refused it.
pub fn reject(
    root: &Path,
    id: &str,
    note: &str,
    now: &str,
    by: &str,
) -> Result<Asked, ApprovalError> {
    let asked = find(root, id)?;
    if asked.status() != "pending" && asked.status() != "failed" {
        return Err(ApprovalError::decided(&asked));
    }
    decide(root, asked, Verdict::Rejected, note, Ok(()), now, by)
}

/// Whether `asked` can be approved: it is open, or approved and not applied (a retry).
pub fn approvable(asked: &Asked) -> Result<(), ApprovalError> {
    match &asked.decision {
        None => Ok(()),
        Some(d) if d.decision == Verdict::Approved && !d.applied => Ok(()),
        Some(_) => Err(ApprovalError::decided(asked)),
    }
}

/// Record that `asked` was approved: applied, or not with the reason (`bottle approve` can
/// then try again).
pub fn approve(
    root: &Path,
    asked: Asked,
    note: &str,
    applied: Result<(), String>,
    now: &str,
    by: &str,
) -> Result<Asked, ApprovalError> {
    approvable(&asked)?;
    decide(root, asked, Verdict::Approved, note, applied, now, by)
}

fn decide(
    root: &Path,
    mut asked: Asked,
    verdict: Verdict,
    note: &str,
    applied: Result<(), String>,
    now: &str,
    by: &str,
) -> Result<Asked, ApprovalError> {
    let decision = Decision {
        id: asked.request.id.clone(),
        decision: verdict,
        note: validate::text(note, validate::MAX_REASON),
        applied: verdict == Verdict::Approved && applied.is_ok(),
        apply_error: applied.err().map(|e| validate::text(&e, 2000)),
        decided: now.to_owned(),
        by: by.to_owned(),
    };
    let queue = queue_dir(root, &asked.slug);
    let dir = queue.join("decisions");
    let bytes = serde_json::to_vec_pretty(&decision)
        .map_err(|e| ApprovalError::Write(dir.clone(), e.into()))?;
    // Over a failed approval's decision or a file that is none, never over a decision made
    // (the callers checked what `asked` holds; this is the last guard).
    if asked
        .decision
        .as_ref()
        .is_some_and(|d| d.applied || d.decision == Verdict::Rejected)
    {
        return Err(ApprovalError::decided(&asked));
    }
    // The host's own record first (the ledger's source): the queue's copy tells the agent,
    // and the bundle can rewrite it.
    let record = root
        .join(&asked.slug)
        .join(bottle_contract::layout::DECISIONS_FILE);
    let line = serde_json::to_string(&decision)
        .map_err(|e| ApprovalError::Write(record.clone(), e.into()))?;
    crate::state::append_line(&record, &line).map_err(|e| ApprovalError::Write(record, e))?;
    queue_fs::subdir(&queue, "decisions")
        .and_then(|d| queue_fs::write_at(&d, &format!("{}.json", decision.id), &bytes, 0o644))
        .map_err(|e| ApprovalError::Write(dir.clone(), e))?;
    asked.decision = Some(decision);
    asked.problem = None;
    Ok(asked)
}

/// The decisions the host recorded for the bottle in `state_dir`, oldest first (lines that do
/// not parse are skipped).
pub fn recorded_decisions(state_dir: &Path) -> Vec<Decision> {
    crate::state::read_lines(&state_dir.join(bottle_contract::layout::DECISIONS_FILE))
}

/// How `bottle approve` answers.
#[derive(Debug, Clone, Default)]
pub struct ApproveOptions {
    /// Approve only this path prefix on the host (a route with no credential), whatever the
    /// agent asked.
    pub path_prefix: Option<String>,
    /// Also approve it for the agent's later runs.
    pub persist: bool,
    /// A note the agent sees.
    pub note: String,
    /// The request as the human saw it: the approval is refused if the file says otherwise
    /// now (the queue is writable from the bundle).
    pub shown: Option<Request>,
    /// End the grant this long after it is worked out (`--for 10m`).
    pub for_duration: Option<std::time::Duration>,
    /// End the grant after this many requests through it (`--uses 5`).
    pub uses: Option<u32>,
    /// The command that approves (`bottle approve`, `bottle dashboard`), for the record.
    pub by: String,
}

/// The longest a grant may be given for: beyond it, a grant for good says what is meant.
pub const MAX_GRANT_FOR: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// What an approval did.
#[derive(Debug, Clone)]
pub struct ApproveOutcome {
    /// The request, with its decision.
    pub asked: Asked,
    /// What was granted.
    pub access: Access,
    /// What the bundle confirmed (egress's config hash), or why nothing had to change.
    pub confirmed: String,
    /// Where it was persisted, with `--persist`.
    pub persisted: Option<PathBuf>,
}

/// Why an approval did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// The request cannot be approved (unknown, decided, unwritable queue).
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The request's file changed since the human saw it; nothing was changed or recorded.
    #[error("request `{0}` changed since it was shown; look at it again before approving")]
    Changed(String),
    /// The access cannot be granted this way; nothing was changed or recorded.
    #[error(transparent)]
    Access(#[from] ApprovedError),
    /// The bottle cannot take it; nothing was changed or recorded.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The plugins could not be loaded; nothing was changed or recorded.
    #[error(transparent)]
    Plugins(#[from] crate::plugin::DiscoverError),
    /// Approved, but not applied: recorded so (the agent is told), the old files put back;
    /// `bottle approve ID` tries again.
    #[error("approved {id}, but not applied: {error}; `bottle approve {id}` tries again")]
    NotApplied {
        /// The request.
        id: String,
        /// Why.
        error: LiveError,
    },
    /// Applied, but `--persist` failed.
    #[error("approved and applied {id}, but not persisted for later runs: {error}")]
    NotPersisted {
        /// The request.
        id: String,
        /// Why.
        error: ApprovedError,
    },
}

/// An approval worked out and not yet granted: everything `bottle approve` shows before it
/// asks, and what [`grant`] applies.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The request's id as the human gave it (`ID` or `SLUG/ID`).
    pub id: String,
    /// The request, as read when the approval was worked out.
    pub asked: Asked,
    /// What would be granted.
    pub access: Access,
    /// Whether it is kept for the agent's later runs (`--persist`).
    pub persist: bool,
    /// The change to the running bottle (empty when it allows it already).
    pub proposal: apply::Proposal,
    /// The command that approves it.
    pub by: String,
    record: RunRecord,
}

impl Pending {
    /// What granting it does, in lines a human reads before saying yes. Everything the agent
    /// wrote (its reason, the URL it quotes) is shown without control characters.
    pub fn describe(&self) -> String {
        let text = |s: &str| validate::text(s, validate::MAX_REASON);
        let r = &self.asked.request;
        let agent = self
            .record
            .manifest_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = self
            .access
            .path_prefix
            .as_deref()
            .map_or_else(|| "any path".to_owned(), |p| format!("paths under {p}"));
        let changes = if self.proposal.is_empty() {
            "nothing: the bottle allows it already".to_owned()
        } else {
            let files: Vec<String> = self
                .proposal
                .files
                .iter()
                .map(|f| {
                    let plugin = f.path.split('/').next().unwrap_or_default();
                    format!("{plugin}'s {}", f.path)
                })
                .collect();
            format!("{}, reloaded in the running bottle", files.join(" and "))
        };
        // The agent's own words come last: a long reason wraps below what is granted, never
        // over it, and cannot pose as one of these lines.
        let mut out = format!(
            "request {} of bottle {} (agent {agent}):\n  grants:   the agent can reach {}, {path}, with no credential\n  changes:  {changes}\n  for:      {}\n  ends:     {}\n",
            r.id,
            self.asked.slug,
            self.access.host,
            if self.persist {
                format!("this run and every later run of {agent} (--persist)")
            } else {
                "this run only".to_owned()
            },
            ends(&self.access),
        );
        if let Some(url) = &r.failed_url {
            out.push_str(&format!("  refused:  {}\n", text(url)));
            if !validate::url_is_under(url, &self.access.host) {
                out.push_str(&format!(
                    "  WARNING:  that URL is not on {}: the request does not match what it asks for\n",
                    self.access.host
                ));
            }
        }
        if let Some(p) = &r.preview {
            out.push_str(&preview_lines(p, r.failed_url.as_deref()));
        }
        out.push_str(&format!(
            "  reason:   (the agent's words) {}\n",
            text(&r.reason)
        ));
        out
    }
}

/// The request the agent attached, as lines under an approval's description: what it says
/// would go out once it is granted. Its word only: the grant is not limited to it.
pub fn preview_lines(p: &bottle_contract::supervise::Preview, url: Option<&str>) -> String {
    let text = |s: &str| validate::text(s, bottle_contract::supervise::PREVIEW_CHARS);
    let mut out = format!(
        "  request:  {} {} (the agent's word: the grant is not limited to it)\n",
        text(&p.method),
        url.map_or_else(|| "(no URL given)".to_owned(), text)
    );
    if p.body_bytes > 0 {
        out.push_str(&format!(
            "  body:     {} bytes: {}\n",
            p.body_bytes,
            text(&p.body)
        ));
    }
    if !p.findings.is_empty() {
        out.push_str(&format!(
            "  DLP:      the body carries {}; egress refuses it unless the manifest's egress.dlp allows it\n",
            p.findings.join(", ")
        ));
    }
    out
}

/// When `access` ends, in words.
pub fn ends(access: &Access) -> String {
    match (&access.until, access.uses) {
        (None, None) => "never by itself".to_owned(),
        (Some(t), None) => format!("at {t}"),
        (None, Some(n)) => format!("after {n} request{}", if n == 1 { "" } else { "s" }),
        (Some(t), Some(n)) => format!(
            "at {t} or after {n} request{}, whichever comes first",
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// Work out the approval of request `id` without granting it: the request is checked as
/// supervise checks it, the running bottle re-planned with it, and nothing is written.
pub fn prepare_approval(
    env: &HostEnv,
    root: &Path,
    id: &str,
    opts: &ApproveOptions,
) -> Result<Pending, ApproveError> {
    let asked = find(root, id)?;
    approvable(&asked)?;
    if let Some(shown) = &opts.shown
        && !same_request(shown, &asked.request)
    {
        return Err(ApproveError::Changed(id.to_owned()));
    }
    let prefix = opts
        .path_prefix
        .as_deref()
        .or(asked.request.path_prefix.as_deref());
    let mut access = Access::checked(&asked.request.host, prefix)?;
    access.request = asked.request.id.clone();
    limit(&mut access, opts, std::time::SystemTime::now())?;
    let state_dir = root.join(&asked.slug);
    apply::running(&state_dir)?;
    let record = RunRecord::load(&state_dir)?;
    // Plugins run before any async runtime exists (their WASI host blocks).
    let plugins = crate::plugin::discover(
        &crate::plugin::PluginHost::for_env(env),
        &record.plugin_dirs,
    )?;
    let proposal = apply::propose(&plugins, env, &state_dir, &record, access.clone())?;
    tracing::debug!(files = proposal.files.len(), "re-planned");
    Ok(Pending {
        id: id.to_owned(),
        asked,
        access,
        persist: opts.persist,
        proposal,
        by: opts.by.clone(),
        record,
    })
}

/// Set `access`'s end from `--for` and `--uses` as of `now`.
fn limit(
    access: &mut Access,
    opts: &ApproveOptions,
    now: std::time::SystemTime,
) -> Result<(), ApprovedError> {
    if let Some(d) = opts.for_duration {
        if d.is_zero() || d > MAX_GRANT_FOR {
            return Err(ApprovedError::Refused(format!(
                "--for {}: give a time from 1s to {}; for longer, approve without --for",
                humantime::format_duration(d),
                humantime::format_duration(MAX_GRANT_FOR)
            )));
        }
        // Whole seconds: what is shown is when it ends.
        let until = now + std::time::Duration::from_secs(d.as_secs().max(1));
        access.until = Some(crate::state::rfc3339(until));
    }
    if let Some(n) = opts.uses {
        if n == 0 {
            return Err(ApprovedError::Refused(
                "--uses 0 would grant nothing; give 1 or more".into(),
            ));
        }
        if opts.persist {
            return Err(ApprovedError::Refused(
                "--uses counts the requests of one run, so it cannot be kept for later runs; with --persist give --for".into(),
            ));
        }
        access.uses = Some(n);
    }
    Ok(())
}

/// Whether two reads of a request ask the same (the queue is writable from the bundle: it may
/// have been rewritten since it was shown).
fn same_request(a: &Request, b: &Request) -> bool {
    a.host == b.host
        && a.path_prefix == b.path_prefix
        && a.kind == b.kind
        && a.reason == b.reason
        && a.failed_url == b.failed_url
        && a.preview == b.preview
}

/// Grant `pending` (as [`prepare_approval`] worked it out and a human saw it) to its running
/// bottle live (see [`crate::live::apply`]). The request is read again first and the grant refused if
/// it says otherwise now. The decision is written once the bundle confirms the new config, or
/// with the reason it did not. `now` is the time to record (RFC 3339).
pub fn grant(
    env: &HostEnv,
    root: &Path,
    pending: Pending,
    note: &str,
    now: &str,
) -> Result<ApproveOutcome, ApproveError> {
    let id = pending.id.clone();
    let asked = find(
        root,
        &format!("{}/{}", pending.asked.slug, pending.asked.request.id),
    )?;
    approvable(&asked)?;
    if !same_request(&asked.request, &pending.asked.request) {
        return Err(ApproveError::Changed(id));
    }
    let by = pending.by.clone();
    let mut access = pending.access;
    access.approved = now.to_owned();
    let mut proposal = pending.proposal;
    // The approvals file records when; the routes egress runs do not depend on it.
    for a in &mut proposal.approved.access {
        if a.host == access.host && a.path_prefix == access.path_prefix {
            a.approved = now.to_owned();
        }
    }
    let pending = Pending {
        proposal,
        access: access.clone(),
        ..pending
    };
    let applied = if pending.proposal.is_empty() {
        Ok("nothing to change: the bottle allows it already".to_owned())
    } else {
        apply::apply_blocking(
            &asked.slug,
            &pending.proposal,
            &format!(
                "approve {}: {}",
                asked.request.id,
                pending.access.describe()
            ),
        )
    };
    let confirmed = match applied {
        Ok(c) => c,
        Err(error) => {
            approve(root, asked, note, Err(error.to_string()), now, &by)?;
            return Err(ApproveError::NotApplied { id, error });
        }
    };
    let asked = approve(root, asked, note, Ok(()), now, &by)?;
    let mut persisted = None;
    if pending.persist {
        let file = persist(env, &pending.record, access.clone())
            .map_err(|error| ApproveError::NotPersisted { id, error })?;
        persisted = Some(file);
    }
    Ok(ApproveOutcome {
        asked,
        access,
        confirmed,
        persisted,
    })
}

/// Approve request `id` and apply it to its running bottle live: [`prepare_approval`] and
/// [`grant`] with no one asked in between (the dashboard asks first; so does `bottle approve`).
pub fn approve_live(
    env: &HostEnv,
    root: &Path,
    id: &str,
    opts: &ApproveOptions,
    now: &str,
) -> Result<ApproveOutcome, ApproveError> {
    let pending = prepare_approval(env, root, id, opts)?;
    grant(env, root, pending, &opts.note, now)
}

/// Add `access` to the persisted approvals of the manifest `record` ran.
fn persist(env: &HostEnv, record: &RunRecord, access: Access) -> Result<PathBuf, ApprovedError> {
    let config = env.config_dir().ok_or_else(|| {
        ApprovedError::Refused(
            "there is no config dir to persist to (set HOME or XDG_CONFIG_HOME)".into(),
        )
    })?;
    let file = crate::live::granted::persisted_path(&config, &record.manifest_file);
    Approved::load(&file)?.with(access).save(&file)?;
    Ok(file)
}

/// Wakes its owner when a queue under the state root changes (inotify through `notify`);
/// where watching is not possible it only times out, so callers poll.
///
/// Only the dirs a queue's change shows in are watched, each alone: the root (bottles come
/// and go), and in each bottle its own dir (the approvals file), `supervise/`, the queue and
/// its `pending/` and `decisions/`. Never the whole tree: a bottle's dir also holds the
/// agent's layer of its working dir, where the agent makes as many dirs as it likes, and
/// watching them would spend your inotify watches (shared by all your programs) and wake
/// this on every write the agent makes.
pub struct QueueWatch {
    root: PathBuf,
    watcher: Option<notify::RecommendedWatcher>,
    /// The dirs watched now.
    watched: std::collections::HashSet<PathBuf>,
    /// For each change, the paths it removed or renamed: a dir made again in the place of a
    /// watched one (a bottle's slug used again) needs a watch of its own.
    changed: std::sync::mpsc::Receiver<Vec<PathBuf>>,
}

impl QueueWatch {
    /// Watch every bottle's queue under `root`.
    pub fn new(root: &Path) -> QueueWatch {
        use notify::event::ModifyKind::Name;
        use notify::{EventKind, Watcher};
        let (tx, changed) = std::sync::mpsc::channel();
        let watcher = notify::RecommendedWatcher::new(
            move |e: notify::Result<notify::Event>| match e {
                // Reads (ours included) are no change.
                Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
                // A dir removed lost its watch, and one renamed took its watch along: the
                // paths are watched afresh when a dir is there again.
                Ok(e) if matches!(e.kind, EventKind::Remove(_) | EventKind::Modify(Name(_))) => {
                    let _ = tx.send(e.paths);
                }
                Ok(_) | Err(_) => {
                    let _ = tx.send(Vec::new());
                }
            },
            notify::Config::default(),
        )
        .map_err(|e| tracing::debug!("not watching {}: {e}; polling", root.display()))
        .ok();
        let mut watch = QueueWatch {
            root: root.to_owned(),
            watcher,
            watched: Default::default(),
            changed,
        };
        watch.watch_new_dirs();
        watch
    }

    /// Wait until something changed or `timeout` passed; true if something changed. Events
    /// that came together count once.
    pub fn wait(&mut self, timeout: std::time::Duration) -> bool {
        let first = self.changed.recv_timeout(timeout).ok();
        let got = first.is_some();
        for removed in first.into_iter().chain(self.changed.try_iter()) {
            for path in removed {
                self.watched.remove(&path);
            }
        }
        // After a change, a new bottle or queue dir may need a watch; with the root not
        // watched (not made yet), no change can come, so it is looked for on every wait.
        if got || !self.watched.contains(&self.root) {
            self.watch_new_dirs();
        }
        got
    }

    /// Watch each dir of [`QueueWatch`]'s list that exists and is not watched yet.
    fn watch_new_dirs(&mut self) {
        use notify::Watcher;
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let slugs = std::fs::read_dir(&self.root)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_else(|_| Vec::new());
        let mut dirs = vec![self.root.clone()];
        for slug in slugs {
            let queue = queue_dir(&self.root, &slug.to_string_lossy());
            dirs.extend([
                self.root.join(&slug),
                self.root.join(&slug).join("supervise"),
                queue.clone(),
                queue.join("pending"),
                queue.join("decisions"),
            ]);
        }
        for dir in dirs {
            // The root is yours and may be a link (a state dir kept elsewhere). Below it a
            // link is not watched: the bundle makes `pending/` and `decisions/` and could
            // leave a link to any of your dirs in their place. (One swapped in between this
            // check and the watch gets a watch that only wakes this; nothing is read
            // through it.)
            let meta = if dir == self.root {
                std::fs::metadata(&dir)
            } else {
                std::fs::symlink_metadata(&dir)
            };
            if meta.is_ok_and(|m| m.is_dir())
                && !self.watched.contains(&dir)
                && watcher
                    .watch(&dir, notify::RecursiveMode::NonRecursive)
                    .is_ok()
            {
                self.watched.insert(dir);
            }
        }
    }
}

/// The most requests listed per bottle.
const MAX_LISTED: usize = 200;

/// The queue's files, reached only through its own dirs. `pending/` and `decisions/` are made
/// (and owned) by the daemon inside the 1777 queue dir, so the bundle could swap either for a
/// link to any of the user's dirs: each is opened `O_NOFOLLOW|O_DIRECTORY` and every read,
/// create and rename goes through that handle. Only regular files are read (not a link, which
/// could point at the user's files, nor a FIFO, which would block), at most
/// [`queue_fs::MAX_QUEUE_FILE`] bytes; temp files are created `O_EXCL`.
mod queue_fs {
    use rustix::fs::{Mode, OFlags};
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::path::Path;

    /// The most a queue file may hold.
    pub const MAX_QUEUE_FILE: u64 = 64 << 10;

    const DIR: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);

    /// `queue/<sub>`, opened without following a link at either step.
    pub fn subdir(queue: &Path, sub: &str) -> std::io::Result<OwnedFd> {
        let q = rustix::fs::open(queue, DIR, Mode::empty())?;
        Ok(rustix::fs::openat(&q, sub, DIR, Mode::empty())?)
    }

    /// The names in `dir`.
    pub fn names(dir: &OwnedFd) -> Vec<String> {
        let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
            return vec![];
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    /// `name` in `dir`, parsed; `Err(None)` when it does not exist, `Err(Some(why))` when it
    /// is no `T` (or no regular file, or too large).
    pub fn read_at<T: serde::de::DeserializeOwned>(
        dir: &OwnedFd,
        name: &str,
    ) -> Result<T, Option<String>> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(None),
            Err(e) => return Err(Some(std::io::Error::from(e).to_string())),
        };
        let mut f = std::fs::File::from(fd);
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return Err(Some("not a regular file".into()));
        }
        let mut bytes = Vec::new();
        (&mut f)
            .take(MAX_QUEUE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Some(e.to_string()))?;
        if bytes.len() as u64 > MAX_QUEUE_FILE {
            return Err(Some(format!("larger than {MAX_QUEUE_FILE} bytes")));
        }
        serde_json::from_slice(&bytes).map_err(|e| Some(e.to_string()))
    }

    /// `name` in `dir`, whole: a new dot-named temp file (`O_EXCL`), fsync, rename, fsync the
    /// dir; `mode` so the daemon (another uid) reads it.
    pub fn write_at(dir: &OwnedFd, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut picked = None;
        for n in 0..8 {
            let tmp = format!(".{name}.{}-{n}.tmp", std::process::id());
            match rustix::fs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode)) {
                Ok(fd) => {
                    picked = Some((tmp, fd));
                    break;
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some((tmp, fd)) = picked else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "no free temp name in the decisions dir",
            ));
        };
        let mut f = std::fs::File::from(fd);
        let written = (|| -> std::io::Result<()> {
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
            f.write_all(bytes)?;
            f.sync_all()?;
            rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
            rustix::fs::fsync(dir)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::supervise::RequestKind;

    fn queued(root: &Path, slug: &str, id: &str) {
        let q = queue_dir(root, slug);
        std::fs::create_dir_all(q.join("pending")).unwrap();
        std::fs::create_dir_all(q.join("decisions")).unwrap();
        let r = Request {
            id: id.into(),
            kind: RequestKind::HostAccess,
            host: "pypi.org".into(),
            path_prefix: None,
            reason: "pip".into(),
            failed_url: None,
            created: "t".into(),
            preview: None,
        };
        std::fs::write(
            q.join("pending").join(format!("{id}.json")),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
    }

    /// The inotify watches this process holds, as the kernel counts them.
    #[cfg(target_os = "linux")]
    fn inotify_watches() -> usize {
        let fds = std::fs::read_dir("/proc/self/fd").unwrap();
        fds.filter_map(Result::ok)
            .filter(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.ends_with("anon_inode:inotify"))
            })
            .map(|fd| {
                let info = Path::new("/proc/self/fdinfo").join(fd.file_name());
                let info = std::fs::read_to_string(info).unwrap_or_default();
                info.lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count()
            })
            .sum()
    }

    /// Wait until `watch` has been quiet for a while: what earlier steps stirred is done.
    #[cfg(target_os = "linux")]
    fn settle(watch: &mut QueueWatch) {
        while watch.wait(std::time::Duration::from_millis(300)) {}
    }

    /// Each of `ids`, queued in `slug` one after the other, wakes `watch`: the first may come
    /// with new dirs, and the next shows they are watched.
    #[cfg(target_os = "linux")]
    fn each_wakes(watch: &mut QueueWatch, root: &Path, slug: &str, ids: [&str; 2]) {
        for id in ids {
            queued(root, slug, id);
            assert!(watch.wait(std::time::Duration::from_secs(5)), "{slug}/{id}");
            settle(watch);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_queue_watch_sees_every_queue_and_not_the_agents_layer_wherever_the_root_is() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        queued(root, "a-1", "id1");
        // The agent's layer of its working dir: as many dirs as it likes.
        let upper = root.join("a-1/workdir/upper");
        for i in 0..300 {
            std::fs::create_dir_all(upper.join(format!("d{i}/sub"))).unwrap();
        }
        let before = inotify_watches();
        let mut watch = QueueWatch::new(root);
        // The root; the bottle's dir, supervise/, the queue, pending/, decisions/.
        assert_eq!(inotify_watches() - before, 6);
        settle(&mut watch);

        // The agent writing in its layer wakes nobody.
        std::fs::create_dir(upper.join("d7/more")).unwrap();
        std::fs::write(upper.join("d7/sub/file"), "x").unwrap();
        assert!(!watch.wait(Duration::from_millis(500)));

        // A request does.
        queued(root, "a-1", "id2");
        assert!(watch.wait(Duration::from_secs(5)));
        settle(&mut watch);

        // So does one in a bottle started after the watch, whose dirs are then watched too.
        each_wakes(&mut watch, root, "b-2", ["id3", "id4"]);
        assert_eq!(inotify_watches() - before, 11);

        // A bottle removed and made again under the same slug between two looks is watched
        // again (its dirs are new dirs).
        std::fs::remove_dir_all(root.join("b-2")).unwrap();
        each_wakes(&mut watch, root, "b-2", ["id5", "id6"]);
        assert_eq!(inotify_watches() - before, 11);

        // So is a pending/ renamed away (its watch went with it) and made again.
        let pending = queue_dir(root, "b-2").join("pending");
        std::fs::rename(&pending, queue_dir(root, "b-2").join("old")).unwrap();
        each_wakes(&mut watch, root, "b-2", ["id7", "id8"]);

        // A bundle that leaves a link where its pending/ was gets no watch on the link's
        // target.
        let elsewhere = tempfile::tempdir().unwrap();
        let yours = elsewhere.path();
        let q = queue_dir(root, "c-3");
        std::fs::create_dir_all(q.join("decisions")).unwrap();
        std::os::unix::fs::symlink(yours, q.join("pending")).unwrap();
        assert!(watch.wait(Duration::from_secs(5)));
        settle(&mut watch);
        // c-3's dir, supervise/, the queue, decisions/.
        assert_eq!(inotify_watches() - before, 15);
        std::fs::write(yours.join("sub-file"), "x").unwrap();
        std::fs::create_dir(yours.join("sub")).unwrap();
        std::fs::write(yours.join("sub/f"), "x").unwrap();
        assert!(!watch.wait(Duration::from_millis(500)));
        drop(watch);

        // A state root made after the watch started, reached through a link of yours (the
        // root alone may be one). One test, not two: the counts above are the process's.
        let other = tempfile::tempdir().unwrap();
        let (real, link) = (other.path().join("real"), other.path().join("state"));
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // No root yet: the first run makes it.
        let mut watch = QueueWatch::new(&link);
        assert!(!watch.wait(Duration::from_millis(100)));
        std::fs::create_dir(&real).unwrap();
        assert!(!watch.wait(Duration::from_millis(100)));
        each_wakes(&mut watch, &link, "a-1", ["id1", "id2"]);
    }

    #[test]
    fn requests_are_listed_rejected_once_and_unknown_ids_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        queued(root, "a-1", "id1");
        queued(root, "b-2", "id2");
        std::fs::write(queue_dir(root, "b-2").join("pending/bad.json"), "{").unwrap();
        // A pending file the bundle's side wrote with terminal escapes in it.
        let forged = queue_dir(root, "b-2").join("pending/id3.json");
        let text =
            std::fs::read_to_string(queue_dir(root, "b-2").join("pending/id2.json")).unwrap();
        std::fs::write(
            &forged,
            text.replace("\"id2\"", "\"id3\"")
                .replace("\"pip\"", "\"pip\\u001b[2J\""),
        )
        .unwrap();
        // A FIFO and a link planted in the queue: skipped, not read (a FIFO would block).
        let pending = queue_dir(root, "b-2").join("pending");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            pending.join("fifo.json"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // The link's target is a request with the right id: only O_NOFOLLOW keeps it out.
        let outside = root.join("elsewhere.json");
        std::fs::write(&outside, text.replace("\"id2\"", "\"id4\"")).unwrap();
        std::os::unix::fs::symlink(&outside, pending.join("id4.json")).unwrap();
        let shown = list(root, Some("b-2"));
        assert_eq!(shown[1].request.reason, "pip [2J", "{shown:?}");
        assert_eq!(shown.len(), 2, "{shown:?}");
        std::fs::remove_file(forged).unwrap();
        let all = list(root, None);
        assert_eq!(
            all.iter()
                .map(|a| a.request.id.as_str())
                .collect::<Vec<_>>(),
            ["id1", "id2"]
        );
        assert_eq!(list(root, Some("b-2")).len(), 1);
        let done = reject(root, "id2", "no\u{1b}[2J thanks", "now", "test").unwrap();
        assert_eq!(done.decision.unwrap().note, "no [2J thanks");
        let e = reject(root, "id2", "", "now", "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("already rejected"), "{e}");
        let e = reject(root, "nope", "", "now", "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no request `nope`") && e.contains("bottle approvals"),
            "{e}"
        );
    }

    #[test]
    fn a_decisions_dir_swapped_for_a_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        queued(root, "a-1", "id1");
        let decisions = queue_dir(root, "a-1").join("decisions");
        std::fs::remove_dir(&decisions).unwrap();
        let victim = root.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::os::unix::fs::symlink(&victim, &decisions).unwrap();
        let e = reject(root, "id1", "", "now", "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot write the decision"), "{e}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn an_id_in_two_bottles_needs_its_slug() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        queued(root, "a-1", "id1");
        queued(root, "b-2", "id1");
        let e = reject(root, "id1", "", "now", "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a-1/id1") && e.contains("b-2/id1"), "{e}");
        let done = reject(root, "b-2/id1", "", "now", "test").unwrap();
        assert_eq!(done.slug, "b-2");
        assert!(list(root, Some("a-1"))[0].decision.is_none());
    }
}
