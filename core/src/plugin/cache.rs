//! The on-disk cache of compiled plugins (`.cwasm`).
//!
//! Entries live in `<dir>/wasm/<wasmtime version>-<engine compatibility hash>/<sha256>.cwasm`.
//! A compiled artifact is trusted native code, so the cache is used only when its directory is
//! owned by this user and not writable by anyone else. Any entry that fails to load is a miss
//! and is rewritten; writes are best-effort and atomic (temp file, then rename).

use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a load used the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded compiled code from disk.
    Hit,
    /// Compiled; the cache was written (or could not be).
    Miss,
    /// An entry existed but could not be loaded; compiled and rewrote it.
    Corrupt,
    /// No cache in use.
    Disabled,
}

/// The compiled-code cache; `dir: None` compiles every time.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
}

/// Hex SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// No caching.
    pub fn disabled() -> Self {
        Cache { dir: None }
    }

    /// Cache under `root` (e.g. `~/.cache/bottle`), created 0700 if missing.
    ///
    /// Falls back to no caching, with a warning, when the dir cannot be made private.
    pub fn at(root: &Path) -> Self {
        match private_dir(root) {
            Ok(()) => Cache {
                dir: Some(root.to_owned()),
            },
            Err(why) => {
                tracing::warn!("not caching compiled plugins in {}: {why}", root.display());
                Cache::disabled()
            }
        }
    }

    /// The user's default: `$BOTTLE_CACHE_DIR`, else `$XDG_CACHE_HOME/bottle`, else `~/.cache/bottle`.
    pub fn user_default() -> Self {
        match crate::paths::cache_dir() {
            Some(dir) => Cache::at(&dir),
            None => Cache::disabled(),
        }
    }

    /// The directory entries for `engine` go to.
    pub fn entry_dir(&self, engine: &Engine) -> Option<PathBuf> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let version = env!("CARGO_PKG_VERSION");
        self.dir.as_ref().map(|d| {
            d.join("wasm")
                .join(format!("bottle-{version}-{:016x}", h.finish()))
        })
    }

    /// Compiled code for `bytes`, from the cache or freshly compiled.
    pub(super) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<(Component, CacheStatus)> {
        let Some(dir) = self.entry_dir(engine) else {
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheStatus::Disabled,
            ));
        };
        let entry = dir.join(format!("{hash}.cwasm"));
        let mut status = CacheStatus::Miss;
        if entry.is_file() {
            // SAFETY: the entry was written by this program (the dir is private to this user, checked
            // in `Cache::at`), and wasmtime verifies the header and engine compatibility; any
            // failure is treated as a miss.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(c) => return Ok((c, CacheStatus::Hit)),
                Err(e) => {
                    tracing::warn!(
                        "discarding unreadable cache entry {}: {e:#}",
                        entry.display()
                    );
                    let _ = std::fs::remove_file(&entry);
                    status = CacheStatus::Corrupt;
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = write_entry(&dir, &entry, &component) {
            tracing::debug!("could not write cache entry {}: {e}", entry.display());
        }
        Ok((component, status))
    }
}

fn write_entry(dir: &Path, entry: &Path, component: &Component) -> std::io::Result<()> {
    private_dir(dir).map_err(std::io::Error::other)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(&bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, entry)
}

/// A new file beside the final entry, unique per process and call.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok((path, file))
}

/// Create `dir` (0700) if needed and check nobody else can write to it.
fn private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot stat it: {e}"))?;
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("it is owned by uid {}, not by you", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is writable by others (mode {:o}); run `chmod 700` on it",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}
