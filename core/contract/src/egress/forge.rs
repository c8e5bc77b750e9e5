//! Forge-aware defaults: what a credential on a forge's API may not do unless its route says
//! so (`allow:`).
//!
//! git-gate controls what reaches a repository's branches (policy, secret scan, no force, no
//! CI changes); a token on the forge's API could do all of that around it (move a ref, write
//! a file, merge), or open a channel past the allowlist (a webhook posts repository data to
//! any host; a deploy key or a collaborator lets someone else in; a workflow dispatch runs
//! CI with the repository's secrets). So a credentialed route to a forge's API refuses those
//! calls by default. Issues, pull requests, comments, reviews and every read pass.
//!
//! [`GITHUB`] and [`GITLAB`] are the one reviewed table per forge, in order: the first row
//! that matches a request decides. Every row has an example request its test checks. A
//! refusal names the row's id and the `allow:` entry that would lift it.

use super::PathPattern;

/// A forge whose API bottle knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    /// `api.github.com`, `uploads.github.com`.
    GitHub,
    /// `gitlab.com` (its API under `/api/`).
    GitLab,
}

/// What a row does with a request it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused, unless the route's `allow` lifts it.
    Deny,
    /// Passes.
    Pass,
    /// A GraphQL document: its mutations are checked against [`GITHUB_MUTATIONS`].
    GraphQl,
}

/// One row of a forge's table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The rule's id, named in a refusal.
    pub id: &'static str,
    /// What it is about, in words.
    pub what: &'static str,
    /// Refuse, pass or look into the body.
    pub verdict: Verdict,
    /// The methods it covers; empty: every method that writes (all but GET, HEAD, OPTIONS).
    pub methods: &'static [&'static str],
    /// A glob (`bottle_contract::egress::PathPattern::parse_exact`: a path without `*`
    /// matches itself only).
    pub path: &'static str,
    /// A request the row decides (method, path), for its test.
    pub example: (&'static str, &'static str),
}

