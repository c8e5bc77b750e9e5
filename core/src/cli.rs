//! Command-line arguments, turned into typed requests early, and the commands themselves.

use anyhow::{Context, Result};
use bottle::plugin::{self, Cache, LoadedPlugin, PluginHost, PluginSet, PluginSource};
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
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
        eprintln!("note: plugin `{}` from {} replaces the built-in one", o.name, o.by);
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
    println!("{:<14} {:<8} {:<6} {:<28} {:<14} SUMMARY", "NAME", "KIND", "API", "SOURCE", "HASH");
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
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
