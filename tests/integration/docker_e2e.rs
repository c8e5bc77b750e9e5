//! `bottle run` for real, against the machine's Docker engine, end to end.
//!
//! These tests need `bottle-base:latest` and `bottle-agent:latest` (built offline by
//! `tests/images/build-base.sh`, which `.ci/run` runs). They run side by side, as bottles on
//! one machine do, except those that must run [`alone`]; the first ones also exercise
//! building the sidecar bundle image on demand (racing builds of the same content agree).

use crate::support::{Sandbox, run};
use std::process::{Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Held shared by every engine test, and exclusively by those that must run alone.
static ENGINE: RwLock<()> = RwLock::new(());

const AGENT: &str = "image: bottle-agent:latest\ncwd: none\negress:\n  allowlist: [docs.rs]\n";

/// An MCP client in sh for the agent's side: `post JSON` sends one JSON-RPC message to
/// supervise (Streamable HTTP, plain curl) in an initialized session.
pub const MCP_SH: &str = include_str!("../data/mcp-client.sh");

/// For an engine test that touches only its own bottles (named by its unique slugs, on
/// networks from the pool, which lets racing runs retry): it runs beside the others, as
/// bottles on one machine do.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    ENGINE.read().unwrap_or_else(|e| e.into_inner())
}

/// For an engine test that must run alone: it acts on every bottle (`cleanup`), replaces the
/// bundle image the others run, watches every host interface, or fills the machine or the
/// address pool.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    ENGINE.write().unwrap_or_else(|e| e.into_inner())
}

/// A slug no other test uses.
pub fn unique_slug(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:05}", n % 100_000)
}

/// The docker CLI's stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Everything labelled with `slug`: containers, networks, volumes.
pub fn leftovers(slug: &str) -> String {
    let f = format!("label=io.bottle.slug={slug}");
    [
        docker(&["ps", "-aq", "--filter", &f]),
        docker(&["network", "ls", "-q", "--filter", &f]),
        docker(&["volume", "ls", "-q", "--filter", &f]),
    ]
    .join(" ")
    .trim()
    .to_owned()
}

/// `bottle` as a user runs it: whether pipelock is in the bundle comes from the real image.
pub fn bottle(sb: &Sandbox) -> Command {
    let mut cmd = sb.bottle();
    cmd.env_remove("BOTTLE_PIPELOCK");
    cmd
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.agent("e2e", AGENT);
    sb
}

/// The uid the agent runs as under `cwd: mount`: the invoker's, or 1000 when tests run as root.
fn agent_uid() -> u32 {
    match rustix::process::getuid().as_raw() {
        0 => 1000,
        uid => uid,
    }
}

/// Give `dir` to the agent's user, as a user's own project dir would be (tests may run as root,
/// whose agent gets uid 1000).
fn give_to_agent(dir: &std::path::Path) {
    if rustix::process::getuid().is_root() {
        let ok = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

/// `bottle verify … --json` run in `sb`: the exit code, the findings, stderr.
pub fn verify(sb: &Sandbox, cmd: &mut Command) -> (i32, Vec<serde_json::Value>, String) {
    let (code, out, err) = run(cmd);
    let report: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("verify printed no JSON report ({e}):\n{out}\n{err}"));
    let _ = sb;
    (
        code,
        report["findings"].as_array().cloned().unwrap_or_default(),
        err,
    )
}

/// The verdict of probe `id` (the first finding of that id).
pub fn verdict<'a>(findings: &'a [serde_json::Value], id: &str) -> &'a str {
    findings
        .iter()
        .find(|f| f["probe"] == id)
        .and_then(|f| f["verdict"].as_str())
        .unwrap_or_else(|| panic!("no `{id}` probe in {findings:#?}"))
}

/// `bottle run AGENT --slug SLUG -- sh -c SCRIPT`: exit code, stdout, stderr.
fn run_sh(sb: &Sandbox, agent: &str, slug: &str, script: &str) -> (i32, String, String) {
    run(bottle(sb).args(["run", agent, "--slug", slug, "--", "sh", "-c", script]))
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_one_off_command_runs_its_exit_code_propagates_and_nothing_is_left() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-exit");
    let (code, out, err) = run_sh(&sb, "e2e", &slug, "echo hello-from-the-agent; exit 7");
    assert_eq!(code, 7, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("hello-from-the-agent"), "{out}");
    assert_eq!(
        leftovers(&slug),
        "",
        "nothing labelled with the slug remains"
    );
    assert!(
        !sb.state().join(&slug).exists(),
        "the state dir of a finished run is removed"
    );
    let log = std::fs::read_to_string(sb.state().join("logs").join(format!("{slug}.log")))
        .expect("compose.log is kept");
    assert!(
        log.contains("sidecars | [init]"),
        "the bundle's init logged, with the service name:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no colour in the log");
    assert!(
        log.lines().all(|l| l
            .get(..4)
            .is_some_and(|y| y.chars().all(|c| c.is_ascii_digit()))),
        "each line starts with a timestamp:\n{log}"
    );
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agents_command_is_its_containers_process_with_its_stdio_and_no_token_in_its_config() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-proc");
    // Its parent is the container's init (an exec'd command's parent is outside the
    // container: 0); stdin is piped through to its end; stderr stays stderr.
    let mut child = bottle(&sb)
        .args(["run", "e2e", "--slug", &slug, "--", "sh", "-c"])
        .arg("cat; echo \"ppid=$PPID\"; echo to-stderr >&2; case \"$HTTPS_PROXY\" in *@*) exit 4;; esac")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"line-one\nline-two\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "the proxy URL carries the hop token in the command's env\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.starts_with("line-one\nline-two\nppid=1\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("to-stderr") && !stdout.contains("to-stderr"),
        "{stderr}"
    );
    assert_eq!(leftovers(&slug), "");

    // The token is given with the go-ahead, never in the container's config.
    let slug = unique_slug("e2e-proc-cfg");
    let mut child = start_sleeping(&sb, &slug);
    let agent = format!("bottle-agent-{slug}");
    let entrypoint = docker(&["inspect", "-f", "{{json .Config.Entrypoint}}", &agent]);
    assert!(
        entrypoint.starts_with("[\"/.bottle/start\",\"agent\""),
        "{entrypoint}"
    );
    let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &agent]);
    assert!(env.contains("HTTPS_PROXY=http://egress:"), "{env}");
    assert!(!env.contains('@'), "no credential in the config: {env}");
    let go = docker(&[
        "exec",
        &agent,
        "sh",
        "-c",
        "test -e /.bottle/go/go && echo there || echo gone",
    ]);
    assert_eq!(go.trim(), "gone", "the go-ahead is read once, then removed");
    assert!(
        bottle(&sb)
            .args(["stop", &slug])
            .status()
            .unwrap()
            .success()
    );
    let _ = child.wait();
    assert_eq!(leftovers(&slug), "");
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn keys_have_their_formats_and_modes_and_the_agent_cannot_read_them() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-keys");
    let check = "test -e /etc/pipelock-ca-key.pem && exit 3; \
                 grep -q 'BEGIN CERTIFICATE' /etc/bottle/ca-bundle.pem || exit 4; \
                 grep -rqs 'PRIVATE KEY' /etc/bottle/ && exit 5; \
                 test \"$SSL_CERT_FILE\" = /etc/bottle/ca-bundle.pem || exit 6; exit 0";
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "e2e",
        "--slug",
        &slug,
        "--keep-state",
        "--",
        "sh",
        "-c",
        check,
    ]));
    assert_eq!(
        code, 0,
        "the in-agent check failed with {code}\nstdout: {out}\nstderr: {err}"
    );
    let state = sb.state().join(&slug);
    let mode = |rel: &str| crate::support::mode(&state.join(rel));
    assert_eq!(mode("ca"), 0o700);
    // egress's CA is in every bottle (pipelock's only where the bundle has pipelock).
    assert_eq!(mode("ca/egress/key.pem"), 0o600);
    assert_eq!(mode("ca/egress/cert.pem"), 0o644);
    assert_eq!(mode("ca/agent-trust.pem"), 0o644);
    let key = std::fs::read_to_string(state.join("ca/egress/key.pem")).unwrap();
    assert!(
        key.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "SEC1, as pipelock requires (and egress reads)"
    );
    let openssl = Command::new("openssl")
        .args(["ec", "-noout", "-text", "-in"])
        .arg(state.join("ca/egress/key.pem"))
        .output();
    if let Ok(o) = openssl {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains("prime256v1"),
            "openssl reads a P-256 SEC1 key: {text}"
        );
    }
    assert!(
        std::fs::read_to_string(state.join("compose.log")).is_ok(),
        "--keep-state keeps compose.log in the state dir"
    );
    assert_eq!(leftovers(&slug), "");
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_orphan_probe_stops_before_any_work_and_cleanup_clears_it() {
    let _g = alone();
    let sb = sandbox();
    let slug = unique_slug("e2e-orphan");
    let name = format!("bottle-sidecars-{slug}");
    // An orphan: bottle's name and bottle's slug label.
    docker(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("io.bottle.slug={slug}"),
        "bottle-base:latest",
        "true",
    ]);
    let (code, _, err) = run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "true"]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("container {name} already exists"))
            && err.contains(&format!("`bottle stop {slug}`")),
        "{err}"
    );
    assert!(
        !sb.state().join(&slug).join("ca").exists(),
        "no key was minted"
    );
    let (code, out, _) = run(bottle(&sb).args(["cleanup", "--dry-run"]));
    assert_eq!(code, 0);
    assert!(out.contains(&name), "{out}");
    assert!(
        !docker(&["ps", "-aq", "--filter", &format!("name={name}")]).is_empty(),
        "--dry-run removes nothing"
    );
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &format!("name={name}")]),
        ""
    );
    assert!(
        !sb.state().join(&slug).exists(),
        "the orphan state dir went too"
    );
}

/// A state dir no bottle runs (kept with `--keep-state`, or left by a run that was killed
/// after its containers went) is retired by `bottle cleanup` as after any run: its log and its
/// audit ledger are kept beside the others, the rest (its CA keys) removed.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn cleanup_keeps_the_log_and_ledger_of_a_state_dir_no_bottle_runs() {
    let _g = alone();
    let sb = sandbox();
    let slug = unique_slug("e2e-kept");
    let (code, out, err) =
        run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--keep-state", "--", "true"]));
    assert_eq!(code, 0, "{out}{err}");
    let state = sb.state().join(&slug);
    let log = std::fs::read(state.join("compose.log")).unwrap();
    let ledger = std::fs::read(state.join("ledger.jsonl")).unwrap();
    assert!(state.join("ca/egress/key.pem").is_file());
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("logs of {slug} kept in")), "{out}");
    assert!(!state.exists(), "the state dir, with its keys, is gone");
    let logs = sb.state().join("logs");
    assert_eq!(
        std::fs::read(logs.join(format!("{slug}.log"))).unwrap(),
        log
    );
    assert_eq!(
        std::fs::read(logs.join(format!("{slug}.ledger.jsonl"))).unwrap(),
        ledger
    );
}

