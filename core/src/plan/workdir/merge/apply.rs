//! Carrying [`super::plan`]'s decisions out: the agent's entries into your dir, what must stay
//! out into an archive, your replaced and removed entries into a backup dir.
//!
//! Every path in your dir is reached through dir handles opened without following links
//! (`O_PATH|O_NOFOLLOW`, one component at a time): a link on the way makes the step fail,
//! never leads it elsewhere.

use super::{Report, Step};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

/// Where what does not go into your dir goes.
#[derive(Debug, Clone)]
pub struct Destinations {
    /// The archive (tar) of the agent's entries kept out of your dir.
    pub archive: PathBuf,
    /// The dir your entries go to when the agent replaced or removed them.
    pub backup: PathBuf,
    /// The list of every path written, removed or replaced (text, one a line).
    pub changes: PathBuf,
}

/// The most bytes of one file copied when the layer and your dir are on different
/// filesystems (a sparse file of the agent's would otherwise fill your disk).
const MAX_COPY_BYTES: u64 = 8 << 30;

/// Mode bits an entry of the agent's keeps: no setuid, setgid or sticky bit, and no write
/// for group or others (a writable dir of yours would let another local user plant a repo).
const KEPT_MODE: u32 = 0o755;

/// Carry `steps` out, the agent's entries from `upper` into `lower`. Entries are moved when
/// both sides share a filesystem and copied otherwise. A step that fails is reported (what it
/// was about stays in the layer) and the others go on.
pub fn apply(upper: &Path, lower: &Path, to: &Destinations, steps: &[Step]) -> Report {
    let mut report = Report::default();
    let same_fs = match (std::fs::metadata(upper), std::fs::metadata(lower)) {
        (Ok(u), Ok(l)) => u.dev() == l.dev(),
        _ => false,
    };
    let mut archive = Archive::new(&to.archive);
    let mut backup = Backup {
        dir: &to.backup,
        used: false,
    };
    for step in steps {
        let path = step.path().to_owned();
        let done: std::io::Result<()> = match step {
            Step::Write(p) => backup
                .take(lower, p, &mut report.replaced)
                .and_then(|()| put_file(upper, lower, p, same_fs))
                .map(|()| report.written.push(path.clone())),
            Step::Link(p) => backup
                .take(lower, p, &mut report.replaced)
                .and_then(|()| put_link(upper, lower, p))
                .map(|()| report.written.push(path.clone())),
            Step::Dir(p) => ensure_dir(upper, lower, p, &mut backup, &mut report.replaced),
            Step::Remove(p) => backup.take(lower, p, &mut report.removed),
            Step::SetAside(p, why) => archive.add(upper, p).map(|()| {
                report.set_aside.push((path.clone(), why.clone()));
            }),
            Step::KeepYours(_, why) => {
                report.kept_yours.push((path.clone(), why.clone()));
                Ok(())
            }
            Step::Unreadable(_, why) => Err(std::io::Error::other(why.clone())),
        };
        if let Err(e) = done {
            report.failed.push((path, e.to_string()));
        }
    }
    match archive.finish() {
        Ok(true) => report.set_aside_archive = Some(to.archive.clone()),
        Ok(false) => {}
        Err(e) => report
            .failed
            .push((to.archive.clone(), format!("the archive: {e}"))),
    }
    if backup.used {
        report.backup_dir = Some(to.backup.clone());
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
                "a part of the path is not a dir ({e}); a link is never followed"
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

/// Drop the access ACLs an entry moved from the layer brings along (what [`KEPT_MODE`]
/// refuses, an ACL could still grant).
fn drop_acls(file: &OwnedFd) {
    for name in ["system.posix_acl_access", "system.posix_acl_default"] {
        let _ = rustix::fs::fremovexattr(file, name);
    }
}

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
    let src = rustix::fs::openat(
        &from_dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&src)?;
    let mode = Mode::from_raw_mode(st.st_mode & KEPT_MODE);
    // Mode and ACLs are set on the open file before it moves: by name in your dir, after the
    // move, they would follow whatever another user with write access there put in its place
    // (a link to a file of yours).
    if same_fs {
        rustix::fs::fchmod(&src, mode)?;
        drop_acls(&src);
        if rustix::fs::renameat(&from_dir, name, &to_dir, name).is_ok() {
            #[cfg(test)]
            tests::after_move(&lower.join(rel));
            return Ok(());
        }
    }
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_COPY_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} GiB to copy across filesystems",
            MAX_COPY_BYTES >> 30
        )));
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
        rustix::fs::fchmod(&to, mode)?;
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
    let tmp = temp_name();
    rustix::fs::symlinkat(target.as_c_str(), &to_dir, &tmp)?;
    own_like(&to_dir, &tmp, &st)?;
    rustix::fs::renameat(&to_dir, &tmp, &to_dir, name).inspect_err(|_| {
        let _ = rustix::fs::unlinkat(&to_dir, &tmp, AtFlags::empty());
    })?;
    Ok(())
}

