//! CI definitions a push may not change: a workflow added or edited on any branch runs with
//! the repository's secrets (GitHub runs `pull_request_target` and `push` workflows from the
//! pushed branch; GitLab runs a branch's `.gitlab-ci.yml`), so a push that changes one is
//! refused unless the repo's policy says `allow_ci_changes`.
//!
//! A CI path counts as changed when the pushed tip holds it with other content than both the
//! repo's default branch and the ref's previous tip: merging the default branch in (whose CI
//! a human changed) is not the agent's change, removing a definition is not running one.

use std::process::Command;
use std::time::Duration;

/// CI definitions: a dir (every file below it) or a file, from the top of the tree.
pub const CI_PATHS: &[&str] = &[
    ".github/workflows/",
    ".github/actions/",
    ".gitlab-ci.yml",
    ".gitlab/ci/",
    ".circleci/",
    "Jenkinsfile",
    ".buildkite/",
    "azure-pipelines.yml",
    ".azure-pipelines/",
    ".travis.yml",
    "bitbucket-pipelines.yml",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker/",
];

/// How long the checks of one push may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The CI definitions `new` (a pushed tip) changes, compared with `old` (the ref's previous
/// tip; none for a new ref) and `head` (the repo's default branch, when it has one). `git()`
/// gives a `git` command in the repo (the hook's quarantine).
pub fn changed(
    git: &dyn Fn() -> Command,
    new: &str,
    old: Option<&str>,
    head: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut ls = git();
    ls.args(["ls-tree", "-r", "-z", "--full-tree", new, "--"])
        .args(CI_PATHS);
    let listed = crate::gitcmd::run(ls, "git ls-tree", TIMEOUT).map_err(|e| e.to_string())?;
    if !listed.status.success() {
        return Err(listed.reason());
    }
    let mut out = Vec::new();
    for entry in listed.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        // `<mode> <type> <id>\t<path>`
        let text = String::from_utf8_lossy(entry);
        let Some((meta, path)) = text.split_once('\t') else {
            continue;
        };
        let id = meta.split(' ').nth(2).unwrap_or_default();
        let same_in = |rev: Option<&str>| -> bool {
            rev.is_some_and(|r| blob_at(git, r, path).as_deref() == Some(id))
        };
        if !same_in(head) && !same_in(old) {
            out.push(path.to_owned());
        }
    }
    Ok(out)
}

/// The tip of the repo's default branch (what `HEAD` names), if it has one.
pub fn default_branch_tip(git: &dyn Fn() -> Command) -> Option<String> {
    let mut c = git();
    c.args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
    let out = crate::gitcmd::run(c, "git rev-parse", TIMEOUT).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The id of the blob at `path` in `rev`, if there is one.
fn blob_at(git: &dyn Fn() -> Command, rev: &str, path: &str) -> Option<String> {
    let mut c = git();
    c.args(["rev-parse", "--verify", "--quiet", &format!("{rev}:{path}")]);
    let out = crate::gitcmd::run(c, "git rev-parse", TIMEOUT).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_in(dir: &std::path::Path) -> impl Fn() -> Command + '_ {
        move || {
            let mut c = Command::new("git");
            c.current_dir(dir)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"]);
            c
        }
    }

    fn sh(c: &mut Command) -> String {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    #[test]
    fn a_changed_workflow_counts_and_one_merged_from_the_default_branch_does_not() {
        let t = tempfile::tempdir().unwrap();
        let g = git_in(t.path());
        sh(g().args(["init", "-q", "-b", "main"]));
        std::fs::create_dir_all(t.path().join(".github/workflows")).unwrap();
        std::fs::write(t.path().join(".github/workflows/ci.yml"), "on: push\n").unwrap();
        std::fs::write(t.path().join("a.txt"), "a\n").unwrap();
        sh(g().args(["add", "-A"]));
        sh(g().args(["commit", "-qm", "base"]));
        let base = sh(g().args(["rev-parse", "HEAD"]));
        // A branch that edits only code: no CI change.
        sh(g().args(["checkout", "-qb", "work"]));
        std::fs::write(t.path().join("a.txt"), "b\n").unwrap();
        sh(g().args(["commit", "-qam", "code"]));
        let code = sh(g().args(["rev-parse", "HEAD"]));
        assert_eq!(
            changed(&g, &code, None, Some(&base)).unwrap(),
            Vec::<String>::new()
        );
        // Editing the workflow, and adding a file that becomes one: both count.
        std::fs::write(
            t.path().join(".github/workflows/ci.yml"),
            "on: push\nrun: evil\n",
        )
        .unwrap();
        std::fs::write(t.path().join(".gitlab-ci.yml"), "x: 1\n").unwrap();
        sh(g().args(["add", "-A"]));
        sh(g().args(["commit", "-qm", "ci"]));
        let ci = sh(g().args(["rev-parse", "HEAD"]));
        assert_eq!(
            changed(&g, &ci, Some(&code), Some(&base)).unwrap(),
            [".github/workflows/ci.yml", ".gitlab-ci.yml"]
        );
        // The default branch's own CI, merged in: not the agent's change.
        sh(g().args(["checkout", "-q", "main"]));
        std::fs::write(
            t.path().join(".github/workflows/ci.yml"),
            "on: push\nhuman: edit\n",
        )
        .unwrap();
        sh(g().args(["commit", "-qam", "human"]));
        let main = sh(g().args(["rev-parse", "HEAD"]));
        sh(g().args(["checkout", "-qb", "work2", &code]));
        sh(g().args(["merge", "-q", "--no-edit", "main"]));
        let merged = sh(g().args(["rev-parse", "HEAD"]));
        assert_eq!(
            changed(&g, &merged, Some(&code), Some(&main)).unwrap(),
            Vec::<String>::new()
        );
    }
}
