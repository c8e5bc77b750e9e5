//! `bottle-egress`: the command line. Flags become a checked [`bottle_egress::Settings`]
//! here; a start-up problem is one line on stderr and exit code 2, so `bottle run` can show
//! why the bundle never got healthy.

use bottle_egress::{Daemon, Settings, health_check, upstream::SYSTEM_ROOTS};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

// Every request allocates a few dozen small buffers (headers, TLS records, the log record);
// the bundle's programs are static musl, whose allocator made that a tenth of a keep-alive
// request's time (`benches/egress.sh`, one connection, http: 19.9k req/s with musl's, 21.2k
// with this one).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bottle's egress proxy: the agent's only way out.
#[derive(Debug, Parser)]
#[command(name = "bottle-egress", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (`0.0.0.0:9099` in the bundle, `127.0.0.1:PORT` on a host).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The route table (`routes.yaml`, as the egress plugin renders it).
    #[arg(long)]
    routes: Option<PathBuf>,
    /// The CA that signs the agent-facing certificates: key and certificate in one PEM.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The next proxy (`http://127.0.0.1:8888`, pipelock). Without it egress dials out itself.
    #[arg(long)]
    upstream: Option<String>,
    /// A CA upstream TLS trusts besides the system roots (repeatable).
    #[arg(long = "upstream-ca")]
    upstream_ca: Vec<PathBuf>,
    /// The system roots.
    #[arg(long, default_value = SYSTEM_ROOTS)]
    system_roots: PathBuf,
    /// `json` (one line per request) or `off`.
    #[arg(long, default_value = "json", value_parser = ["json", "off"])]
    access_log: String,
    /// Connections served at once, tunnels and WebSockets included while they are open.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Close a connection (tunnels and WebSockets too) after this many seconds with no byte
    /// either way.
    #[arg(long, default_value_t = 600)]
    idle_timeout_secs: u64,
    /// Close a connection once the agent has sent this many bytes through it.
    #[arg(long, default_value_t = 8 << 30)]
    max_bytes_per_connection: u64,
    /// Serve clients that ignore the proxy env: be the agent's DNS server and take TLS and
    /// HTTP straight from it, from the address this name resolves to (the agent's) alone.
    #[arg(long, value_name = "NAME")]
    agent_host: Option<String>,
    /// With --agent-host: the agent's DNS server (UDP).
    #[arg(long, default_value = "0.0.0.0:53")]
    direct_dns: SocketAddr,
    /// With --agent-host: TLS routed by the name the client sends.
    #[arg(long, default_value = "0.0.0.0:443")]
    direct_https: SocketAddr,
    /// With --agent-host: HTTP routed by `Host`.
    #[arg(long, default_value = "0.0.0.0:80")]
    direct_http: SocketAddr,
    /// Microseconds a worker about to sleep first polls its sockets (0: sleep at once; at most
    /// 1000).
    #[arg(
        long,
        default_value_t = bottle_egress::busy_poll::DEFAULT_WINDOW.as_micros() as u64,
        value_parser = clap::value_parser!(u64).range(0..=bottle_egress::busy_poll::MAX_WINDOW.as_micros() as u64),
    )]
    poll_before_sleep_us: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when the egress at ADDR answers `/health` (the bundle's ready check).
    Health {
        /// `127.0.0.1:9099`.
        addr: String,
    },
}

/// The env var holding the token the agent's side must present on every proxied request
/// (`Proxy-Authorization: Basic`, any user name); unset or empty, none is asked for.
const HOP_TOKEN_ENV: &str = "EGRESS_HOP_TOKEN";

fn settings(a: Args) -> Result<Settings, String> {
    let need = |name: &str| format!("--{name} is required (see --help)");
    let upstream = match a.upstream {
        None => None,
        Some(u) => {
            let uri: hyper::Uri = u
                .parse()
                .map_err(|_| format!("--upstream {u:?} is not a URL like http://127.0.0.1:8888"))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(format!(
                    "--upstream {u:?}: give the next proxy as http://host:port"
                ));
            }
            Some(uri)
        }
    };
    Ok(Settings {
        listen: a.listen.ok_or_else(|| need("listen"))?,
        routes: a.routes.ok_or_else(|| need("routes"))?,
        ca: a.ca.ok_or_else(|| need("ca"))?,
        upstream,
        upstream_ca: a.upstream_ca,
        system_roots: a.system_roots,
        access_log: a.access_log == "json",
        max_connections: a.max_connections.max(1),
        conn_limits: bottle_egress::conn::Limits {
            idle: std::time::Duration::from_secs(a.idle_timeout_secs.max(1)),
            max_bytes_in: a.max_bytes_per_connection.max(1),
        },
        hop_token: std::env::var(HOP_TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        direct: a
            .agent_host
            .map(|agent_host| bottle_egress::DirectSettings {
                dns: a.direct_dns,
                https: a.direct_https,
                http: a.direct_http,
                agent_host,
            }),
    })
}

fn main() -> std::process::ExitCode {
    // The tokens egress injects are in its env: not dumpable, its /proc/<pid>/environ and
    // memory are closed to the other daemons of the bundle (same user, no CAP_SYS_PTRACE).
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("bottle-egress: cannot close this process to the other daemons: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let args = Args::parse();
    if let Some(Command::Health { addr }) = &args.command {
        return match health_check(addr) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bottle-egress: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    bottle_egress::busy_poll::set_window(std::time::Duration::from_micros(
        args.poll_before_sleep_us,
    ));
    let fail = |e: String| {
        eprintln!("bottle-egress: {e}");
        std::process::ExitCode::from(2)
    };
    let settings = match settings(args) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(bottle_egress::busy_poll::before_sleep)
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(async {
        let daemon = match Daemon::start(settings).await {
            Ok(d) => d,
            Err(e) => return fail(e),
        };
        match daemon.run().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    });
    // The requests still open end with the runtime, each writing its line: out with them too.
    drop(runtime);
    bottle_egress::log::AccessLog::new(true).flush();
    code
}
