//! smolmachines: the agent as a smolvm microVM, the sidecar bundle as a container beside it.
//!
//! The VM has no DNS for the bundle's hostnames, so it reaches the bundle container by its
//! address on the bundle's bridge network, at the daemons' own ports (`http://<address>:9099`),
//! and its network allowlist is that one address. The container listens on nothing but its
//! daemons' ports (bottle-init refuses any other socket beyond loopback), so the VM reaches
//! those ports and nothing else: not the host's loopback, not a host service listening on every
//! address. Nothing is published on the host. Docker gives the address when the bundle starts,
//! after the render, so the documents carry [`BUNDLE_ADDRESS_PLACEHOLDER`] and the driver puts
//! the address in its copies. The same bottle always renders the same documents.
//!
//! The agent's secrets go into the Smolfile's `[secrets]` table as `from_env` references:
//! smolvm reads the values from its own env at create time, so no value is ever written.
//!
//! Files other plugins staged that name a daemon (git-gate's gitconfig: `git://git-gate/…`)
//! cannot be rewritten here (a backend sees mounts, not contents), so the plugin renders the
//! rewrites as data ([`REWRITES_FILE`]) and the smolmachines driver applies them to the copies
//! it makes for the VM (virtiofs mounts dirs only, so file mounts are copied into a dir anyway).
//! git's system config moves from `/etc/gitconfig` to `/etc/bottle/gitconfig`
//! (`GIT_CONFIG_SYSTEM`): a dir mounted over `/etc` would hide the image's.

use bottle_plugin_compose::*;
use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The Smolfile's name in the state dir.
pub const SMOLFILE: &str = "Smolfile";
/// The bundle's compose file in the state dir.
pub const BUNDLE_COMPOSE_FILE: &str = "bundle.compose.yaml";
/// The address rewrites for files staged by other plugins, in the state dir (`[[from, to]]`).
pub const REWRITES_FILE: &str = "smolvm-rewrites.json";
/// Where git's system config goes in the VM.
pub const VM_GITCONFIG: &str = "/etc/bottle/gitconfig";

/// `plugins.smolmachines` in the manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// vCPUs of the agent VM.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Memory of the agent VM, MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// The sidecar bundle image.
    pub bundle_image: Option<String>,
}

fn default_cpus() -> u32 {
    2
}
fn default_memory() -> u32 {
    4096
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cpus: default_cpus(),
            memory: default_memory(),
            bundle_image: None,
        }
    }
}

/// Every `from → to` that points a daemon's name at the bundle's address, ports kept:
/// `://<daemon or alias>:` and `://<daemon or alias>/` (a default port, as in `git://git-gate/`).
pub fn rewrites(stack: &Stack) -> Vec<(String, String)> {
    let address = BUNDLE_ADDRESS_PLACEHOLDER;
    let mut out = Vec::new();
    for o in &stack.bundle {
        for name in std::iter::once(&o.daemon.name).chain(&o.daemon.aliases) {
            for end in [":", "/"] {
                out.push((format!("://{name}{end}"), format!("://{address}{end}")));
            }
        }
    }
    out
}

/// `value` with [`rewrites`] applied.
fn rewrite(value: &str, stack: &Stack) -> String {
    rewrites(stack)
        .iter()
        .fold(value.to_owned(), |v, (from, to)| v.replace(from, to))
}

