//! `bottle-git-gate`: the command line. Run as `pre-receive` (the hook's name, by symlink, or
//! the `pre-receive` subcommand) it is the hook; otherwise the daemon. A start-up problem is
//! one line on stderr and exit code 2.

use bottle_git_gate::{Gate, Settings, health_check, hook, log::Record, server};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Where the bundle image keeps the hook (root-owned, read-only to the daemon).
const DEFAULT_HOOKS: &str = "/usr/local/lib/bottle-git-gate/hooks";

/// bottle's git-gate: the agent's only git remote.
#[derive(Debug, Parser)]
#[command(name = "bottle-git-gate", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// `gate.yaml`, as the git-gate plugin renders it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen on 0.0.0.0:PORT (the bundle's way).
    #[arg(long, conflicts_with = "listen")]
    port: Option<u16>,
    /// Listen on ADDR (`127.0.0.1:0` for a free port; the start line says which).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where mirrors live; a fresh private temp dir when not given.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The dir holding the `pre-receive` hook.
    #[arg(long, default_value = DEFAULT_HOOKS)]
    hooks: PathBuf,
    /// Connections served at once.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when the gate at ADDR accepts connections (the bundle's ready check).
    Health {
        /// `127.0.0.1:9418`.
        addr: String,
    },
    /// Run as receive-pack's pre-receive hook.
    PreReceive,
}

fn main() -> ExitCode {
    let invoked_as_hook = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "pre-receive"));
    if invoked_as_hook {
        return code(hook::main());
    }
    let args = Args::parse();
    match &args.command {
        Some(Command::PreReceive) => return code(hook::main()),
        Some(Command::Health { addr }) => {
            return match health_check(addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bottle-git-gate: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bottle-git-gate: {e}");
            ExitCode::from(2)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

/// The env var holding the token every request path must start with (`/<token>/<name>.git`);
/// unset or empty, none is asked for.
const HOP_TOKEN_ENV: &str = "GIT_GATE_HOP_TOKEN";

fn run(args: Args) -> Result<(), String> {
    let config = args.config.ok_or("--config is required (see --help)")?;
    let listen = match (args.listen, args.port) {
        (Some(a), _) => a,
        (None, Some(p)) => SocketAddr::from(([0, 0, 0, 0], p)),
        (None, None) => return Err("give --port (or --listen ADDR)".into()),
    };
    let gate = Arc::new(
        Gate::new(Settings {
            config,
            hooks: args.hooks,
            state: args.state,
            max_connections: args.max_connections,
            hop: bottle_contract::hop::HopToken::from_env(HOP_TOKEN_ENV),
        })
        .map_err(|e| e.to_string())?,
    );
    let listener = server::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    // Watch for SIGHUP before saying we started: its default action would end the gate.
    // SIGTERM and SIGINT end it with a numbered `stop` line: the ledger then sees every line
    // before it, and a run of them the engine's log limit rotated away is a gap on record.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| format!("cannot watch for signals: {e}"))?;
    let mut start = Record::new("start");
    start.listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    start.repos = gate
        .config()
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    start.emit();
    let reloading = gate.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal != SIGHUP {
                Record::new("stop").emit();
                std::process::exit(0);
            }
            let mut r = Record::new("reload");
            match reloading.reload() {
                Ok(c) => r.repos = c.names().iter().map(|s| s.to_string()).collect(),
                Err(e) => {
                    r.outcome = "error";
                    r.reason = format!("{e}; still serving the previous config");
                }
            }
            r.emit();
        }
    });
    // The agent's own port, when it is on no network (`bottle_contract::handoff`).
    let mut handed = bottle_contract::handoff::inherited()?;
    if let Some((l, fd)) = handed.pop() {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        if l.port != port || !handed.is_empty() {
            return Err(format!(
                "the agent handed over {l}; git-gate serves {port}/tcp alone"
            ));
        }
        let agent = std::net::TcpListener::from(fd);
        let serving = gate.clone();
        std::thread::spawn(move || serving.serve(agent));
    }
    gate.serve(listener);
    Ok(())
}
