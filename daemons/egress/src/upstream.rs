//! The way out: how egress reaches an origin, directly (with the SSRF guard) or through the
//! bundle's next proxy (pipelock) with a CONNECT tunnel, and with which TLS trust.
//!
//! `HTTP(S)_PROXY` in egress's own env is ignored on purpose: the chain is what the plan
//! says, never what an environment variable happens to hold.

use crate::guard;
use crate::routes::{StaticAddress, StaticHost};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Debian's system bundle, the roots upstream TLS trusts besides `--upstream-ca`.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A dial refused by the SSRF guard. The proxy finds it in an error's source chain and
/// answers 403 instead of 502.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {ip}, {why}; map it in `egress.hosts` if it is meant")]
pub struct Refused {
    /// The name asked for.
    pub host: String,
    /// The address it resolved to.
    pub ip: IpAddr,
    /// Which range.
    pub why: &'static str,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

/// Opens the TCP stream to an origin: direct with the guard, or tunnelled through the next proxy.
#[derive(Clone)]
pub enum Dialer {
    /// Resolve, check, connect to the checked address.
    Direct {
        /// Static host entries; these skip DNS and the guard.
        hosts: Arc<BTreeMap<String, IpAddr>>,
    },
    /// CONNECT through the next proxy; it resolves and guards.
    Chained(Tunnel<HttpConnector>),
}

impl Dialer {
    /// A dialer for `upstream` (`http://host:port`), or a direct one with these static hosts.
    pub fn new(
        upstream: Option<&Uri>,
        hosts: &BTreeMap<String, StaticHost>,
    ) -> Result<Self, String> {
        if let Some(proxy) = upstream {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(CONNECT_TIMEOUT));
            http.set_nodelay(true);
            return Ok(Dialer::Chained(Tunnel::new(proxy.clone(), http)));
        }
        Ok(Dialer::Direct {
            hosts: Arc::new(resolve_static(hosts)?),
        })
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Dialer::Direct { .. } => Poll::Ready(Ok(())),
            Dialer::Chained(t) => t.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Dialer::Chained(t) => {
                let fut = t.call(dst);
                Box::pin(async move {
                    let io = fut.await?;
                    crate::busy_poll::watch(io.inner());
                    Ok(io)
                })
            }
            Dialer::Direct { hosts } => {
                let hosts = hosts.clone();
                Box::pin(async move { dial_direct(&hosts, &dst).await })
            }
        }
    }
}

async fn dial_direct(
    hosts: &BTreeMap<String, IpAddr>,
    dst: &Uri,
) -> Result<TokioIo<TcpStream>, BoxError> {
    let host = dst
        .host()
        .ok_or("no host in the upstream URI")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let addrs: Vec<SocketAddr> = match hosts.get(&host) {
        Some(ip) => vec![SocketAddr::new(*ip, port)],
        None => {
            let found: Vec<SocketAddr> = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| format!("resolving {host} timed out"))?
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
            // Every address must pass: a name with one inside address is an inside name.
            if let Some(bad) = found.iter().find_map(|a| {
                guard::refusal(a.ip()).map(|why| Refused {
                    host: host.clone(),
                    ip: a.ip(),
                    why,
                })
            }) {
                return Err(Box::new(bad));
            }
            found
        }
    };
    let mut last: Option<std::io::Error> = None;
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                crate::busy_poll::watch(&s);
                return Ok(TokioIo::new(s));
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                ))
            }
        }
    }
    Err(match last {
        Some(e) => format!("cannot connect to {host}:{port}: {e}").into(),
        None => format!("{host} has no address").into(),
    })
}

/// Static entries with `host-gateway` turned into the engine's host-gateway address.
fn resolve_static(
    hosts: &BTreeMap<String, StaticHost>,
) -> Result<BTreeMap<String, IpAddr>, String> {
    let mut resolved = BTreeMap::new();
    for (name, entry) in hosts {
        let ip = match &entry.address {
            StaticAddress::Ip(ip) => *ip,
            StaticAddress::HostGateway => host_gateway(Path::new(ETC_HOSTS)).map_err(|e| {
                format!("hosts.{name}: `host-gateway` needs the engine's host-gateway address or a default gateway: {e}")
            })?,
        };
        resolved.insert(name.clone(), ip);
    }
    Ok(resolved)
}

/// The container's hosts file, where the engine writes its host-gateway address.
const ETC_HOSTS: &str = "/etc/hosts";

/// The engine's host-gateway address (what Docker means by `host-gateway`: docker0's address
/// by default), from the entry the host asks the engine for in `hosts`; else, with no such
/// entry (an engine that has none), the default gateway, which is the host too.
fn host_gateway(hosts: &Path) -> Result<IpAddr, String> {
    let text = std::fs::read_to_string(hosts).unwrap_or_default();
    let named = text.lines().find_map(|line| {
        let mut f = line.split('#').next()?.split_whitespace();
        let ip: IpAddr = f.next()?.parse().ok()?;
        f.any(|n| n == bottle_contract::egress::HOST_GATEWAY_NAME)
            .then_some(ip)
    });
    named.map_or_else(default_gateway, Ok)
}

