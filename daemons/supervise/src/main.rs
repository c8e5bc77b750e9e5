//! `bottle-supervise`: the command line. A start-up problem is one line on stderr and exit 2.

use bottle_supervise::health_check;
use bottle_supervise::queue::Queue;
use bottle_supervise::tools::{State, Supervise, emit, now};
use clap::{Parser, Subcommand};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// bottle's supervise: the agent asks, a human answers from the host.
#[derive(Debug, Parser)]
#[command(name = "bottle-supervise", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (`0.0.0.0:9100` in the bundle).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The queue dir shared with the host.
    #[arg(long)]
    queue: Option<PathBuf>,
    /// Seconds a call waits for the human before answering `pending` (at most 45).
    #[arg(long, default_value_t = 20)]
    wait_secs: u64,
    /// Requests that may wait at once.
    #[arg(long, default_value_t = 20)]
    max_open: usize,
    /// Requests the agent may make per minute.
    #[arg(long, default_value_t = bottle_supervise::tools::PER_MINUTE)]
    per_minute: usize,
    /// egress's address, for `list_access`.
    #[arg(long, default_value = "127.0.0.1:9099")]
    egress: String,
    /// Another `Host` header value to accept (repeatable); `supervise`, `supervise:9100` and
    /// loopback are always accepted.
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when supervise at ADDR accepts connections (the bundle's ready check).
    Health {
        /// `127.0.0.1:9100`.
        addr: String,
    },
}

/// The env var holding the token every request must carry as `Authorization: Bearer`; unset
/// or empty, none is asked for ([`bottle_contract::hop`]).
const HOP_TOKEN_ENV: &str = "SUPERVISE_HOP_TOKEN";

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Health { addr }) = &args.command {
        return match health_check(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bottle-supervise: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bottle-supervise: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bottle-supervise: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let listen = args.listen.ok_or("--listen is required (see --help)")?;
    let queue_dir = args.queue.ok_or("--queue is required (see --help)")?;
    let queue = Queue::open(&queue_dir)
        .map_err(|e| format!("cannot use the queue dir {}: {e}", queue_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let state = Arc::new(State {
        queue,
        wait: Duration::from_secs(args.wait_secs.min(45)),
        max_open: args.max_open.max(1),
        egress: Some(args.egress),
        hop_token: std::env::var(HOP_TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        per_minute: args.per_minute.max(1),
        recent: Default::default(),
    });
    let mut config = StreamableHttpServerConfig::default();
    let mut hosts: Vec<String> = ["supervise", "localhost", "127.0.0.1", "::1", "[::1]"]
        .map(String::from)
        .into();
    hosts.push(format!("supervise:{}", bottle_contract::ports::SUPERVISE));
    hosts.push(format!("127.0.0.1:{}", bound.port()));
    hosts.push(format!("localhost:{}", bound.port()));
    hosts.extend(args.allowed_hosts);
    // Where the agent names the bundle by an address it cannot learn for itself (Kubernetes:
    // the Service's), the backend says which.
    if let Some(address) = std::env::var(bottle_contract::names::BUNDLE_ADDRESS_ENV)
        .ok()
        .filter(|a| !a.is_empty())
    {
        hosts.push(format!("{address}:{}", bound.port()));
        hosts.push(address);
    }
    // The gate checks `Host` (and the hop token) before rmcp sees a request; rmcp's own list
    // cannot take the connection's address, so it is left empty (every host).
    let gate = Arc::new(bottle_supervise::gate::Gate::new(
        &hosts,
        bottle_contract::hop::HopToken::from_env(HOP_TOKEN_ENV),
    ));
    config.allowed_hosts = Vec::new();
    config.max_request_body_bytes = 64 << 10;
    let service = Arc::new(StreamableHttpService::new(
        move || Ok(Supervise::new(state.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    ));
    emit(
        &serde_json::json!({ "time": now(), "op": "start", "listen": bound.to_string(), "outcome": "ok" }),
    );
    // The agent's own port, when it is on no network (`bottle_contract::handoff`).
    let mut handed = bottle_contract::handoff::inherited()?;
    if let Some((l, fd)) = handed.pop() {
        if l.port != bound.port() || !handed.is_empty() {
            return Err(format!(
                "the agent handed over {l}; supervise serves {}/tcp alone",
                bound.port()
            ));
        }
        let agent = std::net::TcpListener::from(fd);
        agent.set_nonblocking(true).map_err(|e| e.to_string())?;
        let agent = tokio::net::TcpListener::from_std(agent).map_err(|e| e.to_string())?;
        tokio::spawn(serve(agent, service.clone(), gate.clone()));
    }
    serve(listener, service, gate).await;
    Ok(())
}

/// Serve MCP on `listener` for as long as supervise runs.
async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<StreamableHttpService<Supervise, LocalSessionManager>>,
    gate: Arc<bottle_supervise::gate::Gate>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Mostly out of descriptors: the same call fails at once until one closes.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let service = service.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let service = service.clone();
                let checked = gate.check(local, request.headers());
                async move {
                    Ok::<_, std::convert::Infallible>(match checked {
                        Ok(()) => service.handle(request).await,
                        Err(refusal) => bottle_supervise::gate::refusal_response(refusal),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
