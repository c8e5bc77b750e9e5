//! The agent's layer over your working dir (`cwd: mount` on Docker).
//!
//! The agent never writes into your dir while it runs. Docker mounts an overlay at the
//! agent's workdir: your dir is its lower layer (read only, seen live), and an upper layer in
//! the bottle's state dir (`<state>/workdir/upper`) takes every write, delete and rename. So
//! nothing the agent does can be picked up by your own tools during the run: no `.git` it
//! renames or plants, no nested repo, no hook, whatever git or your shell prompt does in that
//! dir. At teardown [`super::merge`] brings the agent's files back into your dir, minus what
//! your tools would run, and [`super::commits`] brings its commits back as branches.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use bottle_contract::layout::WORKDIR_LAYER_DIR as DIR;

/// The layer's record in [`DIR`]: which dir it lies over and since when.
const RECORD: &str = "layer.json";

/// Why the layer could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A dir or the record could not be written or read.
    #[error(
        "the agent's layer over your working dir: {path}: {error}; check the state dir's permissions and free space"
    )]
    Io {
        /// What was being made or read.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The working dir's path cannot be given to the overlay.
    #[error(
        "the working dir {0} has a `,`, `:`, `\\` or a control character in its path, which an overlay mount cannot take; run from a dir without them, or set `cwd: copy` (the agent gets a copy) or `cwd: none`"
    )]
    UnmountablePath(PathBuf),
    /// The agent's user could not write the working dir.
    #[error(
        "the working dir {} is owned by uid {owner} (mode {mode:o}) and the agent runs as {agent}, which cannot write it; {ways_out}",
        dir.display()
    )]
    NotWritable {
        /// The working dir.
        dir: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// The agent's user as Docker gets it.
        agent: String,
        /// What the user can do, naming the manifest.
        ways_out: String,
    },
    /// The record is not bottle's.
    #[error(
        "{0}: not a layer record bottle wrote; remove the bottle's state dir (`bottle cleanup`)"
    )]
    Record(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |error| LayerError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What [`RECORD`] holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    lower: PathBuf,
    started_ns: u128,
}

/// The agent's layer of one bottle: where it lies and over what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `<state>/workdir`.
    pub root: PathBuf,
    /// Your dir, the overlay's lower layer.
    pub lower: PathBuf,
    /// When the layer was made: a file of yours changed later was changed during the run.
    pub started: SystemTime,
}

impl Layer {
    /// The upper layer: everything the agent wrote.
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// The overlay's work dir (same filesystem as the upper layer; the kernel's scratch).
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Make the layer of the bottle in `state_dir` over `lower`: the upper layer's root takes
    /// your dir's mode and owner (an overlay's root has its upper layer's), so the agent sees
    /// your dir as it is.
    pub fn create(state_dir: &Path, lower: &Path) -> Result<Layer, LayerError> {
        check_mountable(lower)?;
        let layer = Layer {
            root: state_dir.join(DIR),
            lower: lower.to_owned(),
            started: SystemTime::now(),
        };
        let meta = std::fs::metadata(lower).map_err(io(lower))?;
        let mut dirs = std::fs::DirBuilder::new();
        dirs.mode(0o700);
        dirs.create(&layer.root).map_err(io(&layer.root))?;
        let upper = layer.upper();
        dirs.create(&upper).map_err(io(&upper))?;
        std::fs::set_permissions(
            &upper,
            std::fs::Permissions::from_mode(meta.mode() & 0o7777),
        )
        .map_err(io(&upper))?;
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid()))
                .map_err(io(&upper))?;
        }
        let work = layer.work();
        dirs.create(&work).map_err(io(&work))?;
        let record = Record {
            lower: layer.lower.clone(),
            started_ns: layer
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        };
        let path = layer.root.join(RECORD);
        let text = serde_json::to_vec(&record).map_err(|e| LayerError::Io {
            path: path.clone(),
            error: e.into(),
        })?;
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(layer)
    }

    /// The layer of the bottle in `state_dir`, if it has one.
    pub fn load(state_dir: &Path) -> Result<Option<Layer>, LayerError> {
        let root = state_dir.join(DIR);
        let path = root.join(RECORD);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|_| LayerError::Record(path.clone()))?;
        let nanos = u64::try_from(record.started_ns).map_err(|_| LayerError::Record(path))?;
        Ok(Some(Layer {
            root,
            lower: record.lower,
            started: UNIX_EPOCH + Duration::from_nanos(nanos),
        }))
    }

    /// The `local` volume driver's options that mount this layer (`type`, `device`, `o`).
    /// `userxattr` keeps the overlay's markers (an opaque dir) in `user.` attributes, which
    /// the merge, running as you, can read.
    pub fn mount_options(&self) -> Result<HashMap<String, String>, LayerError> {
        for p in [&self.lower, &self.root] {
            check_mountable(p)?;
        }
        Ok(HashMap::from([
            ("type".to_owned(), "overlay".to_owned()),
            ("device".to_owned(), "overlay".to_owned()),
            (
                "o".to_owned(),
                format!(
                    "lowerdir={},upperdir={},workdir={},userxattr",
                    self.lower.display(),
                    self.upper().display(),
                    self.work().display()
                ),
            ),
        ]))
    }
}

