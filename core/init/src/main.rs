//! `bottle-init`: PID 1 of the sidecar bundle container.
//!
//! Built by `core/build.rs` and embedded in the `bottle` binary, which puts it into the bundle
//! image (`bottle images build`).
//!
//! It starts the daemons listed in `/etc/bottle/daemons.json` (written by the host), prefixes
//! each line of their output with `[name] `, reaps every child (it is PID 1), and handles signals:
//!
//! - SIGTERM / SIGINT: forwarded to every daemon; after the grace period the rest are killed;
//! - SIGHUP: forwarded to `pipelock` (its config), `egress` (its routes) and `git-gate` (its
//!   repos), each after its files are installed again;
//! - SIGUSR1: restarts `pipelock` in place (a config change it cannot reload);
//! - a daemon that dies is logged, not restarted, and does not take the bundle down.
//!
//! Each daemon (and its ready check) runs as its plugin's own user (`uid`) and gets only its
//! own plugin's secrets: every name in the list's `secret_env` that the daemon's `secrets` does
//! not name is removed from its env (pipelock, say, never holds the tokens egress injects, so
//! its DLP cannot flag them). Its read-only mounts are installed first as copies only that
//! user can read ([`install`]), again before egress is told to reload; a daemon whose files
//! cannot be installed is not started, and `ready` reports it.
//!
//! A daemon whose program is not in the image is reported and not started, and
//! `bottle-init ready FILE` (the container's health check) then fails: the plan says it runs,
//! so the bottle never comes up without it. Otherwise `ready` runs every daemon's ready check.
//! A daemon that exited is recorded (with its last output line) in `/run/bottle-init/`, and
//! `ready` then exits 2, "never ready", with that line, so the host stops waiting at once.
//! Once the daemons are started, the init also runs `bottle-init announce FILE`, which runs
//! the same checks until they pass and then writes one line the host waits for in the
//! bundle's log (`BUNDLE_READY_LINE`), so no `docker exec` is needed to bring a bottle up.
//!
//! With `BOTTLE_HANDOFF` set (the agent on no network), the init first takes the agent's
//! listeners from the agent's container and hands each daemon its own ([`handoff`]); if they
//! never come, or are not what was asked for, the daemons serving the agent are not started
//! and `ready` says why.
//!
//! `bottle-init reload FILE egress` (by `docker exec`) asks the running init to reload egress
//! and waits until egress reports running the host's new route table ([`reload`]).
//!
//! `bottle-init agent GO -- COMMAND…` is not the bundle's: on Docker it is the agent
//! container's process, which becomes the agent's command once the host says go ([`agent`]).

mod agent;
mod handoff;
mod install;
mod reload;
mod users;

use bottle_contract::handoff::{BUNDLE_ENV, Listener};
use bottle_contract::layout::{BUNDLE_NEVER_READY_PREFIX, BUNDLE_READY_LINE, PRIVATE_IN_BUNDLE};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long daemons get between SIGTERM and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_secs(8);
/// The daemons that reload their config on SIGHUP (the others would die of it), in the order
/// they are told: pipelock (upstream reloads on SIGHUP since 2026-02, keeping its old config
/// when the new one is invalid or a downgrade) is the outer wall, so it widens first.
const RELOADABLE: [&str; 3] = ["pipelock", "egress", "git-gate"];

/// How long one ready check may run before it counts as failed (and is killed).
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Where `run` records a daemon that exited, for `ready` (another process) to report; set
/// `BOTTLE_INIT_STATUS_DIR` to move it (the tests do).
const DEFAULT_STATUS_DIR: &str = "/run/bottle-init";
/// `ready`'s exit code when a planned daemon will never be ready (it exited, or its program
/// is missing): the host stops waiting at once instead of at its deadline.
const NEVER_READY: i32 = 2;

