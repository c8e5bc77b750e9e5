//! The agent on no network at all ([`bottle_contract::handoff`]): when the bundle is the only
//! thing on the agent's networks and its daemons take the agent's listeners, the file is
//! brought up without those networks. The agent's container then has loopback alone, its init
//! binds the daemons' ports there and hands them to the bundle's init through a dir both
//! mount; the agent's names point at [`BUNDLE_IN_AGENT`].
//!
//! It is the same wall with less for the engine to build: an endpoint on a user-defined network
//! costs a container start some 70 ms on this engine (`benches/topology-floor.sh`), and the
//! agent's network was two of the bring-up's three.

use super::project::ComposeFile;
use super::up::{self, is_agent, is_bundle};
use bollard::models::{Mount, MountType};
use bottle_contract::handoff::{
    BUNDLE_ENV, BUNDLE_IN_AGENT, DIR_IN_AGENT, DIR_IN_BUNDLE, Listener, Proto, STATE_DIR,
    format_list,
};
use std::net::IpAddr;
use std::path::Path;

/// What the agent needs once on no network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    /// The listeners its init binds and hands over.
    pub listeners: Vec<Listener>,
    /// The names it knew the bundle by on the networks it no longer joins.
    pub bundle_names: Vec<String>,
}

impl Wiring {
    /// The bundle's address in the agent's namespace.
    pub fn bundle_address() -> IpAddr {
        IpAddr::from(BUNDLE_IN_AGENT)
    }

    /// Whether egress answers the agent's DNS (it takes port 53).
    pub fn serves_dns(&self) -> bool {
        self.listeners.contains(&Listener {
            port: 53,
            proto: Proto::Udp,
        })
    }

    /// `--listen LISTENERS` for `bottle-init agent`.
    pub fn init_args(&self) -> [String; 2] {
        ["--listen".to_owned(), format_list(&self.listeners)]
    }

    /// The bundle's env entry asking its init to wait for the listeners.
    pub fn bundle_env(&self) -> String {
        format!("{BUNDLE_ENV}={}", format_list(&self.listeners))
    }

    /// The dir both containers mount, in `state_dir`.
    pub fn dir(state_dir: &Path) -> std::path::PathBuf {
        state_dir.join(STATE_DIR)
    }

    /// The mount of [`Self::dir`]: read-only for the agent, whose init only connects.
    pub fn mount(state_dir: &Path, agent: bool) -> Mount {
        Mount {
            target: Some(if agent { DIR_IN_AGENT } else { DIR_IN_BUNDLE }.to_owned()),
            source: Some(Self::dir(state_dir).display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(agent),
            ..Mount::default()
        }
    }
}

/// `file` with the agent on no network, and what the agent then needs; `None` when it cannot
/// be: no `listeners` (a daemon of the bundle is not bottle's own), not exactly one agent and
/// one bundle, or a network of the agent's that something else joins too.
pub fn wire(
    file: &ComposeFile,
    project: &str,
    listeners: Option<&[Listener]>,
) -> Option<(ComposeFile, Wiring)> {
    let listeners = listeners?;
    let mut agents = file.services.iter().filter(|(k, s)| is_agent(k, s));
    let mut bundles = file.services.iter().filter(|(k, s)| is_bundle(k, s));
    let ((agent_key, agent), (bundle_key, bundle)) = (agents.next()?, bundles.next()?);
    if agents.next().is_some() || bundles.next().is_some() || agent.networks.is_empty() {
        return None;
    }
    let nets: Vec<String> = agent.networks.keys().cloned().collect();
    for net in &nets {
        let members = file
            .services
            .iter()
            .filter(|(_, s)| s.networks.contains_key(net))
            .count();
        if members != 2 || !bundle.networks.contains_key(net) {
            return None;
        }
    }
    let mut bundle_names = Vec::new();
    for net in &nets {
        for n in up::alias_list(bundle, net, bundle_key) {
            if !bundle_names.contains(&n) {
                bundle_names.push(n);
            }
        }
    }
    let container = up::container_name(project, bundle_key, bundle);
    if !bundle_names.contains(&container) {
        bundle_names.push(container);
    }
    let mut wired = file.clone();
    let (agent_key, bundle_key) = (agent_key.clone(), bundle_key.clone());
    for net in &nets {
        wired.networks.remove(net);
        for key in [&agent_key, &bundle_key] {
            if let Some(s) = wired.services.get_mut(key) {
                s.networks.remove(net);
            }
        }
    }
    Some((
        wired,
        Wiring {
            listeners: listeners.to_vec(),
            bundle_names,
        },
    ))
}

/// Make the dir both containers mount in `state_dir`: a dir (never a link), 0755 whatever the
/// umask (the agent's user, not always the invoker, must reach the socket in it), with no
/// socket left from an earlier bring-up.
pub fn prepare(state_dir: &Path) -> Result<(), super::DockerError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Wiring::dir(state_dir);
    let fail =
        |e: std::io::Error| super::DockerError::Host(format!("preparing {}: {e}", dir.display()));
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(fail(std::io::Error::other(
                "it is not a dir; remove it and run again",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&dir).map_err(fail)?;
        }
        Err(e) => return Err(fail(e)),
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
    match std::fs::remove_file(dir.join(bottle_contract::handoff::SOCKET)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> ComposeFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TWO: &str = r#"
services:
  agent:
    image: a
    networks: { internal: {} }
    depends_on: { sidecars: { condition: service_healthy } }
  sidecars:
    image: b
    networks:
      egress: {}
      internal: { aliases: [egress, git-gate] }
networks:
  egress: { name: bottle-shared-egress, external: true }
  internal: { name: bottle-x-internal, internal: true }
"#;

    fn ours() -> Vec<Listener> {
        bottle_contract::handoff::parse_list("9099/tcp,53/udp").unwrap()
    }

    #[test]
    fn the_agent_leaves_a_network_only_it_and_the_bundle_join() {
        let (wired, w) = wire(&file(TWO), "bottle-x", Some(&ours())).unwrap();
        assert!(wired.services["agent"].networks.is_empty());
        assert_eq!(
            wired.services["sidecars"]
                .networks
                .keys()
                .collect::<Vec<_>>(),
            ["egress"]
        );
        assert_eq!(wired.networks.keys().collect::<Vec<_>>(), ["egress"]);
        assert_eq!(
            w.bundle_names,
            ["sidecars", "egress", "git-gate", "bottle-x-sidecars-1"]
        );
        assert!(w.serves_dns());
        assert_eq!(w.init_args()[1], "9099/tcp,53/udp");
    }

    #[test]
    fn the_shared_dir_is_0755_whatever_the_umask_and_never_a_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let dir = Wiring::dir(t.path());
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join(bottle_contract::handoff::SOCKET), "").unwrap();
        prepare(t.path()).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert!(
            !dir.join(bottle_contract::handoff::SOCKET).exists(),
            "stale socket gone"
        );
        std::fs::remove_dir(&dir).unwrap();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        assert!(prepare(t.path()).is_err());
    }

    #[test]
    fn anything_else_on_the_agents_network_or_no_listeners_keeps_it() {
        assert_eq!(wire(&file(TWO), "bottle-x", None), None);
        let third = format!(
            "{}\n",
            TWO.replace(
                "networks:\n  egress:",
                "  other:\n    image: c\n    networks: { internal: {} }\nnetworks:\n  egress:"
            )
        );
        assert!(file(&third).services.contains_key("other"));
        assert_eq!(wire(&file(&third), "bottle-x", Some(&ours())), None);
    }
}
