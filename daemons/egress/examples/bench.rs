//! The two ends of `benches/egress.sh`: a real origin, and a load generator that speaks
//! through a forward proxy the way an agent's client does (absolute-form HTTP, or CONNECT and
//! TLS with keep-alive).
//!
//! ```text
//! bench origin DIR [ADDR [NAME...]]     # prints `http=PORT https=PORT`, writes DIR/origin-ca.pem
//! bench load URL [--proxy http://H:P] [--cacert F] [--connections N] [--seconds S] [--warmup S]
//!                [--body FILE] [--header NAME:VALUE]
//! bench relay [HOLD_US]                 # prints `relay=PORT`
//! ```
//!
//! `relay` is the floor the proxies are measured against: a forward proxy on one thread that
//! does nothing but copy bytes (it answers CONNECT and opens the absolute-form request's
//! origin, then relays; no parsing after that, no TLS of its own, no routing, no scan). It
//! polls before it sleeps as egress does (`bottle_egress::busy_poll`): no proxy built that way
//! can beat its one-connection rate on the same cores, the hops it pays are every such
//! proxy's. With `HOLD_US`, it holds every read's bytes that long (spinning) before passing
//! them on: what a proxy's time per request costs at one connection (time only: real work
//! would cost caches and calls too).
//!
//! With `--body`, each request is a POST of the file's bytes (with `--header`s such as
//! `content-encoding:gzip`); without, a GET.
//!
//! `load` prints one JSON line: requests, req/s, p50 and p99 latency in microseconds.

use bottle_egress::testing::{Origin, TestPki};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("relay") {
        let hold = match &args[1..] {
            [] => Some(Duration::ZERO),
            [us] => us.parse().ok().map(Duration::from_micros),
            _ => None,
        };
        let Some(hold) = hold else {
            eprintln!("usage: bench relay [HOLD_US]");
            std::process::exit(2);
        };
        // One thread, as the proxies measured beside it get one core and one worker, and it
        // polls before sleeping as egress does.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(bottle_egress::busy_poll::before_sleep)
            .build()
            .expect("runtime");
        return rt.block_on(relay(hold));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("origin") => rt.block_on(origin(&args[1..])),
        Some("load") => rt.block_on(load(&args[1..])),
        _ => {
            eprintln!("usage: bench origin DIR | bench load URL [options] | bench relay [HOLD_US]")
        }
    }
}

/// An origin on `ADDR` (loopback by default) answering as `NAME`s (`localhost` and
/// `127.0.0.1` by default).
async fn origin(args: &[String]) {
    let dir = &args[0];
    let addr = args.get(1).map_or("127.0.0.1", String::as_str);
    let names: Vec<&str> = if args.len() > 2 {
        args[2..].iter().map(String::as_str).collect()
    } else {
        vec!["localhost", "127.0.0.1"]
    };
    let pki = TestPki::new(&names);
    pki.write_ca(std::path::Path::new(dir), "origin-ca.pem");
    let o = Origin::start(addr.parse().expect("ADDR"), &pki, dir.into()).await;
    println!("http={} https={}", o.http.port(), o.https.port());
    std::future::pending::<()>().await;
}

/// The byte relay (see the module's docs): prints its port, then serves until killed.
async fn relay(hold: Duration) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("relay={}", listener.local_addr().expect("addr").port());
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = relay_one(client, hold).await;
        });
    }
}

/// One client connection: its first request's head names the origin (CONNECT's target or the
/// absolute-form URL's authority); everything after is copied both ways untouched.
async fn relay_one(mut client: TcpStream, hold: Duration) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    bottle_egress::busy_poll::watch(&client);
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut b).await?;
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text.split(' ').nth(1).unwrap_or_default();
    let connect = text.starts_with("CONNECT ");
    let authority = if connect {
        target
    } else {
        let rest = target.strip_prefix("http://").unwrap_or(target);
        rest.split('/').next().unwrap_or_default()
    };
    let authority = authority.replace("localhost:", "127.0.0.1:");
    let mut origin = TcpStream::connect(authority.as_str()).await?;
    origin.set_nodelay(true)?;
    bottle_egress::busy_poll::watch(&origin);
    if connect {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        origin.write_all(&head).await?;
    }
    if hold.is_zero() {
        tokio::io::copy_bidirectional(&mut client, &mut origin).await?;
    } else {
        let (mut client, mut origin) = (Held::new(client, hold), Held::new(origin, hold));
        tokio::io::copy_bidirectional(&mut client, &mut origin).await?;
    }
    Ok(())
}

