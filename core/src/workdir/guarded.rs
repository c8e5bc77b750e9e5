//! What of your dir your git runs or reads as config: the paths the merge never writes to.
//!
//! git's config can name commands (`core.fsmonitor`, `core.hooksPath`, filters, `!` aliases,
//! …) and further config files (`include.path`); when one of those lies inside your working
//! dir, a change the agent made there would run, or be read as config, the next time you use
//! git. Your config files (system, global, the repo's own) are read here as they are, before
//! the agent's work comes back; paths outside your dir do not matter and are left out.

use super::merge::Guarded;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// How deep `include.path` chains are followed.
const MAX_INCLUDE_DEPTH: usize = 8;

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
        "sequence.editor",
        "diff.external",
        "gpg.program",
        "credential.helper",
        "uploadpack.packobjectshook",
        "web.browser",
        "interactive.difffilter",
        "include.path",
        "init.templatedir",
        "core.attributesfile",
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
    ];
    if EXACT.contains(&key) {
        return true;
    }
    let section = key.split('.').next().unwrap_or("");
    let name = key.rsplit('.').next().unwrap_or("");
    if section == "pager" {
        return true;
    }
    if section == "alias" {
        return value.trim_start().starts_with('!');
    }
    key.matches('.').count() >= 2 && LAST.contains(&(section, name))
}

/// Whether `key` names a config file to read.
fn includes(key: &str) -> bool {
    key == "include.path" || (key.starts_with("includeif.") && key.ends_with(".path"))
}

/// The words of a command line that look like paths (`./x`, `tools/x`, `/abs/x`).
fn path_words(value: &str) -> Vec<String> {
    value
        .split(|c: char| c.is_whitespace() || ";|&()<>`'\"=!$".contains(c))
        .filter(|w| !w.is_empty() && (w.contains('/') || w.starts_with('.')))
        .map(str::to_owned)
        .collect()
}

/// `path` without `.`/`..` (lexically), relative to `root` if it lies inside it.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
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
    // A link in your dir may resolve elsewhere; compare the real path when there is one.
    let real = out.canonicalize().unwrap_or(out);
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    real.strip_prefix(&root).ok().map(Path::to_path_buf)
}

/// The `(key, value)` pairs of one config file (or of `--global`/`--system`), includes not
/// followed.
fn entries(which: &[&std::ffi::OsStr], cwd: &Path) -> Vec<(String, String)> {
    let Ok(out) = Command::new("git")
        .arg("config")
        .args(which)
        .args(["--no-includes", "--list", "-z"])
        .current_dir(cwd)
        .env_remove("GIT_DIR")
        .env_remove("GIT_CONFIG")
        .env_remove("GIT_CONFIG_PARAMETERS")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    out.stdout
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let text = String::from_utf8_lossy(e);
            let (k, v) = text.split_once('\n').unwrap_or((&text, ""));
            (k.to_ascii_lowercase(), v.to_owned())
        })
        .collect()
}

/// The paths inside `root` (your working dir) that your git config runs or reads: from the
/// system and global config and the repo's own (`.git/config`, `.git/config.worktree`), and
/// every file they include, recursively.
pub fn guarded(root: &Path, home: Option<&Path>) -> Guarded {
    let mut g = Guarded::default();
    let mut files: Vec<(PathBuf, usize)> = Vec::new();
    let git_dir = root.join(".git");
    for f in ["config", "config.worktree"] {
        let p = git_dir.join(f);
        if p.is_file() {
            files.push((p, 0));
        }
    }
    // Neither reads the repo (no `--file`): run from a dir that is none.
    let neutral = std::env::temp_dir();
    for scope in ["--system", "--global"] {
        let found = entries(&[std::ffi::OsStr::new(scope)], &neutral);
        note(&mut g, &mut files, root, None, home, found, 0);
    }
    while let Some((file, depth)) = files.pop() {
        let found = entries(
            &[std::ffi::OsStr::new("--file"), file.as_os_str()],
            &neutral,
        );
        note(&mut g, &mut files, root, file.parent(), home, found, depth);
    }
    g.paths.sort();
    g.paths.dedup_by(|a, b| a.0 == b.0);
    g
}

/// Add what `found` (the entries of a config file in `dir`) runs inside `root` to `g`, and
/// queue the files it includes.
fn note(
    g: &mut Guarded,
    files: &mut Vec<(PathBuf, usize)>,
    root: &Path,
    dir: Option<&Path>,
    home: Option<&Path>,
    found: Vec<(String, String)>,
    depth: usize,
) {
    for (key, value) in found {
        if !runs(&key, &value) {
            continue;
        }
        let words = if includes(&key) || key == "core.hookspath" || key == "init.templatedir" {
            vec![value.trim().to_owned()]
        } else {
            path_words(&value)
        };
        for w in words {
            let path = if let Some(rest) = w.strip_prefix("~/") {
                match home {
                    Some(h) => h.join(rest),
                    None => continue,
                }
            } else if Path::new(&w).is_absolute() {
                PathBuf::from(&w)
            } else if includes(&key) {
                // Relative to the including file (git-config(1)).
                match dir {
                    Some(d) => d.join(&w),
                    None => continue,
                }
            } else {
                // Commands and hooks run from the top of the working tree.
                root.join(&w)
            };
            if includes(&key) && depth < MAX_INCLUDE_DEPTH && path.is_file() {
                files.push((path.clone(), depth + 1));
            }
            if let Some(rel) = inside(root, &path)
                && !rel.as_os_str().is_empty()
            {
                g.paths.push((rel, key.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(runs(k, "x"), "{k}");
        }
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
    }

    #[test]
    fn the_repo_config_guards_its_hooks_dir_scripts_and_includes_inside_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("tools")).unwrap();
        std::fs::write(
            root.join("project.gitconfig"),
            "[diff \"bin\"]\n\ttextconv = tools/conv.sh\n",
        )
        .unwrap();
        std::fs::write(
            root.join(".git/config"),
            "[core]\n\thooksPath = .husky\n\tfsmonitor = ./tools/fsmon.sh\n\tpager = less\n[include]\n\tpath = ../project.gitconfig\n[alias]\n\tx = !/usr/bin/env\n",
        )
        .unwrap();
        let g = guarded(&root, None);
        let paths: Vec<(&str, &str)> = g
            .paths
            .iter()
            .map(|(p, k)| (p.to_str().unwrap(), k.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                (".husky", "core.hookspath"),
                ("project.gitconfig", "include.path"),
                ("tools/conv.sh", "diff.bin.textconv"),
                ("tools/fsmon.sh", "core.fsmonitor"),
            ]
        );
    }
}
