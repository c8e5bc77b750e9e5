//! bottle-supervise against real MCP clients: the `mcp` package from PyPI (the tests' venvs,
//! made by `.ci/run`; `BOTTLE_MCP_PYTHONS` lists their interpreters).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_bottle-supervise");

struct Daemon {
    child: Child,
    url: String,
    queue: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.queue);
    }
}

fn start(label: &str, extra: &[&str]) -> Daemon {
    start_with_env(label, extra, &[])
}

fn start_with_env(label: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let queue = std::env::temp_dir().join(format!("supervise-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&queue);
    std::fs::create_dir_all(&queue).unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--queue"])
        .arg(&queue)
        .args(["--egress", "127.0.0.1:9"])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // Keep reading, so the daemon's log never meets a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    let start: serde_json::Value = serde_json::from_str(&first).expect(&first);
    let url = format!("http://{}/", start["listen"].as_str().unwrap());
    Daemon { child, url, queue }
}

/// The interpreters that have `mcp` installed: `BOTTLE_MCP_PYTHONS` (colon-separated), else
/// the venvs `.ci/run` makes.
fn pythons() -> Vec<PathBuf> {
    let listed = std::env::var("BOTTLE_MCP_PYTHONS").unwrap_or_else(|_| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-clients");
        ["current", "v1"]
            .map(|v| root.join(v).join("bin/python").display().to_string())
            .join(":")
    });
    let found: Vec<PathBuf> = listed
        .split(':')
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    assert!(
        !found.is_empty(),
        "no Python with the `mcp` package: run `bash daemons/supervise/tests/clients.sh` (.ci/run does)"
    );
    found
}

fn script(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?}: {text}",
        python.display()
    );
    text
}

#[test]
#[ignore = "e2e: needs the MCP client venvs (`bash daemons/supervise/tests/clients.sh`); run with `cargo test --workspace -- --ignored`"]
fn third_party_mcp_clients_request_wait_and_see_decisions() {
    for python in pythons() {
        let modes = script(&python, &["modes"]);
        for mode in modes.split_whitespace() {
            let d = start(&format!("client-{mode}"), &["--wait-secs", "2"]);
            let queue = d.queue.display().to_string();
            let text = script(&python, &["check", &d.url, &queue, mode]);
            assert!(
                text.contains("approved while waiting") && text.contains("wrong host refused"),
                "{text}"
            );
        }
    }
}

#[test]
#[ignore = "e2e: needs the MCP client venvs (`bash daemons/supervise/tests/clients.sh`); run with `cargo test --workspace -- --ignored`"]
fn a_flood_of_requests_is_cut_off() {
    for python in pythons() {
        let mode = script(&python, &["modes"]);
        let mode = mode.split_whitespace().next().unwrap().to_owned();
        let d = start("flood", &["--wait-secs", "0", "--per-minute", "3"]);
        let queue = d.queue.display().to_string();
        let text = script(&python, &["flood", &d.url, &queue, &mode]);
        assert!(text.contains("flood refused after 3"), "{text}");
    }
}

/// The status of an MCP `initialize` POSTed to `d` with `Host: host` and, if given, a bearer.
fn initialize_status(d: &Daemon, host: &str, bearer: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let addr = d.url.trim_start_matches("http://").trim_end_matches('/');
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    let line = String::from_utf8_lossy(&head).into_owned();
    line[9..12].parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn with_a_hop_token_only_requests_that_carry_it_as_a_bearer_are_served() {
    let token = "5e7a0c2b4d6f8a1c3e5b7d9f0a2c4e6b";
    let d = start_with_env(
        "hop",
        &[],
        &[
            ("SUPERVISE_HOP_TOKEN", token),
            ("BOTTLE_BUNDLE_ADDRESS", "127.77.1.2"),
        ],
    );
    let port = d.url.rsplit(':').next().unwrap().trim_end_matches('/');
    let published = format!("127.77.1.2:{port}");
    assert_eq!(initialize_status(&d, &published, None), 401);
    assert_eq!(initialize_status(&d, &published, Some("0000")), 401);
    assert_eq!(initialize_status(&d, &published, Some(token)), 200);
    // The bundle's address is accepted as `Host`, other names still are not.
    assert_ne!(initialize_status(&d, "evil.example:80", Some(token)), 200);
    // Without a token the hop is open, as on Docker, and the published address unknown.
    let open = start("open", &[]);
    let port = open.url.rsplit(':').next().unwrap().trim_end_matches('/');
    assert_eq!(
        initialize_status(&open, &format!("127.0.0.1:{port}"), None),
        200
    );
    assert_ne!(
        initialize_status(&open, &format!("127.77.1.2:{port}"), None),
        200
    );
}
