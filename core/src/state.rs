//! A bottle's state dir: `<state root>/<slug>/`, written whole or not at all.
//!
//! Everything is first written into a hidden sibling dir, then renamed into place, so a crash
//! or a bad file never leaves a half-written state dir behind. Dirs are 0700; files get exactly
//! the mode their plan gives.

use crate::model::BottlePlan;
use bottle_contract::layout::{self, DIR_MODE, LOG_FILE, METADATA_FILE, PLAN_FILE};
use serde::Serialize;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `metadata.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Metadata {
    /// Agent name.
    pub agent: String,
    /// The manifest file.
    pub manifest: String,
    /// The host dir the agent works on.
    pub cwd: String,
    /// Whether cwd is copied rather than mounted.
    pub copy_cwd: bool,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Backend plugin name.
    pub backend: String,
    /// The backend's name for this bottle (compose project / machine name).
    pub compose_project: String,
    /// Plugins that took part.
    pub plugins: Vec<crate::model::PluginRecord>,
    /// True for `--dry-run`.
    pub dry_run: bool,
}

pub use bottle_contract::layout::{CA_DIR, HOST_FILES, LOCK_FILE};

/// Why the state dir could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Writing failed.
    #[error("cannot write state dir {}: {error}; check the permissions and free space of the state root", path.display())]
    Io {
        /// What was being written.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A bottle of this slug is running: its `bottle run` holds the state dir.
    #[error("bottle {slug} is running ({} is in use by its `bottle run`): pick another --slug, or stop it first (`bottle stop {slug}`)", dest.display())]
    Running {
        /// The slug.
        slug: String,
        /// The state dir.
        dest: PathBuf,
    },
    /// A bottle of this slug has a state dir no run holds: kept (`--keep-state`, a failed
    /// run), or orphaned (its `bottle run` was killed).
    #[error("bottle {slug} has a state dir ({}) that no `bottle run` holds: it was kept, or its run was killed and left it. `bottle stop {slug}` removes whatever it left running and keeps its logs and ledger; `bottle cleanup` does so for every such bottle; or pick another --slug", dest.display())]
    Exists {
        /// The slug.
        slug: String,
        /// The state dir.
        dest: PathBuf,
    },
}

/// A fresh slug: `<agent>-<5 base36 chars>`.
pub fn mint_slug(agent: &str) -> String {
    // RandomState is seeded from the OS's randomness: enough for a name, no extra crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let mut n = h.finish();
    let suffix: String = (0..5)
        .map(|_| {
            let c = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect();
    format!("{agent}-{suffix}")
}

/// `t` as RFC 3339 UTC with seconds (`2026-11-27T10:30:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |error| StateError::Io {
        path: path.to_owned(),
        error,
    }
}

fn mkdir(path: &Path) -> Result<(), StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io(path))
}

fn write_file(dir: &Path, rel: &str, contents: &[u8], mode: u32) -> Result<(), StateError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(io(&path))?;
    // The umask may have narrowed the mode; the plan's mode is the contract.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(&path))?;
    f.write_all(contents).map_err(io(&path))
}

/// A daemon's writable state mount is a bind mount its own user must write (its read-only
/// ones are installed as copies by the bundle's init). The dir is the invoker's, who cannot
/// give it away, so it is opened to all with the sticky bit: still closed to the host's other
/// users by the 0700 state dir, and no daemon can remove what another wrote there. The dirs a
/// plugin staged in it are opened the same way: they stay the invoker's, so the host can
/// remove what the daemon wrote in them when it retires the state dir (a dir the daemon made
/// itself would be its user's, and what is in it beyond the host's reach).
fn open_writable_mounts(dir: &Path, plan: &BottlePlan) -> Result<(), StateError> {
    let writable = plan.stack.bundle.iter().flat_map(|o| &o.daemon.mounts);
    for m in writable.filter(|m| !m.read_only) {
        if let crate::model::MountSource::State(rel) = &m.source {
            let path = dir.join(rel);
            if !path.exists() {
                mkdir(&path)?;
            }
            open_to_daemons(&path)?;
        }
    }
    Ok(())
}

