//! The secret scan of a push: only the objects new to the gate (`rev-list --objects <new>
//! --not --all`, so a new branch is not the whole history again), read with `cat-file
//! --batch`, scanned with `bottle-dlp` (token formats in plain sight, then every decoded
//! layer and the validated detectors of `Scanner::inspect`). File contents, commit and tag messages and path names
//! are scanned; a file over the size limit is refused, never skipped.
//!
//! A finding names the place (file and line, or commit and line) and the rule, never the
//! matched text: a path that itself holds a secret is shown with the secret masked.

use bottle_contract::gate::ScanSettings;
use bottle_dlp::Scanner;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A secret found, safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where: `src/config.py:12`, `commit 1a2b3c4 message, line 3`, …
    pub place: String,
    /// The rule (`aws-access-key-id`).
    pub rule: String,
}

/// What a scan saw.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Objects read.
    pub objects: usize,
    /// Bytes scanned.
    pub bytes: u64,
    /// Every secret found (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Located>,
}

/// Findings reported per push; the rest are counted, not listed.
pub const MAX_FINDINGS: usize = 20;

/// Why a push could not be scanned (each refuses it).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// One file over the limit.
    #[error(
        "{0} is {1} bytes, over git-gate's limit of {2} for one file; keep large files out of the repo (or raise scan.max_blob_bytes)"
    )]
    BlobTooBig(String, u64, u64),
    /// The whole push over the limit.
    #[error("this push carries more than {0} bytes of new objects; push in smaller steps")]
    PushTooBig(u64),
    /// The deadline passed.
    #[error("the secret scan took longer than {0} ms; push in smaller steps")]
    Timeout(u64),
    /// git failed.
    #[error("the secret scan could not read the push: {0}")]
    Git(String),
}

/// One object to read: its id and, for blobs and trees, the path rev-list found it at.
struct Wanted {
    id: String,
    path: Option<String>,
}

/// Scan the objects `tips` bring that the repo's refs do not already reach. `git()` gives a
/// `git` command in the right repo and environment (in the hook: the quarantine's).
pub fn scan_push(
    git: &dyn Fn() -> Command,
    tips: &[String],
    scanner: &Scanner,
    limits: &ScanSettings,
) -> Result<ScanReport, ScanError> {
    let mut report = ScanReport::default();
    if tips.is_empty() {
        return Ok(report);
    }
    let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
    let mut list = git();
    list.args(["rev-list", "--objects"])
        .args(tips)
        .args(["--not", "--all"]);
    let listed = crate::gitcmd::run(
        list,
        "git rev-list",
        Duration::from_millis(limits.timeout_ms),
    )
    .map_err(|e| match e {
        crate::gitcmd::RunError::Timeout(..) => ScanError::Timeout(limits.timeout_ms),
        e => ScanError::Git(e.to_string()),
    })?;
    if !listed.status.success() {
        return Err(ScanError::Git(listed.reason()));
    }
    let wanted: Vec<Wanted> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| {
            let (id, path) = match l.split_once(' ') {
                Some((id, path)) => (id, Some(path.to_owned())),
                None => (l, None),
            };
            (!id.is_empty()).then(|| Wanted {
                id: id.to_owned(),
                path,
            })
        })
        .collect();
    for w in &wanted {
        if let Some(path) = &w.path {
            let found = scanner.scan_all(path.as_bytes());
            if !found.is_empty() {
                let shown = mask(path, &found);
                for f in found {
                    add(&mut report, format!("the name of {shown}"), f.rule);
                }
            }
        }
    }
    read_objects(git, &wanted, scanner, limits, deadline, &mut report)?;
    Ok(report)
}

fn add(report: &mut ScanReport, place: String, rule: String) {
    if report.findings.len() < MAX_FINDINGS {
        report.findings.push(Located { place, rule });
    }
}

