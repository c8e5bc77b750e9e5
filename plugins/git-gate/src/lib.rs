//! git-gate: the agent's only git remote, present when the manifest has git upstreams.
//!
//! The agent reaches each upstream as `git://git-gate/<name>.git` (its gitconfig rewrites the
//! real URL with `insteadOf`). Only git-gate holds the SSH key, mounted read-only, and it
//! verifies the upstream against the pinned host key; with no pinned key it refuses to forward.

pub use bottle_contract::gate::{GateFile, GateRepo, PushPolicy, ScanSettings};
use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The hostname the agent uses.
pub const HOSTNAME: &str = "git-gate";
/// git daemon's port.
pub const PORT: u16 = bottle_contract::ports::GIT_GATE;
/// In-container config dir (gate.yaml, known_hosts).
pub const CONFIG_DIR: &str = "/etc/git-gate";
/// In-container dir of the SSH keys, one subdir per upstream.
pub const CREDS_DIR: &str = "/git-gate/creds";
/// The pinned host keys, in the container.
pub const KNOWN_HOSTS: &str = "/etc/git-gate/known_hosts";
/// The daemon binary in the bundle image.
pub const BINARY: &str = "/usr/local/bin/bottle-git-gate";
/// Where the agent's gitconfig is mounted (read by every git as the system config).
pub const AGENT_GITCONFIG: &str = "/etc/gitconfig";

/// `plugins.git-gate` in the manifest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Push policies by repo name: the host fills this from the manifest's `git[i].push`
    /// (the 0.1.0 `git-upstream` record has no field for it). A repo not listed gets the
    /// default: fast-forward branches only.
    #[serde(default)]
    pub push: BTreeMap<String, PushPolicy>,
}

/// The `known_hosts` line for an upstream, if its key is pinned.
pub fn known_hosts_line(u: &GitUpstream) -> Option<String> {
    let key = u.known_host_key.as_deref()?.trim();
    let host = if u.port == 22 {
        u.host.clone()
    } else {
        format!("[{}]:{}", u.host, u.port)
    };
    Some(format!("{host} {key}\n"))
}

/// The agent's gitconfig: one `insteadOf` per upstream, to `git://git-gate/<token>/<name>.git`
/// (git-gate serves only paths that start with the run's hop token; the host puts the token
/// in place of [`bottle_contract::hop::PLACEHOLDER`] in the agent's copy).
pub fn gitconfig(git: &[GitUpstream]) -> String {
    let token = bottle_contract::hop::PLACEHOLDER;
    git.iter()
        .map(|u| {
            format!(
                "[url \"git://{HOSTNAME}/{token}/{}.git\"]\n\tinsteadOf = {}\n",
                u.name, u.url
            )
        })
        .collect()
}

/// The plugin.
pub struct GitGate;

