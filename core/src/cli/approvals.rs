//! `bottle approvals`, `approve`, `reject` and `dashboard`: the human's side of supervise.

use super::manage::state_root;
use anyhow::Result;
use bottle::approvals::{self, ApproveOptions, Asked, QueueWatch};
use bottle::hostenv::HostEnv;
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

const HEADER: &str =
    "ID           BOTTLE                 STATUS    IF APPROVED                              REASON";

/// `bottle approvals [SLUG] [--json] [--watch]`.
pub(super) fn list(env: &HostEnv, slug: Option<&str>, json: bool, watch: bool) -> Result<ExitCode> {
    let root = state_root(env)?;
    let all = approvals::list(&root, slug);
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
    if !watch {
        return Ok(ExitCode::SUCCESS);
    }
    println!("(watching {}; Ctrl-C to stop)", root.display());
    let watcher = QueueWatch::new(&root);
    let mut seen: BTreeMap<String, &'static str> = all
        .iter()
        .map(|a| (a.request.id.clone(), a.status()))
        .collect();
    loop {
        watcher.wait(Duration::from_secs(1));
        for a in approvals::list(&root, slug) {
            let status = a.status();
            if seen.get(&a.request.id) != Some(&status) {
                println!("{}", row(&a));
                seen.insert(a.request.id.clone(), status);
            }
        }
    }
}

/// `bottle approve ID [--path-prefix P] [--persist] [--note N]`.
pub(super) fn approve(env: &HostEnv, id: &str, opts: ApproveOptions) -> Result<ExitCode> {
    let root = state_root(env)?;
    let started = std::time::Instant::now();
    let done = approvals::approve_live(env, &root, id, &opts, &now())?;
    println!(
        "approved {id} ({}): the agent can reach {}, no credential; in effect now ({}, {} ms)",
        done.asked.slug,
        done.access.describe(),
        done.confirmed,
        started.elapsed().as_millis()
    );
    if let Some(file) = &done.persisted {
        println!("kept for later runs in {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `bottle reject ID [--note N]`.
pub(super) fn reject(env: &HostEnv, id: &str, note: &str) -> Result<ExitCode> {
    let root = state_root(env)?;
    let asked = approvals::reject(&root, id, note, &now())?;
    println!(
        "rejected {id} ({}: {}); the agent sees it within a second",
        asked.slug, asked.request.host
    );
    Ok(ExitCode::SUCCESS)
}

/// `bottle dashboard`.
pub(super) fn dashboard(env: &HostEnv) -> Result<ExitCode> {
    let root = state_root(env)?;
    bottle::dashboard::run(env, &root, now)?;
    Ok(ExitCode::SUCCESS)
}
