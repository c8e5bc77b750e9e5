//! The agent container's confinement: whom it runs as, what it may write, what it may use.
//!
//! The manifest chooses the user and the limits (`user:`, `resources:`); everything else is
//! fixed here and applied by the host whatever the backend rendered (see
//! `docker::up::confine_agent`): no capabilities, no privilege gain, a read-only root with
//! writable tmpfs at `/tmp` and the home dir, no IPv6, and a resolver that never forwards a
//! name out of the agent's own network namespace.

use std::fmt;

/// The uid:gid the agent gets when bottle itself runs as root and the image names no user.
pub const FALLBACK_USER: &str = "1000:1000";
/// The agent's home (a tmpfs) unless the manifest's env sets `HOME`.
pub const DEFAULT_HOME: &str = "/home/agent";
/// Default memory limit: 4 GiB (swap included, so it is a real cap).
pub const DEFAULT_MEMORY: u64 = 4 << 30;
/// Default process limit.
pub const DEFAULT_PIDS: i64 = 4096;
/// The sidecar bundle's default memory limit: 2 GiB (swap included). A flood from the agent
/// ends in refusals the daemons can afford, never in the bundle eating the host.
pub const BUNDLE_MEMORY: u64 = 2 << 30;
/// The sidecar bundle's default process limit.
pub const BUNDLE_PIDS: i64 = 1024;

/// Whom the manifest says the agent runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UserChoice {
    /// The user who runs bottle (`user:` absent), so the files it writes are theirs.
    #[default]
    Invoker,
    /// `user: UID[:GID]` or a name the image knows.
    Named(String),
}

impl UserChoice {
    /// Parse the manifest's `user:` value; `None` says what is wrong.
    pub fn parse(s: &str) -> Result<UserChoice, String> {
        let s = s.trim();
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let name_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(user) || group.is_some_and(|g| !name_ok(g)) {
            return Err(format!(
                "`{s}` is not a user; give `UID`, `UID:GID` or a user name the image knows, e.g. `1000:1000`"
            ));
        }
        Ok(UserChoice::Named(s.to_owned()))
    }

    /// Whether this names root (uid 0 or `root`), which needs `--grant agent=root`.
    pub fn is_root(&self) -> bool {
        match self {
            UserChoice::Invoker => false,
            UserChoice::Named(s) => {
                let user = s.split(':').next().unwrap_or(s);
                user == "root" || user.parse::<u32>() == Ok(0)
            }
        }
    }
}

/// The manifest's `resources:`, with defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Memory cap in bytes (swap included).
    pub memory: u64,
    /// Process cap.
    pub pids: i64,
    /// CPU cap in billionths of a CPU, if any.
    pub nano_cpus: Option<i64>,
}

impl Resources {
    /// The sidecar bundle's limits unless `resources.bundle` says otherwise.
    pub fn bundle_default() -> Resources {
        Resources {
            memory: BUNDLE_MEMORY,
            pids: BUNDLE_PIDS,
            nano_cpus: None,
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory: DEFAULT_MEMORY,
            pids: DEFAULT_PIDS,
            nano_cpus: None,
        }
    }
}