/// A TOML basic string (JSON's escapes are a subset TOML accepts).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The agent VM's Smolfile: only keys smolvm accepts.
pub fn smolfile(stack: &Stack, settings: &Settings) -> Result<String, PluginError> {
    let mut env: Vec<String> = stack
        .agent
        .env
        .iter()
        .map(|kv| {
            let mut value = rewrite(&kv.value, stack);
            // Daemons reached by name without the proxy are reached by address now.
            if kv.key.eq_ignore_ascii_case("no_proxy") {
                value = format!("{value},{BUNDLE_ADDRESS_PLACEHOLDER}");
            }
            format!("{}={value}", kv.key)
        })
        .collect();
    let mut volumes = Vec::new();
    if !stack.agent.mcp_servers.is_empty() {
        env.push(format!("{MCP_CONFIG_ENV}={MCP_CONFIG_IN_AGENT}"));
        env.sort();
        volumes.push(format!(
            "{}/{MCP_CONFIG_STATE_PATH}:{MCP_CONFIG_IN_AGENT}:ro",
            stack.state_dir.trim_end_matches('/')
        ));
    }
    for m in &stack.agent.mounts {
        // See the module doc: git's system config moves out of /etc.
        let target = if m.target == "/etc/gitconfig" {
            env.push(format!("GIT_CONFIG_SYSTEM={VM_GITCONFIG}"));
            env.sort();
            VM_GITCONFIG
        } else {
            m.target.as_str()
        };
        match &m.source {
            MountSource::State(p) => {
                let ro = if m.read_only { ":ro" } else { "" };
                volumes.push(format!(
                    "{}/{p}:{}{ro}",
                    stack.state_dir.trim_end_matches('/'),
                    target
                ));
            }
            MountSource::Host(p) => volumes.push(format!(
                "{p}:{}{}",
                target,
                if m.read_only { ":ro" } else { "" }
            )),
            MountSource::Volume(v) => {
                return Err(PluginError::Unsupported(format!(
                    "the smolmachines backend cannot mount named volume `{v}` into the agent VM; use the docker backend"
                )));
            }
        }
    }
    let mut s = String::new();
    let w = &mut s;
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        w,
        "# Agent VM for bottle {}; machine name {}",
        stack.slug,
        project(&stack.slug)
    );
    let _ = writeln!(w, "image = {}", toml_str(&stack.agent.image));
    let _ = writeln!(
        w,
        "entrypoint = {}",
        toml_list(&["sleep".into(), "infinity".into()])
    );
    let _ = writeln!(w, "workdir = {}", toml_str(&stack.agent.workdir));
    let _ = writeln!(w, "cpus = {}", settings.cpus);
    let _ = writeln!(w, "memory = {}", settings.memory);
    let _ = writeln!(w, "net = true");
    let _ = writeln!(w, "env = {}", toml_list(&env));
    if !volumes.is_empty() {
        let _ = writeln!(w, "volumes = {}", toml_list(&volumes));
    }
    let _ = writeln!(w, "\n[network]");
    let _ = writeln!(
        w,
        "allow_cidrs = {}",
        toml_list(&[format!("{BUNDLE_ADDRESS_PLACEHOLDER}/32")])
    );
    if !stack.agent.secret_env.is_empty() {
        let _ = writeln!(w, "\n[secrets]");
        for name in &stack.agent.secret_env {
            let _ = writeln!(w, "{name} = {{ from_env = {} }}", toml_str(name));
        }
    }
    Ok(s)
}

/// The agent's MCP config with every server URL rewritten to the bundle's address (a bundle
/// daemon's entry carries the hop token's placeholder as its bearer, as on every backend).
fn vm_mcp_config(stack: &Stack) -> Result<Option<Document>, PluginError> {
    let Some(mut doc) = mcp_config(stack) else {
        return Ok(None);
    };
    doc.contents = rewrite(&doc.contents, stack);
    Ok(Some(doc))
}

/// The bundle's compose file: one container on a per-bottle bridge, nothing published (the VM
/// reaches the container's own address).
pub fn bundle_compose(stack: &Stack, settings: &Settings) -> ComposeFile {
    let image = settings
        .bundle_image
        .clone()
        .unwrap_or_else(|| BUNDLE_IMAGE.into());
    let bundle = bundle_service(stack, &image, &["bundle"]);
    ComposeFile {
        services: BTreeMap::from([(BUNDLE_SERVICE.to_owned(), bundle)]),
        networks: BTreeMap::from([(
            "bundle".to_owned(),
            ComposeNetwork {
                name: format!("bottle-bundle-{}", stack.slug),
                driver: "bridge".into(),
                labels: labels_for(stack, "network"),
                ..ComposeNetwork::default()
            },
        )]),
        volumes: BTreeMap::new(),
    }
}

