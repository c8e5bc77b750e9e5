//! Admission: the compose file a backend wrote is what reaches Docker, so it is checked
//! against the checked stack before anything starts (and in a dry run).
//!
//! Policy checks what the sidecars' fragments ask for; a backend (a `--plugin-dir` one named
//! `docker` included) could still render anything. Here every container, mount, privilege,
//! capability, port, network and security option must trace back to the stack: the agent and
//! the bundle get none of the powers a grant covers, a plugin's own service gets only what its
//! fragment asked for (and policy granted), and a bind mount's source is a path the stack names
//! or one of the backend's own documents, read-only.

use super::project::{ComposeFile, ComposeMount as Mount, ComposeService as Service};
use crate::model::{MountSource, NetworkRole, Stack};
use crate::plan::planner::BottlePlan;
use std::collections::BTreeSet;

use bottle_contract::layout::{AGENT_SERVICE, BUNDLE_SERVICE};
pub use bottle_contract::layout::{BUNDLE_COMPOSE_FILE, COMPOSE_FILE};

/// A compose file asks for something the stack does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {backend} backend's compose file {detail}; that is not in the checked plan, so nothing was started: remove the backend plugin from --plugin-dir or report it to its author"
)]
pub struct Refused {
    /// The backend.
    pub backend: String,
    /// What it asked for.
    pub detail: String,
}

/// Security options any container may carry.
const SAFE_SECURITY_OPTS: [&str; 2] = ["no-new-privileges:true", "no-new-privileges"];

/// Which services a compose document may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The agent, the bundle and plugins' services ([`COMPOSE_FILE`]).
    Whole,
    /// The bundle alone ([`BUNDLE_COMPOSE_FILE`]), beside an agent outside Docker, which
    /// reaches the container's own address: it publishes nothing either.
    BundleOnly,
}

/// Check every compose document of `plan`'s deployment against its stack: both reach Docker.
pub fn admit(plan: &BottlePlan) -> Result<(), Refused> {
    for (path, shape) in [
        (COMPOSE_FILE, Shape::Whole),
        (BUNDLE_COMPOSE_FILE, Shape::BundleOnly),
    ] {
        if let Some(doc) = plan.deployment.documents.iter().find(|d| d.path == path) {
            admit_file(plan, &doc.path, &doc.contents, shape)?;
        }
    }
    Ok(())
}

fn admit_file(plan: &BottlePlan, path: &str, contents: &str, shape: Shape) -> Result<(), Refused> {
    let refuse = |detail: String| Refused {
        backend: plan.backend.clone(),
        detail: match shape {
            Shape::Whole => detail,
            Shape::BundleOnly => format!("{path} {detail}"),
        },
    };
    let file: ComposeFile = serde_yaml::from_str(contents)
        .map_err(|e| refuse(format!("is not one bottle can run: {e}")))?;
    let stack = &plan.stack;
    let documents: Vec<String> = plan
        .deployment
        .documents
        .iter()
        .filter(|d| d.path != path)
        .map(|d| state_path(stack, &d.path))
        .collect();
    let volumes: BTreeSet<String> = stack
        .volumes
        .iter()
        .map(|v| format!("{}-{v}", plan.deployment.project))
        .collect();
    for (key, n) in &file.networks {
        if n.external {
            // The host makes it, with its own driver and options: the file names it only.
            let shared = bottle_contract::compose::SHARED_EGRESS_NETWORK;
            let plain = bottle_contract::compose::ComposeNetwork {
                name: shared.to_owned(),
                external: true,
                ..Default::default()
            };
            if *n != plain {
                return Err(refuse(format!(
                    "makes network `{key}` ({}) external; only bottle's shared way out may be, written as `{{name: {shared}, external: true}}` and nothing more",
                    n.name
                )));
            }
            continue;
        }
        if n.driver != "bridge" {
            return Err(refuse(format!(
                "gives network `{key}` the driver `{}` (only `bridge`)",
                n.driver
            )));
        }
        if let Some(opt) = n
            .driver_opts
            .keys()
            .find(|k| k.as_str() != bottle_contract::compose::INHIBIT_HOST_ADDRESS.0)
        {
            return Err(refuse(format!(
                "sets the driver option `{opt}` on network `{key}`"
            )));
        }
    }
    for (key, v) in &file.volumes {
        if !volumes.contains(&v.name) {
            return Err(refuse(format!(
                "declares volume `{key}` ({}), which no plugin asked for",
                v.name
            )));
        }
    }
    for (key, s) in &file.services {
        let expected = match shape {
            Shape::Whole => Expected::of(key, plan, &documents),
            Shape::BundleOnly if key == BUNDLE_SERVICE => Expected::of(key, plan, &documents),
            Shape::BundleOnly => None,
        }
        .ok_or_else(|| {
            refuse(format!(
                "adds the service `{key}`, which no plugin asked for"
            ))
        })?;
        expected
            .check(key, s, &file, &volumes)
            .map_err(|d| refuse(format!("gives service `{key}` {d}")))?;
    }
    if shape == Shape::Whole && !file.services.contains_key(AGENT_SERVICE) {
        return Err(refuse("has no `agent` service".into()));
    }
    if !stack.bundle.is_empty() && !file.services.contains_key(BUNDLE_SERVICE) {
        return Err(refuse(
            "has no `sidecars` service for the bundle's daemons".into(),
        ));
    }
    Ok(())
}

fn state_path(stack: &Stack, rel: &str) -> String {
    format!("{}/{rel}", stack.state_dir.trim_end_matches('/'))
}

