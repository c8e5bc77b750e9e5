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
