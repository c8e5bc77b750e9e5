//! `bottle-probe PLAN_JSON`: tries every way out of the agent container it knows, as the
//! agent's own user, and prints what happened as a JSON array of findings.
//!
//! Static (musl), mounted read-only into the agent by `bottle verify`: it needs nothing from
//! the agent's image. Every probe that needs a listener uses one the suite started on an
//! address it created; no probe sends anything anywhere else.

use bottle_probe::{Finding, Plan, RuledRequest};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// How long one connection attempt may take before it counts as refused.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a proxied request may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--clean") {
        clean_plants(&std::env::args().nth(2).unwrap_or_default());
        return;
    }
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
    plant_git(&plan.workdir);
    out.push(docker_socket());
    out.push(gateway_route());
    out.push(ipv6());
    out.push(dns(&plan.dns_name));
    out.push(dns_engine());
    out.push(dns_allowed(&plan));
    out.extend(listeners(&plan));
    out.push(bundle_ports(&plan));
    out.push(private_keys());
    out.extend(proxied(&plan));
    out.push(supervise_wildcard());
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

/// `bottle-probe --clean WORKDIR`: take [`plant_git`]'s plants out of the working dir again
/// (the host has judged them): its dirs, its hook, its lines in `.git/config`.
fn clean_plants(workdir: &str) {
    let root = Path::new(workdir);
    for d in bottle_probe::PLANT_DIRS {
        let _ = std::fs::remove_dir_all(root.join(d));
    }
    let hook = root.join(".git/hooks/post-checkout");
    if std::fs::read_to_string(&hook).is_ok_and(|t| t.contains(bottle_probe::PLANTED_MARK)) {
        let _ = std::fs::remove_file(&hook);
    }
    let config = root.join(".git/config");
    if let Ok(text) = std::fs::read_to_string(&config)
        && text.contains(bottle_probe::PLANTED_MARK)
    {
        let planted = format!(
            "[core]\n\tfsmonitor = \"touch /tmp/{}\"\n",
            bottle_probe::PLANTED_MARK
        );
        let _ = std::fs::write(&config, text.replace(&planted, ""));
    }
}

/// Plant, in the working dir, everything [`bottle_probe::PLANTS`] lists: what your own git
/// would run if it reached your dir. The agent may write all of it in its view; the host
/// judges (its dir must not see it, and the merge must not bring it back), so nothing is
/// reported from here.
fn plant_git(workdir: &str) {
    use bottle_probe::{PLANTED_MARK, PLANTS};
    let root = Path::new(workdir);
    let fsmonitor = format!("[core]\n\tfsmonitor = \"touch /tmp/{PLANTED_MARK}\"\n");
    let repo = root.join(".git").is_dir();
    let git_dir = |dir: &Path| -> std::io::Result<()> {
        for d in ["objects", "refs/heads"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n")?;
        std::fs::write(dir.join("config"), &fsmonitor)
    };
    for plant in PLANTS {
        if plant.in_repo && !repo {
            continue;
        }
        // A plant the agent cannot make in its view is fine too.
        let _: std::io::Result<()> = match plant.id {
            "workdir-git-config" => std::fs::OpenOptions::new()
                .append(true)
                .open(root.join(".git/config"))
                .and_then(|mut f| f.write_all(fsmonitor.as_bytes())),
            "workdir-git-hook" => std::fs::write(
                root.join(plant.path),
                format!("#!/bin/sh\ntouch /tmp/{PLANTED_MARK}\n"),
            ),
            "workdir-git-rename" => {
                // Move .git aside, plant a new one, put the old one back.
                let moved = root.join(plant.path);
                std::fs::rename(root.join(".git"), &moved).and_then(|()| {
                    let planted = git_dir(&root.join(".git"));
                    let _ = std::fs::remove_dir_all(root.join(".git"));
                    std::fs::rename(&moved, root.join(".git"))?;
                    planted
                })
            }
            "workdir-nested-repo" => git_dir(&root.join(plant.path)),
            "workdir-gitdir-file" => git_dir(&root.join("bottle-verify-gitdir")).and_then(|()| {
                std::fs::create_dir_all(root.join("bottle-verify-gitfile"))?;
                std::fs::write(root.join(plant.path), "gitdir: ../bottle-verify-gitdir\n")
            }),
            "workdir-bare-repo" => git_dir(&root.join("bottle-verify-bare")),
            _ => continue,
        };
    }
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

/// An allowed name resolves to egress in the bundle and nowhere else: a client that ignores
/// the proxy env then still goes through egress, and a resolver that forwarded the name would
/// show up here as another address.
fn dns_allowed(plan: &Plan) -> Finding {
    let (Some(host), Some(bundle)) = (&plan.allowed_host, plan.bundle) else {
        return Finding::skip(
            "dns-allowed",
            "resolve an allowed name",
            "no allowed host or no bundle",
        );
    };
    let what = format!("resolve {host}, an allowed name: only egress's address ({bundle})");
    match (host.as_str(), 443).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            let only_egress = !addrs.is_empty() && addrs.iter().all(|a| *a == bundle);
            Finding::new(
                "dns-allowed",
                what,
                format!("resolved to {addrs:?}"),
                only_egress,
            )
        }
        // No answer is no way around egress either (a backend whose agent has no resolver).
        Err(e) => Finding::new("dns-allowed", what, format!("no answer: {e}"), true),
    }
}

