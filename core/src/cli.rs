//! Command-line arguments, turned into typed requests early, and the commands themselves.

mod approvals;
mod audit;
mod drivers;
mod manage;
mod plugins;
mod run;

use anyhow::Result;
use bottle::hostenv::HostEnv;
use bottle::plan::policy::Grant;
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
    /// Start an agent in a bottle and attach to it (with --dry-run: only plan it).
    Run(RunArgs),
    /// Bring an agent's bottle up, try every way out of it from inside (as the agent), and
    /// print PASS/FAIL per probe; exits 1 if anything escaped.
    Verify(VerifyArgs),
    /// List running bottles.
    Ps {
        #[command(flatten)]
        drivers: DriverDirs,
    },
    /// Show a bottle's logs (live ones from Docker, else the kept compose.log).
    Logs {
        /// The bottle's slug.
        slug: String,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        drivers: DriverDirs,
    },
    /// Stop a bottle: logs to compose.log, then every container, network and machine removed.
    Stop {
        /// The bottle's slug.
        slug: String,
        #[command(flatten)]
        drivers: DriverDirs,
    },
    /// Remove every bottle's containers, networks, volumes and machines and orphan state dirs.
    Cleanup {
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        drivers: DriverDirs,
    },
    /// List what agents asked supervise for (open requests first).
    Approvals {
        /// Only this bottle's.
        #[arg(value_parser = parse_slug)]
        slug: Option<String>,
        /// Print JSON (every request, with its decision).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Keep watching: print each new request and decision as it comes.
        #[arg(long)]
        watch: bool,
    },
    /// Grant an agent's request and apply it to its running bottle at once (no restart).
    Approve {
        /// The request's id (`bottle approvals` lists them), or SLUG/ID when two bottles
        /// share it.
        id: String,
        /// Grant only this path prefix on the host (e.g. `/simple/`), with no credential.
        #[arg(long, value_name = "PREFIX")]
        path_prefix: Option<String>,
        /// Also grant it in later runs of this manifest (kept in the config dir's
        /// `approved/<agent>-<digest>.yaml`).
        #[arg(long)]
        persist: bool,
        /// End the grant after this long (`90s`, `10m`, `2h`); egress refuses it from then on.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        for_duration: Option<std::time::Duration>,
        /// End the grant after this many requests through it (this run only).
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
        /// A note the agent sees.
        #[arg(long, default_value = "")]
        note: String,
        /// Grant what is shown without asking (for scripts; without a terminal, bottle
        /// refuses to grant otherwise).
        #[arg(long)]
        yes: bool,
    },
    /// Watch every running bottle's requests in a terminal UI, and approve or reject them.
    Dashboard,
    /// Refuse an agent's request; the agent sees the note.
    Reject {
        /// The request's id (`bottle approvals` lists them).
        id: String,
        /// Why, or what to do instead.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Build the images bottle needs.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Inspect native drivers.
    #[command(subcommand)]
    Drivers(DriversCommand),
    /// A bottle's audit ledger: what was decided, signed so no one can quietly edit it
    /// (`bottle audit SLUG` shows it).
    Audit(AuditArgs),
}

/// `bottle audit`: a subcommand, or a bottle whose ledger to show.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    show: ShowArgs,
}

/// What `bottle audit show` shows.
#[derive(Debug, Args)]
struct ShowArgs {
    /// The bottle's slug, or a ledger file.
    target: Option<String>,
    /// Print the records as JSON lines.
    #[arg(long)]
    json: bool,
    /// Only records with this decision (`block`, `allow`).
    #[arg(long)]
    decision: Option<String>,
    /// Only records from this time on (RFC 3339, e.g. `2026-12-05T10:00:00Z`).
    #[arg(long, value_parser = parse_rfc3339)]
    since: Option<time::OffsetDateTime>,
}

