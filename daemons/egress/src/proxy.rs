//! The proxy: every request the agent makes, decided and forwarded.
//!
//! Absolute-form HTTP and the requests inside an intercepted CONNECT go through one pipeline:
//! route, git-push block, path rules, plaintext-credential rule, DLP on URL and headers,
//! strip `Authorization`, inject the route's credential, stream the body through the scanner,
//! forward, and scan the response of a credentialed route for the echoed token.

use crate::body::Scanned;
use crate::ca::Authority;
use crate::dlp::DlpScope;
use crate::inspect::{Held, Inspected, ReadBody, WHOLE_LIMIT, judge_whole, read_whole};
use crate::log::{AccessLog, Decision, Record};
use crate::routes::{AuthForm, Route, RouteTable, RuleOutcome};
use crate::upstream::{Refused, UpBody, Upstream, WayOut};
use arc_swap::ArcSwap;
use bottle_dlp::{KnownSecret, Scanner};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// The body egress answers with.
pub type RespBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The magic host that answers the route table (`GET http://_egress.local/allowlist`).
pub const INTROSPECTION_HOST: &str = "_egress.local";
/// How long a client has for its TLS handshake after CONNECT.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The config a request is decided with: swapped whole on reload.
pub struct Active {
    /// The routes.
    pub table: RouteTable,
    /// Patterns plus every route's token: what the agent may never send.
    pub outbound: Arc<Scanner>,
    /// Per token env name, its own value alone: what a credentialed route's response may
    /// not echo. Built once here; building an automaton per request cost more than the rest.
    pub echo: std::collections::BTreeMap<String, Arc<Scanner>>,
    /// The clients that dial with this table's static hosts: swapped with the routes, so no
    /// request is judged by one table and dialled by another's addresses.
    pub upstream: Upstream,
}

impl Active {
    /// Build the scanners and the clients for `table`; an address in its hosts that cannot
    /// be used is the error.
    pub fn new(table: RouteTable, way_out: &WayOut) -> Result<Self, String> {
        let upstream = way_out.upstream(&table.hosts)?;
        let secrets = known(&table);
        let outbound = Arc::new(Scanner::new(&secrets).with_extra(table.dlp_extra.clone()));
        let echo = secrets
            .into_iter()
            .map(|k| (k.name.clone(), Arc::new(Scanner::known_only(&[k]))))
            .collect();
        Ok(Active {
            table,
            outbound,
            echo,
            upstream,
        })
    }
}

/// Every route's token, once per env name.
fn known(table: &RouteTable) -> Vec<KnownSecret> {
    let mut out: Vec<KnownSecret> = Vec::new();
    for c in table.routes.iter().filter_map(|r| r.credential.as_ref()) {
        if !out.iter().any(|k| k.name == c.token_env) {
            out.push(KnownSecret {
                name: c.token_env.clone(),
                value: c.token.as_bytes().to_vec(),
            });
        }
    }
    out
}

/// What every connection shares.
pub struct Proxy {
    /// The current config.
    pub active: ArcSwap<Active>,
    /// The CA leaves are minted from.
    pub ca: Authority,
    /// What each table's clients are built from.
    pub way_out: WayOut,
    /// The access log.
    pub log: AccessLog,
    /// The hop's token, when one is asked for.
    pub hop: Option<HopToken>,
    /// Cookies origins set, which the agent may send back without DLP judging them.
    pub cookies: crate::cookies::IssuedCookies,
    /// The uses of grants that end after so many requests, kept across reloads.
    pub grant_uses: crate::grants::Uses,
}

/// Large bodies judged at once, off the runtime's threads, across every connection.
const JUDGED_AT_ONCE: usize = 4;

/// A whole body past this size (or any encoded one) is judged off the runtime's threads.
const JUDGED_INLINE: usize = 256 << 10;

/// The turns to judge a large body ([`JUDGED_AT_ONCE`]).
fn judging_turns() -> &'static tokio::sync::Semaphore {
    static TURNS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    TURNS.get_or_init(|| tokio::sync::Semaphore::new(JUDGED_AT_ONCE))
}

/// The token that authenticates the hop from the agent to egress when egress's port is
/// reachable from outside the bottle (the smolmachines bundle publishes it on loopback, where
/// any local user could otherwise use the credentials egress injects). The agent's proxy URL
/// carries it (`http://bottle:<token>@…`), so clients send it as `Proxy-Authorization: Basic`;
/// egress drops that header before anything goes on.
pub struct HopToken(bottle_contract::hop::HopToken);

impl HopToken {
    /// The token `token`.
    pub fn new(token: &str) -> HopToken {
        HopToken(bottle_contract::hop::HopToken::new(token))
    }

    /// Whether `h` carries the token as `Proxy-Authorization: Basic` (any user name).
    pub fn admits(&self, h: &HeaderMap) -> bool {
        use base64::Engine as _;
        let Some(value) = h
            .get(header::PROXY_AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => self.0.matches(&decoded[i + 1..]),
            None => false,
        }
    }
}

/// Where a request goes: what the agent asked for, never what a header claims.
#[derive(Debug, Clone)]
struct Target {
    https: bool,
    /// Lower case, IPv6 without brackets.
    host: String,
    port: u16,
}

