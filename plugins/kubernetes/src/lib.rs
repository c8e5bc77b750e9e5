//! kubernetes: one bottle as Kubernetes objects in `kubernetes/bottle.yaml`, for
//! `kubectl apply -f`.
//!
//! - Two Pods, `bottle-agent-<slug>` and `bottle-sidecars-<slug>` (the bundle): a
//!   NetworkPolicy selects pods, and the containers of one pod share its network, so the agent
//!   and the bundle cannot be told apart in one.
//! - A Service `bottle-sidecars-<slug>` in front of the bundle, one port per daemon port.
//! - NetworkPolicies: the agent may reach the bundle's ports and nothing else (no DNS either:
//!   the cluster's resolver forwards any name it is asked, which is a way out); the bundle
//!   takes connections from the agent only and may go out to the internet (not to the
//!   cluster's own ranges or the cloud metadata address).
//! - The agent reaches the bundle without DNS: Kubernetes expands `$(VAR)` in env values with
//!   the service env vars of Services that exist when the pod starts (the Service is applied
//!   first), so daemon URLs become `$(BOTTLE_SIDECARS_<SLUG>_SERVICE_HOST)`; the MCP config uses
//!   `${…}`, which Claude Code expands. Staged files that name a daemon (git-gate's gitconfig,
//!   `git://git-gate/…`) need `plugins.kubernetes.bundle_service_ip`: the Service then gets
//!   that cluster IP and the agent pod `hostAliases` for every daemon name.
//! - Files from the state dir become ConfigMaps (Secrets for CA material and keys) rendered
//!   with empty `data` and the annotation [`SOURCE_ANNOTATION`] (`state:<path>` or
//!   `host:<path>`): a plugin never reads files; the host fills them when it hands the
//!   manifests over. Credentials are never rendered or filled: pods read them from the Secret
//!   `bottle-<slug>-credentials` by key, which the user creates.
//! - Writable mounts (supervise's queue, a `cwd: mount` project dir) and named volumes become
//!   `emptyDir`: the cluster cannot see the host's dirs.
//! - No service account token in either pod: the agent must never hold cluster credentials.

use bottle_plugin_compose::*;
use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The manifests' path in the state dir.
pub const MANIFEST: &str = "kubernetes/bottle.yaml";
/// Where a ConfigMap's or Secret's data comes from (filled by the host).
pub const SOURCE_ANNOTATION: &str = "io.bottle.source";
/// The bundle image `bottle images build` makes.
pub const DEFAULT_BUNDLE_IMAGE: &str = "bottle-sidecars:latest";
/// What bottle-init needs to install files for and switch to each daemon's user.
const BUNDLE_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];
/// Ranges the bundle may not reach: the cluster's (private, CGNAT) and link-local (cloud
/// metadata).
const NOT_OUT_V4: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];
const NOT_OUT_V6: &[&str] = &["fc00::/7", "fe80::/10"];

/// `plugins.kubernetes` in the manifest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The sidecar bundle image (default `bottle-sidecars:latest`).
    pub bundle_image: Option<String>,
    /// A free cluster IP for the bundle's Service; with it, daemon names resolve in the agent
    /// pod through `hostAliases` (staged files naming daemons work).
    pub bundle_service_ip: Option<String>,
}

impl Settings {
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

/// The env var Kubernetes sets to the bundle Service's cluster IP.
pub fn service_host_var(slug: &str) -> String {
    format!(
        "{}_SERVICE_HOST",
        bundle_container(slug)
            .to_uppercase()
            .replace(['-', '.'], "_")
    )
}

/// Whether a state or host path is mounted as one file (projected with `subPath`) rather than
/// a dir: its last segment has a `.` (`mcp.json`, `key.pem`, `id_ed25519` does not, so host
/// key files are listed) or is a file bottle stages without one.
pub fn is_file_source(path: &str) -> bool {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    last.contains('.') || ["gitconfig", "id_ed25519", "id_rsa", "id_ecdsa"].contains(&last)
}

/// Whether a state path holds key material (a Secret rather than a ConfigMap).
fn is_secret_state(path: &str) -> bool {
    path.starts_with("ca/") || path.contains("key")
}

/// A DNS-1123 subdomain from `s`: lowercase alnum and `-`, at most 253 characters.
fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').chars().take(253).collect()
}

/// The volumes of one pod: one per distinct source, and the objects that carry them.
#[derive(Default)]
struct Volumes {
    /// Source key → volume name.
    by_source: BTreeMap<String, String>,
    volumes: Vec<Value>,
    /// ConfigMaps and Secrets to render.
    objects: Vec<Value>,
}

