//! Merging every sidecar's fragment into one [`Stack`], deterministically.
//!
//! Fragments are applied in plugin-name order: daemons and services first, then patches. Two
//! parties wanting one thing (a service name, an env key with two values, a port, a mount
//! target, an alias) is a [`MergeError::Conflict`] naming both. The agent's way out is wired
//! here, by one rule for every backend:
//!
//! - `HTTP_PROXY`/`HTTPS_PROXY` (and lower-case twins) point at the `agent-proxy` endpoint with
//!   the highest priority (egress when the bottle has routes, else pipelock);
//! - `NO_PROXY` is loopback plus every plugin's `no-proxy` hosts;
//! - when any CA is trusted by the agent, the bundle of those certs is mounted at
//!   [`AGENT_CA_BUNDLE`] and named by `NODE_EXTRA_CA_CERTS`, `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//!   and mounted over the system trust store [`AGENT_SYSTEM_TRUST`] (curl, git).

use crate::model::*;
use bottle_contract::layout::{AGENT_SERVICE, BUNDLE_SERVICE};
use std::collections::BTreeMap;
use std::fmt;

/// Where the agent finds the CA certs it must trust.
pub const AGENT_CA_BUNDLE: &str = "/etc/bottle/ca-bundle.pem";
/// The system trust store of Debian-like images, also covered with the bottle's CAs: curl,
/// git and OpenSSL-based tools read it with no flag or variable. The agent only ever sees
/// certificates egress minted, so the bottle's CAs are all it needs to trust.
pub const AGENT_SYSTEM_TRUST: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The state-dir path of the agent's CA bundle (written by the host at launch).
pub const AGENT_CA_BUNDLE_STATE_PATH: &str = "ca/agent-trust.pem";

/// Names no plugin may give a daemon or service: the backends' own containers.
pub const RESERVED_NAMES: &[&str] = &[AGENT_SERVICE, BUNDLE_SERVICE, "bottle"];

/// Who asked for something, for conflict messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The agent manifest.
    Manifest,
    /// Bottle's own proxy and CA wiring.
    Wiring,
    /// A plugin.
    Plugin(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Manifest => f.write_str("the manifest"),
            Owner::Wiring => f.write_str("bottle's proxy wiring"),
            Owner::Plugin(p) => write!(f, "plugin `{p}`"),
        }
    }
}

/// Why fragments could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// Two parties want one thing.
    #[error(
        "conflict: {what} is set by {first} and by {second}; change one of them (settings or --plugin-dir)"
    )]
    Conflict {
        /// What they both want.
        what: String,
        /// The first party.
        first: Owner,
        /// The second party.
        second: Owner,
    },
    /// A patch names a container nobody adds.
    #[error("plugin `{plugin}` patches `{target}`, which no plugin adds (known: {known})")]
    UnknownTarget {
        /// The patching plugin.
        plugin: String,
        /// The target it named.
        target: String,
        /// What exists.
        known: String,
    },
    /// A plugin used an agent-only patch field on another container.
    #[error("plugin `{plugin}` sets `{field}` on `{target}`; only the agent takes {field}")]
    AgentOnly {
        /// The plugin.
        plugin: String,
        /// The target.
        target: String,
        /// The field.
        field: &'static str,
    },
}

/// Everything the merge needs besides the fragments.
#[derive(Debug, Clone)]
pub struct MergeInput<'a> {
    /// The bottle's slug.
    pub slug: &'a str,
    /// Absolute state dir.
    pub state_dir: &'a str,
    /// The agent as declared.
    pub agent: &'a Agent,
    /// Mounts the manifest gives the agent (the host's working dir).
    pub agent_mounts: &'a [Mount],
    /// The winning `agent-proxy` endpoint and the plugin that offered it.
    pub agent_proxy: Option<(&'a str, &'a Endpoint)>,
    /// Whether any CA is trusted by the agent.
    pub agent_trusts_cas: bool,
    /// Secret env asked for in plans, with their plugin.
    pub secrets: &'a [(String, SecretEnv)],
}

