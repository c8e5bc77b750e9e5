//! Both ends of the agent's listeners' handoff ([`bottle_contract::handoff`]): the agent's
//! init binds them ([`bind`]) and its keeper sends them ([`keep`]), the bundle's init receives and checks them
//! ([`receive`]) and hands each daemon its own ([`pass`]).
//!
//! What arrives is judged, not trusted: the agent's container sent it. Each socket must be
//! what was asked for (an IPv4 TCP socket listening, or a bound UDP one, on
//! [`BUNDLE_IN_AGENT`] at the port asked for); anything else fails the handoff and the
//! daemons that would have served it are not started, so the bottle never comes up half-wired.
//! At bring-up the agent's own code takes no part (its command runs only after the host's
//! go-ahead, which waits for the bundle's daemons, which wait for this); after a bundle the
//! host restarted, the keeper in the agent's container sends them again, and by then the agent
//! could have replaced it: whatever it sends is checked the same way, and a socket that passes
//! is one in the agent's own namespace, where only the agent can connect.

use bottle_contract::handoff::{
    BUNDLE_IN_AGENT, DIR_IN_AGENT, DIR_IN_BUNDLE, FIRST_FD, Listener, MAX_LISTENERS, Proto, SOCKET,
    format_list, parse_list,
};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long either end waits for the other: the two containers start together.
pub const WAIT: Duration = Duration::from_secs(30);
/// The longest listener list in text (`65535/tcp,` sixteen times).
const MAX_SPEC: usize = 11 * MAX_LISTENERS;

/// The bundle's address in the agent's namespace.
fn bundle_in_agent() -> Ipv4Addr {
    Ipv4Addr::from(BUNDLE_IN_AGENT)
}

/// Bind `listeners` on [`BUNDLE_IN_AGENT`] (in the agent's namespace).
pub fn bind(listeners: &[Listener]) -> Result<Vec<OwnedFd>, String> {
    listeners
        .iter()
        .map(|l| {
            let addr = SocketAddr::V4(SocketAddrV4::new(bundle_in_agent(), l.port));
            match l.proto {
                Proto::Tcp => std::net::TcpListener::bind(addr).map(OwnedFd::from),
                Proto::Udp => std::net::UdpSocket::bind(addr).map(OwnedFd::from),
            }
            .map_err(|e| format!("cannot listen on {addr} ({l}) for the bundle: {e}"))
        })
        .collect()
}

/// The agent's keeper (`bottle-init keep-listeners DIR`, started by the agent's init with the
/// bound listeners): send them whenever the bundle's init listens at `dir`'s [`SOCKET`]: at
/// bring-up, and again after the host restarted a bundle that died. Holding them, it keeps the
/// ports bound while no bundle does (the agent's connections wait instead of failing).
pub fn keep(dir: &Path) -> Result<(), String> {
    let handed = bottle_contract::handoff::inherited()?;
    let (listeners, fds): (Vec<Listener>, Vec<OwnedFd>) = handed.into_iter().unzip();
    let path = dir.join(SOCKET);
    // Soon at first (bring-up waits for it), then at a pace that costs nothing.
    let mut pause = Duration::from_millis(2);
    let started = Instant::now();
    loop {
        if let Ok(stream) = UnixStream::connect(&path) {
            if let Err(e) = send(&stream, &listeners, &fds) {
                eprintln!("bottle: {e}");
            }
            pause = Duration::from_millis(250);
        } else if started.elapsed() > WAIT {
            pause = Duration::from_millis(250);
        }
        std::thread::sleep(pause);
    }
}

/// Send `fds` (bound as `listeners`) over `stream`.
fn send(stream: &UnixStream, listeners: &[Listener], fds: &[OwnedFd]) -> Result<(), String> {
    let spec = format_list(listeners);
    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(format!("{} listeners are too many to send", fds.len()));
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(spec.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| format!("cannot send the listeners to the bundle: {e}"))?;
    Ok(())
}

/// The bundle's end: listen on [`DIR_IN_BUNDLE`]'s [`SOCKET`] for one connection (up to
/// `wait`), receive `expected`'s sockets, check each, and remove the socket file.
pub fn receive(expected: &[Listener], wait: Duration) -> Result<Vec<OwnedFd>, String> {
    receive_in(Path::new(DIR_IN_BUNDLE), expected, wait)
}

/// [`receive`] in `dir`.
pub fn receive_in(
    dir: &Path,
    expected: &[Listener],
    wait: Duration,
) -> Result<Vec<OwnedFd>, String> {
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen at {} for the agent: {e}", path.display()))?;
    let got = accept_and_read(&listener, &path, expected, wait);
    // One handoff per bottle: no second sender, whatever happened.
    drop(listener);
    let _ = std::fs::remove_file(&path);
    got
}

