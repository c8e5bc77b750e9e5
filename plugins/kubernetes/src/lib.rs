//! kubernetes: one bottle as Kubernetes objects in `kubernetes/bottle.yaml`, for
//! `kubectl apply -f`.
//!
//! The stream holds, in apply order:
//!
//! - ConfigMaps and Secrets for the files mounted from the state dir and the host (below);
//! - a Service `bottle-sidecars-<slug>` in front of the bundle, one port per daemon port;
//! - NetworkPolicies: the agent may reach the bundle's ports and nothing else (no DNS either:
//!   the cluster's resolver forwards any name it is asked, which is a way out); the bundle
//!   takes connections from the agent only and may go out to the internet (not to the
//!   cluster's own ranges or the cloud metadata address);
//! - two Pods, `bottle-sidecars-<slug>` (the bundle) and `bottle-agent-<slug>`: a
//!   NetworkPolicy selects pods, and the containers of one pod share its network, so the agent
//!   and the bundle cannot be told apart in one. Neither pod gets a service account token: the
//!   agent must never hold cluster credentials.
//!
//! Every object carries the labels of [`labels_for`], so `io.bottle.slug=<slug>` selects all of
//! one bottle's.
//!
//! # Reaching the bundle without DNS
//!
//! Kubernetes expands `$(VAR)` in env values with the service env vars of the Services that
//! exist when a pod starts (the Service is applied before the pods), so a daemon URL in the
//! agent's env becomes `http://$(BOTTLE_SIDECARS_<SLUG>_SERVICE_HOST):<port>`, and `NO_PROXY`
//! gains that address, as it names the daemons the agent reaches without the proxy. The MCP
//! config uses `${…}`, which Claude Code expands. Every other `$` in an env value is escaped
//! (`$$`), so values mean on Kubernetes what they mean on Docker.
//!
//! Files other plugins staged that name a daemon (git-gate's gitconfig, `git://git-gate/…`)
//! cannot be rewritten (a backend sees mounts, not contents): they need
//! `plugins.kubernetes.bundle_service_ip`, a free address of the cluster's service range. The
//! Service then gets that cluster IP, the agent pod `hostAliases` for every daemon name and
//! alias, and URLs keep their names.
//!
//! # Files: the annotation contract with the host
//!
//! A plugin never reads files, so every read-only mount from the state dir or the host becomes
//! a ConfigMap (a Secret for CA material, keys and every host file) rendered with `data: {}`
//! and the annotation [`labels::SOURCE`]: `state:<path in the state dir>` or
//! `host:<absolute path>`. Before it hands the manifests over, the host fills `data` from that
//! path: a file gives one key, its file name; a dir one key per regular file in it. Object
//! names are [`object_name`]s; the host finds objects by the annotation, never by name.
//! [`is_file_source`] decides whether a source is mounted as one file (`subPath`) or as a dir.
//!
//! Writable mounts (supervise's queue, a `cwd: mount` project dir) and named volumes become
//! `emptyDir`: the cluster cannot see the host's dirs, so what the agent writes stays in the
//! pod.
//!
//! # Credentials
//!
//! Never rendered: the pods read them by key from the Secret `bottle-<slug>-credentials`
//! (`secretKeyRef`), which the user creates (the host prints the command).

use bottle_plugin_compose::*;
use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The manifests' path in the state dir.
pub const MANIFEST: &str = "kubernetes/bottle.yaml";
/// Where a ConfigMap's or Secret's data comes from (filled by the host; see the module doc).
/// The longest slug whose Service name (`bottle-sidecars-<slug>`, a DNS-1035 label) and label
/// values (63 characters) Kubernetes accepts.
pub const MAX_SLUG: usize = 63 - "bottle-sidecars-".len();
/// Mode of the files of a Secret mounted into the agent: the agent image may run as any user,
/// and the agent is meant to read what it is given (its CA trust file, say).
const AGENT_SECRET_MODE: u32 = 0o444;
/// Mode of the files of a Secret mounted into the bundle: bottle-init (root) copies them for
/// each daemon's own user, so no one else needs to read them.
const BUNDLE_SECRET_MODE: u32 = 0o400;
/// Ranges the bundle may not reach: the cluster's (private, CGNAT) and link-local (cloud
/// metadata).
const NOT_OUT_V4: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];
/// The IPv6 ranges the bundle may not reach: unique-local and link-local.
const NOT_OUT_V6: &[&str] = &["fc00::/7", "fe80::/10"];
/// The state dir's CA dir (`bottle_contract::layout::CA_DIR`, which the SDKs do not export).
const CA_DIR: &str = "ca";