/// A map that remembers who set each key, so a second, different value is a conflict.
struct Owned<V> {
    what: &'static str,
    scope: String,
    map: BTreeMap<String, (V, Owner)>,
}

impl<V: PartialEq + Clone> Owned<V> {
    fn new(what: &'static str, scope: impl Into<String>) -> Self {
        Owned {
            what,
            scope: scope.into(),
            map: BTreeMap::new(),
        }
    }

    fn set(&mut self, key: &str, value: V, owner: &Owner) -> Result<(), MergeError> {
        match self.map.get(key) {
            Some((old, _)) if *old == value => Ok(()),
            Some((_, first)) => Err(MergeError::Conflict {
                what: format!("{} `{key}` of {}", self.what, self.scope),
                first: first.clone(),
                second: owner.clone(),
            }),
            None => {
                self.map.insert(key.to_owned(), (value, owner.clone()));
                Ok(())
            }
        }
    }

    fn values(self) -> BTreeMap<String, V> {
        self.map.into_iter().map(|(k, (v, _))| (k, v)).collect()
    }
}

/// A container being assembled: env and mount targets with owners.
struct Container {
    env: Owned<String>,
    mounts: Owned<Mount>,
}

impl Container {
    fn new(scope: &str) -> Self {
        Container {
            env: Owned::new("env", scope),
            mounts: Owned::new("mount target", scope),
        }
    }

    fn add(&mut self, env: &EnvMap, mounts: &[Mount], owner: &Owner) -> Result<(), MergeError> {
        for (k, v) in env {
            self.env.set(k, v.clone(), owner)?;
        }
        for m in mounts {
            self.mounts.set(&m.target, m.clone(), owner)?;
        }
        Ok(())
    }

    fn finish(self) -> (EnvMap, Vec<Mount>) {
        (
            self.env.values(),
            self.mounts.values().into_values().collect(),
        )
    }
}

/// Merge `fragments` (plugin name, fragment), sorted by plugin name, into a stack.
pub fn merge(
    input: &MergeInput<'_>,
    fragments: &[(String, Fragment)],
) -> Result<Stack, MergeError> {
    let Claimed {
        mut bundle,
        mut services,
        volumes,
    } = claim(fragments)?;
    let mut agent = wire_agent(input)?;
    let mcp = apply_patches(fragments, &mut agent, &mut bundle, &mut services)?;
    let (owned_daemons, bundle_secrets) = assemble_bundle(bundle, input.secrets)?;
    let mut owned_services: Vec<OwnedService> = services
        .into_iter()
        .map(|(plugin, mut s, c)| {
            (s.env, s.mounts) = c.finish();
            OwnedService { plugin, service: s }
        })
        .collect();
    owned_services.sort_by(|a, b| a.service.name.cmp(&b.service.name));

    let (env, mounts) = agent.finish();
    Ok(Stack {
        slug: input.slug.to_owned(),
        state_dir: input.state_dir.to_owned(),
        agent: AgentSpec {
            name: input.agent.name.clone(),
            image: input.agent.image.clone(),
            command: input.agent.command.clone(),
            workdir: input.agent.workdir.clone(),
            env,
            secret_env: input.agent.secret_env.clone(),
            mounts,
            mcp_servers: mcp
                .values()
                .into_iter()
                .map(|(name, url)| McpServer { name, url })
                .collect(),
        },
        bundle: owned_daemons,
        bundle_secrets,
        services: owned_services,
        volumes: volumes.values().into_keys().collect(),
    })
}

/// The daemons and services of every fragment, each with its own env and mounts, and the
/// volumes; names, ports and volumes claimed once.
struct Claimed {
    bundle: Vec<(String, Daemon, Container)>,
    services: Vec<(String, Service, Container)>,
    volumes: Owned<Owner>,
}

