//! A real origin for tests (feature `testing`): HTTP and HTTPS with its own test CA, on
//! loopback or any address the test picks. Real clients (curl, git, Python) talk to it through
//! egress, so what it echoes is what the origin really received.
//!
//! Endpoints: `/echo` (the request as JSON: method, path, headers with credentials as
//! [`fingerprint`]s, body length),
//! `/echo-auth` (the `Authorization` value as the body), `/sse` (one event, a pause, a second
//! event), `/bytes/N` (N bytes), `/ws` (WebSocket echo of text frames), and every other path
//! under `/git/` served from a directory (git's dumb HTTP protocol).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Body = BoxBody<Bytes, std::io::Error>;

/// A CA and one leaf it signed, as PEM.
pub struct TestPki {
    /// The CA certificate (what a client trusts).
    pub ca_pem: String,
    /// The CA as bottle writes it: SEC1 key, then certificate (egress's `--ca`).
    pub ca_bundle_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_key: PrivatePkcs8KeyDer<'static>,
}

impl TestPki {
    /// A fresh CA and a leaf for `names` (host names or IP literals).
    pub fn new(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "bottle test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut leaf =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        leaf.distinguished_name.push(DnType::CommonName, names[0]);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
        use p256::pkcs8::DecodePrivateKey;
        let sec1 = p256::SecretKey::from_pkcs8_der(&issuer.key().serialize_der())
            .expect("p256")
            .to_sec1_pem(Default::default())
            .expect("sec1");
        TestPki {
            ca_pem: ca_cert.pem(),
            ca_bundle_pem: format!("{}{}", *sec1, ca_cert.pem()),
            leaf_der: leaf_cert.der().clone(),
            leaf_key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        }
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![self.leaf_der.clone()],
            PrivateKeyDer::Pkcs8(self.leaf_key.clone_key()),
        )
        .expect("cert");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg
    }

    /// Write the CA certificate to `dir/name` and return the path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.ca_pem).expect("write CA");
        p
    }
}

/// A running origin.
pub struct Origin {
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// HTTPS address.
    pub https: SocketAddr,
    /// How many requests it has answered (over either address).
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    /// Every request it got, as `METHOD /path` (no query), in order.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Origin {
    /// Start on `ip` (ports picked by the OS), serving `/git/` from `git_root`.
    pub async fn start(ip: std::net::IpAddr, pki: &TestPki, git_root: PathBuf) -> Origin {
        Origin::start_at((ip, 0).into(), (ip, 0).into(), pki, git_root).await
    }

    /// Start with plain HTTP on `http` and HTTPS on `https`, serving `/git/` from `git_root`.
    pub async fn start_at(
        http: SocketAddr,
        https: SocketAddr,
        pki: &TestPki,
        git_root: PathBuf,
    ) -> Origin {
        let bind = |a: SocketAddr| async move {
            tokio::net::TcpListener::bind(a)
                .await
                .unwrap_or_else(|e| panic!("the test origin cannot listen on {a}: {e}"))
        };
        let http = bind(http).await;
        let https = bind(https).await;
        let addrs = Origin {
            http: http.local_addr().expect("addr"),
            https: https.local_addr().expect("addr"),
            hits: Arc::default(),
            seen: Arc::default(),
        };
        let log = Log {
            root: Arc::new(git_root),
            hits: addrs.hits.clone(),
            seen: addrs.seen.clone(),
        };
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = http.accept().await {
                // As real servers do: without it, the last part of a large answer waits on
                // the peer's delayed acknowledgement (40 ms) and the benchmarks measure that.
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(TokioIo::new(s), l.clone()));
            }
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
        tokio::spawn(async move {
            while let Ok((s, _)) = https.accept().await {
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        serve(TokioIo::new(tls), log).await;
                    }
                });
            }
        });
        addrs
    }
}