fn status_dir() -> std::path::PathBuf {
    std::env::var_os("BOTTLE_INIT_STATUS_DIR").map_or_else(|| DEFAULT_STATUS_DIR.into(), Into::into)
}

/// The last line each daemon wrote, so its exit can be reported with its reason.
static LAST_LINES: std::sync::Mutex<BTreeMap<String, String>> =
    std::sync::Mutex::new(BTreeMap::new());

use bottle_contract::daemons::{DaemonEntry, DaemonList};

/// Read the daemon list.
fn read_list(path: &Path) -> Result<DaemonList, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[init] {line}");
    let _ = out.flush();
}

/// Whether `program` is an absolute path to a file in this image: what `spawn` would run,
/// with no PATH lookup.
fn present(program: &str) -> bool {
    Path::new(program).is_absolute() && Path::new(program).is_file()
}

/// Take the secrets `d` may not see out of `cmd`'s env.
fn hide_secrets(cmd: &mut Command, d: &DaemonEntry, secret_env: &[String]) {
    for hidden in secret_env.iter().filter(|n| !d.secrets.contains(n)) {
        cmd.env_remove(hidden);
    }
}

/// Pipe each line of `r` to our stdout or stderr with `[name] ` in front. Bytes that are not
/// UTF-8 are replaced, never a reason to stop reading: a closed pipe would kill the daemon
/// with SIGPIPE on its next write.
fn relay(
    name: String,
    r: impl std::io::Read + Send + 'static,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.trim().is_empty() {
                let mut last = LAST_LINES.lock().unwrap_or_else(|p| p.into_inner());
                last.insert(name.clone(), line.chars().take(300).collect());
            }
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "[{name}] {line}");
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "[{name}] {line}");
                let _ = out.flush();
            }
        }
    })
}

struct Running {
    name: String,
    pid: rustix::process::Pid,
    /// The threads relaying its output, joined (briefly) when it exits so its last line is in.
    relays: Vec<std::thread::JoinHandle<()>>,
}

/// The agent's listeners ([`handoff`]), by the daemon that serves each.
type Handed = BTreeMap<String, Vec<(Listener, std::os::fd::OwnedFd)>>;

/// Take the agent's listeners when the host asked for a handoff ([`BUNDLE_ENV`]): `Err` names
/// why it failed and the daemons that would have served them.
fn take_handoff(list: &DaemonList) -> Result<Handed, (String, Vec<String>)> {
    let Ok(spec) = std::env::var(BUNDLE_ENV) else {
        return Ok(Handed::new());
    };
    let owners = bottle_contract::handoff::listeners(list);
    let serving: Vec<String> = match &owners {
        Some(o) => o.iter().map(|(d, _)| d.clone()).collect(),
        None => list
            .daemons
            .iter()
            .filter(|d| !d.ports.is_empty())
            .map(|d| d.name.clone())
            .collect(),
    };
    let fail = |e: String| (e, serving.clone());
    let expected = bottle_contract::handoff::parse_list(&spec)
        .map_err(|e| fail(format!("{BUNDLE_ENV}: {e}")))?;
    let owners = owners.ok_or_else(|| {
        fail("the agent's listeners were sent to daemons that cannot take them".to_owned())
    })?;
    let fds = handoff::receive(&expected, handoff::WAIT).map_err(fail)?;
    let mut handed = Handed::new();
    for (l, fd) in expected.into_iter().zip(fds) {
        let Some((owner, _)) = owners.iter().find(|(_, o)| *o == l) else {
            return Err(fail(format!("no daemon declares the agent's listener {l}")));
        };
        handed.entry(owner.clone()).or_default().push((l, fd));
    }
    Ok(handed)
}

