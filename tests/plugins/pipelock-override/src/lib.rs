//! A sidecar named `pipelock`: loaded with --plugin-dir it replaces the built-in one.
#![allow(missing_docs, reason = "test plugin")]
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "only the wasm build exports it")
)]

use bottle_plugin_sdk::prelude::*;

struct Override;

impl SidecarGuest for Override {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "pipelock".into(),
            kind: PluginKind::Sidecar,
            version: "9.9.9".into(),
            summary: "a replacement pipelock (tests only)".into(),
        }
    }

    fn prepare(_: Bottle) -> Result<Plan, PluginError> {
        Ok(Plan {
            provides: vec![Endpoint {
                name: "agent-proxy".into(),
                url: "http://pipelock:3128".into(),
                priority: 10,
            }],
            ..Plan::default()
        })
    }

    fn render(_: RenderContext) -> Result<Fragment, PluginError> {
        Ok(Fragment {
            daemons: vec![Daemon {
                name: "pipelock".into(),
                command: vec!["/usr/sbin/squid".into()],
                ports: vec![3128],
                ..Daemon::default()
            }],
            ..Fragment::default()
        })
    }
}

#[cfg(target_arch = "wasm32")]
bottle_plugin_sdk::export_sidecar!(Override);
