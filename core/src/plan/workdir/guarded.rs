//! What of your dir your git runs or reads as config: the paths the merge never writes to.
//!
//! git's config can name commands (`core.fsmonitor`, `core.hooksPath`, filters, `!` aliases,
//! …) and further config files (`include.path`); when one of those lies inside your working
//! dir, a change the agent made there would run, or be read as config, the next time you use
//! git. Read here, before the agent's work comes back, as git itself reads them:
//!
//! - the system and global config files (and the files they include), and those files
//!   themselves when they live in your dir (a dotfiles repo);
//! - the config of the repository your dir belongs to, found as git finds it (your dir may be
//!   a subdir of it, or a linked worktree), with relative paths taken from its work tree;
//! - the config of every repository inside your dir (nested repos, submodules);
//! - the hook managers' own files at each work tree's top (`.pre-commit-config.yaml`,
//!   `lefthook.yml`, …) and husky's `.husky/` (its `_/` hooks run the scripts beside them);
//! - what each installed hook in a repo's own hooks dir links to or names (a script in the
//!   tree, a virtualenv's python), and relative paths in the system and global config from
//!   the top of every repo found.
//!
//! Besides git, what direnv loads on `cd` without asking again ([`direnv`]).
//!
//! Paths outside your dir do not matter and are left out.

mod direnv;

use super::merge::{Guarded, is_vcs_name};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// How deep `include.path` chains are followed.
const MAX_INCLUDE_DEPTH: usize = 8;
/// How deep, and over how many entries, your dir is searched for repositories inside it.
const MAX_SCAN_DEPTH: usize = 12;
const MAX_SCAN_ENTRIES: usize = 200_000;

/// Files of hook managers, at a work tree's top, whose content git hooks run.
const HOOK_MANAGER_FILES: &[&str] = &[
    ".pre-commit-config.yaml",
    ".pre-commit-config.yml",
    "lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yml",
    ".lefthook.yaml",
    "lefthook-local.yml",
    ".lefthook-local.yml",
    ".husky",
    // lefthook's `source_dir` and `source_dir_local`: the scripts its hooks run.
    ".lefthook",
    ".lefthook-local",
];

/// Whether `name` is a hook manager's file or dir (`.pre-commit-config.yaml`, `.husky`, …).
pub(super) fn is_hook_manager_file(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy().to_ascii_lowercase();
    HOOK_MANAGER_FILES.contains(&n.as_str())
}

/// Whether a config key's value is a command git runs (or a dir or file git runs or reads
/// from), by git-config(1). `key` is lower case, `section.sub.name` or `section.name`.
fn runs(key: &str, value: &str) -> bool {
    const EXACT: &[&str] = &[
        "core.fsmonitor",
        "core.hookspath",
        "core.sshcommand",
        "core.pager",
        "core.editor",
        "core.askpass",
        "core.gitproxy",
        "core.attributesfile",
        "core.worktree",
        "sequence.editor",
        "diff.external",
        "gpg.program",
        "credential.helper",
        "uploadpack.packobjectshook",
        "web.browser",
        "interactive.difffilter",
        "include.path",
        "init.templatedir",
        "commit.template",
        "gpg.ssh.defaultkeycommand",
        "core.alternaterefscommand",
        "gc.recentobjectshook",
        "sendemail.sendmailcmd",
        "sendemail.tocmd",
        "sendemail.cccmd",
    ];
    const LAST: &[(&str, &str)] = &[
        ("diff", "textconv"),
        ("diff", "command"),
        ("merge", "driver"),
        ("filter", "clean"),
        ("filter", "smudge"),
        ("filter", "process"),
        ("credential", "helper"),
        ("gpg", "program"),
        ("includeif", "path"),
        ("mergetool", "cmd"),
        ("mergetool", "path"),
        ("difftool", "cmd"),
        ("difftool", "path"),
        ("browser", "cmd"),
        ("browser", "path"),
        ("man", "cmd"),
        ("man", "path"),
        ("remote", "uploadpack"),
        ("remote", "receivepack"),
        ("remote", "vcs"),
        ("trailer", "command"),
        ("trailer", "cmd"),
    ];
    if EXACT.contains(&key) {
        return true;
    }
    let section = key.split('.').next().unwrap_or("");
    let name = key.rsplit('.').next().unwrap_or("");
    if section == "pager" {
        return true;
    }
    if section == "alias" || (section == "submodule" && name == "update") {
        return value.trim_start().starts_with('!');
    }
    key.matches('.').count() >= 2 && LAST.contains(&(section, name))
}