/// `bottle cleanup` removes only what bottle made: a container and a network merely named like
/// bottle's survive it, as does a container whose bottle label is no slug bottle makes (and no
/// path is built from it); a state dir without bottle's metadata, or one a run still holds,
/// is left alone.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn cleanup_leaves_what_is_not_bottles_alone() {
    let _g = alone();
    let sb = sandbox();
    let slug = unique_slug("e2e-lookalike");
    let container = format!("bottle-sidecars-{slug}");
    let network = format!("bottle-{slug}-internal");
    let spoofed = format!("{slug}-spoofed");
    docker(&["create", "--name", &container, "bottle-base:latest", "true"]);
    docker(&["network", "create", &network]);
    docker(&[
        "create",
        "--name",
        &spoofed,
        "--label",
        "io.bottle.slug=../../escape",
        "bottle-base:latest",
        "true",
    ]);
    // A run that needs the look-alike's name fails, saying cleanup will not remove it.
    let (code, _, err) = run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not bottle's") && err.contains(&format!("docker rm -f {container}")),
        "{err}"
    );
    std::fs::create_dir_all(sb.state().join("not-a-bottle")).unwrap();
    std::fs::write(sb.state().join("not-a-bottle/notes.txt"), "mine").unwrap();
    // A state dir whose run still holds it (planned, not yet started).
    let (code, out, err) = run(bottle(&sb).args(["run", "e2e", "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    let busy = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("state:"))
        .map(|p| std::path::PathBuf::from(p.trim()))
        .expect("the summary names the state dir");
    let lock = std::fs::File::open(busy.join("run.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    let survivors = (
        docker(&["ps", "-aq", "--filter", &format!("name={container}")]),
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={network}"),
        ]),
        docker(&["ps", "-aq", "--filter", &format!("name={spoofed}")]),
    );
    docker(&["rm", "-f", &container, &spoofed]);
    docker(&["network", "rm", &network]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !survivors.0.is_empty(),
        "the look-alike container survives: {out}"
    );
    assert!(
        !survivors.1.is_empty(),
        "the look-alike network survives: {out}"
    );
    assert!(
        !survivors.2.is_empty(),
        "the spoofed container survives: {out}"
    );
    assert!(out.contains("ignored   container"), "{out}");
    assert!(
        sb.state().join("not-a-bottle/notes.txt").is_file(),
        "a dir without bottle's metadata stays"
    );
    assert!(busy.is_dir(), "a state dir in use stays: {out}");
    drop(lock);
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!busy.exists(), "once its run is gone, it goes: {out}");
}

/// Start `bottle run e2e … -- sleep 300` in the background; returns once the agent is running.
fn start_sleeping(sb: &Sandbox, slug: &str) -> std::process::Child {
    start_agent_sleeping(sb, "e2e", slug)
}

/// Whether a process of the agent's command, its command line containing `needle`, runs in
/// container `agent`. Until the go-ahead the container's process is bottle's start, whose
/// command line names the command too: it does not count.
pub fn command_runs(agent: &str, needle: &str) -> bool {
    docker(&["top", agent])
        .lines()
        .any(|l| l.contains(needle) && !l.contains("/.bottle/start"))
}

/// Start `bottle run AGENT … -- sleep 300` in the background; returns once the agent's command
/// runs (after the bundle's ready check: the agent's container starts before that).
pub fn start_agent_sleeping(sb: &Sandbox, agent_name: &str, slug: &str) -> std::process::Child {
    let child = bottle(sb)
        .args(["run", agent_name, "--slug", slug, "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = format!("bottle-agent-{slug}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !command_runs(&agent, "sleep 300") {
        assert!(
            Instant::now() < deadline,
            "the agent's command never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn ps_logs_and_stop_manage_a_running_bottle() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-ps");
    let child = start_sleeping(&sb, &slug);
    let (_, ps, err) = run(bottle(&sb).arg("ps"));
    assert!(
        ps.lines().any(|l| l.starts_with(&slug)
            && l.contains("e2e")
            && l.contains("docker")
            && l.contains("running")),
        "{ps}{err}"
    );
    let (code, logs, _) = run(bottle(&sb).args(["logs", &slug]));
    assert_eq!(code, 0);
    assert!(logs.contains("[init]"), "{logs}");
    // docker-compose sees the project too, thanks to the compose labels.
    let compose = sb.state().join(&slug).join("compose.yaml");
    let out = Command::new("docker-compose")
        .args(["-p", &format!("bottle-{slug}"), "-f"])
        .arg(&compose)
        .arg("ps")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("bottle-agent-{slug}")),
        "docker-compose ps: {listed}"
    );
    let (code, _, err) = run(bottle(&sb).args(["stop", &slug]));
    assert_eq!(code, 0, "{err}");
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the attached run ends when its bottle is stopped"
    );
    // The bundle's exit was asked for: the run does not take it for a death.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("starting it again"), "{said}");
    assert_eq!(leftovers(&slug), "");
    // Both teardowns keep the logs: in the state dir, or beside the others once the run
    // (whose agent ended) retired it.
    assert!(
        sb.state().join(&slug).join("compose.log").is_file()
            || sb
                .state()
                .join("logs")
                .join(format!("{slug}.log"))
                .is_file()
    );
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn after_kill_9_cleanup_removes_everything() {
    let _g = alone();
    let sb = sandbox();
    let slug = unique_slug("e2e-kill");
    let mut child = start_sleeping(&sb, &slug);
    child.kill().unwrap(); // SIGKILL: no teardown can run
    child.wait().unwrap();
    assert_ne!(
        leftovers(&slug),
        "",
        "a killed bottle leaves its containers"
    );
    let (code, out, err) = run(bottle(&sb).args(["cleanup", "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(leftovers(&slug), "");
}

/// A `bottle run` killed with SIGKILL leaves its bottle running: `bottle ps` calls it
/// orphaned, a new run of that slug says how to clean it up, and `bottle stop` does, keeping
/// its logs.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_killed_run_is_orphaned_and_bottle_stop_cleans_it_up() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-orphan");
    let mut live = start_sleeping(&sb, &format!("{slug}-live"));
    let mut child = start_sleeping(&sb, &slug);
    child.kill().unwrap(); // SIGKILL: no teardown can run
    child.wait().unwrap();
    let (code, ps, err) = run(bottle(&sb).arg("ps"));
    assert_eq!(code, 0, "{err}");
    let line = |s: &str| {
        ps.lines()
            .find(|l| l.split_whitespace().next() == Some(s))
            .unwrap_or_else(|| panic!("{s} missing in {ps}"))
            .to_owned()
    };
    assert!(line(&slug).ends_with("orphaned"), "{ps}");
    assert!(line(&format!("{slug}-live")).ends_with("running"), "{ps}");
    // The hint names every orphan on the machine (another test's may be among them).
    let hint = ps
        .lines()
        .find(|l| l.starts_with("orphaned:"))
        .unwrap_or_else(|| panic!("no hint in {ps}"));
    let named = hint
        .split('`')
        .find_map(|part| part.strip_prefix("bottle stop "))
        .unwrap_or_else(|| panic!("no `bottle stop` in {ps}"));
    assert!(named.split(" / ").any(|s| s == slug), "{ps}");
    let (code, _, err) = run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no `bottle run` holds") && err.contains(&format!("`bottle stop {slug}`")),
        "{err}"
    );
    let (code, _, err) = run(bottle(&sb).args([
        "run",
        "e2e",
        "--slug",
        &format!("{slug}-live"),
        "--",
        "true",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is running"), "{err}");
    let (code, _, err) = run(bottle(&sb).args(["stop", &slug]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(leftovers(&slug), "");
    assert!(
        !sb.state().join(&slug).exists(),
        "the orphan's state dir is retired"
    );
    assert!(
        sb.state()
            .join("logs")
            .join(format!("{slug}.log"))
            .is_file()
    );
    let (code, _, err) = run(bottle(&sb).args(["stop", &format!("{slug}-live")]));
    assert_eq!(code, 0, "{err}");
    let _ = live.wait();
    assert_eq!(leftovers(&format!("{slug}-live")), "");
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn ctrl_c_tears_the_bottle_down() {
    interrupt_tears_down(rustix::process::Signal::INT, 130, "SIGINT");
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn sigterm_tears_the_bottle_down() {
    interrupt_tears_down(rustix::process::Signal::TERM, 143, "SIGTERM");
}

fn interrupt_tears_down(signal: rustix::process::Signal, exit: i32, name: &str) {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-int");
    let child = bottle(&sb)
        .args(["run", "e2e", "--slug", &slug, "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt as soon as bring-up has begun (the first container exists).
    let deadline = Instant::now() + Duration::from_secs(120);
    while docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.bottle.slug={slug}"),
    ])
    .is_empty()
    {
        assert!(Instant::now() < deadline, "bring-up never began");
        std::thread::sleep(Duration::from_millis(50));
    }
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), signal).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit), "{err}");
    assert!(err.contains(&format!("interrupted by {name}")), "{err}");
    assert_eq!(leftovers(&slug), "");
    assert!(
        sb.state().join(&slug).is_dir(),
        "an interrupted run keeps its state dir"
    );
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agent_cannot_reach_anything_outside_its_internal_network() {
    let _g = shared();
    let tag = unique_slug("bottle-test-outside");
    docker(&["network", "create", &tag]);
    let server = format!("{tag}-server");
    docker(&[
        "run",
        "-d",
        "--name",
        &server,
        "--network",
        &tag,
        "bottle-base:latest",
        "sh",
        "-c",
        "while true; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\nreachable' | nc -l -p 8080 -q 1; done",
    ]);
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &server,
    ]);
    let url = format!("http://{ip}:8080/");
    // Control: from the same network the server answers.
    let mut control = String::new();
    for _ in 0..20 {
        control = docker(&[
            "run",
            "--rm",
            "--network",
            &tag,
            "bottle-base:latest",
            "curl",
            "-sS",
            "-m",
            "3",
            &url,
        ]);
        if control.contains("reachable") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let sb = sandbox();
    let slug = unique_slug("e2e-net");
    let probe = format!("curl -sS -m 3 --noproxy '*' {url} && exit 0; exit 9");
    let (code, out, err) =
        run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "sh", "-c", &probe]));
    docker(&["rm", "-f", &server]);
    docker(&["network", "rm", &tag]);
    assert!(
        control.contains("reachable"),
        "the test server works: {control}"
    );
    assert_eq!(
        code, 9,
        "the agent reached {url}!\nstdout: {out}\nstderr: {err}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// Docker's own resolver, which the agent can ask at 127.0.0.11 whatever its resolv.conf says,
/// is given the agent's loopback as its only server: left to the host's resolv.conf, an engine
/// before the CVE-2024-29018 fix (this 20.10 is one) dials a loopback resolver of the host's
/// from the host's namespace. That leak needs the host's own resolver on loopback, which a
/// test cannot set up, so the setting is checked here and the probe's `dns-engine` (asked of
/// 127.0.0.11 from inside) in the verify e2e.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn dockers_own_resolver_in_the_agent_passes_names_only_to_the_agents_loopback() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-edns");
    let running = crate::support::Running::idle(&mut bottle(&sb), "e2e", &slug);
    let agent = format!("bottle-agent-{slug}");
    let servers = docker(&["inspect", "-f", "{{json .HostConfig.Dns}}", &agent]);
    let (status, out, err) = running.release(&slug);
    assert_eq!(
        servers,
        format!("[\"{}\"]", bottle::run::docker::up::AGENT_ENGINE_DNS)
    );
    assert!(status.success(), "{out}{err}");
    assert_eq!(leftovers(&slug), "");
}

/// `bottle run e2e --slug SLUG -- sh -c CMD` at a real terminal (`pty_attach.py`), which
/// types `keys` (hex) once the agent prints SLEEPING.
fn through_a_pty(sb: &Sandbox, slug: &str, cmd: &str, keys: &str) -> Command {
    let script = crate::support::workspace().join("tests/integration/pty_attach.py");
    let mut c = Command::new("python3");
    c.arg(script)
        .arg(crate::support::bottle_bin())
        .args(["run", "e2e", "--slug", slug, "--", "sh", "-c", cmd]);
    for (k, v) in bottle(sb).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("PTY_ATTACH_KEYS", keys).current_dir(sb.project());
    c
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn attach_through_a_real_pty_shows_output_and_passes_resizes() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-pty");
    // No pause: the container's TTY is sized before its command gets the go-ahead.
    let cmd = "stty size; echo READY; read x; stty size; echo SLEEPING; sleep 60";
    let (code, out, err) = run(&mut through_a_pty(&sb, &slug, cmd, "03"));
    assert_eq!(
        code, 130,
        "Ctrl-C reached the agent's shell, whose exit code is bottle's\nstdout: {out}\nstderr: {err}"
    );
    assert!(
        out.contains("24 80"),
        "the initial size reached the agent: {out}"
    );
    assert!(
        out.contains("40 100"),
        "the resize reached the agent: {out}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// A command that closes its output and works on runs to its end (the engine keeps the attach
/// open until its process exits), and its exit code is the run's.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_command_that_closes_its_output_is_waited_for_and_its_code_kept() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-closed");
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "e2e",
        "--slug",
        &slug,
        "--",
        "sh",
        "-c",
        "echo CLOSING; exec >&- 2>&-; sleep 8; exit 3",
    ]));
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("CLOSING") && !err.contains("still runs"),
        "stdout: {out}\nstderr: {err}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// Docker's detach keys at a real terminal end the attach while the command runs on: bottle
/// says so, waits only briefly for it, and tears the bottle down (a command whose output
/// merely ended is waited for far longer, see `attach::CLOSED_EXIT_WAIT`).
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn detaching_at_a_real_terminal_ends_the_bottle_and_says_so() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-detach");
    let cmd = "stty size; echo READY; read x; echo SLEEPING; sleep 600";
    let (code, out, err) = run(&mut through_a_pty(&sb, &slug, cmd, "1011"));
    assert_ne!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(
            "still runs after its output ended (you detached); it is ended with the bottle"
        ),
        "stdout: {out}\nstderr: {err}"
    );
    assert_eq!(leftovers(&slug), "");
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn an_unreachable_docker_is_one_clear_line() {
    let sb = sandbox();
    for args in [&["run", "e2e", "--", "true"][..], &["ps"][..]] {
        let (code, out, err) = run(bottle(&sb)
            .args(args)
            .env("DOCKER_HOST", "tcp://127.0.0.1:9"));
        assert_eq!(code, 1, "{out}{err}");
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{err}");
        assert!(
            error_lines[0].contains("cannot reach Docker at tcp://127.0.0.1:9"),
            "{err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_sidecar_that_never_gets_healthy_fails_the_run_naming_it_with_its_logs() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "sick",
        &format!("{AGENT}plugins:\n  misbehave: {{daemon: sickly, never_ready: true}}\n"),
    );
    let dir = sb.plugin_dir("plugins", &[crate::support::plugins::misbehave()]);
    let slug = unique_slug("e2e-sick");
    let (code, _, err) = run(bottle(&sb)
        .args([
            "run",
            "sick",
            "--slug",
            &slug,
            "--health-timeout",
            "4",
            "--plugin-dir",
        ])
        .arg(&dir)
        .args(["--", "true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "container bottle-sidecars-{slug} did not become healthy"
        )),
        "{err}"
    );
    assert!(
        err.contains("[sickly] sickly-is-up"),
        "its last log lines are shown: {err}"
    );
    assert_eq!(
        leftovers(&slug),
        "",
        "a failure half-way through up still tears down"
    );
    assert!(
        sb.state().join(&slug).join("compose.log").is_file(),
        "a failed run keeps its state and logs"
    );
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn cwd_copy_puts_a_copy_of_the_working_dir_in_the_agent() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "copier",
        "image: bottle-agent:latest\ncwd: copy\nworkdir: /workspace\n",
    );
    std::fs::write(sb.project().join("marker.txt"), "copied-in\n").unwrap();
    // Big enough to cross many of the streamed chunks, in a nested dir.
    let big: Vec<u8> = (0..3 * 1024 * 1024_u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(sb.project().join("deep/er")).unwrap();
    std::fs::write(sb.project().join("deep/er/big.bin"), &big).unwrap();
    let slug = unique_slug("e2e-copy");
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "copier",
        "--slug",
        &slug,
        "--",
        "sh",
        "-c",
        "cat /workspace/marker.txt && wc -c < /workspace/deep/er/big.bin && cksum < /workspace/deep/er/big.bin && echo changed > /workspace/marker.txt",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied-in"), "{out}");
    let host_sum = Command::new("cksum")
        .stdin(std::fs::File::open(sb.project().join("deep/er/big.bin")).unwrap())
        .output()
        .unwrap();
    let host_sum = String::from_utf8_lossy(&host_sum.stdout);
    assert!(out.contains(&format!("{}\n", big.len())), "{out}");
    assert!(
        out.contains(host_sum.trim()),
        "same bytes inside: {out} vs {host_sum}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.project().join("marker.txt")).unwrap(),
        "copied-in\n",
        "the host copy is untouched"
    );
}

/// Rebuilds the bundle image the other tests use (without the stand-in pipelock) when dropped.
struct RestoreBundle;

impl Drop for RestoreBundle {
    fn drop(&mut self) {
        let sb = Sandbox::new();
        let (code, _, err) = run(bottle(&sb)
            .env_remove("BOTTLE_PIPELOCK_IMAGE")
            .args(["images", "build"]));
        docker(&["rmi", "-f", "bottle-test/pipelock:pin"]);
        // A second panic while unwinding would abort every other test: only report it then.
        if std::thread::panicking() {
            if code != 0 {
                eprintln!("restoring the bundle image failed too: {err}");
            }
        } else {
            assert_eq!(code, 0, "restoring the bundle image: {err}");
        }
    }
}

#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_pipelock_image_is_checked_against_its_pinned_digest() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM bottle-base:latest\nRUN printf '#!/bin/sh\\necho stand-in pipelock\\n' > /pipelock && chmod 755 /pipelock\n",
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", "bottle-test/pipelock:pin"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let _restore = RestoreBundle;
    let id = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "bottle-test/pipelock:pin",
    ]);
    let sb = Sandbox::new();
    let build = |image: &str| {
        run(bottle(&sb)
            .env("BOTTLE_PIPELOCK_IMAGE", image)
            .args(["images", "build"]))
    };

    let wrong = format!("sha256:{}", "0".repeat(64));
    let (code, _, err) = build(&format!("bottle-test/pipelock:pin@{wrong}"));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "bottle-test/pipelock:pin is {id}, not the pinned {wrong}"
        )),
        "{err}"
    );

    let (code, out, err) = build(&format!("bottle-test/pipelock:pin@{id}"));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("by tag only"), "{out}");
    let inside = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/usr/local/bin/pipelock",
        "bottle-sidecars:latest",
    ]);
    assert_eq!(inside, "stand-in pipelock");

    let (code, out, err) = build("bottle-test/pipelock:pin");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("by tag only"), "{out}");

    let (code, _, err) = build("bottle-test/pipelock:pin@sha256:short");
    assert_eq!(code, 1);
    assert!(err.contains("64 lower-case hex digits"), "{err}");
}

