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
//! With `--agent-host`, clients that ignore the proxy env get out the same way: egress is the
//! agent's DNS server and takes TLS on 443 and HTTP on 80 from the agent ([`direct`]).
//!
//! Module map: [`routes`] (the table, the path and request rules), [`forge`] (what a
//! credential on a forge's API may not do by default), [`guard`] (inside addresses),
//! [`ca`] (leaf certificates), [`upstream`] (dialling out and TLS trust), [`conn`] (one
//! agent connection's slot, idle timeout and byte cap), [`proxy`] (the pipeline), [`body`]
//! (streaming scans), [`log`] (the access log).

pub mod body;
pub mod busy_poll;
pub mod ca;
pub mod conn;
pub mod cookies;
pub mod direct;
pub mod dlp;
pub mod forge;
pub mod grants;
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
use bottle_contract::handoff::{Listener, Proto};
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
    /// The agent's resolver and the ports for clients that ignore the proxy env, if served.
    pub direct: Option<DirectSettings>,
}

/// Where egress serves clients that ignore the proxy env ([`direct`]), and whom.
#[derive(Debug, Clone)]
pub struct DirectSettings {
    /// The agent's DNS server (UDP), port 53 in the bundle.
    pub dns: SocketAddr,
    /// TLS routed by its server name, port 443 in the bundle.
    pub https: SocketAddr,
    /// HTTP routed by `Host`, port 80 in the bundle.
    pub http: SocketAddr,
    /// The agent's name on the bottle's network: only its address is served on these ports.
    pub agent_host: String,
}

/// The bound sockets of [`DirectSettings`].
struct DirectListeners {
    resolver: direct::Resolver,
    https: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    peer: Arc<direct::AgentPeer>,
}

/// A daemon ready to serve: config loaded and checked, port bound.
pub struct Daemon {
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    /// The proxy port the agent handed over, bound in its own namespace, if it did.
    handed_proxy: Option<tokio::net::TcpListener>,
    direct: Option<DirectListeners>,
    /// Why the direct ports are not served, when they were asked for.
    direct_note: Option<String>,
    settings: Settings,
}

/// Bind the direct ports; the error names the address that failed.
async fn bind_direct(
    d: &DirectSettings,
    proxy: &Arc<Proxy>,
) -> Result<DirectListeners, (std::io::Error, SocketAddr)> {
    let peer = Arc::new(direct::AgentPeer::new(&d.agent_host));
    let tcp = |addr: SocketAddr| async move {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| (e, addr))?;
        busy_poll::watch(&l);
        Ok(l)
    };
    Ok(DirectListeners {
        resolver: direct::Resolver::bind(d.dns, proxy.clone(), peer.clone())
            .await
            .map_err(|e| (e, d.dns))?,
        https: tcp(d.https).await?,
        http: tcp(d.http).await?,
        peer,
    })
}

/// The direct ports from the sockets the agent handed over, when it handed over all three.
fn handed_direct(
    d: &DirectSettings,
    handed: &mut Vec<(Listener, std::os::fd::OwnedFd)>,
    proxy: &Arc<Proxy>,
) -> Result<Option<DirectListeners>, String> {
    let want = [
        Listener {
            port: d.dns.port(),
            proto: Proto::Udp,
        },
        Listener {
            port: d.https.port(),
            proto: Proto::Tcp,
        },
        Listener {
            port: d.http.port(),
            proto: Proto::Tcp,
        },
    ];
    if !want.iter().all(|w| handed.iter().any(|(l, _)| l == w)) {
        return Ok(None);
    }
    let mut take = |w: Listener| {
        let at = handed.iter().position(|(l, _)| *l == w).unwrap_or_default();
        handed.remove(at).1
    };
    let fail = |e: std::io::Error| format!("the agent's direct ports: {e}");
    let resolver =
        direct::Resolver::handed(std::net::UdpSocket::from(take(want[0])), proxy.clone())
            .map_err(fail)?;
    let https = tokio_listener(take(want[1])).map_err(fail)?;
    let http = tokio_listener(take(want[2])).map_err(fail)?;
    Ok(Some(DirectListeners {
        resolver,
        https,
        http,
        peer: Arc::new(direct::AgentPeer::everyone()),
    }))
}

