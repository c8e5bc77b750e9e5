//! `bottle approvals`, `approve`, `reject` and `dashboard`: the human's side of supervise.

use super::manage::state_root;
use anyhow::Result;
use bottle::hostenv::HostEnv;
use bottle::live::requests::{self, ApproveOptions, Asked, QueueWatch};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn row(a: &Asked) -> String {
    let mut line = format!(
        "{:<12} {:<22} {:<9} {:<40} {}",
        a.request.id,
        a.slug,
        a.status(),
        a.effect,
        a.request.reason
    );
    if let Some(p) = &a.problem {
        line.push_str(&format!("\n{:<12} warning: {p}", ""));
    }
    if let Some(e) = a.decision.as_ref().and_then(|d| d.apply_error.as_ref()) {
        line.push_str(&format!("\n{:<12} not applied: {e}", ""));
    }
    line
}

/// What is left of grant `g` at `now`, in words.
fn remaining(g: &bottle::live::granted::Access, now: std::time::SystemTime) -> String {
    if let Some(at) = g.ended_by(now) {
        return format!("ended at {at}");
    }
    let time = g
        .until
        .as_deref()
        .and_then(|t| bottle::live::granted::parse_time(t).ok())
        .map(|t| {
            let left = t.duration_since(now).unwrap_or_default();
            let left = std::time::Duration::from_secs(left.as_secs());
            format!(
                "{} left (until {})",
                humantime::format_duration(left),
                g.until.as_deref().unwrap_or_default()
            )
        });
    let uses = g
        .uses
        .map(|n| format!("at most {n} requests (egress counts)"));
    [time, uses]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

const HEADER: &str =
    "ID           BOTTLE                 STATUS    IF APPROVED                              REASON";

/// `bottle approvals [SLUG] [--json] [--watch]`.
pub(super) fn list(env: &HostEnv, slug: Option<&str>, json: bool, watch: bool) -> Result<ExitCode> {
    let root = state_root(env)?;
    if let Some(slug) = slug.filter(|s| !root.join(s).is_dir()) {
        // An empty list would read as "it asked nothing": say the name matched no bottle.
        anyhow::bail!(
            "no bottle `{slug}` is running or kept in {}; `bottle ps` lists running ones",
            root.display()
        );
    }
    let all = requests::list(&root, slug);
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let open: Vec<_> = all
        .iter()
        .filter(|a| matches!(a.status(), "pending" | "failed"))
        .collect();
    if open.is_empty() {
        println!("no open requests");
    } else {
        println!("{HEADER}");
        for a in &open {
            println!("{}", row(a));
        }
    }
    let now = std::time::SystemTime::now();
    let ending: Vec<_> = all
        .iter()
        .filter_map(|a| Some((a, a.grant.as_ref()?)))
        .filter(|(_, g)| g.limited())
        .collect();
    if !ending.is_empty() {
        println!("\ngrants that end by themselves:");
        for (a, g) in ending {
            println!(
                "{:<12} {:<22} {:<40} {}",
                a.request.id,
                a.slug,
                g.describe(),
                remaining(g, now)
            );
        }
    }
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    println!("(watching {}; Ctrl-C to stop)", root.display());
    let mut watcher = QueueWatch::new(&root);
    let mut seen: BTreeMap<String, &'static str> = all
        .iter()
        .map(|a| (a.request.id.clone(), a.status()))
        .collect();
    loop {
        watcher.wait(Duration::from_secs(1));
        for a in requests::list(&root, slug) {
            let status = a.status();
            if seen.get(&a.request.id) != Some(&status) {
                println!("{}", row(&a));
                seen.insert(a.request.id.clone(), status);
            }
        }
    }
}

/// `bottle approve ID [--path-prefix P] [--persist] [--note N] [--yes]`: shows what it would
/// grant, asks on a terminal (`--yes` grants without asking), then grants it live.
pub(super) fn approve(
    env: &HostEnv,
    id: &str,
    opts: ApproveOptions,
    yes: bool,
) -> Result<ExitCode> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let root = state_root(env)?;
    let pending = requests::prepare_approval(env, &root, id, &opts)?;
    print!("{}", pending.describe());
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "not granted: `bottle approve` shows what it grants and asks first, and stdin is no terminal; run it in a terminal, or add --yes to grant exactly what is shown above"
            );
        }
        print!("Grant it? [y/N] ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !bottle::plan::consent::is_yes(&line) {
            println!("not granted; the request stays open (`bottle reject {id}` refuses it)");
            return Ok(ExitCode::from(1));
        }
    }
    let started = std::time::Instant::now();
    let done = requests::grant(env, &root, pending, &opts.note, &now())?;
    println!(
        "approved {id} ({}): the agent can reach {}, no credential; in effect now ({}, {} ms); ends {}",
        done.asked.slug,
        done.access.describe(),
        done.confirmed,
        started.elapsed().as_millis(),
        requests::ends(&done.access)
    );
    if let Some(file) = &done.persisted {
        println!("kept for later runs in {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `bottle reject ID [--note N]`.
pub(super) fn reject(env: &HostEnv, id: &str, note: &str) -> Result<ExitCode> {
    let root = state_root(env)?;
    let asked = requests::reject(&root, id, note, &now(), "bottle reject")?;
    println!(
        "rejected {id} ({}: {}); the agent sees it within a second",
        asked.slug, asked.request.host
    );
    Ok(ExitCode::SUCCESS)
}

/// `bottle dashboard`.
pub(super) fn dashboard(env: &HostEnv) -> Result<ExitCode> {
    let root = state_root(env)?;
    bottle::live::dashboard::run(env, &root, now)?;
    Ok(ExitCode::SUCCESS)
}