/// Make sure `rel` is a dir in `lower`: a dir of yours stays as it is (its mode too); any
/// other entry of yours there goes to the backup first.
fn ensure_dir(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    backup: &mut Backup<'_>,
    replaced: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let (from_dir, name) = open_parent(upper, rel)?;
    let (to_dir, _) = open_parent(lower, rel)?;
    let st = rustix::fs::statat(&from_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    match rustix::fs::statat(&to_dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(existing)
            if rustix::fs::FileType::from_raw_mode(existing.st_mode)
                == rustix::fs::FileType::Directory =>
        {
            Ok(())
        }
        found => {
            if found.is_ok() {
                backup.take(lower, rel, replaced)?;
            }
            rustix::fs::mkdirat(&to_dir, name, Mode::from_raw_mode(st.st_mode & KEPT_MODE))?;
            own_like(&to_dir, name, &st)
        }
    }
}

/// Your entries the agent replaced or removed, moved out of your dir rather than unlinked.
struct Backup<'a> {
    dir: &'a Path,
    used: bool,
}

impl Backup<'_> {
    /// Move your entry `rel` (if there is one) to the backup dir, under the same relative
    /// path, and note it in `into`.
    fn take(&mut self, lower: &Path, rel: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let (dir, name) = open_parent(lower, rel)?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let to = self.dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        self.used = true;
        if rustix::fs::renameat(&dir, name, rustix::fs::CWD, &to).is_err() {
            // Another filesystem: copy (links as links), then remove yours.
            copy_tree_at(&dir, name, &to)?;
            remove_tree_or_file_at(&dir, name)?;
        }
        into.push(rel.to_owned());
        Ok(())
    }
}

/// Copy `name` in `dir` (a file, a link or a dir, never followed) to the path `to`.
fn copy_tree_at(dir: &OwnedFd, name: &OsStr, to: &Path) -> std::io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::Directory => {
            std::fs::DirBuilder::new().mode(0o700).create(to)?;
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            for (n, _) in entries(&sub)? {
                copy_tree_at(&sub, &n, &to.join(&n))?;
            }
        }
        rustix::fs::FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
            std::os::unix::fs::symlink(OsStr::from_bytes(target.as_bytes()), to)?;
        }
        rustix::fs::FileType::RegularFile => {
            let src = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(st.st_mode & 0o777)
                .open(to)?;
            std::io::copy(&mut std::fs::File::from(src), &mut out)?;
        }
        _ => {}
    }
    Ok(())
}

/// The entries of an open dir, without `.` and `..`.
fn entries(dir: &OwnedFd) -> std::io::Result<Vec<(std::ffi::OsString, rustix::fs::FileType)>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((OsStr::from_bytes(n).to_owned(), e.file_type()));
        }
    }
    Ok(out)
}

/// Remove `name` in `dir`: a file or link, or a dir with everything in it, never following a
/// link.
fn remove_tree_or_file_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok(());
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (n, _) in entries(&sub)? {
        remove_tree_or_file_at(&sub, &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Files larger than this are not kept in the archive (only their name is): what is kept out
/// of your dir is kept to be read, and a layer's packs of git objects would only fill the
/// disk (the agent's commits come back as branches).
const MAX_ARCHIVED_FILE: u64 = 16 << 20;

/// Append `from` to `tar` as `name`: dirs with everything in them, links as links, big files
/// and special files by name only.
fn append_entry(
    tar: &mut tar::Builder<std::fs::File>,
    from: &Path,
    name: &Path,
    depth: usize,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    let t = meta.file_type();
    if t.is_dir() {
        tar.append_dir(name, from)?;
        if depth < 256 {
            let mut names: Vec<_> = std::fs::read_dir(from)?
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                append_entry(tar, &from.join(&n), &name.join(&n), depth + 1)?;
            }
        }
        Ok(())
    } else if t.is_symlink() || (t.is_file() && meta.len() <= MAX_ARCHIVED_FILE) {
        tar.append_path_with_name(from, name)
    } else {
        let mut marked = name.as_os_str().to_owned();
        marked.push(".bottle-not-kept");
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, Path::new(&marked), std::io::empty())
    }
}

/// The archive of what is kept out of your dir: made on the first entry, a tar (never a dir,
/// where a `.git` would be a repository again).
struct Archive<'a> {
    path: &'a Path,
    tar: Option<tar::Builder<std::fs::File>>,
}

impl<'a> Archive<'a> {
    fn new(path: &'a Path) -> Archive<'a> {
        Archive { path, tar: None }
    }

    /// Add the agent's entry `rel` (from `upper`) with everything in it; links as links.
    fn add(&mut self, upper: &Path, rel: &Path) -> std::io::Result<()> {
        if self.tar.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // A bottle's own logs dir: a retry after a failed merge writes it anew.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(self.path)?;
            let mut b = tar::Builder::new(file);
            b.follow_symlinks(false);
            self.tar = Some(b);
        }
        let tar = self.tar.as_mut().expect("made above");
        append_entry(tar, &upper.join(rel), rel, 0)
    }

    /// Finish the archive; whether there is one.
    fn finish(self) -> std::io::Result<bool> {
        match self.tar {
            Some(b) => b.into_inner().and_then(|f| f.sync_all()).map(|()| true),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::RefCell;
    use std::path::Path;

    /// What a test does the moment a file has moved into your dir.
    type OnMove = Option<Box<dyn Fn(&Path)>>;

    thread_local! {
        /// [`OnMove`]: another user with write access to your dir, racing the merge.
        static AFTER_MOVE: RefCell<OnMove> = RefCell::new(None);
    }

    pub(in crate::plan::workdir) fn after_move(path: &Path) {
        AFTER_MOVE.with(|f| {
            if let Some(f) = f.borrow().as_ref() {
                f(path);
            }
        });
    }

    /// Run `f` the moment each file moves into your dir, on this thread.
    pub(in crate::plan::workdir) fn on_move(f: impl Fn(&Path) + 'static) {
        AFTER_MOVE.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }
}
