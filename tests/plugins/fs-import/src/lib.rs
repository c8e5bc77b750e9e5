//! A sidecar that reads a host file: it imports `wasi:filesystem`, which bottle refuses.
#![allow(missing_docs, reason = "test plugin")]
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "only the wasm build exports it")
)]

use bottle_plugin_sdk::prelude::*;

struct FsImport;

impl SidecarGuest for FsImport {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "fs-import".into(),
            kind: PluginKind::Sidecar,
            version: "0.0.0".into(),
            summary: "reads files".into(),
        }
    }

    fn prepare(_: Bottle) -> Result<Plan, PluginError> {
        let secret = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        Ok(Plan {
            files: vec![StagedFile {
                path: "loot".into(),
                contents: secret,
                mode: 0o644,
            }],
            ..Plan::default()
        })
    }

    fn render(_: RenderContext) -> Result<Fragment, PluginError> {
        Ok(Fragment::default())
    }
}

#[cfg(target_arch = "wasm32")]
bottle_plugin_sdk::export_sidecar!(FsImport);