fn start(
    d: &DaemonEntry,
    secret_env: &[String],
    handed: Vec<(Listener, std::os::fd::OwnedFd)>,
) -> Option<Running> {
    if d.name == "init" {
        // Its lines would start `[init]`, as this init's own do (the ready line among them).
        say("a daemon named `init` is not started: the name is the init's own; rename it");
        record(
            &d.name,
            "was not started: the name `init` is the init's own",
        );
        return None;
    }
    let Some(program) = d.command.first() else {
        say(&format!(
            "daemon `{}` has an empty command; skipped",
            d.name
        ));
        return None;
    };
    if !Path::new(program).is_absolute() {
        say(&format!(
            "daemon `{}` not started: {program} must be an absolute path",
            d.name
        ));
        return None;
    }
    if !present(program) {
        say(&format!(
            "daemon `{}` not started: {program} is not in this image",
            d.name
        ));
        return None;
    }
    if let Err(e) = install::install_all(&d.install, d.uid) {
        say(&format!("daemon `{}` not started: {e}", d.name));
        record(&d.name, &format!("was not started: {e}"));
        return None;
    }
    let mut command = Command::new(program);
    as_its_user(&mut command, d);
    hide_secrets(&mut command, d, secret_env);
    let (listeners, fds): (Vec<Listener>, Vec<_>) = handed.into_iter().unzip();
    if let Err(e) = handoff::pass(&mut command, &listeners, &fds) {
        say(&format!("daemon `{}` not started: {e}", d.name));
        record(&d.name, &format!("was not started: {e}"));
        return None;
    }
    match command
        .args(&d.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            let pid = rustix::process::Pid::from_child(&child);
            let mut relays = Vec::new();
            if let Some(out) = child.stdout.take() {
                relays.push(relay(d.name.clone(), out, false));
            }
            if let Some(err) = child.stderr.take() {
                relays.push(relay(d.name.clone(), err, true));
            }
            say(&format!(
                "started `{}` (pid {})",
                d.name,
                pid.as_raw_nonzero()
            ));
            // The child is reaped by `reap` through waitpid; dropping the handle does not wait.
            drop(child);
            Some(Running {
                name: d.name.clone(),
                pid,
                relays,
            })
        }
        Err(e) => {
            say(&format!("daemon `{}` failed to start: {e}", d.name));
            None
        }
    }
}

fn signal(r: &Running, sig: rustix::process::Signal) {
    let _ = rustix::process::kill_process(r.pid, sig);
}

/// Reap until `name` is gone or `deadline` passes.
fn wait_gone(running: &mut BTreeMap<String, Running>, name: &str, deadline: Instant) {
    while running.contains_key(name) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        reap(running);
    }
}

/// Reap every exited child; report the daemons among them. Returns the names that exited.
fn reap(running: &mut BTreeMap<String, Running>) -> Vec<String> {
    let mut gone = Vec::new();
    while let Ok(Some((pid, status))) = rustix::process::wait(rustix::process::WaitOptions::NOHANG)
    {
        if let Some(name) = running
            .iter()
            .find(|(_, r)| r.pid == pid)
            .map(|(n, _)| n.clone())
        {
            let how = match (status.exit_status(), status.terminating_signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (_, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "stopped".to_owned(),
            };
            // Recorded before it is said, so whoever reads the line finds the record.
            if let Some(r) = running.remove(&name) {
                record_exit(&r, &how);
            }
            say(&format!("daemon `{name}` {how}"));
            gone.push(name);
        }
    }
    gone
}

/// Run `cmd` as `d`'s own user (its uid as gid too; no supplementary groups, which the
/// standard library drops when a root parent sets a uid).
fn as_its_user(cmd: &mut Command, d: &DaemonEntry) {
    if let Some(uid) = d.uid {
        cmd.uid(uid).gid(uid);
    }
}

/// Write `<status dir>/<name>.exited` for `ready`: how `name` ended.
fn record(name: &str, text: &str) {
    let dir = status_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("{name}.exited")), text));
    if let Err(e) = written {
        say(&format!(
            "cannot record that `{name}` exited in {}: {e}",
            dir.display()
        ));
    }
}

