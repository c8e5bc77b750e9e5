//! The on-disk cache of compiled plugins (`.cwasm`).
//!
//! Entries live in `<dir>/wasm/<wasmtime version>-<engine compatibility hash>/<sha256>.cwasm`.
//! A compiled artifact is trusted native code, so the cache is used only when its directory is
//! owned by this user and not writable by anyone else, and every entry is authenticated: it
//! starts with a keyed BLAKE3 MAC of the rest, keyed with `<dir>/cache.key` (32 random bytes,
//! 0600, made on first use). BLAKE3 rather than HMAC-SHA256 because the MAC covers every byte
//! of compiled code on every load (`cargo bench -p bottle --bench plugins` prints both). A private dir is not enough on its own (anything running as the user, a
//! synced or restored cache dir, could plant code); an entry whose MAC does not verify is never
//! deserialized: it is a miss, recompiled and rewritten. Writes are best-effort and atomic
//! (temp file, then rename).

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
    key: [u8; KEY_LEN],
}

/// The MAC key's length, and the MAC's.
const KEY_LEN: usize = 32;
/// The key file in the cache root.
const KEY_FILE: &str = "cache.key";

/// The MAC of an entry: over the plugin's content hash (so an entry cannot be moved to another
/// plugin's name) and the compiled code.
fn entry_mac(key: &[u8; KEY_LEN], hash: &str, code: &[u8]) -> blake3::Hash {
    let mut m = blake3::Hasher::new_keyed(key);
    m.update(hash.as_bytes());
    m.update(b"\0");
    m.update(code);
    m.finalize()
}

/// The cache's MAC key: read from `root/cache.key`, or made (random, 0600) when missing.
fn load_or_make_key(root: &Path) -> Result<[u8; KEY_LEN], String> {
    let path = root.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let meta = std::fs::metadata(&path).map_err(|e| format!("{KEY_FILE}: {e}"))?;
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is readable by others (mode {:o}); remove it (a new one is made)",
                    path.display(),
                    meta.mode() & 0o777
                ));
            }
            bytes.try_into().map_err(|_| {
                format!(
                    "{} is not a key; remove it (a new one is made)",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; KEY_LEN];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
                .map_err(|e| format!("cannot read /dev/urandom for a cache key: {e}"))?;
            let (tmp, mut file) = tempfile_in(root).map_err(|e| e.to_string())?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| e.to_string())?;
            // Another process may have made one meanwhile: theirs wins, ours is dropped.
            if std::fs::hard_link(&tmp, &path).is_err() {
                let _ = std::fs::remove_file(&tmp);
                return load_or_make_key(root);
            }
            let _ = std::fs::remove_file(&tmp);
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Hex SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// No caching.
    pub fn disabled() -> Self {
        Cache {
            dir: None,
            key: [0; KEY_LEN],
        }
    }

    /// Cache under `root` (e.g. `~/.cache/bottle`), created 0700 if missing.
    ///
    /// Falls back to no caching, with a warning, when the dir cannot be made private.
    pub fn at(root: &Path) -> Self {
        match private_dir(root).and_then(|()| load_or_make_key(root)) {
            Ok(key) => Cache {
                dir: Some(root.to_owned()),
                key,
            },
            Err(why) => {
                tracing::warn!("not caching compiled plugins in {}: {why}", root.display());
                Cache::disabled()
            }
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
        if let Ok(stored) = std::fs::read(&entry) {
            let verified = stored.split_at_checked(KEY_LEN).filter(|(tag, code)| {
                // Constant time (blake3::Hash's `==`): the comparison must not tell how much of
                // a forged tag is right.
                <[u8; KEY_LEN]>::try_from(*tag)
                    .is_ok_and(|tag| entry_mac(&self.key, hash, code) == blake3::Hash::from(tag))
            });
            let loaded = match verified {
                // SAFETY: these bytes are what this program serialized: their MAC, keyed with
                // a secret only this user can read, verifies. wasmtime also checks the header
                // and engine compatibility; any failure is treated as a miss.
                Some((_, code)) => {
                    unsafe { Component::deserialize(engine, code) }.map_err(|e| format!("{e:#}"))
                }
                None => Err("its MAC does not verify".to_owned()),
            };
            match loaded {
                Ok(c) => return Ok((c, CacheStatus::Hit)),
                Err(why) => {
                    tracing::warn!("discarding cache entry {}: {why}", entry.display());
                    let _ = std::fs::remove_file(&entry);
                    status = CacheStatus::Corrupt;
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = write_entry(&dir, &entry, &component, &self.key, hash) {
            tracing::debug!("could not write cache entry {}: {e}", entry.display());
        }
        Ok((component, status))
    }
}

fn write_entry(
    dir: &Path,
    entry: &Path,
    component: &Component,
    key: &[u8; KEY_LEN],
    hash: &str,
) -> std::io::Result<()> {
    private_dir(dir).map_err(std::io::Error::other)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(entry_mac(key, hash, &bytes).as_bytes())?;
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
