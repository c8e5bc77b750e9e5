//! `bottle run`.

use super::{RunArgs, plugins::load_all, runtime};
use anyhow::{Context, Result};
use bottle::consent;
use bottle::launch::{self, RunRequest};
use bottle::lifecycle::{self, LaunchOptions};
use bottle::policy::Grants;
use bottle::verify::Mode;
use std::process::ExitCode;
use std::time::Duration;

/// `bottle run` (and `bottle verify`, a run in [`Mode::Only`]); `json` prints the suite's
/// report as JSON.
pub(super) fn run(args: RunArgs, mode: Mode, json: bool) -> Result<ExitCode> {
    let project_dir = std::env::current_dir().context("cannot read the current dir")?;
    let manifest_file =
        bottle::manifest::find(&args.bottle.agent, &project_dir).map_err(anyhow::Error::msg)?;
    let manifest = bottle::manifest::load(&manifest_file)?;
    let mut grants = Grants::default();
    for (plugin, grant) in &args.bottle.grants {
        grants.add(plugin, grant.clone());
    }
    let cwd = match &args.bottle.cwd {
        Some(d) => d
            .canonicalize()
            .with_context(|| format!("--cwd {}: no such dir", d.display()))?,
        None => project_dir,
    };
    let base_image = std::env::var("BOTTLE_BASE_IMAGE")
        .unwrap_or_else(|_| bottle::docker::images::DEFAULT_BASE_IMAGE.into());
    // Decided before planning, so the plan is what will run: no pipelock in the bundle means
    // egress dials out itself (the environment is read here, at the edge, once).
    let pipelock_override = std::env::var("BOTTLE_PIPELOCK")
        .ok()
        .filter(|v| !v.is_empty());
    let (pipelock, pipelock_note) = {
        let rt = runtime()?;
        let fact = rt.block_on(lifecycle::pipelock_in_bundle(
            args.dry_run,
            &base_image,
            pipelock_override.as_deref(),
        ));
        rt.shutdown_background();
        fact?
    };
    let state_root = launch::default_state_root().map_err(anyhow::Error::msg)?;
    let docker_host = bottle::docker::docker_host();
    let socket = docker_host
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock");
    let protected = bottle::workdir::protected_dirs(
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(std::path::PathBuf::from)
            .as_deref(),
        Some(&state_root),
        bottle::paths::cache_dir().as_deref(),
        bottle::paths::config_dir().as_deref(),
        std::path::Path::new(socket),
        &args.bottle.plugins.plugin_dirs,
    );
    let req = RunRequest {
        manifest,
        backend: args.bottle.backend.clone(),
        grants: grants.clone(),
        cwd,
        state_root,
        dry_run: args.dry_run,
        slug: args.slug,
        pipelock,
        pipelock_note,
        protected,
    };
    let config_dir = bottle::paths::config_dir();
    // Before anything is written: a run the user declines leaves nothing behind.
    if !args.dry_run {
        consent::ensure(
            &req.manifest,
            &grants,
            config_dir.as_deref(),
            config_dir.as_deref().map(consent::Store::new).as_ref(),
            if args.bottle.yes {
                consent::Answer::Yes
            } else {
                consent::Answer::Ask
            },
        )?;
    }
    // Plugins run here, before any async runtime exists (their WASI host blocks).
    let plugins = load_all(&args.bottle.plugins)?;
    let prepared = launch::prepare(&plugins, &req)?;
    if args.dry_run {
        if args.json {
            let out = serde_json::json!({
                "slug": prepared.slug,
                "state_dir": prepared.state_dir,
                "metadata": prepared.metadata,
                "plan": prepared.plan,
            });
            print!("{}", bottle::state::pretty_json(&out));
        } else {
            print!("{}", launch::summary(&prepared));
            print!(
                "  asks for:\n{}",
                consent::report(&prepared.manifest, &grants)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = LaunchOptions {
        command: (!args.command.is_empty()).then_some(args.command),
        keep_state: args.bottle.keep_state,
        health_timeout: Duration::from_secs(args.bottle.health_timeout),
        base_image,
        verify: mode,
    };
    eprintln!(
        "bottle {}: starting (state {}); firewall: {}",
        prepared.slug,
        prepared.state_dir.display(),
        prepared.firewall()
    );
    eprintln!("bottle {}: agent: {}", prepared.slug, prepared.confinement);
    let rt = runtime()?;
    let result = rt.block_on(lifecycle::launch(&prepared, &opts));
    // The stdin pump may still be parked in a blocking read; do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(outcome)
            if outcome
                .report
                .as_ref()
                .is_some_and(|r| mode == Mode::Only || !r.held()) =>
        {
            let report = outcome.report.expect("checked above");
            if json {
                print!("{}", bottle::state::pretty_json(&report));
            } else {
                print!("{}", report.lines());
            }
            if mode == Mode::First {
                eprintln!(
                    "bottle {}: {} probe(s) escaped; not handing over the terminal (logs in {})",
                    prepared.slug,
                    report.failures(),
                    outcome.log_file.display()
                );
            }
            Ok(if report.held() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Ok(outcome) => {
            eprintln!(
                "bottle {}: agent exited with {}; logs in {}",
                prepared.slug,
                outcome.exit_code,
                outcome.log_file.display()
            );
            // An exit code Docker could not tell (-1) is a failure, never a success.
            Ok(ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1)))
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "bottle {}: state kept in {}",
                prepared.slug,
                prepared.state_dir.display()
            );
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
