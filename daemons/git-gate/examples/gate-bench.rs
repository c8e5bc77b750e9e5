//! git-gate's benchmark: clone and push through the gate vs straight over SSH to the same
//! upstream (Debian's sshd on loopback), in one run, and the secret scan of a 1 MB push.
//!
//! `bash benches/git-gate.sh` builds and runs it. Goals: clone through the gate (its mirror
//! already fetched) at most 1.2x the direct clone; the scan of a 1 MB push under 50 ms.
//!
//! Knobs: `COMMITS` (5000), `FILE_KB` (10: each commit rewrites one file of this size, so
//! the repo is about COMMITS x FILE_KB of incompressible data), `RUNS` (3).

use bottle_contract::gate::{PushPolicy, ScanSettings};
use bottle_git_gate::gitcmd::ssh_command;
use bottle_git_gate::scan::scan_push;
use bottle_git_gate::testing::{GateProcess, Scratch, Upstream, git, sh};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: incompressible file contents without a dependency.
struct Noise(u64);
impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `commits` commits on `main`, each rewriting one of 64 files with `file_kb` KiB of noise,
/// written with `git fast-import` straight into the upstream's bare repo.
fn fill(bare: &Path, commits: usize, file_kb: usize) {
    let mut child = git(bare)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    let mut input = std::io::BufWriter::new(child.stdin.take().expect("piped"));
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut blob = vec![0u8; file_kb * 1024];
    for i in 0..commits {
        noise.fill(&mut blob);
        let msg = format!("commit {i}");
        write!(
            input,
            "commit refs/heads/main\ncommitter b <b@example.com> {} +0000\ndata {}\n{msg}\n",
            1_700_000_000 + i,
            msg.len()
        )
        .unwrap();
        if i > 0 {
            writeln!(input, "from refs/heads/main^0").unwrap();
        }
        writeln!(
            input,
            "M 644 inline data/file{}.bin\ndata {}",
            i % 64,
            blob.len()
        )
        .unwrap();
        input.write_all(&blob).unwrap();
        writeln!(input).unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success(), "fast-import failed");
}

fn timed(mut cmd: Command) -> Duration {
    let started = Instant::now();
    let out = cmd.output().expect("runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let commits = knob("COMMITS", 5000);
    let file_kb = knob("FILE_KB", 10);
    let runs = knob("RUNS", 3).max(1);
    let binary = std::env::current_exe()
        .expect("own path")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples")
        .join("bottle-git-gate");
    assert!(
        binary.is_file(),
        "{} is missing: build it first (benches/git-gate.sh does)",
        binary.display()
    );

    let up = Upstream::start("127.0.0.1");
    up.repo("big");
    let started = Instant::now();
    fill(&up.bare("big"), commits, file_kb);
    sh(git(&up.bare("big")).args(["gc", "-q"]));
    let size = sh(git(&up.bare("big")).args(["count-objects", "-vH"]));
    let size = size
        .lines()
        .find(|l| l.starts_with("size-pack"))
        .unwrap_or("size-pack: ?")
        .to_owned();
    println!(
        "upstream: {commits} commits, {size} (made in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let pinned = format!("{} {}\n", up.known_hosts_name(), up.host_key);
    let gate = GateProcess::start(
        &binary,
        &pinned,
        vec![up.gate_repo("big", PushPolicy::default())],
        ScanSettings::default(),
    )
    .expect("gate starts");
    let known_hosts = gate.dir.0.join("known_hosts");
    let ssh = ssh_command(&up.client_key, &known_hosts);
    let scratch = Scratch::new("bench");

    // The gate's first fetch fills its mirror (not measured: the goal is "after the fetch").
    let first = Instant::now();
    let mut warm = git(&scratch.0);
    warm.args(["clone", "-q", "--bare"])
        .arg(gate.url("big"))
        .arg("warm");
    timed(warm);
    println!("gate's first fetch + clone: {:.0} ms", ms(first.elapsed()));

    let mut direct = Vec::new();
    let mut gated = Vec::new();
    for i in 0..runs {
        let mut d = git(&scratch.0);
        d.env("GIT_SSH_COMMAND", &ssh)
            .args(["clone", "-q"])
            .arg(up.url("big"))
            .arg(format!("direct{i}"));
        direct.push(timed(d));
        let mut g = git(&scratch.0);
        g.args(["-c", "protocol.version=2", "clone", "-q"])
            .arg(gate.url("big"))
            .arg(format!("gated{i}"));
        gated.push(timed(g));
    }
    let (d, g) = (median(direct), median(gated));
    let ratio = g.as_secs_f64() / d.as_secs_f64();
    println!(
        "clone  direct over ssh {:8.0} ms   through git-gate {:8.0} ms   ratio {ratio:.2}x (goal <= 1.20x) {}",
        ms(d),
        ms(g),
        if ratio <= 1.2 { "met" } else { "NOT MET" }
    );

    // A 1 MB push: text with code-like lines (the scanner's anchors occur in it).
    let mut text = String::new();
    let mut n = 0u64;
    while text.len() < 1 << 20 {
        n += 1;
        text.push_str(&format!(
            "let sk_{n} = fetch(\"https://api.example.com/v1/items/{n}\", {{ token: env.AK_{n} }}); // ghp {n}\n"
        ));
    }
    let mut direct = Vec::new();
    let mut gated = Vec::new();
    let mut scans = Vec::new();
    for i in 0..runs {
        for (via, times) in [("direct", &mut direct), ("gated", &mut gated)] {
            let work = scratch.0.join(format!("{via}{i}"));
            std::fs::write(
                work.join(format!("push-{via}-{i}.txt")),
                format!("{via}{i}\n{text}"),
            )
            .unwrap();
            sh(git(&work).args(["add", "-A"]));
            sh(git(&work).args(["commit", "-q", "-m", "1 MB"]));
            let mut push = git(&work);
            if via == "direct" {
                push.env("GIT_SSH_COMMAND", &ssh);
            }
            push.args(["push", "-q", "origin"])
                .arg(format!("HEAD:refs/heads/bench-{via}-{i}"));
            times.push(timed(push));
        }
        // The scan alone, as the hook runs it, on the objects one such push brings.
        let work = scratch.0.join(format!("gated{i}"));
        std::fs::write(work.join("scan.txt"), format!("scan{i}\n{text}")).unwrap();
        sh(git(&work).args(["add", "-A"]));
        sh(git(&work).args(["commit", "-q", "-m", "scan"]));
        let tip = sh(git(&work).args(["rev-parse", "HEAD"])).trim().to_owned();
        sh(git(&work).args(["reset", "-q", "--hard", "HEAD~1"]));
        let scanner = bottle_dlp::Scanner::new(&[]);
        let started = Instant::now();
        let report = scan_push(
            &|| git(&work),
            std::slice::from_ref(&tip),
            &scanner,
            &ScanSettings::default(),
        )
        .expect("scan");
        scans.push(started.elapsed());
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(report.bytes >= 1 << 20, "{}", report.bytes);
    }
    let (d, g, s) = (median(direct), median(gated), median(scans));
    println!(
        "push   direct over ssh {:8.0} ms   through git-gate {:8.0} ms   ratio {:.2}x (upstream sync + scan + forward)",
        ms(d),
        ms(g),
        g.as_secs_f64() / d.as_secs_f64()
    );
    println!(
        "scan of a 1 MB push {:.1} ms (goal < 50 ms) {}",
        ms(s),
        if s < Duration::from_millis(50) {
            "met"
        } else {
            "NOT MET"
        }
    );
}
