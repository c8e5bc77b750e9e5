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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The hash keys the compiled-code cache: one that is not of the embedded bytes would load
    /// another build's code for this plugin.
    #[test]
    fn every_builtins_hash_is_of_its_embedded_bytes() {
        assert!(!builtins().is_empty());
        for b in builtins() {
            let hash: String = Sha256::digest(b.bytes)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            assert_eq!(hash, b.hash, "{}", b.file);
        }
    }
}
