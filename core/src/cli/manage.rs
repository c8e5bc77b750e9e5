//! `bottle ps`, `logs`, `stop`, `cleanup` and `images build`.

use super::runtime;
use anyhow::{Context, Result};
use bollard::query_parameters::LogsOptionsBuilder;
use bottle::docker::{self, down, images, inventory};
use bottle::driver::{self, native::NativeDriver};
use bottle::hostenv::HostEnv;
use bottle::state;
use bottle_contract::layout;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) fn state_root(env: &HostEnv) -> Result<PathBuf> {
    bottle::prepare::default_state_root(env).map_err(anyhow::Error::msg)
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

/// Every pinned native driver bottle can load for `ps`, `stop` and `cleanup`, each with what
/// it runs under `root`; a driver that fails is a note on stderr, not the command's failure.
async fn native_bottles(
    env: &HostEnv,
    dirs: &[PathBuf],
    root: &std::path::Path,
) -> Vec<(Arc<NativeDriver>, Vec<bottle_driver_sdk::Listed>)> {
    let policy = match driver::policy(env, dirs) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("note: native drivers not consulted: {e}");
            return Vec::new();
        }
    };
    let (drivers, notes) = driver::installed(&policy);
    for n in notes {
        eprintln!("{n}");
    }
    let mut out = Vec::new();
    for d in drivers {
        let (d2, root) = (d.clone(), root.to_owned());
        match tokio::task::spawn_blocking(move || d2.list(&root)).await {
            Ok(Ok(listed)) => out.push((d, listed)),
            Ok(Err(e)) => eprintln!("note: {e}"),
            Err(e) => eprintln!("note: driver `{}`: {e}", d.name()),
        }
    }
    out
}