impl Target {
    fn authority(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Why egress refused, as the agent sees it in `X-Bottle-Block` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    NotAllowed,
    Path,
    GitPush,
    Plaintext,
    Secret,
    Inside,
    HostMismatch,
    EchoedToken,
    Rule,
    GrantEnded,
}

impl Block {
    fn kind(self) -> &'static str {
        match self {
            Block::NotAllowed => "not-allowlisted",
            Block::Path => "path",
            Block::GitPush => "git-push",
            Block::Plaintext => "credential-over-http",
            Block::Secret => "secret",
            Block::Inside => "inside-address",
            Block::HostMismatch => "host-mismatch",
            Block::EchoedToken => "echoed-credential",
            Block::Rule => "route-rule",
            Block::GrantEnded => "grant-ended",
        }
    }

    /// The supervise tool that would lift this block, if any.
    fn ask(self) -> Option<&'static str> {
        match self {
            Block::NotAllowed | Block::GrantEnded => Some("request_host_access"),
            Block::Path => Some("request_route"),
            _ => None,
        }
    }
}

fn blocked(block: Block, reason: &str) -> Response<RespBody> {
    let status = match block {
        Block::EchoedToken => StatusCode::BAD_GATEWAY,
        _ => StatusCode::FORBIDDEN,
    };
    let mut header = block.kind().to_owned();
    let mut text = format!("blocked by egress: {reason}\n");
    if let Some(tool) = block.ask() {
        header.push_str(&format!("; ask with the supervise tool {tool}"));
        text.push_str(&format!(
            "To ask the user for access, call the supervise MCP tool `{tool}`.\n"
        ));
    }
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "x-bottle-block",
        HeaderValue::from_str(&header).unwrap_or(HeaderValue::from_static("blocked")),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn full(s: impl Into<Bytes>) -> RespBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

fn empty() -> RespBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn plain(status: StatusCode, text: &str) -> Response<RespBody> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r
}

/// Whether any error in `e`'s source chain is a `T`.
fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

