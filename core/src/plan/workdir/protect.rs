//! Which host dirs may be the agent's working dir under `cwd: mount`.
//!
//! The mount is read-write: from `/` or `$HOME` it would hand a hostile agent `~/.ssh`,
//! `~/.bashrc` and bottle's own state, cache and config (where it could plant a plugin the
//! host later runs); from above the Docker socket it would hand it the engine. The protected
//! dirs are gathered once at the CLI edge; the check itself is a pure function.

use std::path::{Path, PathBuf};

/// A host dir the agent must never get read-write, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// The dir (canonical when it exists).
    pub path: PathBuf,
    /// What it is, for the error (`bottle's state dir`).
    pub what: String,
    /// Whether working *inside* it is refused too (state, cache, config, plugins: yes;
    /// `$HOME`: no, projects live there).
    pub inside_too: bool,
}

impl Protected {
    /// `path` (canonicalised when it exists) described as `what`.
    pub fn new(path: impl Into<PathBuf>, what: impl Into<String>, inside_too: bool) -> Self {
        let path = path.into();
        Protected {
            path: path.canonicalize().unwrap_or(path),
            what: what.into(),
            inside_too,
        }
    }
}

/// The dirs to protect on this host: `/`, `$HOME`, bottle's state, cache and config dirs,
/// bottle's install dir, the Docker socket's dir, and the plugin dirs of this run.
pub fn protected_dirs(
    home: Option<&Path>,
    state: Option<&Path>,
    cache: Option<&Path>,
    config: Option<&Path>,
    install: Option<&Path>,
    docker_socket: &Path,
    plugin_dirs: &[PathBuf],
) -> Vec<Protected> {
    let mut out = vec![Protected::new("/", "the root of the host", false)];
    if let Some(h) = home {
        out.push(Protected::new(h, "your home dir ($HOME)", false));
    }
    for (dir, what) in [
        (state, "bottle's state dir (CA keys of running bottles)"),
        (cache, "bottle's plugin cache"),
        (config, "bottle's config dir (agent manifests)"),
        // A driver there loads without a pin, and the `bottle` there runs next time.
        (
            install,
            "bottle's install dir (the `bottle` you run and its drivers)",
        ),
    ] {
        if let Some(d) = dir {
            out.push(Protected::new(d, what, true));
        }
    }
    if let Some(sock_dir) = docker_socket.parent() {
        out.push(Protected::new(sock_dir, "the Docker socket's dir", true));
    }
    for d in plugin_dirs {
        out.push(Protected::new(d, "a plugin dir of this run", true));
    }
    out
}

/// Why `cwd` may not be mounted read-write into the agent, if it may not.
pub fn refusal(cwd: &Path, protected: &[Protected]) -> Option<String> {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_owned());
    for p in protected {
        if p.path == cwd {
            return Some(format!("is {}", p.what));
        }
        if p.path.starts_with(&cwd) {
            return Some(format!("holds {} ({})", p.what, p.path.display()));
        }
        if p.inside_too && cwd.starts_with(&p.path) {
            return Some(format!("is inside {} ({})", p.what, p.path.display()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> Vec<Protected> {
        protected_dirs(
            Some(&root.join("home")),
            Some(&root.join("home/.local/state/bottle")),
            Some(&root.join("home/.cache/bottle")),
            Some(&root.join("home/.config/bottle")),
            Some(&root.join("opt/bottle/bin")),
            &root.join("run/docker.sock"),
            &[root.join("plugins")],
        )
    }

    #[test]
    fn home_root_and_bottles_own_dirs_are_refused_and_projects_are_not() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in [
            "home/.local/state/bottle",
            "home/.cache/bottle",
            "home/.config/bottle",
            "home/code/app",
            "opt/bottle/bin",
            "run",
            "plugins",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let p = dirs(root);
        assert_eq!(refusal(&root.join("home/code/app"), &p), None);
        for (cwd, why) in [
            ("/".into(), "is the root of the host"),
            (root.join("home"), "is your home dir"),
            (root.to_owned(), "holds your home dir"),
            (root.join("home/.local"), "holds bottle's state dir"),
            (
                root.join("home/.local/state/bottle/x-1"),
                "is inside bottle's state dir",
            ),
            (root.join("home/.config/bottle"), "is bottle's config dir"),
            (root.join("run"), "is the Docker socket's dir"),
            (root.join("opt"), "holds bottle's install dir"),
            (
                root.join("opt/bottle/bin/sub"),
                "is inside bottle's install dir",
            ),
            (root.join("plugins"), "is a plugin dir"),
        ] {
            let r =
                refusal(&cwd, &p).unwrap_or_else(|| panic!("{} must be refused", cwd.display()));
            assert!(r.starts_with(why), "{}: {r}", cwd.display());
        }
    }
}
