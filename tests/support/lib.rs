//! Helpers shared by bottle's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Paths of the test plugins built by `build.rs`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/test_plugins.rs"));
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_owned()
}

/// The `bottle` binary of this build (`cargo build -p bottle` makes it; `cargo test` does too).
pub fn bottle_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("bottle");
    assert!(bin.is_file(), "{} is missing: run `cargo build -p bottle` first", bin.display());
    bin
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
        std::fs::write(self.project().join("agents").join(format!("{name}.yaml")), yaml).expect("write agent");
    }

    /// A `bottle` command running in the project dir with this sandbox's dirs.
    pub fn bottle(&self) -> Command {
        let mut cmd = Command::new(bottle_bin());
        cmd.current_dir(self.project())
            .env("BOTTLE_STATE_DIR", self.state())
            .env("BOTTLE_CACHE_DIR", shared_cache())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
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
    let Output { status, stdout, stderr } = cmd.output().expect("running bottle");
    (status.code().unwrap_or(-1), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// Compare `actual` with the golden file `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(name: &str, actual: &str) {
    let path = workspace().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1 to create it", path.display()));
    if expected != actual {
        panic!(
            "golden file {} differs (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}
