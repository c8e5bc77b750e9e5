//! The host's side of supervise: the requests agents made, and the human's answers.
//!
//! Each bottle's queue is `<state root>/<slug>/supervise/queue/` (mounted into the bundle):
//! `pending/<id>.json` from `bottle-supervise`, `decisions/<id>.json` from here. A decision is
//! written whole (temp file, fsync, rename), once; the daemon picks it up within 100 ms.

use bottle_contract::supervise::{Decision, Request, Verdict};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A request and the bottle it came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Asked {
    /// The bottle's slug.
    pub slug: String,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
    /// What approving it would change, in words.
    pub effect: String,
    /// The decision, once made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// Why an answer could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No bottle has a request with that id.
    #[error("no request `{0}` in any bottle under {1}; `bottle approvals` lists the open ones")]
    NotFound(String, PathBuf),
    /// It was answered already.
    #[error(
        "request `{0}` was already {1}; a decision is final (ask the agent to make a new request)"
    )]
    Decided(String, &'static str),
    /// The queue could not be written.
    #[error("cannot write the decision in {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// The queue dir of `slug` under `root`.
pub fn queue_dir(root: &Path, slug: &str) -> PathBuf {
    root.join(slug).join("supervise").join("queue")
}

/// Every request under `root` (of `slug` only, when given), oldest first, with its decision.
/// A malformed file is skipped: the daemon wrote it whole, so it is not one of its.
pub fn list(root: &Path, slug: Option<&str>) -> Vec<Asked> {
    let mut slugs: Vec<String> = match slug {
        Some(s) => vec![s.to_owned()],
        None => std::fs::read_dir(root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
    };
    slugs.sort();
    let mut out = Vec::new();
    for slug in slugs {
        let queue = queue_dir(root, &slug);
        let Ok(entries) = std::fs::read_dir(queue.join("pending")) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        for f in files {
            let Some(mut request) = read::<Request>(&f) else {
                continue;
            };
            // Written inside the bundle: shown on the host's terminal only without controls.
            for field in [&mut request.host, &mut request.reason, &mut request.id] {
                *field = field.chars().filter(|c| !c.is_control()).collect();
            }
            let decision =
                read::<Decision>(&queue.join("decisions").join(format!("{}.json", request.id)));
            out.push(Asked {
                slug: slug.clone(),
                effect: request.effect(),
                request,
                decision,
            });
        }
    }
    out
}

/// The request `id`, wherever it is.
pub fn find(root: &Path, id: &str) -> Result<Asked, ApprovalError> {
    list(root, None)
        .into_iter()
        .find(|a| a.request.id == id)
        .ok_or_else(|| ApprovalError::NotFound(id.to_owned(), root.to_owned()))
}

/// Refuse request `id`, with a note the agent sees.
pub fn reject(root: &Path, id: &str, note: &str, now: &str) -> Result<Asked, ApprovalError> {
    let mut asked = find(root, id)?;
    if let Some(d) = &asked.decision {
        return Err(ApprovalError::Decided(
            id.to_owned(),
            match d.decision {
                Verdict::Approved => "approved",
                Verdict::Rejected => "rejected",
            },
        ));
    }
    let decision = Decision {
        id: id.to_owned(),
        decision: Verdict::Rejected,
        note: note.chars().filter(|c| !c.is_control()).take(500).collect(),
        applied: false,
        apply_error: None,
        decided: now.to_owned(),
    };
    let dir = queue_dir(root, &asked.slug).join("decisions");
    let bytes = serde_json::to_vec_pretty(&decision)
        .map_err(|e| ApprovalError::Write(dir.clone(), e.into()))?;
    write_whole(&dir, &format!("{id}.json"), &bytes)
        .map_err(|e| ApprovalError::Write(dir.clone(), e))?;
    asked.decision = Some(decision);
    Ok(asked)
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `name` in `dir`, whole: a dot-named temp file, fsync, rename, fsync the dir. 0644, so the
/// daemon (another uid) reads it.
fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    let target = dir.join(name);
    if target.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a decision was written meanwhile",
        ));
    }
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::supervise::RequestKind;

    fn queued(root: &Path, slug: &str, id: &str) {
        let q = queue_dir(root, slug);
        std::fs::create_dir_all(q.join("pending")).unwrap();
        std::fs::create_dir_all(q.join("decisions")).unwrap();
        let r = Request {
            id: id.into(),
            kind: RequestKind::HostAccess,
            host: "pypi.org".into(),
            path_prefix: None,
            reason: "pip".into(),
            failed_url: None,
            created: "t".into(),
        };
        std::fs::write(
            q.join("pending").join(format!("{id}.json")),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn requests_are_listed_rejected_once_and_unknown_ids_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        queued(root, "a-1", "id1");
        queued(root, "b-2", "id2");
        std::fs::write(queue_dir(root, "b-2").join("pending/bad.json"), "{").unwrap();
        // A pending file the bundle's side wrote with terminal escapes in it.
        let forged = queue_dir(root, "b-2").join("pending/id3.json");
        let text =
            std::fs::read_to_string(queue_dir(root, "b-2").join("pending/id2.json")).unwrap();
        std::fs::write(
            &forged,
            text.replace("\"id2\"", "\"id3\"")
                .replace("\"pip\"", "\"pip\\u001b[2J\""),
        )
        .unwrap();
        let shown = list(root, Some("b-2"));
        assert_eq!(shown[1].request.reason, "pip[2J", "{shown:?}");
        std::fs::remove_file(forged).unwrap();
        let all = list(root, None);
        assert_eq!(
            all.iter()
                .map(|a| a.request.id.as_str())
                .collect::<Vec<_>>(),
            ["id1", "id2"]
        );
        assert_eq!(list(root, Some("b-2")).len(), 1);
        let done = reject(root, "id2", "no\u{1b}[2J thanks", "now").unwrap();
        assert_eq!(done.decision.unwrap().note, "no[2J thanks");
        let e = reject(root, "id2", "", "now").unwrap_err().to_string();
        assert!(e.contains("already rejected"), "{e}");
        let e = reject(root, "nope", "", "now").unwrap_err().to_string();
        assert!(
            e.contains("no request `nope`") && e.contains("bottle approvals"),
            "{e}"
        );
    }
}
