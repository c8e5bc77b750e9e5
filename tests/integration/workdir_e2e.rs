//! The working dir the agent shares with you (`cwd: mount`), attacked as a hostile agent
//! would, with your own git run on the host as the dir's owner during the run and after it.
//!
//! Real Docker, the real `bottle` binary, real git on both sides. The planted commands would
//! `touch` a file in a marker dir of the test's on the host: it must stay empty.

use crate::docker_e2e::{bottle, leftovers, shared, unique_slug};
use crate::support::{Running, Sandbox};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The uid and gid that own the project: yours, or 1000 when the tests run as root (whose
/// agent runs as 1000, as a user's would run as the user).
fn owner() -> (u32, u32) {
    match rustix::process::getuid().as_raw() {
        0 => (1000, 1000),
        uid => (uid, rustix::process::getgid().as_raw()),
    }
}

/// A command run as the project's owner, with a home of its own (for git's global config).
fn as_owner(home: &Path, program: &str) -> Command {
    let (uid, gid) = owner();
    let mut c = if rustix::process::getuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            program,
        ]);
        c
    } else {
        Command::new(program)
    };
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_TERMINAL_PROMPT", "0");
    c
}

/// `chown -R` to the owner (when the tests run as root).
fn give(path: &Path) {
    if rustix::process::getuid().is_root() {
        let (uid, gid) = owner();
        let ok = Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

/// A project that is a git repo with one commit, owned by the owner, and the owner's home.
fn project(sb: &Sandbox) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    // The owner walks from the sandbox down to the project.
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = sb.dir.path().join("owner-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Owner\n\temail = owner@example.com\n[init]\n\tdefaultBranch = main\n",
    )
    .unwrap();
    let p = sb.project();
    std::fs::write(p.join("README.md"), "the project\n").unwrap();
    give(sb.dir.path());
    for args in [
        &["init", "-q"][..],
        &["add", "README.md"],
        &["commit", "-qm", "init"],
    ] {
        let out = as_owner(&home, "git")
            .args(args)
            .current_dir(&p)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }
    home
}

/// What the owner's git and shell prompt would run in `dir`: status, log, diff, an alias, a
/// branch listing. Each is allowed to fail (a dir that is no repo); none may run a plant.
fn owners_git(home: &Path, dir: &Path) {
    for args in [
        &["status"][..],
        &["status", "--porcelain"],
        &["log", "-1"],
        &["diff"],
        &["branch"],
        &["st"],
        &["rev-parse", "--git-dir", "--is-inside-work-tree"],
    ] {
        let _ = as_owner(home, "git")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// The agent's attack: every way it has to leave git something to run, in its view of the
/// working dir. `$M` is the host's marker dir (it does not exist in the agent).
const ATTACK: &str = r#"
set -u
cd /workspace
g() { git -c safe.directory='*' -c user.name=agent -c user.email=agent@example.com "$@"; }
# Real work first: a file and a commit, which also slips in a husky hook (a checkout of the
# branch would write it).
mkdir -p .husky && printf 'touch %s/husky\n' "$M" > .husky/pre-commit
echo work > work.txt && g add work.txt .husky && g commit -qm agent-work && echo COMMITTED
echo changed >> README.md
# Every config key git runs, in the repo's own config, and a hook.
for k in core.fsmonitor core.hooksPath core.sshCommand core.pager core.editor diff.x.textconv filter.x.smudge filter.x.clean; do
  g config "$k" "touch $M/$k"
done
g config alias.st "!touch $M/alias"
printf '#!/bin/sh\ntouch %s/hook\n' "$M" > .git/hooks/post-checkout && chmod +x .git/hooks/post-checkout
# A nested repo anywhere in the tree.
mkdir -p deep/nested && (cd deep/nested && g init -q && g config core.fsmonitor "touch $M/nested" && g config alias.st "!touch $M/nested-alias")
# A `gitdir:` file to a git dir elsewhere in the tree.
mkdir gf && g init -q --bare .hidden && g -C .hidden config core.fsmonitor "touch $M/gitfile" && echo 'gitdir: ../.hidden' > gf/.git
# `commondir`: HEAD beside a commondir naming the repo's own .git.
mkdir cd && echo 'ref: refs/heads/main' > cd/HEAD && echo ../.git > cd/commondir && printf '[core]\n\tfsmonitor = touch %s/commondir\n' "$M" > cd/config
# A worktree and a submodule's git dir.
g worktree add -q wt 2>/dev/null || mkdir -p wt
printf 'gitdir: ../.git/modules/sub\n' > /dev/null; mkdir -p sub .git/modules/sub/objects .git/modules/sub/refs && echo 'ref: refs/heads/main' > .git/modules/sub/HEAD && printf '[core]\n\tfsmonitor = touch %s/submodule\n' "$M" > .git/modules/sub/config && echo 'gitdir: ../.git/modules/sub' > sub/.git
# A bare-repo shape in a plain dir.
g init -q --bare baredir && g -C baredir config core.pager "touch $M/bare"
# Finally: move .git away and plant a new one in its place (until the host has looked).
mv .git .git-moved && g init -q && g config core.fsmonitor "touch $M/renamed" && g config alias.st "!touch $M/renamed-alias" && echo REPLACED
echo PLANTED
read go
# Put the repo back, so its commit comes home; a copy of the planted one stays.
mv .git .git-planted && mv .git-moved .git
echo DONE
"#;

/// The dirs the owner's git is run in: the working dir and every place the agent planted.
const PLANTED_DIRS: &[&str] = &[
    "",
    "deep",
    "deep/nested",
    "gf",
    "cd",
    "wt",
    "sub",
    "baredir",
    ".git-moved",
    ".git-planted",
    ".hidden",
];

fn markers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The issue's attacks, with the owner's git run in every planted dir while the agent runs
/// and after it: nothing planted ever runs, the agent's files and commits are there, and the
/// run's closing lines say what was kept out.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn nothing_the_agent_plants_in_the_working_dir_ever_runs_in_your_git() {
    let _g = shared();
    let sb = Sandbox::new();
    sb.agent(
        "coder",
        "image: bottle-agent:latest\ncwd: mount\nworkdir: /workspace\n",
    );
    let home = project(&sb);
    let marks = sb.dir.path().join("markers");
    std::fs::create_dir_all(&marks).unwrap();
    give(&marks);
    // The control: a repo with such a config, made by the test on the host, does run it when
    // the owner's git runs there (so an empty marker dir below means something).
    let control = sb.dir.path().join("control");
    std::fs::create_dir_all(&control).unwrap();
    give(&control);
    for args in [
        &["init", "-q"][..],
        &[
            "config",
            "core.fsmonitor",
            &format!("touch {}/control", marks.display()),
        ],
    ] {
        let ok = as_owner(&home, "git")
            .args(args)
            .current_dir(&control)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    owners_git(&home, &control);
    assert_eq!(
        markers(&marks),
        ["control"],
        "the owner's git runs a planted fsmonitor"
    );
    std::fs::remove_file(marks.join("control")).unwrap();
    let slug = unique_slug("e2e-workdir");
    let script = format!("M={}\n{ATTACK}", marks.display());
    let mut agent = Running::start(
        bottle(&sb).args(["run", "coder", "--slug", &slug, "--", "sh", "-c", &script]),
    );
    agent.until("PLANTED");
    assert!(
        agent.seen.contains("COMMITTED") && agent.seen.contains("REPLACED"),
        "{}",
        agent.seen
    );
    // During the run: the owner's git everywhere the agent planted.
    for d in PLANTED_DIRS {
        owners_git(&home, &sb.project().join(d));
    }
    assert_eq!(markers(&marks), Vec::<String>::new(), "ran during the run");
    assert!(
        !sb.project().join("work.txt").exists(),
        "nothing of the agent's reaches your dir while it runs"
    );
    agent.send("go");
    let (status, seen, err) = agent.finish();
    assert!(status.success(), "{seen}\n{err}");
    // After it: the same, and in every dir the merge made.
    for d in PLANTED_DIRS {
        owners_git(&home, &sb.project().join(d));
    }
    assert_eq!(markers(&marks), Vec::<String>::new(), "ran after the run");
    // The agent's work is yours: its files, its commit as a branch; your repo untouched.
    let p = sb.project();
    assert_eq!(
        std::fs::read_to_string(p.join("work.txt")).unwrap(),
        "work\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("README.md")).unwrap(),
        "the project\nchanged\n"
    );
    let git_out = |args: &[&str]| {
        let o = as_owner(&home, "git")
            .args(args)
            .current_dir(&p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(
        git_out(&["log", "-1", "--format=%s", &format!("bottle/{slug}/main")]),
        "agent-work"
    );
    assert_eq!(git_out(&["log", "-1", "--format=%s", "main"]), "init");
    let config = std::fs::read_to_string(p.join(".git/config")).unwrap();
    assert!(!config.contains("touch"), "{config}");
    assert!(!p.join(".git/hooks/post-checkout").exists());
    for gone in [
        "deep/nested/.git",
        "gf/.git",
        ".hidden",
        "cd/HEAD",
        "cd/commondir",
        "wt/.git",
        "sub/.git",
        "baredir",
        ".git-moved",
        ".git-planted",
    ] {
        assert!(
            std::fs::symlink_metadata(p.join(gone)).is_err(),
            "{gone} reached your dir"
        );
    }
    // Kept as an archive, never as a dir your git could take for a repo.
    let logs = sb.state().join("logs");
    assert!(logs.join(format!("{slug}.set-aside.tar")).is_file());
    // Every path that came back is listed, ignored ones too (`git status` does not show those).
    let listed = std::fs::read_to_string(logs.join(format!("{slug}.changes.txt"))).unwrap();
    assert!(listed.lines().any(|l| l == "written work.txt"), "{listed}");
    assert!(!logs.join(format!("{slug}.set-aside")).exists());
    for said in [
        &format!("on your branch bottle/{slug}/main"),
        "kept out of your dir",
        "deep/nested/.git: version-control metadata",
        "is not applied to your repo",
        "WARNING: they change what your git runs",
        ".husky/pre-commit: the hook manager's .husky",
    ] {
        assert!(err.contains(said), "{said:?} missing in:\n{err}");
    }
    assert_eq!(leftovers(&slug), "");
}

/// A working dir the agent's user cannot write (bottle run as root over root's dir, the agent
/// as 1000) is refused before anything starts, in one line naming the owner, the agent's uid
/// and the ways out.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_working_dir_the_agent_cannot_write_is_refused_before_anything_starts() {
    use std::os::unix::fs::PermissionsExt as _;
    let _engine = shared();
    let sb = Sandbox::new();
    sb.agent(
        "mounted",
        "image: bottle-agent:latest\ncwd: mount\negress:\n  allowlist: [docs.rs]\n",
    );
    let project = sb.project();
    // Run as root the dir is root's and the agent 1000; otherwise the dir is made read-only
    // to its owner, the agent's uid: either way the agent could not write it.
    if !rustix::process::getuid().is_root() {
        std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let slug = unique_slug("unwritable");
    let (code, out, err) = crate::support::run(
        bottle(&sb).args(["run", "mounted", "--yes", "--slug", &slug, "--", "true"]),
    );
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, 1, "{out}{err}");
    let uid = std::fs::metadata(&project).map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        m.uid()
    });
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "the working dir {} is owned by uid {}",
            project.display(),
            uid.unwrap()
        )) && line.contains("the agent runs as uid")
            && line.contains("set `user")
            && line.contains("`cwd: copy`"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    assert_eq!(leftovers(&slug), "", "something was started");
}

/// An agent image whose users are known by name only: `wright` (uid 1234) and `toor`, root
/// by another name (uid 0).
fn image_with_named_users() -> &'static str {
    const IMAGE: &str = "bottle-test/named-users:latest";
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM bottle-agent:latest\nRUN useradd -M -U -u 1234 wright && useradd -M -o -u 0 -g 0 toor\n",
        )
        .unwrap();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(built.status.success(), "{built:?}");
    });
    IMAGE
}