/// A stream whose reads are held `hold` (the thread spinning, as work would keep it) once
/// they bring bytes.
struct Held {
    io: TcpStream,
    hold: Duration,
}

impl Held {
    fn new(io: TcpStream, hold: Duration) -> Held {
        Held { io, hold }
    }
}

impl tokio::io::AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let t = Instant::now();
            while t.elapsed() < self.hold {
                std::hint::spin_loop();
            }
        }
        read
    }
}

impl tokio::io::AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct Opts {
    url: hyper::Uri,
    proxy: Option<String>,
    cacert: Option<String>,
    connections: usize,
    seconds: f64,
    warmup: f64,
    body: Option<Bytes>,
    headers: Vec<(String, String)>,
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        url: args[0].parse().expect("URL"),
        proxy: None,
        cacert: None,
        connections: 1,
        seconds: 5.0,
        warmup: 1.0,
        body: None,
        headers: Vec::new(),
    };
    let mut i = 1;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--proxy" => o.proxy = Some(v.trim_start_matches("http://").to_owned()),
            "--cacert" => o.cacert = Some(v),
            "--connections" => o.connections = v.parse().expect("N"),
            "--seconds" => o.seconds = v.parse().expect("S"),
            "--warmup" => o.warmup = v.parse().expect("S"),
            "--body" => o.body = Some(Bytes::from(std::fs::read(&v).expect("body file"))),
            "--header" => {
                let (k, val) = v.split_once(':').expect("NAME:VALUE");
                o.headers.push((k.to_owned(), val.to_owned()));
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive connection to the origin, through the proxy when there is one.
async fn connect(o: &Opts) -> Sender {
    let host = o.url.host().expect("host").to_owned();
    let https = o.url.scheme_str() == Some("https");
    let port = o.url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut tcp = match &o.proxy {
        Some(p) => TcpStream::connect(p).await.expect("proxy"),
        None => TcpStream::connect((host.as_str(), port))
            .await
            .expect("origin"),
    };
    tcp.set_nodelay(true).ok();
    if https {
        if o.proxy.is_some() {
            tcp.write_all(
                format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
            )
            .await
            .expect("CONNECT");
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tcp.read_exact(&mut b).await.expect("CONNECT answer");
                head.push(b[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
        }
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(o.cacert.as_ref().expect("--cacert for https")).expect("CA");
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("PEM")).expect("CA");
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls_pki_types::ServerName::try_from(host.clone()).expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("TLS");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        send
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        send
    }
}

async fn load(args: &[String]) {
    let o = Arc::new(parse(args));
    let start = Instant::now();
    let warm_until = start + Duration::from_secs_f64(o.warmup);
    let end = warm_until + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let o = o.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(&o).await;
            let mut lat: Vec<u32> = Vec::new();
            // Absolute-form for plain HTTP through a proxy; origin-form otherwise.
            let target = if o.proxy.is_some() && o.url.scheme_str() == Some("http") {
                o.url.to_string()
            } else {
                o.url.path_and_query().map_or("/".into(), |p| p.to_string())
            };
            let authority = o.url.authority().expect("authority").to_string();
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let mut req = Request::builder()
                    .method(if o.body.is_some() { "POST" } else { "GET" })
                    .uri(target.as_str())
                    .header("host", authority.as_str())
                    .header("authorization", "Bearer placeholder");
                for (k, v) in &o.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let req = req
                    .body(Full::new(o.body.clone().unwrap_or_default()))
                    .expect("request");
                let resp = send.send_request(req).await.expect("response");
                assert!(resp.status().is_success(), "status {}", resp.status());
                resp.into_body().collect().await.expect("body");
                if t >= warm_until {
                    lat.push(t.elapsed().as_micros() as u32);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"requests\":{},\"rps\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        all.len(),
        all.len() as f64 / o.seconds,
        pct(0.5),
        pct(0.99)
    );
}
