//! The traits a plugin implements, with its settings typed, and [`export!`](crate::export).
//!
//! The host hands a plugin its settings table (`plugins.<name>` in the manifest) as JSON on
//! every call. These traits parse it once, into the plugin's own `Settings` type, before the
//! hook runs; a typo in the manifest becomes an `invalid-settings` error naming the field.
//! The lower-level [`SidecarGuest`](crate::SidecarGuest) and [`BackendGuest`](crate::BackendGuest)
//! (the raw WIT exports) stay available for plugins that want the JSON.

use crate::settings::parse_settings;
use crate::types::{
    Bottle, Deployment, Fragment, Plan, PluginError, PluginInfo, RenderContext, Stack,
};
use serde::de::DeserializeOwned;

/// A sidecar plugin: what it needs (`prepare`) and what it adds (`render`).
pub trait Sidecar {
    /// Its settings table. Give it `#[serde(deny_unknown_fields, default)]`.
    type Settings: DeserializeOwned + Default;

    /// Name, kind, version and a one-line summary.
    fn info() -> PluginInfo;

    /// What it needs from the host: files, CAs, secrets by name, endpoints it offers. The
    /// default needs nothing and is active.
    fn prepare(bottle: &Bottle, settings: &Self::Settings) -> Result<Plan, PluginError> {
        let _ = (bottle, settings);
        Ok(Plan::default())
    }

    /// What it adds to the bottle, with the CA paths and endpoints the host chose.
    fn render(ctx: &RenderContext, settings: &Self::Settings) -> Result<Fragment, PluginError>;
}

/// A backend plugin: the merged stack in, documents for its engine out.
pub trait Backend {
    /// Its settings table. Give it `#[serde(deny_unknown_fields, default)]`.
    type Settings: DeserializeOwned + Default;

    /// Name, kind, version and a one-line summary.
    fn info() -> PluginInfo;

    /// Render `stack` as documents for the engine.
    fn render(stack: &Stack, settings: &Self::Settings) -> Result<Deployment, PluginError>;
}

/// Run a [`Sidecar`]'s `prepare` on the raw bottle, settings parsed first: what the export
/// does, and what a unit test calls to go through the settings as the host gives them.
pub fn prepare<S: Sidecar>(bottle: Bottle) -> Result<Plan, PluginError> {
    let settings: S::Settings = parse_settings(&bottle.settings)?;
    S::prepare(&bottle, &settings)
}

/// Run a [`Sidecar`]'s `render` on the raw context, settings parsed first (see [`prepare`]).
pub fn render<S: Sidecar>(ctx: RenderContext) -> Result<Fragment, PluginError> {
    let settings: S::Settings = parse_settings(&ctx.bottle.settings)?;
    S::render(&ctx, &settings)
}

/// Run a [`Backend`]'s `render` on the raw stack, settings parsed first (see [`prepare`]).
pub fn render_backend<B: Backend>(stack: Stack) -> Result<Deployment, PluginError> {
    let settings: B::Settings = parse_settings(&stack.settings)?;
    B::render(&stack, &settings)
}

/// Export a type as this component's plugin: `export!(sidecar Hello)` for a [`Sidecar`],
/// `export!(backend Docker)` for a [`Backend`].
///
/// It expands to nothing outside wasm, so the same crate builds natively for its unit tests
/// (the component's export names hold `:` and `@`, which native linkers reject).
#[macro_export]
macro_rules! export {
    (sidecar $plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct BottleSidecarExport;
            impl $crate::SidecarGuest for BottleSidecarExport {
                fn info() -> $crate::types::PluginInfo {
                    <$plugin as $crate::Sidecar>::info()
                }
                fn prepare(
                    bottle: $crate::types::Bottle,
                ) -> ::core::result::Result<$crate::types::Plan, $crate::types::PluginError>
                {
                    $crate::plugin::prepare::<$plugin>(bottle)
                }
                fn render(
                    ctx: $crate::types::RenderContext,
                ) -> ::core::result::Result<$crate::types::Fragment, $crate::types::PluginError>
                {
                    $crate::plugin::render::<$plugin>(ctx)
                }
            }
            $crate::export_sidecar!(BottleSidecarExport);
        };
    };
    (backend $plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct BottleBackendExport;
            impl $crate::BackendGuest for BottleBackendExport {
                fn info() -> $crate::types::PluginInfo {
                    <$plugin as $crate::Backend>::info()
                }
                fn render(
                    stack: $crate::types::Stack,
                ) -> ::core::result::Result<$crate::types::Deployment, $crate::types::PluginError>
                {
                    $crate::plugin::render_backend::<$plugin>(stack)
                }
            }
            $crate::export_backend!(BottleBackendExport);
        };
    };
}