impl Proxy {
    /// The route a request to `host` for `path` takes: the first of its candidates whose paths
    /// cover it and whose grant, if it has one, still runs (a use is taken). Otherwise the
    /// refusal, with the route it names: an ended grant's, else the first route's path
    /// refusal.
    fn take_route<'t>(
        &self,
        table: &'t crate::routes::RouteTable,
        host: &str,
        path: &str,
    ) -> Result<&'t crate::routes::Route, (Block, Option<String>, String)> {
        let now = std::time::SystemTime::now();
        let mut refusal = None;
        for route in table.candidates(host) {
            if let Err(why) = route.allows_path(path) {
                refusal.get_or_insert((Block::Path, Some(route.host.to_string()), why));
                continue;
            }
            let Some(limit) = &route.grant else {
                return Ok(route);
            };
            match self.grant_uses.take(limit, || route.describe(), now) {
                Ok(()) => return Ok(route),
                // An ended grant says more than another route's paths.
                Err(ended) if refusal.as_ref().is_none_or(|(b, ..)| *b == Block::Path) => {
                    refusal = Some((Block::GrantEnded, Some(route.host.to_string()), ended));
                }
                Err(_) => {}
            }
        }
        if let Some(ended) = table.ended_for(host, path)
            && refusal.as_ref().is_none_or(|(b, ..)| *b == Block::Path)
        {
            return Err((Block::GrantEnded, None, ended));
        }
        Err(refusal.unwrap_or((
            Block::NotAllowed,
            None,
            format!("{host} is not on this bottle's allowlist"),
        )))
    }

    /// A request on the proxy port: CONNECT, absolute-form, or `/health`.
    pub async fn serve_outer(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<RespBody>, Infallible> {
        // Every proxied request (CONNECT or absolute-form) proves it comes from the bottle's
        // agent; `/health` (origin-form) stays open for the bundle's ready check.
        let proxied = req.method() == Method::CONNECT || req.uri().host().is_some();
        if let Some(hop) = &self.hop
            && proxied
            && !hop.admits(req.headers())
        {
            let mut r = plain(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "this egress serves its bottle's agent only: the proxy URL the agent was given carries its credentials",
            );
            r.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"bottle egress\""),
            );
            return Ok(r);
        }
        if req.method() == Method::CONNECT {
            return Ok(self.connect(req));
        }
        let Some(host) = req.uri().host().map(|h| h.to_ascii_lowercase()) else {
            return Ok(self.origin_form(&req));
        };
        let https = match req.uri().scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    "egress speaks http:// and CONNECT",
                ));
            }
        };
        if host == INTROSPECTION_HOST {
            return Ok(self.introspect(&req));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = req.uri().port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(self.forward(req, Target { https, host, port }).await)
    }

    fn origin_form(&self, req: &Request<Incoming>) -> Response<RespBody> {
        if req.method() == Method::GET && req.uri().path() == "/health" {
            let active = self.active.load();
            let body = serde_json::json!({
                "status": "ok",
                "config_sha256": active.table.sha256,
                "routes": active.table.routes.len(),
                "dials": if self.way_out.is_direct() { "direct" } else { "upstream proxy" },
            });
            let mut r = Response::new(full(body.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return r;
        }
        plain(
            StatusCode::BAD_REQUEST,
            "this is bottle's egress proxy: send absolute-form requests or CONNECT",
        )
    }

    fn introspect(&self, req: &Request<Incoming>) -> Response<RespBody> {
        if req.method() != Method::GET || req.uri().path() != "/allowlist" {
            return plain(
                StatusCode::NOT_FOUND,
                "try GET http://_egress.local/allowlist",
            );
        }
        let view = self.active.load().table.public_view();
        let mut r = Response::new(full(view.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }

    /// CONNECT: answer 200 and intercept what follows. A host with no route is intercepted
    /// too, never dialled: each request in the tunnel then gets the 403 with its reason in
    /// the body, which the agent (and curl) shows, where a refused CONNECT shows nothing.
    fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<RespBody> {
        let Some(authority) = req.uri().authority().cloned() else {
            return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let target = Target {
            https: true,
            host,
            port: authority.port_u16().unwrap_or(443),
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(up) => self.intercept(TokioIo::new(up), target).await,
                Err(e) => self.log.event("connect", &format!("upgrade failed: {e}")),
            }
        });
        Response::new(empty())
    }

    /// The TLS the agent speaks inside CONNECT, terminated with a leaf for the CONNECT host.
    async fn intercept<IO>(self: Arc<Self>, io: IO, target: Target)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.terminate_tls(io, Ok(target)).await;
    }

    /// TLS an agent's client sent straight to egress's `port` (443), having resolved an
    /// allowlisted name to egress (a client that ignores the proxy env): the name it sent
    /// (SNI) on the port it dialled is the target, and from there it is the same as a CONNECT.
    pub async fn serve_direct_tls<IO>(self: Arc<Self>, io: IO, port: u16)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.terminate_tls(io, Err(port)).await;
    }

    /// Terminate the agent's TLS with a leaf for `target` (CONNECT) or, given the port it
    /// dialled, for the name the client sent (direct); then serve the requests inside through
    /// the pipeline.
    async fn terminate_tls<IO>(self: Arc<Self>, io: IO, target: Result<Target, u16>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let started = Instant::now();
        let (method, how) = match &target {
            Ok(_) => (Method::CONNECT, "after CONNECT"),
            // No request yet: the log names the connection for what it is.
            Err(_) => (
                Method::from_bytes(b"TLS").unwrap_or(Method::GET),
                "on the direct TLS port",
            ),
        };
        let close = |host: &str, reason: String| {
            self.log
                .write(&Record::new(&method, host, "", started).decided(
                    Decision::Block,
                    &reason,
                    0,
                    None,
                ));
        };
        let named = target.as_ref().map_or("", |t| t.host.as_str()).to_owned();
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return close(&named, format!("closed: not TLS {how} ({e})")),
            Err(_) => return close(&named, "closed: no TLS handshake in time".into()),
        };
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let target = match (target, sni) {
            (Ok(t), Some(sni)) if sni != t.host => {
                return close(
                    &t.host,
                    format!("closed: TLS name {sni} is not the CONNECT host {}", t.host),
                );
            }
            (Ok(t), _) => t,
            (Err(port), Some(sni)) => Target {
                https: true,
                host: sni,
                port,
            },
            (Err(_), None) => {
                return close(
                    "",
                    "closed: TLS on the direct port without a server name (SNI): egress cannot tell where it goes".into(),
                );
            }
        };
        let config = match self.ca.server_config(&target.host) {
            Ok(c) => c,
            Err(e) => return close(&target.host, format!("closed: {e}")),
        };
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                return close(&target.host, format!("closed: TLS handshake failed ({e})"));
            }
            Err(_) => return close(&target.host, "closed: TLS handshake timed out".into()),
        };
        let proxy = self.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let target = target.clone();
            async move { Ok::<_, Infallible>(proxy.inner(req, target).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .max_header_list_size(64 * 1024)
            .max_concurrent_streams(256);
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(tls), service)
            .await;
    }

    /// A plain-HTTP request an agent's client sent straight to egress's `port` (80): its
    /// `Host` on the port it dialled is the target, and from there it is the same as an
    /// absolute-form request.
    pub async fn serve_direct_http(
        self: Arc<Self>,
        req: Request<Incoming>,
        port: u16,
    ) -> Result<Response<RespBody>, Infallible> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok());
        let Some(host) = host.filter(|a| a.port_u16().unwrap_or(80) == port) else {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "a request on egress's direct HTTP port needs a Host header naming a host on port {port}"
                ),
            ));
        };
        let target = Target {
            https: false,
            host: host
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port,
        };
        Ok(self.forward(req, target).await)
    }

    /// A request inside an intercepted tunnel: its Host must be the CONNECT host.
    async fn inner(self: Arc<Self>, req: Request<Incoming>, target: Target) -> Response<RespBody> {
        let claimed = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let matches = claimed.as_deref().is_some_and(|c| {
            let a: Option<http::uri::Authority> = c.parse().ok();
            a.is_some_and(|a| {
                let host = a.host().trim_start_matches('[').trim_end_matches(']');
                host.eq_ignore_ascii_case(&target.host)
                    && a.port_u16().unwrap_or(443) == target.port
            })
        });
        if !matches {
            let reason = format!(
                "the request names {} inside a tunnel to {}",
                claimed.as_deref().unwrap_or("no host"),
                target.authority()
            );
            self.log.write(
                &Record::new(req.method(), &target.host, req.uri().path(), Instant::now()).decided(
                    Decision::Block,
                    &reason,
                    403,
                    None,
                ),
            );
            return blocked(Block::HostMismatch, &reason);
        }
        self.forward(req, target).await
    }

    /// The pipeline every request goes through.
    async fn forward(&self, req: Request<Incoming>, target: Target) -> Response<RespBody> {
        let started = Instant::now();
        let active = self.active.load_full();
        let path = req.uri().path().to_owned();
        let mut record = Record::new(req.method(), &target.host, &path, started);
        let _unsettled = record.unless_settled(&self.log);
        let refuse = |record: Record, block: Block, reason: String| {
            self.log
                .write(&record.decided(Decision::Block, &reason, 403, None));
            blocked(block, &reason)
        };
        // Refused before anything is dialled; the body the agent is still sending is read
        // first (bounded), so an HTTP/2 client gets the answer rather than a stream reset.
        let early = |mut record: Record, req: Request<Incoming>| {
            if active.table.find(&target.host).is_none() {
                let (block, reason) = match active.table.ended_for(&target.host, &path) {
                    Some(ended) => (Block::GrantEnded, ended),
                    None => (
                        Block::NotAllowed,
                        format!("{} is not on this bottle's allowlist", target.host),
                    ),
                };
                return Err(Box::new((req, record, block, reason)));
            }
            if is_git_push(req.method(), &path, req.uri().query()) {
                let reason = "git push over HTTPS is refused; push through git-gate (`git://git-gate/<repo>.git`)".into();
                return Err(Box::new((req, record, Block::GitPush, reason)));
            }
            let route = match self.take_route(&active.table, &target.host, &path) {
                Ok(route) => route,
                Err((block, route, why)) => {
                    record.route = route;
                    return Err(Box::new((req, record, block, why)));
                }
            };
            record.route = Some(route.host.to_string());
            let ruled = route.forge.is_some() || !route.rules.is_empty();
            if ruled && let Some(why) = method_override(&req) {
                return Err(Box::new((req, record, Block::Rule, why)));
            }
            if (ruled || !route.path_allowlist.is_empty())
                && let Some(why) = path_override(&req)
            {
                return Err(Box::new((req, record, Block::Rule, why)));
            }
            let graphql = match route.check_request(req.method().as_str(), &path) {
                RuleOutcome::Pass => None,
                RuleOutcome::GraphQl(forge) => Some(forge),
                RuleOutcome::Refuse(r) => {
                    record.rule = Some(r.rule.clone());
                    let reason = format!("{} (rule {}); {}", r.reason, r.rule, r.lift);
                    return Err(Box::new((req, record, Block::Rule, reason)));
                }
            };
            if route.credential.is_some() && !target.https {
                let reason = format!(
                    "{} gets a credential, which is never sent over plain http; use https://",
                    target.host
                );
                return Err(Box::new((req, record, Block::Plaintext, reason)));
            }
            if route.credential.is_some()
                && let Some(why) = echoes_the_request(&req)
            {
                return Err(Box::new((req, record, Block::Rule, why)));
            }
            Ok((req, record, route, graphql))
        };
        let (mut req, mut record, route, graphql) = match early(record, req) {
            Ok(passed) => passed,
            Err(refused) => {
                let (req, record, block, reason) = *refused;
                drain(req.into_body()).await;
                return refuse(record, block, reason);
            }
        };
        // A name mapped to a fixed address (the Docker host, an inside machine) may open one
        // port there: the rest of that machine is not the agent's. After the route's own
        // rules, so a request they refuse is refused by them, whatever its port.
        if let Some(only) = active.table.only_port(&target.host)
            && only != target.port
        {
            let reason = format!(
                "{} is reachable on port {only} alone (its egress.hosts entry names that port)",
                target.host
            );
            drain(req.into_body()).await;
            return refuse(record, Block::NotAllowed, reason);
        }
        // A credential is for the API on 443, not whatever else the host serves on another
        // port; a name `egress.hosts` maps to a fixed address says its port itself (above).
        if route.credential.is_some()
            && target.port != 443
            && !active.table.hosts.contains_key(&target.host)
        {
            let reason = format!(
                "{} gets a credential on port 443 alone, not {}; to send it to another port, map the name with its port in egress.hosts",
                target.host, target.port
            );
            drain(req.into_body()).await;
            return refuse(record, Block::NotAllowed, reason);
        }
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        // The origin's URL is the route's authority and this path: anything but a path (`*`,
        // or an HTTP/2 `:path` of `@other.host/`) would change what the URL names.
        if !path_and_query.starts_with('/') {
            drain(req.into_body()).await;
            let reason = "the request target is not a path (it must start with /)";
            self.log
                .write(&record.decided(Decision::Block, reason, 400, None));
            return plain(StatusCode::BAD_REQUEST, reason);
        }
        let dlp = DlpScope::new(active.clone(), &target.host, &path, self.log.clone());
        if let Some(f) = scan_url(&dlp, route, &target.host, &path_and_query) {
            let why = format!("the URL carries {f}");
            // Never written to the log, refused or (`mode: log`) passed.
            record.redact_path();
            if dlp.refuses(&why) {
                drain(req.into_body()).await;
                return refuse(record, Block::Secret, why);
            }
        }
        // Judged as the agent sent them: its Authorization and Cookie too, unless the route
        // replaces that header with its own credential.
        // The method is a word, not a channel: `curl -X <token>` would carry one out (and
        // clients upper-case it, past any case-sensitive pattern). Only methods HTTP and
        // WebDAV define go on.
        if !bottle_contract::egress::KNOWN_METHODS.contains(&req.method().as_str()) {
            let why = "the request's method is not one HTTP or WebDAV defines (a method carries no data out)".to_owned();
            drain(req.into_body()).await;
            return refuse(record, Block::Secret, why);
        }
        if let Some((name, f)) = scan_headers(&dlp, route, req.headers(), |cookie| {
            self.cookies.not_issued(&target.host, cookie)
        }) {
            let why = format!("{name} carries {f}");
            if dlp.refuses(&why) {
                drain(req.into_body()).await;
                return refuse(record, Block::Secret, why);
            }
        }
        let websocket = is_websocket(req.headers());
        let down_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let shape = crate::inspect::BodyShape::of(req.headers());
        let (mut parts, body) = req.into_parts();
        clean_request_headers(&mut parts.headers, route, websocket);
        if let Some(c) = &route.credential {
            let (name, value) = match &c.form {
                AuthForm::Scheme(s) => (header::AUTHORIZATION, format!("{s} {}", c.token)),
                AuthForm::Header(h) => (
                    HeaderName::from_bytes(h.as_bytes()).unwrap_or(header::AUTHORIZATION),
                    c.token.clone(),
                ),
            };
            if let Ok(mut v) = HeaderValue::from_str(&value) {
                v.set_sensitive(true);
                parts.headers.insert(name, v);
            }
        }
        let uri = Uri::builder()
            .scheme(if target.https { "https" } else { "http" })
            .authority(target.authority())
            .path_and_query(path_and_query)
            .build();
        parts.uri = match uri {
            Ok(u) => u,
            Err(e) => {
                let reason = format!("bad request target: {e}");
                self.log
                    .write(&record.decided(Decision::Block, &reason, 400, None));
                return plain(StatusCode::BAD_REQUEST, &reason);
            }
        };
        // The agent's own choice of protocol is kept upstream, as a client going direct would
        // get: HTTP/2 only for a request that came as HTTP/2 (an HTTP/1.1 request over h2 costs
        // egress half again its own work per request, and it is what the agent did not ask for).
        let agent_h2 = parts.version == Version::HTTP_2;
        parts.version = Version::HTTP_11;
        let head = parts.method == Method::HEAD;
        let sent = Arc::new(AtomicU64::new(0));
        // The body is read and judged before anything is dialled: a refused request never
        // reaches the origin. Only a body over WHOLE_LIMIT streams, judged window by window.
        let mut held = Held::none();
        let read = match read_whole(body, WHOLE_LIMIT, &mut held).await {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("the request body could not be read: {e}");
                self.log
                    .write(&record.decided(Decision::Error, &reason, 400, None));
                return plain(StatusCode::BAD_REQUEST, &format!("egress: {reason}"));
            }
        };
        let (body, found): (UpBody, _) = match read {
            ReadBody::OverBudget => {
                let reason = format!(
                    "egress holds {} MiB of request bodies being judged; send this one again in a moment",
                    crate::inspect::BODY_BUDGET >> 20
                );
                self.log.event(
                    "body-budget",
                    &format!("answered 503 to a request to {}: {reason}", target.host),
                );
                self.log
                    .write(&record.decided(Decision::Error, &reason, 503, None));
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("egress: {reason}"),
                );
            }
            ReadBody::Whole(bytes) => {
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                if route.forge.is_some() || !route.rules.is_empty() {
                    // The form as the origin reads it: a `_method` field under gzip is one too.
                    let decoded = match &shape.encoding {
                        Some(coding) => match bottle_dlp::content::decode_content(
                            &bytes,
                            coding,
                            crate::inspect::DECODED_LIMIT,
                        ) {
                            Ok(d) => Some(d),
                            Err(e) => return refuse(record, Block::Rule, e.to_string()),
                        },
                        None => None,
                    };
                    if let Some(why) =
                        method_field_in_body(decoded.as_deref().unwrap_or(&bytes), content_type)
                    {
                        return refuse(record, Block::Rule, why);
                    }
                }
                if graphql.is_some() {
                    if bytes.len() > GRAPHQL_MAX_BYTES {
                        let reason = format!(
                            "a GraphQL request over {} KiB cannot be judged",
                            GRAPHQL_MAX_BYTES >> 10
                        );
                        return refuse(record, Block::Rule, reason);
                    }
                    if let Err(what) =
                        crate::forge::check_graphql(&bytes, crate::forge::GITHUB_MUTATIONS)
                    {
                        record.rule = Some("github-graphql".into());
                        let reason = format!(
                            "{what} is not one bottle lets a credential make (rule github-graphql); issues, pull requests, comments and reviews pass; to allow more, add `allow: [{{methods: [POST], path: \"/graphql\"}}]` to this route in the manifest"
                        );
                        return refuse(record, Block::Rule, reason);
                    }
                }
                let judged = if bytes.len() > JUDGED_INLINE || shape.encoding.is_some() {
                    // Decoding and scanning megabytes on the runtime's threads would hold up
                    // every other connection and the agent's DNS meanwhile. A few at once:
                    // each decode may take DECODED_LIMIT. (Turns are taken once the body is
                    // read: waiting before reading would leave HTTP/2's shared window full of
                    // the waiting streams' data, and the reading ones stuck behind it.)
                    let _turn = judging_turns().acquire().await.ok();
                    let (dlp, bytes, shape) = (dlp.clone(), bytes.clone(), shape.clone());
                    tokio::task::spawn_blocking(move || judge_whole(&dlp, &bytes, &shape))
                        .await
                        .unwrap_or_else(|_| Some("the body could not be judged".to_owned()))
                } else {
                    judge_whole(&dlp, &bytes, &shape)
                };
                drop(held);
                if let Some(why) = judged
                    && dlp.refuses(&why)
                {
                    return refuse(record, Block::Secret, why);
                }
                sent.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let full = Full::new(bytes).map_err(|e| match e {}).boxed();
                (full, Arc::new(std::sync::OnceLock::new()))
            }
            ReadBody::Large(read, rest) => {
                let formlike = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_none_or(|ct| {
                        let ct = ct.to_ascii_lowercase();
                        ct.starts_with("application/x-www-form-urlencoded")
                            || ct.starts_with("multipart/")
                            || ct.contains("json")
                    });
                if (route.forge.is_some() || !route.rules.is_empty()) && formlike {
                    let reason = format!(
                        "a form or JSON body over {} MiB cannot be checked for a `_method` field on a route with rules",
                        WHOLE_LIMIT >> 20
                    );
                    return refuse(record, Block::Rule, reason);
                }
                if graphql.is_some() {
                    let reason = format!(
                        "a GraphQL request over {} KiB cannot be judged",
                        GRAPHQL_MAX_BYTES >> 10
                    );
                    return refuse(record, Block::Rule, reason);
                }
                if let Some(e) = &shape.encoding {
                    let reason = format!(
                        "the body cannot be scanned: a {e}-encoded body over {} MiB is more than bottle decodes",
                        WHOLE_LIMIT >> 20
                    );
                    if dlp.refuses(&reason) {
                        return refuse(record, Block::Secret, reason);
                    }
                }
                // From here the body is passed on window by window as it is judged.
                drop(held);
                let inspected = Inspected::after(read, rest, dlp.clone(), sent);
                let found = inspected.refused();
                (inspected.boxed(), found)
            }
        };
        let client = if websocket || !agent_h2 {
            &active.upstream.h1_client
        } else {
            &active.upstream.client
        };
        let mut resp = match client.request(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(r) = find_in_chain::<Refused>(&e) {
                    return refuse(record, Block::Inside, r.to_string());
                }
                if let Some(why) = found.get() {
                    return refuse(record, Block::Secret, why.clone());
                }
                let reason = format!("{} is unreachable: {}", target.authority(), error_chain(&e));
                self.log
                    .write(&record.decided(Decision::Error, &reason, 502, None));
                return plain(StatusCode::BAD_GATEWAY, &format!("egress: {reason}"));
            }
        };

        let echo = route
            .credential
            .as_ref()
            .and_then(|c| active.echo.get(&c.token_env).cloned());
        if let Some(scanner) = &echo
            && let Some(name) = echoed_header(scanner, resp.headers())
        {
            let reason = format!("the response header {name} echoes the route's credential");
            self.log
                .write(&record.decided(Decision::Block, &reason, 502, None));
            return blocked(Block::EchoedToken, &reason);
        }
        // The request asked for `identity` (clean_request_headers): a compressed answer would
        // hide an echoed credential from the scan, so it is not passed on.
        let bodiless = head
            || matches!(
                resp.status(),
                StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
            );
        if echo.is_some()
            && !bodiless
            && let Some(coding) = resp
                .headers()
                .get_all(header::CONTENT_ENCODING)
                .iter()
                .flat_map(|v| {
                    // Not text: refused as what it is not (identity).
                    let v = v.to_str().unwrap_or("(unreadable)");
                    v.split(',').map(str::trim).collect::<Vec<_>>()
                })
                .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
                .map(str::to_owned)
        {
            let reason = format!(
                "the origin answered {coding}-encoded though egress asked for identity on a route that gets a credential, so the answer cannot be checked for that credential"
            );
            self.log
                .write(&record.decided(Decision::Block, &reason, 502, None));
            return blocked(Block::EchoedToken, &reason);
        }
        // A session the origin opens on the strength of the credential is a credential too,
        // one the agent could carry out; on such a route the injected token is the session.
        if route.credential.is_some() && resp.headers_mut().remove(header::SET_COOKIE).is_some() {
            self.log.event(
                "cookie",
                &format!(
                    "dropped the cookies {} set on a route that gets a credential",
                    target.host
                ),
            );
        }
        self.cookies.remember(&target.host, resp.headers());
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(down) = down_upgrade {
                let up = hyper::upgrade::on(&mut resp);
                let log = self.log.clone();
                let scope = dlp.clone();
                let deflate = resp
                    .headers()
                    .get_all("sec-websocket-extensions")
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.contains("permessage-deflate")));
                let closed_record = record.clone();
                tokio::spawn(async move {
                    match tokio::try_join!(down, up) {
                        Ok((d, u)) => {
                            let relay =
                                crate::ws::relay(TokioIo::new(d), TokioIo::new(u), &scope, deflate);
                            if let Err(closed) = relay.await {
                                log.write(&closed_record.decided(
                                    Decision::Block,
                                    &format!(
                                        "websocket closed ({}): {}",
                                        closed.code, closed.reason
                                    ),
                                    101,
                                    None,
                                ));
                            }
                        }
                        Err(e) => log.event("websocket", &format!("upgrade failed: {e}")),
                    }
                });
            }
            self.log
                .write(&record.decided(Decision::Allow, "websocket", 101, None));
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, empty());
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let received = Arc::new(AtomicU64::new(0));
        let body: RespBody = match echo {
            Some(scanner) => Scanned::new(body, scanner, received.clone()).boxed(),
            None => crate::log::Counted::new(body, received.clone()).boxed(),
        };
        let body = crate::log::Logged::new(
            body,
            self.log.clone(),
            record.decided(Decision::Allow, "", status.as_u16(), Some(received)),
        )
        .boxed();
        Response::from_parts(parts, body)
    }
}

