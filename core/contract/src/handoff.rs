//! The agent's listeners, handed to the bundle: how an agent on no network at all reaches the
//! bundle's daemons.
//!
//! Joining a network costs the engine most of a bottle's bring-up (`benches/topology-floor.sh`:
//! an agent on an internal network shared with the bundle costs 2.66 `docker run`s, an agent on
//! no network 1.85). So on Docker, when the bundle's daemons are bottle's own, the agent gets no
//! network: before its command runs, `bottle-init agent` binds the daemons' ports on
//! [`BUNDLE_IN_AGENT`] in the agent's own network namespace and sends the bound sockets over a
//! unix socket ([`SOCKET`] in a dir both containers mount) to the bundle's init, which hands
//! each daemon its own as inherited file descriptors ([`ENV`]). A connection the agent makes is
//! then accepted by the daemon in the bundle; the agent's namespace has no other way anywhere.
//!
//! Only daemons whose programs take such sockets ([`TAKES_LISTENERS`]) get them; a bundle with
//! any other daemon that declares ports keeps the network ([`listeners`] says `None`).

use crate::daemons::DaemonList;

/// The bundle's address as the agent sees it: a loopback address of the agent's own, not
/// `127.0.0.1`, so the agent's own servers keep ports 80 and 443 there.
pub const BUNDLE_IN_AGENT: [u8; 4] = [127, 0, 0, 2];

/// The state dir's subdir both containers mount ([`DIR_IN_AGENT`], [`DIR_IN_BUNDLE`]).
pub const STATE_DIR: &str = "handoff";
/// Where the agent's container mounts [`STATE_DIR`] (read-only).
pub const DIR_IN_AGENT: &str = "/.bottle/handoff";
/// Where the bundle's container mounts [`STATE_DIR`].
pub const DIR_IN_BUNDLE: &str = "/run/bottle/handoff";
/// The unix socket the bundle's init listens on in [`STATE_DIR`], for one connection.
pub const SOCKET: &str = "agent.sock";

/// The bundle's env var naming the listeners it waits for ([`format_list`]); unset, the
/// bundle's init waits for none.
pub const BUNDLE_ENV: &str = "BOTTLE_HANDOFF";
/// A daemon's env var naming the listeners it inherits, in order, from file descriptor
/// [`FIRST_FD`] on ([`format_list`]).
pub const ENV: &str = "BOTTLE_AGENT_LISTENERS";
/// The first inherited listener's file descriptor.
pub const FIRST_FD: i32 = 3;
/// The most listeners one handoff carries.
pub const MAX_LISTENERS: usize = 16;

/// The programs of the bundle image that serve the agent on the listeners handed to them.
pub const TAKES_LISTENERS: [&str; 3] = [
    "/usr/local/bin/bottle-egress",
    "/usr/local/bin/bottle-git-gate",
    "/usr/local/bin/bottle-supervise",
];
/// The programs of the bundle image that listen on the bundle's loopback alone, whatever ports
/// they declare: the agent never reached them (pipelock, the second layer behind egress).
pub const LOOPBACK_ONLY: [&str; 1] = ["/usr/local/bin/pipelock"];

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// A listening TCP socket.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

/// One listener of the agent's, bound on [`BUNDLE_IN_AGENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// Its port.
    pub port: u16,
    /// Its protocol.
    pub proto: Proto,
}

impl Listener {
    /// The listener for declared port `port`: DNS (53) is UDP, every other port TCP.
    pub fn for_port(port: u16) -> Listener {
        Listener {
            port,
            proto: if port == 53 { Proto::Udp } else { Proto::Tcp },
        }
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{}/{proto}", self.port)
    }
}

impl std::str::FromStr for Listener {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a listener like 9099/tcp or 53/udp");
        let (port, proto) = s.split_once('/').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad()),
        };
        if port == 0 {
            return Err(bad());
        }
        Ok(Listener { port, proto })
    }
}

/// `9099/tcp,53/udp`.
pub fn format_list(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`format_list`]: at most [`MAX_LISTENERS`], none twice.
pub fn parse_list(s: &str) -> Result<Vec<Listener>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let list = s
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<Listener>, String>>()?;
    if list.len() > MAX_LISTENERS {
        return Err(format!(
            "{} listeners; at most {MAX_LISTENERS} are handed over",
            list.len()
        ));
    }
    let mut sorted = list.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != list.len() {
        return Err(format!("{s:?} names a listener twice"));
    }
    Ok(list)
}

