//! Bring-up: networks, then containers, created concurrently; started in dependency order.

use super::attach::{GO_DIR_IN_AGENT, INIT_IN_AGENT};
use super::handoff::Wiring;
use super::project::{self, ComposeFile, ComposeService as Service};
use super::{DockerError, api, kept, pool};
use crate::run::confine::Confinement;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Ipam, IpamConfig, Mount,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use bottle_contract::labels;
use bottle_contract::layout::{
    AGENT_SERVICE, BUNDLE_NEVER_READY_PREFIX, BUNDLE_READY_LINE, BUNDLE_SERVICE,
};
use futures_util::{StreamExt, future::try_join_all};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The compose labels that make `docker compose -p <project>` see what bottle created.
pub fn compose_labels(
    project: &str,
    service: Option<&str>,
    network: Option<&str>,
    working_dir: &str,
) -> HashMap<String, String> {
    let mut l = HashMap::from([
        ("com.docker.compose.project".to_owned(), project.to_owned()),
        (
            "com.docker.compose.project.working_dir".to_owned(),
            working_dir.to_owned(),
        ),
        (
            "com.docker.compose.project.config_files".to_owned(),
            format!("{working_dir}/compose.yaml"),
        ),
        ("com.docker.compose.version".to_owned(), "1.29.2".to_owned()),
    ]);
    if let Some(s) = service {
        l.insert("com.docker.compose.service".into(), s.to_owned());
        l.insert("com.docker.compose.container-number".into(), "1".into());
        l.insert("com.docker.compose.oneoff".into(), "False".into());
    }
    if let Some(n) = network {
        l.insert("com.docker.compose.network".into(), n.to_owned());
    }
    l
}

/// What a bring-up needs besides the compose file.
#[derive(Debug, Clone)]
pub struct UpRequest<'a> {
    /// The compose project (`bottle-<slug>`).
    pub project: &'a str,
    /// The bottle's slug: every object created carries it as [`labels::SLUG`], whatever the
    /// backend rendered, so teardown and `bottle cleanup` find it all.
    pub slug: &'a str,
    /// The state dir (compose's working dir).
    pub state_dir: &'a str,
    /// Values for the env names the file leaves open (secrets), by name.
    pub secrets: &'a BTreeMap<String, String>,
    /// How long to wait for health checks.
    pub health_timeout: Duration,
    /// What the host imposes on the agent.
    pub agent: AgentRun<'a>,
    /// The sidecar bundle's limits (memory, processes, CPUs).
    pub bundle: crate::run::confine::Resources,
    /// The run's clock.
    pub phases: &'a crate::run::phases::Phases,
    /// bottle's settings (the address pool its networks' subnets come from).
    pub config: &'a crate::config::BottleConfig,
}

/// Every container's log, capped: a flood of refused requests fills at most this much disk
/// per container (json-file's `max-size` times `max-file`).
pub const LOG_MAX_SIZE: &str = "10m";
/// See [`LOG_MAX_SIZE`].
pub const LOG_MAX_FILE: &str = "3";

/// The log driver every container gets, whatever the backend rendered.
fn capped_log() -> bollard::models::HostConfigLogConfig {
    bollard::models::HostConfigLogConfig {
        typ: Some("json-file".to_owned()),
        config: Some(HashMap::from([
            ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
            ("max-file".to_owned(), LOG_MAX_FILE.to_owned()),
        ])),
    }
}

/// The agent's log driver: none. Its process is the agent's command, whose output (your
/// terminal session) may carry anything the agent read, its own hop token among it: it
/// reaches your terminal only, never a log Docker or bottle keeps.
fn no_log() -> bollard::models::HostConfigLogConfig {
    bollard::models::HostConfigLogConfig {
        typ: Some("none".to_owned()),
        config: None,
    }
}

/// The container name of service `key`.
pub fn container_name(project: &str, key: &str, s: &Service) -> String {
    s.container_name
        .clone()
        .unwrap_or_else(|| format!("{project}-{key}-1"))
}

/// The address Docker gave container `container` on network `network`, if it is on it.
pub async fn address_on(
    docker: &Docker,
    container: &str,
    network: &str,
) -> Result<Option<std::net::IpAddr>, DockerError> {
    let info = docker
        .inspect_container(container, None)
        .await
        .map_err(api(format!("inspecting {container}")))?;
    Ok(info
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut m| m.remove(network))
        .and_then(|e| e.ip_address)
        .and_then(|a| a.parse().ok()))
}

/// A published port `ip:host:container` (IPv6 as `[::1]:8080:80` or `::1:8080:80`), split
/// into the container port and the host binding.
fn port_binding(spec: &str) -> Option<(u16, PortBinding)> {
    let mut parts = spec.rsplitn(3, ':');
    let container: u16 = parts.next()?.parse().ok()?;
    let host: u16 = parts.next()?.parse().ok()?;
    let ip = parts.next()?.trim_start_matches('[').trim_end_matches(']');
    if ip.parse::<std::net::IpAddr>().is_err() {
        return None;
    }
    Some((
        container,
        PortBinding {
            host_ip: Some(ip.to_owned()),
            host_port: Some(host.to_string()),
        },
    ))
}

/// Where [`AgentRun::probe`] is mounted in the agent (read-only).
pub const PROBE_IN_AGENT: &str = "/.bottle/probe";

/// The one server Docker's resolver in the agent may pass a name on to: the agent's own
/// loopback, where no daemon of bottle's listens (see [`confine_agent`]).
pub const AGENT_ENGINE_DNS: &str = "127.0.0.1";

