//! The agent's commits, brought back into your repo as branches `bottle/<slug>/<branch>`.
//!
//! The agent's git wrote into its layer (`upper/.git`), which never reaches your repo as it
//! is: its config, hooks and refs are the agent's to forge. Only its objects and branch tips
//! come back, checked first:
//!
//! - packs go through `git index-pack --strict` (the path a pack from a remote takes);
//! - loose objects are inflated (bounded) and hashed here, and must be what their name says;
//! - branch names and object ids are parsed and checked;
//!
//! and they go into a scratch repo bottle makes, whose only other objects are yours (an
//! alternate). Your repo then fetches the new tips from it with `fetch.fsckObjects`, into
//! `refs/heads/bottle/<slug>/…`. Your own branches, index and config are never touched.

use super::layer::Layer;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The most branches brought back from one run.
const MAX_REFS: usize = 1000;
/// The largest loose object read (inflated), and the most object bytes taken from the layer.
const MAX_OBJECT: u64 = 256 << 20;
const MAX_TOTAL: u64 = 4 << 30;

/// A branch the agent moved to commits your repo did not have.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Brought {
    /// The agent's branch (`main`).
    pub branch: String,
    /// Where it is in your repo (`bottle/<slug>/main`).
    pub as_branch: String,
    /// Its tip.
    pub commit: String,
    /// Commits on it that your repo's `HEAD` does not have.
    pub new_commits: usize,
    /// Paths its tip changes from your `HEAD` that your git runs or reads (what the file merge
    /// keeps out), each with what names it: a checkout, reset or restore of the branch would
    /// write them.
    pub runs_in_your_git: Vec<(String, String)>,
}

/// What [`bring_back`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Commits {
    /// Branches brought back.
    pub brought: Vec<Brought>,
    /// The branch the agent had checked out, if any.
    pub agent_head: Option<String>,
    /// Why commits could not be brought back, when they could not.
    pub error: Option<String>,
}

/// Bring the agent's new commits in `layer` back into your repo at `layer.lower` as
/// `bottle/<slug>/<branch>`, using `scratch` (made, then left for the caller to remove).
pub fn bring_back(
    layer: &Layer,
    slug: &str,
    scratch: &Path,
    guarded: &super::merge::Guarded,
) -> Commits {
    let yours = layer.lower.join(".git");
    let theirs = layer.upper().join(".git");
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&yours) || !real_dir(&theirs) {
        return Commits::default();
    }
    let mut out = Commits {
        agent_head: agent_head(&theirs),
        ..Commits::default()
    };
    if let Err(e) = bring(&yours, &theirs, &layer.lower, slug, scratch, &mut out) {
        out.error = Some(e);
    }
    for b in &mut out.brought {
        b.runs_in_your_git = runs_in_your_git(&yours, &b.commit, guarded);
    }
    out
}

/// The paths `commit` changes from your `HEAD` that your git runs or reads: guarded ones
/// ([`super::guarded`]), version-control names and the hook managers' files at any depth.
fn runs_in_your_git(
    yours: &Path,
    commit: &str,
    guarded: &super::merge::Guarded,
) -> Vec<(String, String)> {
    let Ok(names) = git(yours)
        .args([
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "HEAD",
            commit,
            "--",
        ])
        .output()
    else {
        return vec![(
            "(every path)".into(),
            "its changes could not be listed".into(),
        )];
    };
    names
        .split('\0')
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            let rel = Path::new(n);
            let why = guarded.touches(rel).map(str::to_owned).or_else(|| {
                rel.components().find_map(|c| {
                    let name = c.as_os_str();
                    if super::merge::is_vcs_name(name) {
                        Some("version-control metadata".to_owned())
                    } else {
                        super::guarded::is_hook_manager_file(name)
                            .then(|| format!("the hook manager's {}", name.to_string_lossy()))
                    }
                })
            })?;
            Some((n.to_owned(), why))
        })
        .collect()
}

