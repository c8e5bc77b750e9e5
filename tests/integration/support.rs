//! Helpers shared by bottle's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The test plugins and the example plugin, built from source for wasm32-wasip2 the first time
/// a test asks for one (see `tests/plugins/README.md`).
pub mod plugins {
    use super::*;

    const PACKAGES: &[&str] = &[
        "bottle-test-misbehave",
        "bottle-test-fs-import",
        "bottle-test-wrong-api",
        "bottle-test-pipelock-override",
        "bottle-example-hello",
        "bottle-test-rogue-backend",
        "bottle-test-reserved-name",
    ];

    fn built(package: &str) -> &'static str {
        static BUILT: OnceLock<Vec<(String, String)>> = OnceLock::new();
        let all = BUILT.get_or_init(|| {
            // Beside the built-in plugins, so their dependencies are compiled once for both.
            let target = bottle_plugin_builder::nested_target_dir(&target_dir());
            bottle_plugin_builder::build_components(&workspace(), &target, PACKAGES)
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|c| (c.package, c.path.display().to_string()))
                .collect()
        });
        &all.iter()
            .find(|(p, _)| p == package)
            .expect("a listed package")
            .1
    }

    /// Panics, loops or allocates forever, or asks for capabilities, as its settings say.
    pub fn misbehave() -> &'static str {
        built("bottle-test-misbehave")
    }
    /// Imports `wasi:filesystem`.
    pub fn fs_import() -> &'static str {
        built("bottle-test-fs-import")
    }
    /// Built for API 9.0.0.
    pub fn wrong_api() -> &'static str {
        built("bottle-test-wrong-api")
    }
    /// A sidecar named `pipelock`.
    pub fn pipelock_override() -> &'static str {
        built("bottle-test-pipelock-override")
    }
    /// A backend named `docker` that adds what its settings name (`rogue: privileged`…).
    pub fn rogue_backend() -> &'static str {
        built("bottle-test-rogue-backend")
    }
    /// A sidecar named `bottle`.
    pub fn reserved_name() -> &'static str {
        built("bottle-test-reserved-name")
    }
    /// The example sidecar from `examples/hello-sidecar`.
    pub fn hello() -> &'static str {
        built("bottle-example-hello")
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core/ is in the workspace")
        .to_owned()
}

/// The target dir cargo builds these tests in (`target/`, or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target dir>/tmp")
        .to_owned()
}

/// The `bottle` binary cargo built for these tests, linked into a dir of its own
/// (`target/test-bin`): bottle trusts the native drivers beside its binary, and cargo's own
/// output dir may hold a freshly built one that no test asked for.
pub fn bottle_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = workspace().join("target/test-bin");
        std::fs::create_dir_all(&dir).expect("mkdir target/test-bin");
        install_bottle(&dir)
    })
    .clone()
}

/// `dir/bottle`: the tests' `bottle` binary hard-linked (copied across file systems) into
/// `dir`, which becomes that binary's install dir.
pub fn install_bottle(dir: &Path) -> PathBuf {
    let built = Path::new(env!("CARGO_BIN_EXE_bottle"));
    let to = dir.join("bottle");
    // Replaced whole (link beside, then rename), so a stale link to an older build never stays.
    let tmp = dir.join(format!(".bottle.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(built, &tmp).is_err() {
        std::fs::copy(built, &tmp).expect("copy bottle");
    }
    std::fs::rename(&tmp, &to).expect("place bottle");
    to
}

/// A sandbox for one test: its own state, cache and config dirs, and a project dir with agents.
pub struct Sandbox {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh sandbox whose project dir has the repo's example agents.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let agents = dir.path().join("project/agents");
        std::fs::create_dir_all(&agents).expect("mkdir");
        for e in std::fs::read_dir(workspace().join("agents")).expect("agents/") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), agents.join(e.file_name())).expect("copy agent");
        }
        Sandbox { dir }
    }

    /// The project dir (cwd of commands).
    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    /// The state root.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write an agent manifest into the project's `agents/`.
    pub fn agent(&self, name: &str, yaml: &str) {
        std::fs::write(
            self.project().join("agents").join(format!("{name}.yaml")),
            yaml,
        )
        .expect("write agent");
    }

    /// A `bottle` command running in the project dir with this sandbox's dirs, every manifest
    /// in the project's `agents/` confirmed as the user would have (see
    /// [`Sandbox::bottle_unconfirmed`]).
    pub fn bottle(&self) -> Command {
        let store = bottle::plan::consent::Store::new(&self.dir.path().join("config/bottle"));
        for e in std::fs::read_dir(self.project().join("agents")).expect("agents/") {
            let path = e.expect("entry").path();
            let text = std::fs::read(&path).expect("read agent");
            store
                .record(&bottle::plan::consent::digest(&text), &path)
                .expect("confirm");
        }
        self.bottle_unconfirmed()
    }

    /// A `bottle` command as [`Sandbox::bottle`], with no manifest confirmed beforehand.
    pub fn bottle_unconfirmed(&self) -> Command {
        let mut cmd = Command::new(bottle_bin());
        cmd.current_dir(self.project())
            .env("BOTTLE_STATE_DIR", self.state())
            .env("BOTTLE_CACHE_DIR", shared_cache())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            // Plans as a bundle with pipelock would run; the Docker tests ask the real image.
            .env("BOTTLE_PIPELOCK", "present")
            .env_remove("RUST_LOG");
        cmd
    }

    /// The only state dir written so far.
    pub fn only_state_dir(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.state())
            .expect("state root exists")
            .map(|e| e.expect("entry").path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }

    /// A plugin dir holding copies of `plugins` (paths of built components).
    pub fn plugin_dir(&self, name: &str, plugins: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for p in plugins {
            let p = Path::new(p);
            std::fs::copy(p, dir.join(p.file_name().unwrap())).expect("copy plugin");
        }
        dir
    }
}

