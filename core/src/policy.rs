//! The one place where what a plugin's output asks for is checked against what the user granted.
//!
//! Plugins import nothing powerful, so their capabilities are data in their fragments:
//! privileged mode, added kernel capabilities, host paths, the Docker socket and published
//! ports. Each needs a grant for that plugin, given in the manifest
//! (`plugins.<name>.grants`) or on the command line (`--grant <name>=<grant>`).

use crate::model::{Fragment, Mount, MountSource};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// One capability a plugin's fragment asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// A privileged container.
    Privileged,
    /// One added kernel capability (`NET_ADMIN`).
    CapAdd(String),
    /// A host path mounted into a container.
    HostPath(String),
    /// The Docker socket mounted into a container.
    DockerSocket,
    /// A port published on the host.
    PublishPort(u16),
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Privileged => f.write_str("privileged"),
            Capability::CapAdd(c) => write!(f, "cap-add:{c}"),
            Capability::HostPath(p) => write!(f, "host-path:{p}"),
            Capability::DockerSocket => f.write_str("docker-socket"),
            Capability::PublishPort(p) => write!(f, "publish:{p}"),
        }
    }
}

/// A grant as the user writes it: `privileged`, `docker-socket`, `cap-add:NET_ADMIN`,
/// `host-path:/data` (that path and below), `publish:8080`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant(Capability);

impl FromStr for Grant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cap = match s.split_once(':') {
            None if s == "privileged" => Capability::Privileged,
            None if s == "docker-socket" => Capability::DockerSocket,
            Some(("cap-add", c))
                if !c.is_empty() && c.chars().all(|c| c.is_ascii_uppercase() || c == '_') =>
            {
                Capability::CapAdd(c.to_owned())
            }
            Some(("host-path", p))
                if Path::new(p).is_absolute() && !p.split('/').any(|c| c == "..") =>
            {
                Capability::HostPath(p.trim_end_matches('/').to_owned())
            }
            Some(("publish", p)) => Capability::PublishPort(
                p.parse()
                    .map_err(|_| format!("`{s}`: the port must be a number from 1 to 65535"))?,
            ),
            _ => {
                return Err(format!(
                    "`{s}` is not a grant; use privileged, docker-socket, cap-add:NAME, host-path:/ABS/PATH or publish:PORT"
                ));
            }
        };
        Ok(Grant(cap))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Grant {
    fn covers(&self, cap: &Capability) -> bool {
        match (&self.0, cap) {
            (Capability::HostPath(granted), Capability::HostPath(asked)) => {
                let granted = if granted.is_empty() {
                    "/"
                } else {
                    granted.as_str()
                };
                Path::new(asked).starts_with(granted)
            }
            (g, c) => g == c,
        }
    }
}

/// Grants per plugin name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(BTreeMap<String, BTreeSet<Grant>>);

impl Grants {
    /// Grant `grant` to `plugin`.
    pub fn add(&mut self, plugin: &str, grant: Grant) {
        self.0.entry(plugin.to_owned()).or_default().insert(grant);
    }

    /// Add every grant of `other`.
    pub fn extend(&mut self, other: &Grants) {
        for (plugin, gs) in &other.0 {
            self.0
                .entry(plugin.clone())
                .or_default()
                .extend(gs.iter().cloned());
        }
    }

    fn allows(&self, plugin: &str, cap: &Capability) -> bool {
        self.0
            .get(plugin)
            .is_some_and(|gs| gs.iter().any(|g| g.covers(cap)))
    }
}

/// A plugin asked for capabilities it was not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin `{plugin}` asks for {}, which you have not granted; if you trust it, add them under `plugins.{plugin}.grants` in the manifest, or pass {}",
    list(.refused), flags(.plugin, .refused)
)]
pub struct Refused {
    /// The plugin.
    pub plugin: String,
    /// What it asked for without a grant.
    pub refused: Vec<Capability>,
}