/// The agent's one way out, for real: its curl and git reach an HTTPS origin only through
/// egress, which injects the real token the agent never holds. The origin runs in this test
/// process on every host address; the bundle reaches it as `host-gateway` (its own network's
/// gateway), trusting the origin's test CA through `egress.upstream_ca`.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agent_reaches_an_https_origin_only_through_egress_with_the_token_injected() {
    use bottle_egress::testing::{Origin, TestPki, fingerprint};
    let _g = shared();
    let sb = Sandbox::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pki = TestPki::new(&["origin.test"]);
    let git_root = sb.dir.path().join("served");
    std::fs::create_dir_all(&git_root).unwrap();
    let work = sb.dir.path().join("seed");
    let seeded = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git init -q {w} && git -C {w} -c user.email=t@t -c user.name=t commit -q --allow-empty -m 'seen through egress' \
             && git clone -q --bare {w} {g}/repo.git && git -C {g}/repo.git update-server-info",
            w = work.display(),
            g = git_root.display()
        ))
        .status()
        .unwrap();
    assert!(seeded.success());
    let origin = rt.block_on(Origin::start("0.0.0.0".parse().unwrap(), &pki, git_root));
    let ca = pki.write_ca(sb.dir.path(), "origin-ca.pem");
    let port = origin.https.port();
    sb.agent(
        "reach",
        &format!(
            "image: bottle-agent:latest\ncwd: none\negress:\n  default_allowlist: false\n  routes:\n    \
             - host: origin.test\n      auth: {{scheme: Bearer, token_ref: E2E_ORIGIN_TOKEN}}\n  \
             hosts: {{origin.test: 'host-gateway:{port}'}}\n  upstream_ca: {}\n",
            ca.display()
        ),
    );
    let token = "e2e-real-token-4b9f0c2e";
    let script = format!(
        "curl -sS -H 'Authorization: Bearer placeholder' https://origin.test:{port}/echo; echo; \
         curl -sS https://blocked.test/; \
         curl -sS --noproxy '*' --max-time 5 https://origin.test:{port}/echo >/dev/null 2>&1 || echo DIRECT-REFUSED; \
         cd /tmp && git clone -q https://origin.test:{port}/git/repo.git r && git -C r log --format=%s; \
         git -C r push -q origin HEAD:refs/heads/x 2>&1 | grep -q 403 && echo PUSH-REFUSED; \
         env | grep -c {token} || true"
    );
    let slug = unique_slug("e2e-egress");
    let (code, out, err) = run(bottle(&sb)
        .env("E2E_ORIGIN_TOKEN", token)
        .env_remove("BOTTLE_PIPELOCK")
        .args(["run", "reach", "--slug", &slug, "--", "sh", "-c", &script]));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("firewall: egress alone"),
        "the start line says which firewall: {err}"
    );
    let seen: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(
        seen["headers"]["authorization"],
        fingerprint(format!("Bearer {token}").as_bytes()),
        "the origin saw the real token, not the agent's placeholder"
    );
    for expected in [
        "blocked by egress: blocked.test is not on this bottle's allowlist",
        "DIRECT-REFUSED",
        "seen through egress",
        "PUSH-REFUSED",
    ] {
        assert!(
            out.contains(expected),
            "{expected:?} missing in\n{out}\n{err}"
        );
    }
    assert_eq!(
        out.lines().last(),
        Some("0"),
        "the agent's env never holds the token: {out}"
    );
    let log = std::fs::read_to_string(sb.state().join("logs").join(format!("{slug}.log"))).unwrap();
    assert!(log.contains("[egress] {"), "egress logs JSON lines:\n{log}");
    assert!(!log.contains(token), "no token in the kept log");
    assert_eq!(leftovers(&slug), "");
}

/// egress refusing its config at start (here: an upstream CA that is not a certificate) ends
/// the run at once, with egress's own line, not after the health deadline.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn an_egress_that_cannot_start_fails_the_run_at_once_with_its_reason() {
    let _g = shared();
    let sb = Sandbox::new();
    let ca = sb.dir.path().join("broken-ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    sb.agent(
        "broken",
        &format!("{AGENT}  upstream_ca: {}\n", ca.display()),
    );
    let slug = unique_slug("e2e-broken");
    let started = Instant::now();
    let (code, _, err) = run(bottle(&sb).args([
        "run",
        "broken",
        "--slug",
        &slug,
        "--health-timeout",
        "120",
        "--",
        "true",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("egress is not ready (it exited with status 2: bottle-egress: ")
            && err.contains("extra-upstream.pem"),
        "egress's own reason reaches the user: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not the 120 s health deadline: a daemon that exited is never ready"
    );
    assert_eq!(leftovers(&slug), "");
}

/// `-vvv` logs everything bottle does, and still no secret value: bollard's debug log of
/// container bodies (which carry env values) is capped.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn no_secret_reaches_the_terminal_or_the_kept_log_at_any_verbosity() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "chatty",
        "image: bottle-agent:latest\ncwd: none\nsecrets: [E2E_MARKER_SECRET]\negress:\n  routes:\n    - host: api.example.com\n      auth: {scheme: Bearer, token_ref: E2E_MARKER_TOKEN}\n",
    );
    let slug = unique_slug("e2e-vvv");
    let marker = "marker-7f3a9c1e-value";
    let token = "marker-token-0d4b2a";
    let (code, out, err) = run(bottle(&sb)
        .env("E2E_MARKER_SECRET", marker)
        .env("E2E_MARKER_TOKEN", token)
        .args([
            "-vvv",
            "run",
            "chatty",
            "--keep-state",
            "--slug",
            &slug,
            "--",
            "true",
        ]));
    assert_eq!(code, 0, "{err}");
    // Nor in any file of the kept state dir (compose.log among them).
    let state = sb.state().join(&slug);
    let mut files = 0;
    for e in walk(&state) {
        let bytes = std::fs::read(&e).unwrap();
        files += 1;
        for secret in [marker, token] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {}",
                e.display()
            );
        }
    }
    assert!(files > 5, "the state dir was kept and read: {files} files");
    assert!(err.lines().count() > 20, "-vvv really logs: {err}");
    for secret in [marker, token] {
        assert!(
            !err.contains(secret) && !out.contains(secret),
            "{secret} leaked:\n{err}"
        );
    }
    let log = std::fs::read_to_string(state.join("compose.log")).unwrap();
    assert!(
        log.contains("[egress]"),
        "the log holds the bundle's output: {log}"
    );
}