fn bring(
    yours: &Path,
    theirs: &Path,
    lower: &Path,
    slug: &str,
    scratch: &Path,
    out: &mut Commits,
) -> Result<(), String> {
    let format = ObjectFormat::of(yours)?;
    let tips = agent_branches(theirs, &lower.join(".git"), format)?;
    if tips.is_empty() {
        return Ok(());
    }
    let new: Vec<(String, String)> = {
        let have = present(yours, tips.iter().map(|(_, oid)| oid.as_str()))?;
        tips.into_iter()
            .filter(|(_, oid)| !have.contains(oid))
            .collect()
    };
    if new.is_empty() {
        return Ok(());
    }
    make_scratch(scratch, yours, format)?;
    take_objects(&theirs.join("objects"), scratch, format)?;
    // A branch whose tip its objects do not hold (or is no commit) is left out, not the rest.
    let mut skipped = Vec::new();
    let new: Vec<(String, String)> = new
        .into_iter()
        .filter(|(branch, oid)| {
            let ok = git(scratch)
                .args(["update-ref", &format!("refs/heads/{branch}"), oid])
                .run()
                .is_ok();
            if !ok {
                skipped.push(branch.clone());
            }
            ok
        })
        .collect();
    if !skipped.is_empty() {
        out.error = Some(format!(
            "left out {}: their tips are not among the agent's objects",
            skipped.join(", ")
        ));
    }
    if new.is_empty() {
        return Ok(());
    }
    git(yours)
        .args([
            "-c",
            "fetch.fsckObjects=true",
            "-c",
            "transfer.fsckObjects=true",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
        ])
        .arg(scratch)
        .arg(format!("+refs/heads/*:refs/heads/bottle/{slug}/*"))
        .run()
        .map_err(|e| format!("your repo did not take the agent's commits: {e}"))?;
    for (branch, commit) in new {
        let as_branch = format!("bottle/{slug}/{branch}");
        let new_commits = git(yours)
            .args(["rev-list", "--count", &commit, "--not", "HEAD", "--"])
            .output()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.brought.push(Brought {
            branch,
            as_branch,
            commit,
            new_commits,
            runs_in_your_git: Vec::new(),
        });
    }
    Ok(())
}

/// The two object formats git knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectFormat {
    Sha1,
    Sha256,
}