/// `plugins.kubernetes` in the manifest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The sidecar bundle image (default `bottle-sidecars:latest`).
    pub bundle_image: Option<String>,
    /// A free cluster IP (IPv4) for the bundle's Service; with it, daemon names resolve in the
    /// agent pod through `hostAliases`, so staged files naming daemons (the gitconfig) work.
    pub bundle_service_ip: Option<String>,
}

impl Settings {
    /// [`Settings::bundle_service_ip`], checked: an IPv4 address or nothing.
    fn service_ip(&self) -> Result<Option<String>, PluginError> {
        match &self.bundle_service_ip {
            None => Ok(None),
            Some(ip) => ip
                .parse::<std::net::Ipv4Addr>()
                .map(|a| Some(a.to_string()))
                .map_err(|_| {
                    PluginError::InvalidSettings(format!(
                        "plugins.kubernetes.bundle_service_ip: `{ip}` is no IPv4 address; give a free address of the cluster's service range (e.g. 10.96.0.50) or remove the key"
                    ))
                }),
        }
    }
}

/// The env var Kubernetes sets, in pods started after the Service, to the bundle Service's
/// cluster IP: `BOTTLE_SIDECARS_<SLUG>_SERVICE_HOST`.
pub fn service_host_var(slug: &str) -> String {
    format!(
        "{}_SERVICE_HOST",
        bundle_container(slug)
            .to_uppercase()
            .replace(['-', '.'], "_")
    )
}

/// The last segment of a path (`ca/agent-trust.pem` → `agent-trust.pem`).
fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// Whether a state or host path is mounted as one file rather than as a dir.
///
/// A plugin cannot stat a path, so this goes by the name alone. The volume always projects
/// every key the host fills (one per regular file; a file source gives one key named after
/// its basename), and a file source is mounted with `subPath: <basename>`, a dir source whole
/// at the target. A path is a file when its last segment has a `.` (`mcp.json`, `key.pem`)
/// or is a file bottle stages without one (`gitconfig`, `known_hosts`), or looks like an SSH
/// key (`id_ed25519`, `id_rsa`, `deploy_key`, `deploy-key`: what git-gate mounts from the
/// host). Everything else (`egress`, `git-gate`, `supervise/queue`) is a dir. A dir named like
/// a file would be mounted as an empty dir at its target, a file named like a dir as a dir
/// holding it: name staged files by these rules.
pub fn is_file_source(path: &str) -> bool {
    let last = basename(path);
    last.contains('.')
        || ["gitconfig", "daemons.json", "known_hosts"].contains(&last)
        || last.starts_with("id_")
        || last.ends_with("_key")
        || last.ends_with("-key")
}

/// Whether a read-only source is key material or might be: a Secret rather than a ConfigMap.
/// Conservative: every host file (bottle mounts the user's SSH keys from there), all of `ca/`
/// (CA certs travel with their keys), and any state path that mentions a key.
fn is_secret_source(source: &Source) -> bool {
    match source {
        Source::Host(_) => true,
        // The agent's own files carry the run's hop token once the host fills them in.
        Source::State(p) => {
            p.starts_with(&format!("{CA_DIR}/")) || p.contains("key") || p.starts_with("agent/")
        }
    }
}

