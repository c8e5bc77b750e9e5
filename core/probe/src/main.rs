//! `bottle-probe PLAN_JSON`: tries every way out of the agent container it knows, as the
//! agent's own user, and prints what happened as a JSON array of findings.
//!
//! Static (musl), mounted read-only into the agent by `bottle verify`: it needs nothing from
//! the agent's image. Every probe that needs a listener uses one the suite started on an
//! address it created; no probe sends anything anywhere else.

use bottle_probe::{Finding, Plan};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// How long one connection attempt may take before it counts as refused.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a proxied request may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let plan: Plan = match std::env::args().nth(1).map(|a| serde_json::from_str(&a)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("bottle-probe: the plan is not valid JSON: {e}");
            std::process::exit(2);
        }
        None => {
            eprintln!("usage: bottle-probe PLAN_JSON (run by `bottle verify`)");
            std::process::exit(2);
        }
    };
    let mut out = identity(&plan);
    out.push(root_fs());
    out.extend(raw_sockets());
    out.push(mknod());
    out.push(setuid_file(&plan.workdir));
    out.extend(git_writes(&plan.workdir));
    out.push(docker_socket());
    out.push(gateway_route());
    out.push(ipv6());
    out.push(dns(&plan.dns_name));
    out.extend(listeners(&plan));
    out.push(bundle_ports(&plan));
    out.push(private_keys());
    out.extend(proxied(&plan));
    println!(
        "{}",
        serde_json::to_string(&out).expect("findings are plain data")
    );
}

/// The fields of `/proc/self/status` the kernel reports for this process.
fn status_field(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

fn identity(plan: &Plan) -> Vec<Finding> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| status_field(&status, k).unwrap_or_else(|| "?".into());
    let uid = get("Uid");
    let euid = uid.split_whitespace().nth(1).unwrap_or("?").to_owned();
    let mut v = vec![Finding::new(
        "uid",
        "run as an unprivileged user",
        format!(
            "uid {euid}, gid {}",
            get("Gid").split_whitespace().nth(1).unwrap_or("?")
        ),
        euid != "0" || plan.root_granted,
    )];
    let caps: Vec<(String, String)> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .iter()
        .map(|k| ((*k).to_owned(), get(k)))
        .collect();
    let none = caps
        .iter()
        .all(|(_, v)| v.chars().all(|c| c == '0') && !v.is_empty());
    v.push(Finding::new(
        "capabilities",
        "hold any kernel capability (effective, permitted, bounding, ambient)",
        caps.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        none,
    ));
    let nnp = get("NoNewPrivs");
    v.push(Finding::new(
        "no-new-privileges",
        "gain privileges through a setuid binary",
        format!("NoNewPrivs {nnp}"),
        nnp == "1",
    ));
    let seccomp = get("Seccomp");
    v.push(Finding::new(
        "seccomp",
        "run without a syscall filter",
        format!("Seccomp {seccomp} (2 is filtered)"),
        seccomp == "2",
    ));
    v
}

/// A unique file name for this run.
fn scratch_name(stem: &str) -> String {
    format!(".bottle-probe-{stem}-{}", std::process::id())
}

fn root_fs() -> Finding {
    let mut wrote = Vec::new();
    for dir in ["/", "/usr", "/etc", "/usr/local/bin"] {
        let p = Path::new(dir).join(scratch_name("root"));
        if std::fs::write(&p, b"x").is_ok() {
            let _ = std::fs::remove_file(&p);
            wrote.push(dir);
        }
    }
    Finding::new(
        "root-fs",
        "write into /, /usr, /etc and /usr/local/bin",
        if wrote.is_empty() {
            "refused everywhere (read-only root)".to_owned()
        } else {
            format!("wrote into {}", wrote.join(", "))
        },
        wrote.is_empty(),
    )
}

fn raw_sockets() -> Vec<Finding> {
    use rustix::net::{AddressFamily, SocketType, ipproto, socket};
    let tries = [
        (
            "raw-socket",
            "open a raw IPv4 socket (ICMP, spoofing)",
            AddressFamily::INET,
            Some(ipproto::ICMP),
        ),
        (
            "packet-socket",
            "open a packet socket (sniff, forge frames)",
            AddressFamily::PACKET,
            None,
        ),
    ];
    tries
        .into_iter()
        .map(
            |(id, what, family, proto)| match socket(family, SocketType::RAW, proto) {
                Ok(_) => Finding::new(id, what, "opened", false),
                Err(e) => Finding::new(id, what, format!("refused: {e}"), true),
            },
        )
        .collect()
}