fn claim(fragments: &[(String, Fragment)]) -> Result<Claimed, MergeError> {
    // For names, ports and volumes a second claim is a conflict even from an identical
    // request, so the value stored is the claimant itself.
    let mut names: Owned<Owner> = Owned::new("container name or alias", "the bottle");
    for reserved in RESERVED_NAMES {
        names.set(reserved, Owner::Wiring, &Owner::Wiring)?;
    }
    let mut ports: Owned<Owner> = Owned::new("port", "the sidecar bundle");
    let mut host_ports: Owned<Owner> = Owned::new("published port", "the host");
    let mut volumes: Owned<Owner> = Owned::new("volume", "the bottle");

    let mut bundle: Vec<(String, Daemon, Container)> = Vec::new();
    let mut services: Vec<(String, Service, Container)> = Vec::new();
    for (plugin, f) in fragments {
        let owner = Owner::Plugin(plugin.clone());
        for v in &f.volumes {
            volumes.set(v, owner.clone(), &owner)?;
        }
        for d in &f.daemons {
            for n in std::iter::once(&d.name).chain(&d.aliases) {
                names.set(n, owner.clone(), &owner)?;
            }
            for p in &d.ports {
                ports.set(&p.to_string(), owner.clone(), &owner)?;
            }
            let mut c = Container::new(&format!("daemon `{}`", d.name));
            c.add(&d.env, &d.mounts, &owner)?;
            bundle.push((plugin.clone(), d.clone(), c));
        }
        for s in &f.services {
            for n in std::iter::once(&s.name).chain(&s.aliases) {
                names.set(n, owner.clone(), &owner)?;
            }
            for p in &s.ports {
                host_ports.set(
                    &format!("{}:{}", p.host_ip, p.host_port),
                    owner.clone(),
                    &owner,
                )?;
            }
            let mut c = Container::new(&format!("service `{}`", s.name));
            c.add(&s.env, &s.mounts, &owner)?;
            services.push((plugin.clone(), s.clone(), c));
        }
    }

    Ok(Claimed {
        bundle,
        services,
        volumes,
    })
}

/// The agent: the manifest's env and mounts first, then bottle's proxy and CA wiring.
fn wire_agent(input: &MergeInput<'_>) -> Result<Container, MergeError> {
    let mut agent = Container::new("the agent");
    agent.add(&input.agent.env, input.agent_mounts, &Owner::Manifest)?;
    if let Some((_, proxy)) = input.agent_proxy {
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            agent.env.set(k, proxy.url.clone(), &Owner::Wiring)?;
        }
    }
    if input.agent_trusts_cas {
        for k in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
            agent
                .env
                .set(k, AGENT_CA_BUNDLE.to_owned(), &Owner::Wiring)?;
        }
        for target in [AGENT_CA_BUNDLE, AGENT_SYSTEM_TRUST] {
            let bundle_mount = Mount {
                source: MountSource::State(AGENT_CA_BUNDLE_STATE_PATH.to_owned()),
                target: target.to_owned(),
                read_only: true,
            };
            agent.mounts.set(target, bundle_mount, &Owner::Wiring)?;
        }
    }
    Ok(agent)
}