/// Write `<status dir>/<name>.exited` for `ready`: how it ended and the last line it wrote.
fn record_exit(r: &Running, how: &str) {
    let deadline = Instant::now() + Duration::from_millis(300);
    while r.relays.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = LAST_LINES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&r.name)
        .cloned();
    let text = match last {
        Some(line) => format!("{how}: {line}"),
        None => how.to_owned(),
    };
    record(&r.name, &text);
}

/// Run the daemons of `list` until SIGTERM or SIGINT. Returns the exit code.
fn run(list: &DaemonList, file: &Path, grace: Duration) -> i32 {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals =
        match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD]) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("cannot install signal handlers: {e}"));
                return 1;
            }
        };
    // The bound originals keep the host's modes (the egress CA's PEM is 0644): only the init
    // may reach them, and each daemon gets its own copy.
    if Path::new(PRIVATE_IN_BUNDLE).exists() {
        use std::os::unix::fs::PermissionsExt;
        let closed = std::fs::Permissions::from_mode(0o700);
        if let Err(e) = std::fs::set_permissions(PRIVATE_IN_BUNDLE, closed) {
            say(&format!(
                "cannot close {PRIVATE_IN_BUNDLE} to the daemons ({e}); stopping"
            ));
            return 1;
        }
    }
    for uid in list.daemons.iter().filter_map(|d| d.uid) {
        if let Err(e) = users::ensure(Path::new("/etc"), uid) {
            say(&e);
        }
    }
    let (mut handed, unserved) = match take_handoff(list) {
        Ok(h) => (h, Vec::new()),
        Err((e, unserved)) => {
            say(&format!(
                "{e}; the daemons serving the agent are not started"
            ));
            (
                Handed::new(),
                unserved.into_iter().map(|d| (d, e.clone())).collect(),
            )
        }
    };
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for d in &list.daemons {
        let _ = std::fs::remove_file(status_dir().join(format!("{}.exited", d.name)));
        if let Some((_, e)) = unserved.iter().find(|(name, _)| *name == d.name) {
            record(&d.name, &format!("was not started: {e}"));
            continue;
        }
        let own = handed.remove(&d.name).unwrap_or_default();
        if let Some(r) = start(d, &list.secret_env, own) {
            running.insert(d.name.clone(), r);
        }
    }
    say(&format!(
        "{} of {} daemons running",
        running.len(),
        list.daemons.len()
    ));
    // A process of its own: its checks are its children, which this init's `reap` (any
    // child) would otherwise take from under it. Reaped here like any child once it ends.
    if let Err(e) = Command::new("/proc/self/exe")
        .arg("announce")
        .arg(file)
        .stdin(Stdio::null())
        .spawn()
    {
        say(&format!(
            "cannot watch for the daemons' readiness ({e}); the host's check still runs"
        ));
    }
    loop {
        for sig in signals.wait() {
            match sig {
                SIGCHLD => {
                    reap(&mut running);
                }
                SIGHUP => {
                    for name in RELOADABLE {
                        let Some(r) = running.get(name) else {
                            continue;
                        };
                        // Their files are copies: the host's new ones go in before the reload.
                        let d = list.daemons.iter().find(|d| d.name == name);
                        match d.map(|d| install::install_all(&d.install, d.uid)) {
                            Some(Err(e)) => say(&format!("SIGHUP: {name} not reloaded: {e}")),
                            _ => {
                                say(&format!("SIGHUP: telling {name} to reload"));
                                signal(r, rustix::process::Signal::HUP);
                            }
                        }
                    }
                }
                SIGUSR1 => {
                    say("SIGUSR1: restarting pipelock");
                    if let Some(r) = running.get("pipelock") {
                        signal(r, rustix::process::Signal::TERM);
                        wait_gone(&mut running, "pipelock", Instant::now() + grace);
                        if let Some(r) = running.get("pipelock") {
                            signal(r, rustix::process::Signal::KILL);
                            // Wait for the kill to land, so the new one can bind the port.
                            wait_gone(
                                &mut running,
                                "pipelock",
                                Instant::now() + Duration::from_secs(2),
                            );
                        }
                    }
                    let _ = std::fs::remove_file(status_dir().join("pipelock.exited"));
                    if let Some(d) = list.daemons.iter().find(|d| d.name == "pipelock")
                        && let Some(r) = start(d, &list.secret_env, Vec::new())
                    {
                        running.insert(d.name.clone(), r);
                    }
                }
                SIGTERM | SIGINT => {
                    say(&format!("signal {sig}: stopping {} daemons", running.len()));
                    for r in running.values() {
                        signal(r, rustix::process::Signal::TERM);
                    }
                    let deadline = Instant::now() + grace;
                    // The daemons exit within milliseconds, and the host's teardown waits for
                    // this process: look soon, then less and less often.
                    let mut pause = Duration::from_millis(1);
                    while !running.is_empty() && Instant::now() < deadline {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(20));
                        reap(&mut running);
                    }
                    for r in running.values() {
                        say(&format!(
                            "daemon `{}` ignored SIGTERM for {grace:?}; killing it",
                            r.name
                        ));
                        signal(r, rustix::process::Signal::KILL);
                    }
                    return 0;
                }
                _ => {}
            }
        }
    }
}