/// `path` opened to every daemon (1777 for a dir, 0666 for a file), and each dir in it.
fn open_to_daemons(path: &Path) -> Result<(), StateError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let mode = if meta.is_dir() { 0o1777 } else { 0o666 };
    if meta.is_dir() || meta.is_file() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            let entry = entry.map_err(io(path))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_to_daemons(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Write `plan` and `metadata` to `<root>/<slug>/`, atomically. Returns the dir.
/// A held [`LOCK_FILE`]; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code, reason = "held for its lock")] std::fs::File);

/// Whether another process holds `dir`'s lock (a run in progress).
pub fn in_use(dir: &Path) -> bool {
    use rustix::fs::{FlockOperation, flock};
    let Ok(f) = std::fs::File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    flock(&f, FlockOperation::NonBlockingLockShared).is_err()
}

/// Whether `dir` is a bottle state dir: its `metadata.json` reads as bottle's.
pub fn is_state_dir(dir: &Path) -> bool {
    std::fs::read(dir.join(METADATA_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Metadata>(&b).ok())
        .is_some()
}

/// Whether `s` is a slug bottle could have made (and so safe as a path component).
pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Write the state dir of `slug` under `root`, atomically, with the host's `records` (name,
/// bytes; 0600) beside the plan; the returned lock marks it in use for as long as it is held.
pub fn write(
    root: &Path,
    slug: &str,
    plan: &BottlePlan,
    metadata: &Metadata,
    records: &[(&str, Vec<u8>)],
) -> Result<(PathBuf, StateLock), StateError> {
    mkdir(root)?;
    let dest = root.join(slug);
    if dest.exists() {
        let slug = slug.to_owned();
        return Err(if in_use(&dest) {
            StateError::Running { slug, dest }
        } else {
            StateError::Exists { slug, dest }
        });
    }
    let tmp = root.join(format!(".{slug}.partial-{}", std::process::id()));
    // A leftover of a crashed run that had this pid: nothing in it is worth keeping.
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let result = (|| {
        std::fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&tmp)
            .map_err(io(&tmp))?;
        for s in &plan.sidecars {
            for f in &s.plan.files {
                write_file(&tmp, &f.path, f.contents.as_bytes(), f.mode)?;
            }
        }
        for d in &plan.deployment.documents {
            write_file(&tmp, &d.path, d.contents.as_bytes(), d.mode)?;
        }
        if !plan.stack.bundle.is_empty() {
            let list = bottle_contract::daemons::daemon_list(&plan.stack);
            write_file(
                &tmp,
                layout::DAEMONS_STATE_PATH,
                pretty_json(&list).as_bytes(),
                layout::PUBLIC_MODE,
            )?;
        }
        open_writable_mounts(&tmp, plan)?;
        write_file(
            &tmp,
            METADATA_FILE,
            pretty_json(metadata).as_bytes(),
            layout::PRIVATE_MODE,
        )?;
        write_file(
            &tmp,
            PLAN_FILE,
            pretty_json(plan).as_bytes(),
            layout::PRIVATE_MODE,
        )?;
        for (name, bytes) in records {
            write_file(&tmp, name, bytes, layout::PRIVATE_MODE)?;
        }
        // Locked before the dir gets its name: cleanup never sees it unlocked while in use.
        let lock_path = tmp.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| io(&lock_path)(e.into()))?;
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        Ok(StateLock(lock))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|lock| (dest, lock))
}

/// Where a retired bottle's `compose.log` is kept: `<state root>/logs/<slug>.log`.
pub fn archived_log(state_dir: &Path) -> PathBuf {
    let slug = state_dir.file_name().unwrap_or_default();
    let root = state_dir.parent().unwrap_or(Path::new("."));
    root.join("logs")
        .join(format!("{}.log", slug.to_string_lossy()))
}

/// Move a state dir's `compose.log` to [`archived_log`] and its audit ledger beside it, then
/// remove the dir (it holds the bottle's CA keys). A dir without a log is removed all the same.
pub fn retire(state_dir: &Path) -> Result<PathBuf, StateError> {
    let dest = archived_log(state_dir);
    let log = state_dir.join(LOG_FILE);
    let dir = dest.parent().unwrap_or(Path::new("."));
    if log.is_file() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::rename(&log, &dest).map_err(io(&dest))?;
    }
    // The audit ledger is kept beside the logs.
    let ledger = state_dir.join(crate::audit::LEDGER_FILE);
    if ledger.is_file() {
        let kept = dir.join(format!(
            "{}.{}",
            state_dir.file_name().unwrap_or_default().to_string_lossy(),
            crate::audit::LEDGER_FILE
        ));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::rename(&ledger, &kept).map_err(io(&kept))?;
    }
    std::fs::remove_dir_all(state_dir).map_err(io(state_dir))?;
    Ok(dest)
}

/// Append `line` and a newline to `path` (made 0600 if missing; a link there is refused),
/// synced: the host's JSON-lines records (live applies, decisions).
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_all()
}

/// The records of a JSON-lines file [`append_line`] wrote, oldest first; none when it is
/// missing, and a line that does not parse is skipped (the ledger says what it could read).
pub fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Pretty JSON with a final newline.
pub fn pretty_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("plan types serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slugs_bottle_makes_are_valid_paths() {
        for ok in ["implementer-a1b2c", "x", "e2e-lookalike-12345"] {
            assert!(valid_slug(ok), "{ok}");
        }
        for bad in [
            "",
            "../../escape",
            "a/b",
            ".",
            "..",
            "-x",
            "A-b",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(!valid_slug(bad), "{bad:?}");
        }
        assert!(!valid_slug(&mint_slug("implementer").replace('-', "/")));
        assert!(valid_slug(&mint_slug("implementer")));
    }

    #[test]
    fn a_held_lock_marks_the_dir_in_use_and_a_dir_needs_metadata() {
        let d = tempfile::tempdir().unwrap();
        assert!(!in_use(d.path()), "no lock file: not in use");
        assert!(!is_state_dir(d.path()));
        std::fs::write(d.path().join("metadata.json"), "{\"agent\": 1}").unwrap();
        assert!(!is_state_dir(d.path()), "not bottle's metadata");
        let lock = std::fs::File::create(d.path().join(LOCK_FILE)).unwrap();
        assert!(!in_use(d.path()));
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        assert!(in_use(d.path()));
        drop(lock);
        assert!(!in_use(d.path()));
    }

    #[test]
    fn slugs_are_agent_dash_five_base36() {
        let s = mint_slug("implementer");
        let (agent, suffix) = s.rsplit_once('-').unwrap();
        assert_eq!(agent, "implementer");
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(mint_slug("a"), mint_slug("a"));
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(1_795_775_400)),
            "2026-11-27T10:30:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