/// What one service may hold, from the stack.
struct Expected {
    /// The image it must run (none: the bundle's image is the backend's choice).
    image: Option<String>,
    /// Bind sources and whether each may be written.
    binds: Vec<(String, bool)>,
    privileged: bool,
    cap_add: Vec<String>,
    /// Published ports as `ip:host:container`.
    ports: Vec<String>,
    /// Whether it may join a network with a way out.
    egress: bool,
    /// The env names whose values come from the host at launch (secrets).
    secrets: Vec<String>,
}

impl Expected {
    fn of(key: &str, plan: &BottlePlan, documents: &[String]) -> Option<Expected> {
        let stack = &plan.stack;
        let binds_of = |mounts: &mut dyn Iterator<Item = &crate::model::Mount>| {
            let mut v: Vec<(String, bool)> = mounts
                .filter_map(|m| match &m.source {
                    MountSource::State(p) => Some((state_path(stack, p), !m.read_only)),
                    MountSource::Host(h) => Some((h.clone(), !m.read_only)),
                    MountSource::Volume(_) => None,
                })
                .collect();
            // The backend may mount its own documents, read-only.
            v.extend(documents.iter().map(|d| (d.clone(), false)));
            v
        };
        let none = |image: Option<String>, binds, egress, secrets| Expected {
            image,
            binds,
            privileged: false,
            cap_add: vec![],
            ports: vec![],
            egress,
            secrets,
        };
        match key {
            AGENT_SERVICE => Some(none(
                Some(stack.agent.image.clone()),
                binds_of(&mut stack.agent.mounts.iter()),
                false,
                stack.agent.secret_env.clone(),
            )),
            BUNDLE_SERVICE if !stack.bundle.is_empty() => Some(none(
                None,
                {
                    let mut binds =
                        binds_of(&mut stack.bundle.iter().flat_map(|o| o.daemon.mounts.iter()));
                    // The daemon list the host writes for the bundle's init.
                    binds.push((
                        state_path(stack, bottle_contract::layout::DAEMONS_STATE_PATH),
                        false,
                    ));
                    binds
                },
                true,
                stack
                    .bundle_secrets
                    .iter()
                    .map(|s| s.name.clone())
                    .collect(),
            )),
            _ => {
                let s = &stack
                    .services
                    .iter()
                    .find(|o| o.service.name == key)?
                    .service;
                Some(Expected {
                    image: Some(s.image.clone()),
                    binds: binds_of(&mut s.mounts.iter()),
                    privileged: s.privileged,
                    cap_add: s.cap_add.clone(),
                    ports: s
                        .ports
                        .iter()
                        .map(|p| format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port))
                        .collect(),
                    egress: s.networks.contains(&NetworkRole::Egress),
                    secrets: vec![],
                })
            }
        }
    }

    fn check(
        &self,
        key: &str,
        s: &Service,
        file: &ComposeFile,
        volumes: &BTreeSet<String>,
    ) -> Result<(), String> {
        if let Some(image) = &self.image
            && &s.image != image
        {
            return Err(format!("the image `{}` (the plan says `{image}`)", s.image));
        }
        if s.privileged && !self.privileged {
            return Err("privileged mode".into());
        }
        if let Some(c) = s.cap_add.iter().find(|c| !self.cap_add.contains(c)) {
            return Err(format!("the capability `{c}`"));
        }
        if let Some(p) = s.ports.iter().find(|p| !self.ports.contains(p)) {
            return Err(format!("the published port `{p}`"));
        }
        if let Some(o) = s
            .security_opt
            .iter()
            .find(|o| !SAFE_SECURITY_OPTS.contains(&o.as_str()))
        {
            return Err(format!("the security option `{o}`"));
        }
        if let Some(name) = s
            .environment
            .iter()
            .find(|(k, v)| v.is_none() && !self.secrets.contains(k))
            .map(|(k, _)| k)
        {
            return Err(format!(
                "the host's env var `{name}`, which the manifest does not pass to it"
            ));
        }
        for m in &s.volumes {
            self.check_mount(m, volumes)?;
        }
        for net in s.networks.keys() {
            let Some(n) = file.networks.get(net) else {
                return Err(format!(
                    "the network `{net}`, which the file does not define"
                ));
            };
            if !n.internal && !self.egress {
                return Err(format!(
                    "the network {}, which has a way out (`{key}` may join internal ones only)",
                    n.name
                ));
            }
            if n.external && key != BUNDLE_SERVICE {
                // On one bridge, a container reaches the others at the link layer whatever
                // the firewall says: only bottle's own bundle meets other bottles' there.
                return Err(format!(
                    "the network {}, which every bottle's bundle shares (only `{BUNDLE_SERVICE}` may join it; give `{key}` a way out of its own)",
                    n.name
                ));
            }
        }
        Ok(())
    }

    fn check_mount(&self, m: &Mount, volumes: &BTreeSet<String>) -> Result<(), String> {
        match m.kind.as_str() {
            "volume" if volumes.contains(&m.source) => Ok(()),
            "volume" => Err(format!(
                "the volume `{}`, which no plugin asked for",
                m.source
            )),
            "bind" => match self.binds.iter().find(|(src, _)| *src == m.source) {
                Some((_, writable)) if *writable || m.read_only => Ok(()),
                Some(_) => Err(format!(
                    "{} writable at {}, which the plan mounts read-only",
                    m.source, m.target
                )),
                None => Err(format!(
                    "the host path {} at {}, which the plan does not mount there",
                    m.source, m.target
                )),
            },
            other => Err(format!("a mount of type `{other}`")),
        }
    }
}
