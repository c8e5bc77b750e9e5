//! The working dir the agent shares with you (`cwd: mount`): which dirs may be it, the layer
//! the agent writes into, and how its work comes back without anything that would later run.
//!
//! - [`protect`]: dirs that may never be the agent's (`/`, `$HOME`, bottle's own dirs, …);
//! - [`layer`]: the overlay the agent works in; your dir is its read-only lower layer, so
//!   nothing the agent writes reaches your dir while it runs;
//! - [`commits`]: the agent's commits, brought back as branches `bottle/<slug>/…`;
//! - [`guarded`]: what of your dir your git config runs;
//! - [`merge`]: the agent's files, brought back into your dir minus version-control
//!   metadata, git-dir shapes and what your git runs (set aside and reported).

pub mod commits;
pub mod guarded;
pub mod layer;
pub mod merge;
pub mod protect;

pub use protect::{Protected, protected_dirs, refusal};

use layer::Layer;
use std::path::{Path, PathBuf};

/// What came back from the agent's layer at the end of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Homecoming {
    /// The agent's commits.
    pub commits: commits::Commits,
    /// The agent's files.
    pub files: merge::Report,
    /// The file that lists every path written, removed or replaced, once one was written.
    pub listed: Option<PathBuf>,
}

/// Bring the agent's work in `layer` back into your dir: its commits as branches
/// `bottle/<slug>/…`, then its files; what must not come back, and what of yours it replaced,
/// go where `to` says. `home` is your home (for `~/` in your git config).
pub fn bring_back(
    layer: &Layer,
    slug: &str,
    to: &merge::Destinations,
    home: Option<&Path>,
) -> Result<Homecoming, merge::PlanError> {
    let guarded = guarded::guarded(&layer.lower, home);
    let scratch = commits::scratch_dir(layer);
    let commits = commits::bring_back(layer, slug, &scratch, &guarded);
    let _ = std::fs::remove_dir_all(&scratch);
    let upper = layer.upper();
    let steps = merge::plan(&merge::Inputs {
        upper: &upper,
        lower: &layer.lower,
        started: layer.started,
        guarded: &guarded,
    })?;
    let files = merge::apply(&upper, &layer.lower, to, &steps);
    let listed = write_changes(&to.changes, &layer.lower, &files)
        .ok()
        .map(|()| to.changes.clone());
    Ok(Homecoming {
        commits,
        files,
        listed,
    })
}

/// Write the list of what came back into `dir` (`written PATH`, `written, executable PATH`,
/// `removed PATH`, `replaced PATH`, one a line, controls, newlines and tabs escaped) to
/// `file`, whole.
fn write_changes(file: &Path, dir: &Path, report: &merge::Report) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if report.written.is_empty() && report.removed.is_empty() && report.replaced.is_empty() {
        // A list left by an earlier run of the same name is not this run's.
        return match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Err(std::io::Error::other("nothing came back")),
        };
    }
    let line = |what: &str, p: &Path| {
        format!(
            "{what} {}\n",
            bottle_contract::terminal::one_line(&p.to_string_lossy())
        )
    };
    let mut text = String::new();
    for p in &report.written {
        let executable = std::fs::symlink_metadata(dir.join(p))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        text.push_str(&line(
            if executable {
                "written, executable"
            } else {
                "written"
            },
            p,
        ));
    }
    for p in &report.removed {
        text.push_str(&line("removed", p));
    }
    for p in &report.replaced {
        text.push_str(&line("replaced", p));
    }
    crate::live::apply::write_whole(file, text.as_bytes(), 0o600)
}

/// The most entries named one by one in [`Homecoming::lines`].
const SHOWN: usize = 8;

