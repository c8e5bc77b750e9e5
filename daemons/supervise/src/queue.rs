//! The queue: files in the bottle's queue dir, shared with the host.
//!
//! `pending/<id>.json` is a request, written here; `decisions/<id>.json` is the human's
//! answer, written by the host CLI. Every file is written whole (a dot-named temp file,
//! fsync, rename), so neither side ever reads half of one; readers skip dot-files. The files
//! survive a restart of either side and leave an audit trail.

use bottle_contract::supervise::{Decision, Request};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The queue dir.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    counter: AtomicU32,
}

/// Why the queue could not take a request.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Too many open requests.
    #[error(
        "{0} requests are already waiting for the human; wait for an answer (request_status) before asking again"
    )]
    Full(usize),
    /// The dir is not writable.
    #[error("the approval queue cannot be written ({0}); nothing was asked")]
    Io(#[from] std::io::Error),
}

impl Queue {
    /// The queue at `dir` (its `pending/` and `decisions/` are made if missing).
    pub fn open(dir: &Path) -> std::io::Result<Queue> {
        for sub in ["pending", "decisions"] {
            std::fs::create_dir_all(dir.join(sub))?;
            set_mode(&dir.join(sub), 0o1777)?;
        }
        Ok(Queue {
            dir: dir.to_owned(),
            counter: AtomicU32::new(0),
        })
    }

    /// A new request id: time-ordered, short enough to type.
    pub fn new_id(&self) -> String {
        let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let n = self.counter.fetch_add(1, Ordering::SeqCst) % 1296;
        format!("{}{}", base36(millis as u64), base36(n as u64))
    }

    /// Requests without a decision.
    pub fn open_requests(&self) -> Vec<Request> {
        read_all::<Request>(&self.dir.join("pending"))
            .into_iter()
            .filter(|r| self.decision(&r.id).is_none())
            .collect()
    }

    /// Queue `req`, unless `max_open` requests already wait.
    pub fn submit(&self, req: &Request, max_open: usize) -> Result<(), QueueError> {
        let open = self.open_requests().len();
        if open >= max_open {
            return Err(QueueError::Full(open));
        }
        let bytes = serde_json::to_vec_pretty(req).map_err(std::io::Error::other)?;
        write_whole(
            &self.dir.join("pending"),
            &format!("{}.json", req.id),
            &bytes,
        )?;
        Ok(())
    }

    /// The request `id`, if it exists.
    pub fn request(&self, id: &str) -> Option<Request> {
        read_one(&self.dir.join("pending").join(format!("{id}.json")))
    }

    /// The decision on `id`, if the human has made one (a malformed file counts as none).
    pub fn decision(&self, id: &str) -> Option<Decision> {
        read_one(&self.dir.join("decisions").join(format!("{id}.json")))
    }

    /// Wait up to `timeout` for a decision on `id`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<Decision> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(d) = self.decision(id) {
                return Some(d);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether `id` is one this queue could have made (so it is safe in a file name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    if out.len() < 2 {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn read_one<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    names.sort();
    names.iter().filter_map(|p| read_one(p)).collect()
}

/// Write `name` in `dir` whole: a dot-named temp file (0644: the host user reads it),
/// fsync, rename, fsync the dir.
pub fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    set_mode(&tmp, 0o644)?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        // Not ours (the host made it): its owner chose its mode.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}
