//! The one place where what a plugin's output asks for is checked against what the user granted.
//!
//! Plugins import nothing powerful, so their capabilities are data in their plans and
//! fragments: privileged mode, added kernel capabilities, host paths, the Docker socket,
//! published ports and host env vars copied into the bundle. Each needs a grant for that
//! plugin, given in the manifest (`plugins.<name>.grants`) or on the command line
//! (`--grant <name>=<grant>`), unless the manifest itself declares the resource for that
//! plugin (git key files for git-gate, routes' `token_ref`s for egress). Some requests no
//! grant can allow ([`Forbidden`]): a state mount that leaves the state dir, names bottle's
//! own files (`metadata.json`, `plan.json`, `compose.log`), holds another plugin's CA key or
//! is writable outside the plugin's own folder; a host path with `.` or `..`.

use crate::model::{Endpoint, Fragment, Mount, MountSource, NetworkRole, SecretEnv};
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
    /// A host env var copied into the sidecar bundle at launch (its value is a secret).
    HostEnv(String),
    /// The agent running as root (`--grant agent=root`); no plugin can ask for it.
    Root,
    /// A `--plugin-dir` plugin replacing the built-in of its name, pinned to its content hash.
    Replace(String),
    /// Offering a well-known endpoint (`agent-proxy`: the agent's way out; `bundle-proxy`:
    /// the bundle's).
    Endpoint(String),
    /// An own service on the network with a way out.
    EgressNetwork,
    /// A hostname alias with a dot: it would shadow a real host for the agent.
    Alias(String),
    /// A `NO_PROXY` host for the agent that is not one of the plugin's own daemons or services.
    NoProxy(String),
    /// An own service with no network: Docker would put it on its default bridge, which has a
    /// way out.
    DefaultNetwork,
    /// A bundle mount at, over or inside a path another plugin's daemon mounts.
    MountOver(String),
    /// A state path or volume the agent can write (shared with a daemon that trusts it).
    AgentWritable(String),
}

/// Bundle dirs no daemon may mount over or into: programs, libraries, bottle's own config.
const PROGRAM_DIRS: [&str; 9] = [
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/lib",
    "/usr/lib",
    "/etc/bottle",
];

/// The plugin whose fragment is checked, with what its plan asked for.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    /// Its name.
    pub name: &'a str,
    /// Whether it is the built-in of that name (then [`builtin_grants`] apply).
    pub builtin: bool,
    /// The host env its plan copies into the bundle.
    pub secrets: &'a [SecretEnv],
    /// The endpoints its plan offers.
    pub provides: &'a [Endpoint],
    /// What the other plugins of the stack hold.
    pub neighbours: &'a Neighbours,
}

/// What the other plugins hold, for the checks that span plugins.
#[derive(Debug, Clone, Default)]
pub struct Neighbours {
    /// Every plugin name the host knows (built-ins and `--plugin-dir`s): no alias may take one.
    pub plugins: BTreeSet<String>,
    /// Bundle daemons' mount targets, each with the plugin that mounts it.
    pub daemon_paths: Vec<(String, String)>,
    /// The plugins of the stack that are bottle's built-ins: where one's mounts overlap a
    /// `--plugin-dir` plugin's, the other plugin is the one that needs the grant.
    pub builtins: BTreeSet<String>,
    /// The host's Docker socket from `DOCKER_HOST` (e.g. rootless Docker's), besides the
    /// standard ones.
    pub docker_socket: Option<String>,
}

impl Neighbours {
    /// The plugin names of `known` and the bundle mounts of every `(plugin, fragment)`.
    pub fn new<'a>(
        known: impl IntoIterator<Item = &'a str>,
        fragments: &[(String, Fragment)],
    ) -> Neighbours {
        Neighbours {
            plugins: known.into_iter().map(str::to_owned).collect(),
            daemon_paths: fragments
                .iter()
                .flat_map(|(plugin, f)| {
                    f.daemons
                        .iter()
                        .flat_map(|d| &d.mounts)
                        .map(move |m| (m.target.clone(), plugin.clone()))
                })
                .collect(),
            builtins: BTreeSet::new(),
            docker_socket: None,
        }
    }
}

