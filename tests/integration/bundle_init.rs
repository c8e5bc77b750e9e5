//! The sidecar bundle's PID 1 (`bottle-init`, embedded in bottle), run natively with stand-in
//! daemons: output prefixes, signal forwarding, restarts, grace then kill, dead daemons logged.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// bottle-init, written once for this test process (atomically: a rename over the old one).
fn init_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let tmp = dir.join(format!("bottle-init.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bottle::run::docker::images::INIT_BINARY).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("bottle-init");
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
}

/// Run `start` again while the kernel says the binary is busy: a test thread that forked while
/// the file was open for writing holds it until its child execs (ETXTBSY).
fn retry_busy<T>(mut start: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..100 {
        match start() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
    panic!("bottle-init stayed busy for 2 s")
}

struct Init {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line so far, and whether `expect` already returned it. stdout and stderr are read
    /// by two threads, so lines can arrive out of order: `expect` looks at all of them.
    seen: std::cell::RefCell<Vec<(String, bool)>>,
    _dir: tempfile::TempDir,
    /// The daemon list, for `bottle-init ready`.
    file: PathBuf,
    /// Where this init records exited daemons.
    status: PathBuf,
}

impl Init {
    /// Start bottle-init with `daemons` (name, shell script) and a 1 s grace period.
    fn start(daemons: &[(&str, &str)]) -> Init {
        let list = serde_json::json!({
            "daemons": daemons.iter().map(|(name, script)| serde_json::json!({
                "name": name, "command": ["/bin/sh", "-c", script],
            })).chain(std::iter::once(serde_json::json!({
                "name": "absent", "command": ["/usr/local/bin/not-in-this-image"],
            }))).collect::<Vec<_>>()
        });
        Init::with_list(&list)
    }

    /// Start bottle-init with the daemon list `list` and a 1 s grace period.
    fn with_list(list: &serde_json::Value) -> Init {
        let dir = tempfile::tempdir().unwrap();
        let bin = init_bin();
        let file = dir.path().join("daemons.json");
        std::fs::write(&file, list.to_string()).unwrap();
        let status = dir.path().join("status");
        let mut cmd = Command::new(bin);
        cmd.arg(&file)
            .env("BOTTLE_INIT_GRACE_SECS", "1")
            .env("BOTTLE_INIT_STATUS_DIR", &status)
            .env("BOTTLE_INIT_PROC_NET", no_listeners())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = retry_busy(|| cmd.spawn());
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Init {
            child,
            lines,
            seen: Default::default(),
            _dir: dir,
            file,
            status,
        }
    }

    /// `bottle-init ready` on this init's list: exit code and stdout.
    fn ready(&self) -> (i32, String) {
        let out = retry_busy(|| {
            Command::new(init_bin())
                .arg("ready")
                .arg(&self.file)
                .env("BOTTLE_INIT_STATUS_DIR", &self.status)
                .env("BOTTLE_INIT_PROC_NET", no_listeners())
                .output()
        });
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Wait for a line containing `needle` that no earlier `expect` returned; returns it.
    fn expect(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut seen = self.seen.borrow_mut();
            if let Some((line, used)) = seen
                .iter_mut()
                .find(|(l, used)| !used && l.contains(needle))
            {
                *used = true;
                return line.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => seen.push((line, false)),
                Err(_) => {
                    let all: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
                    panic!("no line with {needle:?}; saw:\n{}", all.join("\n"));
                }
            }
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig).unwrap();
    }
}

const LOOP: &str = "while true; do sleep 0.05; done";

#[test]
fn prefixes_output_and_skips_missing_programs() {
    let mut init = Init::start(&[(
        "pipelock",
        &format!("echo listening; echo oops >&2; {LOOP}"),
    )]);
    init.expect("[pipelock] listening");
    init.expect("[pipelock] oops");
    init.expect(
        "[init] daemon `absent` not started: /usr/local/bin/not-in-this-image is not in this image",
    );
    init.signal(rustix::process::Signal::TERM);
    assert!(init.child.wait().unwrap().success());
}

#[test]
fn bytes_that_are_not_utf8_neither_stop_the_relay_nor_the_daemon() {
    let mut init = Init::start(&[(
        "pipelock",
        &format!("printf 'bad \\377 byte\\n'; sleep 0.2; echo still-here; {LOOP}"),
    )]);
    init.expect("[pipelock] bad \u{FFFD} byte");
    init.expect("[pipelock] still-here");
    init.signal(rustix::process::Signal::TERM);
    init.expect("signal 15: stopping 1 daemons");
    assert!(init.child.wait().unwrap().success());
}

#[test]
fn sighup_goes_to_egress_and_pipelock_and_sigusr1_restarts_pipelock() {
    let mut init = Init::start(&[
        (
            "egress",
            &format!("trap 'echo reloading' HUP; echo egress-up; {LOOP}"),
        ),
        (
            "pipelock",
            &format!("trap 'echo pipelock-reloading' HUP; echo pipelock-started-$$; {LOOP}"),
        ),
    ]);
    init.expect("[egress] egress-up");
    let first = init.expect("[pipelock] pipelock-started-");
    init.signal(rustix::process::Signal::HUP);
    init.expect("[egress] reloading");
    init.expect("[pipelock] pipelock-reloading");
    init.signal(rustix::process::Signal::USR1);
    init.expect("[init] SIGUSR1: restarting pipelock");
    let second = init.expect("[pipelock] pipelock-started-");
    assert_ne!(first, second, "a new pipelock process");
    init.signal(rustix::process::Signal::TERM);
    assert!(init.child.wait().unwrap().success());
}

#[test]
fn sigterm_gives_a_grace_period_then_kills() {
    let mut init = Init::start(&[
        (
            "polite",
            &format!("trap 'echo bye; exit 0' TERM; echo polite-up; {LOOP}"),
        ),
        (
            "stubborn",
            &format!("trap '' TERM; echo stubborn-up; {LOOP}"),
        ),
    ]);
    init.expect("[polite] polite-up");
    init.expect("[stubborn] stubborn-up");
    init.signal(rustix::process::Signal::TERM);
    init.expect("[polite] bye");
    init.expect("daemon `stubborn` ignored SIGTERM for 1s; killing it");
    assert!(init.child.wait().unwrap().success());
}

#[test]
fn a_daemon_that_dies_is_logged_and_the_rest_keep_running() {
    let mut init = Init::start(&[
        ("flaky", "echo flaky-up; exit 3"),
        ("steady", &format!("echo steady-up; {LOOP}")),
    ]);
    init.expect("[init] daemon `flaky` exited with status 3");
    init.signal(rustix::process::Signal::INT);
    init.expect("signal 2: stopping 1 daemons");
    assert!(init.child.wait().unwrap().success());
}

#[test]
fn ready_fails_while_a_planned_daemons_program_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = init_bin();
    let file = dir.path().join("d.json");
    let write = |ready: &str| {
        std::fs::write(
            &file,
            format!(
                r#"{{"daemons": [
            {{"name": "here", "command": ["/bin/sh"], "ready_check": ["{ready}"]}},
            {{"name": "gone", "command": ["/nope/pipelock"], "ready_check": ["/bin/false"]}}
        ]}}"#
            ),
        )
        .unwrap();
    };
    write("/bin/true");
    let ready = || {
        retry_busy(|| {
            Command::new(bin)
                .arg("ready")
                .arg(&file)
                .env("BOTTLE_INIT_PROC_NET", no_listeners())
                .output()
        })
    };
    let out = ready();
    assert!(!out.status.success(), "the plan says `gone` runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "gone is not ready (/nope/pipelock is not an absolute path to a program in this image)\n"
    );
    let only_here = |ready: &str| {
        std::fs::write(
            &file,
            format!(r#"{{"daemons": [{{"name": "here", "command": ["/bin/sh"], "ready_check": ["{ready}"]}}]}}"#),
        )
        .unwrap();
    };
    only_here("/bin/true");
    assert!(ready().status.success());
    only_here("/bin/false");
    let out = ready();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "here is not ready\n");
    // A check that hangs is killed and counts as not ready; `ready` itself returns.
    only_here("/usr/bin/yes");
    let out = ready();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "here is not ready (its check ran over 5s)\n"
    );
}