/// Whether `method` only reads.
pub fn is_read(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

macro_rules! row {
    ($id:literal, $verdict:ident, [$($m:literal),*], $path:literal, $what:literal, $em:literal $ep:literal) => {
        Row {
            id: $id,
            what: $what,
            verdict: Verdict::$verdict,
            methods: &[$($m),*],
            path: $path,
            example: ($em, $ep),
        }
    };
}

/// GitHub's REST and GraphQL API (`api.github.com`, `uploads.github.com`).
pub const GITHUB: &[Row] = &[
    row!("github-git-data", Deny, [], "/repos/*/*/git/**",
        "creates, moves or deletes refs and git objects (push through git-gate instead)",
        "PATCH" "/repos/o/r/git/refs/heads/main"),
    row!("github-contents", Deny, ["PUT", "DELETE"], "/repos/*/*/contents/**",
        "writes or deletes a file as a commit git-gate's scan never sees",
        "PUT" "/repos/o/r/contents/src/a.rs"),
    row!("github-merge", Deny, ["PUT"], "/repos/*/*/pulls/*/merge",
        "merges a pull request", "PUT" "/repos/o/r/pulls/7/merge"),
    row!("github-merge", Deny, ["PUT"], "/repos/*/*/pulls/*/update-branch",
        "merges the base branch into a pull request's branch", "PUT" "/repos/o/r/pulls/7/update-branch"),
    row!("github-merge", Deny, ["POST"], "/repos/*/*/merges",
        "merges one branch into another", "POST" "/repos/o/r/merges"),
    row!("github-merge", Deny, ["POST"], "/repos/*/*/merge-upstream",
        "merges upstream into a fork's branch", "POST" "/repos/o/r/merge-upstream"),
    row!("github-webhooks", Deny, [], "/repos/*/*/hooks/**",
        "a webhook posts repository data to any host, allowlist or not",
        "POST" "/repos/o/r/hooks"),
    row!("github-deploy-keys", Deny, [], "/repos/*/*/keys/**",
        "a deploy key lets someone outside read or write the repository",
        "POST" "/repos/o/r/keys"),
    row!("github-collaborators", Deny, [], "/repos/*/*/collaborators/**",
        "adds or removes people with access", "PUT" "/repos/o/r/collaborators/someone"),
    row!("github-collaborators", Deny, [], "/repos/*/*/invitations/**",
        "changes invitations to the repository", "PATCH" "/repos/o/r/invitations/3"),
    row!("github-settings", Deny, ["PATCH", "DELETE"], "/repos/*/*",
        "changes the repository's settings (its visibility, its default branch) or deletes it",
        "PATCH" "/repos/o/r"),
    row!("github-settings", Deny, [], "/repos/*/*/branches/*/protection/**",
        "changes branch protection", "DELETE" "/repos/o/r/branches/main/protection"),
    row!("github-settings", Deny, [], "/repos/*/*/branches/*/rename",
        "renames a branch", "POST" "/repos/o/r/branches/main/rename"),
    row!("github-settings", Deny, [], "/repos/*/*/rulesets/**",
        "changes rulesets", "POST" "/repos/o/r/rulesets"),
    row!("github-settings", Deny, [], "/repos/*/*/environments/**",
        "changes deployment environments and their secrets", "PUT" "/repos/o/r/environments/prod"),
    row!("github-settings", Deny, [], "/repos/*/*/pages/**",
        "changes GitHub Pages", "POST" "/repos/o/r/pages"),
    row!("github-settings", Deny, ["POST"], "/repos/*/*/transfer",
        "transfers the repository", "POST" "/repos/o/r/transfer"),
    row!("github-actions", Deny, [], "/repos/*/*/actions/**",
        "changes Actions secrets, variables, runners, or starts workflows (which run with the repository's secrets)",
        "PUT" "/repos/o/r/actions/secrets/TOKEN"),
    row!("github-actions", Deny, ["POST"], "/repos/*/*/dispatches",
        "starts workflows with a repository dispatch", "POST" "/repos/o/r/dispatches"),
    row!("github-actions", Deny, [], "/repos/*/*/dependabot/**",
        "changes Dependabot secrets", "PUT" "/repos/o/r/dependabot/secrets/X"),
    row!("github-actions", Deny, [], "/repos/*/*/codespaces/**",
        "changes Codespaces and their secrets", "POST" "/repos/o/r/codespaces"),
    row!("github-checks", Deny, ["POST"], "/repos/*/*/statuses/*",
        "sets a commit status (tells a human CI passed)", "POST" "/repos/o/r/statuses/abc"),
    row!("github-checks", Deny, [], "/repos/*/*/check-runs/**",
        "creates or changes check runs (tell a human CI passed)", "POST" "/repos/o/r/check-runs"),
    row!("github-checks", Deny, [], "/repos/*/*/check-suites/**",
        "creates or changes check suites", "POST" "/repos/o/r/check-suites"),
    row!("github-releases", Deny, [], "/repos/*/*/releases/**",
        "creates or changes releases (they make tags) or uploads their assets",
        "POST" "/repos/o/r/releases/1/assets"),
    row!("github-new-repos", Deny, ["POST"], "/repos/*/*/forks",
        "forks the repository where this bottle's policy does not reach", "POST" "/repos/o/r/forks"),
    row!("github-new-repos", Deny, ["POST"], "/repos/*/*/generate",
        "makes a repository from a template", "POST" "/repos/o/r/generate"),
    row!("github-account", Deny, [], "/user/**",
        "changes your account (its SSH and GPG keys, emails, repositories, settings)",
        "POST" "/user/keys"),
    row!("github-account", Deny, [], "/orgs/**",
        "changes an organisation (its members, hooks, secrets, repositories)",
        "POST" "/orgs/o/hooks"),
    row!("github-account", Deny, [], "/authorizations/**",
        "changes OAuth authorizations", "POST" "/authorizations"),
    row!("github-account", Deny, [], "/applications/**",
        "changes OAuth applications and their tokens", "DELETE" "/applications/x/token"),
    row!("github-gists", Deny, [], "/gists/**",
        "a gist is a paste anyone may read: a channel past the allowlist", "POST" "/gists"),
    row!("github-issues", Pass, [], "/repos/*/*/issues/**",
        "issues and their comments, labels, assignees and reactions", "POST" "/repos/o/r/issues/7/comments"),
    row!("github-pulls", Pass, ["POST"], "/repos/*/*/pulls",
        "opens a pull request", "POST" "/repos/o/r/pulls"),
    row!("github-pulls", Pass, ["PATCH"], "/repos/*/*/pulls/*",
        "edits a pull request", "PATCH" "/repos/o/r/pulls/7"),
    row!("github-pulls", Pass, [], "/repos/*/*/pulls/*/comments/**",
        "review comments", "POST" "/repos/o/r/pulls/7/comments"),
    row!("github-pulls", Pass, [], "/repos/*/*/pulls/*/reviews/**",
        "reviews", "POST" "/repos/o/r/pulls/7/reviews"),
    row!("github-pulls", Pass, [], "/repos/*/*/pulls/*/requested_reviewers",
        "requests reviewers", "POST" "/repos/o/r/pulls/7/requested_reviewers"),
    row!("github-pulls", Pass, [], "/repos/*/*/pulls/comments/**",
        "edits review comments", "PATCH" "/repos/o/r/pulls/comments/9"),
    row!("github-comments", Pass, [], "/repos/*/*/comments/**",
        "edits commit comments", "PATCH" "/repos/o/r/comments/9"),
    row!("github-comments", Pass, ["POST"], "/repos/*/*/commits/*/comments",
        "comments on a commit", "POST" "/repos/o/r/commits/abc/comments"),
    row!("github-labels", Pass, [], "/repos/*/*/labels/**",
        "labels", "POST" "/repos/o/r/labels"),
    row!("github-labels", Pass, [], "/repos/*/*/milestones/**",
        "milestones", "POST" "/repos/o/r/milestones"),
    row!("github-markdown", Pass, ["POST"], "/markdown/**",
        "renders Markdown", "POST" "/markdown"),
    row!("github-graphql", GraphQl, ["POST"], "/graphql",
        "a GraphQL document: only the mutations bottle knows to be safe pass", "POST" "/graphql"),
    row!("github-unlisted-write", Deny, [], "/**",
        "a write bottle does not know to be safe", "POST" "/repos/o/r/something-new"),
];

/// GitLab's API (`gitlab.com/api/v4`, `/api/graphql`); the rest of `gitlab.com` is its web.
pub const GITLAB: &[Row] = &[
    row!("gitlab-refs", Deny, [], "/api/v4/projects/*/repository/branches/**",
        "creates or deletes branches (push through git-gate instead)",
        "POST" "/api/v4/projects/1/repository/branches"),
    row!("gitlab-refs", Deny, [], "/api/v4/projects/*/repository/tags/**",
        "creates or deletes tags", "DELETE" "/api/v4/projects/1/repository/tags/v1"),
    row!("gitlab-files", Deny, [], "/api/v4/projects/*/repository/files/**",
        "writes or deletes a file as a commit git-gate's scan never sees",
        "PUT" "/api/v4/projects/1/repository/files/src%2Fa.rs"),
    row!("gitlab-files", Deny, [], "/api/v4/projects/*/repository/commits/**",
        "makes commits through the API", "POST" "/api/v4/projects/1/repository/commits"),
    row!("gitlab-merge", Deny, ["PUT", "POST"], "/api/v4/projects/*/merge_requests/*/merge",
        "merges a merge request", "PUT" "/api/v4/projects/1/merge_requests/7/merge"),
    row!("gitlab-merge", Deny, ["PUT", "POST"], "/api/v4/projects/*/merge_requests/*/rebase",
        "rebases a merge request's branch", "PUT" "/api/v4/projects/1/merge_requests/7/rebase"),
    row!("gitlab-webhooks", Deny, [], "/api/v4/projects/*/hooks/**",
        "a webhook posts project data to any host", "POST" "/api/v4/projects/1/hooks"),
    row!("gitlab-webhooks", Deny, [], "/api/v4/hooks/**",
        "system hooks", "POST" "/api/v4/hooks"),
    row!("gitlab-deploy-keys", Deny, [], "/api/v4/projects/*/deploy_keys/**",
        "deploy keys let someone outside in", "POST" "/api/v4/projects/1/deploy_keys"),
    row!("gitlab-deploy-keys", Deny, [], "/api/v4/projects/*/deploy_tokens/**",
        "deploy tokens", "POST" "/api/v4/projects/1/deploy_tokens"),
    row!("gitlab-deploy-keys", Deny, [], "/api/v4/projects/*/access_tokens/**",
        "project access tokens", "POST" "/api/v4/projects/1/access_tokens"),
    row!("gitlab-members", Deny, [], "/api/v4/projects/*/members/**",
        "adds or removes members", "POST" "/api/v4/projects/1/members"),
    row!("gitlab-members", Deny, [], "/api/v4/projects/*/invitations/**",
        "invitations", "POST" "/api/v4/projects/1/invitations"),
    row!("gitlab-members", Deny, [], "/api/v4/projects/*/share/**",
        "shares the project with a group", "POST" "/api/v4/projects/1/share"),
    row!("gitlab-settings", Deny, ["PUT", "DELETE"], "/api/v4/projects/*",
        "changes the project's settings (its visibility) or deletes it",
        "PUT" "/api/v4/projects/1"),
    row!("gitlab-settings", Deny, [], "/api/v4/projects/*/protected_branches/**",
        "changes branch protection", "DELETE" "/api/v4/projects/1/protected_branches/main"),
    row!("gitlab-settings", Deny, [], "/api/v4/projects/*/protected_tags/**",
        "changes tag protection", "POST" "/api/v4/projects/1/protected_tags"),
    row!("gitlab-settings", Deny, [], "/api/v4/projects/*/transfer",
        "transfers the project", "PUT" "/api/v4/projects/1/transfer"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/variables/**",
        "changes CI/CD variables (the project's secrets)", "POST" "/api/v4/projects/1/variables"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/runners/**",
        "changes runners", "POST" "/api/v4/projects/1/runners"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/pipeline/**",
        "starts a pipeline (it runs with the project's secrets)", "POST" "/api/v4/projects/1/pipeline"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/pipelines/**",
        "retries or cancels pipelines", "POST" "/api/v4/projects/1/pipelines/3/retry"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/trigger/**",
        "triggers a pipeline", "POST" "/api/v4/projects/1/trigger/pipeline"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/triggers/**",
        "pipeline trigger tokens", "POST" "/api/v4/projects/1/triggers"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/pipeline_schedules/**",
        "pipeline schedules", "POST" "/api/v4/projects/1/pipeline_schedules"),
    row!("gitlab-ci", Deny, [], "/api/v4/projects/*/jobs/**",
        "plays or retries jobs", "POST" "/api/v4/projects/1/jobs/5/play"),
    row!("gitlab-releases", Deny, [], "/api/v4/projects/*/releases/**",
        "creates or changes releases (they make tags)", "POST" "/api/v4/projects/1/releases"),
    row!("gitlab-releases", Deny, [], "/api/v4/projects/*/uploads/**",
        "uploads files to the project", "POST" "/api/v4/projects/1/uploads"),
    row!("gitlab-releases", Deny, [], "/api/v4/projects/*/packages/**",
        "publishes packages", "PUT" "/api/v4/projects/1/packages/generic/x/1/a.tgz"),
    row!("gitlab-new-projects", Deny, ["POST"], "/api/v4/projects",
        "makes a project", "POST" "/api/v4/projects"),
    row!("gitlab-new-projects", Deny, ["POST"], "/api/v4/projects/*/fork",
        "forks the project where this bottle's policy does not reach", "POST" "/api/v4/projects/1/fork"),
    row!("gitlab-account", Deny, [], "/api/v4/user/**",
        "changes your account (its keys, tokens, emails)", "POST" "/api/v4/user/keys"),
    row!("gitlab-account", Deny, [], "/api/v4/users/**",
        "changes users", "POST" "/api/v4/users/1/keys"),
    row!("gitlab-account", Deny, [], "/api/v4/groups/**",
        "changes groups (their members, variables, hooks)", "POST" "/api/v4/groups/1/variables"),
    row!("gitlab-graphql", Deny, [], "/api/graphql",
        "GraphQL can do all the REST rules refuse", "POST" "/api/graphql"),
    row!("gitlab-issues", Pass, [], "/api/v4/projects/*/issues/**",
        "issues and their notes", "POST" "/api/v4/projects/1/issues/7/notes"),
    row!("gitlab-merge-requests", Pass, ["POST"], "/api/v4/projects/*/merge_requests",
        "opens a merge request", "POST" "/api/v4/projects/1/merge_requests"),
    row!("gitlab-merge-requests", Pass, ["PUT"], "/api/v4/projects/*/merge_requests/*",
        "edits a merge request", "PUT" "/api/v4/projects/1/merge_requests/7"),
    row!("gitlab-merge-requests", Pass, [], "/api/v4/projects/*/merge_requests/*/notes/**",
        "merge request notes", "POST" "/api/v4/projects/1/merge_requests/7/notes"),
    row!("gitlab-merge-requests", Pass, [], "/api/v4/projects/*/merge_requests/*/discussions/**",
        "merge request discussions", "POST" "/api/v4/projects/1/merge_requests/7/discussions"),
    row!("gitlab-merge-requests", Pass, ["POST"], "/api/v4/projects/*/merge_requests/*/approve",
        "approves a merge request (a review)", "POST" "/api/v4/projects/1/merge_requests/7/approve"),
    row!("gitlab-labels", Pass, [], "/api/v4/projects/*/labels/**",
        "labels", "POST" "/api/v4/projects/1/labels"),
    row!("gitlab-labels", Pass, [], "/api/v4/projects/*/milestones/**",
        "milestones", "POST" "/api/v4/projects/1/milestones"),
    row!("gitlab-markdown", Pass, ["POST"], "/api/v4/markdown",
        "renders Markdown", "POST" "/api/v4/markdown"),
    row!("gitlab-unlisted-write", Deny, [], "/api/**",
        "a write bottle does not know to be safe", "POST" "/api/v4/projects/1/something-new"),
];

/// The GitHub GraphQL mutations that pass: issues, pull requests, comments, reviews and
/// labels. Every other mutation (merging, refs, commits, settings, …) is refused.
pub const GITHUB_MUTATIONS: &[&str] = &[
    "addAssigneesToAssignable",
    "addComment",
    "addLabelsToLabelable",
    "addPullRequestReview",
    "addPullRequestReviewComment",
    "addPullRequestReviewThread",
    "addPullRequestReviewThreadReply",
    "addReaction",
    "closeIssue",
    "closePullRequest",
    "convertPullRequestToDraft",
    "createIssue",
    "createPullRequest",
    "deleteIssueComment",
    "deletePullRequestReview",
    "deletePullRequestReviewComment",
    "markPullRequestReadyForReview",
    "minimizeComment",
    "removeAssigneesFromAssignable",
    "removeLabelsFromLabelable",
    "removeReaction",
    "reopenIssue",
    "reopenPullRequest",
    "requestReviews",
    "resolveReviewThread",
    "submitPullRequestReview",
    "unminimizeComment",
    "unresolveReviewThread",
    "updateIssue",
    "updateIssueComment",
    "updatePullRequest",
    "updatePullRequestReview",
    "updatePullRequestReviewComment",
];

impl Forge {
    /// The forge whose API `host` (a route's exact host, lower case) is, if bottle knows it.
    pub fn of(host: &str) -> Option<Forge> {
        match host {
            "api.github.com" | "uploads.github.com" => Some(Forge::GitHub),
            "gitlab.com" => Some(Forge::GitLab),
            _ => None,
        }
    }

    /// Its table.
    pub fn rows(self) -> &'static [Row] {
        match self {
            Forge::GitHub => GITHUB,
            Forge::GitLab => GITLAB,
        }
    }

    /// The row that decides `method` on `segments`, if any (reads pass every table).
    pub fn decide(self, method: &str, segments: &[String]) -> Option<&'static Row> {
        if is_read(method) {
            return None;
        }
        self.rows().iter().find(|r| {
            (r.methods.is_empty() || r.methods.contains(&method))
                && PathPattern::parse_exact(r.path).is_ok_and(|p| p.matches(segments, true))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        crate::egress::request_segments(p).unwrap()
    }

    /// Every row's example is decided by that row (or, for a row shadowed on purpose, by a row
    /// of the same id), and every row's pattern parses.
    #[test]
    fn every_row_decides_its_example() {
        for forge in [Forge::GitHub, Forge::GitLab] {
            for row in forge.rows() {
                PathPattern::parse_exact(row.path).unwrap_or_else(|e| panic!("{}: {e}", row.id));
                let (m, p) = row.example;
                let decided = forge
                    .decide(m, &segs(p))
                    .unwrap_or_else(|| panic!("{}: {m} {p} is decided by no row", row.id));
                assert_eq!(decided.id, row.id, "{m} {p}");
                assert_eq!(decided.verdict, row.verdict, "{m} {p}");
            }
        }
    }

    #[test]
    fn reads_pass_and_case_or_trailing_slashes_do_not_dodge_a_row() {
        let d = |m: &str, p: &str| Forge::GitHub.decide(m, &segs(p)).map(|r| r.id);
        assert_eq!(d("GET", "/repos/o/r/git/refs/heads/main"), None);
        assert_eq!(d("HEAD", "/repos/o/r/hooks"), None);
        assert_eq!(
            d("PATCH", "/REPOS/o/r/GIT/refs/heads/main"),
            Some("github-git-data")
        );
        assert_eq!(d("PATCH", "/repos/o/r/"), Some("github-settings"));
        assert_eq!(
            d("DELETE", "/repos/o/r/git/refs/heads/main/"),
            Some("github-git-data")
        );
        assert_eq!(d("PUT", "/repos/o/r/pulls/7/merge"), Some("github-merge"));
        assert_eq!(
            d("POST", "/repos/o/r/pulls/7/reviews"),
            Some("github-pulls")
        );
        assert_eq!(d("FOO", "/repos/o/r/issues"), Some("github-issues"));
        assert_eq!(d("FOO", "/repos/o/r/x"), Some("github-unlisted-write"));
        let g = |m: &str, p: &str| Forge::GitLab.decide(m, &segs(p)).map(|r| r.id);
        assert_eq!(
            g("POST", "/group/project/-/issues"),
            None,
            "the web, not the API"
        );
        assert_eq!(
            g(
                "PUT",
                "/api/v4/projects/group%2Fproject/repository/files/a%2Fb.rs"
            ),
            Some("gitlab-files")
        );
    }
}