/// One compiled-code cache for all tests, so each plugin is compiled once per test run.
pub fn shared_cache() -> PathBuf {
    workspace().join("target/test-plugin-cache")
}

/// Run and capture; returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running bottle");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Compare `actual` with the golden file `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = workspace().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "golden file {} differs (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The sidecar bundle's volumes of a rendered compose file, each with the target its daemon
/// sees: a read-only mount is bound at a private path and installed by the bundle's init at
/// the target `bundle/daemons.json` (in `state`) names for it.
pub fn bundle_volumes(compose: &serde_yaml::Value, state: &Path) -> Vec<serde_yaml::Value> {
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("bundle/daemons.json")).expect("daemons.json"),
    )
    .expect("daemons.json is JSON");
    let installed_at = |from: &str| -> Option<String> {
        list["daemons"].as_array()?.iter().find_map(|d| {
            d["install"].as_array()?.iter().find_map(|i| {
                (i["from"] == from).then(|| i["to"].as_str().unwrap_or_default().to_owned())
            })
        })
    };
    compose["services"]["sidecars"]["volumes"]
        .as_sequence()
        .expect("the bundle has volumes")
        .iter()
        .map(|v| {
            let mut v = v.clone();
            if let Some(to) = v["target"].as_str().and_then(installed_at) {
                v["target"] = serde_yaml::Value::from(to);
            }
            v
        })
        .collect()
}

/// What an idle agent runs: it says `up`, then waits for [`Running::release`] (at most two
/// minutes).
const UNTIL_RELEASED: &str =
    "echo up; i=0; until [ -e /tmp/go ]; do i=$((i+1)); [ $i -gt 1200 ] && break; sleep 0.1; done";

/// A `bottle run` in the background whose output a test reads line by line.
pub struct Running {
    /// The process.
    pub child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    err: std::sync::mpsc::Receiver<String>,
    /// Everything read from its stdout so far.
    pub seen: String,
}

impl Running {
    /// Start `cmd` with piped stdin, stdout and stderr.
    pub fn start(cmd: &mut Command) -> Running {
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning bottle");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, err) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            let _ = tx.send(text);
        });
        Running {
            child,
            out,
            err,
            seen: String::new(),
        }
    }

    /// Read stdout until a line is `marker`; panics with everything it printed if it ends
    /// first.
    pub fn until(&mut self, marker: &str) {
        use std::io::BufRead as _;
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = self.child.wait();
                let err = self.err.recv().unwrap_or_default();
                panic!(
                    "it ended before printing {marker:?}:\n{}\n--- stderr\n{err}",
                    self.seen
                );
            }
            self.seen.push_str(&line);
            if line.trim() == marker {
                return;
            }
        }
    }

    /// `cmd` (a `bottle` command) running `agent` as bottle `slug`, the agent idling until
    /// [`Running::release`]; returns once the agent is up.
    pub fn idle(cmd: &mut Command, agent: &str, slug: &str) -> Running {
        Running::idle_with(cmd, &[], agent, slug)
    }

    /// [`Running::idle`] with `run`'s options `opts` (`--plugin-dir DIR`).
    pub fn idle_with(cmd: &mut Command, opts: &[String], agent: &str, slug: &str) -> Running {
        let mut running = Running::start(cmd.arg("run").args(opts).args([
            agent,
            "--slug",
            slug,
            "--",
            "sh",
            "-c",
            UNTIL_RELEASED,
        ]));
        running.until("up");
        running
    }

    /// Let the idle agent of bottle `slug` end, and wait for the run as [`Running::finish`].
    pub fn release(self, slug: &str) -> (std::process::ExitStatus, String, String) {
        let touched = Command::new("docker")
            .args(["exec", &format!("bottle-agent-{slug}"), "touch", "/tmp/go"])
            .status()
            .expect("docker exec");
        assert!(touched.success(), "could not release bottle {slug}");
        self.finish()
    }

    /// Send `line` to its stdin.
    pub fn send(&mut self, line: &str) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(line.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
    }

    /// Wait for it to end: its exit status, the rest of its stdout, and its stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let status = self.child.wait().expect("wait");
        let err = self.err.recv().unwrap_or_default();
        self.seen.push_str(&rest);
        (status, self.seen, err)
    }
}
