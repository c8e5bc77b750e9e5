//! Clients that ignore the proxy env, against the real `bottle-egress` on loopback: egress as
//! the agent's DNS server, and TLS and HTTP sent straight to it (routed by SNI and `Host`),
//! through the same route table, injection and DLP as the proxy path.
//!
//! The direct ports listen on 127.0.0.3 on the origin's own port numbers, so the port the
//! client dials is the origin's, as 443 is in a bottle.

mod common;

use bottle_egress::testing::fingerprint;
use common::{Rig, TOKEN, json, routes};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// The direct addresses from egress's start line.
fn direct_addrs(rig: &Rig) -> (SocketAddr, SocketAddr, SocketAddr) {
    let start = rig.log_lines().remove(0);
    let field = |label: &str| -> SocketAddr {
        start
            .split(label)
            .nth(1)
            .and_then(|r| r.split([',', ' ', '"']).next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {label} in {start}"))
    };
    (field("DNS on "), field("TLS on "), field("HTTP on "))
}

/// A rig whose egress serves `agent` directly, its TLS and HTTP ports on 127.0.0.3 at the
/// origin's HTTPS and HTTP ports.
fn rig(agent: &str) -> Rig {
    // The origin's ports are known only once it runs: start a throwaway rig to learn a pair
    // that is free on 127.0.0.1, then the real one whose direct ports take the same numbers.
    let mut rig = Rig::new();
    let (https, http) = (rig.origin.https.port(), rig.origin.http.port());
    let args = [
        "--agent-host".to_owned(),
        agent.to_owned(),
        "--direct-dns".to_owned(),
        "127.0.0.3:0".to_owned(),
        "--direct-https".to_owned(),
        format!("127.0.0.3:{https}"),
        "--direct-http".to_owned(),
        format!("127.0.0.3:{http}"),
    ];
    let (egress, proxy, log) = common::spawn_egress(
        rig.dir.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let _ = rig.egress.kill();
    let _ = rig.egress.wait();
    rig.egress = egress;
    rig.proxy = proxy;
    rig.log = log;
    rig
}

/// curl with no proxy at all, `name` resolved to egress's direct address.
fn curl_direct(rig: &Rig, name: &str, url: &str, extra: &[&str]) -> (u16, String) {
    let (_, https, _) = direct_addrs(rig);
    let port = url
        .rsplit_once(':')
        .and_then(|(_, p)| p.split('/').next())
        .unwrap_or_default();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--noproxy", "*"])
        .arg("--resolve")
        .arg(format!("{name}:{port}:{}", https.ip()))
        .arg("--cacert")
        .arg(rig.path("egress-ca.pem"))
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = if out.status.success() {
        text
    } else {
        format!("{}{text}", String::from_utf8_lossy(&out.stderr))
    };
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Ask egress's resolver for `name`; `None` when no answer comes.
fn resolve(dns: SocketAddr, name: &str, kind: RecordType) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut q = Message::new();
    q.set_id(4242)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    s.send_to(&q.to_vec().unwrap(), dns).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(Message::from_vec(&buf[..n]).unwrap())
}

#[test]
fn a_client_without_a_proxy_gets_out_the_allowed_way_with_the_token_injected() {
    let rig = rig("127.0.0.1");
    let (dns, _, http) = direct_addrs(&rig);
    // The resolver: an allowed name is egress's own address, anything else does not exist.
    let a = resolve(dns, "origin.test.", RecordType::A).expect("an answer");
    assert_eq!(a.response_code(), ResponseCode::NoError);
    let ips: Vec<String> = a.answers().iter().map(|r| r.data().to_string()).collect();
    assert_eq!(ips, ["127.0.0.1"], "egress's address toward the asker");
    for name in ["unlisted.test.", "dGhlLXRva2Vu.origin.test.evil.test."] {
        let r = resolve(dns, name, RecordType::A).expect("an answer");
        assert_eq!(r.response_code(), ResponseCode::NXDomain, "{name}");
    }

    // TLS straight to egress, routed by its server name: the real token goes on.
    let port = rig.origin.https.port();
    let url = format!("https://origin.test:{port}/echo");
    let (code, body) = curl_direct(
        &rig,
        "origin.test",
        &url,
        &["-H", "Authorization: Bearer placeholder"],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["headers"]["authorization"],
        fingerprint(format!("Bearer {TOKEN}").as_bytes())
    );
    // The name sent in TLS is the target: a Host naming another host inside it is refused.
    let (code, body) = curl_direct(&rig, "origin.test", &url, &["-H", "Host: unlisted.test"]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("inside a tunnel to origin.test"), "{body}");
    // An unlisted name sent straight: refused with the reason, never dialled.
    let (code, body) = curl_direct(
        &rig,
        "unlisted.test",
        &format!("https://unlisted.test:{port}/"),
        &[],
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not on this bottle's allowlist"), "{body}");
    // DLP holds on this path too.
    let (code, body) = curl_direct(
        &rig,
        "plain.test",
        &format!("https://plain.test:{port}/echo?k=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"),
        &[],
    );
    assert_eq!(code, 403, "{body}");
    // TLS with no server name cannot be routed: closed.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--noproxy", "*", "-k"])
        .arg(format!("https://127.0.0.3:{port}/"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    rig.wait_for_log("without a server name (SNI)");

    // Plain HTTP, routed by Host; a credential never goes over it.
    let hport = http.port();
    let (code, body) = curl_direct(
        &rig,
        "plain.test",
        &format!("http://plain.test:{hport}/echo"),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl_direct(
        &rig,
        "origin.test",
        &format!("http://origin.test:{hport}/echo"),
        &[],
    );
    assert_eq!(code, 403, "{body}");
    let _ = http;
}

/// A request target that is not a path (`*`, an absolute form's authority is dropped anyway)
/// is refused, never dialled: the origin's URL is the route's authority and the path, and
/// anything else after the authority would change what it names.
#[test]
fn a_request_target_that_is_not_a_path_is_refused_not_dialled() {
    use std::io::{Read, Write};
    let rig = rig("127.0.0.1");
    let (_, _, http) = direct_addrs(&rig);
    for method in ["GET", "OPTIONS"] {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} * HTTP/1.1\r\nHost: plain.test:{}\r\nConnection: close\r\n\r\n",
            http.port()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{method}: {answer}");
        assert!(answer.contains("not a path"), "{method}: {answer}");
    }
    assert_eq!(
        rig.origin.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the origin"
    );
}

/// The direct ports carry no hop token, so they serve the agent's address alone: anyone else
/// (a local process on the host) gets no DNS answer and a closed connection.
#[test]
fn the_direct_ports_serve_the_agent_alone() {
    let rig = rig("127.0.0.9");
    let (dns, _, _) = direct_addrs(&rig);
    assert!(resolve(dns, "origin.test.", RecordType::A).is_none());
    let port = rig.origin.https.port();
    let (code, body) = curl_direct(
        &rig,
        "origin.test",
        &format!("https://origin.test:{port}/echo"),
        &[],
    );
    assert_eq!(code, 0, "{body}");
    rig.wait_for_log("it is not the agent");
    assert_eq!(
        rig.origin.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the origin"
    );
    let _ = routes("");
}

/// Where ports below 1024 stay privileged (egress never runs as root), the proxy still serves
/// and the start line says that clients without a proxy cannot get out.
#[test]
fn without_low_ports_the_proxy_still_serves_and_says_why_direct_is_off() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt as _;
    let rig = Rig::new();
    // An unprivileged user, where this machine keeps ports below 1024 privileged.
    let mut cmd = if rustix::process::getuid().is_root() {
        for f in ["", "routes.yaml", "egress-bundle.pem", "origin-ca.pem"] {
            let mode = if f.is_empty() { 0o755 } else { 0o644 };
            std::fs::set_permissions(rig.path(f), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_bottle-egress"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_bottle-egress"))
    };
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--routes"])
        .arg(rig.path("routes.yaml"))
        .arg("--ca")
        .arg(rig.path("egress-bundle.pem"))
        .args(["--agent-host", "127.0.0.1", "--direct-dns", "127.0.0.3:53"])
        .args([
            "--direct-https",
            "127.0.0.3:443",
            "--direct-http",
            "127.0.0.3:80",
        ])
        .env_clear()
        .env("EGRESS_TOKEN_0", TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok)
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.contains("listening on 127.0.0.1:")
            && first.contains(
                "no DNS, TLS or HTTP for clients without a proxy: cannot listen on 127.0.0.3:53"
            ),
        "{first}"
    );
}