/// A listening socket handed over, as tokio's.
fn tokio_listener(fd: std::os::fd::OwnedFd) -> std::io::Result<tokio::net::TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    let l = tokio::net::TcpListener::from_std(l)?;
    busy_poll::watch(&l);
    Ok(l)
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
        let way_out = upstream::WayOut {
            next_proxy: settings.upstream.clone(),
            tls,
        };
        let active = Active::new(table, &way_out)
            .map_err(|e| format!("{}: {e}", settings.routes.display()))?;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
        // A new connection ends a worker's poll as a byte does.
        busy_poll::watch(&listener);
        let log = log::AccessLog::new(settings.access_log);
        let proxy = Arc::new(Proxy {
            active: ArcSwap::from_pointee(active),
            ca,
            way_out,
            log,
            hop: settings.hop_token.as_deref().map(proxy::HopToken::new),
            cookies: cookies::IssuedCookies::default(),
            grant_uses: grants::Uses::default(),
        });
        // The agent's own listeners, when it is on no network (`bottle_contract::handoff`).
        let mut handed = bottle_contract::handoff::inherited()?;
        let proxy_port = Listener {
            port: settings.listen.port(),
            proto: Proto::Tcp,
        };
        let handed_proxy = match handed.iter().position(|(l, _)| *l == proxy_port) {
            Some(at) => Some(
                tokio_listener(handed.remove(at).1)
                    .map_err(|e| format!("the agent's proxy port: {e}"))?,
            ),
            None => None,
        };
        let handed_direct = match &settings.direct {
            Some(d) => handed_direct(d, &mut handed, &proxy)?,
            None => None,
        };
        if let Some((l, _)) = handed.first() {
            return Err(format!(
                "the agent handed over {l}, which egress does not serve; the bundle's daemon list and egress's flags disagree"
            ));
        }
        let (direct, direct_note) = match (&settings.direct, handed_direct) {
            (_, Some(d)) => (Some(d), None),
            (None, None) => (None, None),
            (Some(d), None) => match bind_direct(d, &proxy).await {
                Ok(l) => (Some(l), None),
                // An engine that keeps ports below 1024 privileged (the bundle runs no daemon
                // as root): the proxy still serves; clients that ignore the proxy env cannot
                // get out, and the start line says so.
                Err((e, addr)) if e.kind() == std::io::ErrorKind::PermissionDenied => (
                    None,
                    Some(format!(
                        "; no DNS, TLS or HTTP for clients without a proxy: cannot listen on {addr} ({e})"
                    )),
                ),
                Err((e, addr)) => return Err(format!("cannot listen on {addr}: {e}")),
            },
        };
        Ok(Daemon {
            proxy,
            listener,
            handed_proxy,
            direct,
            direct_note,
            settings,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound DNS, HTTPS and HTTP addresses for clients that ignore the proxy env.
    pub fn direct_addrs(&self) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
        let d = self.direct.as_ref()?;
        Some((
            d.resolver.local_addr().ok()?,
            d.https.local_addr().ok()?,
            d.http.local_addr().ok()?,
        ))
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
        let direct = match (&self.settings.direct, self.direct_addrs()) {
            (Some(d), Some((dns, https, http))) => format!(
                "; for the agent ({}) without a proxy: DNS on {dns}, TLS on {https}, HTTP on {http}",
                d.agent_host
            ),
            _ => self.direct_note.clone().unwrap_or_default(),
        };
        let handed = match self.handed_proxy.as_ref().and_then(|l| l.local_addr().ok()) {
            Some(a) => format!(" and on {a} in the agent's namespace"),
            None => String::new(),
        };
        format!(
            "listening on {addr}{handed}, {} routes (config sha256 {}), {mode}{direct}",
            active.table.routes.len(),
            &active.table.sha256[..12]
        )
    }

    /// Re-read the routes file; a bad one keeps the old table. Returns the log message.
    pub fn reload(&self) -> Result<String, String> {
        let table = RouteTable::load(&self.settings.routes, &env_var).map_err(|e| e.to_string())?;
        let msg = format!(
            "reloaded {}: {} routes, config sha256 {}",
            self.settings.routes.display(),
            table.routes.len(),
            table.sha256
        );
        let active = Active::new(table, &self.proxy.way_out)
            .map_err(|e| format!("{}: {e}", self.settings.routes.display()))?;
        self.proxy.active.store(Arc::new(active));
        Ok(msg)
    }

    /// Serve until SIGTERM or SIGINT; SIGHUP reloads.
    pub async fn run(mut self) -> Result<(), String> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let log = self.proxy.log.clone();
        log.event("start", &self.describe());
        let gate = Arc::new(Gate {
            max: self.settings.max_connections,
            slots: Arc::new(tokio::sync::Semaphore::new(self.settings.max_connections)),
            refusals: Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE)),
            limits: self.settings.conn_limits,
            log: log.clone(),
        });
        if let Some(l) = self.handed_proxy.take() {
            let listener = Arc::new(l);
            let (gate, proxy) = (gate.clone(), self.proxy.clone());
            tokio::spawn(keep_serving(
                "the agent's proxy port",
                log.clone(),
                move || serve_proxy(listener.clone(), gate.clone(), proxy.clone()),
            ));
        }
        if let Some(d) = self.direct.take() {
            let resolver = Arc::new(d.resolver);
            tokio::spawn(keep_serving(
                "the agent's DNS resolver",
                log.clone(),
                move || resolver.clone().serve(),
            ));
            for (listener, kind) in [(d.https, Direct::Tls), (d.http, Direct::Http)] {
                let listener = Arc::new(listener);
                let (gate, proxy, peer) = (gate.clone(), self.proxy.clone(), d.peer.clone());
                tokio::spawn(keep_serving(kind.port_name(), log.clone(), move || {
                    serve_direct(
                        listener.clone(),
                        kind,
                        gate.clone(),
                        proxy.clone(),
                        peer.clone(),
                    )
                }));
            }
        }
        loop {
            tokio::select! {
                _ = hup.recv() => match self.reload() {
                    Ok(m) => log.event("reload", &m),
                    Err(e) => log.event("reload-failed", &format!("{e}; the previous routes stay in force")),
                },
                // The lines still queued are the last requests' records: out before exiting,
                // then a numbered `stop` line, so the ledger sees every line before it (a run
                // of them the engine's log limit rotated away is a gap on record).
                _ = term.recv() => {
                    log.event("stop", "SIGTERM");
                    return Ok(());
                }
                _ = int.recv() => {
                    log.event("stop", "SIGINT");
                    return Ok(());
                }
                accepted = self.listener.accept() => {
                    let Ok((stream, _peer)) = accepted else {
                        accept_failed().await;
                        continue;
                    };
                    if let Some(conn) = gate.admit(stream) {
                        let proxy = self.proxy.clone();
                        tokio::spawn(serve_http(conn, move |req| proxy.clone().serve_outer(req)));
                    }
                }
            }
        }
    }
}