/// `s` in the characters of a DNS-1123 name: lowercase alnum and single `-`s, no `-` at either
/// end.
fn dns_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// FNV-1a, 32 bits: tiny, and stable across builds and platforms (unlike std's hasher).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A read-only file source the host fills an object from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A path in the state dir.
    State(String),
    /// An absolute host path.
    Host(String),
}

impl Source {
    /// The annotation value: `state:<path>` or `host:<path>`.
    fn annotation(&self) -> String {
        match self {
            Source::State(p) => format!("state:{p}"),
            Source::Host(p) => format!("host:{p}"),
        }
    }

    fn path(&self) -> &str {
        match self {
            Source::State(p) | Source::Host(p) => p,
        }
    }
}

/// The name of the ConfigMap or Secret filled from `source`:
/// `bottle-<slug>-<readable part>-<8 hex digits>`.
///
/// The readable part is the state path, or `host-<file name>` for a host path (the rest of it
/// is the user's machine, not the bottle's), in DNS-1123 characters. That mapping loses
/// information (`a/b`, `a-b` and `a.b` read alike; two SSH keys are both `id_ed25519`), so the
/// suffix, a hash of the whole annotation, makes the name unique; it is a function of the
/// source alone, so the same bottle always renders the same names. At most 253 characters (a
/// DNS-1123 subdomain).
pub fn object_name(slug: &str, source: &str) -> String {
    let readable = match source.split_once(':') {
        Some(("host", p)) => format!("host-{}", dns_name(basename(p))),
        Some((_, p)) => dns_name(p),
        None => dns_name(source),
    };
    let prefix = format!("bottle-{slug}-");
    let suffix = format!("-{:08x}", fnv1a(source));
    let room = 253usize.saturating_sub(prefix.len() + suffix.len());
    let readable: String = readable.chars().take(room).collect();
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() {
        format!("bottle-{slug}{suffix}")
    } else {
        format!("{prefix}{readable}{suffix}")
    }
}

/// An env value as Kubernetes reads it back: `$` doubled, since it expands `$(VAR)` and turns
/// `$$` into `$` in every env value.
fn literal(value: &str) -> String {
    value.replace('$', "$$")
}

/// The volumes of one pod, one per distinct source, and the ConfigMaps and Secrets that carry
/// them.
struct Volumes {
    /// The mode of the files of the pod's Secret volumes.
    secret_mode: u32,
    /// Source key → volume name.
    by_source: BTreeMap<String, String>,
    volumes: Vec<Value>,
    /// ConfigMaps and Secrets to render.
    objects: Vec<Value>,
}

impl Volumes {
    fn new(secret_mode: u32) -> Self {
        Volumes {
            secret_mode,
            by_source: BTreeMap::new(),
            volumes: Vec::new(),
            objects: Vec::new(),
        }
    }

    /// The volume for `m` (made on first use) and how it is mounted at `target`.
    fn mount(&mut self, stack: &Stack, m: &Mount, target: &str) -> Value {
        let source = match &m.source {
            MountSource::State(p) if m.read_only => Some(Source::State(p.clone())),
            MountSource::Host(p) if m.read_only => Some(Source::Host(p.clone())),
            // Writable: the cluster cannot share the host's dir, so the pod gets its own.
            MountSource::State(_) | MountSource::Host(_) | MountSource::Volume(_) => None,
        };
        let key = match (&source, &m.source) {
            (Some(s), _) => s.annotation(),
            (None, MountSource::State(p)) => format!("empty:state:{p}"),
            (None, MountSource::Host(p)) => format!("empty:host:{p}"),
            (None, MountSource::Volume(v)) => format!("empty:volume:{v}"),
        };
        let next = format!("v{}", self.by_source.len());
        let name = self.by_source.entry(key.clone()).or_insert(next).clone();
        if !self.volumes.iter().any(|v| v["name"] == name.as_str()) {
            let volume = match &source {
                None => json!({"name": name, "emptyDir": {}}),
                Some(source) => {
                    let secret = is_secret_source(source);
                    let object = object_name(&stack.slug, &key);
                    let mut labels = labels_for(stack, if secret { "secret" } else { "config" });
                    labels.insert(labels::PLUGIN.into(), "kubernetes".into());
                    self.objects.push(json!({
                        "apiVersion": "v1",
                        "kind": if secret { "Secret" } else { "ConfigMap" },
                        "metadata": {
                            "name": object,
                            "labels": labels,
                            "annotations": {labels::SOURCE: key},
                        },
                        "data": {},
                    }));
                    if secret {
                        json!({"name": name, "secret": {"secretName": object, "defaultMode": self.secret_mode}})
                    } else {
                        json!({"name": name, "configMap": {"name": object}})
                    }
                }
            };
            self.volumes.push(volume);
        }
        let mut mount = json!({"name": name, "mountPath": target, "readOnly": m.read_only});
        if let Some(source) = source.filter(|s| is_file_source(s.path())) {
            mount["subPath"] = json!(basename(source.path()));
        }
        mount
    }
}