/// The well-known endpoints a plugin needs a grant to offer.
pub const GUARDED_ENDPOINTS: [&str; 2] = ["agent-proxy", "bundle-proxy"];

/// What the built-in sidecars need beyond what any plugin gets: egress is the agent's proxy,
/// pipelock the bundle's. A `--plugin-dir` replacement needs its own grants.
pub fn builtin_grants(plugin: &str) -> Vec<Capability> {
    match plugin {
        "egress" => vec![Capability::Endpoint("agent-proxy".into())],
        "pipelock" => vec![Capability::Endpoint("bundle-proxy".into())],
        _ => vec![],
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Privileged => f.write_str("privileged"),
            Capability::CapAdd(c) => write!(f, "cap-add:{c}"),
            Capability::HostPath(p) => write!(f, "host-path:{p}"),
            Capability::DockerSocket => f.write_str("docker-socket"),
            Capability::PublishPort(p) => write!(f, "publish:{p}"),
            Capability::HostEnv(n) => write!(f, "host-env:{n}"),
            Capability::Root => f.write_str("root"),
            Capability::Replace(h) => write!(f, "replace:sha256:{h}"),
            Capability::Endpoint(e) => write!(f, "endpoint:{e}"),
            Capability::EgressNetwork => f.write_str("egress-network"),
            Capability::Alias(a) => write!(f, "alias:{a}"),
            Capability::NoProxy(h) => write!(f, "no-proxy:{h}"),
            Capability::DefaultNetwork => f.write_str("default-network"),
            Capability::MountOver(p) => write!(f, "mount-over:{p}"),
            Capability::AgentWritable(p) => write!(f, "agent-writable:{p}"),
        }
    }
}

/// A grant as the user writes it: `privileged`, `docker-socket`, `cap-add:NET_ADMIN`,
/// `host-path:/data` (that path and below), `publish:8080`, `host-env:AWS_PROFILE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant(Capability);

