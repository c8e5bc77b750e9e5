//! What direnv loads on `cd` without asking again.
//!
//! `direnv allow` approves an `.envrc`'s own text (a change to it asks again), not what that
//! text loads: the files `dotenv` and `source_env` read, the dirs `PATH_add` and a layout put
//! first on your `PATH`, the nix files `use flake` evaluates, the `.envrc` files `source_up`
//! sources. A change the agent made to one of those would run the next time you `cd` into your
//! dir, so they are guarded like what git runs. Read from every `.envrc` found in your dir (as
//! far as it was searched) and above it.

use super::{guard_as_written_and_real, is_script_name, read_bounded};
use crate::plan::workdir::merge::Guarded;
use std::path::{Path, PathBuf};

/// direnv's file name.
pub(super) const ENVRC: &str = ".envrc";

/// Guard what each `.envrc` of `found` (in `root`) and above `root` loads.
pub(super) fn note(g: &mut Guarded, root: &Path, found: &[PathBuf]) {
    let above = root
        .ancestors()
        .skip(1)
        .map(|d| d.join(ENVRC))
        .filter(|f| f.is_file());
    for envrc in found.iter().cloned().chain(above) {
        let (Some(dir), Some(text)) = (envrc.parent(), read_bounded(&envrc)) else {
            continue;
        };
        let why = "what an .envrc loads (direnv)";
        for p in loaded(&text, dir) {
            guard_as_written_and_real(g, root, &p, why);
        }
    }
}

/// What an `.envrc` in `dir` with `text` loads, runs or puts on `PATH`.
fn loaded(text: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace().map(unquote);
        let Some(command) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.filter(|w| !w.starts_with('-')).collect();
        let first = args.first().copied();
        let named: Vec<&str> = match command {
            "dotenv" | "dotenv_if_exists" if args.is_empty() => vec![".env"],
            "dotenv"
            | "dotenv_if_exists"
            | "source_env"
            | "source_env_if_exists"
            | "PATH_add"
            | "load_prefix"
            | "source"
            | "." => args,
            // `path_add VAR DIR`.
            "path_add" => args.into_iter().skip(1).collect(),
            "source_up" | "source_up_if_exists" => {
                // Each `.envrc` (or the file named) above this one, sourced unasked.
                let name = first.unwrap_or(ENVRC);
                out.extend(dir.ancestors().skip(1).map(|a| a.join(name)));
                continue;
            }
            "use" | "use_flake" | "use_nix" => {
                let what = if command == "use" {
                    first
                } else {
                    command.strip_prefix("use_")
                };
                match what {
                    Some("flake") => vec!["flake.nix", "flake.lock"],
                    Some("nix") => vec!["shell.nix", "default.nix"],
                    _ => Vec::new(),
                }
            }
            // A layout puts its own dir first on `PATH`: node's `node_modules/.bin`, go's
            // `bin`, the others a dir under `.direnv`.
            "layout" => match first {
                Some("node") => vec!["node_modules/.bin"],
                Some("go") => vec!["bin"],
                Some(_) => vec![".direnv"],
                None => Vec::new(),
            },
            _ => pathlike(line),
        };
        out.extend(named.into_iter().map(|n| dir.join(strip_pwd(n))));
    }
    out
}

/// `word` without the shell's quotes around it.
fn unquote(word: &str) -> &str {
    word.trim_matches(|c| c == '"' || c == '\'')
}

/// `word` relative to the `.envrc`'s dir: without a `$PWD/` (or `${PWD}/`, `$(pwd)/`) before it.
fn strip_pwd(word: &str) -> &str {
    ["$PWD/", "${PWD}/", "$(pwd)/"]
        .iter()
        .find_map(|p| word.strip_prefix(p))
        .unwrap_or(word)
}

/// The words of any other line that look like paths in the `.envrc`'s dir: after `$PWD/`
/// (`export PATH=$PWD/tools:$PATH`), or relative ones (`./setup.sh`, `scripts/env.sh`,
/// `env.sh`).
fn pathlike(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || "=:;|&<>`'\"".contains(c))
        .filter_map(|w| {
            let rest = strip_pwd(w);
            if rest.len() != w.len() {
                return Some(rest);
            }
            (!w.is_empty()
                && !w.starts_with('$')
                && !w.starts_with('/')
                && (w.contains('/') || w.starts_with('.') || is_script_name(w)))
            .then_some(w)
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_envrc_loads_or_puts_on_the_path_is_named() {
        let dir = Path::new("/p");
        let text = "# a comment naming ./not-this.sh\n\
            dotenv\n\
            dotenv_if_exists .env.local\n\
            source_env \"secrets/.envrc\"\n\
            PATH_add bin\n\
            path_add PYTHONPATH $PWD/lib\n\
            use flake\n\
            layout node\n\
            layout python3\n\
            export PATH=$PWD/tools:$PATH\n\
            source ./setup.sh\n\
            export RUST_LOG=debug\n";
        let got: Vec<PathBuf> = loaded(text, dir);
        for want in [
            ".env",
            ".env.local",
            "secrets/.envrc",
            "bin",
            "lib",
            "flake.nix",
            "flake.lock",
            "node_modules/.bin",
            ".direnv",
            "tools",
            "./setup.sh",
        ] {
            assert!(got.contains(&dir.join(want)), "{want} missing in {got:?}");
        }
        assert!(!got.iter().any(|p| p.ends_with("not-this.sh")), "{got:?}");
        assert!(
            !got.iter().any(|p| p.to_string_lossy().contains("debug")),
            "{got:?}"
        );
        let up = loaded("source_up\n", Path::new("/p/sub"));
        assert!(up.contains(&PathBuf::from("/p/.envrc")), "{up:?}");
    }

    #[test]
    fn an_envrc_in_the_dir_or_above_it_guards_what_it_loads_in_the_dir() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().canonicalize().unwrap();
        let root = top.join("proj");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(top.join(ENVRC), "PATH_add proj/scripts\n").unwrap();
        std::fs::write(root.join(ENVRC), "dotenv\nuse flake\n").unwrap();
        std::fs::write(root.join("sub").join(ENVRC), "source_up\nPATH_add bin\n").unwrap();
        let g = super::super::guarded(&root, None);
        let got: Vec<String> = g
            .paths
            .iter()
            .map(|(p, _)| p.to_string_lossy().into_owned())
            .collect();
        for want in [".env", "flake.nix", "sub/bin", ".envrc", "scripts"] {
            assert!(got.iter().any(|p| p == want), "{want} missing in {got:?}");
        }
    }
}
