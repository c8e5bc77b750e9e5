//! `bottle-init reload DAEMONS.json egress`: the host's way to make a new config run and know
//! it does (run by `docker exec` in the bundle).
//!
//! It asks PID 1 (the init) to reload, which re-installs egress's copies from the host's files
//! and sends egress SIGHUP; then it waits until egress reports the sha256 of the route table
//! it now runs (`config_sha256` at `http://_egress.local/allowlist`) and compares it with the
//! host's file. egress keeps its old table when the new one is bad, so a mismatch means the new
//! file was refused and the old one still runs.

use bottle_contract::daemons::DaemonList;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long egress has to report the new table.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The route file egress reads, as its command names it.
const ROUTES_FLAG: &str = "--routes";

/// Reload `name` and confirm; the exit code `docker exec` returns.
pub fn reload(list: &DaemonList, name: &str) -> i32 {
    match run(list, name) {
        Ok(sha) => {
            println!("{name} runs config {sha}");
            0
        }
        Err(e) => {
            println!("{name} not reloaded: {e}");
            1
        }
    }
}

fn run(list: &DaemonList, name: &str) -> Result<String, String> {
    if name != "egress" {
        return Err("only egress confirms the config it runs so far".into());
    }
    let d = list
        .daemons
        .iter()
        .find(|d| d.name == name)
        .ok_or("this bundle has no egress")?;
    let routes = d
        .command
        .iter()
        .position(|a| a == ROUTES_FLAG)
        .and_then(|i| d.command.get(i + 1))
        .ok_or("egress's command names no --routes file")?;
    // The host's file: the install whose target holds the route file.
    let source = d
        .install
        .iter()
        .find_map(|i| {
            let rest = routes.strip_prefix(&i.to)?;
            Some(PathBuf::from(format!("{}{rest}", i.from)))
        })
        .ok_or_else(|| format!("{routes} is not one of egress's installed files"))?;
    let bytes = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    let expected: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let init = rustix::process::Pid::from_raw(1).ok_or("no PID 1")?;
    rustix::process::kill_process(init, rustix::process::Signal::HUP)
        .map_err(|e| format!("cannot signal the init: {e}"))?;
    let port = d.ports.first().copied().unwrap_or(9099);
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    let mut running = String::new();
    while Instant::now() < deadline {
        if let Ok(sha) = running_sha(port, deadline) {
            if sha == expected {
                return Ok(sha);
            }
            running = sha;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "egress still runs config {} after {CONFIRM_TIMEOUT:?}, not the new {expected}: it refused the new file (its log says why) and the old one runs on",
        if running.is_empty() {
            "(unknown)"
        } else {
            &running
        }
    ))
}

/// The `config_sha256` egress on `port` reports, read by `deadline` (a daemon that trickles
/// bytes cannot hold the reload past it).
fn running_sha(port: u16, deadline: Instant) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    // egress serves proxied requests only with the run's hop token, which the init holds (its
    // env has every daemon's secrets).
    let auth = std::env::var(bottle_contract::hop::daemon_env("egress"))
        .ok()
        .filter(|t| !t.is_empty())
        .map_or_else(String::new, |t| {
            format!(
                "Proxy-Authorization: {}\r\n",
                bottle_contract::hop::proxy_authorization(&t)
            )
        });
    s.write_all(
        format!("GET http://_egress.local/allowlist HTTP/1.1\r\nHost: _egress.local\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if Instant::now() >= deadline || buf.len() > 1 << 20 {
            return Err("no answer in time".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    v["config_sha256"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "no config_sha256".into())
}