/// `bottle-init ready`: every daemon's ready check, each failure a line. Returns the exit code.
fn ready(list: &DaemonList) -> i32 {
    let (code, report) = readiness(list);
    for line in report {
        println!("{line}");
    }
    code
}

/// How long `announce` waits for the daemons at most: longer than any host waits.
const ANNOUNCE_FOR: Duration = Duration::from_secs(600);

/// `bottle-init announce`, started by the init: run the ready checks until they pass, then
/// write [`BUNDLE_READY_LINE`]; or, when a daemon will never be ready, the reason after
/// [`BUNDLE_NEVER_READY_PREFIX`]. Gives up silently when the init is gone.
fn announce(list: &DaemonList) -> i32 {
    let init = rustix::process::getppid();
    let deadline = Instant::now() + ANNOUNCE_FOR;
    // The host's bring-up waits for the line: look again soon, then every 10 ms.
    let mut pause = Duration::from_millis(1);
    loop {
        match readiness(list) {
            (0, _) => {
                println!("{BUNDLE_READY_LINE}");
                return 0;
            }
            (NEVER_READY, report) => {
                println!("{BUNDLE_NEVER_READY_PREFIX}{}", report.join("; "));
                return NEVER_READY;
            }
            _ if Instant::now() > deadline || rustix::process::getppid() != init => return 1,
            _ => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// Run every daemon's ready check; a planned daemon whose program is not in the image is
/// not ready either (the plan says it runs, so the bottle must not come up without it).
/// Returns the exit code and a line for each daemon that is not ready.
fn readiness(list: &DaemonList) -> (i32, Vec<String>) {
    let mut report = Vec::new();
    let mut failed = 0;
    let mut never = false;
    for d in &list.daemons {
        let Some(program) = d.command.first() else {
            report.push(format!("{} is not ready (it has no command)", d.name));
            never = true;
            continue;
        };
        if !present(program) {
            report.push(format!(
                "{} is not ready ({program} is not an absolute path to a program in this image)",
                d.name
            ));
            never = true;
            continue;
        }
        if let Ok(how) = std::fs::read_to_string(status_dir().join(format!("{}.exited", d.name))) {
            report.push(format!("{} is not ready (it {})", d.name, how.trim()));
            never = true;
            continue;
        }
        let Some(check) = d.ready_check.as_ref().filter(|c| !c.is_empty()) else {
            continue;
        };
        let mut cmd = Command::new(&check[0]);
        cmd.args(&check[1..]);
        as_its_user(&mut cmd, d);
        // A check runs in the container's env (Docker's health check): hide the same secrets.
        hide_secrets(&mut cmd, d, &list.secret_env);
        match run_check(cmd, &check[0], READY_CHECK_TIMEOUT) {
            Ok(()) => {}
            Err(why) => {
                report.push(format!("{} is not ready{why}", d.name));
                failed += 1;
            }
        }
    }
    if never {
        return (NEVER_READY, report);
    }
    if failed > 0 {
        return (1, report);
    }
    let declared: Vec<u16> = list
        .daemons
        .iter()
        .flat_map(|d| d.ports.iter().copied())
        .collect();
    let stray = undeclared_listeners(&declared, &proc_net_tables());
    if stray.is_empty() {
        (0, report)
    } else {
        report.push(format!(
            "the bundle listens beyond loopback on {}, which no daemon declares: the agent could reach it; declare the port in the daemon's plan or bind it to 127.0.0.1",
            stray.join(", ")
        ));
        (NEVER_READY, report)
    }
}

/// `/proc/net/{tcp,tcp6,udp,udp6}` of this network namespace, with their protocol names;
/// `BOTTLE_INIT_PROC_NET` names another dir (the tests run `ready` outside a container).
fn proc_net_tables() -> Vec<(&'static str, String)> {
    let dir = std::env::var_os("BOTTLE_INIT_PROC_NET")
        .map_or_else(|| Path::new("/proc/net").to_owned(), Into::into);
    ["tcp", "tcp6", "udp", "udp6"]
        .into_iter()
        .filter_map(|t| Some((t, std::fs::read_to_string(dir.join(t)).ok()?)))
        .collect()
}

/// Sockets listening (TCP LISTEN, unconnected bound UDP) on a non-loopback address, on a
/// port no daemon declares: `tcp 0.0.0.0:8080`.
fn undeclared_listeners(declared: &[u16], tables: &[(&str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (proto, text) in tables {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) = (f.get(1), f.get(2), f.get(3)) else {
                continue;
            };
            let listening = if proto.starts_with("tcp") {
                *state == "0A"
            } else {
                *state == "07" && remote.split(':').nth(1) == Some("0000")
            };
            let Some((addr, port)) = local.split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            if !listening || declared.contains(&port) || loopback_hex(addr) {
                continue;
            }
            out.push(format!("{proto} {}:{port}", addr_text(addr)));
        }
    }
    out
}

/// Whether a `/proc/net` address (hex, host byte order per 32-bit word) is loopback.
fn loopback_hex(addr: &str) -> bool {
    match addr.len() {
        // 127.0.0.0/8: the low byte of the little-endian word is 0x7F.
        8 => addr.ends_with("7F"),
        // ::1, or ::ffff:127.x.y.z.
        32 => {
            addr == "00000000000000000000000001000000"
                || (addr.starts_with("0000000000000000FFFF0000") && addr.ends_with("7F"))
        }
        _ => false,
    }
}

/// A `/proc/net` address for a message: dotted for IPv4, hex otherwise.
fn addr_text(addr: &str) -> String {
    match u32::from_str_radix(addr, 16) {
        Ok(v) if addr.len() == 8 => std::net::Ipv4Addr::from(v.swap_bytes()).to_string(),
        _ if addr.chars().all(|c| c == '0') => "[::]".to_owned(),
        _ => format!("[{addr}]"),
    }
}

/// Run one ready check (`program` is its first word), killing it after `timeout`. The error
/// is a suffix for the report.
fn run_check(mut cmd: Command, program: &str, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!(" (cannot run {program}: {e})"))?;
    let deadline = Instant::now() + timeout;
    // A check takes a millisecond or two: look again soon, then less and less often.
    let mut pause = Duration::from_micros(250);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(_)) => return Err(String::new()),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(" (its check ran over {timeout:?})"));
            }
        }
    }
}