fn mknod() -> Finding {
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    let p = Path::new("/tmp").join(scratch_name("dev"));
    match mknodat(
        CWD,
        &p,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    ) {
        Ok(()) => {
            let _ = std::fs::remove_file(&p);
            Finding::new(
                "mknod",
                "create a device node",
                "created /dev/null's twin in /tmp",
                false,
            )
        }
        Err(e) => Finding::new(
            "mknod",
            "create a device node",
            format!("refused: {e}"),
            true,
        ),
    }
}

fn setuid_file(workdir: &str) -> Finding {
    use std::os::unix::fs::PermissionsExt;
    let what = "leave a setuid-root program in the working dir";
    let p = Path::new(workdir).join(scratch_name("suid"));
    if let Err(e) = std::fs::write(&p, b"#!/bin/sh\n") {
        return Finding::new(
            "setuid-file",
            what,
            format!("cannot create a file there: {e}"),
            true,
        );
    }
    let chown = std::os::unix::fs::chown(&p, Some(0), Some(0));
    let chmod = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755));
    let meta = std::fs::metadata(&p);
    let _ = std::fs::remove_file(&p);
    let Ok(meta) = meta else {
        return Finding::new("setuid-file", what, "the file vanished", true);
    };
    use std::os::unix::fs::MetadataExt;
    let root_setuid = meta.uid() == 0 && meta.mode() & 0o4000 != 0;
    Finding::new(
        "setuid-file",
        what,
        format!(
            "chown to root: {}; chmod 4755: {}; the file is owned by uid {}",
            chown.map_or_else(|e| format!("refused ({e})"), |()| "done".into()),
            chmod.map_or_else(|e| format!("refused ({e})"), |()| "done".into()),
            meta.uid()
        ),
        !root_setuid,
    )
}

/// What of the repo's `.git` the host's own git runs: hooks, config, a `core.hooksPath` dir.
fn git_writes(workdir: &str) -> Vec<Finding> {
    let git = Path::new(workdir).join(".git");
    if !git.is_dir() {
        return vec![Finding::skip(
            "git-hooks",
            "plant a git hook or git config the host's git runs",
            "the working dir holds no .git",
        )];
    }
    let mut v = Vec::new();
    let hook = git.join("hooks").join("post-checkout");
    let planted = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&hook)
        .map(|_| {
            let _ = std::fs::remove_file(&hook);
        });
    v.push(Finding::new(
        "git-hooks",
        "plant .git/hooks/post-checkout",
        planted
            .as_ref()
            .map_or_else(|e| format!("refused: {e}"), |()| "planted".into()),
        planted.is_err(),
    ));
    let config = git.join("config");
    let opened = std::fs::OpenOptions::new().append(true).open(&config);
    v.push(Finding::new(
        "git-config",
        "append core.fsmonitor to .git/config",
        opened
            .as_ref()
            .map_or_else(|e| format!("refused: {e}"), |_| "opened for writing".into()),
        opened.is_err(),
    ));
    // A submodule's git dir: hooks of its own, run by the host's `git submodule update`.
    if let Some(hooks) = std::fs::read_dir(git.join("modules"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("hooks"))
        .find(|h| h.is_dir())
    {
        let p = hooks.join("post-checkout");
        let planted = std::fs::write(&p, b"#!/bin/sh\n");
        let _ = std::fs::remove_file(&p);
        v.push(Finding::new(
            "git-submodule-hooks",
            format!("plant a hook in {}", hooks.display()),
            planted
                .as_ref()
                .map_or_else(|e| format!("refused: {e}"), |()| "planted".into()),
            planted.is_err(),
        ));
    }
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    if let Some(dir) = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("hookspath")
            .then(|| v.trim().to_owned())
    }) {
        let dir = if Path::new(&dir).is_absolute() {
            Path::new(&dir).to_owned()
        } else {
            Path::new(workdir).join(dir)
        };
        let p = dir.join(scratch_name("hook"));
        let planted = std::fs::write(&p, b"#!/bin/sh\n");
        let _ = std::fs::remove_file(&p);
        v.push(Finding::new(
            "git-hooks-path",
            format!("plant a hook in core.hooksPath ({})", dir.display()),
            planted
                .as_ref()
                .map_or_else(|e| format!("refused: {e}"), |()| "planted".into()),
            planted.is_err(),
        ));
    }
    v
}

fn docker_socket() -> Finding {
    let mut reached = Vec::new();
    for p in [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
    ] {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            reached.push(p);
        }
    }
    let host_env = std::env::var("DOCKER_HOST").ok();
    Finding::new(
        "docker-socket",
        "reach the Docker or containerd socket",
        match (&reached[..], &host_env) {
            ([], None) => "no socket, no DOCKER_HOST".to_owned(),
            (r, h) => format!("connected to {r:?}; DOCKER_HOST {h:?}"),
        },
        reached.is_empty() && host_env.is_none(),
    )
}