/// The plugin.
pub struct Smolmachines;

impl Backend for Smolmachines {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "smolmachines".into(),
            kind: PluginKind::Backend,
            version: env!("CARGO_PKG_VERSION").into(),
            summary:
                "the agent as a smolvm microVM that reaches only its sidecar bundle's container"
                    .into(),
        }
    }

    fn render(stack: &Stack, settings: &Settings) -> Result<Deployment, PluginError> {
        refuse_services(stack, "smolmachines", "the sidecar bundle beside the VM")?;
        let mut documents = vec![Document {
            path: SMOLFILE.into(),
            contents: smolfile(stack, settings)?,
            mode: 0o600,
        }];
        if !stack.bundle.is_empty() {
            documents.push(Document {
                path: BUNDLE_COMPOSE_FILE.into(),
                contents: to_yaml(&bundle_compose(stack, settings))?,
                mode: 0o600,
            });
        }
        documents.extend(vm_mcp_config(stack)?);
        documents.push(Document {
            path: REWRITES_FILE.into(),
            contents: serde_json::to_string_pretty(&rewrites(stack))
                .map_err(|e| PluginError::Internal(e.to_string()))?
                + "\n",
            mode: 0o600,
        });
        Ok(Deployment {
            project: project(&stack.slug),
            documents,
        })
    }
}

