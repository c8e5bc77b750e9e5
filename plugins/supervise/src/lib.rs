//! supervise: the MCP server the agent calls when blocked; a human approves on the host.
//!
//! Proposals land in the queue dir, which lives in the bottle's state dir on the host and is
//! mounted into the bundle. The agent registers `http://supervise:9100/` and must reach it
//! without the proxy.

use bottle_plugin_sdk::prelude::*;
use serde::Deserialize;

/// The hostname the agent uses.
pub const HOSTNAME: &str = "supervise";
/// The MCP port.
pub const PORT: u16 = bottle_contract::ports::SUPERVISE;
/// In-container queue dir.
pub const QUEUE_DIR: &str = "/run/supervise/queue";
/// The daemon binary in the bundle image.
pub const BINARY: &str = "/usr/local/bin/bottle-supervise";

/// `plugins.supervise` in the manifest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// The plugin.
pub struct Supervise;

impl Sidecar for Supervise {
    type Settings = Settings;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "supervise".into(),
            kind: PluginKind::Sidecar,
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "MCP server the agent calls when blocked; a human approves from the host"
                .into(),
        }
    }

    fn prepare(bottle: &Bottle, _settings: &Settings) -> Result<Plan, PluginError> {
        Ok(Plan {
            active: bottle.supervise,
            // Staging a file creates its dir on the host: the queue and its two dirs are the
            // invoker's then, not the daemon's user's, so the host can remove what the daemon
            // wrote in them (they are sticky: only a file's owner or the dir's may).
            files: [
                "supervise/queue",
                "supervise/queue/pending",
                "supervise/queue/decisions",
            ]
            .into_iter()
            .map(|dir| StagedFile {
                path: format!("{dir}/.keep"),
                contents: String::new(),
                mode: 0o600,
            })
            .collect(),
            // Where supervise's port is published beyond the bottle, every request must carry
            // the token as a bearer; the driver puts it in the agent's MCP config.
            secrets: vec![hop_token("supervise")],
            ..Plan::default()
        })
    }

    fn render(ctx: &RenderContext, _settings: &Settings) -> Result<Fragment, PluginError> {
        let url = format!("http://{HOSTNAME}:{PORT}/");
        let mut agent = Patch::agent();
        agent.no_proxy.push(HOSTNAME.into());
        agent.mcp_servers.push(McpServer {
            name: HOSTNAME.into(),
            url,
        });
        Ok(Fragment {
            daemons: vec![Daemon {
                name: HOSTNAME.into(),
                command: vec![
                    BINARY.into(),
                    "--listen".into(),
                    format!("0.0.0.0:{PORT}"),
                    "--queue".into(),
                    QUEUE_DIR.into(),
                ],
                env: vec![
                    kv("SUPERVISE_BOTTLE_SLUG", ctx.bottle.slug.clone()),
                    kv("SUPERVISE_QUEUE_DIR", QUEUE_DIR),
                ],
                mounts: vec![Mount {
                    source: MountSource::State("supervise/queue".into()),
                    target: QUEUE_DIR.into(),
                    read_only: false,
                }],
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

bottle_plugin_sdk::export!(sidecar Supervise);

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_plugin_sdk::testing;

    #[test]
    fn active_only_when_the_manifest_says_so() {
        let settings = Settings::default();
        assert!(
            !Supervise::prepare(&testing::bottle(), &settings)
                .unwrap()
                .active
        );
        let mut b = testing::bottle();
        b.supervise = true;
        assert!(Supervise::prepare(&b, &settings).unwrap().active);
    }

    #[test]
    fn registers_mcp_and_bypasses_the_proxy() {
        let f = Supervise::render(
            &testing::render_context(testing::bottle()),
            &Settings::default(),
        )
        .unwrap();
        let agent = &f.patches[0];
        assert_eq!(agent.target, "agent");
        assert_eq!(agent.no_proxy, ["supervise"]);
        assert_eq!(agent.mcp_servers[0].url, "http://supervise:9100/");
        assert_eq!(f.daemons[0].mounts[0].target, QUEUE_DIR);
        assert!(!f.daemons[0].mounts[0].read_only);
    }
}
