//! What names the agent resolves, and through whom.
//!
//! The agent's `/etc/hosts` and `/etc/resolv.conf` are bottle's files, bind-mounted read-only
//! over Docker's: its hosts file names the bundle's daemons (and any other service on its
//! networks) at their addresses, and its only DNS server is egress in the bundle, which answers
//! the names a route allows with its own address and no other name at all (never forwarding
//! one). So a client that ignores the proxy env still reaches an allowed host the allowed way,
//! and no lookup leaves the bottle. Docker's embedded resolver is not the agent's: it would
//! forward unknown names out of the host's namespace on older engines (CVE-2024-29018), and on
//! newer ones forwards nothing from an internal network, not even to egress. The agent can
//! still ask it at 127.0.0.11, so it may pass names on only to the agent's own loopback
//! ([`super::up::AGENT_ENGINE_DNS`]).
//!
//! Both files exist (as placeholders that resolve nothing) before the agent's container is
//! created, since a bind mount needs its source, and are filled in place once the bundle has
//! its address, before the agent starts.

use super::project::{ComposeFile, ComposeService as Service};
use super::{DockerError, up};
use bollard::Docker;
use bollard::models::{Mount, MountType};
use bottle_contract::layout::{AGENT_HOSTS_STATE_PATH, AGENT_RESOLV_STATE_PATH};
use std::net::IpAddr;
use std::path::Path;

/// The agent's resolver options: a failed lookup ends in about two seconds, not twenty.
const RESOLVER_OPTIONS: &str = "options timeout:1 attempts:1";

/// What the agent resolves before the bundle has an address: `localhost`, and no DNS server
/// (nothing listens on the agent's own port 53, so a lookup fails at once).
fn placeholders() -> (String, String) {
    (
        "127.0.0.1\tlocalhost\n".to_owned(),
        format!("nameserver 127.0.0.1\n{RESOLVER_OPTIONS}\n"),
    )
}

/// Write the placeholder files into `state_dir` (see the module doc).
pub fn prepare(state_dir: &Path) -> Result<(), DockerError> {
    let (hosts, resolv) = placeholders();
    write(&state_dir.join(AGENT_HOSTS_STATE_PATH), &hosts)?;
    write(&state_dir.join(AGENT_RESOLV_STATE_PATH), &resolv)
}

/// The agent's read-only mounts of the two files.
pub fn mounts(state_dir: &Path) -> Vec<Mount> {
    [
        (AGENT_HOSTS_STATE_PATH, "/etc/hosts"),
        (AGENT_RESOLV_STATE_PATH, "/etc/resolv.conf"),
    ]
    .into_iter()
    .map(|(file, target)| Mount {
        target: Some(target.to_owned()),
        source: Some(state_dir.join(file).display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Mount::default()
    })
    .collect()
}

/// Fill in the agent's files: every started service sharing a network with the agent, at its
/// address there, under its aliases; the bundle's address as the DNS server.
pub async fn fill(
    docker: &Docker,
    file: &ComposeFile,
    project: &str,
    state_dir: &Path,
    (agent_key, agent): (&str, &Service),
    started: &[&str],
    wiring: Option<&super::handoff::Wiring>,
) -> Result<(), DockerError> {
    let agent_name = up::container_name(project, agent_key, agent);
    let hostname = docker
        .inspect_container(&agent_name, None)
        .await
        .map_err(super::api(format!("inspecting {agent_name}")))?
        .config
        .and_then(|c| c.hostname);
    let mut entries: Vec<(IpAddr, Vec<String>)> = Vec::new();
    let mut dns: Option<IpAddr> = None;
    // On no network, the agent reaches the bundle in its own namespace.
    if let Some(w) = wiring {
        let at = super::handoff::Wiring::bundle_address();
        entries.push((at, w.bundle_names.clone()));
        dns = w.serves_dns().then_some(at);
    }
    for (key, s) in &file.services {
        if key == agent_key || !started.contains(&key.as_str()) {
            continue;
        }
        let name = up::container_name(project, key, s);
        for net_key in agent
            .networks
            .keys()
            .filter(|n| s.networks.contains_key(*n))
        {
            let Some(net) = file.networks.get(net_key) else {
                continue;
            };
            let Some(ip) = up::address_on(docker, &name, &net.name).await? else {
                continue;
            };
            let mut names = up::alias_list(s, net_key, key);
            names.push(name.clone());
            names.dedup();
            if up::is_bundle(key, s) && dns.is_none() {
                dns = Some(ip);
            }
            entries.push((ip, names));
        }
    }
    write(
        &state_dir.join(AGENT_HOSTS_STATE_PATH),
        &hosts_file(hostname.as_deref(), &entries),
    )?;
    write(&state_dir.join(AGENT_RESOLV_STATE_PATH), &resolv_file(dns))
}

/// The agent's `/etc/hosts`.
fn hosts_file(hostname: Option<&str>, entries: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost");
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        out.push(' ');
        out.push_str(h);
    }
    out.push('\n');
    for (ip, names) in entries {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out
}

/// The agent's `/etc/resolv.conf`: egress in the bundle, or none at all.
fn resolv_file(dns: Option<IpAddr>) -> String {
    match dns {
        Some(ip) => format!("nameserver {ip}\n{RESOLVER_OPTIONS}\n"),
        None => placeholders().1,
    }
}

/// Write `text` into `path` in place (the same file stays bind-mounted), readable by the
/// agent's user (it holds names and addresses only).
fn write(path: &Path, text: &str) -> Result<(), DockerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |e: std::io::Error| DockerError::Host(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_name_the_bundle_and_point_dns_at_it_alone() {
        let entries = vec![(
            IpAddr::from([172, 20, 0, 2]),
            vec![
                "sidecars".to_owned(),
                "egress".to_owned(),
                "git-gate".to_owned(),
            ],
        )];
        assert_eq!(
            hosts_file(Some("a1b2c3"), &entries),
            "127.0.0.1\tlocalhost a1b2c3\n172.20.0.2\tsidecars egress git-gate\n"
        );
        assert_eq!(
            resolv_file(Some(IpAddr::from([172, 20, 0, 2]))),
            "nameserver 172.20.0.2\noptions timeout:1 attempts:1\n"
        );
        assert_eq!(
            resolv_file(None),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            "no bundle: nothing answers"
        );
    }

    #[test]
    fn the_files_are_written_in_place_and_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        prepare(t.path()).unwrap();
        let hosts = t.path().join(AGENT_HOSTS_STATE_PATH);
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata(&hosts).unwrap().ino();
        write(&hosts, "127.0.0.1\tlocalhost\n10.0.0.2\tegress\n").unwrap();
        assert_eq!(std::fs::metadata(&hosts).unwrap().ino(), inode);
        let elsewhere = t.path().join("elsewhere");
        std::fs::write(&elsewhere, "mine\n").unwrap();
        let link = t.path().join(AGENT_RESOLV_STATE_PATH);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(prepare(t.path()).is_err());
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "mine\n");
    }
}