/// An internal bridge has the host as its gateway: without `inhibit_ipv4` every host service
/// listening on all addresses is one `nc` away from the agent. The listener here is the
/// test's own, on this bottle's network gateway only.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_host_is_not_reachable_on_the_internal_networks_gateway() {
    let _g = shared();
    let sb = sandbox();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let slug = unique_slug("e2e-gw");
    let script = format!(
        "gw=$(ip route | awk '/default/ {{print $3}}'); echo gateway=$gw; \
         if nc -z -w 3 \"$gw\" {port}; then echo GATEWAY-REACHED; else echo GATEWAY-REFUSED; fi"
    );
    let (code, out, err) =
        run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "sh", "-c", &script]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("gateway=") && out.contains("GATEWAY-REFUSED"),
        "{out}\n{err}"
    );
    assert!(
        listener.accept().is_err(),
        "nothing connected to the host listener"
    );
    let (code, out, _) = run(Command::new("docker").args([
        "network",
        "ls",
        "--filter",
        &format!("label=io.bottle.slug={slug}"),
        "-q",
    ]));
    assert_eq!((code, out.trim()), (0, ""), "networks removed");
}

/// The agent runs with no capabilities, no privilege gain, no IPv6 and a process limit, as
/// the host sets them on every run: no raw socket, no device node.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agent_runs_without_capabilities_ipv6_or_unbounded_processes() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "limited",
        "image: bottle-agent:latest\ncwd: none\nresources: {memory: 512m, pids: 300}\n",
    );
    let slug = unique_slug("e2e-caps");
    let script = "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
                  echo ipv6=$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6); \
                  echo pids=$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max); \
                  echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); \
                  echo uid=$(id -u) home=$HOME; \
                  touch /usr/x 2>/dev/null && echo ROOT-WRITABLE || echo ROOT-READ-ONLY; \
                  touch $HOME/x /tmp/x /workspace/x && echo SCRATCH-OK; \
                  mknod /tmp/dev-null c 1 3 2>/dev/null && echo MKNOD-WORKED || echo MKNOD-REFUSED";
    let (code, out, err) =
        run(bottle(&sb).args(["run", "limited", "--slug", &slug, "--", "sh", "-c", script]));
    assert_eq!(code, 0, "{out}\n{err}");
    for expected in [
        "CapEff:\t0000000000000000".to_owned(),
        "NoNewPrivs:\t1".to_owned(),
        "ipv6=1".to_owned(),
        "pids=300".to_owned(),
        format!("mem={}", 512 << 20),
        format!("uid={} home=/home/agent", agent_uid()),
        "ROOT-READ-ONLY".to_owned(),
        "SCRATCH-OK".to_owned(),
        "MKNOD-REFUSED".to_owned(),
    ] {
        assert!(out.contains(&expected), "{expected:?} missing in\n{out}");
    }
}

/// Under `cwd: mount` the agent edits and commits, but cannot plant a hook or a config
/// command (`core.fsmonitor`) that the user's own git would later run on the host.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn what_the_agent_writes_in_the_mounted_working_dir_is_yours_after_the_run() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "editor",
        "image: bottle-agent:latest\ncwd: mount\nworkdir: /workspace\n",
    );
    give_to_agent(&sb.project());
    let slug = unique_slug("e2e-edit");
    let script =
        "cd /workspace; mkdir -p new/deeper && echo edited > new/deeper/edited.txt && echo EDIT-OK";
    let (code, out, err) =
        run(bottle(&sb).args(["run", "editor", "--slug", &slug, "--", "sh", "-c", script]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("EDIT-OK"), "{out}\n{err}");
    let edited = sb.project().join("new/deeper/edited.txt");
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "edited\n");
    use std::os::unix::fs::MetadataExt;
    for p in [
        edited.as_path(),
        &sb.project().join("new"),
        &sb.project().join("new/deeper"),
    ] {
        assert_eq!(
            std::fs::metadata(p).unwrap().uid(),
            agent_uid(),
            "what the agent writes belongs to the user (never root): {}",
            p.display()
        );
    }
    assert!(
        err.contains("the agent's work is in your dir: 1 file(s) written"),
        "{err}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// `bottle verify` on the shipped `researcher` agent: every probe holds, and the random name
/// the probe tried to resolve goes no further than egress, the agent's only DNS server (a real
/// capture on every host interface, with a control packet proving it sees loopback DNS).
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn verify_holds_on_the_researcher_example_and_no_dns_query_leaves() {
    let _g = alone();
    let sb = Sandbox::new();
    let capture_file = sb.dir.path().join("dns.txt");
    let mut capture = Command::new("tcpdump")
        .args(["-l", "-n", "-A", "-i", "any", "port 53"])
        .stdout(std::fs::File::create(&capture_file).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (apt install tcpdump; .ci/run does)");
    std::thread::sleep(Duration::from_millis(800));
    let (code, findings, err) = verify(&sb, bottle(&sb).args(["verify", "researcher", "--json"]));
    // Control: a query for a name of our own to loopback's port 53 (nothing serves it).
    let control = format!("control{}", unique_slug("x").replace('-', ""));
    let mut query = vec![
        0x12,
        0x34,
        1,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        control.len() as u8,
    ];
    query.extend_from_slice(control.as_bytes());
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&query, "127.0.0.1:53").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&capture),
        rustix::process::Signal::INT,
    );
    let _ = capture.wait();
    let captured = std::fs::read_to_string(&capture_file).unwrap();
    assert_eq!(code, 0, "{findings:#?}\n{err}");
    for f in &findings {
        assert_ne!(f["verdict"], "FAIL", "{f}");
    }
    for id in [
        "uid",
        "capabilities",
        "no-new-privileges",
        "seccomp",
        "root-fs",
        "raw-socket",
        "mknod",
        "setuid-file",
        "docker-socket",
        "gateway",
        "ipv6",
        "dns",
        "dns-engine",
        "dns-allowed",
        "direct-tcp",
        "bundle-ports",
        "private-keys",
        "proxy-unlisted",
        "proxy-loopback",
        "proxy-ip-literal",
        "proxy-https-push",
        "listener-hits",
        // From the host: egress refuses whoever lacks the hop token.
        "hop-egress",
    ] {
        assert_eq!(verdict(&findings, id), "PASS", "{id}: {findings:#?}");
    }
    let dns = findings.iter().find(|f| f["probe"] == "dns").unwrap();
    let label = dns["tried"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.split('.').next())
        .unwrap()
        .to_owned();
    assert!(label.starts_with("leak-researcher-"), "{dns}");
    assert!(
        captured.contains(&control),
        "the capture sees loopback DNS (control {control}):\n{captured}"
    );
    // The agent's resolver is egress in the bundle: the query may cross the bottle's own
    // bridge to the bundle's port 53 (and the refusal come back), and go nowhere else.
    let bundle = findings
        .iter()
        .find(|f| f["probe"] == "bundle-ports")
        .and_then(|f| f["tried"].as_str())
        .and_then(|t| t.rsplit_once('(')?.1.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no bundle address in {findings:#?}"))
        .to_owned();
    let lines: Vec<&str> = captured.lines().collect();
    let mut peers = std::collections::BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains(&label) {
            continue;
        }
        // The packet's header: this line or the nearest one above that has ` > `.
        let header = lines[..=i]
            .iter()
            .rev()
            .find(|l| l.contains(" > ") && l.contains(" IP "))
            .unwrap_or_else(|| panic!("no header for {line}:\n{captured}"));
        let (from, to) = header
            .split(" IP ")
            .nth(1)
            .and_then(|r| r.split(": ").next())
            .and_then(|r| r.split_once(" > "))
            .unwrap_or_else(|| panic!("{header}"));
        let host = |a: &str| a.rsplit_once('.').map_or(a, |(h, _)| h).to_owned();
        let (from_host, to_host) = (host(from), host(to));
        let to_bundle = to_host == bundle && to.ends_with(".53");
        let from_bundle = from_host == bundle && from.ends_with(".53");
        assert!(
            to_bundle || from_bundle,
            "the agent's lookup of {label} went past egress: {header}\n{captured}"
        );
        peers.insert(if to_bundle { from_host } else { to_host });
    }
    assert!(
        peers.len() <= 1,
        "only the agent asks egress about {label}: {peers:?}\n{captured}"
    );
}

/// `bottle verify` from a mounted repo whose hooks live in a `core.hooksPath` dir (as husky
/// sets up): the hooks, the config and that dir are all out of the agent's reach.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn verify_in_a_mounted_repo_plants_what_git_runs_and_your_dir_never_gets_it() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "editor",
        "image: bottle-agent:latest\ncwd: mount\nworkdir: /workspace\n",
    );
    let ok = Command::new("git")
        .args(["init", "-q"])
        .current_dir(sb.project())
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::create_dir_all(sb.project().join(".husky")).unwrap();
    let ok = Command::new("git")
        .args(["config", "core.hooksPath", ".husky"])
        .current_dir(sb.project())
        .status()
        .unwrap();
    assert!(ok.success());
    // A submodule's git dir, as `git submodule add` leaves it.
    std::fs::create_dir_all(sb.project().join(".git/modules/sub/hooks")).unwrap();
    give_to_agent(&sb.project());
    let (code, findings, err) = verify(&sb, bottle(&sb).args(["verify", "editor", "--json"]));
    assert_eq!(code, 0, "{findings:#?}\n{err}");
    for id in [
        "workdir-git-config",
        "workdir-git-hook",
        "workdir-git-rename",
        "workdir-nested-repo",
        "workdir-gitdir-file",
        "workdir-bare-repo",
        "setuid-file",
    ] {
        assert_eq!(verdict(&findings, id), "PASS", "{id}: {findings:#?}");
    }
    assert_eq!(
        std::fs::read_dir(sb.project().join(".husky"))
            .unwrap()
            .count(),
        0,
        "nothing planted"
    );
    for planted in bottle_probe::PLANT_DIRS {
        assert!(!sb.project().join(planted).exists(), "{planted}");
    }
}