/// A container env list: values as given (already [`literal`] or meant to expand), then
/// credentials by Secret key.
fn env_list(slug: &str, env: &[KeyValue], credentials: &[String]) -> Vec<Value> {
    let mut out: Vec<Value> = env
        .iter()
        .map(|kv| json!({"name": kv.key, "value": kv.value}))
        .collect();
    out.extend(credentials.iter().map(|name| {
        json!({"name": name, "valueFrom": {"secretKeyRef": {
            "name": format!("bottle-{slug}-credentials"), "key": name}}})
    }));
    out
}

/// Every daemon name and alias, first mention first.
fn daemon_names(stack: &Stack) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for o in &stack.bundle {
        for n in std::iter::once(&o.daemon.name).chain(&o.daemon.aliases) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    names
}

/// `value` with every `://<daemon or alias>:<its port>` pointed at the bundle Service through
/// `host`.
fn rewrite(value: &str, stack: &Stack, host: &str) -> String {
    let mut out = value.to_owned();
    for o in &stack.bundle {
        for name in std::iter::once(&o.daemon.name).chain(&o.daemon.aliases) {
            for port in &o.daemon.ports {
                out = out.replace(&format!("://{name}:{port}"), &format!("://{host}:{port}"));
            }
        }
    }
    out
}

