//! Command-line arguments, turned into typed requests early, and the commands themselves.

use anyhow::{Context, Result};
use bottle::launch::{self, RunRequest};
use bottle::plugin::{self, Cache, LoadedPlugin, PluginHost, PluginSet, PluginSource};
use bottle::policy::{Grant, Grants};
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run an AI coding agent in a box it cannot talk its way out of.
#[derive(Debug, Parser)]
#[command(name = "bottle", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). `RUST_LOG` overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an agent in a bottle (with --dry-run: only plan it and write the state dir).
    Run(RunArgs),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List the built-in plugins and those in --plugin-dir.
    List {
        #[command(flatten)]
        plugins: PluginArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load, verify and trial-instantiate plugin files; print what each declares.
    Check {
        /// `.wasm` component files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Agent name (looked up in ./agents/ and the user's config dir) or manifest path.
    agent: String,
    /// Plan only: run every plugin, write the state dir, start nothing, mint no key.
    #[arg(long)]
    dry_run: bool,
    /// Print the full plan as JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Use this backend plugin instead of the manifest's.
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// Grant a plugin a capability: NAME=GRANT (privileged, docker-socket, cap-add:CAP,
    /// host-path:/PATH, publish:PORT). Repeatable.
    #[arg(long = "grant", value_name = "NAME=GRANT", value_parser = parse_grant)]
    grants: Vec<(String, Grant)>,
    /// The host dir the agent works on (default: the current dir).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    #[command(flatten)]
    plugins: PluginArgs,
    /// A one-off command instead of the agent's default.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_grant(s: &str) -> Result<(String, Grant), String> {
    let (name, grant) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write NAME=GRANT, e.g. hello=privileged"))?;
    Ok((name.to_owned(), grant.parse()?))
}

/// Where plugins come from.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// Add the `*.wasm` plugins in DIR; one named like a built-in replaces it. Repeatable.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
}

/// Set up `tracing` from -v/-q, unless `RUST_LOG` is set.
pub fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run_agent(args),
        Command::Plugins(PluginsCommand::List { plugins, json }) => plugins_list(&plugins, json),
        Command::Plugins(PluginsCommand::Check { paths }) => plugins_check(&paths),
    }
}

fn host() -> PluginHost {
    PluginHost::new(Cache::user_default(), plugin::Limits::default())
}

fn load_all(args: &PluginArgs) -> Result<(PluginHost, PluginSet)> {
    let host = host();
    let set = plugin::discover(&host, &args.plugin_dirs)?;
    for o in set.overrides() {
        eprintln!(
            "note: plugin `{}` from {} replaces the built-in one",
            o.name, o.by
        );
    }
    Ok((host, set))
}

fn record(p: &LoadedPlugin) -> serde_json::Value {
    serde_json::json!({
        "name": p.name(),
        "kind": p.info().kind,
        "version": p.info().version,
        "api": p.api_version().to_string(),
        "source": p.source().to_string(),
        "content_hash": p.content_hash(),
        "summary": p.info().summary,
    })
}

fn plugins_list(args: &PluginArgs, json: bool) -> Result<ExitCode> {
    let (_, set) = load_all(args)?;
    if json {
        let all: Vec<_> = set.all().iter().map(record).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14} {:<8} {:<6} {:<28} {:<14} SUMMARY",
        "NAME", "KIND", "API", "SOURCE", "HASH"
    );
    for p in set.all() {
        println!(
            "{:<14} {:<8} {:<6} {:<28} {:<14} {}",
            p.name(),
            p.info().kind,
            p.api_version(),
            p.source().to_string(),
            &p.content_hash()[..12],
            p.info().summary
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn plugins_check(paths: &[PathBuf]) -> Result<ExitCode> {
    let host = host();
    let mut failed = 0;
    for path in paths {
        let source = PluginSource::File(path.clone());
        let loaded = std::fs::read(path)
            .with_context(|| format!("{}: cannot read plugin", path.display()))
            .and_then(|bytes| Ok(host.load(source, &bytes, None)?));
        match loaded {
            Ok(p) => {
                println!("ok {}", path.display());
                println!("  name:    {}", p.name());
                println!("  kind:    {}", p.info().kind);
                println!("  version: {}", p.info().version);
                println!("  api:     {}", p.api_version());
                println!("  hash:    {}", p.content_hash());
                println!("  summary: {}", p.info().summary);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_agent(args: RunArgs) -> Result<ExitCode> {
    let project_dir = std::env::current_dir().context("cannot read the current dir")?;
    let manifest = bottle::manifest::find(&args.agent, &project_dir).map_err(anyhow::Error::msg)?;
    let mut grants = Grants::default();
    for (plugin, grant) in args.grants {
        grants.add(&plugin, grant);
    }
    let cwd = match args.cwd {
        Some(d) => d
            .canonicalize()
            .with_context(|| format!("--cwd {}: no such dir", d.display()))?,
        None => project_dir,
    };
    let req = RunRequest {
        manifest,
        backend: args.backend,
        grants,
        cwd,
        state_root: launch::default_state_root().map_err(anyhow::Error::msg)?,
        dry_run: args.dry_run,
    };
    let (_, plugins) = load_all(&args.plugins)?;
    if !args.dry_run {
        anyhow::bail!(
            "starting bottles is not built yet (it comes with the Docker lifecycle); use `bottle run {} --dry-run` to plan one",
            args.agent
        );
    }
    let prepared = launch::prepare(&plugins, &req)?;
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
    }
    Ok(ExitCode::SUCCESS)
}