/// Whether service `key` is the agent: by its compose key (which admission ties to the plan's
/// agent), or by its role label; a backend that drops the label does not unconfine it.
pub(super) fn is_agent(key: &str, s: &Service) -> bool {
    key == AGENT_SERVICE
        || s.labels
            .get(labels::ROLE)
            .is_some_and(|r| r == AGENT_SERVICE)
}

/// Whether service `key` is the sidecar bundle, by its compose key or its role label.
pub(super) fn is_bundle(key: &str, s: &Service) -> bool {
    key == BUNDLE_SERVICE
        || s.labels
            .get(labels::ROLE)
            .is_some_and(|r| r == BUNDLE_SERVICE)
}

/// The security options of service `key`: the bundle always gets no-new-privileges, so a
/// daemon cannot gain privileges through a setuid program in its image.
fn security_opt(key: &str, s: &Service) -> Vec<String> {
    let mut opts = s.security_opt.clone();
    if is_bundle(key, s) && !opts.iter().any(|o| o.starts_with("no-new-privileges")) {
        opts.push("no-new-privileges:true".to_owned());
    }
    opts
}

/// What the host imposes on the agent container at creation (see [`crate::run::confine`]).
#[derive(Debug, Clone)]
pub struct AgentRun<'a> {
    /// The limits and choices.
    pub confinement: &'a Confinement,
    /// The user Docker runs it as (`uid:gid` or a name), already decided.
    pub user: String,
    /// The escape-suite probe binary on the host, mounted for `bottle verify`.
    pub probe: Option<String>,
    /// `cwd: mount`: the agent's layer over your dir, mounted at its workdir in place of your
    /// dir itself ([`crate::plan::workdir::layer`]).
    pub layer: Option<&'a crate::plan::workdir::layer::Layer>,
    /// The agent's command, run as the container's process once given the go-ahead; `None`
    /// for a file without an agent (a native backend's bundle).
    pub start: Option<AgentStart<'a>>,
}

/// The agent's command as its container's own process: in place of the idle process the
/// compose file names, `bottle-init agent` waits for the go-ahead ([`super::attach`]) and
/// becomes the command. No `docker exec` then: the engine starts one process per container,
/// and the agent's is gone by itself when its command ends.
#[derive(Debug, Clone, Copy)]
pub struct AgentStart<'a> {
    /// `bottle-init` and the go-ahead FIFO on the host.
    pub files: &'a super::attach::StartFiles,
    /// The command.
    pub command: &'a [String],
    /// Where it runs (the plan's workdir, whatever the backend rendered).
    pub workdir: &'a str,
    /// Whether the container gets a TTY.
    pub tty: bool,
    /// The bundle's listeners, when its daemons can take them from the agent's namespace
    /// ([`super::handoff`]): the agent then joins no network if the file lets it.
    pub listeners: Option<&'a [bottle_contract::handoff::Listener]>,
}

/// The agent's confinement, set by the host whatever the backend rendered: its user, no
/// capabilities (no raw sockets, no mknod, no setuid-root files, no chown), no privilege
/// gain, a read-only root with tmpfs at `/tmp` and its home, limits, no IPv6, bottle's own
/// hosts file and resolver ([`super::names`]), and Docker's resolver passing nothing out. A backend cannot loosen it: an agent is never
/// privileged nor given caps.
fn confine_agent(
    run: &AgentRun<'_>,
    workdir: &str,
    volume: (String, HashMap<String, String>),
    mut h: HostConfig,
) -> Result<HostConfig, String> {
    let c = run.confinement;
    h.privileged = Some(false);
    h.cap_add = None;
    h.cap_drop = Some(vec!["ALL".to_owned()]);
    let mut opts = h.security_opt.take().unwrap_or_default();
    if !opts.iter().any(|o| o.starts_with("no-new-privileges")) {
        opts.push("no-new-privileges:true".to_owned());
    }
    h.security_opt = Some(opts);
    h.readonly_rootfs = Some(true);
    let ids = Confinement::numeric_ids(&run.user);
    let owner = ids.map_or_else(String::new, |(u, g)| format!(",uid={u},gid={g}"));
    // A home owned by a user Docker resolves by name cannot be chowned at mount: it is 1777.
    let home_mode = if ids.is_some() { "0700" } else { "1777" };
    // `exec` said outright: Docker's tmpfs default is noexec, which breaks a venv's pip, `go
    // test` and every tool an agent installs in its home, and buys nothing (the agent can run
    // any interpreter on any file).
    h.tmpfs = Some(HashMap::from([
        (
            "/tmp".to_owned(),
            "rw,exec,nosuid,nodev,mode=1777".to_owned(),
        ),
        (
            c.home.clone(),
            format!("rw,exec,nosuid,nodev,mode={home_mode}{owner}"),
        ),
    ]));
    let mut mounts = h.mounts.take().unwrap_or_default();
    if let Some(layer) = run.layer {
        // Your dir never reaches the agent as itself: the overlay over it does.
        mounts.retain(|m| m.target.as_deref() != Some(workdir));
        let (name, labels) = volume.clone();
        mounts.push(Mount {
            target: Some(workdir.to_owned()),
            source: Some(name),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            volume_options: Some(MountVolumeOptions {
                labels: Some(labels),
                driver_config: Some(MountVolumeOptionsDriverConfig {
                    name: Some("local".to_owned()),
                    options: Some(layer.mount_options().map_err(|e| e.to_string())?),
                }),
                ..MountVolumeOptions::default()
            }),
            ..Mount::default()
        });
    } else if c.workdir_volume {
        // A volume, not a plain tmpfs mount: Docker copies into volumes (`cwd: copy`), not
        // into tmpfs mounts, and this one is the agent's from its root down.
        let (name, labels) = volume;
        mounts.push(Mount {
            target: Some(workdir.to_owned()),
            source: Some(name),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            volume_options: Some(MountVolumeOptions {
                labels: Some(labels),
                driver_config: Some(MountVolumeOptionsDriverConfig {
                    name: Some("local".to_owned()),
                    options: Some(HashMap::from([
                        ("type".to_owned(), "tmpfs".to_owned()),
                        ("device".to_owned(), "tmpfs".to_owned()),
                        (
                            "o".to_owned(),
                            format!(
                                "nosuid,nodev,mode=0{}{owner}",
                                if ids.is_some() { "755" } else { "1777" }
                            ),
                        ),
                    ])),
                }),
                ..MountVolumeOptions::default()
            }),
            ..Mount::default()
        });
    }
    let start = run.start.iter().flat_map(|s| {
        [
            (INIT_IN_AGENT, s.files.init.display().to_string()),
            (GO_DIR_IN_AGENT, s.files.go_dir.display().to_string()),
        ]
    });
    let probe = run.probe.as_ref().map(|p| (PROBE_IN_AGENT, p.clone()));
    for (target, source) in start.chain(probe) {
        mounts.push(Mount {
            target: Some(target.to_owned()),
            source: Some(source),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Mount::default()
        });
    }
    h.mounts = Some(mounts);
    h.memory = i64::try_from(c.resources.memory).ok();
    h.memory_swap = h.memory;
    h.pids_limit = Some(c.resources.pids);
    h.nano_cpus = c.resources.nano_cpus;
    // Docker's own resolver (127.0.0.11) answers the agent whatever its resolv.conf says, and
    // passes on the names it does not know. Servers given to it are dialled from the agent's
    // namespace, where 127.0.0.1 is the agent's own loopback. Left to the host's resolv.conf,
    // an engine before the CVE-2024-29018 fix (Debian 12's 20.10 is one) dials a loopback
    // resolver (dnsmasq, unbound) from the host's namespace: any name the agent makes up
    // would carry data out.
    h.dns = Some(vec![AGENT_ENGINE_DNS.to_owned()]);
    h.dns_options = None;
    h.dns_search = None;
    h.sysctls = Some(HashMap::from([
        ("net.ipv6.conf.all.disable_ipv6".to_owned(), "1".to_owned()),
        (
            "net.ipv6.conf.default.disable_ipv6".to_owned(),
            "1".to_owned(),
        ),
    ]));
    Ok(h)
}

