//! What `bottle verify` and its probe say to each other.
//!
//! The host writes a [`Plan`] (addresses it created, the bundle's declared ports, the proxy)
//! as the probe's one argument; the probe runs every probe inside the agent container, as the
//! agent's user, and prints its [`Finding`]s as one JSON array. Nothing secret is in either.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// What the probe is told to try.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The agent's working dir.
    pub workdir: String,
    /// Whether the agent may be root (`--grant agent=root`).
    pub root_granted: bool,
    /// Listeners the suite started (on addresses it created), each of which the agent must
    /// not reach directly.
    pub listeners: Vec<Target>,
    /// Other bottles' containers (their egress port), which the agent must not reach either.
    #[serde(default)]
    pub others: Vec<Target>,
    /// The bundle's address on the agent's network.
    pub bundle: Option<IpAddr>,
    /// The bundle ports the plan declares to the agent.
    pub declared_ports: Vec<u16>,
    /// The agent's proxy (`host:port`), when it has one.
    pub proxy: Option<String>,
    /// A fresh random name the agent must not resolve.
    pub dns_name: String,
    /// A host the bottle allows, for the HTTPS git push through the proxy.
    pub allowed_host: Option<String>,
    /// The CA bundle the agent trusts (PEM).
    pub ca_bundle: Option<String>,
    /// Requests egress's route rules must refuse before dialling anything (method rules,
    /// `deny` entries, forge defaults), each chosen so that it would do no harm even if it
    /// got through.
    #[serde(default)]
    pub ruled: Vec<RuledRequest>,
}

/// A request a route's rules refuse, for the probe to send through the proxy (over TLS, as
/// the agent's tools would) and see refused with `X-Bottle-Block: route-rule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuledRequest {
    /// The finding's id (`route-method`, `route-deny`, `forge-default`).
    pub probe: String,
    /// The route's host.
    pub host: String,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The rule that refuses it (`methods`, `deny[0]`, `github-git-data`).
    pub rule: String,
}

/// A listener the suite started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// What it is, in words (`the host, on the egress bridge`).
    pub what: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// How one probe came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The box held.
    Pass,
    /// Something escaped.
    Fail,
    /// Not applicable here (says why).
    Skip,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Short id (`raw-socket`).
    pub probe: String,
    /// What was tried.
    pub tried: String,
    /// What happened.
    pub happened: String,
    /// The verdict.
    pub verdict: Verdict,
}

impl Finding {
    /// A finding: `held` says whether the box held.
    pub fn new(
        probe: &str,
        tried: impl Into<String>,
        happened: impl Into<String>,
        held: bool,
    ) -> Self {
        Finding {
            probe: probe.to_owned(),
            tried: tried.into(),
            happened: happened.into(),
            verdict: if held { Verdict::Pass } else { Verdict::Fail },
        }
    }

    /// A probe that does not apply here.
    pub fn skip(probe: &str, tried: impl Into<String>, why: impl Into<String>) -> Self {
        Finding {
            probe: probe.to_owned(),
            tried: tried.into(),
            happened: why.into(),
            verdict: Verdict::Skip,
        }
    }
}

/// The line the probe plants in git configs: a command git would run (`core.fsmonitor`), so
/// the host can tell its own dir never got it.
pub const PLANTED_MARK: &str = "bottle-verify-planted";

/// Something the probe plants in the working dir that your own git would run if it reached
/// your dir: the host then checks its dir (nothing during the run) and what the merge would
/// bring back at the end (nothing of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plant {
    /// The finding's id.
    pub id: &'static str,
    /// What is planted, in words.
    pub what: &'static str,
    /// The path that would run, relative to the working dir.
    pub path: &'static str,
    /// Whether it needs the working dir to be a repo (`.git` there).
    pub in_repo: bool,
}

/// Everything the probe plants ([`Plant`]).
pub const PLANTS: &[Plant] = &[
    Plant {
        id: "workdir-git-config",
        what: "core.fsmonitor appended to the repo's .git/config",
        path: ".git/config",
        in_repo: true,
    },
    Plant {
        id: "workdir-git-hook",
        what: "a post-checkout hook in .git/hooks",
        path: ".git/hooks/post-checkout",
        in_repo: true,
    },
    Plant {
        id: "workdir-git-rename",
        what: ".git moved aside and a new .git planted in its place",
        path: ".git-bottle-verify",
        in_repo: true,
    },
    Plant {
        id: "workdir-nested-repo",
        what: "a nested repo whose config runs core.fsmonitor",
        path: "bottle-verify-nested/.git",
        in_repo: false,
    },
    Plant {
        id: "workdir-gitdir-file",
        what: "a `gitdir:` file pointing at a git dir the agent made",
        path: "bottle-verify-gitfile/.git",
        in_repo: false,
    },
    Plant {
        id: "workdir-bare-repo",
        what: "a bare-repo shape (HEAD, objects/, refs/, config)",
        path: "bottle-verify-bare/HEAD",
        in_repo: false,
    },
];

/// The dirs of the working dir the plants live in, which the suite removes from the agent's
/// layer after the host checked them (`.git` is the repo's own).
pub const PLANT_DIRS: &[&str] = &[
    ".git-bottle-verify",
    "bottle-verify-nested",
    "bottle-verify-gitfile",
    "bottle-verify-gitdir",
    "bottle-verify-bare",
];