/// Read and drop what is left of a refused request's body: at most [`DRAIN_BYTES`] within
/// [`DRAIN_TIME`]. An HTTP/2 client still sending would otherwise get a stream reset instead
/// of the refusal's text.
async fn drain(body: Incoming) {
    let read = http_body_util::Limited::new(body, DRAIN_BYTES).collect();
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// How much of a refused request's body egress reads before answering.
const DRAIN_BYTES: usize = 1 << 20;
/// How long egress waits for it.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The largest GraphQL request read whole to judge its mutations.
const GRAPHQL_MAX_BYTES: usize = 1 << 20;

/// Why a request that asks the origin to take another method than its own is refused (a
/// route's rules judged the method it was sent with), if it does.
fn method_override<B>(req: &Request<B>) -> Option<String> {
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        if req.headers().contains_key(h) {
            return Some(format!(
                "the request asks the origin for another method ({h}), which this route's rules would not have judged"
            ));
        }
    }
    let query = req.uri().query().unwrap_or("");
    if has_method_field(query) {
        return Some(
            "the request asks the origin for another method (`_method`), which this route's rules would not have judged".into(),
        );
    }
    None
}

/// Why a request that asks the origin to serve another path than its own is refused (the
/// route judged the path it was sent to), if it does: IIS's and Symfony's rewrite headers.
fn path_override<B>(req: &Request<B>) -> Option<String> {
    ["x-original-url", "x-rewrite-url", "x-forwarded-prefix"]
        .into_iter()
        .find(|h| req.headers().contains_key(*h))
        .map(|h| {
            format!(
                "the request asks the origin for another path ({h}), which this route's path rules would not have judged"
            )
        })
}