fn list(caps: &[Capability]) -> String {
    caps.iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn flags(plugin: &str, caps: &[Capability]) -> String {
    caps.iter()
        .map(|c| format!("`--grant {plugin}={c}`"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Paths a plugin may mount without a grant: the manifest declared them (e.g. git key files).
#[derive(Debug, Clone, Default)]
pub struct DeclaredPaths(pub BTreeSet<String>);

/// Every capability `fragment` asks for, sorted and deduplicated.
pub fn capabilities(fragment: &Fragment) -> Vec<Capability> {
    let mut caps = BTreeSet::new();
    let mut mounts: Vec<&Mount> = fragment.daemons.iter().flat_map(|d| &d.mounts).collect();
    mounts.extend(fragment.patches.iter().flat_map(|p| &p.mounts));
    for s in &fragment.services {
        if s.privileged {
            caps.insert(Capability::Privileged);
        }
        caps.extend(s.cap_add.iter().map(|c| Capability::CapAdd(c.clone())));
        caps.extend(s.ports.iter().map(|p| Capability::PublishPort(p.host_port)));
        mounts.extend(&s.mounts);
    }
    for m in mounts {
        if let MountSource::Host(path) = &m.source {
            caps.insert(if is_docker_socket(path) {
                Capability::DockerSocket
            } else {
                Capability::HostPath(path.clone())
            });
        }
    }
    caps.into_iter().collect()
}

fn is_docker_socket(path: &str) -> bool {
    let p = Path::new(path);
    p.ends_with("docker.sock") || p.starts_with("/var/run/docker") || p.starts_with("/run/docker")
}

/// Refuse what `plugin`'s fragment asks for beyond its grants and the manifest's declared paths.
pub fn check(
    plugin: &str,
    fragment: &Fragment,
    grants: &Grants,
    declared: &DeclaredPaths,
) -> Result<(), Refused> {
    let refused: Vec<Capability> = capabilities(fragment)
        .into_iter()
        .filter(|cap| !matches!(cap, Capability::HostPath(p) if declared.0.contains(p)))
        .filter(|cap| !grants.allows(plugin, cap))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Refused {
            plugin: plugin.to_owned(),
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn fragment_with(service: Service) -> Fragment {
        Fragment {
            daemons: vec![],
            services: vec![service],
            patches: vec![],
            volumes: vec![],
        }
    }

    fn service() -> Service {
        Service {
            name: "x".into(),
            image: "img".into(),
            command: vec![],
            env: EnvMap::new(),
            mounts: vec![],
            networks: vec![],
            aliases: vec![],
            user: None,
            read_only_root: false,
            health: None,
            privileged: false,
            cap_add: vec![],
            ports: vec![],
        }
    }

    #[test]
    fn grants_parse_and_reject_nonsense() {
        for ok in [
            "privileged",
            "docker-socket",
            "cap-add:NET_ADMIN",
            "host-path:/data",
            "publish:8080",
        ] {
            assert_eq!(ok.parse::<Grant>().unwrap().to_string(), ok);
        }
        for bad in [
            "root",
            "cap-add:net_admin",
            "host-path:rel",
            "host-path:/a/../b",
            "publish:x",
            "publish:70000",
        ] {
            let err = bad.parse::<Grant>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn every_capability_is_refused_without_a_grant() {
        let mut s = service();
        s.privileged = true;
        s.cap_add = vec!["NET_ADMIN".into()];
        s.ports = vec![PublishedPort {
            host_ip: "127.0.0.1".into(),
            host_port: 8080,
            container_port: 80,
        }];
        s.mounts = vec![
            Mount {
                source: MountSource::Host("/etc".into()),
                target: "/h".into(),
                read_only: true,
            },
            Mount {
                source: MountSource::Host("/var/run/docker.sock".into()),
                target: "/s".into(),
                read_only: false,
            },
        ];
        let err = check(
            "evil",
            &fragment_with(s),
            &Grants::default(),
            &DeclaredPaths::default(),
        )
        .unwrap_err();
        assert_eq!(err.refused.len(), 5);
        let msg = err.to_string();
        for part in [
            "`privileged`",
            "`cap-add:NET_ADMIN`",
            "`publish:8080`",
            "`host-path:/etc`",
            "`docker-socket`",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert!(msg.contains("--grant evil=privileged"), "{msg}");
    }

    #[test]
    fn grants_are_per_plugin_and_paths_cover_subdirs() {
        let mut s = service();
        s.privileged = true;
        s.mounts = vec![Mount {
            source: MountSource::Host("/data/x".into()),
            target: "/d".into(),
            read_only: true,
        }];
        let f = fragment_with(s);
        let mut grants = Grants::default();
        grants.add("other", "privileged".parse().unwrap());
        grants.add("mine", "host-path:/data".parse().unwrap());
        let err = check("mine", &f, &grants, &DeclaredPaths::default()).unwrap_err();
        assert_eq!(err.refused, vec![Capability::Privileged]);
        grants.add("mine", "privileged".parse().unwrap());
        check("mine", &f, &grants, &DeclaredPaths::default()).unwrap();
    }

    #[test]
    fn declared_paths_need_no_grant() {
        let mut s = service();
        s.mounts = vec![Mount {
            source: MountSource::Host("/home/u/.ssh/k".into()),
            target: "/k".into(),
            read_only: true,
        }];
        let declared = DeclaredPaths(["/home/u/.ssh/k".to_owned()].into());
        check("git-gate", &fragment_with(s), &Grants::default(), &declared).unwrap();
    }
}