fn dns(name: &str) -> Finding {
    let what = format!("resolve {name}, a name nobody serves");
    match (name, 80).to_socket_addrs() {
        Ok(mut a) => Finding::new("dns", what, format!("resolved to {:?}", a.next()), false),
        Err(e) => Finding::new("dns", what, format!("no answer: {e}"), true),
    }
}

/// Docker's own resolver, which a process on a Docker network can ask at 127.0.0.11 whatever
/// its resolv.conf says, must not resolve an outside name: on an engine before the
/// CVE-2024-29018 fix it passes what it does not know to the host's resolvers, from the
/// host's namespace when they are on its loopback. A name that exists outside is asked, so
/// records in the answer prove the query left. No answer, or an answer without records, holds.
fn dns_engine() -> Finding {
    const SERVER: &str = "127.0.0.11:53";
    const NAME: &str = "example.com";
    let what = format!("ask Docker's own resolver ({SERVER}) for {NAME}, a name outside");
    let mut query = vec![0xb0, 0x77, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in NAME.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let asked = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.send_to(&query, SERVER)?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    });
    match asked {
        Ok(reply) if reply.len() >= 12 && reply[..2] == query[..2] => {
            let rcode = reply[3] & 0x0f;
            let records = u16::from_be_bytes([reply[6], reply[7]]);
            Finding::new(
                "dns-engine",
                what,
                format!("answered: rcode {rcode}, {records} record(s)"),
                rcode != 0 || records == 0,
            )
        }
        Ok(reply) => Finding::new(
            "dns-engine",
            what,
            format!(
                "an answer that is not to this query ({} bytes)",
                reply.len()
            ),
            true,
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Finding::new("dns-engine", what, "no answer within 1 s", true)
        }
        Err(e) => Finding::new("dns-engine", what, format!("no answer: {e}"), true),
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
    for r in &plan.ruled {
        v.push(ruled(proxy, r, plan.ca_bundle.as_deref()));
    }
    v
}

/// A request a route's rules refuse: egress must answer 403 naming its route rule, before it
/// dials anything.
fn ruled(proxy: &str, r: &RuledRequest, ca_bundle: Option<&str>) -> Finding {
    let tried = format!(
        "{} https://{}{} through the proxy (its route's rule {} refuses it)",
        r.method, r.host, r.path, r.rule
    );
    match tls_request(proxy, &r.host, &r.method, &r.path, None, ca_bundle) {
        Ok(head) => {
            let status = status_code(&head).unwrap_or(0);
            let by_rule = header_is(&head, "x-bottle-block", "route-rule");
            Finding::new(
                &r.probe,
                tried,
                if by_rule {
                    format!("answered {status}, refused by egress's route rule")
                } else {
                    format!("answered {status}, not by a route rule")
                },
                status == 403 && by_rule,
            )
        }
        Err(e) => Finding::new(&r.probe, tried, format!("no answer: {e}"), false),
    }
}

/// Whether the response head has header `name` (lower case) with value `value`.
fn header_is(head: &[u8], name: &str, value: &str) -> bool {
    String::from_utf8_lossy(head).lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
        })
    })
}

/// The agent's proxy credentials (the hop token in its proxy URL) as a header line, so the
/// probes are judged by egress's rules rather than refused for want of them.
fn proxy_auth() -> String {
    use base64::Engine as _;
    let url = std::env::var("HTTPS_PROXY")
        .or_else(|_| std::env::var("https_proxy"))
        .unwrap_or_default();
    match url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('@'))
    {
        Some((userinfo, _)) => format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(userinfo)
        ),
        None => String::new(),
    }
}