/// Refuses, before anything starts, a working dir the agent's `user` (`uid:gid` as Docker gets
/// it) could not write: it would otherwise meet a read-only dir at its first write, with no word
/// from bottle (as when bottle runs as root over a root-owned dir and the agent as 1000).
///
/// The Docker backend hands it numbers only: a user named by name is resolved in the image's
/// own files first. A name still let through here is one no backend resolved. Supplementary
/// groups are not given to the agent; only the primary group counts.
pub fn check_writable(dir: &Path, user: &str, manifest: &Path) -> Result<(), LayerError> {
    let Some((uid, gid)) = crate::run::confine::Confinement::numeric_ids(user) else {
        return Ok(());
    };
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let mode = meta.mode() & 0o7777;
    let writable = if uid == meta.uid() {
        mode & 0o300 == 0o300
    } else if gid == meta.gid() {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    };
    if writable {
        return Ok(());
    }
    let m = manifest.display();
    // Root's dir is never handed to a root agent: that needs `--grant agent=root`.
    let ways_out = if meta.uid() == 0 {
        format!(
            "set `cwd: copy` in {m} (the agent gets a copy it owns), set `user:` in {m} to a user who can write it, or give the dir to the agent's uid (`chown -R {uid}:{gid} {}`: on this host that uid is whichever account has it)",
            dir.display()
        )
    } else {
        format!(
            "set `user: \"{}:{}\"` (the dir's owner) in {m}, set `cwd: copy` (the agent gets a copy it owns), or run bottle as the dir's owner",
            meta.uid(),
            meta.gid()
        )
    };
    Err(LayerError::NotWritable {
        dir: dir.to_owned(),
        owner: meta.uid(),
        mode,
        agent: format!("uid {uid} (gid {gid})"),
        ways_out,
    })
}

fn check_mountable(p: &Path) -> Result<(), LayerError> {
    let s = p.to_string_lossy();
    if !p.is_absolute()
        || s.contains([',', ':', '\\', '\u{fffd}'])
        || s.chars().any(char::is_control)
    {
        return Err(LayerError::UnmountablePath(p.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_the_agent_cannot_write_is_named_with_its_owner_and_the_ways_out() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let meta = std::fs::metadata(dir).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        let m = Path::new("agents/a.yaml");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_writable(dir, &format!("{uid}:{gid}"), m).is_ok());
        assert!(
            check_writable(dir, "node", m).is_ok(),
            "a name is not judged"
        );
        let e = check_writable(dir, &format!("{}:{}", uid + 1, gid + 1), m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("owned by uid {uid} (mode 755)"))
                && e.contains(&format!(
                    "the agent runs as uid {} (gid {})",
                    uid + 1,
                    gid + 1
                ))
                && e.contains("`cwd: copy`")
                && if uid == 0 {
                    e.contains("`chown -R 1:1 ") && e.contains("set `user:` in agents/a.yaml")
                } else {
                    e.contains(&format!(
                        "set `user: \"{uid}:{gid}\"` (the dir's owner) in agents/a.yaml"
                    )) && e.contains("run bottle as the dir's owner")
                },
            "{e}"
        );
        // The group's write bit lets the group in; the others' bit everyone.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check_writable(dir, &format!("{}:{gid}", uid + 1), m).is_ok());
        assert!(check_writable(dir, &format!("{}:{}", uid + 1, gid + 1), m).is_err());
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_writable(dir, &format!("{}:{}", uid + 1, gid + 1), m).is_ok());
        // The owner without its own write bit cannot write either.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        assert!(check_writable(dir, &format!("{uid}:{gid}"), m).is_err());
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_layer_records_what_it_lies_over_and_takes_the_dirs_mode() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("project");
        std::fs::create_dir(&lower).unwrap();
        std::fs::set_permissions(&lower, std::fs::Permissions::from_mode(0o751)).unwrap();
        let state = t.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let layer = Layer::create(&state, &lower).unwrap();
        assert_eq!(
            std::fs::metadata(layer.upper()).unwrap().mode() & 0o7777,
            0o751
        );
        let loaded = Layer::load(&state).unwrap().unwrap();
        assert_eq!(loaded.lower, lower);
        let drift = loaded
            .started
            .duration_since(layer.started)
            .unwrap_or_else(|e| e.duration());
        assert!(drift < Duration::from_micros(1), "{drift:?}");
        let o = &layer.mount_options().unwrap()["o"];
        assert!(
            o.starts_with(&format!("lowerdir={}", lower.display())),
            "{o}"
        );
        assert!(o.ends_with(",userxattr"), "{o}");
        assert!(Layer::load(t.path()).unwrap().is_none());
    }

    #[test]
    fn paths_an_overlay_cannot_take_are_refused_with_the_ways_out() {
        for bad in ["/a,b", "/a:b", "/a\\b", "/a\nb", "relative"] {
            let err = check_mountable(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains("cwd: copy"), "{bad:?}: {err}");
        }
        check_mountable(Path::new("/home/you/code/app-1.0 (copy)")).unwrap();
    }
}
