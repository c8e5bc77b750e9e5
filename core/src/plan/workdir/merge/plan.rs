//! Deciding what happens to every entry of the agent's layer: pure reads of the layer and of
//! your dir, no writes.

use super::{Guarded, Kept, PlanError, SetAside, Step, is_vcs_name};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// What [`plan`] needs besides the two dirs.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The agent's upper layer.
    pub upper: &'a Path,
    /// Your dir.
    pub lower: &'a Path,
    /// When the run started: an entry of yours with a later change time was changed during it.
    pub started: SystemTime,
    /// Paths your git runs.
    pub guarded: &'a Guarded,
}

impl Inputs<'_> {
    /// Why your entry `rel` must stay as it is rather than be replaced or removed, if it must:
    /// your git runs or reads something at or below it, it is or holds a repository, or you
    /// changed it during the run.
    fn keeps(&self, rel: &Path) -> Option<Kept> {
        let yours = self.lower.join(rel);
        if let Some(key) = self.guarded.touches(rel) {
            Some(Kept::GitRuns(key.to_owned()))
        } else if rel.file_name().is_some_and(is_vcs_name) || holds_repo(&yours, 0) {
            Some(Kept::HoldsVcs)
        } else if changed_since(&yours, self.started) {
            Some(Kept::ChangedDuringRun)
        } else {
            None
        }
    }
}

/// Decide what happens to every entry of the agent's layer. Only an unreadable layer root is
/// an error; an entry that cannot be read becomes [`Step::Unreadable`].
pub fn plan(inputs: &Inputs<'_>) -> Result<Vec<Step>, PlanError> {
    let root = read_names(inputs.upper).map_err(|error| PlanError {
        path: inputs.upper.to_owned(),
        error,
    })?;
    let mut steps = Vec::new();
    walk(inputs, Path::new(""), root, &mut steps);
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

fn walk(inputs: &Inputs<'_>, rel: &Path, names: BTreeSet<OsString>, steps: &mut Vec<Step>) {
    for name in names {
        let p = rel.join(&name);
        let abs = inputs.upper.join(&p);
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) => {
                steps.push(Step::Unreadable(p, e.to_string()));
                continue;
            }
        };
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
        // A dir the agent made, or one of yours it added to, is judged entry by entry; any
        // other entry of yours the agent replaces or removes may have to stay.
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
            (Kind::Link, None) => match std::fs::read_link(&abs) {
                Ok(target) if leads_out(&p, &target) => {
                    steps.push(Step::SetAside(p, SetAside::LinkOut));
                }
                Ok(_) => steps.push(Step::Link(p)),
                Err(e) => steps.push(Step::Unreadable(p, e.to_string())),
            },
            (Kind::Dir { opaque }, None) => {
                let theirs = match read_names(&abs) {
                    Ok(n) => n,
                    Err(e) => {
                        steps.push(Step::Unreadable(p, e.to_string()));
                        continue;
                    }
                };
                if opaque {
                    // The agent emptied the dir and made it anew: what it no longer holds
                    // goes, but for what [`Inputs::keeps`] keeps.
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
                walk(inputs, &p, theirs, steps);
            }
        }
    }
}

/// Whether a link at `rel` (in your dir) to `target` leads out of it, or may: an absolute
/// target, a relative one that climbs above the root, and one that climbs back (`..`) after a
/// name, since that name may itself be a link (`l -> .`, then `x -> l/l/../../.ssh` climbs
/// two levels above where it seems to stay).
fn leads_out(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = rel.components().count().saturating_sub(1) as isize;
    let mut named = false;
    for c in target.components() {
        match c {
            Component::ParentDir if named => return true,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => {
                depth += 1;
                named = true;
            }
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// The names in `dir`, sorted.
fn read_names(dir: &Path) -> std::io::Result<BTreeSet<OsString>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
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

/// Whether the dir `path` is or holds a repository: version-control metadata, or a dir with
/// a git dir's shape (a bare repo, a `--separate-git-dir`), anywhere below it.
fn holds_repo(path: &Path, depth: usize) -> bool {
    let Ok(names) = read_names(path) else {
        return false;
    };
    let has = |n: &str| names.iter().any(|e| e.eq_ignore_ascii_case(n));
    if names.iter().any(|n| is_vcs_name(n))
        || (has("HEAD") && (has("commondir") || (has("objects") && has("refs"))))
    {
        return true;
    }
    depth < 64
        && names.iter().any(|n| {
            let p = path.join(n);
            std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) && holds_repo(&p, depth + 1)
        })
}

/// Keep out whatever the agent wrote in a dir that has (or would have) a git dir's shape:
/// `HEAD` beside `objects/` and `refs/`, or beside `commondir`. git takes such a dir for a
/// repository and reads its config, hooks and sequencer files. A dir the agent made goes
/// whole; in a dir of yours, every entry it wrote there.
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
            shaped.push(dir.clone());
        } else {
            shaped.extend(written.iter().map(|&i| steps[i].path().to_owned()));
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

#[cfg(test)]
mod tests {
    use super::leads_out;
    use std::path::Path;

    #[test]
    fn links_that_climb_out_or_are_absolute_lead_out() {
        for (at, to, out) in [
            ("a", "b", false),
            ("d/a", "../b", false),
            ("d/a", "../../b", true),
            ("a", "../x", true),
            ("a", "/etc/passwd", true),
            ("d/e/a", "../../x/y", false),
            ("d/e/a", "../../x/../y", true),
            ("d/a", "x/../../..", true),
            // Through a link to `.`: lexically inside, really above the root.
            ("x", "l/l/l/../../../.ssh", true),
            ("x", "l/l/l/.ssh", false),
        ] {
            assert_eq!(leads_out(Path::new(at), Path::new(to)), out, "{at} -> {to}");
        }
    }
}