/// Whether `key` names a config file to read.
fn includes(key: &str) -> bool {
    key == "include.path" || (key.starts_with("includeif.") && key.ends_with(".path"))
}

/// Whether `key`'s whole value is one path (not a command line).
fn whole_path(key: &str) -> bool {
    includes(key)
        || matches!(
            key,
            "core.hookspath"
                | "init.templatedir"
                | "core.attributesfile"
                | "core.worktree"
                | "commit.template"
        )
}

/// The words of a command line that look like paths (`./x`, `tools/x`, `/abs/x`).
fn path_words(value: &str) -> Vec<String> {
    value
        .split(|c: char| c.is_whitespace() || ";|&()<>`'\"=!$".contains(c))
        .filter(|w| !w.is_empty() && (w.contains('/') || w.starts_with('.') || is_script_name(w)))
        .map(str::to_owned)
        .collect()
}

/// Whether a bare word names a script (`sh lint.sh`, `python3 conv.py`): run from the work
/// tree's top, so a file there.
fn is_script_name(word: &str) -> bool {
    const SCRIPTS: &[&str] = &[
        "sh", "bash", "zsh", "py", "pl", "rb", "js", "mjs", "cjs", "ts", "php", "lua", "ps1",
    ];
    word.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && SCRIPTS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

/// `path` without `.`/`..`, links along it not followed.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `root` as it is written (links on the way not followed), if it lies in
/// `root` so: the agent could replace a link on the way (`.githooks -> tools/hooks`, or a link
/// out of your dir) with a dir of its own, which git would then read by the written path.
fn lexically_inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let path = lexical(path);
    [
        root.to_owned(),
        root.canonicalize().unwrap_or_else(|_| root.to_owned()),
    ]
    .iter()
    .find_map(|r| path.strip_prefix(r).ok())
    .filter(|w| !w.as_os_str().is_empty())
    .map(Path::to_path_buf)
}

/// Guard `path` both as written and where it leads, each when it lies in `root`.
fn guard_as_written_and_real(g: &mut Guarded, root: &Path, path: &Path, why: &str) {
    if let Some(written) = lexically_inside(root, path) {
        g.paths.push((written, why.to_owned()));
    }
    if let Some(real) = inside(root, path).filter(|r| !r.as_os_str().is_empty()) {
        g.paths.push((real, why.to_owned()));
    }
}

/// `path` without `.`/`..` (lexically), relative to `root` if it lies inside it.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let out = lexical(path);
    // A link in your dir may resolve elsewhere; compare the real path when there is one.
    let real = out.canonicalize().unwrap_or(out);
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    real.strip_prefix(&root).ok().map(Path::to_path_buf)
}

/// One config entry: the file it came from, its key (lower case) and its value.
#[derive(Clone)]
struct Entry {
    origin: Option<PathBuf>,
    key: String,
    value: String,
}

/// The entries of `--system`, `--global` or `--file F`, each with its origin; includes are
/// not followed (they are read here, file by file).
fn entries(which: &[&std::ffi::OsStr]) -> Vec<Entry> {
    let Ok(out) = Command::new("git")
        .arg("config")
        .args(which)
        .args(["--no-includes", "--list", "--show-origin", "-z"])
        .current_dir(std::env::temp_dir())
        .env_remove("GIT_DIR")
        .env_remove("GIT_CONFIG")
        .env_remove("GIT_CONFIG_PARAMETERS")
        .env_remove("GIT_CONFIG_COUNT")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let parts: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[1].is_empty())
        .map(|c| {
            let origin = String::from_utf8_lossy(c[0]);
            let text = String::from_utf8_lossy(c[1]);
            let (k, v) = text.split_once('\n').unwrap_or((&text, ""));
            Entry {
                origin: origin.strip_prefix("file:").map(PathBuf::from),
                key: k.to_ascii_lowercase(),
                value: v.to_owned(),
            }
        })
        .collect()
}