/// Whether a query string or form body names `_method` (Rails, Laravel and Symfony take it
/// as the method), percent-encoded or `+`-spaced as a form decoder reads it.
fn has_method_field(form: &str) -> bool {
    form.split('&').any(|kv| {
        let key = kv.split('=').next().unwrap_or("").replace('+', " ");
        is_method_name(&percent_encoding::percent_decode_str(&key).decode_utf8_lossy())
    })
}

/// Whether a decoded field name is `_method` as PHP reads it too (it turns ` `, `.` and `[`
/// in a name into `_`: `.method` is `_method` to Laravel).
fn is_method_name(name: &str) -> bool {
    let php: String = name
        .trim()
        .chars()
        .map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c })
        .collect();
    php.eq_ignore_ascii_case("_method")
}

/// Why a form body that names another method (`_method=DELETE`) is refused on a route whose
/// rules judged the request's own method, if it is: urlencoded fields and multipart parts.
fn method_field_in_body(bytes: &[u8], content_type: Option<&str>) -> Option<String> {
    let ct = content_type.unwrap_or("").trim().to_ascii_lowercase();
    let text = String::from_utf8_lossy(bytes);
    let named = if ct.starts_with("multipart/") {
        // Only the parts' own headers: a file's content may say anything.
        text.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .flat_map(|l| l.split(';').skip(1))
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("name").then_some(v)
            })
            .any(|n| is_method_name(n.trim().trim_matches(|c| c == '"' || c == '\'')))
    } else if ct.contains("json") {
        // Laravel reads `_method` from a JSON body too.
        text.contains("\"_method\"")
    } else {
        // A form, or a body with no type, which Rack reads as a form.
        (ct.is_empty() || ct.starts_with("application/x-www-form-urlencoded"))
            && has_method_field(&text)
    };
    named.then(|| {
        "the form asks the origin for another method (a `_method` field), which this route's rules would not have judged".to_owned()
    })
}

