//! smolmachines: the agent as a smolvm microVM, the sidecar bundle as a container beside it.
//!
//! The VM has no DNS for the bundle's hostnames, so the bundle publishes each daemon port on a
//! loopback address of the bottle's own ([`bundle_address`], `127.77.x.y` from the slug) and
//! the agent's env uses IP-literal URLs with the daemons' own ports
//! (`http://127.77.x.y:9099`). The VM's network allowlist is that one address: not the host's
//! `127.0.0.1`, where the user's own local services listen. The same bottle always renders the
//! same documents.
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

/// The loopback address bottle `slug`'s bundle is published on: `127.77.x.y`, from the slug.
pub fn bundle_address(slug: &str) -> String {
    // FNV-1a: tiny, stable across builds (unlike std's hasher).
    let hash = slug.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    // .0 and .255 are left out: some tools read them as network or broadcast addresses.
    format!("127.77.{}.{}", (hash >> 8) & 0xff, 1 + (hash & 0xff) % 254)
}

/// The bundle's ports, sorted.
pub fn bundle_ports(stack: &Stack) -> Vec<u16> {
    let mut ports: Vec<u16> = stack
        .bundle
        .iter()
        .flat_map(|o| o.daemon.ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Every `from → to` that points a daemon's name at the bundle's address, ports kept:
/// `://<daemon or alias>:` and `://<daemon or alias>/` (a default port, as in `git://git-gate/`).
pub fn rewrites(stack: &Stack) -> Vec<(String, String)> {
    let address = bundle_address(&stack.slug);
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
                value = format!("{value},{}", bundle_address(&stack.slug));
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
        toml_list(&[format!("{}/32", bundle_address(&stack.slug))])
    );
    if !stack.agent.secret_env.is_empty() {
        let _ = writeln!(w, "\n[secrets]");
        for name in &stack.agent.secret_env {
            let _ = writeln!(w, "{name} = {{ from_env = {} }}", toml_str(name));
        }
    }
    Ok(s)
}

/// The agent's MCP config with every server URL rewritten to the loopback port it is
/// published on.
fn vm_mcp_config(stack: &Stack) -> Option<Document> {
    let mut vm = stack.clone();
    for m in &mut vm.agent.mcp_servers {
        m.url = rewrite(&m.url, stack);
    }
    mcp_config(&vm)
}

/// The bundle's compose file: one container on a per-bottle bridge, ports on host loopback.
pub fn bundle_compose(stack: &Stack, settings: &Settings) -> ComposeFile {
    let address = bundle_address(&stack.slug);
    let image = settings
        .bundle_image
        .clone()
        .unwrap_or_else(|| "bottle-sidecars:latest".into());
    let mut bundle = bundle_service(stack, &image, &["bundle"]);
    bundle.ports = bundle_ports(stack)
        .iter()
        .map(|p| format!("{address}:{p}:{p}"))
        .collect();
    ComposeFile {
        services: BTreeMap::from([("sidecars".to_owned(), bundle)]),
        networks: BTreeMap::from([(
            "bundle".to_owned(),
            ComposeNetwork {
                name: format!("bottle-bundle-{}", stack.slug),
                driver: "bridge".into(),
                internal: false,
                driver_opts: BTreeMap::new(),
                labels: labels_for(stack, "network"),
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
            summary: "the agent as a smolvm microVM; sidecars in a bundle on host loopback ports"
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
                "the smolmachines backend runs only the sidecar bundle beside the VM, not services ({}); use the docker backend",
                names.join(", ")
            )));
        }
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
        documents.extend(vm_mcp_config(stack));
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
    fn bundle_urls_name_the_bottles_own_loopback_address_in_env_and_mcp_config() {
        let mut stack = testing::stack();
        stack.agent.env.push(KeyValue {
            key: "NO_PROXY".into(),
            value: "localhost,supervise".into(),
        });
        let address = bundle_address(&stack.slug);
        assert!(address.starts_with("127.77."), "{address}");
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
        // The VM may reach that address only, not the host's 127.0.0.1.
        assert_eq!(
            smolfile["network"]["allow_cidrs"].as_array().unwrap(),
            &vec![toml::Value::from(format!("{address}/32"))]
        );
        let compose = document(&d, BUNDLE_COMPOSE_FILE);
        assert!(
            compose.contains(&format!("{address}:8888:8888")),
            "{compose}"
        );
        assert!(!compose.contains("127.0.0.1"), "{compose}");
    }

    #[test]
    fn two_bottles_get_two_addresses() {
        assert_ne!(bundle_address("a-12345"), bundle_address("a-12346"));
        for slug in ["x", "implementer-abcde", "y-00000"] {
            let last: u8 = bundle_address(slug)
                .rsplit('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=254).contains(&last));
        }
    }

    #[test]
    fn every_daemon_name_has_a_rewrite_with_and_without_a_port() {
        let stack = testing::stack();
        let address = bundle_address(&stack.slug);
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