/// Accept proxy connections on a port the agent handed over for as long as egress runs.
async fn serve_proxy(listener: Arc<tokio::net::TcpListener>, gate: Arc<Gate>, proxy: Arc<Proxy>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            accept_failed().await;
            continue;
        };
        if let Some(conn) = gate.admit(stream) {
            let proxy = proxy.clone();
            tokio::spawn(serve_http(conn, move |req| proxy.clone().serve_outer(req)));
        }
    }
}

/// Accept the agent's connections on a direct port for as long as egress runs.
async fn serve_direct(
    listener: Arc<tokio::net::TcpListener>,
    kind: Direct,
    gate: Arc<Gate>,
    proxy: Arc<Proxy>,
    peer: Arc<direct::AgentPeer>,
) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            accept_failed().await;
            continue;
        };
        let (gate, proxy, peer) = (gate.clone(), proxy.clone(), peer.clone());
        // Judged in its own task: a lookup of the agent's name must not hold up the next
        // connection.
        tokio::spawn(async move {
            if !peer.admits(from.ip()).await {
                proxy.log.event(
                    "direct-refused",
                    &format!(
                        "closed a connection from {} on {}: it is not the agent",
                        from.ip(),
                        kind.port_name()
                    ),
                );
                return;
            }
            // The port the client dialled: 443 or 80 in the bundle.
            let Ok(port) = stream.local_addr().map(|a| a.port()) else {
                return;
            };
            if let Some(conn) = gate.admit(stream) {
                match kind {
                    Direct::Tls => proxy.serve_direct_tls(conn, port).await,
                    Direct::Http => {
                        serve_http(conn, move |req| proxy.clone().serve_direct_http(req, port))
                            .await
                    }
                }
            }
        });
    }
}