/// Parse a size such as `512m`, `4g`, `4GiB` or `1073741824` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. `512m` or `4g`"))?;
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{s}`: unknown unit; use k, m or g (e.g. `4g`)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Everything the host enforces on the agent container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Whom it runs as.
    pub user: UserChoice,
    /// Whether `--grant agent=root` allows root.
    pub root_granted: bool,
    /// The agent's home dir (a tmpfs it owns).
    pub home: String,
    /// Limits.
    pub resources: Resources,
    /// The working dir is a bottle-owned tmpfs volume (`cwd: copy` and `cwd: none`) rather
    /// than the user's dir bind-mounted.
    pub workdir_volume: bool,
}

impl Confinement {
    /// The `uid:gid` (or name) Docker runs the agent as, given who runs bottle and the image's
    /// own `USER`; root only with `--grant agent=root`. When bottle runs as root (as in CI) the agent never inherits that: it gets
    /// the image's user, or [`FALLBACK_USER`] when that is empty or root.
    pub fn docker_user(&self, invoker: (u32, u32), image_user: Option<&str>) -> String {
        match &self.user {
            UserChoice::Named(s) => s.clone(),
            UserChoice::Invoker if self.root_granted => "0:0".to_owned(),
            UserChoice::Invoker if invoker.0 != 0 => format!("{}:{}", invoker.0, invoker.1),
            UserChoice::Invoker => match image_user.map(str::trim) {
                Some(u) if !u.is_empty() && !UserChoice::Named(u.to_owned()).is_root() => {
                    u.to_owned()
                }
                _ => FALLBACK_USER.to_owned(),
            },
        }
    }

    /// The numeric uid and gid of a `uid:gid` user, for tmpfs ownership; `None` for a name.
    pub fn numeric_ids(user: &str) -> Option<(u32, u32)> {
        let (u, g) = user.split_once(':').unwrap_or((user, user));
        Some((u.parse().ok()?, g.parse().ok()?))
    }
}

/// The numeric `(uid, gid)` of user spec `spec` (`NAME` or `UID`, either with `:GROUP` or
/// `:GID`) in an image whose `/etc/passwd` and `/etc/group` are `passwd` and `group` (`None`:
/// it has none), as Docker would run it. A name must be in them. A uid with no group takes
/// its passwd entry's group, or its own number when it has no entry: never the root group
/// Docker would give it then.
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u32, u32), String> {
    // `name:password:id:...`: the id of the entry whose name or id is `key`.
    fn entry<'a>(file: Option<&'a str>, key: &str) -> Option<Vec<&'a str>> {
        file?
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && (f[0] == key || f[2] == key))
    }
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let found = entry(passwd, user);
    let uid = match (user.parse::<u32>(), &found) {
        (Ok(uid), _) => uid,
        (Err(_), Some(f)) => f[2]
            .parse()
            .map_err(|_| format!("its /etc/passwd gives `{user}` the uid `{}`", f[2]))?,
        (Err(_), None) => {
            return Err(format!(
                "the image has no user `{user}` (it is not in the image's /etc/passwd)"
            ));
        }
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(group, g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("the image has no group `{g}` (it is not in the image's /etc/group)")
                })?,
        },
        None => match &found {
            Some(f) => f[3]
                .parse()
                .map_err(|_| format!("its /etc/passwd gives `{user}` the group `{}`", f[3]))?,
            None => uid,
        },
    };
    Ok((uid, gid))
}

impl fmt::Display for Confinement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = match &self.user {
            UserChoice::Invoker if self.root_granted => "root (--grant agent=root)",
            UserChoice::Invoker => "your uid:gid (the image's user or 1000 when run as root)",
            UserChoice::Named(s) => s,
        };
        write!(
            f,
            "user {user}, no capabilities, read-only root, {} MiB memory, {} processes",
            self.resources.memory >> 20,
            self.resources.pids
        )?;
        if let Some(n) = self.resources.nano_cpus {
            write!(f, ", {:.2} CPUs", n as f64 / 1e9)?;
        }
        Ok(())
    }
}

/// The uid and gid of the process running bottle.
pub fn invoker() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(user: UserChoice) -> Confinement {
        Confinement {
            user,
            root_granted: false,
            home: DEFAULT_HOME.into(),
            resources: Resources::default(),
            workdir_volume: false,
        }
    }

    #[test]
    fn the_agent_runs_as_the_invoker_and_never_inherits_root() {
        let c = conf(UserChoice::Invoker);
        assert_eq!(c.docker_user((1234, 99), Some("node")), "1234:99");
        assert_eq!(c.docker_user((0, 0), Some("node")), "node");
        assert_eq!(c.docker_user((0, 0), Some("")), FALLBACK_USER);
        assert_eq!(c.docker_user((0, 0), None), FALLBACK_USER);
        assert_eq!(c.docker_user((0, 0), Some("root")), FALLBACK_USER);
        assert_eq!(c.docker_user((0, 0), Some("0:0")), FALLBACK_USER);
        let named = conf(UserChoice::parse("2000:2000").unwrap());
        assert_eq!(named.docker_user((1234, 99), None), "2000:2000");
    }

    #[test]
    fn users_parse_and_root_is_recognised() {
        for root in ["0", "root", "0:0", "root:wheel", "00"] {
            assert!(UserChoice::parse(root).unwrap().is_root(), "{root}");
        }
        for ok in ["1000", "1000:1000", "node", "node:staff"] {
            assert!(!UserChoice::parse(ok).unwrap().is_root(), "{ok}");
        }
        for bad in ["", ":", "a b", "1000:", "x;rm", "$(id)"] {
            assert!(UserChoice::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Confinement::numeric_ids("1000:50"), Some((1000, 50)));
        assert_eq!(Confinement::numeric_ids("1000"), Some((1000, 1000)));
        assert_eq!(Confinement::numeric_ids("node"), None);
    }

    #[test]
    fn a_user_named_in_the_image_is_resolved_by_its_files() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/sh\ntoor:x:0:0::/:/bin/sh\nlone:x:1500:300::/:/bin/sh\n";
        let group = "root:x:0:\nnode:x:1000:\nstaff:x:50:node\n";
        let r = |spec| resolve_user(spec, Some(passwd), Some(group));
        assert_eq!(r("node"), Ok((1000, 1000)));
        assert_eq!(r("node:staff"), Ok((1000, 50)));
        assert_eq!(r("node:77"), Ok((1000, 77)));
        assert_eq!(r("1500"), Ok((1500, 300)), "a uid takes its entry's group");
        assert_eq!(r("2000"), Ok((2000, 2000)), "never the root group");
        assert_eq!(r("2000:staff"), Ok((2000, 50)));
        assert_eq!(r("toor"), Ok((0, 0)), "root by another name is still uid 0");
        let e = r("ghost").unwrap_err();
        assert!(
            e.contains("no user `ghost`") && e.contains("/etc/passwd"),
            "{e}"
        );
        let e = r("node:ghosts").unwrap_err();
        assert!(
            e.contains("no group `ghosts`") && e.contains("/etc/group"),
            "{e}"
        );
        let e = resolve_user("node", None, None).unwrap_err();
        assert!(e.contains("no user `node`"), "{e}");
        let e = resolve_user("bad", Some("bad:x:many:1::/:/bin/sh\n"), None).unwrap_err();
        assert!(e.contains("the uid `many`"), "{e}");
    }

    #[test]
    fn sizes_parse_with_units_and_bad_ones_say_how() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1024"), Ok(1024));
        for bad in ["", "g", "4x", "-1g", "1.5g", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