pub(super) fn ps(env: &HostEnv, dirs: &[PathBuf]) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let containers = inventory::containers(&docker, None).await?;
        let mut by_slug: BTreeMap<String, Running> = BTreeMap::new();
        for c in &containers {
            let r = by_slug.entry(c.slug.clone()).or_default();
            r.parts.push((c.role.clone(), c.state.clone()));
            r.agent.get_or_insert_with(|| c.agent.clone());
            r.created = Some(r.created.map_or(c.created, |t| t.min(c.created)));
        }
        for (d, listed) in native_bottles(env, dirs, &root).await {
            for m in listed {
                let r = by_slug.entry(m.slug.clone()).or_default();
                r.parts.push((format!("{}-vm", d.name()), m.state.clone()));
                r.created = Some(r.created.map_or(m.created, |t| t.min(m.created)));
            }
        }
        println!(
            "{:<24} {:<14} {:<13} {:<7} STATE",
            "SLUG", "AGENT", "BACKEND", "AGE"
        );
        let mut orphans = Vec::new();
        for (slug, r) in by_slug {
            let meta: serde_json::Value =
                std::fs::read_to_string(root.join(&slug).join("metadata.json"))
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
        let docker = docker::connect().await?;
        let containers = inventory::containers(&docker, Some(slug)).await?;
        // A natively driven agent's output, after its bundle's.
        let mut vm_logs = String::new();
        for (d, listed) in native_bottles(env, dirs, &root).await {
            if listed.iter().any(|m| m.slug == slug) {
                let (state, slug) = (root.join(slug), slug.to_owned());
                let text = tokio::task::spawn_blocking(move || d.logs(&slug, &state)).await??;
                vm_logs.extend(text.lines().map(|l| format!("agent-vm | {l}\n")));
            }
        }
        // Everything here was written by the agent or the bundle: never raw to the terminal.
        let safe = bottle_contract::terminal::safe;
        if containers.is_empty() && !vm_logs.is_empty() {
            print!("{}", safe(&vm_logs));
            return Ok(ExitCode::SUCCESS);
        }
        if containers.is_empty() {
            for path in [root.join(slug).join(layout::LOG_FILE), root.join("logs").join(format!("{slug}.log"))] {
                if let Ok(bytes) = std::fs::read(&path) {
                    print!("{}", safe(&String::from_utf8_lossy(&bytes)));
                    return Ok(ExitCode::SUCCESS);
                }
            }
            anyhow::bail!("no bottle `{slug}` is running and no logs of it are kept; `bottle ps` lists running ones");
        }
        if !follow {
            let merged = down::merged_logs(&docker, &containers).await;
            print!("{}{}", safe(&merged), safe(&vm_logs));
            return Ok(ExitCode::SUCCESS);
        }
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
        let docker = docker::connect().await?;
        let machines: Vec<Arc<NativeDriver>> = native_bottles(env, dirs, &root)
            .await
            .into_iter()
            .filter(|(_, listed)| listed.iter().any(|m| m.slug == slug))
            .map(|(d, _)| d)
            .collect();
        if inventory::containers(&docker, Some(slug)).await?.is_empty()
            && inventory::networks(&docker, Some(slug)).await?.is_empty()
            && machines.is_empty()
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
        down::down(&docker, slug, Some(&log)).await?;
        for d in machines {
            let (state, slug) = (state.clone(), slug.to_owned());
            tokio::task::spawn_blocking(move || d.down(&slug, &state)).await??;
        }
        // An orphan's state dir (no run holds it) goes as after any run: logs and ledger
        // kept, the rest (its CA keys) removed. A live run retires its own.
        let log = if state::is_state_dir(&state) && !state::in_use(&state) {
            state::retire(&state)?
        } else {
            log
        };
        eprintln!("stopped {slug}; logs in {}", log.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// What `bottle cleanup` found: only what bottle made.
struct Survey {
    /// Containers with a valid bottle slug.
    containers: Vec<inventory::BottleContainer>,
    /// Containers whose bottle label is no slug bottle makes: left alone.
    spoofed: Vec<inventory::BottleContainer>,
    /// The slugs of `containers`, sorted.
    slugs: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
    /// State dirs holding bottle's metadata, of no running bottle and not in use.
    orphan_dirs: Vec<PathBuf>,
    /// What native drivers run, each with its driver.
    machines: Vec<(Arc<NativeDriver>, bottle_driver_sdk::Listed)>,
}

impl Survey {
    async fn take(
        env: &HostEnv,
        dirs: &[PathBuf],
        docker: &bollard::Docker,
        root: &std::path::Path,
    ) -> Result<Survey> {
        // A label is only a claim: a slug bottle could not have made is never used as a path,
        // and its container is left alone (whoever labelled it can remove it).
        let (containers, spoofed): (Vec<_>, Vec<_>) = inventory::containers(docker, None)
            .await?
            .into_iter()
            .partition(|c| state::valid_slug(&c.slug));
        let machines: Vec<_> = native_bottles(env, dirs, root)
            .await
            .into_iter()
            .flat_map(|(d, listed)| listed.into_iter().map(move |m| (d.clone(), m)))
            .filter(|(_, m)| state::valid_slug(&m.slug))
            .collect();
        let mut slugs: Vec<String> = containers
            .iter()
            .map(|c| c.slug.clone())
            .chain(machines.iter().map(|(_, m)| m.slug.clone()))
            .collect();
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
        Ok(Survey {
            containers,
            spoofed,
            slugs,
            networks: inventory::networks(docker, None).await?,
            volumes: inventory::volumes(docker, None).await?,
            orphan_dirs,
            machines,
        })
    }

    fn is_empty(&self) -> bool {
        self.machines.is_empty()
            && self.containers.is_empty()
            && self.networks.is_empty()
            && self.volumes.is_empty()
            && self.orphan_dirs.is_empty()
    }

    fn print(&self) {
        for c in &self.spoofed {
            println!(
                "ignored   container {} (its bottle label {:?} is no slug bottle makes)",
                c.name, c.slug
            );
        }
        for c in &self.containers {
            println!("container {} (bottle {}, {})", c.name, c.slug, c.state);
        }
        for (d, m) in &self.machines {
            println!(
                "machine   {} ({} driver, bottle {}, {})",
                m.name,
                d.name(),
                m.slug,
                m.state
            );
        }
        for n in &self.networks {
            println!("network   {n}");
        }
        for v in &self.volumes {
            println!("volume    {v}");
        }
        for d in &self.orphan_dirs {
            println!("state dir {} (no bottle running)", d.display());
        }
    }

    /// Remove it all; what could not be removed, one line each.
    async fn remove(
        &self,
        env: &HostEnv,
        docker: &bollard::Docker,
        root: &std::path::Path,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for slug in &self.slugs {
            let state = root.join(slug);
            let ours = state::is_state_dir(&state) && !state::in_use(&state);
            let log = ours.then(|| state.join(layout::LOG_FILE));
            let mut failed = false;
            if let Err(e) = down::down(docker, slug, log.as_deref()).await {
                failures.push(e.to_string());
                failed = true;
            }
            for (d, _) in self.machines.iter().filter(|(_, m)| m.slug == *slug) {
                let (d, slug, state) = (d.clone(), slug.clone(), state.clone());
                match tokio::task::spawn_blocking(move || d.down(&slug, &state)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        failures.push(e.to_string());
                        failed = true;
                    }
                    Err(e) => {
                        failures.push(e.to_string());
                        failed = true;
                    }
                }
            }
            if !failed && ours {
                // An orphan's agent left work in its layer: it comes back as after any run.
                if let Err(e) =
                    bottle::runner::bring_back_work(docker, &state, env.home(), false).await
                {
                    failures.push(e.to_string());
                    continue;
                }
                // As after any run: the logs kept, the state (with its CA keys) gone.
                match state::retire(&state) {
                    Ok(log) => println!("logs of {slug} kept in {}", log.display()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
        }
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
        for d in &self.orphan_dirs {
            if let Err(e) = bottle::runner::bring_back_work(docker, d, env.home(), false).await {
                failures.push(e.to_string());
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(d) {
                failures.push(format!("removing {}: {e}", d.display()));
            }
        }
        failures
    }
}

/// Ask on the terminal; anything but yes is no.
fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(bottle::consent::is_yes(&answer))
}

pub(super) fn cleanup(
    env: &HostEnv,
    yes: bool,
    dry_run: bool,
    dirs: &[PathBuf],
) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let survey = Survey::take(env, dirs, &docker, &root).await?;
        survey.print();
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
        let failures = survey.remove(env, &docker, &root).await;
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