/// A user the manifest names by name is judged by the uid and gid the image gives it: it
/// runs as those numbers with a home it owns (not a world-writable one), a dir it cannot write is refused before
/// anything starts, and root by another name needs `--grant agent=root` as `root` does.
#[test]
#[ignore = "e2e: needs Docker and the test images; run with `cargo test --workspace -- --ignored` (`bash .ci/run` sets them up)"]
fn a_user_named_by_name_is_judged_by_the_uid_the_image_gives_it() {
    let _engine = shared();
    let image = image_with_named_users();
    let sb = Sandbox::new();
    for (name, user, cwd) in [
        ("wright-none", "wright", "none"),
        ("wright-mount", "wright", "mount"),
        ("toor", "toor", "none"),
    ] {
        sb.agent(
            name,
            &format!("image: {image}\nuser: {user}\ncwd: {cwd}\negress:\n  allowlist: [docs.rs]\n"),
        );
    }

    let slug = unique_slug("named");
    let (code, out, err) = crate::support::run(bottle(&sb).args([
        "run",
        "wright-none",
        "--yes",
        "--slug",
        &slug,
        "--",
        "sh",
        "-c",
        "id -u; id -g; stat -c %U:%u \"$HOME\"",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1234", "1234", "wright:1234"],
        "{err}"
    );
    assert_eq!(leftovers(&slug), "", "left behind");

    // The project is its owner's, mode 0755: uid 1234 cannot write it.
    let slug = unique_slug("named-mount");
    let (code, out, err) = crate::support::run(bottle(&sb).args([
        "run",
        "wright-mount",
        "--yes",
        "--slug",
        &slug,
        "--",
        "true",
    ]));
    assert_eq!(code, 1, "{out}{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default();
    assert!(
        line.contains("the agent runs as uid 1234 (gid 1234)"),
        "{err}"
    );
    assert_eq!(leftovers(&slug), "", "something was started");

    let slug = unique_slug("named-root");
    let (code, out, err) = crate::support::run(
        bottle(&sb).args(["run", "toor", "--yes", "--slug", &slug, "--", "true"]),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("`user: toor` is uid 0 (root)") && err.contains("--grant agent=root"),
        "{err}"
    );
    assert_eq!(leftovers(&slug), "", "something was started");
}