impl ObjectFormat {
    /// The format of your repo, from its config file alone.
    fn of(git_dir: &Path) -> Result<ObjectFormat, String> {
        let value = Command::new("git")
            .args(["config", "--file"])
            .arg(git_dir.join("config"))
            .args(["--get", "extensions.objectformat"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        Ok(
            if String::from_utf8_lossy(&value.stdout).trim() == "sha256" {
                ObjectFormat::Sha256
            } else {
                ObjectFormat::Sha1
            },
        )
    }

    fn hex_len(self) -> usize {
        match self {
            ObjectFormat::Sha1 => 40,
            ObjectFormat::Sha256 => 64,
        }
    }

    fn is_oid(self, s: &str) -> bool {
        s.len() == self.hex_len() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    fn hash(self, data: &[&[u8]]) -> String {
        use sha2::Digest as _;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        match self {
            ObjectFormat::Sha1 => {
                let mut h = sha1::Sha1::new();
                data.iter().for_each(|d| h.update(d));
                hex(&h.finalize())
            }
            ObjectFormat::Sha256 => {
                let mut h = sha2::Sha256::new();
                data.iter().for_each(|d| h.update(d));
                hex(&h.finalize())
            }
        }
    }
}

/// The branch the agent's `HEAD` names, if it names one.
fn agent_head(theirs: &Path) -> Option<String> {
    let text = read_small(&theirs.join("HEAD"))?;
    let branch = text.trim().strip_prefix("ref: refs/heads/")?;
    valid_branch(branch).then(|| branch.to_owned())
}

/// A small regular file's text (never through a link).
fn read_small(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 16 << 20 {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Whether `name` (below `refs/heads/`) is a branch name git accepts and bottle can carry.
fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.contains("..")
        && !name.contains("@{")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && name != "@"
        && name.bytes().all(|b| {
            b > b' ' && b != 0x7f && !matches!(b, b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
        })
        // Your `git branch` prints it as it is: nothing that drives a terminal or reads
        // otherwise than it is (C1 controls, bidirectional and invisible characters).
        && !name.chars().any(bottle_contract::terminal::is_unsafe)
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.starts_with('-'))
}

/// The agent's branches and their tips, as its git saw them through the overlay: a loose
/// ref in its layer, else one of yours it did not delete, else its packed refs (its layer's
/// copy when it rewrote them, else yours).
fn agent_branches(
    theirs: &Path,
    yours: &Path,
    format: ObjectFormat,
) -> Result<Vec<(String, String)>, String> {
    let mut tips = std::collections::BTreeMap::new();
    let packed = if std::fs::symlink_metadata(theirs.join("packed-refs")).is_ok() {
        theirs.join("packed-refs")
    } else {
        yours.join("packed-refs")
    };
    if let Some(text) = read_small(&packed) {
        for line in text.lines() {
            if let Some((oid, name)) = line.split_once(' ')
                && let Some(branch) = name.strip_prefix("refs/heads/")
            {
                tips.insert(branch.to_owned(), oid.to_owned());
            }
        }
    }
    let mut loose = Vec::new();
    loose_refs(&yours.join("refs/heads"), "", &mut loose, 0);
    for (branch, oid) in loose {
        // Deleted in the agent's layer (a whiteout, or a dir it emptied and made anew).
        if std::fs::symlink_metadata(theirs.join("refs/heads").join(&branch))
            .is_ok_and(|m| !m.is_file())
        {
            continue;
        }
        tips.insert(branch, oid);
    }
    let mut theirs_loose = Vec::new();
    if real_dir(&theirs.join("refs")) {
        loose_refs(&theirs.join("refs/heads"), "", &mut theirs_loose, 0);
    }
    tips.extend(theirs_loose);
    let tips: Vec<(String, String)> = tips
        .into_iter()
        .filter(|(b, oid)| valid_branch(b) && format.is_oid(oid))
        .collect();
    if tips.len() > MAX_REFS {
        return Err(format!(
            "the agent left {} branches; bottle brings back at most {MAX_REFS}",
            tips.len()
        ));
    }
    Ok(tips)
}

/// Whether `p` is a dir itself, not a link to one.
fn real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Loose refs under `dir` (regular files holding an object id), named from `prefix`; links
/// are never followed.
fn loose_refs(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>, depth: usize) {
    if !real_dir(dir) || depth > 32 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() && full.len() < 200 {
            loose_refs(&e.path(), &full, out, depth + 1);
        } else if t.is_file()
            && let Some(text) = read_small(&e.path())
        {
            out.push((full, text.trim().to_owned()));
        }
    }
}

/// Which of `oids` your repo holds.
fn present<'a>(
    git_dir: &Path,
    oids: impl Iterator<Item = &'a str>,
) -> Result<std::collections::BTreeSet<String>, String> {
    let input: String = oids.map(|o| format!("{o}\n")).collect();
    let out = git(git_dir)
        .args(["cat-file", "--batch-check=%(objectname) %(objecttype)"])
        .input(input)
        .output()?;
    Ok(out
        .lines()
        .filter(|l| !l.ends_with(" missing"))
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect())
}

/// The scratch repo: bare, of your object format, your objects as its alternate.
fn make_scratch(scratch: &Path, yours: &Path, format: ObjectFormat) -> Result<(), String> {
    let mut init = Command::new("git");
    init.args(["init", "--quiet", "--bare"]);
    if format == ObjectFormat::Sha256 {
        init.arg("--object-format=sha256");
    }
    Git(clean(init))
        .arg(scratch)
        .run()
        .map_err(|e| format!("cannot make a scratch repo at {}: {e}", scratch.display()))?;
    let objects = yours
        .join("objects")
        .canonicalize()
        .map_err(|e| format!("{}: {e}", yours.display()))?;
    std::fs::write(
        scratch.join("objects/info/alternates"),
        format!("{}\n", objects.display()),
    )
    .map_err(|e| format!("cannot write the scratch repo's alternates: {e}"))
}

/// Copy the agent's objects into `scratch`, checked: packs through `index-pack --strict`,
/// loose objects inflated and hashed here.
fn take_objects(objects: &Path, scratch: &Path, format: ObjectFormat) -> Result<(), String> {
    let mut total = 0u64;
    if !real_dir(objects) {
        return Ok(());
    }
    let Ok(dirs) = std::fs::read_dir(objects) else {
        return Ok(());
    };
    for d in dirs.filter_map(Result::ok) {
        let name = d.file_name().to_string_lossy().into_owned();
        // `file_type` of a dir entry never follows a link.
        if !d.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if name == "pack" {
            for p in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let path = p.path();
                let is_pack = path.extension().is_some_and(|e| e == "pack");
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if !is_pack || !meta.is_file() {
                    continue;
                }
                total += meta.len();
                if total > MAX_TOTAL {
                    return Err(format!(
                        "the agent's objects exceed {} GiB",
                        MAX_TOTAL >> 30
                    ));
                }
                let pack =
                    std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                git(scratch)
                    .args(["index-pack", "--strict", "--stdin"])
                    .stdin_file(pack)
                    .run()
                    .map_err(|e| format!("a pack of the agent's is not sound: {e}"))?;
            }
        } else if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            for o in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let rest = o.file_name().to_string_lossy().into_owned();
                let oid = format!("{name}{rest}");
                if !format.is_oid(&oid) {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(o.path()) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                total += meta.len();
                if total > MAX_TOTAL {
                    return Err(format!(
                        "the agent's objects exceed {} GiB",
                        MAX_TOTAL >> 30
                    ));
                }
                let raw = std::fs::read(o.path()).map_err(|e| format!("{oid}: {e}"))?;
                check_loose(&raw, &oid, format)?;
                let dir = scratch.join("objects").join(&name);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                std::fs::write(dir.join(&rest), &raw)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
    }
    Ok(())
}

/// A loose object must inflate (within [`MAX_OBJECT`]) to `<type> <size>\0<data>` whose hash
/// is `oid`.
fn check_loose(raw: &[u8], oid: &str, format: ObjectFormat) -> Result<(), String> {
    let bad = |why: &str| format!("the agent's object {oid} is not sound: {why}");
    let mut data = Vec::new();
    flate2::read::ZlibDecoder::new(raw)
        .take(MAX_OBJECT + 64)
        .read_to_end(&mut data)
        .map_err(|e| bad(&e.to_string()))?;
    let nul = data
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("no header"))?;
    let header = std::str::from_utf8(&data[..nul]).map_err(|_| bad("header"))?;
    let (kind, size) = header.split_once(' ').ok_or_else(|| bad("header"))?;
    if !matches!(kind, "blob" | "tree" | "commit" | "tag") {
        return Err(bad("unknown type"));
    }
    if size.parse::<usize>().ok() != Some(data.len() - nul - 1) {
        return Err(bad("size"));
    }
    if format.hash(&[&data]) != oid {
        return Err(bad("its content does not hash to its name"));
    }
    Ok(())
}

/// A git command for repo `git_dir`, with a clean env: no `GIT_*` from the caller can point it
/// elsewhere, and it never prompts.
fn git(git_dir: &Path) -> Git {
    let mut c = Command::new("git");
    c.arg("--git-dir").arg(git_dir);
    Git(clean(c))
}

fn clean(mut c: Command) -> Command {
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(home) = std::env::var_os("HOME") {
        c.env("HOME", home);
    }
    c
}

/// A git command being built.
struct Git(Command);

impl Git {
    fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Git {
        self.0.args(a);
        self
    }

    fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Git {
        self.0.arg(a);
        self
    }

    fn stdin_file(mut self, f: std::fs::File) -> Git {
        self.0.stdin(f);
        self
    }

    fn input(self, text: String) -> GitWithInput {
        GitWithInput(self, text)
    }

    /// Run it; its stdout, or its stderr's first lines as the error.
    fn output(mut self) -> Result<String, String> {
        let out = self
            .0
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        check(out)
    }

    fn run(self) -> Result<(), String> {
        self.output().map(drop)
    }
}

struct GitWithInput(Git, String);

impl GitWithInput {
    fn output(self) -> Result<String, String> {
        use std::io::Write as _;
        let mut c = self.0.0;
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run git: {e}"))?;
        // Written from a thread while the output is read: a large input must not wait on a
        // full pipe the other way.
        let writer = child.stdin.take().map(|mut stdin| {
            let input = self.1;
            std::thread::spawn(move || stdin.write_all(input.as_bytes()))
        });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for git: {e}"))?;
        if let Some(w) = writer {
            w.join()
                .map_err(|_| "writing to git failed".to_owned())?
                .map_err(|e| format!("writing to git: {e}"))?;
        }
        check(out)
    }
}

fn check(out: std::process::Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(bottle_contract::supervise::validate::text(
            err.lines().take(3).collect::<Vec<_>>().join("; ").trim(),
            300,
        ))
    }
}

/// Where the scratch repo goes in `layer`.
pub fn scratch_dir(layer: &Layer) -> PathBuf {
    layer.root.join("import.git")
}

#[cfg(test)]
mod tests {
    use super::valid_branch;

    #[test]
    fn branch_names_git_takes_and_your_terminal_shows_as_they_are_only() {
        for ok in ["main", "feature/x-1", "fix_über"] {
            assert!(valid_branch(ok), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "x.lock",
            "-x",
            "a b",
            "a\u{1b}[31m",
            "evil\u{202e}gpj.exe",
            "c1\u{9b}x",
            "zero\u{200b}width",
        ] {
            assert!(!valid_branch(bad), "{bad:?}");
        }
    }
}