/// `bottle-init FILE`, `bottle-init ready FILE`, `bottle-init announce FILE`,
/// `bottle-init reload FILE DAEMON` or `bottle-init agent GO [--listen LISTENERS] -- COMMAND…`.
fn main_with_args(args: &[String]) -> i32 {
    if let [mode, go, dashes, command @ ..] = args
        && mode == "agent"
        && dashes == "--"
    {
        return agent::run(Path::new(go), &[], command);
    }
    if let [mode, go, flag, spec, dashes, command @ ..] = args
        && mode == "agent"
        && flag == "--listen"
        && dashes == "--"
    {
        return match bottle_contract::handoff::parse_list(spec) {
            Ok(listeners) => agent::run(Path::new(go), &listeners, command),
            Err(e) => {
                eprintln!("bottle-init agent: --listen: {e}");
                2
            }
        };
    }
    if let [mode, dir] = args
        && mode == "keep-listeners"
    {
        return match handoff::keep(Path::new(dir)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bottle: {e}");
                1
            }
        };
    }
    let (mode, file) = match args {
        [file] => ("run", file),
        [mode, file] if mode == "ready" || mode == "announce" => (mode.as_str(), file),
        [mode, file, _] if mode == "reload" => ("reload", file),
        _ => {
            eprintln!(
                "usage: bottle-init DAEMONS.json | bottle-init ready DAEMONS.json | bottle-init announce DAEMONS.json | bottle-init reload DAEMONS.json DAEMON | bottle-init agent GO [--listen LISTENERS] -- COMMAND…"
            );
            return 2;
        }
    };
    let list = match read_list(Path::new(file)) {
        Ok(l) => l,
        Err(e) => {
            say(&e);
            return 1;
        }
    };
    if mode == "ready" {
        return ready(&list);
    }
    if mode == "announce" {
        return announce(&list);
    }
    if mode == "reload" {
        return reload::reload(&list, &args[2]);
    }
    let grace = match std::env::var("BOTTLE_INIT_GRACE_SECS") {
        Err(_) => DEFAULT_GRACE,
        Ok(s) => s.parse().map_or_else(
            |_| {
                say(&format!(
                    "BOTTLE_INIT_GRACE_SECS={s:?} is not a whole number of seconds; using {DEFAULT_GRACE:?}"
                ));
                DEFAULT_GRACE
            },
            Duration::from_secs,
        ),
    };
    run(&list, Path::new(file), grace)
}

