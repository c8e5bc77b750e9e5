//! What a component imports and exports, checked against the contract before anything runs.

use super::{LoadError, PluginSource, since_v0_1_0};
use crate::model::PluginKind;
use semver::Version;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Import prefixes a plugin may use. Everything else (`wasi:filesystem`, `wasi:sockets`,
/// `wasi:http`, …) is refused at load time, even though the empty WASI context would deny it at
/// run time anyway: a plugin that asks for the world is not a pure planner.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "bottle:plugin/types@",
    "bottle:plugin/host@",
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
];

/// The role a component plays, read from its exports.
pub(super) struct Role {
    pub kind: PluginKind,
    pub api: Version,
}

/// The magic and the component-layer version word of the binary format.
pub(super) fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// Say why `bytes` are not a component, for the error message.
pub(super) fn describe_non_component(bytes: &[u8]) -> String {
    if bytes.len() >= 8 && bytes[..4] == *b"\0asm" {
        "a core WebAssembly module, not a component".into()
    } else if bytes.is_empty() {
        "the file is empty".into()
    } else {
        "no WebAssembly header".into()
    }
}

/// Whether `name` is a valid plugin name: `[a-z][a-z0-9-]*`, at most 40 chars.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 40
}

/// Check imports and find the exported plugin interface and its API version.
pub(super) fn check(
    engine: &Engine,
    component: &Component,
    source: &PluginSource,
) -> Result<Role, LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
            return Err(LoadError::ForbiddenImport {
                plugin: source.clone(),
                import: name.to_owned(),
                allowed: ALLOWED_IMPORTS.join(", "),
            });
        }
    }
    let mut found = None;
    for (name, _) in ty.exports(engine) {
        let Some(rest) = name.strip_prefix("bottle:plugin/") else {
            continue;
        };
        let Some((iface, version)) = rest.split_once('@') else {
            continue;
        };
        let kind = match iface {
            "sidecar" => PluginKind::Sidecar,
            "backend" => PluginKind::Backend,
            _ => continue,
        };
        let api = Version::parse(version).map_err(|e| LoadError::IncompatibleApi {
            plugin: source.clone(),
            found: format!("{version:?} ({e})"),
            supported: since_v0_1_0::SUPPORTED.to_string(),
        })?;
        found = Some(Role { kind, api });
    }
    let role = found.ok_or_else(|| LoadError::NotAPlugin {
        plugin: source.clone(),
    })?;
    if !since_v0_1_0::SUPPORTED.matches(&role.api) {
        return Err(LoadError::IncompatibleApi {
            plugin: source.clone(),
            found: role.api.to_string(),
            supported: format!(
                "{} (>= {}, < 0.2.0)",
                *since_v0_1_0::SUPPORTED,
                since_v0_1_0::MIN_VERSION
            ),
        });
    }
    Ok(role)
}