bottle_plugin_sdk::export!(backend Smolmachines);

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_plugin_sdk::testing;

    fn rendered() -> Deployment {
        Smolmachines::render(&testing::stack(), &Settings::default()).unwrap()
    }

    fn document<'a>(d: &'a Deployment, path: &str) -> &'a str {
        &d.documents
            .iter()
            .find(|d| d.path == path)
            .unwrap()
            .contents
    }

    #[test]
    fn secrets_are_from_env_references_never_values() {
        let d = rendered();
        let smolfile = document(&d, SMOLFILE);
        assert!(
            smolfile.contains(
                "\n[secrets]\nANTHROPIC_API_KEY = { from_env = \"ANTHROPIC_API_KEY\" }\n"
            ),
            "{smolfile}"
        );
        let parsed: toml::Table = smolfile.parse().unwrap();
        assert_eq!(
            parsed["secrets"]["ANTHROPIC_API_KEY"]["from_env"].as_str(),
            Some("ANTHROPIC_API_KEY")
        );
    }

    #[test]
    fn bundle_urls_name_the_bundles_address_in_env_and_mcp_config() {
        let mut stack = testing::stack();
        stack.agent.env.push(KeyValue {
            key: "NO_PROXY".into(),
            value: "localhost,supervise".into(),
        });
        let address = BUNDLE_ADDRESS_PLACEHOLDER;
        let d = Smolmachines::render(&stack, &Settings::default()).unwrap();
        let smolfile: toml::Table = document(&d, SMOLFILE).parse().unwrap();
        let env: Vec<&str> = smolfile["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let proxy = format!("HTTPS_PROXY=http://{address}:8888");
        assert!(env.contains(&proxy.as_str()), "{env:?}");
        assert!(
            env.iter()
                .any(|e| e.starts_with("NO_PROXY=") && e.ends_with(&format!(",{address}"))),
            "{env:?}"
        );
        assert!(
            env.contains(&"BOTTLE_MCP_CONFIG=/etc/bottle/mcp.json"),
            "{env:?}"
        );
        let mcp: serde_json::Value =
            serde_json::from_str(document(&d, MCP_CONFIG_STATE_PATH)).unwrap();
        assert_eq!(
            mcp["mcpServers"]["supervise"]["url"],
            format!("http://{address}:9100/")
        );
        let volumes = smolfile["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(
            |v| v.as_str() == Some("/state/demo-abcde/agent/mcp.json:/etc/bottle/mcp.json:ro")
        ));
        // The VM may reach that address only, not the host's loopback.
        assert_eq!(
            smolfile["network"]["allow_cidrs"].as_array().unwrap(),
            &vec![toml::Value::from(format!("{address}/32"))]
        );
        // Nothing is published on the host.
        let compose: ComposeFile = serde_yaml::from_str(document(&d, BUNDLE_COMPOSE_FILE)).unwrap();
        assert!(compose.services["sidecars"].ports.is_empty(), "{compose:?}");
        assert!(!compose.networks["bundle"].internal);
    }

    #[test]
    fn every_daemon_name_has_a_rewrite_with_and_without_a_port() {
        let stack = testing::stack();
        let address = BUNDLE_ADDRESS_PLACEHOLDER;
        let rw = rewrites(&stack);
        for o in &stack.bundle {
            let name = &o.daemon.name;
            assert!(
                rw.contains(&(format!("://{name}:"), format!("://{address}:"))),
                "{rw:?}"
            );
            assert!(
                rw.contains(&(format!("://{name}/"), format!("://{address}/"))),
                "{rw:?}"
            );
        }
        let d = Smolmachines::render(&stack, &Settings::default()).unwrap();
        let doc: Vec<(String, String)> = serde_json::from_str(document(&d, REWRITES_FILE)).unwrap();
        assert_eq!(doc, rw);
    }

    #[test]
    fn git_urls_and_mcp_servers_carry_the_hop_token_placeholder_for_the_driver() {
        let mut stack = testing::stack();
        let mut gate = stack.bundle[0].clone();
        gate.plugin = "git-gate".into();
        gate.daemon.name = "git-gate".into();
        gate.daemon.ports = vec![9418];
        stack.bundle.push(gate);
        let address = BUNDLE_ADDRESS_PLACEHOLDER;
        let rw = rewrites(&stack);
        let gitconfig = format!(
            "[url \"git://git-gate/{HOP_PLACEHOLDER}/a.git\"]\n\tinsteadOf = git@github.com:x/a.git\n"
        );
        let rewritten = rw
            .iter()
            .fold(gitconfig, |t, (from, to)| t.replace(from, to));
        assert!(
            rewritten.contains(&format!("git://{address}/{HOP_PLACEHOLDER}/a.git")),
            "{rewritten}"
        );
        let d = Smolmachines::render(&stack, &Settings::default()).unwrap();
        let mcp: serde_json::Value =
            serde_json::from_str(document(&d, MCP_CONFIG_STATE_PATH)).unwrap();
        for (_, server) in mcp["mcpServers"].as_object().unwrap() {
            assert_eq!(
                server["headers"]["Authorization"],
                format!("Bearer {HOP_PLACEHOLDER}")
            );
        }
        // Env values (read by smolvm from the Smolfile) never get the token's placeholder.
        assert!(!document(&d, SMOLFILE).contains(HOP_PLACEHOLDER));
    }

    #[test]
    fn git_config_moves_out_of_etc_for_the_vm() {
        let mut stack = testing::stack();
        stack.agent.mounts.push(Mount {
            source: MountSource::State("agent/gitconfig".into()),
            target: "/etc/gitconfig".into(),
            read_only: true,
        });
        let smolfile = smolfile(&stack, &Settings::default()).unwrap();
        assert!(
            smolfile.contains("GIT_CONFIG_SYSTEM=/etc/bottle/gitconfig"),
            "{smolfile}"
        );
        assert!(
            smolfile.contains("agent/gitconfig:/etc/bottle/gitconfig:ro"),
            "{smolfile}"
        );
        assert!(!smolfile.contains(":/etc/gitconfig"), "{smolfile}");
    }

    #[test]
    fn services_and_named_volumes_are_refused_with_the_way_out() {
        let mut stack = testing::stack();
        stack.agent.mounts.push(Mount {
            source: MountSource::Volume("cache".into()),
            target: "/cache".into(),
            read_only: false,
        });
        let err = Smolmachines::render(&stack, &Settings::default()).unwrap_err();
        assert!(
            matches!(&err, PluginError::Unsupported(m) if m.contains("use the docker backend")),
            "{err:?}"
        );
    }
}
