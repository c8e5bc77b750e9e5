//! `bottle ps`, `logs`, `stop`, `cleanup` and `images build`.

use super::runtime;
use anyhow::{Context, Result};
use bollard::query_parameters::LogsOptionsBuilder;
use bottle::docker::{self, down, images, inventory};
use bottle::hostenv::HostEnv;
use bottle::state;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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

pub(super) fn ps(env: &HostEnv) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let containers = inventory::containers(&docker, None).await?;
        let mut by_slug: BTreeMap<&str, Vec<&inventory::BottleContainer>> = BTreeMap::new();
        for c in &containers {
            by_slug.entry(&c.slug).or_default().push(c);
        }
        println!(
            "{:<24} {:<14} {:<13} {:<7} STATE",
            "SLUG", "AGENT", "BACKEND", "AGE"
        );
        for (slug, cs) in by_slug {
            let meta: serde_json::Value =
                std::fs::read_to_string(root.join(slug).join("metadata.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            let backend = meta["backend"].as_str().unwrap_or("docker");
            let created = cs.iter().map(|c| c.created).min().unwrap_or_default();
            let states: Vec<String> = cs
                .iter()
                .map(|c| format!("{}:{}", c.role, c.state))
                .collect();
            let state = if cs.iter().all(|c| c.state == "running") {
                "running".to_owned()
            } else {
                states.join(",")
            };
            println!(
                "{slug:<24} {:<14} {backend:<13} {:<7} {state}",
                cs[0].agent,
                age(created)
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn logs(env: &HostEnv, slug: &str, follow: bool) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let containers = inventory::containers(&docker, Some(slug)).await?;
        if containers.is_empty() {
            for path in [root.join(slug).join("compose.log"), root.join("logs").join(format!("{slug}.log"))] {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    print!("{text}");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            anyhow::bail!("no bottle `{slug}` is running and no logs of it are kept; `bottle ps` lists running ones");
        }
        if !follow {
            print!("{}", down::merged_logs(&docker, &containers).await);
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
                let _ = writeln!(out, "{role} | {}", down::strip_ansi(line));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn stop(env: &HostEnv, slug: &str) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        if inventory::containers(&docker, Some(slug)).await?.is_empty()
            && inventory::networks(&docker, Some(slug)).await?.is_empty()
        {
            anyhow::bail!("no bottle `{slug}` is running; `bottle ps` lists running ones");
        }
        let state = root.join(slug);
        let log = if state.is_dir() {
            state.join("compose.log")
        } else {
            root.join("logs").join(format!("{slug}.log"))
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        down::down(&docker, slug, Some(&log)).await?;
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
}

impl Survey {
    async fn take(docker: &bollard::Docker, root: &std::path::Path) -> Result<Survey> {
        // A label is only a claim: a slug bottle could not have made is never used as a path,
        // and its container is left alone (whoever labelled it can remove it).
        let (containers, spoofed): (Vec<_>, Vec<_>) = inventory::containers(docker, None)
            .await?
            .into_iter()
            .partition(|c| state::valid_slug(&c.slug));
        let mut slugs: Vec<String> = containers.iter().map(|c| c.slug.clone()).collect();
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
        })
    }

    fn is_empty(&self) -> bool {
        self.containers.is_empty()
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
    async fn remove(&self, docker: &bollard::Docker, root: &std::path::Path) -> Vec<String> {
        let mut failures = Vec::new();
        for slug in &self.slugs {
            let state = root.join(slug);
            let ours = state::is_state_dir(&state) && !state::in_use(&state);
            let log = ours.then(|| state.join("compose.log"));
            if let Err(e) = down::down(docker, slug, log.as_deref()).await {
                failures.push(e.to_string());
            } else if ours {
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

pub(super) fn cleanup(env: &HostEnv, yes: bool, dry_run: bool) -> Result<ExitCode> {
    let root = state_root(env)?;
    runtime()?.block_on(async {
        let docker = docker::connect().await?;
        let survey = Survey::take(&docker, &root).await?;
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
        let failures = survey.remove(&docker, &root).await;
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
        println!("built {}", images::SIDECARS_IMAGE);
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