/// The bundle's ports, sorted.
fn bundle_ports(stack: &Stack) -> Vec<u16> {
    let mut ports: Vec<u16> = stack
        .bundle
        .iter()
        .flat_map(|o| o.daemon.ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The labels that select one of the bottle's pods.
fn selector(stack: &Stack, role: &str) -> Value {
    json!({labels::SLUG: stack.slug, labels::ROLE: role})
}

/// Refuse a slug Kubernetes would refuse in a name or label value (`--slug` allows longer).
fn check_slug(slug: &str) -> Result<(), PluginError> {
    if slug.len() > MAX_SLUG || !slug.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(PluginError::Unsupported(format!(
            "slug `{slug}` cannot name Kubernetes objects (at most {MAX_SLUG} characters, ending in a letter or digit); give a shorter --slug"
        )));
    }
    Ok(())
}

/// The agent's env as Kubernetes reads it: literal values, daemon URLs through the bundle
/// Service's address (unless names resolve, with a service IP), and the MCP config's path.
fn agent_env(stack: &Stack, service_ip: Option<&str>) -> Vec<KeyValue> {
    let host = format!("$({})", service_host_var(&stack.slug));
    let mut env: Vec<KeyValue> = stack
        .agent
        .env
        .iter()
        .map(|kv| {
            let mut value = literal(&kv.value);
            if service_ip.is_none() && !stack.bundle.is_empty() {
                value = rewrite(&value, stack, &host);
                // The daemons reached by name without the proxy are reached by address now.
                if kv.key.eq_ignore_ascii_case("no_proxy") {
                    value = if value.is_empty() {
                        host.clone()
                    } else {
                        format!("{value},{host}")
                    };
                }
            }
            // The proxy URL carries the run's hop token, defined first in the pod's env.
            if !stack.bundle.is_empty() && is_proxy_var(&kv.key) {
                value = value.replacen(
                    "http://",
                    &format!("http://bottle:$({HOP_TOKEN_HOST_ENV})@"),
                    1,
                );
            }
            KeyValue {
                key: kv.key.clone(),
                value,
            }
        })
        .collect();
    if !stack.agent.mcp_servers.is_empty() {
        env.push(KeyValue {
            key: MCP_CONFIG_ENV.into(),
            value: literal(MCP_CONFIG_IN_AGENT),
        });
    }
    env
}

/// The agent container's env list: the run's hop token first (from the credentials Secret, so
/// the proxy URLs after it can expand it), then its env, then its credentials.
fn agent_env_list(stack: &Stack, service_ip: Option<&str>) -> Vec<Value> {
    let hop = (!stack.bundle.is_empty()).then(|| {
        json!({"name": HOP_TOKEN_HOST_ENV, "valueFrom": {"secretKeyRef": {
            "name": format!("bottle-{}-credentials", stack.slug), "key": HOP_TOKEN_HOST_ENV}}})
    });
    hop.into_iter()
        .chain(env_list(
            &stack.slug,
            &agent_env(stack, service_ip),
            &stack.agent.secret_env,
        ))
        .collect()
}

/// The agent's pod.
fn agent_pod(stack: &Stack, service_ip: Option<&str>, volumes: &mut Volumes) -> Value {
    let mut mounts: Vec<Value> = stack
        .agent
        .mounts
        .iter()
        .map(|m| volumes.mount(stack, m, &m.target))
        .collect();
    if !stack.agent.mcp_servers.is_empty() {
        // As on Docker: the config from the state dir, read-only, where the env says.
        let mcp = Mount {
            source: MountSource::State(MCP_CONFIG_STATE_PATH.into()),
            target: MCP_CONFIG_IN_AGENT.into(),
            read_only: true,
        };
        mounts.push(volumes.mount(stack, &mcp, MCP_CONFIG_IN_AGENT));
    }
    let mut spec = json!({
        // The agent must never hold a cluster API token.
        "automountServiceAccountToken": false,
        // The service env vars its daemon URLs expand from.
        "enableServiceLinks": true,
        "restartPolicy": "Never",
        "containers": [{
            "name": AGENT_SERVICE,
            "image": stack.agent.image,
            // The agent idles; bottle execs its command, as on Docker.
            "command": ["sleep", "infinity"],
            "workingDir": stack.agent.workdir,
            "env": agent_env_list(stack, service_ip),
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
        "volumes": volumes.volumes,
    });
    let names = daemon_names(stack);
    if let Some(ip) = service_ip.filter(|_| !names.is_empty()) {
        spec["hostAliases"] = json!([{"ip": ip, "hostnames": names}]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("bottle-agent-{}", stack.slug), "labels": labels_for(stack, AGENT_SERVICE)},
        "spec": spec,
    })
}

/// The bundle's pod: what [`bundle_service`] is on Docker.
fn bundle_pod(
    stack: &Stack,
    settings: &Settings,
    service_ip: Option<&str>,
    volumes: &mut Volumes,
) -> Value {
    // The address the agent names the bundle by (in `Host` headers, which supervise checks):
    // the Service's, as Kubernetes tells pods started after it.
    let mut env = vec![KeyValue {
        key: BUNDLE_ADDRESS_ENV.into(),
        value: service_ip.map_or_else(
            || format!("$({})", service_host_var(&stack.slug)),
            str::to_owned,
        ),
    }];
    let mut mounts = Vec::new();
    for o in &stack.bundle {
        env.extend(o.daemon.env.iter().map(|kv| KeyValue {
            key: kv.key.clone(),
            value: literal(&kv.value),
        }));
        for (i, m) in o.daemon.mounts.iter().enumerate() {
            // Read-only mounts go where bottle-init installs them from, as on Docker.
            let target = if m.read_only {
                private_target(&o.daemon.name, i)
            } else {
                m.target.clone()
            };
            mounts.push(volumes.mount(stack, m, &target));
        }
    }
    let daemons = Mount {
        source: MountSource::State(DAEMONS_STATE_PATH.into()),
        target: DAEMONS_IN_BUNDLE.into(),
        read_only: true,
    };
    mounts.push(volumes.mount(stack, &daemons, DAEMONS_IN_BUNDLE));
    // The daemons' hop tokens too: the NetworkPolicy lets only the agent's pod in, and the
    // token makes sure of whom it serves there, as on every backend.
    let credentials: Vec<String> = stack
        .bundle_secrets
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let ports: Vec<Value> = bundle_ports(stack)
        .iter()
        .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
        .collect();
    let mut container = json!({
        "name": BUNDLE_SERVICE,
        "image": settings.bundle_image.as_deref().unwrap_or(BUNDLE_IMAGE),
        "command": [BUNDLE_INIT, DAEMONS_IN_BUNDLE],
        "env": env_list(&stack.slug, &env, &credentials),
        "ports": ports,
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": bottle_contract::layout::BUNDLE_CAPS},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if stack.bundle.iter().any(|o| o.daemon.ready_check.is_some()) {
        // Docker's health check, as a probe: every second, for up to a minute.
        container["readinessProbe"] = json!({
            "exec": {"command": [BUNDLE_INIT, "ready", DAEMONS_IN_BUNDLE]},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 60,
        });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": bundle_container(&stack.slug), "labels": labels_for(stack, BUNDLE_SERVICE)},
        "spec": {
            // The daemons need no cluster API either.
            "automountServiceAccountToken": false,
            // For the Service's address above.
            "enableServiceLinks": service_ip.is_none(),
            "restartPolicy": "Always",
            "containers": [container],
            "volumes": volumes.volumes,
        },
    })
}

/// The objects of `stack`, in apply order: ConfigMaps and Secrets, the Service, the
/// NetworkPolicies, the bundle's pod, the agent's pod.
pub fn objects(stack: &Stack, settings: &Settings) -> Result<Vec<Value>, PluginError> {
    check_slug(&stack.slug)?;
    let service_ip = settings.service_ip()?;
    let slug = &stack.slug;
    let bundle_name = bundle_container(slug);
    let ports = bundle_ports(stack);
    let meta = |name: &str, role: &str| json!({"name": name, "labels": labels_for(stack, role)});
    let tcp_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"protocol": "TCP", "port": p}))
        .collect();

    let mut agent_volumes = Volumes::new(AGENT_SECRET_MODE);
    let agent = agent_pod(stack, service_ip.as_deref(), &mut agent_volumes);
    let mut bundle_volumes = Volumes::new(BUNDLE_SECRET_MODE);
    let bundle = (!stack.bundle.is_empty())
        .then(|| bundle_pod(stack, settings, service_ip.as_deref(), &mut bundle_volumes));

    let mut out: Vec<Value> = Vec::new();
    for o in agent_volumes
        .objects
        .into_iter()
        .chain(bundle_volumes.objects)
    {
        match out
            .iter()
            .find(|x| x["metadata"]["name"] == o["metadata"]["name"])
        {
            None => out.push(o),
            // One file mounted into both pods, or twice: one object.
            Some(x) if x["metadata"]["annotations"] == o["metadata"]["annotations"] => {}
            // Two sources, one name: a hash collision, which no real bottle should meet.
            Some(x) => {
                return Err(PluginError::Unsupported(format!(
                    "{} and {} would both be object {}: give one of the files another name",
                    x["metadata"]["annotations"][labels::SOURCE],
                    o["metadata"]["annotations"][labels::SOURCE],
                    o["metadata"]["name"]
                )));
            }
        }
    }
    if !ports.is_empty() {
        // Port names must be IANA service names (at most 15 characters, lowercase alnum and
        // `-`): `p-<port>` is at most 7 and unique per port, where a daemon's name might not
        // fit, and one daemon may listen on several ports.
        let service_ports: Vec<Value> = ports
            .iter()
            .map(|p| json!({"name": format!("p-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}))
            .collect();
        let mut spec = json!({
            "type": "ClusterIP",
            "selector": selector(stack, BUNDLE_SERVICE),
            "ports": service_ports,
        });
        if let Some(ip) = &service_ip {
            spec["clusterIP"] = json!(ip);
        }
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&bundle_name, BUNDLE_SERVICE),
            "spec": spec,
        }));
    }
    // An egress rule with no ports would allow every port: with none to reach, no rule.
    let agent_egress = if ports.is_empty() {
        json!([])
    } else {
        json!([{
            "to": [{"podSelector": {"matchLabels": selector(stack, BUNDLE_SERVICE)}}],
            "ports": tcp_ports,
        }])
    };
    out.push(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(&format!("bottle-agent-{slug}"), AGENT_SERVICE),
        "spec": {
            "podSelector": {"matchLabels": selector(stack, AGENT_SERVICE)},
            "policyTypes": ["Ingress", "Egress"],
            // Nothing may connect to the agent.
            "ingress": [],
            // The bundle's ports and nothing else: no DNS (see the module doc).
            "egress": agent_egress,
        },
    }));
    if let Some(bundle) = bundle {
        let ingress = if ports.is_empty() {
            json!([])
        } else {
            json!([{
                "from": [{"podSelector": {"matchLabels": selector(stack, AGENT_SERVICE)}}],
                "ports": tcp_ports,
            }])
        };
        out.push(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(&bundle_name, BUNDLE_SERVICE),
            "spec": {
                "podSelector": {"matchLabels": selector(stack, BUNDLE_SERVICE)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": [
                    // The bundle resolves the names it proxies to.
                    {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                    {"to": [
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": NOT_OUT_V4}},
                        {"ipBlock": {"cidr": "::/0", "except": NOT_OUT_V6}},
                    ]},
                ],
            },
        }));
        out.push(bundle);
    }
    out.push(agent);
    Ok(out)
}

