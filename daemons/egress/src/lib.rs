//! `bottle-egress`: the agent's only way out of a bottle.
//!
//! A forward proxy (absolute-form HTTP and CONNECT, HTTP/1.1 and HTTP/2) that intercepts TLS
//! with the bottle's egress CA and decides every request by the route table the egress plugin
//! renders (`routes.yaml`): no route, no way out. It strips the agent's `Authorization` and
//! injects the real credential on the routes that carry one, refuses git push over HTTPS,
//! scans URLs, headers and bodies for secrets (`bottle-dlp`), and, when no pipelock stands
//! behind it, guards against names that resolve inside (SSRF). SIGHUP reloads the routes:
//! the whole file is validated, then swapped; a bad file keeps the old table.
//!
//! Module map: [`routes`] (the table, the path and request rules), [`forge`] (what a
//! credential on a forge's API may not do by default), [`guard`] (inside addresses),
//! [`ca`] (leaf certificates), [`upstream`] (dialling out and TLS trust), [`conn`] (one
//! agent connection's slot, idle timeout and byte cap), [`proxy`] (the pipeline), [`body`]
//! (streaming scans), [`log`] (the access log).

pub mod body;
pub mod ca;
pub mod conn;
pub mod cookies;
pub mod dlp;
pub mod forge;
pub mod guard;
pub mod inspect;
pub mod log;
pub mod proxy;
pub mod routes;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upstream;
pub mod ws;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::{Active, Proxy};
use routes::RouteTable;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything the daemon runs with, parsed from its flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `routes.yaml`.
    pub routes: PathBuf,
    /// The CA bundle (key and certificate in one PEM).
    pub ca: PathBuf,
    /// The next proxy (pipelock), if any; without one egress dials out itself.
    pub upstream: Option<hyper::Uri>,
    /// Extra CAs upstream TLS trusts.
    pub upstream_ca: Vec<PathBuf>,
    /// The system roots upstream TLS trusts.
    pub system_roots: PathBuf,
    /// Write the access log.
    pub access_log: bool,
    /// Connections served at once, tunnels and WebSockets included for as long as they are
    /// open; more are answered 503 and closed.
    pub max_connections: usize,
    /// The idle timeout and byte cap of each connection.
    pub conn_limits: conn::Limits,
    /// The token every proxied request must carry (see [`proxy::HopToken`]), when the port is
    /// reachable from outside the bottle (a published port).
    pub hop_token: Option<String>,
}

/// A daemon ready to serve: config loaded and checked, port bound.
pub struct Daemon {
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    settings: Settings,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Daemon {
    /// Load everything and bind; any problem is one line naming the file and what is wrong.
    pub async fn start(settings: Settings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let table = RouteTable::load(&settings.routes, &env_var).map_err(|e| e.to_string())?;
        let ca = ca::Authority::load(&settings.ca, provider.clone())?;
        let tls = upstream::client_tls(provider, &settings.system_roots, &settings.upstream_ca)?;
        let dialer = upstream::Dialer::new(settings.upstream.as_ref(), &table.hosts)
            .map_err(|e| format!("{}: {e}", settings.routes.display()))?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        let log = log::AccessLog::new(settings.access_log);
        let proxy = Arc::new(Proxy {
            active: ArcSwap::from_pointee(Active::new(table)),
            ca,
            upstream: upstream::Upstream::new(dialer, tls),
            log,
            hop: settings.hop_token.as_deref().map(proxy::HopToken::new),
            cookies: cookies::IssuedCookies::default(),
        });
        Ok(Daemon {
            proxy,
            listener,
            settings,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// One line saying what this egress is.
    pub fn describe(&self) -> String {
        let active = self.proxy.active.load();
        let mode = match &self.settings.upstream {
            Some(u) => format!("chained to {u} (both layers apply)"),
            None => {
                "dialling out itself: egress is the whole firewall (SSRF guard and DLP on)".into()
            }
        };
        let addr = self
            .listener
            .local_addr()
            .map_or(self.settings.listen.to_string(), |a| a.to_string());
        format!(
            "listening on {addr}, {} routes (config sha256 {}), {mode}",
            active.table.routes.len(),
            &active.table.sha256[..12]
        )
    }

    /// Re-read the routes file; a bad one keeps the old table. Returns the log message.
    pub fn reload(&self) -> Result<String, String> {
        let table = RouteTable::load(&self.settings.routes, &env_var).map_err(|e| e.to_string())?;
        self.proxy
            .upstream
            .dialer
            .set_hosts(&table.hosts)
            .map_err(|e| format!("{}: {e}", self.settings.routes.display()))?;
        let msg = format!(
            "reloaded {}: {} routes, config sha256 {}",
            self.settings.routes.display(),
            table.routes.len(),
            table.sha256
        );
        self.proxy.active.store(Arc::new(Active::new(table)));
        Ok(msg)
    }

    /// Serve until SIGTERM or SIGINT; SIGHUP reloads.
    pub async fn run(self) -> Result<(), String> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let log = self.proxy.log.clone();
        log.event("start", &self.describe());
        let max = self.settings.max_connections;
        let slots = Arc::new(tokio::sync::Semaphore::new(max));
        let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE));
        loop {
            tokio::select! {
                _ = hup.recv() => match self.reload() {
                    Ok(m) => log.event("reload", &m),
                    Err(e) => log.event("reload-failed", &format!("{e}; the previous routes stay in force")),
                },
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                accepted = self.listener.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Full: a short answer saying so, then close; queueing would let a
                        // flood hold everyone else's connections hostage. The answers are
                        // bounded too: past them, a connection is just closed.
                        if let Ok(answering) = refusals.clone().try_acquire_owned() {
                            log.event("connection-limit", "refused a connection: every slot is taken");
                            tokio::spawn(async move {
                                refuse_full(stream, max).await;
                                drop(answering);
                            });
                        }
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let proxy = self.proxy.clone();
                    // The slot lives in the connection: an upgraded tunnel or WebSocket keeps it.
                    let conn = conn::Conn::new(stream, slot, self.settings.conn_limits);
                    tokio::spawn(serve_connection(proxy, conn));
                }
            }
        }
    }
}

/// Connections over the limit answered at once; more are closed without a word.
const REFUSALS_AT_ONCE: usize = 64;

/// Tell a connection over the limit why, then close it; a peer that does not read is dropped.
async fn refuse_full(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt as _;
    let answer = conn::full_answer(max);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(proxy: Arc<Proxy>, stream: conn::Conn<tokio::net::TcpStream>) {
    let service = hyper::service::service_fn(move |req| proxy.clone().serve_outer(req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(64 * 1024);
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

/// `bottle-egress health ADDR`: exit 0 when `GET /health` answers 200 within 2 s.
pub fn health_check(addr: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr} is not an address (host:port)"))?;
    let timeout = Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("egress is not listening on {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: egress\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .map_err(|e| format!("no answer: {e}"))?;
    if &head[..] == b"HTTP/1.1 200" {
        Ok(())
    } else {
        Err(format!("unhealthy: {}", String::from_utf8_lossy(&head)))
    }
}