/// The default route's gateway must be held by nobody: Docker routes an internal network
/// through an address the host gives up (`inhibit_ipv4`), so anything sent there is lost.
/// A refused connection would mean something holds it and answers.
fn gateway_route() -> Finding {
    let what = "reach whatever holds the default route's gateway";
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let gateway = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000"))
            .then(|| u32::from_str_radix(f.get(2)?, 16).ok())
            .flatten()
            .map(|g| std::net::Ipv4Addr::from(g.swap_bytes()))
    });
    let Some(gw) = gateway else {
        return Finding::new("gateway", what, "no default route", true);
    };
    // Port 1: nothing listens there; only a host holding the address would answer (RST).
    match TcpStream::connect_timeout(&SocketAddr::new(gw.into(), 1), CONNECT_TIMEOUT) {
        Ok(_) => Finding::new(
            "gateway",
            what,
            format!("{gw}:1 accepted a connection"),
            false,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Finding::new(
            "gateway",
            what,
            format!("{gw} answered (connection refused): a host holds it"),
            false,
        ),
        Err(e) => Finding::new(
            "gateway",
            what,
            format!("{gw} is held by nobody: {e}"),
            true,
        ),
    }
}

fn ipv6() -> Finding {
    let addrs = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    let n = addrs.lines().filter(|l| !l.trim().is_empty()).count();
    let sock = std::net::UdpSocket::bind("[::]:0").and_then(|s| s.connect("[::1]:9").map(|()| s));
    Finding::new(
        "ipv6",
        "use IPv6 (addresses, a socket to ::1)",
        format!(
            "{n} IPv6 address(es); a socket to [::1]: {}",
            sock.map_or_else(|e| format!("refused ({e})"), |_| "connected".into())
        ),
        n == 0,
    )
}

fn dns(name: &str) -> Finding {
    let what = format!("resolve {name}, a name nobody serves");
    match (name, 80).to_socket_addrs() {
        Ok(mut a) => Finding::new("dns", what, format!("resolved to {:?}", a.next()), false),
        Err(e) => Finding::new("dns", what, format!("no answer: {e}"), true),
    }
}

fn listeners(plan: &Plan) -> Vec<Finding> {
    plan.listeners
        .iter()
        .chain(&plan.others)
        .map(|t| {
            let what = format!("TCP to {} ({})", t.addr, t.what);
            match TcpStream::connect_timeout(&t.addr, CONNECT_TIMEOUT) {
                Ok(_) => Finding::new("direct-tcp", what, "connected", false),
                Err(e) => Finding::new("direct-tcp", what, format!("refused: {e}"), true),
            }
        })
        .collect()
}

fn bundle_ports(plan: &Plan) -> Finding {
    let what = "connect to every TCP port of the sidecar bundle";
    let Some(bundle) = plan.bundle else {
        return Finding::skip("bundle-ports", what, "this bottle has no bundle");
    };
    let open = scan(bundle, 1..=u16::MAX);
    let extra: Vec<u16> = open
        .iter()
        .copied()
        .filter(|p| !plan.declared_ports.contains(p))
        .collect();
    Finding::new(
        "bundle-ports",
        format!("{what} ({bundle})"),
        format!("open: {open:?}; declared: {:?}", plan.declared_ports),
        extra.is_empty(),
    )
}

/// The ports of `ip` that accept a TCP connection, probed by a few threads at once.
fn scan(ip: IpAddr, ports: std::ops::RangeInclusive<u16>) -> Vec<u16> {
    const THREADS: u16 = 32;
    let ports: Vec<u16> = ports.collect();
    let chunk = ports.len().div_ceil(usize::from(THREADS));
    let mut open: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = ports
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .copied()
                        .filter(|p| {
                            TcpStream::connect_timeout(&SocketAddr::new(ip, *p), CONNECT_TIMEOUT)
                                .is_ok()
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    open.sort_unstable();
    open
}

/// Private keys reach the agent only through mounts or its env: read every mounted file.
fn private_keys() -> Finding {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let skip = ["/proc", "/sys", "/dev"];
    let mut found = Vec::new();
    let mut read = 0usize;
    for point in mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
    {
        if point == "/"
            || skip
                .iter()
                .any(|s| point == *s || point.starts_with(&format!("{s}/")))
        {
            continue;
        }
        walk(Path::new(point), 3, &mut |p| {
            read += 1;
            if std::fs::read(p).is_ok_and(|b| b.windows(11).any(|w| w == b"PRIVATE KEY")) {
                found.push(p.display().to_string());
            }
        });
    }
    let env_key = std::env::vars().any(|(_, v)| v.contains("PRIVATE KEY"));
    if env_key {
        found.push("an env var".into());
    }
    Finding::new(
        "private-keys",
        "read a private key (a CA key, an SSH key) from any mount or the env",
        if found.is_empty() {
            format!("none in {read} mounted files")
        } else {
            format!("found in {}", found.join(", "))
        },
        found.is_empty(),
    )
}

/// Call `f` on every regular file under `p` (or `p` itself), `depth` levels down, under 1 MiB.
fn walk(p: &Path, depth: u8, f: &mut dyn FnMut(&Path)) {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return;
    };
    if meta.is_file() && meta.len() < 1 << 20 {
        f(p);
    } else if meta.is_dir() && depth > 0 {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            walk(&e.path(), depth - 1, f);
        }
    }
}