/// The listeners the agent hands `list`'s daemons, each with its daemon's name; `None` when a
/// daemon that declares ports is none of bottle's own ([`TAKES_LISTENERS`], [`LOOPBACK_ONLY`]):
/// the agent may need it on a network.
pub fn listeners(list: &DaemonList) -> Option<Vec<(String, Listener)>> {
    let mut out = Vec::new();
    for d in &list.daemons {
        if d.ports.is_empty() {
            continue;
        }
        let program = d.command.first().map(String::as_str).unwrap_or_default();
        if LOOPBACK_ONLY.contains(&program) {
            continue;
        }
        if !TAKES_LISTENERS.contains(&program) {
            return None;
        }
        out.extend(
            d.ports
                .iter()
                .map(|p| (d.name.clone(), Listener::for_port(*p))),
        );
    }
    let mut ports: Vec<&Listener> = out.iter().map(|(_, l)| l).collect();
    ports.sort_unstable();
    ports.dedup();
    (ports.len() == out.len() && out.len() <= MAX_LISTENERS).then_some(out)
}

/// The listeners a daemon inherited from the bundle's init ([`ENV`]), each with its socket;
/// none when it inherited none. Call once: the sockets become the caller's.
#[cfg(unix)]
pub fn inherited() -> Result<Vec<(Listener, std::os::fd::OwnedFd)>, String> {
    use std::os::fd::FromRawFd as _;
    let Ok(spec) = std::env::var(ENV) else {
        return Ok(Vec::new());
    };
    let list = parse_list(&spec).map_err(|e| format!("{ENV}: {e}"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, l) in list.into_iter().enumerate() {
        let fd = FIRST_FD + i32::try_from(i).unwrap_or(i32::MAX - FIRST_FD);
        // The descriptor must be a socket: anything else (a closed one, the runtime's own)
        // is not the init's.
        use std::os::unix::fs::FileTypeExt as _;
        let socket = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|m| m.file_type().is_socket());
        if !socket {
            return Err(format!(
                "{ENV} names {l} at file descriptor {fd}, which is no socket"
            ));
        }
        // SAFETY: the init opened `fd` for this process alone (checked open above), and
        // nothing else in this process owns it: `inherited` is read once, at start.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // The copy is close-on-exec (F_DUPFD_CLOEXEC): the daemon's children (git, ssh) do
        // not hold the agent's listener.
        let copy = owned
            .try_clone()
            .map_err(|e| format!("{ENV}: file descriptor {fd}: {e}"))?;
        out.push((l, copy));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemons::DaemonEntry;

    fn daemon(name: &str, program: &str, ports: &[u16]) -> DaemonEntry {
        DaemonEntry {
            name: name.into(),
            command: vec![program.into()],
            ready_check: None,
            secrets: vec![],
            ports: ports.to_vec(),
            uid: None,
            install: vec![],
        }
    }

    #[test]
    fn bottles_own_daemons_take_their_declared_ports_dns_as_udp() {
        let list = DaemonList {
            secret_env: vec![],
            daemons: vec![
                daemon("egress", TAKES_LISTENERS[0], &[9099, 53, 443, 80]),
                daemon("pipelock", LOOPBACK_ONLY[0], &[8888]),
                daemon("git-gate", TAKES_LISTENERS[1], &[9418]),
                daemon("quiet", "/usr/local/bin/anything", &[]),
            ],
        };
        let got = listeners(&list).unwrap();
        let text: Vec<String> = got.iter().map(|(d, l)| format!("{d} {l}")).collect();
        assert_eq!(
            text,
            [
                "egress 9099/tcp",
                "egress 53/udp",
                "egress 443/tcp",
                "egress 80/tcp",
                "git-gate 9418/tcp"
            ]
        );
        let spec = format_list(&got.iter().map(|(_, l)| *l).collect::<Vec<_>>());
        assert_eq!(spec, "9099/tcp,53/udp,443/tcp,80/tcp,9418/tcp");
        assert_eq!(parse_list(&spec).unwrap().len(), 5);
    }

    #[test]
    fn another_daemon_with_ports_or_a_port_twice_keeps_the_network() {
        let custom = DaemonList {
            secret_env: vec![],
            daemons: vec![
                daemon("egress", TAKES_LISTENERS[0], &[9099]),
                daemon("mine", "/usr/local/bin/mine", &[7000]),
            ],
        };
        assert_eq!(listeners(&custom), None);
        let twice = DaemonList {
            secret_env: vec![],
            daemons: vec![
                daemon("egress", TAKES_LISTENERS[0], &[9099]),
                daemon("supervise", TAKES_LISTENERS[2], &[9099]),
            ],
        };
        assert_eq!(listeners(&twice), None);
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in [
            "9099",
            "9099/sctp",
            "x/tcp",
            "0/tcp",
            "70000/tcp",
            "1/tcp,1/tcp",
            "1/tcp,",
        ] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
        let many = (1..=17).map(|p| format!("{p}/tcp")).collect::<Vec<_>>();
        assert!(parse_list(&many.join(",")).is_err());
        assert_eq!(parse_list("").unwrap(), vec![]);
    }
}
