//! Where bottle keeps things on the host (XDG base dirs).

use std::path::PathBuf;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(fallback)))
}

/// Compiled plugin cache: `$BOTTLE_CACHE_DIR`, else `$XDG_CACHE_HOME/bottle`, else `~/.cache/bottle`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("BOTTLE_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| xdg("XDG_CACHE_HOME", ".cache").map(|d| d.join("bottle")))
}

/// Per-bottle state: `$BOTTLE_STATE_DIR`, else `$XDG_STATE_HOME/bottle`, else `~/.local/state/bottle`.
pub fn state_dir() -> Option<PathBuf> {
    std::env::var_os("BOTTLE_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| xdg("XDG_STATE_HOME", ".local/state").map(|d| d.join("bottle")))
}

/// User config (agent manifests): `$XDG_CONFIG_HOME/bottle`, else `~/.config/bottle`.
pub fn config_dir() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("bottle"))
}