fn accept_and_read(
    listener: &UnixListener,
    path: &Path,
    expected: &[Listener],
    wait: Duration,
) -> Result<Vec<OwnedFd>, String> {
    use std::os::unix::fs::PermissionsExt as _;
    // The agent's init runs as the agent's user: it must be able to connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot open {} to the agent: {e}", path.display()))?;
    let mut fds = [rustix::event::PollFd::new(
        listener,
        rustix::event::PollFlags::IN,
    )];
    let mut timeout = rustix::event::Timespec::try_from(wait).unwrap_or(rustix::event::Timespec {
        tv_sec: 30,
        tv_nsec: 0,
    });
    // A signal (the host's SIGHUP) must not end the wait early: again, up to the deadline.
    let deadline = Instant::now() + wait;
    let ready = loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Err(rustix::io::Errno::INTR) if Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                timeout = rustix::event::Timespec::try_from(left).unwrap_or(timeout);
            }
            other => break other.map_err(|e| format!("waiting for the agent's listeners: {e}"))?,
        }
    };
    if ready == 0 {
        return Err(format!(
            "the agent's container never handed over its listeners ({wait:?})"
        ));
    }
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("taking the agent's listeners: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut text = [0u8; MAX_SPEC];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut text)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other.map_err(|e| format!("reading the agent's listeners: {e}"))?,
        }
    };
    let mut received: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            received.extend(fds);
        }
    }
    // Closing what is refused must not wait: a connected socket sent with a long linger and
    // unsent data would hold this init in `close`.
    for fd in &received {
        let _ = rustix::net::sockopt::set_socket_linger(fd, None);
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err("the agent sent more sockets than a handoff carries".to_owned());
    }
    let spec = std::str::from_utf8(&text[..msg.bytes.min(MAX_SPEC)])
        .map_err(|_| "the agent's listener list is not text".to_owned())?;
    let sent = parse_list(spec).map_err(|e| format!("the agent's listener list: {e}"))?;
    if sent != expected || received.len() != expected.len() {
        return Err(format!(
            "the agent sent {} sockets as {spec:?}; {:?} were asked for",
            received.len(),
            format_list(expected)
        ));
    }
    for (fd, l) in received.iter().zip(expected) {
        check(fd, *l)?;
    }
    Ok(received)
}

/// Whether `fd` is the socket `l` names, bound on [`BUNDLE_IN_AGENT`].
pub fn check(fd: &OwnedFd, l: Listener) -> Result<(), String> {
    let wrong = |what: String| Err(format!("the agent's socket for {l} {what}"));
    match rustix::net::sockopt::socket_domain(fd) {
        Ok(AddressFamily::INET) => {}
        Ok(_) => return wrong("is not an IPv4 socket".into()),
        Err(e) => return wrong(format!("is no socket ({e})")),
    }
    let (ty, listening) = match l.proto {
        Proto::Tcp => (SocketType::STREAM, true),
        Proto::Udp => (SocketType::DGRAM, false),
    };
    if rustix::net::sockopt::socket_type(fd).ok() != Some(ty) {
        return wrong("is of another type".into());
    }
    let protocol = match l.proto {
        Proto::Tcp => rustix::net::ipproto::TCP,
        Proto::Udp => rustix::net::ipproto::UDP,
    };
    if rustix::net::sockopt::socket_protocol(fd).ok().flatten() != Some(protocol) {
        return wrong("is of another protocol".into());
    }
    if listening && rustix::net::sockopt::socket_acceptconn(fd).ok() != Some(true) {
        return wrong("is not listening".into());
    }
    // A connected socket answers one peer only, not whoever asks.
    if rustix::net::getpeername(fd).ok().flatten().is_some() {
        return wrong("is connected".into());
    }
    let local = rustix::net::getsockname(fd)
        .ok()
        .and_then(|a| SocketAddrV4::try_from(a).ok());
    match local {
        Some(a) if *a.ip() == bundle_in_agent() && a.port() == l.port => Ok(()),
        Some(a) => wrong(format!("is bound on {a}")),
        None => wrong("has no IPv4 address".into()),
    }
}

