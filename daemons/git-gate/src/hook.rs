//! The pre-receive hook: `bottle-git-gate` run by receive-pack under the name `pre-receive`.
//!
//! receive-pack has the pushed objects in quarantine and the ref updates on stdin. The hook
//! (1) applies the push policy, (2) scans the new objects for secrets, (3) pushes them to the
//! real upstream, atomically and by URL. Only if all three pass does it exit 0, and only then
//! does receive-pack move the gate's refs: the agent's push lands upstream or nowhere.
//! Everything it prints reaches the agent as `remote:` lines.

use crate::policy::{self, Update};
use crate::scan::{self, ScanReport};
use bottle_contract::gate::{GateRepo, ScanSettings};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The env var the daemon passes the hook its [`HookContext`] in.
pub const CONTEXT_ENV: &str = "BOTTLE_GATE_HOOK";

/// How long the forward to upstream may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(300);

/// What the daemon tells the hook (in [`CONTEXT_ENV`], as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookContext {
    /// The repo pushed to.
    pub repo: GateRepo,
    /// The scan's limits.
    pub scan: ScanSettings,
    /// Where to write the [`HookReport`] for the daemon's log.
    pub report: PathBuf,
}

/// What the hook did, for the daemon's log line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookReport {
    /// `accepted` or `refused`.
    pub outcome: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The refs pushed.
    pub refs: Vec<String>,
    /// Objects scanned.
    pub objects: usize,
    /// Bytes scanned.
    pub bytes: u64,
    /// How long the scan took.
    pub scan_ms: f64,
    /// How long the push upstream took.
    pub forward_ms: f64,
}

/// Run as the pre-receive hook; the exit code receive-pack acts on.
pub fn main() -> i32 {
    let ctx: HookContext = match std::env::var(CONTEXT_ENV)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
    {
        Some(c) => c,
        None => {
            eprintln!("git-gate: the pre-receive hook ran outside git-gate; push refused");
            return 1;
        }
    };
    let mut report = HookReport::default();
    let code = match receive(&ctx, &mut report) {
        Ok(()) => {
            report.outcome = "accepted".into();
            0
        }
        Err(lines) => {
            for l in &lines {
                eprintln!("git-gate: {l}");
            }
            report.outcome = "refused".into();
            report.reason = lines.first().cloned().unwrap_or_default();
            1
        }
    };
    if let Ok(json) = serde_json::to_vec(&report) {
        let _ = std::fs::write(&ctx.report, json);
    }
    code
}

/// The three steps; `Err` holds the lines the agent sees.
fn receive(ctx: &HookContext, report: &mut HookReport) -> Result<(), Vec<String>> {
    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| vec![format!("cannot read the ref updates: {e}")])?;
        let u = Update::parse(&line)
            .ok_or_else(|| vec![format!("malformed ref update {line:?}; push refused")])?;
        updates.push(u);
    }
    report.refs = updates.iter().map(|u| u.name.clone()).collect();
    report.refs.truncate(100);
    let scanner = bottle_dlp::Scanner::new(&[]);
    check_names(&updates, &scanner)?;
    check_olds(&updates)?;
    policy::check(&updates, &ctx.repo.push, is_fast_forward)
        .map_err(|r| vec![format!("push refused: {r}")])?;
    if !ctx.repo.push.allow_ci_changes {
        check_ci(&ctx.repo.name, &updates)?;
    }

    let started = Instant::now();
    let tips: Vec<String> = updates
        .iter()
        .filter(|u| !u.deletes())
        .map(|u| u.new.clone())
        .collect();
    let scanned = scan::scan_push(&|| Command::new("git"), &tips, &scanner, &ctx.scan);
    report.scan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let scanned: ScanReport = scanned.map_err(|e| vec![format!("push refused: {e}")])?;
    report.objects = scanned.objects;
    report.bytes = scanned.bytes;
    if !scanned.findings.is_empty() {
        let mut lines = vec![format!(
            "push refused: it carries what looks like a secret ({} found):",
            scanned.findings.len()
        )];
        lines.extend(
            scanned
                .findings
                .iter()
                .map(|f| format!("  {}: {}", f.place, f.rule)),
        );
        lines.push(
            "remove it from every commit (`git rebase -i`, or `git commit --amend` for the last one) \
             and push again; if it is a real credential, revoke it"
                .into(),
        );
        return Err(lines);
    }

    let started = Instant::now();
    let forwarded = forward(&ctx.repo, &updates);
    report.forward_ms = started.elapsed().as_secs_f64() * 1000.0;
    forwarded
}