/// Send a plain GET for `url` through the proxy; the box holds if the answer is no 2xx/3xx.
fn through_proxy(proxy: &str, id: &str, url: &str, what: &str) -> Finding {
    let tried = format!("GET {url} through the proxy ({what})");
    let host = url.split('/').nth(2).unwrap_or_default();
    let req = format!(
        "GET {url} HTTP/1.1\r\nHost: {host}\r\n{}Connection: close\r\n\r\n",
        proxy_auth()
    );
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
    let push = ("application/x-git-receive-pack-request", &b"0000"[..]);
    match tls_request(proxy, host, "POST", path, Some(push), ca_bundle)
        .and_then(|h| status_code(&h))
    {
        Ok(status) => Finding::new(
            "proxy-https-push",
            tried,
            format!("answered {status}"),
            !(200..400).contains(&status),
        ),
        Err(e) => Finding::new("proxy-https-push", tried, format!("no answer: {e}"), true),
    }
}

/// CONNECT to `host:443` through the proxy, TLS trusting `ca_bundle`, then `method path` with
/// `body` (its content type and bytes); the response head, or the CONNECT's when it was
/// refused.
fn tls_request(
    proxy: &str,
    host: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    ca_bundle: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let mut s = connect(proxy)?;
    s.write_all(
        format!(
            "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n{}\r\n",
            proxy_auth()
        )
        .as_bytes(),
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    if status_code(&head)? != 200 {
        return Ok(head);
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
    let (content_type, body) = body.unwrap_or(("text/plain", b""));
    tls.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
    status_code(&head)?;
    Ok(head)
}

/// Ask supervise (as the agent would, from its MCP config) for a wildcard over a public
/// suffix: it must refuse it with a reason, never queue it for a human.
fn supervise_wildcard() -> Finding {
    let tried = "ask supervise for `*.co.uk` (a wildcard over a public suffix)";
    let Some((url, auth)) = mcp_server("supervise") else {
        return Finding::skip(
            "supervise-wildcard",
            tried,
            "this bottle has no supervise in its MCP config",
        );
    };
    match mcp_call(
        &url,
        auth.as_deref(),
        "request_host_access",
        r#"{"host":"*.co.uk","reason":"bottle verify: a wildcard over a public suffix"}"#,
    ) {
        Ok(answer) => {
            let refused = answer.contains("public suffix");
            Finding::new(
                "supervise-wildcard",
                tried,
                if refused {
                    "refused: a public suffix".to_owned()
                } else {
                    format!("answered: {}", answer.chars().take(160).collect::<String>())
                },
                refused,
            )
        }
        Err(e) => Finding::new(
            "supervise-wildcard",
            tried,
            format!("no answer: {e}"),
            false,
        ),
    }
}

/// Server `name` of the agent's MCP config (`$BOTTLE_MCP_CONFIG`): its URL and its
/// `Authorization` header.
fn mcp_server(name: &str) -> Option<(String, Option<String>)> {
    let path = std::env::var("BOTTLE_MCP_CONFIG").ok()?;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let server = config.get("mcpServers")?.get(name)?;
    let url = server.get("url")?.as_str()?.to_owned();
    let auth = server
        .get("headers")
        .and_then(|h| h.get("Authorization"))
        .and_then(|a| a.as_str())
        .map(str::to_owned);
    Some((url, auth))
}

/// One MCP tool call over Streamable HTTP (initialize, initialized, tools/call); the
/// answer's text.
fn mcp_call(url: &str, auth: Option<&str>, tool: &str, args: &str) -> std::io::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("not an http:// URL"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{path}");
    let post = |body: &str, session: Option<&str>| -> std::io::Result<(u16, String, String)> {
        let mut s = connect(authority)?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(a) = auth {
            head.push_str(&format!("Authorization: {a}\r\n"));
        }
        if let Some(id) = session {
            head.push_str(&format!(
                "Mcp-Session-Id: {id}\r\nMcp-Protocol-Version: 2025-03-26\r\n"
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = status_code(head.as_bytes())?;
        let session = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("mcp-session-id")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        Ok((status, session, body.to_owned()))
    };
    let (status, session, _) = post(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"bottle-probe","version":"1"}}}"#,
        None,
    )?;
    if status != 200 {
        return Err(std::io::Error::other(format!(
            "initialize answered {status}"
        )));
    }
    let session = Some(session.as_str()).filter(|s| !s.is_empty());
    post(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        session,
    )?;
    let (status, _, body) = post(
        &format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
        ),
        session,
    )?;
    if status != 200 {
        return Err(std::io::Error::other(format!(
            "tools/call answered {status}"
        )));
    }
    Ok(body)
}
