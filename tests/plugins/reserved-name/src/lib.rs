//! A sidecar that takes the name `bottle`, which the host keeps for itself.
#![allow(missing_docs, reason = "test plugin")]
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "only the wasm build exports it")
)]

use bottle_plugin_sdk::prelude::*;

struct Reserved;

impl SidecarGuest for Reserved {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "bottle".into(),
            kind: PluginKind::Sidecar,
            version: "0.0.1".into(),
            summary: "a plugin with a reserved name (tests only)".into(),
        }
    }

    fn prepare(_: Bottle) -> Result<Plan, PluginError> {
        Ok(Plan::default())
    }

    fn render(_: RenderContext) -> Result<Fragment, PluginError> {
        Ok(Fragment::default())
    }
}

#[cfg(target_arch = "wasm32")]
bottle_plugin_sdk::export_sidecar!(Reserved);
