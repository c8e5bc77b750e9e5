//! The guest SDK for bottle plugins.
//!
//! A plugin is a `cdylib` crate built with `cargo build --target wasm32-wasip2`. It implements
//! [`Sidecar`] (or [`Backend`]), whose `Settings` type the SDK parses from the manifest, and
//! exports it with [`export!`]. Plugins are pure: they see no clock, file, socket or secret,
//! and talk to the host only through their return values and [`log`].
//!
//! The contract is the WIT in this crate's `wit/` folder, one frozen folder per API version
//! (`wit/since_v0.1.0/plugin.wit`, `bottle:plugin@0.1.0`).
//!
//! Plugin logic stays testable natively: [`export!`] expands to nothing outside wasm, so call
//! your trait's methods from ordinary `#[test]`s (fixtures in [`testing`]). See the crate
//! README for a worked example.

#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "bindings only run in wasm")
)]

mod defaults;
pub mod log;
pub mod plugin;
pub mod settings;
pub mod testing;

/// Bindings of the `sidecar-plugin` world (`bottle:plugin@0.1.0`).
#[allow(missing_docs, reason = "generated code")]
pub mod sidecar_bindings {
    wit_bindgen::generate!({
        path: "wit/since_v0.1.0",
        world: "sidecar-plugin",
        pub_export_macro: true,
        export_macro_name: "export_sidecar",
        default_bindings_module: "bottle_plugin_sdk::sidecar_bindings",
    });
}

/// Bindings of the `backend-plugin` world; shares its types with [`sidecar_bindings`].
#[allow(missing_docs, reason = "generated code")]
pub mod backend_bindings {
    wit_bindgen::generate!({
        path: "wit/since_v0.1.0",
        world: "backend-plugin",
        pub_export_macro: true,
        export_macro_name: "export_backend",
        default_bindings_module: "bottle_plugin_sdk::backend_bindings",
        with: {
            "bottle:plugin/types@0.1.0": crate::sidecar_bindings::bottle::plugin::types,
            "bottle:plugin/host@0.1.0": crate::sidecar_bindings::bottle::plugin::host,
        },
    });
}

pub use plugin::{Backend, Sidecar};

/// Export a type implementing the raw [`SidecarGuest`] as this component's sidecar plugin
/// ([`export!`] does this for a [`Sidecar`]).
///
/// Gate it on wasm so native `cargo test` still links: `#[cfg(target_arch = "wasm32")]`.
pub use sidecar_bindings::export_sidecar;

/// Export a type implementing the raw [`BackendGuest`] as this component's backend plugin
/// ([`export!`] does this for a [`Backend`]).
pub use backend_bindings::export_backend;

/// The API version this SDK builds plugins for.
pub const API_VERSION: &str = "0.1.0";

/// Every record of the contract (`Bottle`, `Plan`, `Fragment`, `Stack`, …).
pub mod types {
    pub use crate::sidecar_bindings::bottle::plugin::types::*;
}

/// The trait a sidecar plugin implements.
pub use sidecar_bindings::exports::bottle::plugin::sidecar::Guest as SidecarGuest;

/// The trait a backend plugin implements.
pub use backend_bindings::exports::bottle::plugin::backend::Guest as BackendGuest;

/// Everything a plugin usually needs, in one import: the traits, the records of the contract
/// a plugin reads and returns, and the helpers.
pub mod prelude {
    pub use crate::settings::parse_settings;
    pub use crate::types::{
        Agent, AgentSpec, Bottle, CaPaths, CaRequest, Daemon, Deployment, Document, EgressRoute,
        Endpoint, Fragment, GitUpstream, HealthCheck, KeyValue, McpServer, Mount, MountSource,
        NetworkRole, OwnedDaemon, OwnedService, Patch, Plan, PluginError, PluginInfo, PluginKind,
        PublishedPort, RenderContext, RouteAuth, SecretEnv, Service, Stack, StagedFile,
    };
    pub use crate::{Backend, BackendGuest, Sidecar, SidecarGuest, hop_token, kv};
}

/// The hop token for `plugin`'s daemons ([`bottle_contract::hop`]). Put it in the plan's
/// secrets and the daemons get it as `<PLUGIN>_HOP_TOKEN`, a fresh token each run. A daemon
/// serving the agent should then serve only requests that carry it; the agent's side gets it
/// from the host (its proxy URLs, and [`bottle_contract::hop::PLACEHOLDER`] filled in the files
/// rendered for it).
pub fn hop_token(plugin: &str) -> types::SecretEnv {
    types::SecretEnv {
        name: bottle_contract::hop::daemon_env(plugin),
        from_host_env: bottle_contract::hop::HOP_TOKEN_HOST_ENV.into(),
    }
}

/// Shorthand for a [`types::KeyValue`].
pub fn kv(key: impl Into<String>, value: impl Into<String>) -> types::KeyValue {
    types::KeyValue {
        key: key.into(),
        value: value.into(),
    }
}