/// Refuse a ref name git would not accept ([`policy::valid_ref_name`]) or one that carries
/// what looks like a secret (a branch name goes upstream as surely as a file does).
fn check_names(updates: &[Update], scanner: &bottle_dlp::Scanner) -> Result<(), Vec<String>> {
    for u in updates {
        if !policy::valid_ref_name(&u.name) {
            return Err(vec![format!(
                "push refused: {:?} is not a ref name git accepts; name the branch with letters, digits, `-`, `_`, `.` and `/`",
                bottle_contract::terminal::one_line(&u.name)
            )]);
        }
        let found = scanner.scan_all(u.name.as_bytes());
        let rule = match found.first() {
            Some(f) => Some(f.rule.clone()),
            None => scanner.inspect(u.name.as_bytes()).map(|f| f.rule),
        };
        if let Some(rule) = rule {
            return Err(vec![format!(
                "push refused: a ref name carries what looks like a secret ({rule}); name the branch otherwise"
            )]);
        }
    }
    Ok(())
}

/// Refuse an update whose old value is not the ref's value here (the mirror, brought up to
/// date with upstream under the repo's lock before this push). receive-pack compares them
/// only after this hook, and the fast-forward and CI checks judge the change from the old
/// value: a push claiming a new branch was already at its tip would show no change at all.
fn check_olds(updates: &[Update]) -> Result<(), Vec<String>> {
    for u in updates {
        let out = Command::new("git")
            .args(["rev-parse", "--verify", "-q", "--end-of-options", &u.name])
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| vec![format!("push refused: cannot read {}: {e}", u.name)])?;
        let here = out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned());
        let claimed = (!u.creates()).then_some(u.old.as_str());
        if here.as_deref() != claimed {
            return Err(vec![format!(
                "push refused: the push says {} was {}, but here it {}; fetch and push again",
                u.name,
                claimed.map_or("absent".to_owned(), |o| format!("at {o}")),
                here.map_or("does not exist".to_owned(), |h| format!("is at {h}")),
            )]);
        }
    }
    Ok(())
}

/// Refuse updates that add or change a CI definition ([`crate::ci`]).
fn check_ci(repo: &str, updates: &[Update]) -> Result<(), Vec<String>> {
    let git = || Command::new("git");
    let head = crate::ci::default_branch_tip(&git);
    for u in updates.iter().filter(|u| !u.deletes()) {
        let old = (!u.creates()).then_some(u.old.as_str());
        let changed = crate::ci::changed(&git, &u.new, old, head.as_deref()).map_err(|e| {
            vec![format!(
                "push refused: cannot check its CI definitions: {e}"
            )]
        })?;
        if !changed.is_empty() {
            let mut lines = vec![format!(
                "push refused: {} changes CI definitions, which run with the repository's secrets:",
                u.name
            )];
            lines.extend(changed.iter().map(|p| format!("  {p}")));
            lines.push(format!(
                "leave them out (a human pushes CI changes), or set `allow_ci_changes: true` in the manifest's `push:` of git repo `{repo}`"
            ));
            return Err(lines);
        }
    }
    Ok(())
}

/// `git merge-base --is-ancestor old new`, in the quarantine.
fn is_fast_forward(old: &str, new: &str) -> bool {
    Command::new("git")
        .args(["merge-base", "--is-ancestor", old, new])
        .status()
        .is_ok_and(|s| s.success())
}

/// Push the updates to the upstream URL (not a named remote: a remote's tracking refs could
/// not be updated inside the quarantine), all or nothing.
fn forward(repo: &GateRepo, updates: &[Update]) -> Result<(), Vec<String>> {
    let specs: Vec<String> = updates
        .iter()
        .map(|u| {
            if u.deletes() {
                format!(":{}", u.name)
            } else if repo.push.allow_force {
                // Forced only over the value judged here ([`check_olds`]), not over
                // whatever upstream got meanwhile.
                format!("+{}:{}", u.new, u.name)
            } else {
                format!("{}:{}", u.new, u.name)
            }
        })
        .collect();
    let mut cmd = Command::new("git");
    cmd.args(["push", "--porcelain", "--quiet"]);
    if specs.len() > 1 {
        cmd.arg("--atomic");
    }
    if repo.push.allow_force {
        for u in updates {
            let expect = if u.creates() { "" } else { u.old.as_str() };
            cmd.arg(format!("--force-with-lease={}:{expect}", u.name));
        }
    }
    cmd.arg(&repo.upstream).args(&specs);
    let done = crate::gitcmd::run(cmd, "git push upstream", FORWARD_TIMEOUT)
        .map_err(|e| vec![format!("push refused: {e}; nothing was pushed")])?;
    if done.status.success() {
        return Ok(());
    }
    let mut lines = vec![format!(
        "push refused: upstream did not accept it, so nothing changed here either: {}",
        done.reason()
    )];
    for l in String::from_utf8_lossy(&done.stdout).lines() {
        // Porcelain: `!\t<src>:<dst>\t[rejected] (why)`.
        if let Some(rest) = l.strip_prefix('!') {
            lines.push(format!("  upstream: {}", rest.trim()));
        }
    }
    lines.push("fetch, rebase or merge onto upstream's branch, then push again".into());
    Err(lines)
}