/// Why a request is not sent on a route that gets a credential because the origin would hand
/// that credential back to the agent, if it would: `TRACE` (the origin echoes the request,
/// headers and all) and a WebSocket (egress does not read what the origin sends on one).
fn echoes_the_request<B>(req: &Request<B>) -> Option<String> {
    if req.method() == Method::TRACE || req.method().as_str().eq_ignore_ascii_case("TRACK") {
        return Some(format!(
            "{} asks the origin to echo the request back, the route's credential with it; it is never sent on a route that gets a credential",
            req.method()
        ));
    }
    is_websocket(req.headers()).then(|| {
        "a WebSocket is not opened on a route that gets a credential: egress does not check what the origin sends on one for that credential; use a route without one".to_owned()
    })
}

/// `git push` over smart HTTP, in either of its two requests.
fn is_git_push(method: &Method, path: &str, query: Option<&str>) -> bool {
    let lower = path.to_ascii_lowercase();
    let decoded = percent_encoding::percent_decode_str(&lower).decode_utf8_lossy();
    decoded.ends_with("/git-receive-pack")
        || (*method == Method::GET
            && decoded.ends_with("/info/refs")
            && query.is_some_and(|q| {
                q.split('&').any(|kv| {
                    let kv = percent_encoding::percent_decode_str(kv).decode_utf8_lossy();
                    kv.eq_ignore_ascii_case("service=git-receive-pack")
                })
            }))
}

