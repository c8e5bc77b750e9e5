//! The push policy, applied to the ref updates receive-pack read off the wire (never to what
//! a client claims in argv).

use bottle_contract::gate::{PushPolicy, ref_matches};

/// One line of pre-receive's stdin: `<old> <new> <ref>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The ref's value before (all zeros: a new ref).
    pub old: String,
    /// Its value after (all zeros: a delete).
    pub new: String,
    /// The full ref name.
    pub name: String,
}

impl Update {
    /// Parse one stdin line.
    pub fn parse(line: &str) -> Option<Update> {
        let mut f = line.split(' ');
        let (old, new, name) = (f.next()?, f.next()?, f.next()?);
        let hex =
            |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(old) && hex(new) && f.next().is_none() && !name.is_empty()).then(|| Update {
            old: old.to_owned(),
            new: new.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The ref is being created.
    pub fn creates(&self) -> bool {
        is_zero(&self.old)
    }

    /// The ref is being deleted.
    pub fn deletes(&self) -> bool {
        is_zero(&self.new)
    }
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// Whether `name` is a ref name git itself accepts (git-check-ref-format(1)). receive-pack
/// checks only after the pre-receive hook ran, and the hook's forward builds `<new>:<name>`:
/// a `:` in the name would make git read the part before it as a path inside the pushed
/// commit and push to the part after, a ref the policy never judged.
pub fn valid_ref_name(name: &str) -> bool {
    name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && name.bytes().all(|b| {
            b > b' ' && b != 0x7f && !matches!(b, b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
        })
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
}

/// Why an update is refused; each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More refs than the policy allows in one push.
    #[error(
        "this push updates {0} refs; git-gate takes at most {1} at once: push fewer branches at a time"
    )]
    TooManyRefs(usize, usize),
    /// Not a branch (nor an allowed tag).
    #[error("{0}: only branches (refs/heads/*) may be pushed through git-gate")]
    NotABranch(String),
    /// A tag, not allowed.
    #[error(
        "{0}: tags may not be pushed from this bottle; push a branch and tag it upstream (or set `tags: true` in this repo's `push:` in the manifest)"
    )]
    Tag(String),
    /// A delete, not allowed.
    #[error(
        "{0}: deleting refs is not allowed from this bottle; ask a human to delete it upstream (or set `delete: true` in this repo's `push:` in the manifest)"
    )]
    Delete(String),
    /// Not one of the allowed patterns.
    #[error(
        "{0}: this bottle may push only to {1}; push your work to a branch matching it (this repo's `push.allow` in the manifest says where)"
    )]
    NotAllowed(String, String),
    /// A rewrite of history, not allowed.
    #[error(
        "{0}: non-fast-forward (force) pushes are not allowed; fetch, rebase or merge onto the current branch, then push again (or set `force: true` in this repo's `push:` in the manifest)"
    )]
    Force(String),
}

/// Check every update against `policy`; `is_fast_forward(old, new)` says whether `new`
/// contains `old`.
pub fn check(
    updates: &[Update],
    policy: &PushPolicy,
    is_fast_forward: impl Fn(&str, &str) -> bool,
) -> Result<(), Refusal> {
    if updates.len() > policy.max_refs {
        return Err(Refusal::TooManyRefs(updates.len(), policy.max_refs));
    }
    for u in updates {
        check_one(u, policy, &is_fast_forward)?;
    }
    Ok(())
}