fn create_body(
    req: &UpRequest<'_>,
    file: &ComposeFile,
    key: &str,
    s: &Service,
    wiring: Option<&Wiring>,
) -> Result<ContainerCreateBody, DockerError> {
    let agent = is_agent(key, s);
    let state_dir = std::path::Path::new(req.state_dir);
    let mut env: Vec<String> = s
        .environment
        .iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some(format!("{k}={v}")),
            None => req.secrets.get(k).map(|v| format!("{k}={v}")),
        })
        .collect();
    if agent && !s.environment.contains_key("HOME") {
        env.push(format!("HOME={}", req.agent.confinement.home));
    }
    if let Some(w) = wiring.filter(|_| is_bundle(key, s)) {
        env.push(w.bundle_env());
    }
    let mut mounts: Vec<Mount> = s
        .volumes
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(if m.kind == "volume" {
                MountType::VOLUME
            } else {
                MountType::BIND
            }),
            read_only: Some(m.read_only),
            ..Mount::default()
        })
        .collect();
    if wiring.is_some() && (agent || is_bundle(key, s)) {
        mounts.push(Wiring::mount(state_dir, agent));
    }
    let mut labels = compose_labels(req.project, Some(key), None, req.state_dir);
    labels.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.insert(labels::SLUG.to_owned(), req.slug.to_owned());
    let first_net = s
        .networks
        .keys()
        .next()
        .and_then(|k| file.networks.get(k).map(|n| (k, n)));
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &s.ports {
        let (container, binding) = port_binding(p).ok_or_else(|| {
            DockerError::Host(format!(
                "service `{key}`: port {p:?} is not `IP:HOST_PORT:CONTAINER_PORT`; fix the backend that wrote it"
            ))
        })?;
        port_bindings.insert(format!("{container}/tcp"), Some(vec![binding]));
    }
    // A binding takes effect only for an exposed port (the CLI's `-p` exposes it implicitly).
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let start = req.agent.start.filter(|_| agent);
    let (entrypoint, cmd) = match start {
        Some(start) => (
            Some(super::attach::StartFiles::entrypoint(
                wiring.map(Wiring::init_args).as_ref().map(|a| a.as_slice()),
                start.command,
            )),
            None,
        ),
        None => (
            (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
            (!s.command.is_empty()).then(|| s.command.clone()),
        ),
    };
    // The agent's stdio is attached to (the user's terminal), as by `docker run -i`.
    let attached = start.map(|_| true);
    Ok(ContainerCreateBody {
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        image: Some(s.image.clone()),
        entrypoint,
        cmd,
        tty: start.map(|s| s.tty),
        open_stdin: attached,
        stdin_once: attached,
        attach_stdin: attached,
        attach_stdout: attached,
        attach_stderr: attached,
        env: Some(env),
        working_dir: match start {
            Some(start) => Some(start.workdir.to_owned()),
            None => s.working_dir.clone(),
        },
        user: if agent {
            Some(req.agent.user.clone())
        } else {
            s.user.clone()
        },
        labels: Some(labels),
        stop_timeout: s
            .stop_grace_period
            .as_deref()
            .and_then(project::duration_ns)
            .map(|ns| ns / 1_000_000_000),
        healthcheck: s.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: project::duration_ns(&h.interval),
            timeout: project::duration_ns(&h.timeout),
            retries: Some(i64::from(h.retries)),
            ..HealthConfig::default()
        }),
        host_config: Some({
            let mut h = HostConfig {
                log_config: Some(if start.is_some() {
                    no_log()
                } else {
                    capped_log()
                }),
                // The agent's command is never PID 1: Docker's init reaps what it leaves
                // and passes signals on, whatever the backend rendered.
                init: Some(s.init || start.is_some()),
                mounts: Some(mounts),
                privileged: Some(s.privileged),
                cap_add: (!s.cap_add.is_empty()).then(|| s.cap_add.clone()),
                security_opt: Some(security_opt(key, s)).filter(|o| !o.is_empty()),
                readonly_rootfs: Some(s.read_only),
                // An agent on no network of the file's is on none, never on Docker's default
                // bridge (a way out around every sidecar).
                network_mode: match first_net {
                    Some((_, n)) => Some(n.name.clone()),
                    None if agent => Some("none".to_owned()),
                    None => None,
                },
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                ..HostConfig::default()
            };
            if is_bundle(key, s) {
                // The few capabilities its init needs (`BUNDLE_CAPS`), and those the plan
                // grants its plugins; none of Docker's other defaults. No raw sockets above
                // all: on the bridge every bundle shares, one could reach the others at the
                // link layer (ARP), below what the bridge's firewall sees.
                h.cap_drop = Some(vec!["ALL".to_owned()]);
                let mut caps: Vec<String> = bottle_contract::layout::BUNDLE_CAPS
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect();
                for cap in &s.cap_add {
                    if !caps.contains(cap) {
                        caps.push(cap.clone());
                    }
                }
                h.cap_add = Some(caps);
                // Whatever the agent makes the daemons do, the bundle cannot take the host.
                h.memory = i64::try_from(req.bundle.memory).ok();
                h.memory_swap = h.memory;
                h.pids_limit = Some(req.bundle.pids);
                h.nano_cpus = req.bundle.nano_cpus;
                // egress takes DNS, TLS and HTTP on 53, 443 and 80 for clients that ignore the
                // proxy env, as an unprivileged daemon: in the bundle's own network namespace
                // only, every port is an ordinary one.
                h.sysctls = Some(HashMap::from([(
                    "net.ipv4.ip_unprivileged_port_start".to_owned(),
                    "0".to_owned(),
                )]));
                // `host-gateway` in `egress.hosts` is the engine's host-gateway address, as in
                // `docker run --add-host NAME:host-gateway`.
                let mut hosts = h.extra_hosts.take().unwrap_or_default();
                hosts.push(format!(
                    "{}:host-gateway",
                    bottle_contract::egress::HOST_GATEWAY_NAME
                ));
                h.extra_hosts = Some(hosts);
            }
            if agent {
                let mut volume_labels = compose_labels(req.project, None, None, req.state_dir);
                volume_labels.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                volume_labels.insert(labels::ROLE.to_owned(), "volume".to_owned());
                volume_labels.insert(labels::SLUG.to_owned(), req.slug.to_owned());
                let volume = (format!("{}-workdir", req.project), volume_labels);
                let workdir = s.working_dir.as_deref().unwrap_or("/workspace");
                let mut h =
                    confine_agent(&req.agent, workdir, volume, h).map_err(DockerError::Host)?;
                let mut mounts = h.mounts.take().unwrap_or_default();
                mounts.retain(|m| {
                    !matches!(m.target.as_deref(), Some("/etc/hosts" | "/etc/resolv.conf"))
                });
                mounts.extend(super::names::mounts(state_dir));
                h.mounts = Some(mounts);
                if wiring.is_some() {
                    // Its init binds the bundle's ports (53, 80 and 443 among them) in its own
                    // namespace, which holds loopback alone: no capability is needed for that.
                    h.sysctls.get_or_insert_with(HashMap::new).insert(
                        "net.ipv4.ip_unprivileged_port_start".to_owned(),
                        "0".to_owned(),
                    );
                }
                h
            } else {
                h
            }
        }),
        networking_config: first_net.map(|(k, n)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.name.clone(),
                EndpointSettings {
                    aliases: Some(alias_list(s, k, key)),
                    ..EndpointSettings::default()
                },
            )])),
        }),
        ..ContainerCreateBody::default()
    })
}