/// Every patch, applied to the agent, a daemon or a service; the agent's `NO_PROXY` (its
/// defaults and the patches' hosts); the MCP servers registered.
fn apply_patches(
    fragments: &[(String, Fragment)],
    agent: &mut Container,
    bundle: &mut [(String, Daemon, Container)],
    services: &mut [(String, Service, Container)],
) -> Result<Owned<String>, MergeError> {
    let mut no_proxy: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let mut mcp: Owned<String> = Owned::new("MCP server", "the agent");

    for (plugin, f) in fragments {
        let owner = Owner::Plugin(plugin.clone());
        for p in &f.patches {
            if p.target == AGENT_SERVICE {
                agent.add(&p.env, &p.mounts, &owner)?;
                no_proxy.extend(p.no_proxy.iter().cloned());
                for m in &p.mcp_servers {
                    mcp.set(&m.name, m.url.clone(), &owner)?;
                }
                continue;
            }
            for (field, used) in [
                ("no-proxy", !p.no_proxy.is_empty()),
                ("mcp-servers", !p.mcp_servers.is_empty()),
            ] {
                if used {
                    return Err(MergeError::AgentOnly {
                        plugin: plugin.clone(),
                        target: p.target.clone(),
                        field,
                    });
                }
            }
            let container = bundle
                .iter_mut()
                .find(|(_, d, _)| d.name == p.target)
                .map(|(_, _, c)| c)
                .or_else(|| {
                    services
                        .iter_mut()
                        .find(|(_, s, _)| s.name == p.target)
                        .map(|(_, _, c)| c)
                });
            let Some(container) = container else {
                let mut known: Vec<&str> = vec![AGENT_SERVICE];
                known.extend(bundle.iter().map(|(_, d, _)| d.name.as_str()));
                known.extend(services.iter().map(|(_, s, _)| s.name.as_str()));
                return Err(MergeError::UnknownTarget {
                    plugin: plugin.clone(),
                    target: p.target.clone(),
                    known: known.join(", "),
                });
            };
            container.add(&p.env, &p.mounts, &owner)?;
        }
    }
    no_proxy.sort();
    no_proxy.dedup();
    let no_proxy = no_proxy.join(",");
    agent
        .env
        .set("NO_PROXY", no_proxy.clone(), &Owner::Wiring)?;
    agent.env.set("no_proxy", no_proxy, &Owner::Wiring)?;

    Ok(mcp)
}

