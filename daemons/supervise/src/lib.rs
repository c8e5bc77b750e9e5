//! `bottle-supervise`: the MCP server the agent calls when it is blocked.
//!
//! It speaks MCP over Streamable HTTP (rmcp; the 2024-11-05 revision the original spoke up to
//! the current ones) at `http://supervise:9100/`. Each request is validated ([`validate`]),
//! written to the bottle's queue dir ([`queue`]) for the human on the host, and answered
//! `pending` with an id unless the human answers within a few seconds ([`tools`]). It never
//! approves anything itself. Before MCP sees a request, [`gate`] checks its `Host` and, where
//! the hop is authenticated, its token.

pub mod gate;
pub mod queue;
pub mod tools;
pub use bottle_contract::supervise::validate;

/// The bundle's ready check: something accepts connections at `addr`.
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