/// Probes through the agent's proxy: it must refuse all of them.
fn proxied(plan: &Plan) -> Vec<Finding> {
    let Some(proxy) = plan.proxy.as_deref() else {
        return vec![Finding::skip(
            "proxy",
            "go out through the proxy",
            "this bottle has no proxy",
        )];
    };
    let mut v = vec![
        through_proxy(
            proxy,
            "proxy-unlisted",
            "http://bottle-verify-unlisted.invalid/",
            "a host not on the allowlist",
        ),
        through_proxy(
            proxy,
            "proxy-loopback",
            "http://localhost:8888/",
            "a loopback name, the bundle's own 127.0.0.1",
        ),
    ];
    for t in plan.listeners.iter().chain(&plan.others) {
        v.push(through_proxy(
            proxy,
            "proxy-ip-literal",
            &format!("http://{}/", t.addr),
            &format!("an IP literal: {}", t.what),
        ));
    }
    if let Some(host) = &plan.allowed_host {
        v.push(https_push(proxy, host, plan.ca_bundle.as_deref()));
    }
    v
}

/// Send a plain GET for `url` through the proxy; the box holds if the answer is no 2xx/3xx.
fn through_proxy(proxy: &str, id: &str, url: &str, what: &str) -> Finding {
    let tried = format!("GET {url} through the proxy ({what})");
    let host = url.split('/').nth(2).unwrap_or_default();
    let req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    match exchange(proxy, req.as_bytes()) {
        Ok(status) => Finding::new(
            id,
            tried,
            format!("answered {status}"),
            !(200..400).contains(&status),
        ),
        Err(e) => Finding::new(id, tried, format!("no answer: {e}"), true),
    }
}

/// Write `req` to a new connection to `proxy`; the status code of the answer.
fn exchange(proxy: &str, req: &[u8]) -> std::io::Result<u16> {
    let mut s = connect(proxy)?;
    s.write_all(req)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head)
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let a = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing")))?;
    let s = TcpStream::connect_timeout(&a, CONNECT_TIMEOUT * 4)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn status_code(head: &[u8]) -> std::io::Result<u16> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

/// `git push` over HTTPS to an allowed host: CONNECT, TLS trusting the bottle's CA, then the
/// push's `git-receive-pack` POST. The proxy must refuse it.
fn https_push(proxy: &str, host: &str, ca_bundle: Option<&str>) -> Finding {
    let path = "/bottle-verify/probe.git/git-receive-pack";
    let tried = format!("git push over HTTPS: POST https://{host}{path} through the proxy");
    match tls_post(proxy, host, path, ca_bundle) {
        Ok(status) => Finding::new(
            "proxy-https-push",
            tried,
            format!("answered {status}"),
            !(200..400).contains(&status),
        ),
        Err(e) => Finding::new("proxy-https-push", tried, format!("no answer: {e}"), true),
    }
}

fn tls_post(proxy: &str, host: &str, path: &str, ca_bundle: Option<&str>) -> std::io::Result<u16> {
    use rustls_pki_types::pem::PemObject;
    let mut s = connect(proxy)?;
    s.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let status = status_code(&head)?;
    if status != 200 {
        return Ok(status);
    }
    let mut roots = rustls::RootCertStore::empty();
    let bundle = ca_bundle.unwrap_or("/etc/ssl/certs/ca-certificates.crt");
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(bundle)
        .map_err(|e| std::io::Error::other(format!("{bundle}: {e}")))?
        .flatten()
    {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config.into(), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    let body = b"0000";
    tls.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    tls.write_all(body)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if head.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    status_code(&head)
}