#[test]
fn each_daemon_sees_only_its_own_plugins_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bin = init_bin();
    let file = dir.path().join("d.json");
    let show = "echo \"$0 sees ${EGRESS_TOKEN_0:-nothing} ${SHARED:-unset}\"";
    let list = serde_json::json!({
        "secret_env": ["EGRESS_TOKEN_0"],
        "daemons": [
            {"name": "egress", "command": ["/bin/sh", "-c", show, "egress"], "secrets": ["EGRESS_TOKEN_0"]},
            {"name": "pipelock", "command": ["/bin/sh", "-c", show, "pipelock"]},
        ]
    });
    std::fs::write(&file, list.to_string()).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(&file)
        .env("EGRESS_TOKEN_0", "tok-123")
        .env("SHARED", "plain")
        .env("BOTTLE_INIT_GRACE_SECS", "1")
        .env("BOTTLE_INIT_STATUS_DIR", dir.path().join("status"))
        .env("BOTTLE_INIT_PROC_NET", no_listeners())
        .stdout(Stdio::piped());
    let mut child = retry_busy(|| cmd.spawn());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        // The daemons' own lines only: once one has exited, the init's `never ready` line
        // quotes its last line too.
        if line.contains(" sees ") && !line.starts_with("[init]") {
            seen.push(line);
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "[egress] egress sees tok-123 plain",
            "[pipelock] pipelock sees nothing plain"
        ]
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Whether the ELF `bin` asks for a dynamic loader (has a `PT_INTERP` program header).
fn has_interpreter(bin: &[u8]) -> bool {
    assert_eq!(&bin[..4], b"\x7fELF", "an ELF file");
    assert_eq!(bin[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(bin[at..at + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn the_embedded_init_is_static_when_the_musl_target_is_installed() {
    let bin = bottle::run::docker::images::INIT_BINARY;
    if bottle_plugin_builder::static_linux_target(std::env::consts::ARCH).is_some() {
        assert!(
            !has_interpreter(bin),
            "bottle-init must not need the bundle's libc"
        );
    } else {
        eprintln!("musl target not installed: bottle-init is dynamic (the build warned)");
    }
}

#[test]
fn ready_checks_see_only_their_own_plugins_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.json");
    // The check fails if it can see the token: a stand-in for a check that would leak it.
    let check = ["/bin/sh", "-c", "test -z \"$EGRESS_TOKEN_0\""];
    let list = serde_json::json!({
        "secret_env": ["EGRESS_TOKEN_0"],
        "daemons": [{"name": "other", "command": ["/bin/sh"], "ready_check": check}]
    });
    std::fs::write(&file, list.to_string()).unwrap();
    let out = retry_busy(|| {
        Command::new(init_bin())
            .args(["ready"])
            .arg(&file)
            .env("BOTTLE_INIT_PROC_NET", no_listeners())
            .env("EGRESS_TOKEN_0", "tok-123")
            .output()
    });
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_daemon_that_exits_makes_ready_say_never_with_its_last_line() {
    let mut init = Init::start(&[
        (
            "bad",
            "echo 'bottle-egress: routes.yaml: not a routes file' >&2; exit 2",
        ),
        ("good", "sleep 30"),
    ]);
    init.expect("daemon `bad` exited with status 2");
    let (code, out) = init.ready();
    assert_eq!(
        code, 2,
        "never ready: the host stops waiting at once\n{out}"
    );
    assert!(
        out.contains("bad is not ready (it exited with status 2: bottle-egress: routes.yaml: not a routes file)"),
        "{out}"
    );
    let _ = init.child.kill();
    let _ = init.child.wait();
}

/// The init writes the ready line the host waits for once every daemon's check passes, and
/// not before; when a daemon will never be ready, the never-ready line with the reason.
#[test]
fn the_init_announces_ready_once_every_check_passes() {
    use bottle_contract::layout::{BUNDLE_NEVER_READY_PREFIX, BUNDLE_READY_LINE};
    let flag = tempfile::tempdir().unwrap();
    let up = flag.path().join("up");
    let up = up.display();
    let init = Init::with_list(&serde_json::json!({"daemons": [
        {"name": "quick", "command": ["/bin/sh", "-c", "sleep 30"], "ready_check": ["/bin/true"]},
        {"name": "slow", "command": ["/bin/sh", "-c", format!("sleep 0.3; touch {up}; sleep 30")],
         "ready_check": ["/bin/sh", "-c", format!("test -e {up}")]},
    ]}));
    assert_eq!(init.expect(BUNDLE_READY_LINE), BUNDLE_READY_LINE);
    assert!(
        flag.path().join("up").exists(),
        "announced before `slow` was up"
    );
    let mut init = init;
    let _ = init.child.kill();
    let _ = init.child.wait();

    // A planned program that is missing, and a daemon that takes the init's own name (its
    // lines would pass for the init's): never ready, saying why.
    let mut init = Init::start(&[("a", LOOP), ("init", LOOP)]);
    let never = init.expect(BUNDLE_NEVER_READY_PREFIX);
    assert!(
        never.contains("absent is not ready (/usr/local/bin/not-in-this-image")
            && never.contains(
                "init is not ready (it was not started: the name `init` is the init's own)"
            ),
        "{never}"
    );
    assert!(
        !init
            .seen
            .borrow()
            .iter()
            .any(|(l, _)| l == BUNDLE_READY_LINE)
    );
    let _ = init.child.kill();
    let _ = init.child.wait();
}

/// A stand-in for a container's `/proc/net` with no socket at all (`ready` run on the host
/// would otherwise see the host's listeners).
fn no_listeners() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// A socket listening beyond loopback on a port no daemon declares keeps the bundle from ever
/// being ready (exit 2), naming it; loopback and declared ports are fine.
#[test]
fn ready_refuses_a_listener_on_an_undeclared_port() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    std::fs::create_dir_all(&net).unwrap();
    // 127.0.0.1:8888 (loopback), 0.0.0.0:9099 (declared), 0.0.0.0:2375 (neither).
    std::fs::write(
        net.join("tcp"),
        "  sl  local_address rem_address   st\n   0: 0100007F:22B8 00000000:0000 0A\n   1: 00000000:238B 00000000:0000 0A\n   2: 00000000:0947 00000000:0000 0A\n",
    )
    .unwrap();
    let file = dir.path().join("d.json");
    std::fs::write(
        &file,
        r#"{"daemons": [{"name": "egress", "command": ["/bin/sh"], "ports": [9099]}]}"#,
    )
    .unwrap();
    let ready = || {
        retry_busy(|| {
            Command::new(init_bin())
                .arg("ready")
                .arg(&file)
                .env("BOTTLE_INIT_PROC_NET", &net)
                .env("BOTTLE_INIT_STATUS_DIR", dir.path().join("status"))
                .output()
        })
    };
    let out = ready();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("listens beyond loopback on tcp 0.0.0.0:2375, which no daemon declares"),
        "{said}"
    );
    std::fs::write(
        &file,
        r#"{"daemons": [{"name": "egress", "command": ["/bin/sh"], "ports": [9099, 2375]}]}"#,
    )
    .unwrap();
    assert!(ready().status.success());
}

/// `bottle-init agent GO -- COMMAND…` started natively on a fresh FIFO; its output is piped.
fn start_agent_mode(command: &[&str]) -> (Child, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &go,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let child = retry_busy(|| {
        Command::new(init_bin())
            .arg("agent")
            .arg(&go)
            .arg("--")
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    (child, dir, go)
}

/// Write `message` into the FIFO `go` once `bottle-init agent` reads it, as the host does: an
/// open with no reader fails at once, so a child that died fails the test, never hangs it.
fn give(go: &Path, message: &[u8]) {
    use rustix::fs::{Mode, OFlags};
    use std::io::Write as _;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let fd = loop {
        match rustix::fs::open(go, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty()) {
            Ok(fd) => break fd,
            Err(rustix::io::Errno::NXIO) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("bottle-init agent never read {}: {e}", go.display()),
        }
    };
    rustix::fs::fcntl_setfl(&fd, OFlags::empty()).unwrap();
    std::fs::File::from(fd).write_all(message).unwrap();
}

#[test]
fn the_agents_command_waits_for_the_go_ahead_and_gets_its_env() {
    let (mut child, _dir, go) = start_agent_mode(&["sh", "-c", "echo \"$X|$Y\"; exit 5"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the command waits until the host says go"
    );
    let env = [
        ("X".to_owned(), "a=b".to_owned()),
        ("Y".to_owned(), String::new()),
    ];
    give(&go, &bottle_contract::go::encode(&env));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a=b|\n");
}

#[test]
fn no_go_ahead_means_the_command_never_runs() {
    // The host closing the FIFO without a word (it gave up), or a message cut short.
    for message in [&b""[..], b"X=1\0"] {
        let (child, _dir, go) = start_agent_mode(&["sh", "-c", "echo ran"]);
        give(&go, message);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{message:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("did not start the agent's command"),
            "{out:?}"
        );
    }
}

#[test]
fn a_command_that_is_not_there_exits_127_naming_it() {
    let (child, _dir, go) = start_agent_mode(&["no-such-program-here"]);
    give(&go, &bottle_contract::go::encode(&[]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run `no-such-program-here`"),
        "{out:?}"
    );
}
