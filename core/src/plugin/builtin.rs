//! The plugins compiled into the `bottle` binary (see `core/build.rs`).

/// One embedded plugin.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// File name, e.g. `pipelock.wasm`.
    pub file: &'static str,
    /// The component.
    pub bytes: &'static [u8],
    /// SHA-256 of `bytes`, computed at build time.
    pub hash: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Every built-in plugin, sorted by file name.
pub fn builtins() -> &'static [Builtin] {
    BUILTINS
}