/// The IPv4 default gateway from `/proc/net/route`: in a container, the Docker host.
fn default_gateway() -> Result<IpAddr, String> {
    let table = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| format!("cannot read /proc/net/route: {e}"))?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let raw = u32::from_str_radix(f[2], 16).map_err(|e| e.to_string())?;
            return Ok(IpAddr::V4(std::net::Ipv4Addr::from(raw.to_le_bytes())));
        }
    }
    Err("no default route".into())
}

/// The TLS trust for origins: the system roots plus each `--upstream-ca`.
pub fn client_tls(
    provider: Arc<CryptoProvider>,
    system_roots: &Path,
    extra: &[PathBuf],
) -> Result<ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(bytes) = std::fs::read(system_roots) {
        for cert in CertificateDer::pem_slice_iter(&bytes).flatten() {
            // The system bundle may hold a root rustls cannot use; the rest still count.
            let _ = roots.add(cert);
        }
    }
    for path in extra {
        let bytes =
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert =
                cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: holds no CERTIFICATE", path.display()));
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA to trust upstream: {} is missing and no --upstream-ca was given",
            system_roots.display()
        ));
    }
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The body egress sends upstream.
pub type UpBody = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;
/// A pooled client over the dialer.
pub type UpClient = Client<hyper_rustls::HttpsConnector<Dialer>, UpBody>;

/// What every [`Upstream`] is built from: the next proxy, if any, and the TLS trust.
#[derive(Clone)]
pub struct WayOut {
    /// The next proxy (`http://host:port`), or none to dial directly.
    pub next_proxy: Option<Uri>,
    /// The trust for origins' certificates.
    pub tls: ClientConfig,
}

impl WayOut {
    /// Whether egress dials out itself (so it is the whole firewall).
    pub fn is_direct(&self) -> bool {
        self.next_proxy.is_none()
    }

    /// A direct way out that trusts no origin's certificate, for tests of what wraps it.
    #[cfg(test)]
    pub(crate) fn trusting_nothing() -> WayOut {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        WayOut {
            next_proxy: None,
            tls,
        }
    }

    /// Clients that dial with these static hosts. Each route table gets its own, with its own
    /// connection pools, so a reload that changes a name's address changes it for every
    /// request at once, pooled connections included.
    pub fn upstream(&self, hosts: &BTreeMap<String, StaticHost>) -> Result<Upstream, String> {
        let dialer = Dialer::new(self.next_proxy.as_ref(), hosts)?;
        Ok(Upstream::new(dialer, self.tls.clone()))
    }
}

/// Two pooled clients: one that negotiates h2 or h1 by ALPN, and an h1-only one for
/// requests the agent sent as HTTP/1.x and for WebSocket upgrades (an upgrade needs HTTP/1.1
/// end to end).
#[derive(Clone)]
pub struct Upstream {
    /// For requests the agent sent as HTTP/2.
    pub client: UpClient,
    /// For requests the agent sent as HTTP/1.x, `Upgrade: websocket` among them.
    pub h1_client: UpClient,
}

impl Upstream {
    /// Build both clients.
    fn new(dialer: Dialer, tls: ClientConfig) -> Self {
        let any = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(dialer.clone());
        let h1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(dialer.clone());
        let build = |c| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .build(c)
        };
        Upstream {
            client: build(any),
            h1_client: build(h1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_before_any_connect() {
        let hosts = BTreeMap::new();
        let e = dial_direct(&hosts, &"http://localhost:9/".parse().unwrap())
            .await
            .unwrap_err();
        let refused = e.downcast_ref::<Refused>().expect("a guard refusal");
        assert_eq!(refused.why, "loopback");
        assert!(e.to_string().contains("egress.hosts"), "{e}");
    }

    #[tokio::test]
    async fn a_mapped_name_skips_the_guard_and_dials_the_mapped_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hosts = BTreeMap::from([("origin.test".to_owned(), "127.0.0.1".parse().unwrap())]);
        let dst: Uri = format!("http://origin.test:{port}/").parse().unwrap();
        dial_direct(&hosts, &dst).await.unwrap();
    }

    #[test]
    fn upstream_trust_needs_some_root() {
        let p = Arc::new(rustls::crypto::ring::default_provider());
        let e = client_tls(p, Path::new("/nonexistent"), &[]).unwrap_err();
        assert!(e.contains("no CA"), "{e}");
    }

    #[test]
    fn host_gateway_is_the_engines_entry_in_the_hosts_file() {
        let d = tempfile::tempdir().unwrap();
        let hosts = d.path().join("hosts");
        std::fs::write(
            &hosts,
            "127.0.0.1\tlocalhost\n# 10.9.9.9 bottle-host-gateway\n172.17.0.1\tbottle-host-gateway\n172.20.0.2\tabc123\n",
        )
        .unwrap();
        assert_eq!(host_gateway(&hosts).unwrap(), IpAddr::from([172, 17, 0, 1]));
        // No entry: the default gateway (the host too), whatever this machine's is.
        std::fs::write(&hosts, "127.0.0.1\tlocalhost\n").unwrap();
        assert_eq!(host_gateway(&hosts).ok(), default_gateway().ok());
    }
}