/// `bottle run --verify` runs the suite first and hands the terminal over when it held.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn run_verify_hands_over_the_terminal_only_after_the_suite_held() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-rv");
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "e2e",
        "--verify",
        "--slug",
        &slug,
        "--",
        "sh",
        "-c",
        "echo handed-over; id -u",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("nothing escaped; handing over the terminal"),
        "{err}"
    );
    assert!(out.contains("handed-over"), "{out}");
    assert!(out.contains(&format!("{}\n", agent_uid())), "{out}");
    assert_eq!(leftovers(&slug), "");
    // By name too: an object without the label would escape the check above.
    let named = format!("name={slug}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &named]), "");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &named]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &named]), "");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// A real escape the suite must catch: with `--grant agent=root` and a working dir root may
/// write, the agent leaves a setuid-root program in the user's dir. `bottle verify` says FAIL
/// and exits 1; `bottle run --verify` refuses to hand the terminal over.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_root_agent_fails_the_suite_and_run_verify_does_not_attach() {
    use std::os::unix::fs::PermissionsExt;
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "rooted",
        "image: bottle-agent:latest\ncwd: mount\nworkdir: /workspace\nuser: \"0:0\"\n",
    );
    // Writable by root without CAP_DAC_OVERRIDE, whoever runs the tests.
    std::fs::set_permissions(sb.project(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, findings, err) = verify(
        &sb,
        bottle(&sb).args(["verify", "rooted", "--grant", "agent=root", "--json"]),
    );
    assert_eq!(code, 1, "{findings:#?}\n{err}");
    assert_eq!(verdict(&findings, "setuid-file"), "FAIL", "{findings:#?}");
    assert_eq!(verdict(&findings, "uid"), "PASS", "root was granted");
    assert_eq!(verdict(&findings, "capabilities"), "PASS", "{findings:#?}");
    let slug = unique_slug("e2e-rootv");
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "rooted",
        "--grant",
        "agent=root",
        "--verify",
        "--slug",
        &slug,
        "--",
        "echo",
        "should-not-run",
    ]));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(!out.contains("should-not-run"), "{out}");
    assert!(out.contains("FAIL  setuid-file"), "{out}");
    assert!(err.contains("not handing over the terminal"), "{err}");
    assert_eq!(leftovers(&slug), "");
}

/// With another bottle running, the suite also tries every address of that bottle's
/// containers, directly and through the proxy: none is reachable.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn verify_cannot_reach_another_bottle() {
    let _g = shared();
    let sb = sandbox();
    let other = unique_slug("e2e-other");
    let mut child = start_sleeping(&sb, &other);
    let (code, findings, err) = verify(&sb, bottle(&sb).args(["verify", "researcher", "--json"]));
    let (stop, _, stop_err) = run(bottle(&sb).args(["stop", &other]));
    let _ = child.wait();
    assert_eq!(stop, 0, "{stop_err}");
    assert_eq!(code, 0, "{findings:#?}\n{err}");
    let tried: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| {
            f["tried"].as_str().is_some_and(|t| {
                t.contains(&format!(
                    "another bottle's container bottle-sidecars-{other}"
                ))
            })
        })
        .collect();
    // Its bundle is on the shared way out alone (its agent on no network): that address,
    // directly and through the proxy.
    assert!(
        tried.len() >= 2,
        "its network, directly and through the proxy: {findings:#?}"
    );
    for f in tried {
        assert_eq!(f["verdict"], "PASS", "{f}");
    }
}

/// A backend that renders no bottle labels at all still gets a confined agent, and every
/// object it created is labelled by the host and removed at teardown.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_backend_without_labels_neither_unconfines_the_agent_nor_leaves_objects_behind() {
    use sha2::Digest;
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "bare",
        "image: bottle-agent:latest\ncwd: none\nplugins:\n  docker: {rogue: no-labels}\n",
    );
    let file = crate::support::plugins::rogue_backend();
    let hash: String = sha2::Sha256::digest(std::fs::read(file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = sb.plugin_dir("backend", &[file]);
    let slug = unique_slug("e2e-bare");
    let (code, out, err) = run(bottle(&sb)
        .args(["run", "bare", "--slug", &slug, "--grant"])
        .arg(format!("docker=replace:sha256:{hash}"))
        .arg("--plugin-dir")
        .arg(&dir)
        .args(["--", "sh", "-c", "grep CapEff /proc/self/status; id -u"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains(&format!("{}\n", agent_uid())), "{out}");
    assert_eq!(leftovers(&slug), "");
}

/// The SDK's worked example, built from source and loaded with --plugin-dir, runs in the
/// bundle and the agent reaches it on its declared port.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_example_sidecar_runs_and_the_agent_reaches_it() {
    let _g = shared();
    let sb = sandbox();
    let dir = sb.plugin_dir("plugins", &[crate::support::plugins::hello()]);
    let slug = unique_slug("e2e-hello");
    let (code, out, err) = run(bottle(&sb)
        .args(["run", "e2e", "--slug", &slug, "--plugin-dir"])
        .arg(&dir)
        .args([
            "--",
            "sh",
            "-c",
            "echo env=$HELLO_GREETING; nc -w 5 hello 7777 </dev/null",
        ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("env=hello from a plugin"), "{out}");
    assert!(
        out.lines().any(|l| l == "hello from a plugin"),
        "the daemon answered: {out}\n{err}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// With bottle's own daemons in the bundle, the agent's container is on no network at all:
/// loopback alone, its names for the bundle at the bundle's address in its own namespace,
/// where its init bound the daemons' ports and handed them over; every other port there is
/// closed. (A bundle with a sidecar of another's keeps the agent's network:
/// `the_example_sidecar_runs_and_the_agent_reaches_it`.)
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agent_is_on_no_network_and_reaches_the_bundle_in_its_own_namespace() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-nonet");
    let script = r#"ls /sys/class/net | tr '\n' ' '; echo
getent hosts egress
for p in 9099 443 80 9418 8888 22; do nc -z -w 2 127.0.0.2 $p && echo "open $p" || echo "closed $p"; done
curl -sS -o /dev/null -w 'proxy answered %{http_code}\n' http://unlisted.example/"#;
    let (code, out, err) =
        run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "sh", "-c", script]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.lines().any(|l| l == "lo "), "loopback alone: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("127.0.0.2 ") && l.split_whitespace().any(|n| n == "egress")),
        "{out}"
    );
    for open in ["open 9099", "open 443", "open 80"] {
        assert!(out.contains(open), "{open}: {out}\n{err}");
    }
    for closed in ["closed 9418", "closed 8888", "closed 22"] {
        assert!(out.contains(closed), "{closed}: {out}\n{err}");
    }
    assert!(out.contains("proxy answered 403"), "{out}\n{err}");
    assert_eq!(leftovers(&slug), "");
}

/// What the agent installs runs where tools put it: `/tmp` (`go test`, build scripts) and its
/// home (a venv's `pip`, `npm`, `cargo install`), both `nosuid,nodev` but not `noexec`.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn programs_the_agent_writes_run_from_tmp_and_its_home() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-exec");
    let script = r#"for d in /tmp "$HOME"; do printf '#!/bin/sh\necho ran from %s\n' "$d" > "$d/x.sh" && chmod +x "$d/x.sh" && "$d/x.sh"; done
printf '#!/usr/bin/env python3\nprint("python ran from /tmp")\n' > /tmp/p.py && chmod +x /tmp/p.py && /tmp/p.py
python3 -m venv "$HOME/v" && "$HOME/v/bin/pip" --version >/dev/null && "$HOME/v/bin/python" -c 'print("venv pip ran")'
grep -E " (/tmp|$HOME) " /proc/mounts"#;
    let (code, out, err) =
        run(bottle(&sb).args(["run", "e2e", "--slug", &slug, "--", "sh", "-c", script]));
    assert_eq!(code, 0, "{out}\n{err}");
    for expected in ["ran from /tmp", "python ran from /tmp", "venv pip ran"] {
        assert!(out.contains(expected), "{expected}: {out}\n{err}");
    }
    assert!(
        out.lines().filter(|l| l.starts_with("ran from /")).count() == 2,
        "{out}\n{err}"
    );
    let mounts: Vec<&str> = out.lines().filter(|l| l.starts_with("tmpfs ")).collect();
    assert_eq!(mounts.len(), 2, "{out}");
    for m in mounts {
        assert!(
            m.contains("nosuid") && m.contains("nodev") && !m.contains("noexec"),
            "{m}"
        );
    }
    assert_eq!(leftovers(&slug), "");
}

/// Each plugin's daemons run as their own user, with their read-only files installed for that
/// user alone; the init (whose env Docker fills with every secret of the bundle) and egress
/// (which holds the tokens it injects) are not dumpable either. So another daemon can read
/// neither their /proc/<pid>/environ nor egress's CA key or routes, installed or bound.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_daemon_cannot_read_the_secrets_in_the_inits_or_egress_env() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "spied",
        r#"image: bottle-agent:latest
cwd: none
egress:
  routes:
    - host: api.example.com
      auth: {scheme: Bearer, token_ref: E2E_SPY_TOKEN}
plugins:
  misbehave:
    daemon: spy
    script: |
      sleep 3
      cat /proc/self/environ >/dev/null && echo spy-self-readable
      echo "spy-uid-$(id -u)"
      for f in /etc/egress-ca/bundle.pem /run/bottle/private/egress/1 /etc/egress/routes.yaml; do
        if cat "$f" >/dev/null 2>&1; then echo "spy-read-file $f"; else echo "spy-denied-file $f"; fi
      done
      for p in /proc/[0-9]*; do
        n=$(cat "$p/comm" 2>/dev/null)
        case "$n" in bottle-init|bottle-egress) ;; *) continue ;; esac
        if cat "$p/environ" >/dev/null 2>&1; then echo "spy-read-$n"; else echo "spy-denied-$n"; fi
      done
      exec sleep 300
"#,
    );
    let dir = sb.plugin_dir("plugins", &[crate::support::plugins::misbehave()]);
    let slug = unique_slug("e2e-spy");
    let (code, _, err) = run(bottle(&sb)
        .env("E2E_SPY_TOKEN", "spy-token-5e1f")
        .args([
            "run",
            "spied",
            "--keep-state",
            "--slug",
            &slug,
            "--plugin-dir",
        ])
        .arg(&dir)
        .args(["--", "sh", "-c", "sleep 6"]));
    assert_eq!(code, 0, "{err}");
    let log = std::fs::read_to_string(sb.state().join(&slug).join("compose.log")).unwrap();
    assert!(log.contains("spy-self-readable"), "the spy ran: {log}");
    assert!(
        log.contains("spy-uid-61") && !log.contains("spy-uid-0"),
        "the spy runs as its plugin's user: {log}"
    );
    for f in [
        "/etc/egress-ca/bundle.pem",
        "/run/bottle/private/egress/1",
        "/etc/egress/routes.yaml",
    ] {
        assert!(log.contains(&format!("spy-denied-file {f}")), "{f}: {log}");
    }
    assert!(!log.contains("spy-read-file"), "{log}");
    for name in ["bottle-init", "bottle-egress"] {
        assert!(log.contains(&format!("spy-denied-{name}")), "{name}: {log}");
    }
    assert!(!log.contains("spy-read-"), "{log}");
    assert!(leftovers(&slug).is_empty(), "{}", leftovers(&slug));
}

/// The host's address on Docker's default bridge (what `host-gateway` means): containers on
/// other bridges reach the host there too.
pub fn docker_host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("docker0 has no IPv4 address: {text}"))
}