/// `path` with every finding's bytes replaced by `***`.
fn mask(path: &str, found: &[bottle_dlp::Finding]) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    for f in found {
        out.extend_from_slice(&bytes[at..f.start.max(at)]);
        out.extend_from_slice(b"***");
        at = f.end.max(at);
    }
    out.extend_from_slice(&bytes[at.min(bytes.len())..]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Read every wanted object with one `cat-file --batch` and scan it.
fn read_objects(
    git: &dyn Fn() -> Command,
    wanted: &[Wanted],
    scanner: &Scanner,
    limits: &ScanSettings,
    deadline: Instant,
    report: &mut ScanReport,
) -> Result<(), ScanError> {
    use std::os::unix::process::CommandExt;
    let mut cmd = git();
    cmd.args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ScanError::Git(format!("cannot run git cat-file: {e}")))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped");
    let ids: Vec<String> = wanted.iter().map(|w| w.id.clone()).collect();
    let writer = std::thread::spawn(move || {
        for id in ids {
            if writeln!(stdin, "{id}").is_err() {
                break;
            }
        }
    });
    // The deadline: kill the reader's source; the loop below then sees the pipe end.
    let (stop, stopped) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let left = deadline.saturating_duration_since(Instant::now());
        if stopped.recv_timeout(left).is_err() {
            crate::gitcmd::kill_group(pid);
        }
    });
    let mut out = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped"));
    let result = (|| {
        let mut header = String::new();
        let mut content = Vec::new();
        for w in wanted {
            header.clear();
            if out
                .read_line(&mut header)
                .map_err(|e| ScanError::Git(e.to_string()))?
                == 0
            {
                return Err(if Instant::now() >= deadline {
                    ScanError::Timeout(limits.timeout_ms)
                } else {
                    ScanError::Git("git cat-file ended early".into())
                });
            }
            let mut f = header.split_whitespace();
            let (_, kind, size) = (f.next(), f.next().unwrap_or(""), f.next());
            let size: u64 = size
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ScanError::Git(format!("object {} is missing", w.id)))?;
            let shown = w.path.clone().map(|p| {
                let found = scanner.scan_all(p.as_bytes());
                if found.is_empty() {
                    p
                } else {
                    mask(&p, &found)
                }
            });
            if kind == "blob" && size > limits.max_blob_bytes {
                let what = shown.unwrap_or_else(|| format!("blob {}", short(&w.id)));
                return Err(ScanError::BlobTooBig(what, size, limits.max_blob_bytes));
            }
            report.bytes += size;
            if report.bytes > limits.max_push_bytes {
                return Err(ScanError::PushTooBig(limits.max_push_bytes));
            }
            content.clear();
            (&mut out)
                .take(size + 1)
                .read_to_end(&mut content)
                .map_err(|e| ScanError::Git(e.to_string()))?;
            if content.len() as u64 != size + 1 {
                return Err(if Instant::now() >= deadline {
                    ScanError::Timeout(limits.timeout_ms)
                } else {
                    ScanError::Git("git cat-file ended early".into())
                });
            }
            content.pop();
            report.objects += 1;
            if kind == "tree" {
                // rev-list names each object once, at its first path, and not at all when
                // the gate has it already (a copy of a file under a new name): every name in
                // a new tree is read here.
                let names = tree_names(&content, w.id.len() / 2);
                for f in scanner.scan_all(&names) {
                    add(report, format!("a name in tree {}", short(&w.id)), f.rule);
                }
                continue;
            }
            let found = scanner.scan_all(&content);
            // Nothing in plain sight: the layers an agent could wrap one in (base64, hex,
            // escapes, …) and the validated detectors get their turn; the first finding is
            // enough to refuse.
            let found = if found.is_empty() {
                scanner.inspect(&content).into_iter().collect()
            } else {
                found
            };
            for f in found {
                let place = place(kind, &w.id, shown.as_deref(), &content, f.start);
                add(report, place, f.rule);
            }
        }
        Ok(())
    })();
    let _ = stop.send(());
    let _ = watchdog.join();
    if result.is_err() {
        crate::gitcmd::kill_group(pid);
    }
    drop(out);
    let _ = writer.join();
    let _ = child.wait();
    result
}

/// The entry names of a tree object (`<mode> <name>\0<id>` each, ids of `id_len` bytes), one a
/// line.
fn tree_names(tree: &[u8], id_len: usize) -> Vec<u8> {
    let mut names = Vec::new();
    let mut rest = tree;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let after = &rest[space + 1..];
        let Some(nul) = after.iter().position(|&b| b == 0) else {
            break;
        };
        names.extend_from_slice(&after[..nul]);
        names.push(b'\n');
        rest = after.get(nul + 1 + id_len..).unwrap_or_default();
    }
    names
}

/// Where byte `at` of an object is, for a person.
fn place(kind: &str, id: &str, path: Option<&str>, content: &[u8], at: usize) -> String {
    let line = |from: usize| content[from..at].iter().filter(|&&b| b == b'\n').count() + 1;
    match (kind, path) {
        ("blob", Some(path)) => format!("{path}:{}", line(0)),
        ("commit" | "tag", _) => {
            let body = content
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| i + 2)
                .unwrap_or(0);
            if at >= body {
                format!("{kind} {} message, line {}", short(id), line(body))
            } else {
                format!("{kind} {} header, line {}", short(id), line(0))
            }
        }
        _ => format!("{kind} {}, line {}", short(id), line(0)),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_name_the_line() {
        let text = b"a\nb\nkey here\n";
        assert_eq!(
            place("blob", "abc", Some("src/x.py"), text, 4),
            "src/x.py:3"
        );
        let commit = b"tree 1\nauthor a\n\nsubject\n\nbody secret\n";
        let at = commit.len() - 7;
        assert_eq!(
            place("commit", "0123456789abcdef", None, commit, at),
            "commit 0123456789 message, line 3"
        );
    }

    #[test]
    fn every_name_of_a_tree_is_read() {
        let mut tree = Vec::new();
        for (mode, name) in [("100644", "README.md"), ("40000", "src"), ("160000", "lib")] {
            tree.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            tree.extend_from_slice(&[0xab; 20]);
        }
        assert_eq!(tree_names(&tree, 20), b"README.md\nsrc\nlib\n");
        assert_eq!(tree_names(b"100644 cut", 20), b"");
    }

    #[test]
    fn masks_cover_each_finding() {
        let found = [bottle_dlp::Finding {
            rule: "r".into(),
            start: 4,
            end: 8,
        }];
        assert_eq!(mask("dir/SECRET/x", &found), "dir/***ET/x");
    }
}