/// What every connection of an origin shares: the served git root and its request log.
#[derive(Clone)]
struct Log {
    root: Arc<PathBuf>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn serve<IO>(io: TokioIo<IO>, log: Log)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        log.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut seen) = log.seen.lock() {
            seen.push(format!("{} {}", req.method(), req.uri().path()));
        }
        handle(req, log.root.clone())
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn handle(
    mut req: Request<Incoming>,
    root: Arc<PathBuf>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        return Ok(websocket(&mut req));
    }
    let resp = match path.as_str() {
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    // Credentials come back as fingerprints: echoing one would (rightly) be cut.
                    let shown = if k == http::header::AUTHORIZATION || k == "x-api-key" {
                        fingerprint(v.as_bytes())
                    } else {
                        String::from_utf8_lossy(v.as_bytes()).into_owned()
                    };
                    (k.to_string(), shown.into())
                })
                .collect();
            let method = req.method().to_string();
            let version = format!("{:?}", req.version());
            let query = req.uri().query().unwrap_or("").to_owned();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let j = serde_json::json!({
                "method": method, "path": path, "query": query, "version": version,
                "headers": headers, "body_len": body.len(),
            });
            Response::new(full(j.to_string()))
        }
        "/set-cookie" => {
            // A session id as a site would mint one: random, base64url.
            use base64::Engine;
            use std::hash::BuildHasher;
            let state = std::collections::hash_map::RandomState::new();
            let bytes: Vec<u8> = (0u8..3)
                .flat_map(|i| state.hash_one(i).to_le_bytes())
                .collect();
            let sid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..18]);
            let mut r = Response::new(full("session set"));
            if let Ok(v) = http::HeaderValue::from_str(&format!("sid={sid}; Path=/; HttpOnly")) {
                r.headers_mut().insert(http::header::SET_COOKIE, v);
            }
            r
        }
        "/gzip" => {
            // Compressed whatever the request asked for, as a misbehaving origin answers.
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = gz.write_all(b"compressed anyway");
            let mut r = Response::new(full(gz.finish().unwrap_or_default()));
            r.headers_mut().insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
            r
        }
        "/echo-auth" => {
            let v = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            Response::new(full(v))
        }
        "/sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: first\n\n"))))
                    .await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from("data: second\n\n"))))
                    .await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        p if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            Response::new(full(vec![b'x'; n.min(64 << 20)]))
        }
        p if p.starts_with("/git/") && !p.contains("..") => {
            match std::fs::read(root.join(&p["/git/".len()..])) {
                Ok(b) => Response::new(full(b)),
                Err(_) => status(StatusCode::NOT_FOUND),
            }
        }
        _ => status(StatusCode::NOT_FOUND),
    };
    Ok(resp)
}

/// `sha256:<hex>` of a credential, as `/echo` reports it.
pub fn fingerprint(value: &[u8]) -> String {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(s.to_string()));
    *r.status_mut() = s;
    r
}

/// RFC 6455's accept key.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return status(StatusCode::BAD_REQUEST);
    };
    // permessage-deflate with no context takeover either way: each echoed message is the
    // client's own compressed message, which it can inflate on its own.
    let deflate = req
        .headers()
        .get("sec-websocket-extensions")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("permessage-deflate"));
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let mut io = TokioIo::new(up);
        // Echo frames until close: small frames only, which is all the tests send.
        loop {
            let mut head = [0u8; 2];
            if io.read_exact(&mut head).await.is_err() {
                return;
            }
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let mut len = u64::from(head[1] & 0x7f);
            if len == 126 {
                let mut b = [0u8; 2];
                if io.read_exact(&mut b).await.is_err() {
                    return;
                }
                len = u64::from(u16::from_be_bytes(b));
            } else if len == 127 {
                return;
            }
            let mut mask = [0u8; 4];
            if masked && io.read_exact(&mut mask).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; len as usize];
            if io.read_exact(&mut payload).await.is_err() {
                return;
            }
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            // FIN and RSV1 as they came: a fragmented or compressed message echoes as one.
            let mut frame = vec![head[0] & 0xcf];
            if payload.len() < 126 {
                frame.push(payload.len() as u8);
            } else {
                frame.push(126);
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            frame.extend_from_slice(&payload);
            if io.write_all(&frame).await.is_err() || opcode == 0x8 {
                return;
            }
        }
    });
    let mut r = status(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&accept_key(&key)) {
        h.insert("sec-websocket-accept", v);
    }
    if deflate {
        h.insert(
            "sec-websocket-extensions",
            http::HeaderValue::from_static(
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            ),
        );
    }
    r
}