/// The paths inside `root` (your working dir) that your git runs or reads (see the module
/// doc).
pub fn guarded(root: &Path, home: Option<&Path>) -> Guarded {
    let mut g = Guarded::default();
    let mut seen: Vec<PathBuf> = Vec::new();
    let globals: Vec<Entry> = ["--system", "--global"]
        .into_iter()
        .flat_map(|scope| entries(&[std::ffi::OsStr::new(scope)]))
        .collect();
    let mut tops = Vec::new();
    if let Some((git_dir, common, top)) = repository_of(root) {
        note_repo(&mut g, &mut seen, root, &git_dir, &common, &top, home);
        tops.push(top);
    }
    // What was not searched for repositories is looked at when the merge asks about a path
    // there: one in a repo of yours is kept as it is (fail closed), the rest comes back.
    let mut unsearched = Vec::new();
    let found = search(root, &mut unsearched);
    let unsearched: Vec<PathBuf> = unsearched
        .into_iter()
        .filter_map(|d| d.strip_prefix(root).ok().map(Path::to_path_buf))
        .filter(|r| !r.as_os_str().is_empty())
        .collect();
    if !unsearched.is_empty() {
        g.unsearched = Some((root.to_owned(), unsearched));
    }
    direnv::note(&mut g, root, &found.envrcs);
    for (work_tree, git_dir) in found.repos {
        note_repo(
            &mut g, &mut seen, root, &git_dir, &git_dir, &work_tree, home,
        );
        tops.push(work_tree);
    }
    if tops.is_empty() {
        tops.push(root.to_owned());
    }
    note_from_each_top(&mut g, root, home, &globals, &tops);
    g.paths.sort();
    g.paths.dedup_by(|a, b| a.0 == b.0);
    g
}

/// What the system and global config name in your dir: absolute and `~/` paths, and relative
/// ones (`core.hooksPath = .githooks`, a `!./x` alias) from the top of whichever repo git runs
/// in, each of `tops` (the repos found, or your dir itself, should it become one).
fn note_from_each_top(
    g: &mut Guarded,
    root: &Path,
    home: Option<&Path>,
    globals: &[Entry],
    tops: &[PathBuf],
) {
    for top in tops {
        note_files(
            g,
            &mut Vec::new(),
            root,
            Some(top),
            home,
            globals.to_vec(),
            0,
        );
    }
}

/// The repository `dir` belongs to, as git finds it: its git dir, its common dir and its
/// work tree's top.
fn repository_of(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let out = Command::new("git")
        .args([
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
            "--show-toplevel",
        ])
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(PathBuf::from);
    Some((lines.next()?, lines.next()?, lines.next()?))
}

/// What a search of your dir finds.
#[derive(Default)]
struct Found {
    /// Repositories inside it besides its own: each work tree and its git dir.
    repos: Vec<(PathBuf, PathBuf)>,
    /// Its `.envrc` files ([`direnv`]).
    envrcs: Vec<PathBuf>,
}