fn check_one(
    u: &Update,
    policy: &PushPolicy,
    is_fast_forward: &impl Fn(&str, &str) -> bool,
) -> Result<(), Refusal> {
    let name = &u.name;
    let tag = name.starts_with("refs/tags/");
    if !name.starts_with("refs/heads/") && !tag {
        return Err(Refusal::NotABranch(name.clone()));
    }
    if tag && !policy.allow_tags {
        return Err(Refusal::Tag(name.clone()));
    }
    if u.deletes() && !policy.allow_delete {
        return Err(Refusal::Delete(name.clone()));
    }
    if !policy.allow.is_empty() && !policy.allow.iter().any(|p| ref_matches(p, name)) {
        return Err(Refusal::NotAllowed(name.clone(), policy.allow.join(", ")));
    }
    // A tag that already exists moves only by force; a branch moves forward only.
    let rewrites = !u.creates() && !u.deletes() && (tag || !is_fast_forward(&u.old, &u.new));
    if rewrites && !policy.allow_force {
        return Err(Refusal::Force(name.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ref_names_git_accepts_are_valid() {
        for ok in [
            "refs/heads/main",
            "refs/heads/bottle/me/a-b_c.d",
            "refs/tags/v1.2",
        ] {
            assert!(valid_ref_name(ok), "{ok}");
        }
        for bad in [
            "refs/heads/bottle/me/a:refs/heads/main",
            "refs/heads/a b",
            "refs/heads/a\nb",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/x.",
            "refs/heads/x/",
            "refs/heads//x",
            "refs/heads/a@{1}",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/a\u{7f}",
            "HEAD",
            "main",
        ] {
            assert!(!valid_ref_name(bad), "{bad:?}");
        }
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn up(old: &str, new: &str, name: &str) -> Update {
        Update::parse(&format!("{old} {new} {name}")).unwrap()
    }

    #[test]
    fn the_default_allows_new_and_fast_forward_branches_only() {
        let p = PushPolicy::default();
        let ff = |_: &str, _: &str| true;
        let not_ff = |_: &str, _: &str| false;
        assert_eq!(check(&[up(Z, A, "refs/heads/new")], &p, not_ff), Ok(()));
        assert_eq!(check(&[up(A, B, "refs/heads/main")], &p, ff), Ok(()));
        assert_eq!(
            check(&[up(A, B, "refs/heads/main")], &p, not_ff),
            Err(Refusal::Force("refs/heads/main".into()))
        );
        assert_eq!(
            check(&[up(A, Z, "refs/heads/main")], &p, ff),
            Err(Refusal::Delete("refs/heads/main".into()))
        );
        assert_eq!(
            check(&[up(Z, A, "refs/tags/v1")], &p, ff),
            Err(Refusal::Tag("refs/tags/v1".into()))
        );
        assert_eq!(
            check(&[up(Z, A, "refs/notes/commits")], &p, ff),
            Err(Refusal::NotABranch("refs/notes/commits".into()))
        );
        let many: Vec<Update> = (0..65)
            .map(|i| up(Z, A, &format!("refs/heads/b{i}")))
            .collect();
        assert_eq!(check(&many, &p, ff), Err(Refusal::TooManyRefs(65, 64)));
    }

    #[test]
    fn grants_and_patterns() {
        let p = PushPolicy {
            allow: vec!["refs/heads/bottle/me/*".into(), "refs/tags/*".into()],
            allow_force: true,
            allow_delete: true,
            allow_tags: true,
            allow_ci_changes: false,
            max_refs: 64,
        };
        let not_ff = |_: &str, _: &str| false;
        assert_eq!(
            check(&[up(A, B, "refs/heads/bottle/me/x")], &p, not_ff),
            Ok(())
        );
        assert_eq!(
            check(&[up(A, Z, "refs/heads/bottle/me/x")], &p, not_ff),
            Ok(())
        );
        assert_eq!(check(&[up(A, B, "refs/tags/v1")], &p, not_ff), Ok(()));
        assert!(matches!(
            check(&[up(Z, A, "refs/heads/main")], &p, not_ff),
            Err(Refusal::NotAllowed(..))
        ));
    }

    #[test]
    fn malformed_lines_do_not_parse() {
        for bad in [
            "",
            "a b c",
            &format!("{A} {B}"),
            &format!("{A} {B} r extra"),
            &format!("{A}x {B} r"),
        ] {
            assert!(Update::parse(bad).is_none(), "{bad}");
        }
        assert!(up(Z, A, "r").creates() && up(A, Z, "r").deletes());
    }
}
