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