/// A `--since` time.
fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-12-05T10:00:00Z ({e})"))
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Show a bottle's ledger (a running bottle's as of its last seal).
    Show(ShowArgs),
    /// Check a ledger's chain and signatures; exit 1 naming the first bad record.
    Verify {
        /// The bottle's slug, or a ledger file.
        target: String,
    },
    /// Write a bottle's ledger for a SIEM, one event per line (only a ledger that verifies).
    Export {
        /// The bottle's slug, or a ledger file.
        target: String,
        /// The events' schema: `ocsf` (OCSF 1.3 JSON lines).
        #[arg(long, value_parser = ["ocsf"])]
        format: String,
    },
    /// Print the public half of your audit key (made on first use).
    Key,
}

#[derive(Debug, Subcommand)]
enum DriversCommand {
    /// List the driver files bottle would load, each with why it is trusted or refused.
    List {
        #[command(flatten)]
        drivers: DriverDirs,
    },
    /// Load native driver files as `bottle run` would (dir, pin, ABI) and print what each says.
    Check {
        /// `libbottle_driver_NAME.so` files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A dir drivers may load from, besides bottle's install dir. Repeatable.
        #[arg(long = "driver-dir", value_name = "DIR")]
        driver_dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// Build the sidecar bundle image (bottle-sidecars:latest).
    Build {
        /// The base image (built offline by tests/images/build-base.sh).
        #[arg(long, default_value = bottle::run::docker::images::DEFAULT_BASE_IMAGE, env = "BOTTLE_BASE_IMAGE")]
        base: String,
    },
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

/// What `bottle run` and `bottle verify` share: which bottle, with what.
#[derive(Debug, Args)]
struct BottleArgs {
    /// Agent name (looked up in ./agents/ and the user's config dir) or manifest path.
    agent: String,
    /// Use this backend plugin instead of the manifest's.
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// Grant a plugin a capability: NAME=GRANT (privileged, docker-socket, cap-add:CAP,
    /// host-path:/PATH, publish:PORT, host-env:NAME, ...), or `agent=root` to run the agent
    /// as root. Repeatable.
    #[arg(long = "grant", value_name = "NAME=GRANT", value_parser = parse_grant)]
    grants: Vec<(String, Grant)>,
    /// The host dir the agent works on (default: the current dir).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Keep the state dir after a successful run (it is always kept after a failed one).
    #[arg(long)]
    keep_state: bool,
    /// Seconds to wait for the sidecars' health checks.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    health_timeout: u64,
    /// Run a manifest from outside your config dir without asking, when it is new or changed
    /// (for scripts; review it first with --dry-run).
    #[arg(short, long)]
    yes: bool,
    #[command(flatten)]
    drivers: DriverDirs,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// Where native drivers come from besides bottle's install dir and `BOTTLE_DRIVER_PATH`.
#[derive(Debug, Args)]
struct DriverDirs {
    /// Also load native drivers (`libbottle_driver_NAME.so`, pinned in drivers.yaml) from
    /// this dir. Repeatable.
    #[arg(long = "driver-dir", value_name = "DIR")]
    driver_dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    bottle: BottleArgs,
    /// Plan only: run every plugin, write the state dir, start nothing, mint no key.
    #[arg(long)]
    dry_run: bool,
    /// Print the full plan as JSON instead of the summary (with --dry-run).
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// Use this slug instead of minting one (it must not be in use: a kept state dir of that
    /// slug has to be removed first).
    #[arg(long, value_name = "SLUG", value_parser = parse_slug)]
    slug: Option<String>,
    /// Run the escape suite (`bottle verify`) first; attach only if nothing escaped.
    #[arg(long, conflicts_with = "dry_run")]
    verify: bool,
    /// A one-off command instead of the agent's default.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    bottle: BottleArgs,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

impl VerifyArgs {
    /// The launch `bottle verify` makes: a real run that stops after the suite.
    fn into_run(self) -> (RunArgs, bool) {
        let run = RunArgs {
            bottle: self.bottle,
            dry_run: false,
            json: false,
            slug: None,
            verify: false,
            command: Vec::new(),
        };
        (run, self.json)
    }
}

fn parse_grant(s: &str) -> Result<(String, Grant), String> {
    let (name, grant) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write NAME=GRANT, e.g. hello=privileged"))?;
    let grant: Grant = grant.parse()?;
    let root = grant.to_string() == "root";
    if root != (name == bottle::plan::policy::AGENT) {
        return Err(format!(
            "`{s}`: `root` is granted to the agent only, as `agent=root`, and the agent takes no other grant"
        ));
    }
    Ok((name.to_owned(), grant))
}

fn parse_slug(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("slugs are lower-case letters, digits and `-`".into())
    }
}

/// Where plugins come from.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// Add the `*.wasm` plugins in DIR; one named like a built-in replaces it. Repeatable.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
}

/// Third-party crates whose logs are capped at `info`, whatever the verbosity: their debug
/// output can carry secret values.
const THIRD_PARTY_CAPS: [&str; 6] = [
    "bollard=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "hyperlocal=info",
    "rustls=info",
];

/// Set up `tracing` from -v/-q, unless `RUST_LOG` is set.
pub fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Capped at every verbosity, `RUST_LOG` included: bollard's debug log prints container
    // bodies (secret env values among them), and the HTTP crates below it print headers.
    for quiet in THIRD_PARTY_CAPS {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// A runtime for the Docker-facing commands (plugins run before it, outside async code).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // The one read of the process env; everything below gets what it needs from this.
    let env = HostEnv::from_process();
    match cli.command {
        Command::Run(args) => {
            let mode = if args.verify {
                bottle::run::verify::Mode::First
            } else {
                bottle::run::verify::Mode::Off
            };
            run::run(&env, args, mode, false)
        }
        Command::Verify(args) => {
            let (args, json) = args.into_run();
            run::run(&env, args, bottle::run::verify::Mode::Only, json)
        }
        Command::Ps { drivers } => manage::ps(&env, &drivers.driver_dirs),
        Command::Logs {
            slug,
            follow,
            drivers,
        } => manage::logs(&env, &slug, follow, &drivers.driver_dirs),
        Command::Stop { slug, drivers } => manage::stop(&env, &slug, &drivers.driver_dirs),
        Command::Cleanup {
            yes,
            dry_run,
            drivers,
        } => manage::cleanup(&env, yes, dry_run, &drivers.driver_dirs),
        Command::Approvals { slug, json, watch } => {
            approvals::list(&env, slug.as_deref(), json, watch)
        }
        Command::Approve {
            id,
            path_prefix,
            persist,
            for_duration,
            uses,
            note,
            yes,
        } => approvals::approve(
            &env,
            &id,
            bottle::live::requests::ApproveOptions {
                path_prefix,
                persist,
                note,
                shown: None,
                for_duration,
                uses,
                by: "bottle approve".into(),
            },
            yes,
        ),
        Command::Reject { id, note } => approvals::reject(&env, &id, &note),
        Command::Dashboard => approvals::dashboard(&env),
        Command::Images(ImagesCommand::Build { base }) => manage::build_images(&env, &base),
        Command::Plugins(PluginsCommand::List { plugins, json }) => {
            plugins::list(&env, &plugins, json)
        }
        Command::Plugins(PluginsCommand::Check { paths }) => plugins::check(&env, &paths),
        Command::Audit(AuditArgs { command, show }) => match command {
            None | Some(AuditCommand::Show(_)) => {
                let show = match command {
                    Some(AuditCommand::Show(s)) => s,
                    _ => show,
                };
                let target = anyhow::Context::context(
                    show.target,
                    "give the bottle's slug (`bottle ps`, or the names in the state dir's logs/) or a ledger file",
                )?;
                audit::show(
                    &env,
                    &target,
                    show.json,
                    show.decision.as_deref(),
                    show.since,
                )
            }
            Some(AuditCommand::Verify { target }) => audit::verify(&env, &target),
            Some(AuditCommand::Export { target, format: _ }) => audit::export(&env, &target),
            Some(AuditCommand::Key) => audit::key(&env),
        },
        Command::Drivers(DriversCommand::List { drivers }) => {
            drivers::list(&env, &drivers.driver_dirs)
        }
        Command::Drivers(DriversCommand::Check { paths, driver_dirs }) => {
            drivers::check(&env, &paths, &driver_dirs)
        }
    }
}