/// The sidecar bundle: its daemons (sorted by name) and its secrets. Daemons share one
/// container, so their env and mount targets must agree too, and no secret may shadow env.
fn assemble_bundle(
    bundle: Vec<(String, Daemon, Container)>,
    secrets: &[(String, SecretEnv)],
) -> Result<(Vec<OwnedDaemon>, Vec<SecretEnv>), MergeError> {
    let mut bundle_env: Owned<String> = Owned::new("env", "the sidecar bundle");
    let mut bundle_mounts: Owned<Mount> = Owned::new("mount target", "the sidecar bundle");
    let mut owned_daemons = Vec::new();
    for (plugin, mut d, c) in bundle {
        let owner = Owner::Plugin(plugin.clone());
        (d.env, d.mounts) = c.finish();
        for (k, v) in &d.env {
            bundle_env.set(k, v.clone(), &owner)?;
        }
        for m in &d.mounts {
            bundle_mounts.set(&m.target, m.clone(), &owner)?;
        }
        owned_daemons.push(OwnedDaemon { plugin, daemon: d });
    }
    owned_daemons.sort_by(|a, b| a.daemon.name.cmp(&b.daemon.name));

    let mut bundle_secrets: Owned<String> = Owned::new("secret env", "the sidecar bundle");
    for (plugin, s) in secrets {
        let owner = Owner::Plugin(plugin.clone());
        if let Some((_, first)) = bundle_env.map.get(&s.name) {
            return Err(MergeError::Conflict {
                what: format!("env `{}` of the sidecar bundle (also a secret)", s.name),
                first: first.clone(),
                second: owner,
            });
        }
        bundle_secrets.set(&s.name, s.from_host_env.clone(), &owner)?;
    }
    let bundle_secrets = bundle_secrets
        .values()
        .into_iter()
        .map(|(name, from_host_env)| SecretEnv {
            name,
            from_host_env,
        })
        .collect();

    Ok((owned_daemons, bundle_secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            name: "a".into(),
            image: "img".into(),
            command: vec!["claude".into()],
            workdir: "/w".into(),
            env: EnvMap::from([("EDITOR".into(), "vi".into())]),
            secret_env: vec![],
        }
    }

    fn input<'a>(
        agent: &'a Agent,
        proxy: Option<(&'a str, &'a Endpoint)>,
        secrets: &'a [(String, SecretEnv)],
    ) -> MergeInput<'a> {
        MergeInput {
            slug: "a-12345",
            state_dir: "/s",
            agent,
            agent_mounts: &[],
            agent_proxy: proxy,
            agent_trusts_cas: false,
            secrets,
        }
    }

    fn daemon(name: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon {
            name: name.into(),
            command: vec!["x".into()],
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            mounts: vec![],
            ports: vec![],
            aliases: vec![],
            ready_check: None,
        }
    }

    fn fragment(daemons: Vec<Daemon>, patches: Vec<Patch>) -> Fragment {
        Fragment {
            daemons,
            services: vec![],
            patches,
            volumes: vec![],
        }
    }

    fn agent_patch(no_proxy: &[&str]) -> Patch {
        Patch {
            target: "agent".into(),
            env: EnvMap::new(),
            mounts: vec![],
            no_proxy: no_proxy.iter().map(|s| (*s).into()).collect(),
            mcp_servers: vec![],
        }
    }

    #[test]
    fn the_proxy_wiring_and_no_proxy_union_are_deterministic() {
        let a = agent();
        let proxy = Endpoint {
            name: "agent-proxy".into(),
            url: "http://p:1".into(),
            priority: 10,
        };
        let frags = vec![
            (
                "b".to_owned(),
                fragment(vec![daemon("b", &[])], vec![agent_patch(&["zeta", "beta"])]),
            ),
            (
                "a".to_owned(),
                fragment(vec![daemon("a", &[])], vec![agent_patch(&["beta"])]),
            ),
        ];
        let stack = merge(&input(&a, Some(("p", &proxy)), &[]), &frags).unwrap();
        assert_eq!(stack.agent.env["HTTPS_PROXY"], "http://p:1");
        assert_eq!(
            stack.agent.env["NO_PROXY"],
            "127.0.0.1,::1,beta,localhost,zeta"
        );
        let names: Vec<&str> = stack
            .bundle
            .iter()
            .map(|d| d.daemon.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"], "sorted whatever the input order");
        let mut reversed = frags.clone();
        reversed.reverse();
        assert_eq!(
            merge(&input(&a, Some(("p", &proxy)), &[]), &reversed).unwrap(),
            stack
        );
    }

    #[test]
    fn daemons_in_one_bundle_must_agree_on_env() {
        let a = agent();
        let frags = vec![
            (
                "one".to_owned(),
                fragment(vec![daemon("one", &[("MODE", "x")])], vec![]),
            ),
            (
                "two".to_owned(),
                fragment(vec![daemon("two", &[("MODE", "y")])], vec![]),
            ),
        ];
        let err = merge(&input(&a, None, &[]), &frags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conflict: env `MODE` of the sidecar bundle is set by plugin `one` and by plugin `two`; change one of them (settings or --plugin-dir)"
        );
    }

    #[test]
    fn a_secret_may_not_shadow_a_daemon_env_and_reserved_names_are_refused() {
        let a = agent();
        let frags = vec![(
            "one".to_owned(),
            fragment(vec![daemon("one", &[("TOKEN", "x")])], vec![]),
        )];
        let secrets = [(
            "two".to_owned(),
            SecretEnv {
                name: "TOKEN".into(),
                from_host_env: "T".into(),
            },
        )];
        let err = merge(&input(&a, None, &secrets), &frags).unwrap_err();
        assert!(
            err.to_string()
                .contains("env `TOKEN` of the sidecar bundle (also a secret)"),
            "{err}"
        );
        let frags = vec![("x".to_owned(), fragment(vec![daemon("agent", &[])], vec![]))];
        let err = merge(&input(&a, None, &[]), &frags).unwrap_err();
        assert!(
            err.to_string().contains(
                "`agent` of the bottle is set by bottle's proxy wiring and by plugin `x`"
            ),
            "{err}"
        );
    }

    #[test]
    fn agent_only_fields_on_other_targets_are_refused() {
        let a = agent();
        let mut p = agent_patch(&["h"]);
        p.target = "one".into();
        let frags = vec![(
            "one".to_owned(),
            fragment(vec![daemon("one", &[])], vec![p]),
        )];
        let err = merge(&input(&a, None, &[]), &frags).unwrap_err();
        assert!(
            err.to_string().contains("only the agent takes no-proxy"),
            "{err}"
        );
    }
}