fn main() {
    // Docker gives this process (and `ready`, run by exec) every secret of the bundle in its
    // env. Not dumpable, its /proc/<pid>/environ and memory are closed to the daemons even
    // though they run as the same user: they lack CAP_SYS_PTRACE, which Docker never grants.
    // A daemon's exec makes it dumpable again; ours (bottle-egress) close themselves too.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        say(&format!(
            "cannot close this process to the daemons ({e}); stopping"
        ));
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(main_with_args(&args));
}

#[cfg(test)]
mod tests {
    use super::undeclared_listeners;

    const TCP: &str = "  sl  local_address rem_address   st
   0: 0100007F:22B8 00000000:0000 0A
   1: 00000000:2383 00000000:0000 0A
   2: 00000000:1F90 00000000:0000 0A
   3: 0400A8C0:9C40 0500A8C0:2383 01
";
    const UDP6: &str =
        "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07
   1: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07
";

    #[test]
    fn only_undeclared_ports_beyond_loopback_are_reported() {
        // 127.0.0.1:8888 is loopback, 0.0.0.0:9091 is declared, 0.0.0.0:8080 is not; the
        // established connection is no listener.
        let tables = [("tcp", TCP.to_owned()), ("udp6", UDP6.to_owned())];
        assert_eq!(
            undeclared_listeners(&[9091], &tables),
            ["tcp 0.0.0.0:8080", "udp6 [::]:53"]
        );
        assert_eq!(
            undeclared_listeners(&[9091, 8080, 53], &tables),
            Vec::<String>::new()
        );
    }
}