/// The agent's MCP config with daemon URLs pointed at the Service (`${VAR}`, expanded by the
/// MCP client), unless daemon names resolve through `hostAliases`.
fn agent_mcp_config(stack: &Stack, settings: &Settings) -> Result<Option<Document>, PluginError> {
    if settings.service_ip()?.is_some() {
        return Ok(mcp_config(stack));
    }
    let mut s = stack.clone();
    let host = format!("${{{}}}", service_host_var(&stack.slug));
    for m in &mut s.agent.mcp_servers {
        m.url = rewrite(&m.url, stack, &host);
    }
    Ok(mcp_config(&s))
}

/// `objects` as one multi-document YAML stream.
pub fn to_stream(objects: &[Value]) -> Result<String, PluginError> {
    let mut yaml = String::new();
    for o in objects {
        yaml.push_str("---\n");
        yaml.push_str(
            &serde_yaml::to_string(o)
                .map_err(|e| PluginError::Internal(format!("rendering Kubernetes YAML: {e}")))?,
        );
    }
    Ok(yaml)
}

/// The plugin.
pub struct Kubernetes;

impl Backend for Kubernetes {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "kubernetes".into(),
            kind: PluginKind::Backend,
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "the agent and its sidecar bundle as two pods, fenced by NetworkPolicies"
                .into(),
        }
    }

    fn render(stack: &Stack, settings: &Settings) -> Result<Deployment, PluginError> {
        refuse_services(stack, "kubernetes", "the agent and the sidecar bundle")?;
        let mut documents = vec![Document {
            path: MANIFEST.into(),
            contents: to_stream(&objects(stack, settings)?)?,
            mode: 0o600,
        }];
        documents.extend(agent_mcp_config(stack, settings)?);
        Ok(Deployment {
            project: project(&stack.slug),
            documents,
        })
    }
}

bottle_plugin_sdk::export!(backend Kubernetes);

#[cfg(test)]
mod tests;