/// Search `root`: repositories inside it besides its own (a `.git` dir, or the dir a
/// `gitdir:` file names when it lies inside `root`), and `.envrc` files.
fn search(root: &Path, unsearched: &mut Vec<PathBuf>) -> Found {
    let mut found = Found::default();
    let out = &mut found.repos;
    let mut budget = MAX_SCAN_ENTRIES;
    // Breadth first: when the budget runs out, what is left unsearched is the deepest (a
    // dependency tree), not a sibling of it holding your sources.
    let mut queue = std::collections::VecDeque::from([(root.to_owned(), 0usize)]);
    'dirs: while let Some((dir, depth)) = queue.pop_front() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in read.filter_map(Result::ok) {
            if budget == 0 {
                unsearched.push(dir);
                unsearched.extend(queue.drain(..).map(|(d, _)| d));
                break 'dirs;
            }
            budget -= 1;
            let name = e.file_name();
            let Ok(t) = e.file_type() else { continue };
            if name == direnv::ENVRC && !t.is_dir() {
                found.envrcs.push(e.path());
            }
            if name == ".git" {
                if dir != root {
                    let git_dir = if t.is_dir() {
                        Some(e.path())
                    } else {
                        gitfile_target(&e.path()).filter(|p| p.starts_with(root))
                    };
                    if let Some(g) = git_dir {
                        out.push((dir.clone(), g));
                    }
                }
                continue;
            }
            if t.is_dir() && !is_vcs_name(&name) {
                if depth < MAX_SCAN_DEPTH {
                    queue.push_back((e.path(), depth + 1));
                } else {
                    unsearched.push(e.path());
                }
            }
        }
    }
    // Submodules' git dirs under the top repo's `.git/modules/`.
    let modules = root.join(".git/modules");
    if modules.is_dir() {
        let mut stack = vec![modules];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    if p.join("config").is_file() {
                        let work_tree = std::fs::read_to_string(p.join("config"))
                            .ok()
                            .and_then(|c| worktree_key(&c))
                            .map(|w| p.join(w))
                            .unwrap_or_else(|| root.to_owned());
                        out.push((work_tree, p.clone()));
                    }
                    stack.push(p.join("modules"));
                }
            }
        }
    }
    found
}

/// The git dir a `gitdir:` file names.
fn gitfile_target(file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    let target = text.trim().strip_prefix("gitdir:")?.trim();
    let p = Path::new(target);
    Some(if p.is_absolute() {
        p.to_owned()
    } else {
        file.parent()?.join(p)
    })
}

/// `core.worktree` in a config file's text, if set.
fn worktree_key(config: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("worktree")
            .then(|| v.trim().to_owned())
    })
}

/// Note what repository `git_dir` (its common dir `common`, its work tree's top `top`) runs.
fn note_repo(
    g: &mut Guarded,
    seen: &mut Vec<PathBuf>,
    root: &Path,
    git_dir: &Path,
    common: &Path,
    top: &Path,
    home: Option<&Path>,
) {
    for f in [common.join("config"), git_dir.join("config.worktree")] {
        if f.is_file() {
            let found = entries(&[std::ffi::OsStr::new("--file"), f.as_os_str()]);
            note_files(g, seen, root, Some(top), home, found, 0);
        }
    }
    note_hooks(g, root, &common.join("hooks"), top);
    for name in HOOK_MANAGER_FILES {
        let why = format!("the hook manager's {name}");
        guard_as_written_and_real(g, root, &top.join(name), &why);
        note_manager_commands(g, root, &top.join(name), top, &why);
    }
}

/// The commands a hook manager's file runs (pre-commit's `entry: ./scripts/x`, lefthook's
/// `run: tools/lint.sh`), taken from `top`: the file itself is guarded, but the scripts it
/// names are where a change would run.
fn note_manager_commands(g: &mut Guarded, root: &Path, file: &Path, top: &Path, why: &str) {
    let Some(text) = read_bounded(file) else {
        return;
    };
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        let Some(value) = ["entry:", "run:", "script:"]
            .iter()
            .find_map(|k| line.strip_prefix(k))
        else {
            continue;
        };
        for w in path_words(value) {
            for p in candidates(&w, top, None) {
                guard_as_written_and_real(g, root, &p, why);
            }
        }
    }
}

/// The most of a hook or a hook manager's file read: they are short scripts, not programs.
const MAX_HOOK_BYTES: u64 = 64 << 10;

/// `file` read as text, at most [`MAX_HOOK_BYTES`]; `None` when it is not a readable file.
fn read_bounded(file: &Path) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking: a FIFO where a hook or an `.envrc` is expected must not hang the merge.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(file)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    let _ = f.take(MAX_HOOK_BYTES).read_to_string(&mut text);
    Some(text)
}

/// Where a path word of a hook's command may lead: a relative word from the work tree's top
/// (where git runs hooks); an absolute one as itself, and also from the top and from the
/// hook's own dir, since the shell may have put either before it (`"$(git rev-parse
/// --show-toplevel)/x.sh"`, `"$(dirname "$0")/../x.sh"`: the words split at the `)`).
fn candidates(word: &str, top: &Path, hook_dir: Option<&Path>) -> Vec<PathBuf> {
    let p = Path::new(word);
    if !p.is_absolute() {
        return vec![top.join(p)];
    }
    let rel = word.trim_start_matches('/');
    let mut out = vec![p.to_owned(), top.join(rel)];
    out.extend(hook_dir.map(|d| d.join(rel)));
    out
}