impl Volumes {
    /// The volume for `m` (made on first use) and how it is mounted at `target`.
    fn mount(&mut self, stack: &Stack, m: &Mount, target: &str) -> Value {
        let (key, file) = match &m.source {
            MountSource::State(p) if m.read_only => (format!("state:{p}"), is_file_source(p)),
            MountSource::Host(p) if m.read_only => (format!("host:{p}"), is_file_source(p)),
            MountSource::State(p) => (format!("empty:state:{p}"), false),
            MountSource::Host(p) => (format!("empty:host:{p}"), false),
            MountSource::Volume(v) => (format!("empty:volume:{v}"), false),
        };
        let next = format!("v{}", self.by_source.len());
        let name = self.by_source.entry(key.clone()).or_insert(next).clone();
        if !self.volumes.iter().any(|v| v["name"] == name.as_str()) {
            let volume = match key.strip_prefix("empty:") {
                Some(_) => json!({"name": name, "emptyDir": {}}),
                None => {
                    let (kind, path) = key.split_once(':').expect("keys have a kind");
                    let secret = kind == "host" || is_secret_state(path);
                    // A host path names the object by its file name: the rest of the path is
                    // the user's machine, not the bottle's.
                    let object = if kind == "host" {
                        let base = path
                            .trim_end_matches('/')
                            .rsplit('/')
                            .next()
                            .unwrap_or_default();
                        format!("bottle-{}-host-{}", stack.slug, dns_name(base))
                    } else {
                        format!("bottle-{}-{}", stack.slug, dns_name(path))
                    };
                    let mut labels = labels_for(stack, if secret { "secret" } else { "config" });
                    labels.insert(labels::PLUGIN.into(), "kubernetes".into());
                    self.objects.push(json!({
                        "apiVersion": "v1",
                        "kind": if secret { "Secret" } else { "ConfigMap" },
                        "metadata": {
                            "name": object,
                            "labels": labels,
                            "annotations": {SOURCE_ANNOTATION: key},
                        },
                        "data": {},
                    }));
                    if secret {
                        json!({"name": name, "secret": {"secretName": object, "defaultMode": 0o400}})
                    } else {
                        json!({"name": name, "configMap": {"name": object}})
                    }
                }
            };
            self.volumes.push(volume);
        }
        let mut mount = json!({"name": name, "mountPath": target, "readOnly": m.read_only});
        if file {
            let path = match &m.source {
                MountSource::State(p) | MountSource::Host(p) => p.as_str(),
                MountSource::Volume(v) => v.as_str(),
            };
            let base = path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default();
            mount["subPath"] = json!(base);
        }
        mount
    }
}

/// A container env list: plain values, then credentials by Secret key.
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

/// Every daemon name and alias with its ports.
fn addresses(stack: &Stack) -> Vec<(String, u16)> {
    stack
        .bundle
        .iter()
        .flat_map(|o| {
            std::iter::once(&o.daemon.name)
                .chain(&o.daemon.aliases)
                .flat_map(move |n| o.daemon.ports.iter().map(move |p| (n.clone(), *p)))
        })
        .collect()
}