/// The agent clones and pushes with the upstream's own URL (rewritten to git-gate by its
/// gitconfig); the upstream is a real sshd on the host's address on Docker's default bridge.
/// The push policy confines it to its branches, a planted key is refused, and no SSH key is
/// anywhere in its container.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agent_clones_and_pushes_through_git_gate_with_no_key_in_its_container() {
    use bottle_git_gate::testing::{Upstream, git, sh};
    let _g = shared();
    let up = Upstream::start(&docker_host_address());
    let url = up.repo("proj");
    let seeded = up.rev("proj", "main");
    let sb = Sandbox::new();
    sb.agent(
        "coder",
        &format!(
            "image: bottle-agent:latest\ncwd: none\ngit:\n  - name: proj\n    url: {url}\n    key: {}\n    known_host: {}\n    push: {{allow: ['bottle/coder/*']}}\n",
            up.client_key.display(),
            up.host_key
        ),
    );
    let script = format!(
        "set -u; cd /tmp; g='git -c user.name=agent -c user.email=agent@example.com'; \
         $g clone -q {url} w && $g -C w log --format=%s; \
         echo work > w/new.txt && $g -C w add new.txt && $g -C w commit -qm agent-work; \
         $g -C w push -q origin HEAD:bottle/coder/x && echo PUSHED; \
         $g -C w push origin HEAD:main 2>&1 | grep -q 'may push only to refs/heads/bottle/coder/' && echo MAIN-REFUSED; \
         printf 'id = AKIA%s\\n' Z7QWERTYUIOPASDF > w/k.txt && $g -C w add k.txt && $g -C w commit -qm oops; \
         $g -C w push origin HEAD:bottle/coder/y 2>&1 | grep -q 'k.txt:1: aws-access-key-id' && echo SECRET-REFUSED; \
         grep -rlsI 'PRIVATE KEY' / --exclude-dir=proc --exclude-dir=sys | head -3; echo SCANNED"
    );
    let slug = unique_slug("e2e-gate");
    let (code, out, err) =
        run(bottle(&sb).args(["run", "coder", "--slug", &slug, "--", "sh", "-c", &script]));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for expected in ["seed", "PUSHED", "MAIN-REFUSED", "SECRET-REFUSED"] {
        assert!(
            out.contains(expected),
            "{expected:?} missing in\n{out}\n{err}"
        );
    }
    let after_scan: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("SECRET-REFUSED"))
        .skip(1)
        .collect();
    assert_eq!(
        after_scan,
        ["SCANNED"],
        "a private key is readable in the agent: {out}"
    );
    assert_eq!(
        sh(git(&up.bare("proj")).args(["log", "-1", "--format=%s", "bottle/coder/x"])).trim(),
        "agent-work",
        "the push landed upstream"
    );
    assert_eq!(up.rev("proj", "main"), seeded, "main is not the agent's");
    assert_eq!(
        up.rev("proj", "bottle/coder/y"),
        None,
        "the secret never left"
    );
    // The ledger holds each push, the accepted one and the refused ones with their reasons.
    let (code, shown, err) = run(bottle(&sb).args(["audit", "show", &slug, "--json"]));
    assert_eq!(code, 0, "{err}");
    let pushes: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "git" && r["data"]["op"] == "push")
        .collect();
    assert!(
        pushes.iter().all(|r| r["writer"] == "bundle/git-gate")
            && pushes
                .iter()
                .any(|r| r["data"]["push"]["outcome"] == "accepted")
            && pushes.iter().any(|r| {
                r["data"]["push"]["reason"]
                    .as_str()
                    .is_some_and(|why| why.contains("looks like a secret"))
            }),
        "{shown}"
    );
    assert!(
        !shown.contains("Z7QWERTYUIOPASDF"),
        "no secret in the ledger"
    );
    let log = std::fs::read_to_string(sb.state().join("logs").join(format!("{slug}.log"))).unwrap();
    assert!(
        log.contains("[git-gate] {") && log.contains("\"op\":\"push\""),
        "git-gate logs JSON lines:\n{log}"
    );
    assert!(
        !log.contains("Z7QWERTYUIOPASDF"),
        "no secret in the kept log"
    );
    assert_eq!(leftovers(&slug), "");
}

/// The agent asks supervise over MCP (plain curl, JSON-RPC over Streamable HTTP); the human
/// sees the request with `bottle approvals` on the host and refuses it with `bottle reject`;
/// the agent's `request_status` returns the refusal and the note.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn the_agent_asks_supervise_and_sees_the_humans_refusal() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "asker",
        "image: bottle-agent:latest\ncwd: none\nsupervise: true\n",
    );
    let script = MCP_SH.to_owned()
        + r#"out=$(post '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"request_host_access","arguments":{"host":"pypi.org","reason":"need requests"}}}')
id=$(echo "$out" | sed -n 's/.*\\"id\\":\\"\([a-z0-9]*\)\\".*/\1/p' | head -1)
echo "ASKED $id"
st="$out"
for i in 1 2 3 4 5 6; do
  if echo "$st" | grep -q 'use the mirror'; then echo "REFUSAL-SEEN"; break; fi
  st=$(post "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"request_status\",\"arguments\":{\"id\":\"$id\"}}}")