impl Homecoming {
    /// What to tell you at the end of the run, one line each (empty when the agent changed
    /// nothing). Paths, branch names and errors came from the agent's work: shown without
    /// controls.
    pub fn lines(&self, slug: &str) -> Vec<String> {
        let shown =
            |p: &Path| bottle_contract::supervise::validate::text(&p.to_string_lossy(), 200);
        let safe = |s: &str| bottle_contract::terminal::safe(s).into_owned();
        let mut out = Vec::new();
        let f = &self.files;
        if !f.written.is_empty() || !f.removed.is_empty() {
            let listed = self
                .listed
                .as_deref()
                .map(|l| {
                    format!(
                        " (each listed in {}; ignored files too, which `git status` does not show)",
                        l.display()
                    )
                })
                .unwrap_or_default();
            out.push(format!(
                "bottle {slug}: the agent's work is in your dir: {} file(s) written, {} removed{listed}",
                f.written.len(),
                f.removed.len()
            ));
        }
        for b in &self.commits.brought {
            let name = shown(Path::new(&b.as_branch));
            let mut line = format!(
                "bottle {slug}: the agent's commits on {} are on your branch {name} ({} new)",
                shown(Path::new(&b.branch)),
                b.new_commits
            );
            if !b.runs_in_your_git.is_empty() {
                // A checkout, reset and restore, or a merge, would write these.
                line.push_str(&format!(
                    "; WARNING: they change what your git runs, review them first (`git diff HEAD {name}`):"
                ));
                out.push(line);
                for (p, why) in b.runs_in_your_git.iter().take(SHOWN) {
                    out.push(format!("  {}: {}", shown(Path::new(p)), safe(why)));
                }
                if b.runs_in_your_git.len() > SHOWN {
                    out.push(format!("  … and {} more", b.runs_in_your_git.len() - SHOWN));
                }
                continue;
            }
            if self.commits.agent_head.as_deref() == Some(b.branch.as_str()) {
                line.push_str(&format!(
                    "; `git reset {name}` makes them yours and keeps the files as they are"
                ));
            }
            out.push(line);
        }
        if let Some(e) = &self.commits.error {
            out.push(format!(
                "bottle {slug}: the agent's commits were not brought back: {}",
                safe(e)
            ));
        }
        let archive = f
            .set_aside_archive
            .as_deref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        // The repo's own `.git` changes with every git command the agent runs: one line.
        let (own_git, others): (Vec<_>, Vec<_>) = f
            .set_aside
            .iter()
            .partition(|(p, _)| p.as_os_str() == ".git");
        if !own_git.is_empty() {
            out.push(format!(
                "bottle {slug}: what the agent's git changed in .git (config, hooks, index) is not applied to your repo (kept in {archive})"
            ));
        }
        if !others.is_empty() {
            out.push(format!(
                "bottle {slug}: kept out of your dir ({} entr{}; in {archive}):",
                others.len(),
                if others.len() == 1 { "y" } else { "ies" }
            ));
            for (p, why) in others.iter().take(SHOWN) {
                out.push(format!("  {}: {why}", shown(p)));
            }
            if others.len() > SHOWN {
                out.push(format!("  … and {} more", others.len() - SHOWN));
            }
        }
        if let Some(dir) = &f.backup_dir {
            out.push(format!(
                "bottle {slug}: {} entr{} of yours the agent replaced or removed {} in {}",
                f.replaced.len() + f.removed.len(),
                if f.replaced.len() + f.removed.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                if f.replaced.len() + f.removed.len() == 1 {
                    "is"
                } else {
                    "are"
                },
                dir.display()
            ));
        }
        for (p, why) in f.kept_yours.iter().take(SHOWN) {
            out.push(format!(
                "bottle {slug}: the agent removed {}, kept: {why}",
                shown(p)
            ));
        }
        for (p, e) in f.failed.iter().take(SHOWN) {
            out.push(format!(
                "bottle {slug}: could not bring back {}: {}",
                shown(p),
                safe(e)
            ));
        }
        out
    }
}

/// Where what does not come back into your dir goes: beside the run's kept log, so it
/// outlives the state dir (`<state root>/logs/<slug>.set-aside.tar`, and
/// `<slug>.replaced/` for your entries the agent replaced or removed).
pub fn destinations(state_dir: &Path) -> merge::Destinations {
    let log = crate::state::archived_log(state_dir);
    merge::Destinations {
        archive: log.with_extension("set-aside.tar"),
        backup: log.with_extension("replaced"),
        changes: log.with_extension("changes.txt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_in_the_list_of_changes_cannot_forge_a_line() {
        let t = tempfile::tempdir().unwrap();
        let report = merge::Report {
            written: vec![PathBuf::from("a\nremoved src/main.rs")],
            ..merge::Report::default()
        };
        let list = t.path().join("changes.txt");
        write_changes(&list, t.path(), &report).unwrap();
        let text = std::fs::read_to_string(&list).unwrap();
        assert_eq!(text, "written a\\x0aremoved src/main.rs\n");
    }
}