/// The installed hooks in `hooks` (a repo's own hooks dir, outside your dir or not): what each
/// links to and each path its text names (`exec scripts/pre-commit.sh`, pre-commit's
/// `INSTALL_PYTHON=/…/.venv/bin/python`), taken from `top` where relative, go into `g` when they
/// lie inside `root`; so does the virtualenv a named program lives in (a `.pth` file the agent
/// drops there runs with it).
fn note_hooks(g: &mut Guarded, root: &Path, hooks: &Path, top: &Path) {
    let Ok(read) = std::fs::read_dir(hooks) else {
        return;
    };
    for entry in read.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sample") || name.starts_with('.') {
            continue;
        }
        let why = format!("the git hook {name}");
        let mut named = Vec::new();
        if let Ok(target) = std::fs::read_link(&path) {
            named.push(hooks.join(target));
        }
        // The file the hook is, or leads to, read as text (bounded).
        if let Some(text) = read_bounded(&path) {
            let commands = text.lines().filter(|l| !l.trim_start().starts_with('#'));
            for w in commands.flat_map(path_words) {
                named.extend(candidates(&w, top, Some(hooks)));
            }
        }
        for p in named {
            // A dir a hook names (`eslint src/`, `cd ..`) is where it works, not what it runs.
            if p.is_dir() {
                continue;
            }
            if let Some(rel) = inside(root, &p).filter(|r| !r.as_os_str().is_empty())
                && let Some(venv) = virtualenv_of(root, &rel)
            {
                g.paths.push((venv, why.clone()));
            }
            guard_as_written_and_real(g, root, &p, &why);
        }
    }
}

/// The virtualenv (a dir holding `pyvenv.cfg`) that `rel` (inside `root`) lies in, if any.
fn virtualenv_of(root: &Path, rel: &Path) -> Option<PathBuf> {
    rel.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| root.join(a).join("pyvenv.cfg").is_file())
        .map(Path::to_path_buf)
}