impl FromStr for Grant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cap = match s.split_once(':') {
            None if s == "privileged" => Capability::Privileged,
            None if s == "docker-socket" => Capability::DockerSocket,
            None if s == "root" => Capability::Root,
            None if s == "egress-network" => Capability::EgressNetwork,
            None if s == "default-network" => Capability::DefaultNetwork,
            Some(("mount-over", p)) if clean_absolute(p) => Capability::MountOver(p.to_owned()),
            Some(("agent-writable", p)) if !p.is_empty() && !p.contains("..") => {
                Capability::AgentWritable(p.to_owned())
            }
            Some(("endpoint", e)) if GUARDED_ENDPOINTS.contains(&e) => {
                Capability::Endpoint(e.to_owned())
            }
            Some(("alias", a)) if bottle_contract::names::valid_host(a) => {
                Capability::Alias(a.to_ascii_lowercase())
            }
            Some(("no-proxy", h)) if bottle_contract::names::valid_host(h) => {
                Capability::NoProxy(h.to_ascii_lowercase())
            }
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
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{s}`: the port must be a number from 1 to 65535"))?,
            ),
            Some(("replace", h))
                if h.strip_prefix("sha256:").is_some_and(|x| {
                    x.len() == 64
                        && x.chars()
                            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                }) =>
            {
                Capability::Replace(h["sha256:".len()..].to_owned())
            }
            Some(("host-env", n)) if bottle_contract::names::valid_env_name(n) => {
                Capability::HostEnv(n.to_owned())
            }
            _ => {
                return Err(format!(
                    "`{s}` is not a grant; use privileged, docker-socket, cap-add:NAME, host-path:/ABS/PATH, publish:PORT, host-env:NAME, endpoint:agent-proxy|bundle-proxy, egress-network, default-network, alias:HOST, no-proxy:HOST, mount-over:/PATH, agent-writable:STATE-PATH|VOLUME, replace:sha256:HEX (a plugin replacing a built-in), or root (as `agent=root` only)"
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

/// The name grants for the agent itself go under (`--grant agent=root`).
pub const AGENT: &str = bottle_contract::layout::AGENT_SERVICE;

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

    /// Whether the plugin-dir plugin `plugin` with content hash `hash` may replace the built-in
    /// of its name (`--grant NAME=replace:sha256:HASH`).
    pub fn replace(&self, plugin: &str, hash: &str) -> bool {
        self.allows(plugin, &Capability::Replace(hash.to_owned()))
    }

    /// Whether the agent may run as root (`--grant agent=root`).
    pub fn agent_root(&self) -> bool {
        self.allows(AGENT, &Capability::Root)
    }

    /// Every plugin with its grants, by plugin name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BTreeSet<Grant>)> {
        self.0.iter().map(|(p, gs)| (p.as_str(), gs))
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

/// What the manifest itself declares, and for which plugin: that plugin needs no grant for it
/// (any other one does).
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// Host paths (git key files, for git-gate), with the plugin they are for.
    pub paths: BTreeMap<String, String>,
    /// Host env var names (egress routes' `token_ref`s, for egress), with the plugin.
    pub host_env: BTreeMap<String, String>,
}

impl Declared {
    fn covers(&self, plugin: &str, cap: &Capability) -> bool {
        let for_plugin =
            |m: &BTreeMap<String, String>, k: &str| m.get(k).is_some_and(|p| p == plugin);
        match cap {
            Capability::HostPath(p) => for_plugin(&self.paths, p),
            Capability::HostEnv(n) => for_plugin(&self.host_env, n),
            _ => false,
        }
    }
}

/// A request no grant can allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plugin `{plugin}` {detail}; this is a bug in the plugin (or a hostile one): remove it from --plugin-dir or report it to its author"
)]
pub struct Forbidden {
    /// The plugin.
    pub plugin: String,
    /// What it asked for and why that cannot be.
    pub detail: String,
}

/// Why a plugin's requests were not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Grantable capabilities that were not granted.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A request nothing can allow.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
}

/// State-dir paths a plugin may not mount: the host's own records and other plugins' CA keys.
#[derive(Debug, Clone, Default)]
pub struct StateGuard {
    /// CA private-key files (`ca/<id>/key.pem`, `ca/<id>/bundle.pem`) and the plugin that
    /// asked for each CA.
    pub ca_keys: BTreeMap<String, String>,
}

impl StateGuard {
    fn check(&self, plugin: &str, path: &str, read_only: bool) -> Result<(), String> {
        if !bottle_contract::names::safe_relative(path) {
            return Err(format!(
                "mounts state path {path:?}, which is not a plain relative path inside the state dir"
            ));
        }
        let top = path.split('/').next().unwrap_or_default();
        if crate::state::HOST_FILES.contains(&top) {
            return Err(format!(
                "mounts state path {path:?}, which belongs to bottle itself"
            ));
        }
        if !read_only && top != plugin {
            return Err(format!(
                "mounts state path {path:?} writable; a plugin may write only under `{plugin}/`"
            ));
        }
        let asked = Path::new(path);
        if let Some((key, owner)) = self
            .ca_keys
            .iter()
            .find(|(key, owner)| *owner != plugin && Path::new(key).starts_with(asked))
        {
            return Err(format!(
                "mounts state path {path:?}, which holds `{key}`, the private key of a CA that `{owner}` owns"
            ));
        }
        Ok(())
    }
}

/// Every mount of `fragment`: bundle daemons', patches' and services'.
fn mounts(fragment: &Fragment) -> impl Iterator<Item = &Mount> {
    fragment
        .daemons
        .iter()
        .flat_map(|d| &d.mounts)
        .chain(fragment.patches.iter().flat_map(|p| &p.mounts))
        .chain(fragment.services.iter().flat_map(|s| &s.mounts))
}

/// Every capability `plugin` and its `fragment` ask for, sorted and deduplicated.
pub fn capabilities(plugin: &Checked<'_>, fragment: &Fragment) -> Vec<Capability> {
    let Checked {
        name,
        builtin,
        secrets,
        provides,
        neighbours,
    } = *plugin;
    let mut caps = BTreeSet::new();
    caps.extend(
        provides
            .iter()
            .filter(|e| GUARDED_ENDPOINTS.contains(&e.name.as_str()))
            .map(|e| Capability::Endpoint(e.name.clone())),
    );
    let own_names: BTreeSet<&str> = fragment
        .daemons
        .iter()
        .map(|d| d.name.as_str())
        .chain(
            fragment
                .daemons
                .iter()
                .flat_map(|d| d.aliases.iter().map(String::as_str)),
        )
        .chain(fragment.services.iter().map(|s| s.name.as_str()))
        .chain(
            fragment
                .services
                .iter()
                .flat_map(|s| s.aliases.iter().map(String::as_str)),
        )
        .collect();
    let aliases = fragment
        .daemons
        .iter()
        .flat_map(|d| &d.aliases)
        .chain(fragment.services.iter().flat_map(|s| &s.aliases));
    // A dotted alias shadows a real host; another plugin's name takes over its traffic.
    caps.extend(
        aliases
            .filter(|a| {
                a.contains('.') || (a.as_str() != name && neighbours.plugins.contains(a.as_str()))
            })
            .map(|a| Capability::Alias(a.to_ascii_lowercase())),
    );
    for d in &fragment.daemons {
        for m in &d.mounts {
            // A built-in's layout is bottle's own: an overlap with a plugin-dir plugin is the
            // other plugin's doing.
            let theirs = neighbours.daemon_paths.iter().filter(|(_, p)| {
                p != name && (!builtin || neighbours.builtins.contains(p.as_str()))
            });
            for (path, _) in theirs {
                if Path::new(&m.target).starts_with(path) || Path::new(path).starts_with(&m.target)
                {
                    caps.insert(Capability::MountOver(m.target.clone()));
                }
            }
        }
    }
    for p in fragment.patches.iter().filter(|p| p.target == AGENT) {
        for m in p.mounts.iter().filter(|m| !m.read_only) {
            match &m.source {
                MountSource::State(path) | MountSource::Volume(path) => {
                    caps.insert(Capability::AgentWritable(path.clone()));
                }
                MountSource::Host(_) => {}
            }
        }
    }
    caps.extend(
        fragment
            .patches
            .iter()
            .flat_map(|p| &p.no_proxy)
            .filter(|h| !own_names.contains(h.as_str()))
            .map(|h| Capability::NoProxy(h.to_ascii_lowercase())),
    );
    caps.extend(
        secrets
            .iter()
            // The host's own value, not the user's env: see `HOP_TOKEN_HOST_ENV`.
            .filter(|s| s.from_host_env != bottle_contract::names::HOP_TOKEN_HOST_ENV)
            .map(|s| Capability::HostEnv(s.from_host_env.clone())),
    );
    for s in &fragment.services {
        if s.privileged {
            caps.insert(Capability::Privileged);
        }
        caps.extend(s.cap_add.iter().map(|c| Capability::CapAdd(c.clone())));
        caps.extend(s.ports.iter().map(|p| Capability::PublishPort(p.host_port)));
        if s.networks.contains(&NetworkRole::Egress) {
            caps.insert(Capability::EgressNetwork);
        }
        if s.networks.is_empty() {
            caps.insert(Capability::DefaultNetwork);
        }
    }
    for m in mounts(fragment) {
        if let MountSource::Host(path) = &m.source {
            if exposes_docker_socket(path, neighbours.docker_socket.as_deref()) {
                caps.insert(Capability::DockerSocket);
            }
            if !is_docker_socket(path) {
                caps.insert(Capability::HostPath(path.clone()));
            }
        }
    }
    caps.into_iter().collect()
}

fn is_docker_socket(path: &str) -> bool {
    let p = Path::new(path);
    p.ends_with("docker.sock") || p.starts_with("/var/run/docker") || p.starts_with("/run/docker")
}

/// Whether mounting `path` gives the Docker socket: the socket itself or a dir above it (the
/// standard sockets and `host_socket`, the one `DOCKER_HOST` names).
fn exposes_docker_socket(path: &str, host_socket: Option<&str>) -> bool {
    is_docker_socket(path)
        || ["/var/run/docker.sock", "/run/docker.sock"]
            .into_iter()
            .chain(host_socket)
            .any(|sock| Path::new(sock).starts_with(path))
}

/// A clean absolute host path: no `.`, `..` or empty components, so prefix checks hold.
fn clean_absolute(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && !path.contains('\0')
            && path[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// Check `plugin`'s secrets and fragment: forbidden requests first, then capabilities beyond
/// its grants and what the manifest declares.
pub fn check(
    plugin: &Checked<'_>,
    fragment: &Fragment,
    grants: &Grants,
    declared: &Declared,
    state: &StateGuard,
) -> Result<(), PolicyError> {
    let checked = plugin;
    let Checked {
        name: plugin,
        builtin,
        ..
    } = *plugin;
    let forbidden = |detail: String| Forbidden {
        plugin: plugin.to_owned(),
        detail,
    };
    // The bundle's programs and its daemon list: a mount there would replace another
    // plugin's daemon (or bottle's own init) with the mounter's code.
    for d in &fragment.daemons {
        for m in &d.mounts {
            if let Some(dir) = PROGRAM_DIRS.iter().find(|dir| {
                Path::new(&m.target).starts_with(dir) || Path::new(dir).starts_with(&m.target)
            }) {
                return Err(forbidden(format!(
                    "mounts {} over {dir} in the bundle, where its programs live",
                    m.target
                ))
                .into());
            }
        }
    }
    // bottle-init runs a daemon's program as given, with no PATH lookup: a bare name would
    // be planned, then never start.
    for d in &fragment.daemons {
        match d.command.first() {
            Some(p) if clean_absolute(p) => {}
            Some(p) => {
                return Err(forbidden(format!(
                    "runs daemon `{}` as `{p}`, which is not an absolute path; give the program's full path in the bundle image (e.g. `/bin/sh`)",
                    d.name
                ))
                .into());
            }
            None => {
                return Err(forbidden(format!("gives daemon `{}` no command", d.name)).into());
            }
        }
    }
    for m in mounts(fragment) {
        match &m.source {
            MountSource::State(path) => {
                state.check(plugin, path, m.read_only).map_err(forbidden)?
            }
            MountSource::Host(path) if !clean_absolute(path) => {
                return Err(forbidden(format!(
                    "mounts host path {path:?}, which is not a clean absolute path (no `.`, `..` or `//`)"
                ))
                .into());
            }
            _ => {}
        }
    }
    let implied = if builtin {
        builtin_grants(plugin)
    } else {
        vec![]
    };
    let refused: Vec<Capability> = capabilities(checked, fragment)
        .into_iter()
        .filter(|cap| !implied.contains(cap))
        .filter(|cap| !declared.covers(plugin, cap))
        .filter(|cap| !grants.allows(plugin, cap))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Refused {
            plugin: plugin.to_owned(),
            refused,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    /// [`super::check`] for a plugin-dir plugin that offers no endpoint.
    fn check(
        plugin: &str,
        secrets: &[SecretEnv],
        f: &Fragment,
        grants: &Grants,
        declared: &Declared,
        state: &StateGuard,
    ) -> Result<(), PolicyError> {
        let checked = Checked {
            name: plugin,
            builtin: false,
            secrets,
            provides: &[],
            neighbours: &Neighbours::default(),
        };
        super::check(&checked, f, grants, declared, state)
    }

    #[test]
    fn proxies_egress_aliases_and_no_proxy_need_grants_but_the_builtins_have_theirs() {
        let mut svc = service();
        svc.networks = vec![NetworkRole::Egress];
        svc.aliases = vec!["api.github.com".into(), "plain".into()];
        let f = Fragment {
            daemons: vec![],
            services: vec![svc],
            patches: vec![Patch {
                target: "agent".into(),
                env: EnvMap::new(),
                mounts: vec![],
                no_proxy: vec!["x".into(), "plain".into(), "evil.example".into()],
                mcp_servers: vec![],
            }],
            volumes: vec![],
        };
        let proxy = [Endpoint {
            name: "agent-proxy".into(),
            url: "http://x:1".into(),
            priority: 1000,
        }];
        let run = |name: &str, builtin: bool, grants: &Grants| {
            let checked = Checked {
                name,
                builtin,
                secrets: &[],
                provides: &proxy,
                neighbours: &Neighbours::default(),
            };
            super::check(
                &checked,
                &f,
                grants,
                &Declared::default(),
                &StateGuard::default(),
            )
        };
        let err = refused(run("hello", false, &Grants::default()));
        assert_eq!(
            err.refused,
            [
                Capability::Endpoint("agent-proxy".into()),
                Capability::EgressNetwork,
                Capability::Alias("api.github.com".into()),
                Capability::NoProxy("evil.example".into()),
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("`--grant hello=endpoint:agent-proxy`"),
            "{text}"
        );
        let err = refused(run("egress", true, &Grants::default()));
        assert!(
            !err.refused
                .contains(&Capability::Endpoint("agent-proxy".into())),
            "the built-in egress is the agent's proxy"
        );
        let err = refused(run("egress", false, &Grants::default()));
        assert!(
            err.refused
                .contains(&Capability::Endpoint("agent-proxy".into())),
            "a replacement named egress is not"
        );
        let mut grants = Grants::default();
        for g in [
            "endpoint:agent-proxy",
            "egress-network",
            "alias:api.github.com",
            "no-proxy:evil.example",
        ] {
            grants.add("hello", g.parse().unwrap());
        }
        run("hello", false, &grants).unwrap();
    }

    #[test]
    fn no_network_other_plugins_names_and_paths_and_agent_writable_state_need_grants() {
        let mut lonely = service();
        lonely.networks = vec![];
        lonely.aliases = vec!["git-gate".into(), "hello".into()];
        let daemon = |target: &str| Daemon {
            name: "hello".into(),
            command: vec!["/bin/sh".into()],
            env: EnvMap::new(),
            mounts: vec![Mount {
                source: MountSource::State("hello/x".into()),
                target: target.into(),
                read_only: true,
            }],
            ports: vec![],
            aliases: vec![],
            ready_check: None,
        };
        let f = Fragment {
            daemons: vec![daemon("/etc/egress/routes.yaml"), daemon("/srv")],
            services: vec![lonely],
            patches: vec![Patch {
                target: "agent".into(),
                env: EnvMap::new(),
                mounts: vec![
                    Mount {
                        source: MountSource::State("hello/inbox".into()),
                        target: "/inbox".into(),
                        read_only: false,
                    },
                    Mount {
                        source: MountSource::Volume("shared".into()),
                        target: "/shared".into(),
                        read_only: false,
                    },
                    Mount {
                        source: MountSource::State("hello/ro".into()),
                        target: "/ro".into(),
                        read_only: true,
                    },
                ],
                no_proxy: vec![],
                mcp_servers: vec![],
            }],
            volumes: vec![],
        };
        let other = Fragment {
            daemons: vec![daemon("/etc/egress")],
            ..f.clone()
        };
        let mut neighbours = Neighbours::new(
            ["egress", "git-gate", "hello"],
            &[
                ("egress".into(), other.clone()),
                ("hello".into(), f.clone()),
            ],
        );
        neighbours.builtins.insert("egress".into());
        let run = |grants: &Grants| {
            let checked = Checked {
                name: "hello",
                builtin: false,
                secrets: &[],
                provides: &[],
                neighbours: &neighbours,
            };
            let state = StateGuard::default();
            super::check(&checked, &f, grants, &Declared::default(), &state)
        };
        let err = refused(run(&Grants::default()));
        assert_eq!(
            err.refused,
            [
                Capability::Alias("git-gate".into()),
                Capability::DefaultNetwork,
                Capability::MountOver("/etc/egress/routes.yaml".into()),
                Capability::AgentWritable("hello/inbox".into()),
                Capability::AgentWritable("shared".into()),
            ],
            "its own name is no capability, nor a read-only state mount or its own daemon's path"
        );
        let text = err.to_string();
        for flag in [
            "--grant hello=alias:git-gate",
            "--grant hello=default-network",
            "--grant hello=mount-over:/etc/egress/routes.yaml",
            "--grant hello=agent-writable:hello/inbox",
        ] {
            assert!(text.contains(flag), "{text}");
        }
        let mut grants = Grants::default();
        for g in [
            "alias:git-gate",
            "default-network",
            "mount-over:/etc/egress/routes.yaml",
            "agent-writable:hello/inbox",
            "agent-writable:shared",
        ] {
            grants.add("hello", g.parse().unwrap());
        }
        run(&grants).unwrap();
        // The built-in whose path it mounted over is not the one asked for a grant.
        let egress = Checked {
            name: "egress",
            builtin: true,
            secrets: &[],
            provides: &[],
            neighbours: &neighbours,
        };
        let mut own = other.clone();
        own.patches.clear();
        own.services.clear();
        let state = StateGuard::default();
        super::check(
            &egress,
            &own,
            &Grants::default(),
            &Declared::default(),
            &state,
        )
        .unwrap();
    }

    #[test]
    fn no_daemon_mounts_over_the_bundles_programs() {
        for target in [
            "/usr/local/bin/bottle-egress",
            "/usr/local/bin",
            "/usr",
            "/etc/bottle/daemons.json",
            "/",
        ] {
            let f = Fragment {
                daemons: vec![Daemon {
                    name: "d".into(),
                    command: vec!["/bin/sh".into()],
                    env: EnvMap::new(),
                    mounts: vec![Mount {
                        source: MountSource::State("hello/x".into()),
                        target: target.into(),
                        read_only: true,
                    }],
                    ports: vec![],
                    aliases: vec![],
                    ready_check: None,
                }],
                services: vec![],
                patches: vec![],
                volumes: vec![],
            };
            let err = check(
                "hello",
                &[],
                &f,
                &Grants::default(),
                &Declared::default(),
                &StateGuard::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("where its programs live"), "{target}: {err}");
        }
    }

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
            networks: vec![NetworkRole::Internal],
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
            "root",
            "replace:sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(ok.parse::<Grant>().unwrap().to_string(), ok);
        }
        for bad in [
            "rooot",
            "replace:sha256:abc",
            "replace:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
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
        let secrets = [SecretEnv {
            name: "X".into(),
            from_host_env: "AWS_SECRET_ACCESS_KEY".into(),
        }];
        let err = refused(check(
            "evil",
            &secrets,
            &fragment_with(s),
            &Grants::default(),
            &Declared::default(),
            &StateGuard::default(),
        ));
        assert_eq!(err.refused.len(), 6);
        let msg = err.to_string();
        for part in [
            "`privileged`",
            "`cap-add:NET_ADMIN`",
            "`publish:8080`",
            "`host-path:/etc`",
            "`docker-socket`",
            "`host-env:AWS_SECRET_ACCESS_KEY`",
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
        let err = refused(run("mine", &f, &grants));
        assert_eq!(err.refused, vec![Capability::Privileged]);
        grants.add("mine", "privileged".parse().unwrap());
        run("mine", &f, &grants).unwrap();
    }

    fn run(plugin: &str, f: &Fragment, grants: &Grants) -> Result<(), PolicyError> {
        check(
            plugin,
            &[],
            f,
            grants,
            &Declared::default(),
            &StateGuard::default(),
        )
    }

    fn refused(r: Result<(), PolicyError>) -> Refused {
        match r {
            Err(PolicyError::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn forbidden(r: Result<(), PolicyError>) -> String {
        match r {
            Err(e @ PolicyError::Forbidden(_)) => e.to_string(),
            other => panic!("expected a forbidden request, got {other:?}"),
        }
    }

    fn mounting(source: MountSource) -> Fragment {
        let mut s = service();
        s.mounts = vec![Mount {
            source,
            target: "/m".into(),
            read_only: true,
        }];
        fragment_with(s)
    }

    #[test]
    fn declared_paths_and_env_need_no_grant_for_their_plugin_only() {
        let declared = Declared {
            paths: [("/home/u/.ssh/k".to_owned(), "git-gate".to_owned())].into(),
            host_env: [("GITHUB_TOKEN".to_owned(), "egress".to_owned())].into(),
        };
        let secrets = [SecretEnv {
            name: "X_TOKEN_0".into(),
            from_host_env: "GITHUB_TOKEN".into(),
        }];
        let key = mounting(MountSource::Host("/home/u/.ssh/k".into()));
        let (grants, state) = (Grants::default(), StateGuard::default());
        check("git-gate", &[], &key, &grants, &declared, &state).unwrap();
        let none = Fragment::default();
        check("egress", &secrets, &none, &grants, &declared, &state).unwrap();
        let err = refused(check("evil", &secrets, &key, &grants, &declared, &state));
        assert_eq!(
            err.refused,
            [
                Capability::HostPath("/home/u/.ssh/k".into()),
                Capability::HostEnv("GITHUB_TOKEN".into())
            ]
        );
    }

    #[test]
    fn a_host_env_grant_allows_that_name_only() {
        let secrets = [SecretEnv {
            name: "T".into(),
            from_host_env: "VAULT_TOKEN".into(),
        }];
        let mut grants = Grants::default();
        grants.add("vault", "host-env:VAULT_TOKEN".parse().unwrap());
        let f = Fragment::default();
        let (declared, state) = (Declared::default(), StateGuard::default());
        check("vault", &secrets, &f, &grants, &declared, &state).unwrap();
        let err = refused(check("other", &secrets, &f, &grants, &declared, &state));
        assert!(
            err.to_string()
                .contains("--grant other=host-env:VAULT_TOKEN")
        );
        let other_name = [SecretEnv {
            name: "T".into(),
            from_host_env: "VAULT_TOKEN2".into(),
        }];
        let err = refused(check("vault", &other_name, &f, &grants, &declared, &state));
        assert_eq!(err.refused, [Capability::HostEnv("VAULT_TOKEN2".into())]);
        for bad in ["host-env:1BAD", "host-env:A-B", "host-env:"] {
            assert!(bad.parse::<Grant>().is_err(), "{bad}");
        }
    }

    #[test]
    fn dot_dot_cannot_climb_out_of_a_granted_path() {
        let mut grants = Grants::default();
        grants.add("mine", "host-path:/data".parse().unwrap());
        for path in ["/data/../etc", "/data/./x", "/data//x", "data/x"] {
            let msg = forbidden(run(
                "mine",
                &mounting(MountSource::Host(path.into())),
                &grants,
            ));
            assert!(
                msg.contains(path) && msg.contains("clean absolute"),
                "{msg}"
            );
        }
        run(
            "mine",
            &mounting(MountSource::Host("/data/x".into())),
            &grants,
        )
        .unwrap();
    }

    #[test]
    fn a_dir_above_the_docker_socket_needs_the_socket_grant() {
        let mut grants = Grants::default();
        grants.add("mine", "host-path:/".parse().unwrap());
        for path in ["/var/run", "/run", "/"] {
            let err = refused(run(
                "mine",
                &mounting(MountSource::Host(path.into())),
                &grants,
            ));
            assert_eq!(err.refused, [Capability::DockerSocket], "{path}");
        }
    }

    #[test]
    fn state_mounts_stay_inside_and_off_other_plugins_keys() {
        let state = StateGuard {
            ca_keys: [
                ("ca/pipelock/key.pem".to_owned(), "pipelock".to_owned()),
                ("ca/egress/bundle.pem".to_owned(), "egress".to_owned()),
            ]
            .into(),
        };
        let (grants, declared) = (Grants::default(), Declared::default());
        let run = |plugin: &str, path: &str| {
            let f = mounting(MountSource::State(path.into()));
            check(plugin, &[], &f, &grants, &declared, &state)
        };
        for (path, why) in [
            ("../../..", "not a plain relative path"),
            ("", "not a plain relative path"),
            ("/etc", "not a plain relative path"),
            ("metadata.json", "belongs to bottle itself"),
            ("compose.log/x", "belongs to bottle itself"),
            ("ca", "the private key of a CA that"),
            ("ca/pipelock", "`pipelock` owns"),
            ("ca/pipelock/key.pem", "`pipelock` owns"),
            ("ca/egress/bundle.pem", "`egress` owns"),
        ] {
            let msg = forbidden(run("custom", path));
            assert!(msg.contains(why), "{path}: {msg}");
        }
        let writable = |plugin: &str, path: &str| {
            let mut f = mounting(MountSource::State(path.into()));
            f.services[0].mounts[0].read_only = false;
            check(plugin, &[], &f, &grants, &declared, &state)
        };
        let msg = forbidden(writable("custom", "pipelock/pipelock.yaml"));
        assert!(
            msg.contains("writable; a plugin may write only under `custom/`"),
            "{msg}"
        );
        writable("supervise", "supervise/queue").unwrap();
        run("custom", "pipelock/pipelock.yaml").unwrap();
        run("custom", "ca/pipelock/cert.pem").unwrap();
        run("pipelock", "ca/pipelock/key.pem").unwrap();
        run("custom", "custom/config.yaml").unwrap();
    }
}
