//! `bottle ps`, `logs`, `stop`, `cleanup` and `images build`.

use super::runtime;
use anyhow::{Context, Result};
use bollard::query_parameters::LogsOptionsBuilder;
use bottle::hostenv::HostEnv;
use bottle::run::docker::{self, down, images, inventory};
use bottle::run::driver::{self, Driver as _, Fleet, Part, Teardown, Work};
use bottle::state;
use bottle_contract::layout;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

pub(super) fn state_root(env: &HostEnv) -> Result<PathBuf> {
    bottle::plan::prepare::default_state_root(env).map_err(anyhow::Error::msg)
}

fn age(created: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let s = (now - created).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86400),
    }
}

/// What one bottle runs: its containers and, for a natively driven backend, its machines.
#[derive(Default)]
struct Running {
    /// `role:state` of each part.
    parts: Vec<(String, String)>,
    /// The agent's name, when a container says it.
    agent: Option<String>,
    /// The oldest part's creation time.
    created: Option<i64>,
}

/// Every driver `ps`, `logs`, `stop` and `cleanup` ask, and every part they run under `root`;
/// a native driver that cannot be loaded or cannot list is a note on stderr, not the command's
/// failure.
async fn ask_every_driver(
    env: &HostEnv,
    dirs: &[PathBuf],
    root: &std::path::Path,
) -> Result<(Fleet, Vec<(usize, Part)>)> {
    let policy = match driver::policy(env, dirs) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("note: native drivers not consulted: {e}");
            None
        }
    };
    let (fleet, notes) = Fleet::connect(env, policy.as_ref()).await?;
    let (parts, more) = fleet.parts(root).await;
    for n in notes.iter().chain(&more) {
        eprintln!("{n}");
    }
    Ok((fleet, parts))
}