/// Add what `found` (config entries) runs inside `root` to `g`, with commands and hooks taken
/// from `top` (a work tree's top; none for the system and global config), and follow the
/// files it includes.
fn note_files(
    g: &mut Guarded,
    seen: &mut Vec<PathBuf>,
    root: &Path,
    top: Option<&Path>,
    home: Option<&Path>,
    found: Vec<Entry>,
    depth: usize,
) {
    for e in &found {
        // A config file of yours in your dir (a dotfiles repo) is config.
        if let Some(origin) = &e.origin
            && let Some(rel) = inside(root, origin)
            && !rel.as_os_str().is_empty()
        {
            g.paths
                .push((rel, format!("a git config file ({})", origin.display())));
        }
        if !runs(&e.key, &e.value) {
            continue;
        }
        let words = if whole_path(&e.key) {
            vec![e.value.trim().to_owned()]
        } else {
            path_words(&e.value)
        };
        for w in words {
            let path = if let Some(rest) = w.strip_prefix("~/") {
                match home {
                    Some(h) => h.join(rest),
                    None => continue,
                }
            } else if Path::new(&w).is_absolute() {
                PathBuf::from(&w)
            } else if includes(&e.key) {
                // Relative to the including file (git-config(1)).
                match e.origin.as_deref().and_then(Path::parent) {
                    Some(d) => d.join(&w),
                    None => continue,
                }
            } else {
                // Commands and hooks run from the top of the work tree.
                match top {
                    Some(t) => t.join(&w),
                    None => continue,
                }
            };
            if includes(&e.key)
                && depth < MAX_INCLUDE_DEPTH
                && path.is_file()
                && !seen.contains(&path)
            {
                seen.push(path.clone());
                let more = entries(&[std::ffi::OsStr::new("--file"), path.as_os_str()]);
                note_files(g, seen, root, top, home, more, depth + 1);
            }
            // The hooks there, in your dir or not (a global hooks dir), and husky's scripts
            // beside its `_/`: what each links to or names is where a change would run.
            if e.key == "core.hookspath"
                && let Some(top) = top
            {
                note_hooks(g, root, &path, top);
                if path.file_name().is_some_and(|n| n == "_")
                    && let Some(parent) = path.parent()
                {
                    note_hooks(g, root, parent, top);
                }
            }
            // As written, even when a link on the way leads out of your dir: the agent could
            // put a dir of its own there.
            if let Some(written) = lexically_inside(root, &path) {
                g.paths.push((written, e.key.clone()));
            }
            let Some(rel) = inside(root, &path).filter(|r| !r.as_os_str().is_empty()) else {
                continue;
            };
            // husky's `core.hooksPath = .husky/_`: its hooks run the scripts in `.husky/`.
            if e.key == "core.hookspath"
                && rel.file_name().is_some_and(|n| n == "_")
                && let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty())
            {
                g.paths.push((parent.to_owned(), e.key.clone()));
            }
            g.paths.push((rel, e.key.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {ok:?}");
    }

    fn paths(g: &Guarded) -> Vec<(String, String)> {
        g.paths
            .iter()
            .map(|(p, k)| (p.display().to_string(), k.clone()))
            .collect()
    }

    #[test]
    fn keys_that_run_are_known_and_aliases_only_with_a_bang() {
        for k in [
            "core.fsmonitor",
            "core.hookspath",
            "diff.foo.textconv",
            "filter.lfs.process",
            "pager.log",
            "includeif.gitdir:~/x/.path",
            "credential.https://x.helper",
            "gpg.ssh.defaultkeycommand",
            "trailer.sign.command",
            "gc.recentobjectshook",
        ] {
            assert!(runs(k, "x"), "{k}");
        }
        assert!(runs("submodule.lib.update", "!./tools/up.sh"));
        assert!(!runs("submodule.lib.update", "rebase"));
        assert!(runs("alias.st", "!sh tools/st.sh"));
        assert!(!runs("alias.st", "status -s"));
        for k in [
            "user.name",
            "core.bare",
            "diff.textconv",
            "remote.origin.url",
        ] {
            assert!(!runs(k, "x"), "{k}");
        }
    }

    #[test]
    fn paths_in_commands_are_found() {
        assert_eq!(
            path_words("!f() { ./tools/x.sh \"$@\"; }; f"),
            ["./tools/x.sh"]
        );
        assert_eq!(path_words("sh scripts/fsmon.sh --v2"), ["scripts/fsmon.sh"]);
        assert!(path_words("less -R").is_empty());
        assert_eq!(path_words("!sh lint.sh --fix"), ["lint.sh"]);
        assert_eq!(path_words("python3 conv.py"), ["conv.py"]);
        assert!(path_words("git log --oneline").is_empty());
    }

    #[test]
    fn the_repo_config_guards_its_hooks_dir_scripts_includes_and_hook_managers() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        git(&root, &["init", "-q"]);
        std::fs::create_dir_all(root.join("tools")).unwrap();
        std::fs::write(
            root.join("project.gitconfig"),
            "[diff \"bin\"]\n\ttextconv = tools/conv.sh\n",
        )
        .unwrap();
        for (k, v) in [
            ("core.hooksPath", ".husky/_"),
            ("core.fsmonitor", "./tools/fsmon.sh"),
            ("core.pager", "less"),
            ("include.path", "../project.gitconfig"),
            ("alias.x", "!/usr/bin/env"),
        ] {
            git(&root, &["config", k, v]);
        }
        let g = guarded(&root, None);
        let got = paths(&g);
        for want in [
            (".husky", "core.hookspath"),
            (".husky/_", "core.hookspath"),
            ("tools/conv.sh", "diff.bin.textconv"),
            ("tools/fsmon.sh", "core.fsmonitor"),
            (
                ".pre-commit-config.yaml",
                "the hook manager's .pre-commit-config.yaml",
            ),
        ] {
            assert!(
                got.iter().any(|(p, k)| p == want.0 && k == want.1),
                "{want:?} missing in {got:?}"
            );
        }
        assert!(got.iter().any(|(p, _)| p == "project.gitconfig"), "{got:?}");
    }

    #[test]
    fn what_an_installed_hook_links_to_or_names_is_guarded() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        git(&root, &["init", "-q"]);
        std::fs::create_dir_all(root.join("scripts")).unwrap();
        std::fs::write(root.join("scripts/pre-commit.sh"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join(".venv/bin")).unwrap();
        std::fs::write(root.join(".venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let hooks = root.join(".git/hooks");
        std::os::unix::fs::symlink("../../scripts/pre-commit.sh", hooks.join("pre-commit"))
            .unwrap();
        std::fs::write(
            hooks.join("pre-push"),
            format!(
                "#!/usr/bin/env bash\n# see docs/hooks.md\nINSTALL_PYTHON={}/.venv/bin/python\nnpx eslint src/ && exec tools/push-check.sh \"$@\"\n",
                root.display()
            ),
        )
        .unwrap();
        let g = guarded(&root, None);
        let got = paths(&g);
        for want in [
            "scripts/pre-commit.sh",
            ".venv",
            ".venv/bin/python",
            "tools/push-check.sh",
        ] {
            assert!(
                got.iter().any(|(p, _)| p == want),
                "{want} missing in {got:?}"
            );
        }
        // Where a hook works (a dir) and what a comment names are not what it runs.
        assert!(
            !got.iter().any(|(p, _)| p == "src" || p.starts_with("docs")),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|(p, _)| p.contains("sample")),
            "samples are not hooks: {got:?}"
        );
    }

    #[test]
    fn what_hooks_in_a_hooks_path_and_hook_managers_run_is_guarded() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        git(&root, &["init", "-q"]);
        for d in [".githooks", "scripts", "tools", "ci"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("scripts/pre-commit.sh"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(
            "../scripts/pre-commit.sh",
            root.join(".githooks/pre-commit"),
        )
        .unwrap();
        // The words after a command substitution read as absolute paths.
        std::fs::write(
            root.join(".githooks/pre-push"),
            "#!/bin/sh\nexec \"$(git rev-parse --show-toplevel)/tools/push.sh\"\n\"$(dirname \"$0\")/../ci/check.sh\"\n",
        )
        .unwrap();
        git(&root, &["config", "core.hooksPath", ".githooks"]);
        std::fs::write(
            root.join(".pre-commit-config.yaml"),
            "repos:\n  - repo: local\n    hooks:\n      - id: lint\n        entry: ./tools/lint.sh --fix\n        language: system\n",
        )
        .unwrap();
        std::fs::write(
            root.join("lefthook.yml"),
            "pre-commit:\n  commands:\n    fmt:\n      run: ci/fmt.sh {staged_files}\n",
        )
        .unwrap();
        let got = paths(&guarded(&root, None));
        for want in [
            "scripts/pre-commit.sh",
            "tools/push.sh",
            "ci/check.sh",
            "tools/lint.sh",
            "ci/fmt.sh",
        ] {
            assert!(
                got.iter().any(|(p, _)| p == want),
                "{want} missing in {got:?}"
            );
        }
        // What the hooks do not name comes back.
        assert!(!got.iter().any(|(p, _)| p == "src" || p == "ci"), "{got:?}");
    }

    #[test]
    fn a_fifo_where_a_hook_or_an_envrc_is_expected_is_not_waited_on() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        git(&root, &["init", "-q"]);
        for fifo in [root.join(".git/hooks/pre-commit"), root.join(direnv::ENVRC)] {
            rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        }
        // Returns (the test would hang otherwise), guarding nothing the FIFOs would name.
        let got = paths(&guarded(&root, None));
        assert!(
            !got.iter().any(|(_, k)| k.starts_with("the git hook")),
            "{got:?}"
        );
    }

    #[test]
    fn a_guarded_path_through_a_link_is_guarded_as_written_and_where_it_leads() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        git(&root, &["init", "-q"]);
        std::fs::create_dir_all(root.join("tools/hooks")).unwrap();
        std::os::unix::fs::symlink("tools/hooks", root.join(".githooks")).unwrap();
        git(&root, &["config", "core.hooksPath", ".githooks"]);
        let got = paths(&guarded(&root, None));
        for want in [".githooks", "tools/hooks"] {
            assert!(
                got.iter().any(|(p, k)| p == want && k == "core.hookspath"),
                "{want} missing in {got:?}"
            );
        }
    }

    #[test]
    fn what_is_too_deep_to_search_for_repositories_is_kept_as_it_is() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let deep: PathBuf = (0..=MAX_SCAN_DEPTH + 1).map(|i| format!("d{i}")).collect();
        std::fs::create_dir_all(root.join(&deep)).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        let mut unsearched = Vec::new();
        search(&root, &mut unsearched);
        let rel: Vec<PathBuf> = unsearched
            .iter()
            .map(|d| d.strip_prefix(&root).unwrap().to_owned())
            .collect();
        let cut: PathBuf = (0..=MAX_SCAN_DEPTH).map(|i| format!("d{i}")).collect();
        assert_eq!(rel, std::slice::from_ref(&cut));
        // A plain dir there comes back; one in a repo of yours is kept as it is.
        std::fs::create_dir_all(root.join(&cut).join("repo/.git")).unwrap();
        let g = guarded(&root, None);
        assert_eq!(g.guard(&cut.join("plain.txt")), None);
        assert!(
            g.guard(&cut.join("repo/src/lib.rs"))
                .is_some_and(|why| why.contains("too far down")),
            "{g:?}"
        );
        assert_eq!(g.guard(Path::new("src/main.rs")), None);
    }

    #[test]
    fn a_guarded_path_that_leads_out_of_your_dir_is_guarded_as_written() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::create_dir_all(t.path().join("shared-hooks")).unwrap();
        git(&root, &["init", "-q"]);
        std::os::unix::fs::symlink("../shared-hooks", root.join(".githooks")).unwrap();
        std::os::unix::fs::symlink("../shared/pc.yaml", root.join(".pre-commit-config.yaml"))
            .unwrap();
        git(&root, &["config", "core.hooksPath", ".githooks"]);
        let got = paths(&guarded(&root, None));
        for want in [".githooks", ".pre-commit-config.yaml"] {
            assert!(
                got.iter().any(|(p, _)| p == want),
                "{want} missing in {got:?}"
            );
        }
    }

    #[test]
    fn a_relative_path_in_the_global_config_is_guarded_in_every_repo() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let global = |key: &str, value: &str| Entry {
            origin: Some(PathBuf::from("/home/u/.gitconfig")),
            key: key.into(),
            value: value.into(),
        };
        let globals = [
            global("core.hookspath", ".githooks"),
            global("alias.lint", "!./tools/lint.sh"),
            global("core.pager", "less"),
        ];
        let mut g = Guarded::default();
        note_from_each_top(
            &mut g,
            &root,
            None,
            &globals,
            &[root.clone(), root.join("vendor/lib")],
        );
        let got = paths(&g);
        for want in [
            (".githooks", "core.hookspath"),
            ("vendor/lib/.githooks", "core.hookspath"),
            ("tools/lint.sh", "alias.lint"),
            ("vendor/lib/tools/lint.sh", "alias.lint"),
        ] {
            assert!(
                got.iter().any(|(p, k)| p == want.0 && k == want.1),
                "{want:?} missing in {got:?}"
            );
        }
    }

    #[test]
    fn a_subdir_of_a_repo_and_a_nested_repo_are_read_as_git_reads_them() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().canonicalize().unwrap();
        git(&top, &["init", "-q"]);
        git(&top, &["config", "core.fsmonitor", "sub/tools/fsmon.sh"]);
        let sub = top.join("sub");
        std::fs::create_dir_all(sub.join("inner")).unwrap();
        git(&sub.join("inner"), &["init", "-q"]);
        git(&sub.join("inner"), &["config", "core.hooksPath", "hooks"]);
        let g = guarded(&sub, None);
        let got = paths(&g);
        assert!(
            got.contains(&("tools/fsmon.sh".into(), "core.fsmonitor".into())),
            "the repo above, from its work tree's top: {got:?}"
        );
        assert!(
            got.contains(&("inner/hooks".into(), "core.hookspath".into())),
            "a nested repo's own config: {got:?}"
        );
    }
}
