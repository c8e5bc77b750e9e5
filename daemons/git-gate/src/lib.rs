//! `bottle-git-gate`: the agent's only git remote.
//!
//! The agent's gitconfig rewrites each upstream URL to `git://git-gate/<name>.git`. The gate
//! speaks the git daemon protocol (v0 and v2) and hands the pack work to Debian git's own
//! `upload-pack` and `receive-pack`; it never parses a pack itself. It alone holds the SSH
//! key, and it fails closed:
//!
//! - **fetch**: the mirror is brought up to date from upstream over SSH, with the pinned host
//!   key and nothing else trusted, before every clone or fetch ([`mirror`]); if that fails
//!   the client gets the reason, never data that may be stale;
//! - **push**: receive-pack's pre-receive hook ([`hook`]) applies the push policy
//!   ([`policy`]), scans the objects new to the gate for secrets ([`scan`]) and pushes to
//!   upstream; the gate's refs move only if upstream accepted.
//!
//! Layout: [`pkt`] and [`request`] read the wire; [`config`] loads and checks `gate.yaml`;
//! [`server`] runs connections; [`gitcmd`] runs git and ssh with a clean environment and a
//! deadline; [`log`] writes one JSON line per operation.

pub mod ci;
pub mod config;
pub mod gitcmd;
pub mod hook;
pub mod log;
pub mod mirror;
pub mod pkt;
pub mod policy;
pub mod request;
pub mod scan;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use server::{Gate, Settings};

/// The bundle's ready check: the gate at `addr` accepts connections.
pub fn health_check(addr: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .collect();
    for a in &addrs {
        if std::net::TcpStream::connect_timeout(a, std::time::Duration::from_secs(2)).is_ok() {
            return Ok(());
        }
    }
    Err(format!("nothing accepts connections at {addr}"))
}