/// `value` with `://<daemon>:<port>` pointed at the bundle Service through `host`.
fn rewrite(value: &str, stack: &Stack, host: &str) -> String {
    addresses(stack)
        .iter()
        .fold(value.to_owned(), |v, (name, port)| {
            v.replace(&format!("://{name}:{port}"), &format!("://{host}:{port}"))
        })
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

fn selector(stack: &Stack, role: &str) -> Value {
    json!({labels::SLUG: stack.slug, labels::ROLE: role})
}

/// The objects of `stack`, in apply order.
pub fn objects(stack: &Stack, settings: &Settings) -> Result<Vec<Value>, PluginError> {
    let service_ip = settings.service_ip()?;
    let slug = &stack.slug;
    let bundle_name = bundle_container(slug);
    let ports = bundle_ports(stack);
    let host_var = service_host_var(slug);

    // The agent.
    let mut agent_volumes = Volumes::default();
    let mut agent_env = stack.agent.env.clone();
    if service_ip.is_none() {
        for kv in &mut agent_env {
            kv.value = rewrite(&kv.value, stack, &format!("$({host_var})"));
        }
    }
    let mut agent_mounts: Vec<Value> = stack
        .agent
        .mounts
        .iter()
        .map(|m| agent_volumes.mount(stack, m, &m.target))
        .collect();
    if !stack.agent.mcp_servers.is_empty() {
        agent_env.push(KeyValue {
            key: MCP_CONFIG_ENV.into(),
            value: MCP_CONFIG_IN_AGENT.into(),
        });
        let mcp = Mount {
            source: MountSource::State(MCP_CONFIG_STATE_PATH.into()),
            target: MCP_CONFIG_IN_AGENT.into(),
            read_only: true,
        };
        agent_mounts.push(agent_volumes.mount(stack, &mcp, MCP_CONFIG_IN_AGENT));
    }
    let mut agent_spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": true,
        "restartPolicy": "Never",
        "containers": [{
            "name": "agent",
            "image": stack.agent.image,
            "command": ["sleep", "infinity"],
            "workingDir": stack.agent.workdir,
            "env": env_list(slug, &agent_env, &stack.agent.secret_env),
            "volumeMounts": agent_mounts,
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
        "volumes": agent_volumes.volumes,
    });
    if let Some(ip) = &service_ip {
        let names: Vec<String> = addresses(stack).into_iter().map(|(n, _)| n).collect();
        let mut names = names;
        names.dedup();
        agent_spec["hostAliases"] = json!([{"ip": ip, "hostnames": names}]);
    }

    // The bundle.
    let mut bundle_volumes = Volumes::default();
    let mut bundle_env = Vec::new();
    let mut bundle_mounts = Vec::new();
    for o in &stack.bundle {
        bundle_env.extend(o.daemon.env.iter().cloned());
        for (i, m) in o.daemon.mounts.iter().enumerate() {
            // Read-only mounts go where bottle-init installs them from, as on Docker.
            let target = if m.read_only {
                private_target(&o.daemon.name, i)
            } else {
                m.target.clone()
            };
            bundle_mounts.push(bundle_volumes.mount(stack, m, &target));
        }
    }
    let daemons = Mount {
        source: MountSource::State(DAEMONS_STATE_PATH.into()),
        target: DAEMONS_IN_BUNDLE.into(),
        read_only: true,
    };
    bundle_mounts.push(bundle_volumes.mount(stack, &daemons, DAEMONS_IN_BUNDLE));
    // No hop token here: the NetworkPolicy lets only the agent reach the bundle.
    let bundle_secrets: Vec<String> = stack
        .bundle_secrets
        .iter()
        .filter(|s| s.from_host_env != HOP_TOKEN_HOST_ENV)
        .map(|s| s.name.clone())
        .collect();
    let mut bundle_container_spec = json!({
        "name": "sidecars",
        "image": settings.bundle_image.clone().unwrap_or_else(|| DEFAULT_BUNDLE_IMAGE.into()),
        "command": [BUNDLE_INIT, DAEMONS_IN_BUNDLE],
        "env": env_list(slug, &bundle_env, &bundle_secrets),
        "ports": ports.iter().map(|p| json!({"containerPort": p, "protocol": "TCP"})).collect::<Vec<_>>(),
        "volumeMounts": bundle_mounts,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": BUNDLE_CAPS},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if stack.bundle.iter().any(|o| o.daemon.ready_check.is_some()) {
        bundle_container_spec["readinessProbe"] = json!({
            "exec": {"command": [BUNDLE_INIT, "ready", DAEMONS_IN_BUNDLE]},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 60,
        });
    }

    let meta = |name: &str, role: &str| json!({"name": name, "labels": labels_for(stack, role)});
    let service_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("p-{p}"), "port": p, "targetPort": p, "protocol": "TCP"}))
        .collect();
    let mut service_spec = json!({
        "type": "ClusterIP",
        "selector": selector(stack, "sidecars"),
        "ports": service_ports,
    });
    if let Some(ip) = &service_ip {
        service_spec["clusterIP"] = json!(ip);
    }
    let tcp_ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"protocol": "TCP", "port": p}))
        .collect();

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
            Some(x) if x["metadata"]["annotations"] == o["metadata"]["annotations"] => {}
            Some(x) => {
                return Err(PluginError::Unsupported(format!(
                    "{} and {} would both be object {}: give one of the files another name",
                    x["metadata"]["annotations"][SOURCE_ANNOTATION],
                    o["metadata"]["annotations"][SOURCE_ANNOTATION],
                    o["metadata"]["name"]
                )));
            }
        }
    }
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(&bundle_name, "sidecars"),
        "spec": service_spec,
    }));
    out.push(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(&format!("bottle-agent-{slug}"), "agent"),
        "spec": {
            "podSelector": {"matchLabels": selector(stack, "agent")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{
                "to": [{"podSelector": {"matchLabels": selector(stack, "sidecars")}}],
                "ports": tcp_ports,
            }],
        },
    }));
    out.push(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(&bundle_name, "sidecars"),
        "spec": {
            "podSelector": {"matchLabels": selector(stack, "sidecars")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": selector(stack, "agent")}}],
                "ports": tcp_ports,
            }],
            "egress": [
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": NOT_OUT_V4}},
                    {"ipBlock": {"cidr": "::/0", "except": NOT_OUT_V6}},
                ]},
            ],
        },
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(&bundle_name, "sidecars"),
        "spec": {
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Always",
            "containers": [bundle_container_spec],
            "volumes": bundle_volumes.volumes,
        },
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(&format!("bottle-agent-{slug}"), "agent"),
        "spec": agent_spec,
    }));
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
        if !stack.services.is_empty() {
            let names: Vec<&str> = stack
                .services
                .iter()
                .map(|o| o.service.name.as_str())
                .collect();
            return Err(PluginError::Unsupported(format!(
                "the kubernetes backend runs only the agent and the sidecar bundle, not services ({}); use the docker backend",
                names.join(", ")
            )));
        }
        let mut yaml = String::new();
        for o in objects(stack, settings)? {
            yaml.push_str("---\n");
            yaml.push_str(
                &serde_yaml::to_string(&o).map_err(|e| PluginError::Internal(e.to_string()))?,
            );
        }
        let mut documents = vec![Document {
            path: MANIFEST.into(),
            contents: yaml,
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