impl Sidecar for GitGate {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "git-gate".into(),
            kind: PluginKind::Sidecar,
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "git mirror at git://git-gate/<repo>.git; holds the SSH key, pushes upstream fail-closed".into(),
        }
    }

    fn prepare(bottle: &Bottle, settings: &Settings) -> Result<Plan, PluginError> {
        if bottle.git.is_empty() {
            return Ok(Plan {
                active: false,
                ..Plan::default()
            });
        }
        if let Some(name) = settings
            .push
            .keys()
            .find(|n| !bottle.git.iter().any(|u| &u.name == *n))
        {
            return Err(PluginError::InvalidSettings(format!(
                "push: `{name}` is not one of the manifest's git repos"
            )));
        }
        let repos = bottle
            .git
            .iter()
            .map(|u| {
                if u.known_host_key.is_none() {
                    bottle_plugin_sdk::log::warn(&format!(
                        "git upstream `{}` has no pinned host key: git-gate will refuse to start",
                        u.name
                    ));
                }
                GateRepo {
                    name: u.name.clone(),
                    upstream: u.url.clone(),
                    host: u.host.clone(),
                    port: u.port,
                    key: format!("{CREDS_DIR}/{}/id", u.name),
                    push: settings.push.get(&u.name).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let gate = GateFile {
            known_hosts: KNOWN_HOSTS.into(),
            fetch_coalesce_ms: 0,
            scan: ScanSettings::default(),
            repos,
        };
        let gate =
            serde_yaml::to_string(&gate).map_err(|e| PluginError::Internal(e.to_string()))?;
        let known_hosts: String = bottle.git.iter().filter_map(known_hosts_line).collect();
        Ok(Plan {
            files: vec![
                StagedFile {
                    path: "git-gate/gate.yaml".into(),
                    contents: gate,
                    mode: 0o644,
                },
                StagedFile {
                    path: "git-gate/known_hosts".into(),
                    contents: known_hosts,
                    mode: 0o644,
                },
                StagedFile {
                    path: "agent/gitconfig".into(),
                    contents: gitconfig(&bottle.git),
                    mode: 0o644,
                },
            ],
            // Where the gate's port is published beyond the bottle, every repo path must start
            // with the token; the driver puts it in the agent's gitconfig.
            secrets: vec![hop_token("git-gate")],
            ..Plan::default()
        })
    }

    fn render(ctx: &RenderContext, _settings: &Settings) -> Result<Fragment, PluginError> {
        let mut mounts = vec![Mount::state_ro("git-gate", CONFIG_DIR)];
        for u in &ctx.bottle.git {
            mounts.push(Mount {
                source: MountSource::Host(u.key_file.clone()),
                target: format!("{CREDS_DIR}/{}/id", u.name),
                read_only: true,
            });
        }
        let mut agent = Patch::agent();
        agent
            .mounts
            .push(Mount::state_ro("agent/gitconfig", AGENT_GITCONFIG));
        Ok(Fragment {
            daemons: vec![Daemon {
                name: HOSTNAME.into(),
                command: vec![
                    BINARY.into(),
                    "--config".into(),
                    format!("{CONFIG_DIR}/gate.yaml"),
                    "--port".into(),
                    PORT.to_string(),
                ],
                mounts,
                ports: vec![PORT],
                ready_check: Some(vec![
                    BINARY.into(),
                    "health".into(),
                    format!("127.0.0.1:{PORT}"),
                ]),
                ..Daemon::default()
            }],
            patches: vec![agent],
            ..Fragment::default()
        })
    }
}

bottle_plugin_sdk::export!(sidecar GitGate);

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_plugin_sdk::testing;

    #[test]
    fn inactive_without_upstreams() {
        assert!(
            !GitGate::prepare(&testing::bottle(), &Settings::default())
                .unwrap()
                .active
        );
    }

    #[test]
    fn one_insteadof_per_upstream_with_the_hop_tokens_place() {
        let mut b = testing::bottle();
        b.git = vec![testing::upstream("a"), testing::upstream("b")];
        let plan = GitGate::prepare(&b, &Settings::default()).unwrap();
        let gitconfig = &plan
            .files
            .iter()
            .find(|f| f.path == "agent/gitconfig")
            .unwrap()
            .contents;
        assert_eq!(
            gitconfig,
            "[url \"git://git-gate/@BOTTLE_HOP_TOKEN@/a.git\"]\n\tinsteadOf = git@github.com:example/a.git\n\
             [url \"git://git-gate/@BOTTLE_HOP_TOKEN@/b.git\"]\n\tinsteadOf = git@github.com:example/b.git\n"
        );
    }

    #[test]
    fn fail_closed_without_a_pinned_key() {
        let mut b = testing::bottle();
        let mut u = testing::upstream("a");
        u.known_host_key = None;
        b.git = vec![u];
        let plan = GitGate::prepare(&b, &Settings::default()).unwrap();
        let gate: GateFile = serde_yaml::from_str(&plan.files[0].contents).unwrap();
        assert_eq!(gate.repos[0].known_hosts_name(), "github.com");
        assert_eq!(
            plan.files[1].contents, "",
            "no known_hosts entry, so ssh refuses the host"
        );
        let logs = bottle_plugin_sdk::log::take();
        assert!(
            logs.iter().any(|(_, m)| m.contains("no pinned host key")),
            "{logs:?}"
        );
    }

    #[test]
    fn push_policies_are_rendered_per_repo_and_must_name_a_repo() {
        let mut b = testing::bottle();
        b.git = vec![testing::upstream("a"), testing::upstream("b")];
        let strict = PushPolicy {
            allow: vec!["refs/heads/bottle/*".into()],
            ..PushPolicy::default()
        };
        let settings = Settings {
            push: BTreeMap::from([("a".to_owned(), strict.clone())]),
        };
        let plan = GitGate::prepare(&b, &settings).unwrap();
        let gate: GateFile = serde_yaml::from_str(&plan.files[0].contents).unwrap();
        assert_eq!(gate.repos[0].push, strict);
        assert_eq!(gate.repos[1].push, PushPolicy::default());
        let settings = Settings {
            push: BTreeMap::from([("zz".to_owned(), strict)]),
        };
        assert!(GitGate::prepare(&b, &settings).is_err());
    }

    #[test]
    fn key_is_mounted_read_only_and_non_default_ports_are_bracketed() {
        let mut u = testing::upstream("a");
        u.port = 2222;
        assert!(
            known_hosts_line(&u)
                .unwrap()
                .starts_with("[github.com]:2222 ssh-ed25519 ")
        );
        let mut b = testing::bottle();
        b.git = vec![u];
        let f = GitGate::render(&testing::render_context(b), &Settings::default()).unwrap();
        let key = f.daemons[0]
            .mounts
            .iter()
            .find(|m| m.target == "/git-gate/creds/a/id")
            .unwrap();
        assert!(key.read_only);
        assert_eq!(f.daemons[0].ports, [9418]);
    }
}