pub(super) fn ps(env: &HostEnv, dirs: &[PathBuf]) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let (_, parts) = ask_every_driver(env, dirs, &root).await?;
        let mut by_slug: BTreeMap<String, Running> = BTreeMap::new();
        for (_, c) in parts {
            let r = by_slug.entry(c.slug.clone()).or_default();
            r.parts.push((c.role, c.state));
            if r.agent.is_none() {
                r.agent = c.agent;
            }
            r.created = Some(r.created.map_or(c.created, |t| t.min(c.created)));
        }
        println!(
            "{:<24} {:<14} {:<13} {:<7} STATE",
            "SLUG", "AGENT", "BACKEND", "AGE"
        );
        let mut orphans = Vec::new();
        for (slug, r) in by_slug {
            let meta: serde_json::Value =
                std::fs::read_to_string(root.join(&slug).join(layout::METADATA_FILE))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let backend = meta["backend"].as_str().unwrap_or("docker");
            let agent = r
                .agent
                .clone()
                .or_else(|| meta["agent"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".into());
            let parts = if r.parts.iter().all(|(_, s)| s == "running") {
                "running".to_owned()
            } else {
                r.parts
                    .iter()
                    .map(|(role, s)| format!("{role}:{s}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            // The run lock is held by its `bottle run` for as long as that lives.
            let state = if state::in_use(&root.join(&slug)) {
                parts
            } else {
                orphans.push(slug.clone());
                if parts == "running" {
                    "orphaned".to_owned()
                } else {
                    format!("orphaned: {parts}")
                }
            };
            println!(
                "{slug:<24} {agent:<14} {backend:<13} {:<7} {state}",
                age(r.created.unwrap_or_default())
            );
        }
        if !orphans.is_empty() {
            println!(
                "\norphaned: its `bottle run` is gone (killed, or its machine restarted) and what it started still runs; `bottle stop {}` removes it and keeps its logs and ledger (`bottle cleanup` does every orphan)",
                orphans.join(" / ")
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn logs(env: &HostEnv, slug: &str, follow: bool, dirs: &[PathBuf]) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let (fleet, parts) = ask_every_driver(env, dirs, &root).await?;
        // Everything here was written by the agent or the bundle: never raw to the terminal.
        let safe = bottle_contract::terminal::safe;
        if !parts.iter().any(|(_, p)| p.slug == slug) {
            for path in [root.join(slug).join(layout::LOG_FILE), root.join("logs").join(format!("{slug}.log"))] {
                if let Ok(bytes) = std::fs::read(&path) {
                    print!("{}", safe(&String::from_utf8_lossy(&bytes)));
                    return Ok(ExitCode::SUCCESS);
                }
            }
            anyhow::bail!("no bottle `{slug}` is running and no logs of it are kept; `bottle ps` lists running ones");
        }
        let docker = fleet.docker.client();
        let containers = inventory::containers(docker, Some(slug)).await?;
        if !follow || containers.is_empty() {
            let logs = fleet.owner(slug, &parts).logs(slug, &root.join(slug)).await?;
            print!("{}", safe(&logs));
            return Ok(ExitCode::SUCCESS);
        }
        // Following: Docker's streams as they come (a natively driven agent's output is read
        // whole by its driver, above).
        let streams = containers.iter().map(|c| {
            let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(true).timestamps(true).build();
            let role = c.role.clone();
            docker.logs(&c.name, Some(opts)).map(move |chunk| (role.clone(), chunk))
        });
        let mut all = futures_util::stream::select_all(streams.map(Box::pin));
        let mut out = std::io::stdout();
        while let Some((role, chunk)) = all.next().await {
            let Ok(chunk) = chunk else { continue };
            for line in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                let _ = writeln!(out, "{role} | {}", safe(&down::strip_ansi(line)));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn stop(env: &HostEnv, slug: &str, dirs: &[PathBuf]) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let (fleet, parts) = ask_every_driver(env, dirs, &root).await?;
        if !parts.iter().any(|(_, p)| p.slug == slug)
            && inventory::networks(fleet.docker.client(), Some(slug))
                .await?
                .is_empty()
        {
            anyhow::bail!("no bottle `{slug}` is running; `bottle ps` lists running ones");
        }
        let state = root.join(slug);
        let log = if state.is_dir() {
            state.join(layout::LOG_FILE)
        } else {
            root.join("logs").join(format!("{slug}.log"))
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if state::is_state_dir(&state) {
            // A run still attached must not take the bundle's exit for a death to recover from.
            let _ = std::fs::write(
                state.join(bottle_contract::layout::STOP_REQUESTED_FILE),
                b"",
            );
        }
        // An orphan's state dir (no run holds it) goes as after any run: its agent's work
        // brought back, logs and ledger kept, the rest (its CA keys) removed. A live run does
        // that itself.
        let orphan = state::is_state_dir(&state) && !state::in_use(&state);
        let teardown = Teardown {
            state_dir: &state,
            log_file: Some(&log),
            after_interrupt: false,
            work: if orphan { Work::BringBack } else { Work::Leave },
        };
        fleet.owner(slug, &parts).down(slug, teardown).await?;
        let log = if orphan {
            state::retire(&state)?
        } else if log.starts_with(&state) && !state.is_dir() {
            // The attached run's teardown retired the dir meanwhile, its logs kept there.
            state::archived_log(&state)
        } else {
            log
        };
        eprintln!("stopped {slug}; logs in {}", log.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// What `bottle cleanup` found: only what bottle made.
struct Survey {
    /// Every driver's parts with a valid bottle slug (containers, machines).
    parts: Vec<(usize, Part)>,
    /// Parts whose bottle label is no slug bottle makes: left alone.
    spoofed: Vec<Part>,
    /// The slugs of `parts`, sorted.
    slugs: Vec<String>,
    networks: Vec<String>,
    /// The networks kept for the next bottles that none holds now.
    idle_kept: Vec<String>,
    volumes: Vec<String>,
    /// State dirs holding bottle's metadata, of no running bottle and not in use.
    orphan_dirs: Vec<PathBuf>,
}

impl Survey {
    async fn take(
        fleet: &Fleet,
        parts: Vec<(usize, Part)>,
        root: &std::path::Path,
    ) -> Result<Survey> {
        // A label is only a claim: a slug bottle could not have made is never used as a path,
        // and its part is left alone (whoever labelled it can remove it).
        let (parts, spoofed): (Vec<_>, Vec<_>) = parts
            .into_iter()
            .partition(|(_, p)| state::valid_slug(&p.slug));
        let spoofed = spoofed.into_iter().map(|(_, p)| p).collect();
        let mut slugs: Vec<String> = parts.iter().map(|(_, p)| p.slug.clone()).collect();
        slugs.sort();
        slugs.dedup();
        let orphan_dirs = std::fs::read_dir(root)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            state::valid_slug(&n) && !slugs.iter().any(|s| *s == n)
                        })
                    })
                    .filter(|p| state::is_state_dir(p) && !state::in_use(p))
                    .collect()
            })
            .unwrap_or_default();
        let docker = fleet.docker.client();
        Ok(Survey {
            parts,
            spoofed,
            slugs,
            networks: inventory::networks(docker, None).await?,
            idle_kept: docker::kept::idle(docker).await?,
            volumes: inventory::volumes(docker, None).await?,
            orphan_dirs,
        })
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
            && self.networks.is_empty()
            && self.idle_kept.is_empty()
            && self.volumes.is_empty()
            && self.orphan_dirs.is_empty()
    }

    fn print(&self, fleet: &Fleet) {
        for c in &self.spoofed {
            println!(
                "ignored   {} {} (its bottle label {:?} is no slug bottle makes)",
                kind_of(c),
                c.name,
                c.slug
            );
        }
        for (i, p) in &self.parts {
            match kind_of(p) {
                "machine" => println!(
                    "machine   {} ({} driver, bottle {}, {})",
                    p.name,
                    fleet.drivers().nth(*i).map_or("?", |d| d.name()),
                    p.slug,
                    p.state
                ),
                kind => println!("{kind} {} (bottle {}, {})", p.name, p.slug, p.state),
            }
        }
        for n in &self.networks {
            println!("network   {n}");
        }
        for n in &self.idle_kept {
            println!("network   {n} (kept for the next bottles, idle)");
        }
        for v in &self.volumes {
            println!("volume    {v}");
        }
        for d in &self.orphan_dirs {
            println!("state dir {} (no bottle running)", d.display());
        }
    }

    /// Remove it all; what could not be removed, one line each.
    async fn remove(&self, fleet: &Fleet, root: &std::path::Path) -> Vec<String> {
        let mut failures = Vec::new();
        for slug in &self.slugs {
            let state = root.join(slug);
            let ours = state::is_state_dir(&state) && !state::in_use(&state);
            let log = ours.then(|| state.join(layout::LOG_FILE));
            // An orphan's agent left work in its layer: it comes back as after any run.
            let teardown = Teardown {
                state_dir: &state,
                log_file: log.as_deref(),
                after_interrupt: false,
                work: if ours { Work::BringBack } else { Work::Leave },
            };
            if let Err(e) = fleet.owner(slug, &self.parts).down(slug, teardown).await {
                failures.push(e.to_string());
                continue;
            }
            if ours {
                retire(&state, slug, &mut failures);
            }
        }
        let docker = fleet.docker.client();
        // Networks and volumes whose containers were already gone.
        match inventory::networks(docker, None).await {
            Ok(networks) => {
                for n in networks {
                    if let Err(e) = docker.remove_network(&n).await {
                        failures.push(docker::api(format!("removing network {n}"))(e).to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        match inventory::volumes(docker, None).await {
            Ok(volumes) => {
                for v in volumes {
                    if let Err(e) = docker
                        .remove_volume(&v, None::<bollard::query_parameters::RemoveVolumeOptions>)
                        .await
                    {
                        failures.push(docker::api(format!("removing volume {v}"))(e).to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        // The networks kept for the next bottles that none holds now.
        let (removed, errors) = docker::kept::remove_idle(docker).await;
        if !removed.is_empty() {
            println!(
                "removed {} network{} kept for the next bottles",
                removed.len(),
                if removed.len() == 1 { "" } else { "s" }
            );
        }
        failures.extend(errors);
        for d in &self.orphan_dirs {
            // No part of it runs: Docker's teardown finds nothing and brings its work back.
            let teardown = Teardown {
                state_dir: d,
                log_file: None,
                after_interrupt: false,
                work: Work::BringBack,
            };
            let slug = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Err(e) = fleet.docker.down(&slug, teardown).await {
                failures.push(e.to_string());
                continue;
            }
            retire(d, &slug, &mut failures);
        }
        failures
    }
}

/// Retire the state dir of `slug` as after any run (its log and audit ledger kept, the rest,
/// with its CA keys, removed) and say where the log went; a failure joins `failures`.
fn retire(state_dir: &std::path::Path, slug: &str, failures: &mut Vec<String>) {
    match state::retire(state_dir) {
        Ok(log) => println!("logs of {slug} kept in {}", log.display()),
        Err(e) => failures.push(e.to_string()),
    }
}

/// What a part is, as `cleanup` names it.
fn kind_of(p: &Part) -> &'static str {
    if p.role.ends_with("-vm") {
        "machine"
    } else {
        "container"
    }
}

/// Ask on the terminal; anything but yes is no.
fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(bottle::plan::consent::is_yes(&answer))
}

pub(super) fn cleanup(
    env: &HostEnv,
    yes: bool,
    dry_run: bool,
    dirs: &[PathBuf],
) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let (fleet, parts) = ask_every_driver(env, dirs, &root).await?;
        let survey = Survey::take(&fleet, parts, &root).await?;
        survey.print(&fleet);
        if survey.is_empty() {
            println!("nothing to clean up");
            return Ok(ExitCode::SUCCESS);
        }
        if dry_run {
            return Ok(ExitCode::SUCCESS);
        }
        if !yes && !confirm("Remove all of this?")? {
            println!("nothing removed");
            return Ok(ExitCode::SUCCESS);
        }
        let failures = survey.remove(&fleet, &root).await;
        if failures.is_empty() {
            println!("removed");
            Ok(ExitCode::SUCCESS)
        } else {
            anyhow::bail!("some things could not be removed:\n{}", failures.join("\n"))
        }
    })
}

pub(super) fn build_images(env: &HostEnv, base: &str) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let built =
            images::build_sidecars(&docker, base, env, |line| eprintln!("{line}")).await?;
        println!("built {}", images::BUNDLE_IMAGE);
        if built.pipelock && !built.pipelock_verified {
            println!(
                "note: pipelock came from {} by tag only; pin it with BOTTLE_PIPELOCK_IMAGE=<name:tag>@sha256:<digest>",
                images::pipelock_image(env)
            );
        }
        if !built.pipelock {
            println!(
                "note: {} is not available here (no registry), so the bundle has no pipelock: bottles will have no way out until it is loaded (`docker load`) and this is run again",
                images::pipelock_image(env)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