/// Aliases on network `net`: the service key (as compose gives it) plus the file's aliases.
pub(super) fn alias_list(s: &Service, net: &str, key: &str) -> Vec<String> {
    let mut aliases = vec![key.to_owned()];
    aliases.extend(
        s.networks
            .get(net)
            .map(|n| n.aliases.clone())
            .unwrap_or_default(),
    );
    aliases
}

/// The agent may join internal networks only, whatever the backend rendered: one with a route
/// out would bypass every sidecar.
pub fn check_agent_networks(file: &ComposeFile) -> Result<(), DockerError> {
    for (key, s) in &file.services {
        if !is_agent(key, s) {
            continue;
        }
        for net in s.networks.keys() {
            match file.networks.get(net) {
                Some(n) if n.internal => {}
                Some(n) => {
                    return Err(DockerError::Host(format!(
                        "the backend put the agent (`{key}`) on network {}, which is not internal: it would have a way out around the sidecars; remove the plugin that rendered it from --plugin-dir",
                        n.name
                    )));
                }
                None => {
                    return Err(DockerError::Host(format!(
                        "the agent (`{key}`) joins network `{net}`, which the compose file does not define; fix the backend that wrote it"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Create networks, volumes and containers; start them in dependency order; await health.
///
/// Returns the file as brought up: its networks named as the containers joined them (the
/// shared way out by id, a kept network by its own name). On error, what was created stays
/// for the caller's teardown (which removes by label, and lets kept networks go).
pub async fn up(
    docker: &Docker,
    file: &ComposeFile,
    req: &UpRequest<'_>,
) -> Result<ComposeFile, DockerError> {
    check_agent_networks(file)?;
    let state_dir = std::path::Path::new(req.state_dir);
    super::names::prepare(state_dir)?;
    let listeners = req.agent.start.and_then(|s| s.listeners);
    let wired = super::handoff::wire(file, req.project, listeners);
    let (file, wiring) = match &wired {
        Some((f, w)) => {
            super::handoff::prepare(state_dir)?;
            (f, Some(w))
        }
        None => (file, None),
    };
    // Volumes need no network: both are made at once.
    let volumes = try_join_all(file.volumes.values().map(|v| async move {
        let mut labels: HashMap<String, String> =
            compose_labels(req.project, None, None, req.state_dir);
        labels.extend(v.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert(labels::SLUG.to_owned(), req.slug.to_owned());
        docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(v.name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(api(format!("creating volume {}", v.name)))
    }));
    let (joined_as, _) =
        futures_util::future::try_join(create_networks(docker, file, req), volumes).await?;
    // The file as brought up names a kept network by its own name; containers join the shared
    // way out by id besides (the engine may hold two of its name for a moment, see
    // [`super::shared`]), but a started container's networks are known by name.
    let mut brought_up = file.clone();
    let mut joined = file.clone();
    for (key, joined_name) in &joined_as {
        if let Some(n) = joined.networks.get_mut(key) {
            n.name = joined_name.id_or_name().to_owned();
        }
        if let (JoinedAs::Kept(name), Some(n)) = (joined_name, brought_up.networks.get_mut(key)) {
            n.name = name.clone();
        }
    }
    let kept_names: Vec<String> = joined_as
        .iter()
        .filter_map(|(_, j)| match j {
            JoinedAs::Kept(name) => Some(name.clone()),
            JoinedAs::SharedId(_) => None,
        })
        .collect();
    let file = &joined;
    req.phases.done("networks and volumes created");
    try_join_all(file.services.iter().map(|(key, s)| async move {
        let name = container_name(req.project, key, s);
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                create_body(req, file, key, s, wiring)?,
            )
            .await
            .map_err(api(format!(
                "creating container {name} from image {}",
                s.image
            )))?;
        // API 1.41 attaches one network at create; the others before start.
        for net_key in s.networks.keys().skip(1) {
            let Some(n) = file.networks.get(net_key) else {
                continue;
            };
            docker
                .connect_network(
                    &n.name,
                    NetworkConnectRequest {
                        container: name.clone(),
                        endpoint_config: Some(EndpointSettings {
                            aliases: Some(alias_list(s, net_key, key)),
                            ..EndpointSettings::default()
                        }),
                    },
                )
                .await
                .map_err(api(format!("connecting {name} to {}", n.name)))?;
        }
        Ok::<_, DockerError>(())
    }))
    .await?;
    req.phases.done("containers created");
    // The lock files keep a kept network to one bottle; the engine says it outright.
    for name in &kept_names {
        kept::only_ours(docker, name, req.slug).await?;
    }

    // Start in waves: a service starts once everything it depends on is started (and healthy
    // where the file says so). Services of one wave start concurrently. The agent is the
    // exception: it starts with what it depends on, before their health checks pass, since
    // nothing of the agent's runs before bring-up returns (its command waits for the go-ahead,
    // given after that) and its names are filled in once the others have their addresses.
    let agent = file.services.iter().find(|(k, s)| is_agent(k, s));
    let mut started: BTreeMap<&str, ()> = BTreeMap::new();
    let mut agent_started = agent.is_none();
    while started.len() < file.services.len() {
        let wave: Vec<(&String, &Service)> = file
            .services
            .iter()
            .filter(|(k, s)| {
                !started.contains_key(k.as_str())
                    && !is_agent(k, s)
                    && s.depends_on
                        .keys()
                        .all(|d| started.contains_key(d.as_str()))
            })
            .collect();
        let agent_ready = agent.filter(|(_, s)| {
            !agent_started
                && s.depends_on
                    .keys()
                    .all(|d| started.contains_key(d.as_str()) || wave.iter().any(|(k, _)| *k == d))
        });
        if wave.is_empty() && agent_ready.is_none() {
            let missing = file.services.iter().find_map(|(k, s)| {
                s.depends_on
                    .keys()
                    .find(|d| !file.services.contains_key(d.as_str()))
                    .map(|d| {
                        format!("service `{k}` depends on `{d}`, which the file does not define")
                    })
            });
            return Err(DockerError::Host(missing.unwrap_or_else(|| {
                "the compose file's `depends_on` entries form a cycle".into()
            })));
        }
        // The wave, and the agent once what it depends on starts in it, all at once.
        let starting: Vec<(&String, &Service)> = wave.iter().copied().chain(agent_ready).collect();
        try_join_all(starting.iter().map(|(key, s)| async move {
            let name = container_name(req.project, key, s);
            let hint = match req.agent.start {
                Some(_) if is_agent(key, s) => super::attach::start_hint(),
                _ => String::new(),
            };
            docker.start_container(&name, None).await.map_err(|e| {
                match api(format!("starting container {name}"))(e) {
                    DockerError::Api { what, detail } => DockerError::Api {
                        what,
                        detail: detail + &hint,
                    },
                    other => other,
                }
            })
        }))
        .await?;
        let names: Vec<&str> = starting.iter().map(|(k, _)| k.as_str()).collect();
        req.phases.done(&format!("started {}", names.join(", ")));
        for (k, _) in &wave {
            started.insert(k, ());
        }
        if let Some((key, s)) = agent_ready {
            // Its names need the addresses of what started with it; its process, waiting for
            // the go-ahead, resolves nothing, and its command runs only after bring-up.
            let done: Vec<&str> = started.keys().copied().collect();
            super::names::fill(
                docker,
                file,
                req.project,
                state_dir,
                (key.as_str(), s),
                &done,
                wiring,
            )
            .await?;
        }
        try_join_all(wave.iter().map(|(key, s)| async move {
            let needed_healthy = file.services.values().any(|o| {
                o.depends_on
                    .get(key.as_str())
                    .is_some_and(|d| d.condition == "service_healthy")
            });
            if let (true, Some(h)) = (needed_healthy, &s.healthcheck) {
                let name = container_name(req.project, key, s);
                if is_bundle(key, s) {
                    wait_bundle_ready(docker, &name, &h.test, req.health_timeout).await?;
                } else {
                    wait_healthy(docker, &name, &h.test, req.health_timeout).await?;
                }
                req.phases.done(&format!("{key} healthy"));
            }
            Ok::<_, DockerError>(())
        }))
        .await?;
        if let Some((key, _)) = agent_ready {
            agent_started = true;
            started.insert(key, ());
        }
    }
    Ok(brought_up)
}

/// How a network of the file is joined when not by the file's name.
#[derive(Debug, Clone)]
enum JoinedAs {
    /// The shared way out, by its id.
    SharedId(String),
    /// A kept network, by its own name.
    Kept(String),
}

impl JoinedAs {
    fn id_or_name(&self) -> &str {
        match self {
            JoinedAs::SharedId(s) | JoinedAs::Kept(s) => s,
        }
    }
}

/// Create the file's networks at once, each bridge on a subnet of bottle's own pool sized to
/// what joins it ([`pool`]); a subnet another run took first is looked for again. An external
/// network (the shared way out) is made only when the engine lacks it ([`super::shared`]);
/// returns the keys of those joined by another name than the file's, and that name or id.
async fn create_networks(
    docker: &Docker,
    file: &ComposeFile,
    req: &UpRequest<'_>,
) -> Result<Vec<(String, JoinedAs)>, DockerError> {
    let shared = async {
        let mut ids = Vec::new();
        for (key, n) in file.networks.iter().filter(|(_, n)| n.external) {
            if n.name != bottle_contract::compose::SHARED_EGRESS_NETWORK {
                return Err(DockerError::Host(format!(
                    "network `{key}` is external but not bottle's shared way out ({}); fix the backend that wrote it",
                    bottle_contract::compose::SHARED_EGRESS_NETWORK
                )));
            }
            ids.push((
                key.clone(),
                JoinedAs::SharedId(super::shared::ensure(docker).await?),
            ));
        }
        Ok(ids)
    };
    let (mut ids, own) =
        futures_util::future::try_join(shared, create_own_networks(docker, file, req)).await?;
    ids.extend(own);
    Ok(ids)
}

/// Create the bottle's own (not external) networks of `file`, as [`create_networks`] says,
/// taking a kept network for each internal bridge where there is one ([`kept`]); returns the
/// keys and names of those that are not the file's.
async fn create_own_networks(
    docker: &Docker,
    file: &ComposeFile,
    req: &UpRequest<'_>,
) -> Result<Vec<(String, JoinedAs)>, DockerError> {
    let range = req.config.networks.pool;
    let mut renamed = Vec::new();
    // Each network to make: the file's network, its name and labels, its prefix.
    let mut to_make = Vec::new();
    for (key, n) in file.networks.iter().filter(|(_, n)| !n.external) {
        let members = file
            .services
            .values()
            .filter(|s| s.networks.contains_key(key))
            .count();
        let prefix = pool::prefix_for(members, n.internal);
        if n.internal && n.driver == "bridge" {
            let options = network_options(n);
            let wanted = kept::Wanted {
                prefix,
                options: &options,
                pool: range,
            };
            if let Some(held) = kept::take(docker, &wanted, req.slug).await? {
                renamed.push((key.clone(), JoinedAs::Kept(held.name.clone())));
                kept::hold(held);
                continue;
            }
            // Without a lock (`/tmp` unwritable), made for this bottle alone as it was.
            if let Some(held) = kept::fresh(range, req.slug) {
                renamed.push((key.clone(), JoinedAs::Kept(held.name.clone())));
                to_make.push((n, held.name.clone(), kept::make_labels(), prefix));
                kept::hold(held);
                continue;
            }
        }
        let mut labels: HashMap<String, String> =
            compose_labels(req.project, None, Some(key), req.state_dir);
        labels.extend(n.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert(labels::SLUG.to_owned(), req.slug.to_owned());
        to_make.push((n, n.name.clone(), labels, prefix));
    }
    let mut taken = if to_make.iter().any(|(n, ..)| n.driver == "bridge") {
        pool::Taken::read(docker, range).await?
    } else {
        pool::Taken::default()
    };
    let start = pool::random_start();
    // One look for all of them: each takes its block before the next picks.
    let mut wanted = Vec::new();
    for (n, name, labels, prefix) in to_make {
        let subnet = if n.driver == "bridge" {
            let Some(s) = taken.pick(range, prefix, start) else {
                return Err(pool::full(docker, range, prefix, taken, req.config).await);
            };
            taken.nets.push(s);
            Some((s, prefix))
        } else {
            None
        };
        wanted.push((n, name, labels, subnet));
    }
    try_join_all(
        wanted
            .into_iter()
            .map(|(n, name, labels, subnet)| create_network(docker, req, n, name, labels, subnet)),
    )
    .await?;
    Ok(renamed)
}

/// Create network `n` as `name` with `labels`, on `subnet` (with its prefix) when it has one;
/// when another run took that subnet first, on another one of the same size.
async fn create_network(
    docker: &Docker,
    req: &UpRequest<'_>,
    n: &project::ComposeNetwork,
    name: String,
    labels: HashMap<String, String>,
    mut subnet: Option<(ipnet::Ipv4Net, u8)>,
) -> Result<(), DockerError> {
    let range = req.config.networks.pool;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ipam = subnet.map(|(s, _)| Ipam {
            driver: Some("default".to_owned()),
            config: Some(vec![IpamConfig {
                subnet: Some(s.to_string()),
                // The gateway said outright (the first address, as Docker picks it): an engine
                // reports in its IPAM config only what it was given.
                gateway: s.hosts().next().map(|g| g.to_string()),
                ..IpamConfig::default()
            }]),
            ..Ipam::default()
        });
        let created = docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some(n.driver.clone()),
                internal: Some(n.internal),
                options: Some(network_options(n)),
                labels: Some(labels.clone()),
                ipam,
                ..NetworkCreateRequest::default()
            })
            .await;
        match (created, subnet) {
            (Ok(_), _) => return Ok(()),
            (Err(e), Some((_, prefix))) if pool::is_overlap(&e) && attempt < pool::ATTEMPTS => {
                // Another run took it between our look and our create: look again.
                let taken = pool::Taken::read(docker, range).await?;
                let Some(again) = taken.pick(range, prefix, pool::random_start()) else {
                    return Err(pool::full(docker, range, prefix, taken, req.config).await);
                };
                subnet = Some((again, prefix));
            }
            (Err(e), _) => {
                return Err(api(format!(
                    "creating network {}{}",
                    name,
                    subnet.map_or_else(String::new, |(s, _)| format!(" on {s}"))
                ))(e));
            }
        }
    }
}

/// A network's driver options: the rendered ones, and on every internal bridge, whatever the
/// backend rendered, no host address (the host would otherwise be the agent's gateway).
fn network_options(n: &project::ComposeNetwork) -> HashMap<String, String> {
    let mut opts: HashMap<String, String> = n
        .driver_opts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if n.internal && n.driver == "bridge" {
        let (k, v) = bottle_contract::compose::INHIBIT_HOST_ADDRESS;
        opts.insert(k.to_owned(), v.to_owned());
    }
    opts
}

/// How long bring-up waits for the bundle's ready line before it runs the health check
/// itself too (a bundle image whose init does not write the line).
const READY_LINE_GRACE: Duration = Duration::from_secs(1);

/// Wait until the freshly started bundle `container` is ready: its init writes
/// [`BUNDLE_READY_LINE`] in its log, which is read as it comes, with no `docker exec`; from
/// [`READY_LINE_GRACE`] on, its health check `test` runs as in [`wait_healthy`] too, and
/// whichever answers first decides. Not for a restarted container: its log holds the last
/// start's line.
pub async fn wait_bundle_ready(
    docker: &Docker,
    container: &str,
    test: &[String],
    timeout: Duration,
) -> Result<(), DockerError> {
    let checked = async {
        tokio::time::sleep(READY_LINE_GRACE).await;
        wait_healthy(
            docker,
            container,
            test,
            timeout.saturating_sub(READY_LINE_GRACE),
        )
        .await
    };
    tokio::select! {
        r = ready_line(docker, container) => r,
        r = checked => r,
    }
}

/// `Ok` once `container`'s log has [`BUNDLE_READY_LINE`]; the init's reason when it writes that
/// a daemon will never be ready; never when the log ends with neither (the container stopped,
/// and the health check says how).
async fn ready_line(docker: &Docker, container: &str) -> Result<(), DockerError> {
    let opts = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .build();
    let mut stream = docker.logs(container, Some(opts));
    let mut pending: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        pending.extend_from_slice(&chunk.into_bytes());
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            if line == BUNDLE_READY_LINE {
                return Ok(());
            }
            if let Some(why) = line.strip_prefix(BUNDLE_NEVER_READY_PREFIX) {
                return Err(DockerError::Unhealthy {
                    container: container.to_owned(),
                    detail: bottle_contract::terminal::safe(why).into_owned(),
                    logs: last_logs(docker, container, 20).await,
                });
            }
        }
    }
    std::future::pending().await
}

/// The exit code of `bottle-init ready` for "a daemon will never be ready".
const NEVER_READY: i64 = 2;

/// Wait until `container`'s health check `test` passes.
///
/// bottle runs the check itself, every 100 ms, instead of waiting for Docker's own schedule
/// (whose first run comes only after a full interval): bring-up is as fast as the daemons are.
/// Docker's health check stays in the container for `docker compose` users.
pub async fn wait_healthy(
    docker: &Docker,
    container: &str,
    test: &[String],
    timeout: Duration,
) -> Result<(), DockerError> {
    let cmd: Vec<String> = match test.split_first() {
        Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => test.to_vec(),
    };
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let info = docker
            .inspect_container(container, None)
            .await
            .map_err(api(format!("inspecting {container}")))?;
        let state = info.state.unwrap_or_default();
        let detail = if state.running == Some(false) {
            Some(format!(
                "it exited with status {}",
                state.exit_code.unwrap_or(-1)
            ))
        } else {
            // A check that hangs must not outlive the deadline (at least one full try).
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match tokio::time::timeout(budget, exec_output(docker, container, &cmd)).await {
                Ok(Ok((0, _))) => return Ok(()),
                // `bottle-init ready` says a daemon will never be ready (it exited, or its
                // program is missing): waiting longer cannot help.
                Ok(Ok((NEVER_READY, out))) => {
                    Some(bottle_contract::terminal::safe(out.trim()).into_owned())
                }
                Ok(Ok((code, out))) => {
                    last = format!(
                        "check exited {code}: {}",
                        bottle_contract::terminal::safe(out.trim())
                    );
                    None
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    last = format!("check still running after {budget:?}");
                    None
                }
            }
            .or_else(|| {
                (Instant::now() > deadline)
                    .then(|| format!("no passing health check within {timeout:?}"))
            })
        };
        if let Some(detail) = detail {
            let detail = if last.is_empty() {
                detail
            } else {
                format!("{detail}; last {last}")
            };
            return Err(DockerError::Unhealthy {
                container: container.to_owned(),
                detail,
                logs: last_logs(docker, container, 20).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a command run in a container printed, and its exit code.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Its exit code (-1 when the engine did not say).
    pub code: i64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Both, in the order they came.
    pub both: String,
}

/// Run `cmd` in `container` with `env` (`K=V`) over the container's, to its end; what it
/// printed and its exit code. The one way the host runs a command in a container and reads
/// it back (the agent's own command is [`super::attach::run`]).
pub async fn exec_in(
    docker: &Docker,
    container: &str,
    cmd: &[String],
    env: &[String],
) -> Result<ExecOutput, DockerError> {
    // Named short: a long argument (the probe's plan) has no place in an error line.
    let shown = match cmd.join(" ") {
        line if line.chars().count() <= 80 => line,
        _ => format!("{} …", cmd.first().map_or("", String::as_str)),
    };
    let what = || format!("running `{shown}` in {container}");
    let exec = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.to_vec()),
                env: (!env.is_empty()).then(|| env.to_vec()),
                ..Default::default()
            },
        )
        .await
        .map_err(api(what()))?;
    let mut out = ExecOutput::default();
    if let Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) =
        docker.start_exec(&exec.id, None).await
    {
        while let Some(Ok(chunk)) = output.next().await {
            let stdout = matches!(chunk, bollard::container::LogOutput::StdOut { .. });
            let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
            out.both.push_str(&text);
            if stdout {
                out.stdout.push_str(&text);
            } else {
                out.stderr.push_str(&text);
            }
        }
    }
    out.code = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(api(format!(
            "reading the exit code of `{shown}` in {container}"
        )))?
        .exit_code
        .unwrap_or(-1);
    Ok(out)
}

/// Run `cmd` in `container`; its exit code and output (stdout and stderr, as they came).
pub async fn exec_output(
    docker: &Docker,
    container: &str,
    cmd: &[String],
) -> Result<(i64, String), DockerError> {
    exec_in(docker, container, cmd, &[])
        .await
        .map(|o| (o.code, o.both))
}

/// The last `n` log lines of `container`, for error messages.
pub async fn last_logs(docker: &Docker, container: &str, n: usize) -> String {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut stream = docker.logs(container, Some(opts));
    let mut out = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    if out.is_empty() {
        "  (none)".into()
    } else {
        // The container's own words, shown in an error on your terminal.
        out.lines()
            .map(|l| format!("  {}\n", bottle_contract::terminal::safe(l)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{check_agent_networks, labels, port_binding, security_opt};

    #[test]
    fn the_bundle_always_runs_with_no_new_privileges() {
        let file = compose("{internal: {}}");
        assert_eq!(
            security_opt("sidecars", &file.services["sidecars"]),
            ["no-new-privileges:true"]
        );
        let mut relabelled = file.services["agent"].clone();
        relabelled.labels = [(labels::ROLE.to_owned(), "sidecars".to_owned())].into();
        assert_eq!(
            security_opt("bundle", &relabelled),
            ["no-new-privileges:true"],
            "by its role label too"
        );
        assert!(security_opt("other", &file.services["sidecars"]).is_empty());
    }

    fn compose(agent_nets: &str) -> super::ComposeFile {
        serde_yaml::from_str(&format!(
            "services:
  agent:
    image: a
    labels: {{io.bottle.role: agent}}
    networks: {agent_nets}
  sidecars:
    image: b
    networks: {{internal: {{}}, egress: {{}}}}
networks:
  internal: {{name: n-internal, driver: bridge, internal: true}}
  egress: {{name: n-egress, driver: bridge}}
"
        ))
        .unwrap()
    }

    #[test]
    fn a_backend_cannot_give_the_agent_a_network_with_a_way_out() {
        check_agent_networks(&compose("{internal: {}}")).unwrap();
        let err = check_agent_networks(&compose("{internal: {}, egress: {}}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("on network n-egress, which is not internal"),
            "{err}"
        );
        let err = check_agent_networks(&compose("{nowhere: {}}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nowhere`"), "{err}");
    }

    #[test]
    fn port_specs_parse_with_ipv4_and_ipv6_and_bad_ones_are_refused() {
        let (c, b) = port_binding("127.0.0.1:18888:8888").unwrap();
        assert_eq!(
            (c, b.host_ip.as_deref(), b.host_port.as_deref()),
            (8888, Some("127.0.0.1"), Some("18888"))
        );
        for v6 in ["::1:8080:80", "[::1]:8080:80"] {
            let (c, b) = port_binding(v6).unwrap();
            assert_eq!((c, b.host_ip.as_deref()), (80, Some("::1")), "{v6}");
        }
        for bad in ["8080:80", "80", "host:8080:80", "127.0.0.1:x:80", ""] {
            assert!(port_binding(bad).is_none(), "{bad}");
        }
    }
}
