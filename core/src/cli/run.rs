//! `bottle run`.

use super::{RunArgs, plugins::load_all, runtime};
use anyhow::{Context, Result};
use bottle::hostenv::HostEnv;
use bottle::plan::consent;
use bottle::plan::policy::Grants;
use bottle::plan::prepare::{self, RunRequest};
use bottle::run::launch::{self, LaunchOptions};
use bottle::run::runner;
use bottle::run::verify::Mode;
use std::process::ExitCode;
use std::time::Duration;

/// `bottle run` (and `bottle verify`, a run in [`Mode::Only`]); `json` prints the suite's
/// report as JSON.
pub(super) fn run(env: &HostEnv, args: RunArgs, mode: Mode, json: bool) -> Result<ExitCode> {
    let phases = std::sync::Arc::new(bottle::run::phases::Phases::default());
    // Read before anything is made: a bad value leaves nothing behind.
    let ledger_seal_every = match env.nonempty("BOTTLE_LEDGER_SEAL_SECS") {
        None => launch::LEDGER_SEAL_EVERY,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Duration::from_secs)
            .with_context(|| {
                format!(
                    "BOTTLE_LEDGER_SEAL_SECS={v}: give whole seconds, 1 or more (600 when unset)"
                )
            })?,
    };
    let project_dir = std::env::current_dir().context("cannot read the current dir")?;
    let config_dir = env.config_dir();
    let manifest_file =
        bottle::plan::manifest::find(&args.bottle.agent, &project_dir, config_dir.as_deref())?;
    let mut manifest = bottle::plan::manifest::load(&manifest_file, env)?;
    // Accesses the user approved with `bottle approve --persist` in earlier runs.
    let approved = match &config_dir {
        Some(dir) => {
            let file = bottle::live::granted::persisted_path(dir, &manifest_file);
            let by_name = bottle::live::granted::by_name_path(dir, &manifest.name);
            if by_name.is_file() && !file.exists() {
                eprintln!(
                    "note: {} holds approvals kept by agent name, which any project's manifest of that name would get; they are no longer laid over a manifest. If they were for {}, move the file to {}; else approve again with `--persist`",
                    by_name.display(),
                    manifest_file.display(),
                    file.display()
                );
            }
            let approved = bottle::live::granted::Approved::load(&file)?;
            let added = approved
                .apply(&mut manifest, std::time::SystemTime::now())
                .with_context(|| {
                    format!(
                        "{}: an approval kept there no longer fits {}; remove that entry",
                        file.display(),
                        manifest_file.display()
                    )
                })?;
            if !added.is_empty() {
                eprintln!(
                    "note: approved in earlier runs ({}): {}",
                    file.display(),
                    added.join(", ")
                );
            }
            approved
        }
        None => bottle::live::granted::Approved::default(),
    };
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
    let base_image = env
        .nonempty("BOTTLE_BASE_IMAGE")
        .unwrap_or(bottle::run::docker::images::DEFAULT_BASE_IMAGE)
        .to_owned();
    // Decided before planning, so the plan is what will run: no pipelock in the bundle means
    // egress dials out itself.
    let pipelock_override = env.nonempty("BOTTLE_PIPELOCK");
    let (pipelock, pipelock_note) = {
        let rt = runtime()?;
        let fact = rt.block_on(bottle::run::driver::docker::pipelock_in_bundle(
            args.dry_run,
            &base_image,
            pipelock_override,
            env,
        ));
        rt.shutdown_background();
        fact?
    };
    let state_root = prepare::default_state_root(env).map_err(anyhow::Error::msg)?;
    let socket = env
        .docker_socket()
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let protected = bottle::plan::workdir::protected_dirs(
        env.home().as_deref(),
        Some(&state_root),
        env.cache_dir().as_deref(),
        config_dir.as_deref(),
        bottle::run::driver::install_dir()
            .as_ref()
            .map(|i| i.dir.as_path()),
        std::path::Path::new(&socket),
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
        docker_socket: env.docker_socket(),
        plugin_dirs: args.bottle.plugins.plugin_dirs.clone(),
        approved,
    };
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
    // The driver is checked before anything is written: a backend that cannot start here
    // (no driver, or one the user has not pinned) fails with nothing left behind.
    // bottle's own settings (its address pool), read before anything is written.
    let config = if args.dry_run {
        bottle::config::BottleConfig::default()
    } else {
        bottle::config::BottleConfig::load(env.config_dir().as_deref())?
    };
    let driver = if args.dry_run {
        None
    } else {
        let backend = req
            .backend
            .clone()
            .unwrap_or_else(|| req.manifest.backend.clone());
        let policy = bottle::run::driver::policy(env, &args.bottle.drivers.driver_dirs)?;
        let driver = bottle::run::driver::Kind::for_backend(&backend, &policy)?;
        if let bottle::run::driver::Kind::Native(_) = driver
            && let Some(why) =
                bottle::run::driver::adapter::natively_unsupported(req.manifest.cwd, &backend)
        {
            anyhow::bail!("{}: {why}", req.manifest.file.display());
        }
        Some(driver)
    };
    // Plugins run here, before any async runtime exists (their WASI host blocks).
    let plugins = load_all(env, &args.bottle.plugins)?;
    phases.done("manifest, driver and plugins loaded");
    let prepared = prepare::prepare(&plugins, &req)?;
    phases.done("planned (state dir written)");
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
            print!("{}", prepare::summary(&prepared));
            print!(
                "  asks for:\n{}",
                consent::report(&prepared.manifest, &grants)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let driver = driver.expect("set for every run but a dry one");
    if let bottle::run::driver::Kind::Manifests = driver {
        return hand_off(&prepared);
    }
    let opts = LaunchOptions {
        command: (!args.command.is_empty()).then_some(args.command),
        keep_state: args.bottle.keep_state,
        health_timeout: Duration::from_secs(args.bottle.health_timeout),
        base_image,
        verify: mode,
        env: env.clone(),
        phases,
        ledger_seal_every,
        config,
    };
    eprintln!(
        "bottle {}: starting (state {}); firewall: {}",
        prepared.slug,
        prepared.state_dir.display(),
        prepared.firewall()
    );
    eprintln!("bottle {}: agent: {}", prepared.slug, prepared.confinement);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let driver = driver.connect(env).await?;
        runner::launch(&prepared, &opts, driver.as_ref()).await
    });
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
            eprintln!("error: {}", bottle_contract::terminal::safe(&e.to_string()));
            eprintln!(
                "bottle {}: state kept in {}",
                prepared.slug,
                prepared.state_dir.display()
            );
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// A backend with no live engine (Kubernetes): complete the manifests, say how to apply them.
fn hand_off(p: &prepare::Prepared) -> Result<ExitCode> {
    use bottle::run::driver::manifests::{Credential, CredentialSource};
    p.mint_keys()?;
    // The run's hop token: in the agent's files (which become Secrets) and in a private file
    // the credentials Secret is made from; never in argv.
    let hop = bottle::run::launch::mint_hop_token()?;
    p.fill_hop_token(Some(&hop))?;
    let hop_file = p.state_dir.join("kubernetes/hop-token");
    bottle::live::apply::write_whole(&hop_file, hop.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", hop_file.display()))?;
    let stack = &p.plan.stack;
    let from_file = |key: &str| Credential {
        key: key.to_owned(),
        from: CredentialSource::File(hop_file.clone()),
    };
    let credentials: Vec<_> = stack
        .agent
        .secret_env
        .iter()
        .map(|n| Credential {
            key: n.clone(),
            from: CredentialSource::Env(n.clone()),
        })
        .chain(stack.bundle_secrets.iter().map(|s| {
            if s.from_host_env == bottle_contract::names::HOP_TOKEN_HOST_ENV {
                from_file(&s.name)
            } else {
                Credential {
                    key: s.name.clone(),
                    from: CredentialSource::Env(s.from_host_env.clone()),
                }
            }
        }))
        .chain(
            (!stack.bundle.is_empty())
                .then(|| from_file(bottle_contract::names::HOP_TOKEN_HOST_ENV)),
        )
        .collect();
    let h = bottle::run::driver::manifests::hand_off(&p.state_dir, &p.slug, &credentials)?;
    eprintln!(
        "bottle {}: the {} backend has no driver for a live cluster here; its manifests are in {} (the state dir holds the bottle's CA keys: keep it private)",
        p.slug,
        p.plan.backend,
        h.file.display()
    );
    if let Some(c) = &h.credentials {
        eprintln!("create its credentials Secret once (values from your env):\n  {c}");
    }
    eprintln!("apply them with:\n  {}", h.apply);
    Ok(ExitCode::SUCCESS)
}