fn is_websocket(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The hop-by-hop headers (RFC 9110 7.6.1) and the ones that name others.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// What the agent sent that never goes on: hop-by-hop headers, its `Authorization`, its
/// own copy of the route's credential header, and `Host` (set from the target).
fn clean_request_headers(h: &mut HeaderMap, route: &Route, websocket: bool) {
    strip_hop_by_hop(h);
    h.remove(header::AUTHORIZATION);
    h.remove(header::HOST);
    if let Some(c) = &route.credential {
        if let AuthForm::Header(name) = &c.form {
            h.remove(name.as_str());
        }
        // The answer is scanned for the credential: compressed, an echo would pass unseen,
        // and asked for in ranges, it would come back in slices no scan sees whole.
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        h.remove(header::RANGE);
        h.remove(header::IF_RANGE);
    }
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// DLP on the URL: every layer of the path and query, each segment and value by its shape,
/// and under a wildcard route the labels left of its suffix.
fn scan_url(
    scanner: &DlpScope,
    route: &Route,
    host: &str,
    path_and_query: &str,
) -> Option<bottle_dlp::Finding> {
    if let crate::routes::HostPattern::Subdomains(suffix) = &route.host
        && let Some(labels) = host
            .strip_suffix(suffix.as_str())
            .and_then(|l| l.strip_suffix('.'))
        && let Some(mut f) = scanner.inspect_labels(labels)
    {
        f.rule = format!("{} in the host name", f.rule);
        return Some(f);
    }
    scanner.inspect_url(path_and_query)
}

/// DLP on the headers the agent sent (names and values); where the first finding is. The
/// proxy's own (`Proxy-Authorization`, the hop) and the one the route's credential replaces
/// are not the agent's to leak through.
fn scan_headers(
    scanner: &DlpScope,
    route: &Route,
    h: &HeaderMap,
    not_issued: impl Fn(&str) -> String,
) -> Option<(String, bottle_dlp::Finding)> {
    h.iter().find_map(|(name, v)| {
        // The name is the agent's too: `x-<hex of a token>: 1` carries as much as a value.
        if let Some(f) = scanner.inspect(name.as_str().as_bytes()) {
            return Some(("a header's name".to_owned(), f));
        }
        if *name == header::PROXY_AUTHORIZATION || *name == header::HOST {
            return None;
        }
        if *name == header::COOKIE {
            // Every layer of every cookie is judged; only the shape check spares the cookies
            // the site itself set.
            if let Some(f) = scanner.inspect(v.as_bytes()) {
                return Some((format!("header {name}"), f));
            }
            let own = not_issued(&String::from_utf8_lossy(v.as_bytes()));
            return scanner
                .inspect_header(name.as_str(), own.as_bytes(), false)
                .map(|f| (format!("header {name}"), f));
        }
        let injected = route.credential.as_ref().is_some_and(|c| match &c.form {
            AuthForm::Scheme(_) => *name == header::AUTHORIZATION,
            AuthForm::Header(h) => name.as_str().eq_ignore_ascii_case(h),
        });
        scanner
            .inspect_header(name.as_str(), v.as_bytes(), injected)
            .map(|f| (format!("header {name}"), f))
    })
}

/// The first response header that echoes a known value (the route's own credential).
fn echoed_header(scanner: &Scanner, h: &HeaderMap) -> Option<String> {
    h.iter()
        .find(|(_, v)| scanner.scan(v.as_bytes()).is_some())
        .map(|(name, _)| name.to_string())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A proxy over `table` that dials nothing anyone trusts, for unit tests of what wraps it.
#[cfg(test)]
pub(crate) fn for_tests(table: RouteTable) -> Arc<Proxy> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (bundle, _) = crate::ca::tests::sec1_ca();
    let way_out = WayOut::trusting_nothing();
    Arc::new(Proxy {
        active: ArcSwap::from_pointee(Active::new(table, &way_out).expect("active")),
        ca: Authority::from_pem(bundle.as_bytes(), provider).expect("CA"),
        way_out,
        log: AccessLog::new(false),
        hop: None,
        cookies: Default::default(),
        grant_uses: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_push_is_recognised_in_both_requests_and_disguises() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(is_git_push(
            &get,
            "/o/r.git/info/refs",
            Some("service=git-receive-pack")
        ));
        assert!(is_git_push(
            &get,
            "/o/r/info/refs",
            Some("x=1&SERVICE=git-receive-pack")
        ));
        assert!(is_git_push(
            &get,
            "/o/r/info/refs",
            Some("service=git%2dreceive-pack")
        ));
        assert!(is_git_push(&post, "/o/r.git/git-receive-pack", None));
        assert!(is_git_push(&post, "/o/r.git/GIT-RECEIVE-PACK", None));
        assert!(is_git_push(&post, "/o/r.git/git%2dreceive-pack", None));
        assert!(!is_git_push(
            &get,
            "/o/r.git/info/refs",
            Some("service=git-upload-pack")
        ));
        assert!(!is_git_push(&post, "/o/r.git/git-upload-pack", None));
    }

    #[test]
    fn the_agents_credentials_and_hop_headers_never_go_on() {
        let route = Route {
            host: crate::routes::HostPattern::Exact("api.anthropic.com".into()),
            path_allowlist: vec![],
            credential: Some(crate::routes::Credential {
                form: AuthForm::Header("x-api-key".into()),
                token_env: "EGRESS_TOKEN_0".into(),
                token: "real".into(),
            }),
            rules: Default::default(),
            forge: None,
            grant: None,
        };
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer fake"),
            ("x-api-key", "placeholder"),
            ("proxy-authorization", "Basic x"),
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("host", "evil.example"),
            ("accept", "*/*"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        clean_request_headers(&mut h, &route, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept-encoding", "accept"]);
        // The answer is scanned for the credential: asked for uncompressed.
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
    }

    #[test]
    fn a_block_names_its_reason_and_the_tool_to_ask() {
        let r = blocked(
            Block::NotAllowed,
            "pypi.org is not on this bottle's allowlist",
        );
        assert_eq!(r.status(), 403);
        let h = r.headers()["x-bottle-block"].to_str().unwrap();
        assert!(
            h.starts_with("not-allowlisted") && h.contains("request_host_access"),
            "{h}"
        );
    }
}
