//! The sidecar bundle's PID 1 (`bottle-init`, embedded in bottle), run natively with stand-in
//! daemons: output prefixes, signal forwarding, restarts, grace then kill, dead daemons logged.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Init {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line so far, and whether `expect` already returned it. stdout and stderr are read
    /// by two threads, so lines can arrive out of order: `expect` looks at all of them.
    seen: std::cell::RefCell<Vec<(String, bool)>>,
    _dir: tempfile::TempDir,
}

impl Init {
    /// Start bottle-init with `daemons` (name, shell script) and a 1 s grace period.
    fn start(daemons: &[(&str, &str)]) -> Init {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bottle-init");
        std::fs::write(&bin, bottle::docker::images::INIT_BINARY).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let list = serde_json::json!({
            "daemons": daemons.iter().map(|(name, script)| serde_json::json!({
                "name": name, "command": ["/bin/sh", "-c", script],
            })).chain(std::iter::once(serde_json::json!({
                "name": "absent", "command": ["/usr/local/bin/not-in-this-image"],
            }))).collect::<Vec<_>>()
        });
        let file = dir.path().join("daemons.json");
        std::fs::write(&file, list.to_string()).unwrap();
        let mut child = Command::new(&bin)
            .arg(&file)
            .env("BOTTLE_INIT_GRACE_SECS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        }
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
fn sighup_goes_to_egress_and_sigusr1_restarts_pipelock() {
    let mut init = Init::start(&[
        (
            "egress",
            &format!("trap 'echo reloading' HUP; echo egress-up; {LOOP}"),
        ),
        ("pipelock", &format!("echo pipelock-started-$$; {LOOP}")),
    ]);
    init.expect("[egress] egress-up");
    let first = init.expect("[pipelock] pipelock-started-");
    init.signal(rustix::process::Signal::HUP);
    init.expect("[egress] reloading");
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
fn ready_checks_only_daemons_that_are_present() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bottle-init");
    std::fs::write(&bin, bottle::docker::images::INIT_BINARY).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    assert!(
        Command::new(&bin)
            .arg("ready")
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    write("/bin/false");
    let out = Command::new(&bin).arg("ready").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "here is not ready\n");
    // A check that hangs is killed and counts as not ready; `ready` itself returns.
    write("/usr/bin/yes");
    let out = Command::new(&bin).arg("ready").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "here is not ready (its check ran over 5s)\n"
    );
}

#[test]
fn each_daemon_sees_only_its_own_plugins_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bottle-init");
    std::fs::write(&bin, bottle::docker::images::INIT_BINARY).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    let mut child = Command::new(&bin)
        .arg(&file)
        .env("EGRESS_TOKEN_0", "tok-123")
        .env("SHARED", "plain")
        .env("BOTTLE_INIT_GRACE_SECS", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = lines.next().unwrap().unwrap();
        if line.contains(" sees ") {
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