/// A failed accept is mostly out of file descriptors (EMFILE): the same call fails at once
/// until a connection closes, so retrying at once would spin on the bundle's CPU.
async fn accept_failed() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// How long a service that panicked rests before it is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// Run the service `start` makes for as long as egress runs. A panic in it (a bug a crafted
/// packet found) is logged and the service started again: otherwise the agent's DNS or a
/// direct port would be gone, without a word, for the rest of the run.
async fn keep_serving<F, S>(what: &'static str, log: log::AccessLog, start: F)
where
    F: Fn() -> S,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(start()).await {
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                log.event("panic", &format!("{what} panicked ({why}); started again"));
                tokio::time::sleep(RESTART_PAUSE).await;
            }
            // It ended by itself, or the runtime is shutting down.
            _ => return,
        }
    }
}

/// What a direct port speaks.
#[derive(Debug, Clone, Copy)]
enum Direct {
    Tls,
    Http,
}

impl Direct {
    fn port_name(self) -> &'static str {
        match self {
            Direct::Tls => "the direct TLS port",
            Direct::Http => "the direct HTTP port",
        }
    }
}

/// The connection limit every port shares.
struct Gate {
    max: usize,
    slots: Arc<tokio::sync::Semaphore>,
    refusals: Arc<tokio::sync::Semaphore>,
    limits: conn::Limits,
    log: log::AccessLog,
}

impl Gate {
    /// A slot for `stream`, or (full) a short answer saying so, then close; queueing would let
    /// a flood hold everyone else's connections hostage. The answers are bounded too: past
    /// them, a connection is just closed.
    fn admit(&self, stream: tokio::net::TcpStream) -> Option<conn::Conn<tokio::net::TcpStream>> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            if let Ok(answering) = self.refusals.clone().try_acquire_owned() {
                self.log.event(
                    "connection-limit",
                    "refused a connection: every slot is taken",
                );
                let max = self.max;
                tokio::spawn(async move {
                    refuse_full(stream, max).await;
                    drop(answering);
                });
            }
            return None;
        };
        let _ = stream.set_nodelay(true);
        busy_poll::watch(&stream);
        // The slot lives in the connection: an upgraded tunnel or WebSocket keeps it.
        Some(conn::Conn::new(stream, slot, self.limits))
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

/// Serve HTTP/1 and HTTP/2 (with upgrades) on `stream` with `serve`.
async fn serve_http<F, Fut>(stream: conn::Conn<tokio::net::TcpStream>, serve: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<hyper::Response<proxy::RespBody>, std::convert::Infallible>,
        > + Send
        + 'static,
{
    let service = hyper::service::service_fn(serve);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_service_that_panics_is_started_again_and_one_that_ends_is_not() {
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        let served = keep_serving("a test service", log::AccessLog::new(false), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("bad packet {n}");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("it ends once the service ends by itself");
        assert_eq!(starts.load(Ordering::SeqCst), 3, "two panics, two restarts");
    }
}