done
"#;
    let slug = unique_slug("e2e-ask");
    let child = bottle(&sb)
        .args(["run", "asker", "--slug", &slug, "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The human, on the host: wait for the request, then refuse it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        let (_, out, _) = run(sb.bottle().args(["approvals", &slug, "--json"]));
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if let Some(first) = listed.as_array().and_then(|a| a.first()) {
            assert_eq!(first["host"], "pypi.org", "{first}");
            assert_eq!(
                first["effect"],
                "the agent can reach pypi.org, no credential"
            );
            break first["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no request showed up: {out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let (_, table, _) = run(sb.bottle().arg("approvals"));
    assert!(
        table.contains(&id) && table.contains("need requests"),
        "{table}"
    );
    let (code, out, err) = run(sb
        .bottle()
        .args(["reject", &id, "--note", "use the mirror"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(sb.bottle().args(["reject", &id]));
    assert_eq!(code, 1);
    assert!(err.contains("already rejected"), "{err}");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ASKED {id}")) && stdout.contains("REFUSAL-SEEN"),
        "{stdout}"
    );
    assert_eq!(leftovers(&slug), "");
}

/// A new route table reaches the running egress through `bottle-init reload` and is
/// confirmed by its hash; a broken one is refused and the old table keeps running.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_reload_is_confirmed_by_the_hash_egress_runs_and_a_bad_file_keeps_the_old() {
    use sha2::Digest;
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-reload");
    let mut child = start_sleeping(&sb, &slug);
    let routes = sb.state().join(&slug).join("egress").join("routes.yaml");
    let original = std::fs::read_to_string(&routes).unwrap();
    let sha = |text: &str| -> String {
        sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let reload = || {
        let out = Command::new("docker")
            .args(["exec", &format!("bottle-sidecars-{slug}")])
            .args([
                "/usr/local/bin/bottle-init",
                "reload",
                "/etc/bottle/daemons.json",
                "egress",
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // A changed (still valid) table: a comment line changes its hash.
    let changed = format!("{original}# reloaded\n");
    std::fs::write(&routes, &changed).unwrap();
    let (code, out) = reload();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), format!("egress runs config {}", sha(&changed)));
    // A broken table: refused, the changed one runs on.
    std::fs::write(&routes, "routes: [\n").unwrap();
    let (code, out) = reload();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("still runs config {}", sha(&changed)))
            && out.contains("refused the new file"),
        "{out}"
    );
    let _ = run(sb.bottle().args(["stop", &slug]));
    let _ = child.wait();
    assert_eq!(leftovers(&slug), "");
}

/// An HTTPS origin on every host address that the bundle reaches as `host-gateway`, and an
/// agent manifest (`supervise: true`) that knows it as `origin.test` but may not reach it
/// unless `extra` says so.
pub fn origin_agent(
    sb: &Sandbox,
    rt: &tokio::runtime::Runtime,
    name: &str,
    extra: &str,
) -> bottle_egress::testing::Origin {
    let (origin, ca) = host_origin(sb, rt, &["origin.test"]);
    sb.agent(
        name,
        &format!(
            "image: bottle-agent:latest\ncwd: none\nsupervise: true\negress:\n  default_allowlist: false\n  \
             hosts: {{origin.test: 'host-gateway:{}'}}\n  upstream_ca: {}\n{extra}",
            origin.https.port(),
            ca.display()
        ),
    );
    origin
}

/// An HTTPS origin on every host address answering as `names` (with its own test CA, whose
/// file is returned for `egress.upstream_ca`), serving nothing under `/git/`.
pub fn host_origin(
    sb: &Sandbox,
    rt: &tokio::runtime::Runtime,
    names: &[&str],
) -> (bottle_egress::testing::Origin, std::path::PathBuf) {
    use bottle_egress::testing::{Origin, TestPki};
    let pki = TestPki::new(names);
    let served = sb.dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let origin = rt.block_on(Origin::start("0.0.0.0".parse().unwrap(), &pki, served));
    let ca = pki.write_ca(sb.dir.path(), "origin-ca.pem");
    (origin, ca)
}

/// A one-thread runtime for a test's origin.
pub fn small_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The id of the first request bottle `slug`'s agent made through supervise, once it shows.
/// If `child` (that bottle's `bottle run`) ends first or nothing shows in two minutes, it
/// panics with what the run printed and its logs, so a failure says where it stopped.
pub fn first_request(sb: &Sandbox, slug: &str, child: &mut std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, out, _) = run(sb.bottle().args(["approvals", slug, "--json"]));
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if let Some(first) = listed.as_array().and_then(|a| a.first()) {
            return first["id"].as_str().unwrap().to_owned();
        }
        let ended = child.try_wait().ok().flatten();
        if ended.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().ok();
            panic!(
                "no request showed up (approvals: {out}; bottle run ended: {status:?})\n{}",
                what_the_run_left(sb, slug, child)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What an ended `bottle run` printed (where its pipes are still the test's) and the logs
/// it kept, for a failing test's message.
fn what_the_run_left(sb: &Sandbox, slug: &str, child: &mut std::process::Child) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    for (name, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        ),
    ] {
        let mut got = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut got);
        }
        text += &format!("--- {name}:\n{got}\n");
    }
    let (_, logs, _) = run(sb.bottle().args(["logs", slug]));
    text + "--- bottle logs:\n" + &logs
}

/// The issue's story: the agent's curl is refused, it asks supervise, the human runs
/// `bottle approve` on the host, and the same curl goes through, with no restart.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn bottle_approve_opens_a_host_to_the_running_agent_without_a_restart() {
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let origin = origin_agent(&sb, &rt, "asker", "");
    let port = origin.https.port();
    let script = MCP_SH.to_owned()
        + &format!(
            r#"curl -sS https://origin.test:{port}/echo; echo
out=$(post '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"request_host_access","arguments":{{"host":"origin.test","reason":"fetch the echo","failed_url":"https://origin.test:{port}/echo"}}}}}}')
id=$(echo "$out" | sed -n 's/.*\\"id\\":\\"\([a-z0-9]*\)\\".*/\1/p' | head -1)
echo "ASKED $id"
i=0
until curl -sf -o /dev/null https://origin.test:{port}/echo; do i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1; done
echo "THROUGH after $i tries"
# The host records the approval as applied once egress runs the new table, a moment after the
# agent's request can already go through.
j=0
until post "{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{{\"name\":\"request_status\",\"arguments\":{{\"id\":\"$id\"}}}}}}" | grep -q 'in effect now'; do j=$((j+1)); [ $j -gt 100 ] && break; sleep 0.1; done
[ $j -le 100 ] && echo STATUS-APPLIED
"#
        );
    let slug = unique_slug("e2e-approve");
    let mut child = bottle(&sb)
        .args(["run", "asker", "--slug", &slug, "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = first_request(&sb, &slug, &mut child);
    // A reload that cannot happen (the bundle frozen): recorded as approved and not applied,
    // the old files back in place; once the bundle is back, `bottle approve` tries again.
    let state = sb.state().join(&slug);
    let routes_before = std::fs::read_to_string(state.join("egress/routes.yaml")).unwrap();
    let bundle = format!("bottle-sidecars-{slug}");
    docker(&["pause", &bundle]);
    let (code, out, err) = run(sb.bottle().args(["approve", &id, "--yes"]));
    docker(&["unpause", &bundle]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("approved {id}, but not applied"))
            && err.contains("is paused")
            && err.contains("the old files are back"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("egress/routes.yaml")).unwrap(),
        routes_before
    );
    let (_, table, _) = run(sb.bottle().args(["approvals", &slug]));
    assert!(
        table.contains("failed") && table.contains("not applied:"),
        "{table}"
    );
    let (code, out, err) = run(sb.bottle().args(["approve", &id, "--yes"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "the agent can reach origin.test, no credential; in effect now (egress runs config "
        ),
        "{out}"
    );
    let (code, _, err) = run(sb.bottle().args(["approve", &id, "--yes"]));
    assert_eq!(code, 1);
    assert!(err.contains("already approved"), "{err}");
    let approved = std::fs::read_to_string(state.join("approved.yaml")).unwrap();
    assert!(approved.contains("host: origin.test"), "{approved}");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "blocked by egress: origin.test is not on this bottle's allowlist",
        &format!("ASKED {id}"),
        "STATUS-APPLIED",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing in\n{stdout}"
        );
    }
    let tries: u32 = stdout
        .split("THROUGH after ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(tries <= 1200, "the approval never took effect:\n{stdout}");
    assert_eq!(leftovers(&slug), "");
    // The ledger holds the refusal, the agent's request, the human's approval and the request
    // that then went through, in that order.
    let (code, shown, err) = run(sb.bottle().args(["audit", "show", &slug, "--json"]));
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |f: &dyn Fn(&serde_json::Value) -> bool| {
        records
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("missing in {shown}"))
    };
    let refused = at(&|r| r["data"]["host"] == "origin.test" && r["data"]["decision"] == "block");
    let asked = at(&|r| r["kind"] == "ask" && r["data"]["id"] == id.as_str());
    let decided = at(&|r| {
        r["kind"] == "decision" && r["writer"] == "host" && r["data"]["decision"] == "approved"
    });
    let allowed = at(&|r| r["data"]["host"] == "origin.test" && r["data"]["decision"] == "allow");
    assert!(
        refused < asked && asked < decided && decided < allowed,
        "{shown}"
    );
    assert_eq!(records[asked]["writer"], "bundle/supervise");
}

/// The issue's story for a grant that ends by itself: refused, asked, approved `--for 8s`,
/// allowed, then refused again once the time is up, naming when the grant ended, without a
/// restart; the host takes the route out live, and the ledger holds every step.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_grant_for_eight_seconds_ends_by_itself_and_the_ledger_holds_it() {
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let origin = origin_agent(&sb, &rt, "briefly", "");
    let port = origin.https.port();
    let script = MCP_SH.to_owned()
        + &format!(
            r#"url=https://origin.test:{port}/echo
curl -sS $url; echo
out=$(post '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"request_host_access","arguments":{{"host":"origin.test","reason":"fetch the echo","failed_url":"https://origin.test:{port}/echo","method":"post","body":"name=x&token=ghp_0123456789abcdefghijABCDEFGHIJ012345&n=1"}}}}}}')
i=0
until curl -sf -o /dev/null $url; do i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1; done
echo "THROUGH after $i tries"
i=0
until curl -s $url | grep -q 'the grant for origin.test ended at'; do i=$((i+1)); [ $i -gt 300 ] && break; sleep 0.1; done
echo "ENDED after $i tries"
i=0
until [ -e /tmp/reloaded ]; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done
curl -sS $url; echo
"#
        );
    let slug = unique_slug("e2e-brief");
    let mut child = bottle(&sb)
        .args(["run", "briefly", "--slug", &slug, "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = first_request(&sb, &slug, &mut child);
    // Bad limits are refused before anything changes.
    for (args, why) in [
        (&["--for", "0s"][..], "--for 0s"),
        (&["--uses", "0"][..], "--uses 0"),
        (
            &["--uses", "2", "--persist"][..],
            "with --persist give --for",
        ),
    ] {
        let (code, out, err) = run(sb.bottle().args(["approve", &id, "--yes"]).args(args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let (code, out, err) = run(sb.bottle().args(["approve", &id, "--yes", "--for", "8s"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("  ends:     at ") && out.contains("; ends at "),
        "{out}"
    );
    // The request the agent attached: shown, its secret marked and never printed.
    assert!(
        out.contains(&format!("  request:  POST https://origin.test:{port}/echo"))
            && out.contains("  body:     57 bytes: name=x&token=[DLP: github")
            && out.contains("  DLP:      the body carries github")
            && !out.contains("ghp_0123"),
        "{out}"
    );
    let (_, table, _) = run(sb.bottle().args(["approvals", &slug]));
    assert!(
        table.contains("grants that end by themselves:") && table.contains(" left (until "),
        "{table}"
    );
    // The host takes the route out once the time is up, and says so in egress's table.
    let state = sb.state().join(&slug);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let routes = std::fs::read_to_string(state.join("egress/routes.yaml")).unwrap();
        if routes.contains("ended:") {
            assert!(!routes.contains("grant:"), "{routes}");
            break;
        }
        assert!(Instant::now() < deadline, "the grant never ended: {routes}");
        std::thread::sleep(Duration::from_millis(200));
    }
    docker(&[
        "exec",
        &format!("bottle-agent-{slug}"),
        "touch",
        "/tmp/reloaded",
    ]);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("blocked by egress: origin.test is not on this bottle's allowlist"),
        "{stdout}"
    );
    let tries = |word: &str| -> u32 {
        stdout
            .split(&format!("{word} after "))
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"))
    };
    assert!(tries("THROUGH") <= 1200, "never allowed:\n{stdout}");
    assert!(tries("ENDED") <= 300, "never ended:\n{stdout}");
    let after_reload = stdout.split("ENDED after ").nth(1).unwrap_or_default();
    assert!(
        after_reload.contains("blocked by egress: the grant for origin.test ended at"),
        "after the live reload the refusal still names the grant:\n{stdout}"
    );
    assert_eq!(leftovers(&slug), "");

    let (code, shown, err) = run(sb.bottle().args(["audit", &slug, "--json"]));
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        records
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {shown}"))
    };
    let refused = at("refusal", &|r| {
        r["data"]["host"] == "origin.test"
            && r["data"]["reason"]
                .as_str()
                .is_some_and(|s| s.contains("not on this bottle's allowlist"))
    });
    let decided = at("approval", &|r| {
        r["kind"] == "decision"
            && r["writer"] == "host"
            && r["data"]["until"].is_string()
            && r["data"]["by"] == "bottle approve"
    });
    let allowed = at("allowed request", &|r| {
        r["data"]["host"] == "origin.test" && r["data"]["decision"] == "allow"
    });
    let ended = at("grant-ended", &|r| {
        r["kind"] == "grant-ended" && r["writer"] == "host" && r["data"]["id"] == id.as_str()
    });
    let refused_again = at("refusal after the end", &|r| {
        r["data"]["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("the grant for origin.test ended at"))
    });
    at("live apply of the end", &|r| {
        r["kind"] == "live-apply"
            && r["data"]["change"]
                .as_str()
                .is_some_and(|c| c.starts_with("grant ended:"))
    });
    assert!(
        refused < decided && decided < allowed && allowed < refused_again,
        "{shown}"
    );
    assert!(ended > decided, "{shown}");
    let (code, said, err) = run(sb.bottle().args(["audit", "verify", &slug]));
    assert_eq!(code, 0, "{said}{err}");
    // For a SIEM: one OCSF event per record, the refusal a denied HTTP Activity and the end
    // of the grant a revoke.
    let (code, exported, err) = run(sb
        .bottle()
        .args(["audit", "export", &slug, "--format", "ocsf"]));
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), records.len());
    assert!(events.iter().any(|e| e["class_uid"] == 4002
        && e["disposition_id"] == 2
        && e["http_request"]["url"]["hostname"] == "origin.test"));
    assert!(events.iter().any(|e| e["type_uid"] == 300502));
    let (code, _, err) = run(sb
        .bottle()
        .args(["audit", "export", &slug, "--format", "csv"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ocsf"), "{err}");
}

/// A grant kept for later runs (`approve --persist --for`) whose time passed before this run
/// began: no route, but egress names it when the agent asks for the host, and the run's
/// record marks it ended once (the grant clock does not plan it again and again).
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_kept_grant_that_ended_before_the_run_is_named_not_served() {
    let _g = shared();
    let sb = sandbox();
    let kept = bottle::live::granted::persisted_path(
        &sb.dir.path().join("config/bottle"),
        &sb.project().join("agents/e2e.yaml"),
    );
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(
        &kept,
        "access:\n- {host: ended.example.org, request: r0, until: '2026-01-01T00:00:00Z'}\n",
    )
    .unwrap();
    let slug = unique_slug("e2e-kept");
    let (code, out, err) = run(bottle(&sb).args([
        "run",
        "e2e",
        "--slug",
        &slug,
        "--keep-state",
        "--",
        "sh",
        "-c",
        "curl -s https://ended.example.org/x; echo; sleep 3",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("the grant for ended.example.org ended at 2026-01-01T00:00:00Z"),
        "{out}"
    );
    let state = sb.state().join(&slug);
    let approved = std::fs::read_to_string(state.join("approved.yaml")).unwrap();
    assert!(
        approved.contains("ended: 2026-01-01T00:00:00Z"),
        "{approved}"
    );
    assert!(
        !state.join("live.jsonl").exists(),
        "nothing ran differently, so nothing was reloaded"
    );
    // The host's records are its own: no other local user reads what the agent asked for.
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["approved.yaml", "ledger.jsonl"] {
        let mode = std::fs::metadata(state.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is {mode:o}");
    }
    assert_eq!(leftovers(&slug), "");
}

/// A long run is sealed while it runs: the ledger so far is in the state dir, verifies up to
/// its interim seal and holds what the agent did, before teardown writes the final seal.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_running_bottles_ledger_is_sealed_so_far() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "sealer",
        "image: bottle-agent:latest\ncwd: none\negress:\n  default_allowlist: false\n",
    );
    // A bad interval is refused before anything is made.
    let (code, _, err) = run(bottle(&sb).env("BOTTLE_LEDGER_SEAL_SECS", "0").args([
        "run",
        "sealer",
        "--slug",
        "e2e-badseal",
        "--",
        "true",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("BOTTLE_LEDGER_SEAL_SECS=0"), "{err}");
    assert!(!sb.state().join("e2e-badseal").exists());

    let slug = unique_slug("e2e-seal");
    let script = "curl -s https://unlisted.example/x; echo; \
                  i=0; until [ -e /tmp/go ]; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done";
    let child = bottle(&sb)
        .env("BOTTLE_LEDGER_SEAL_SECS", "1")
        .args(["run", "sealer", "--slug", &slug, "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let shown = loop {
        let (code, out, _) = run(sb.bottle().args(["audit", "show", &slug, "--json"]));
        if code == 0 && out.contains("unlisted.example") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint with the refusal: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let last: serde_json::Value = serde_json::from_str(shown.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "seal");
    assert_eq!(last["data"]["last"], false);
    let (code, said, err) = run(sb.bottle().args(["audit", "verify", &slug]));
    assert_eq!(code, 0, "{said}{err}");
    assert!(
        said.starts_with("ok so far ") && said.contains("still running"),
        "{said}"
    );
    docker(&["exec", &format!("bottle-agent-{slug}"), "touch", "/tmp/go"]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, said, err) = run(sb.bottle().args(["audit", "verify", &slug]));
    assert_eq!(code, 0, "{said}{err}");
    assert!(said.contains("the chain is whole"), "{said}");
    assert_eq!(leftovers(&slug), "");
}

/// Live apply under a hammer: while the agent sends requests through egress to a host it
/// may always reach, the host applies 25 approvals one after another (each a re-plan, a
/// write, a reload and its confirmation). No request fails and every reload is confirmed.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn live_applies_under_load_never_fail_a_request() {
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let origin = origin_agent(&sb, &rt, "hammer", "  routes:\n    - host: origin.test\n");
    let port = origin.https.port();
    let script = format!(
        "n=0; bad=0; until [ -e /tmp/stop ]; do \
           c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 https://origin.test:{port}/echo); \
           n=$((n+1)); [ \"$c\" = 200 ] || {{ bad=$((bad+1)); echo \"BAD $c\"; }}; \
           [ $n = 1 ] && echo FIRST; \
         done; echo \"TOTAL $n BAD $bad\""
    );
    let slug = unique_slug("e2e-hammer");
    let mut child = bottle(&sb)
        .args(["run", "hammer", "--slug", &slug, "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = format!("bottle-agent-{slug}");
    let deadline = Instant::now() + Duration::from_secs(120);
    // The agent's command, not just its container (which starts before the bundle is ready).
    while !command_runs(&agent, "/tmp/stop") {
        assert!(
            Instant::now() < deadline,
            "the agent's command never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let env = bottle::hostenv::HostEnv::from_vars([
        ("HOME".to_owned(), sb.dir.path().display().to_string()),
        (
            "BOTTLE_CACHE_DIR".to_owned(),
            crate::support::shared_cache().display().to_string(),
        ),
    ]);
    let dir = sb.state().join(&slug);
    let record = bottle::live::apply::RunRecord::load(&dir).unwrap();
    let plugins = bottle::plugin::discover(
        &bottle::plugin::PluginHost::for_env(&env),
        &record.plugin_dirs,
    )
    .unwrap();
    let docker_api = rt.block_on(bottle::run::docker::connect()).unwrap();
    let mut confirmed = Vec::new();
    let started = Instant::now();
    for i in 0..25 {
        let access =
            bottle::live::granted::Access::checked(&format!("h{i}.example.org"), None).unwrap();
        let proposal = bottle::live::apply::propose(&plugins, &env, &dir, &record, access).unwrap();
        assert!(!proposal.files.is_empty(), "egress's routes change");
        let applied = rt
            .block_on(bottle::live::apply::apply(
                &docker_api,
                &slug,
                &proposal,
                &format!("approve h{i}"),
            ))
            .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        confirmed.push(applied.confirmed);
    }
    assert!(
        confirmed
            .iter()
            .all(|c| c.starts_with("egress runs config ")),
        "{confirmed:?}"
    );
    assert_eq!(
        confirmed
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        25,
        "each reload runs a new table: {confirmed:?}"
    );
    let routes = std::fs::read_to_string(dir.join("egress/routes.yaml")).unwrap();
    assert!(routes.contains("h24.example.org"), "{routes}");
    eprintln!("25 live applies in {:?}", started.elapsed());
    docker(&["exec", &agent, "touch", "/tmp/stop"]);
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{stdout}");
    let total: u32 = stdout
        .split("TOTAL ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    let bad: u32 = stdout
        .split(" BAD ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(bad, 0, "requests failed during reloads:\n{stdout}");
    assert!(total >= 25, "too few requests to tell: {stdout}");
    eprintln!("{total} requests through egress during the reloads, none failed");
    assert_eq!(leftovers(&slug), "");
}

/// A kept log holds what the agent and the bundle printed: `bottle logs` shows every escape
/// sequence and control character in it as text (a title change, a hyperlink, a screen clear,
/// a carriage return that hides what came before), never acts on it.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn bottle_logs_of_a_kept_log_never_drive_the_terminal() {
    let sb = Sandbox::new();
    let slug = unique_slug("e2e-logs");
    let logs = sb.state().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join(format!("{slug}.log")),
        "t agent | \u{1b}]0;owned\u{7}title \u{1b}]8;;http://evil/\u{1b}\\link\u{1b}[2J\n\
         t agent | safe\rEVIL \u{9b}31m \u{202e}txt.exe\n",
    )
    .unwrap();
    let (code, out, err) = run(sb.bottle().args(["logs", &slug]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{out:?}"
    );
    for shown in [
        "\\x1b]0;owned\\x07title",
        "\\x1b]8;;http://evil/\\x1b\\link\\x1b[2J",
        "safe\\x0dEVIL \\x9b31m \\u{202e}txt.exe",
    ] {
        assert!(out.contains(shown), "{shown:?} missing in {out:?}");
    }
}

/// Clients that ignore the proxy env get out the allowed way: the agent resolves an allowed
/// name to egress (and an unlisted one not at all), and `curl --noproxy '*'` and Python's
/// `urllib` with no proxy reach the HTTPS origin by name through egress, with the route's
/// token injected. The origin listens only on docker0's address, which is what
/// `host-gateway` means to Docker.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_client_without_a_proxy_reaches_an_allowed_host_by_name_through_egress() {
    use bottle_egress::testing::{Origin, TestPki, fingerprint};
    let _g = shared();
    let sb = Sandbox::new();
    let rt = small_runtime();
    let pki = TestPki::new(&["origin.test"]);
    let served = sb.dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let docker0: std::net::IpAddr = docker_host_address().parse().unwrap();
    // Port 443 on docker0's address only (the tests run as root, as CI does).
    let origin = rt.block_on(Origin::start_at(
        (docker0, 0).into(),
        (docker0, 443).into(),
        &pki,
        served,
    ));
    let ca = pki.write_ca(sb.dir.path(), "origin-ca.pem");
    sb.agent(
        "direct",
        &format!(
            "image: bottle-agent:latest\ncwd: none\negress:\n  default_allowlist: false\n  routes:\n    \
             - host: origin.test\n      auth: {{scheme: Bearer, token_ref: E2E_DIRECT_TOKEN}}\n  \
             hosts: {{origin.test: 'host-gateway:443'}}\n  upstream_ca: {}\n",
            ca.display()
        ),
    );
    let token = "e2e-direct-token-5d1e";
    let script = r#"unset HTTPS_PROXY https_proxy HTTP_PROXY http_proxy ALL_PROXY all_proxy
getent hosts origin.test | awk '{print "RESOLVED " $1}'
getent hosts egress | awk '{print "EGRESS " $1}'
getent hosts unlisted.test >/dev/null || echo UNLISTED-DOES-NOT-RESOLVE
curl -sS --noproxy '*' -H 'Authorization: Bearer placeholder' https://origin.test/echo; echo
python3 -c 'import json, urllib.request; print("URLLIB", json.load(urllib.request.urlopen("https://origin.test/echo"))["headers"]["authorization"])'
curl -sS --noproxy '*' --max-time 5 https://unlisted.test/ >/dev/null 2>&1 || echo UNLISTED-UNREACHABLE
"#;
    let slug = unique_slug("e2e-direct");
    let (code, out, err) = run(bottle(&sb)
        .env("E2E_DIRECT_TOKEN", token)
        .args(["run", "direct", "--slug", &slug, "--", "sh", "-c", script]));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in\n{out}\n{err}"))
            .trim()
            .to_owned()
    };
    assert_eq!(
        field("RESOLVED "),
        field("EGRESS "),
        "an allowed name is egress's address"
    );
    let seen: serde_json::Value = serde_json::from_str(
        out.lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no answer from the origin in\n{out}\n{err}")),
    )
    .unwrap();
    let injected = fingerprint(format!("Bearer {token}").as_bytes());
    assert_eq!(seen["headers"]["authorization"], injected, "{out}");
    assert_eq!(field("URLLIB "), injected, "{out}");
    for expected in ["UNLISTED-DOES-NOT-RESOLVE", "UNLISTED-UNREACHABLE"] {
        assert!(
            out.contains(expected),
            "{expected} missing in\n{out}\n{err}"
        );
    }
    assert!(!out.contains(token), "the agent never sees the token");
    assert_eq!(leftovers(&slug), "");
    drop(origin);
}

/// Every run leaves a ledger beside its logs: the start, each request egress decided (written
/// by the bundle), the stop and the final seal. `bottle audit verify` passes on it, and names
/// the record after one byte is changed, a record is removed, or the ledger is cut short.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_run_leaves_a_sealed_ledger_that_names_any_change() {
    let _g = shared();
    let sb = sandbox();
    let slug = unique_slug("e2e-audit");
    let (code, out, err) = run_sh(
        &sb,
        "e2e",
        &slug,
        // The agent also writes a forged egress line to its container's stdout (PID 1's is its
        // own): it reaches the terminal only, never the bottle's log nor the ledger.
        "curl -s -o /dev/null https://blocked.test/secret-path?token=abc; \
         echo '[egress] {\"time\":\"2026-12-05T10:00:00Z\",\"method\":\"GET\",\"host\":\"forged.test\",\"path\":\"/\",\"decision\":\"allow\"}' > /proc/1/fd/1; true",
    );
    assert_eq!(code, 0, "{out}{err}");
    let log = std::fs::read_to_string(sb.state().join("logs").join(format!("{slug}.log"))).unwrap();
    assert!(
        out.contains("forged.test"),
        "the forged line was written: {out}"
    );
    assert!(
        !log.contains("forged.test"),
        "the agent's output is kept by no log: {log}"
    );
    let (code, shown, err) = run(bottle(&sb).args(["audit", "show", &slug, "--json"]));
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refusal = records
        .iter()
        .find(|r| r["kind"] == "request" && r["data"]["host"] == "blocked.test")
        .unwrap_or_else(|| panic!("no refusal in {shown}"));
    assert_eq!(refusal["writer"], "bundle/egress");
    assert_eq!(refusal["data"]["decision"], "block");
    assert!(!shown.contains("token=abc"), "no query in the ledger");
    assert!(
        !shown.contains("forged.test"),
        "the agent's line became a record: {shown}"
    );
    // Every line egress and git-gate numbered is there: no gap in a run that lost none.
    assert!(
        !records.iter().any(|r| r["kind"] == "gap"),
        "a gap in a whole log: {shown}"
    );
    assert_eq!(records.first().unwrap()["kind"], "start");
    assert_eq!(records.last().unwrap()["kind"], "seal");
    let (code, said, err) = run(bottle(&sb).args(["audit", "verify", &slug]));
    assert_eq!(code, 0, "{said}{err}");
    assert!(said.starts_with("ok "), "{said}");
    // Filters: only refusals; nothing from the future; a bad time is named.
    let (_, blocks, _) = run(bottle(&sb).args(["audit", "show", &slug, "--decision", "block"]));
    assert!(
        blocks.lines().count() >= 1 && blocks.lines().all(|l| l.contains("block")),
        "{blocks}"
    );
    let (code, later, _) =
        run(bottle(&sb).args(["audit", "show", &slug, "--since", "2999-01-01T00:00:00Z"]));
    assert_eq!((code, later.as_str()), (0, ""));
    let (code, _, err) = run(bottle(&sb).args(["audit", "show", &slug, "--since", "yesterday"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an RFC 3339 time"), "{err}");

    let kept = sb.state().join("logs").join(format!("{slug}.ledger.jsonl"));
    let text = std::fs::read_to_string(&kept).unwrap();
    let check = |changed: &str| {
        std::fs::write(&kept, changed).unwrap();
        let (code, _, err) = run(bottle(&sb).args(["audit", "verify", &slug]));
        assert_eq!(code, 1, "{err}");
        err
    };
    // One byte of the refusal changed.
    let err = check(&text.replacen("blocked.test", "blocked.tesu", 1));
    assert!(
        err.contains("record ") && err.contains("does not follow"),
        "{err}"
    );
    // A record removed.
    let lines: Vec<&str> = text.lines().collect();
    let without: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let err = check(&without);
    assert!(err.contains("record 2:"), "{err}");
    // Cut short.
    let err = check(&text[..text.len() / 2]);
    assert!(err.contains("record "), "{err}");
    std::fs::write(&kept, &text).unwrap();
    let (code, _, err) = run(bottle(&sb).args(["audit", "verify", &slug]));
    assert_eq!(code, 0, "{err}");
}