/// Give `cmd` `fds` as its listeners from [`FIRST_FD`] on, named in its env as `listeners`.
/// Keep `fds` open until `cmd` is spawned: the descriptors it frees would be the lowest, where
/// the spawn's own pipe would land and be overwritten.
pub fn pass(
    cmd: &mut std::process::Command,
    listeners: &[Listener],
    fds: &[OwnedFd],
) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    if fds.is_empty() {
        cmd.env_remove(bottle_contract::handoff::ENV);
        return Ok(());
    }
    // Above every descriptor the child's will land on, so no move overwrites a source.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 64))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot place the agent's listeners: {e}"))?;
    cmd.env(bottle_contract::handoff::ENV, format_list(listeners));
    // SAFETY: between fork and exec only dup2 runs (async-signal-safe, no allocation); each
    // target descriptor is wrapped without being closed by the wrapper (`ManuallyDrop`).
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::FromRawFd as _;
            for (i, src) in high.iter().enumerate() {
                let target = FIRST_FD + i32::try_from(i).unwrap_or(0);
                let mut to = std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(target));
                rustix::io::dup2(src, &mut to)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// Where the agent's keeper finds the bundle's socket.
pub fn agent_dir() -> &'static Path {
    Path::new(DIR_IN_AGENT)
}

/// Start the agent's keeper with `listeners` bound ([`keep`]).
pub fn start_keeper(listeners: &[Listener]) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let fds = bind(listeners)?;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    // Its own process group: Ctrl-C at the agent's terminal, or the agent's `kill 0`, is not
    // for it (without it, a bundle restarted later could not be wired again).
    cmd.arg("keep-listeners")
        .arg(agent_dir())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    pass(&mut cmd, listeners, &fds)?;
    // Never waited for: it lives as long as the agent's container.
    cmd.spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the keeper of the bundle's listeners: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_cross_and_arrive_checked() {
        let dir = tempfile::tempdir().unwrap();
        let tcp = std::net::TcpListener::bind((bundle_in_agent(), 0)).unwrap();
        let udp = std::net::UdpSocket::bind((bundle_in_agent(), 0)).unwrap();
        let want = vec![
            Listener {
                port: tcp.local_addr().unwrap().port(),
                proto: Proto::Tcp,
            },
            Listener {
                port: udp.local_addr().unwrap().port(),
                proto: Proto::Udp,
            },
        ];
        drop((tcp, udp));
        let fds = bind(&want).unwrap();
        let d = dir.path().join(SOCKET);
        let sender = {
            let want = want.clone();
            std::thread::spawn(move || {
                let stream = loop {
                    match UnixStream::connect(&d) {
                        Ok(s) => break s,
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                };
                send(&stream, &want, &fds)
            })
        };
        let got = receive_in(dir.path(), &want, Duration::from_secs(10)).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(got.len(), 2);
        // The socket that arrived serves a connection made to the agent's side.
        let listener = std::net::TcpListener::from(got.into_iter().next().unwrap());
        let mut c = std::net::TcpStream::connect((bundle_in_agent(), want[0].port)).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        use std::io::{Read as _, Write as _};
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        assert!(!dir.path().join(SOCKET).exists(), "the socket file is gone");
    }

    #[test]
    fn a_socket_other_than_asked_for_fails_the_handoff() {
        let listening = std::net::TcpListener::bind((bundle_in_agent(), 0)).unwrap();
        let port = listening.local_addr().unwrap().port();
        let tcp = |port| Listener {
            port,
            proto: Proto::Tcp,
        };
        assert!(check(&OwnedFd::from(listening.try_clone().unwrap()), tcp(port)).is_ok());
        // Another port, another protocol, another address, not listening, no socket.
        assert!(check(&OwnedFd::from(listening), tcp(port.wrapping_add(1))).is_err());
        let udp = std::net::UdpSocket::bind((bundle_in_agent(), 0)).unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        assert!(check(&OwnedFd::from(udp), tcp(udp_port)).is_err());
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = elsewhere.local_addr().unwrap().port();
        assert!(check(&OwnedFd::from(elsewhere), tcp(p)).is_err());
        let connected = std::net::UdpSocket::bind((bundle_in_agent(), 0)).unwrap();
        let p = connected.local_addr().unwrap().port();
        let udp = |port| Listener {
            port,
            proto: Proto::Udp,
        };
        assert!(check(&OwnedFd::from(connected.try_clone().unwrap()), udp(p)).is_ok());
        connected.connect((bundle_in_agent(), 9)).unwrap();
        let e = check(&OwnedFd::from(connected), udp(p)).unwrap_err();
        assert!(e.contains("is connected"), "{e}");
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(check(&OwnedFd::from(file), tcp(1)).is_err());
    }

    #[test]
    fn nobody_sending_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let l = [Listener {
            port: 1,
            proto: Proto::Tcp,
        }];
        let e = receive_in(dir.path(), &l, Duration::from_millis(50)).unwrap_err();
        assert!(e.contains("never handed over"), "{e}");
        assert!(!dir.path().join(SOCKET).exists());
    }
}
