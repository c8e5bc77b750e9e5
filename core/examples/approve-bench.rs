//! From `bottle approve` to the agent's first successful request (issue 12's goal: ≤ 1 s,
//! median of 10). Run by `benches/approve.sh`, which builds `bottle` and passes its path.
//!
//! One real bottle (Docker, the bundle with egress and supervise) whose agent knows ten hosts
//! `h0.test`…`h9.test` (an HTTPS origin on this machine, reached as `host-gateway`) and may
//! reach none. For each in turn the agent asks supervise for it over MCP and then tries it
//! every 10 ms; the host sees the request, notes the time and runs `bottle approve`. The
//! agent prints the time of its first success; both clocks are the same kernel's.

use bottle_egress::testing::{Origin, TestPki};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOSTS: usize = 10;

fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: approve-bench PATH-TO-BOTTLE");
    let work = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h{i}.test")).collect();
    let pki = TestPki::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let origin = rt.block_on(Origin::start("0.0.0.0".parse().expect("ip"), &pki, served));
    let port = origin.https.port();
    let ca = pki.write_ca(work.path(), "origin-ca.pem");
    let agents = work.path().join("agents");
    std::fs::create_dir_all(&agents).expect("mkdir");
    let hosts: Vec<String> = names.iter().map(|n| format!("{n}: host-gateway")).collect();
    std::fs::write(
        agents.join("bench.yaml"),
        format!(
            "image: bottle-agent:latest\ncwd: none\nsupervise: true\negress:\n  default_allowlist: false\n  hosts: {{{}}}\n  upstream_ca: {}\n",
            hosts.join(", "),
            ca.display()
        ),
    )
    .expect("manifest");
    let script = format!(
        "{}for i in $(seq 0 {}); do
  post \"{{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"id\\\":2,\\\"method\\\":\\\"tools/call\\\",\\\"params\\\":{{\\\"name\\\":\\\"request_host_access\\\",\\\"arguments\\\":{{\\\"host\\\":\\\"h$i.test\\\",\\\"reason\\\":\\\"bench\\\"}}}}}}\" >/dev/null &
  n=0; until curl -sf -o /dev/null --max-time 2 https://h$i.test:{port}/echo; do n=$((n+1)); [ $n -gt 3000 ] && break; sleep 0.01; done
  echo \"OK $i $(date +%s%N)\"
  wait
done
",
        include_str!("../../tests/data/mcp-client.sh"),
        HOSTS - 1
    );
    let env = |cmd: &mut Command| {
        cmd.current_dir(work.path())
            .env("BOTTLE_STATE_DIR", work.path().join("state"))
            .env("BOTTLE_CACHE_DIR", work.path().join("cache"))
            .env("XDG_CONFIG_HOME", work.path().join("config"))
            .env_remove("RUST_LOG");
    };
    let slug = format!("approve-bench-{}", std::process::id() % 100_000);
    let mut run = Command::new(&bin);
    env(&mut run);
    let mut child = run
        .args([
            "run", "bench", "--yes", "--slug", &slug, "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bottle run");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let root = work.path().join("state");
    let mut rows = Vec::new();
    for (i, host) in names.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(if i == 0 { 180 } else { 30 });
        let id = loop {
            let found = bottle::live::requests::list(&root, Some(&slug))
                .into_iter()
                .find(|a| &a.request.host == host && a.decision.is_none());
            if let Some(a) = found {
                break a.request.id;
            }
            assert!(Instant::now() < deadline, "no request for {host} came");
            std::thread::sleep(Duration::from_millis(5));
        };
        let asked_at = nanos_now();
        let mut approve = Command::new(&bin);
        env(&mut approve);
        let out = approve
            .args(["approve", &id, "--yes"])
            .output()
            .expect("bottle approve");
        let approve_ns = nanos_now() - asked_at;
        assert!(
            out.status.success(),
            "bottle approve: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ok_at: u128 = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the agent never got through");
            if let Some(rest) = line.strip_prefix(&format!("OK {i} ")) {
                break rest.trim().parse().expect("a time");
            }
        };
        rows.push((host.clone(), approve_ns, ok_at.saturating_sub(asked_at)));
    }
    let status = child.wait().expect("bottle run");
    assert!(status.success(), "the bench bottle failed");
    let ms = |ns: u128| ns as f64 / 1e6;
    println!(
        "{:<10} {:>22} {:>30}",
        "host", "bottle approve (ms)", "approve → first success (ms)"
    );
    for (h, a, s) in &rows {
        println!("{h:<10} {:>22.0} {:>30.0}", ms(*a), ms(*s));
    }
    let mut total: Vec<u128> = rows.iter().map(|r| r.2).collect();
    let mut cmd: Vec<u128> = rows.iter().map(|r| r.1).collect();
    total.sort_unstable();
    cmd.sort_unstable();
    let median = |v: &[u128]| (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2;
    let m = median(&total);
    println!(
        "median of {HOSTS}: bottle approve {:.0} ms; approve → first success {:.0} ms (goal ≤ 1000 ms: {})",
        ms(median(&cmd)),
        ms(m),
        if m <= 1_000_000_000 { "met" } else { "MISSED" }
    );
}
