//! The user's audit key: an Ed25519 key pair in `<config dir>/audit.key` (PKCS#8, 0600), made
//! on first use. It never leaves the host: no plugin, daemon or agent sees it, so what it
//! sealed cannot be sealed again by anyone else after a change.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use std::path::{Path, PathBuf};

/// The key's file name, in bottle's config dir.
pub const KEY_FILE: &str = "audit.key";

/// Why the audit key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{}: {error}; check the config dir's permissions", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// Others may read the file.
    #[error(
        "{}: others may read it (mode {mode:o}): anyone who can could seal a changed ledger; `chmod 600` it, or remove it to make a new key (ledgers sealed with the old one then no longer verify)",
        path.display()
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The file is no key.
    #[error("{}: not an Ed25519 key bottle made ({detail}); remove it to make a new one", path.display())]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// No system randomness.
    #[error("cannot make an audit key: no system randomness")]
    Random,
}

/// The user's audit key pair.
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("public", &super::chain::hex(&self.public()))
            .finish()
    }
}

impl AuditKey {
    /// A fresh key, kept nowhere (for tests and the first use).
    pub fn generate() -> Result<AuditKey, KeyError> {
        Ok(AuditKey::from_pkcs8(&fresh_pkcs8()?).expect("ring reads what it made"))
    }

    fn from_pkcs8(der: &[u8]) -> Result<AuditKey, String> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(|pair| AuditKey { pair })
            .map_err(|e| e.to_string())
    }

    /// The key in `config_dir`, made (0600) when there is none yet.
    pub fn load_or_create(config_dir: &Path) -> Result<AuditKey, KeyError> {
        let path = config_dir.join(KEY_FILE);
        if let Some(key) = AuditKey::load(config_dir)? {
            return Ok(key);
        }
        let io = |error| KeyError::Io {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(config_dir).map_err(io)?;
        let der = fresh_pkcs8()?;
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            // `create_new`: two runs making a key at once never overwrite each other's.
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            match made {
                Ok(mut f) => f.write_all(&der).and_then(|()| f.sync_all()).map_err(io)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        AuditKey::load(config_dir)?.ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the key vanished as it was made",
            ))
        })
    }

    /// The key in `config_dir`, if there is one.
    pub fn load(config_dir: &Path) -> Result<Option<AuditKey>, KeyError> {
        use std::io::Read as _;
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let path = config_dir.join(KEY_FILE);
        let io = |error| KeyError::Io {
            path: path.clone(),
            error,
        };
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = f.metadata().map_err(io)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path, mode });
        }
        let mut der = Vec::new();
        f.by_ref().take(4096).read_to_end(&mut der).map_err(io)?;
        AuditKey::from_pkcs8(&der)
            .map(Some)
            .map_err(|detail| KeyError::Invalid { path, detail })
    }

    /// The public half.
    pub fn public(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

fn fresh_pkcs8() -> Result<Vec<u8>, KeyError> {
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| KeyError::Random)
}

/// Whether `signature` is `public_key`'s over `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_key_is_made_once_private_and_read_back_the_same() {
        let d = tempfile::tempdir().unwrap();
        let a = AuditKey::load_or_create(d.path()).unwrap();
        let b = AuditKey::load_or_create(d.path()).unwrap();
        assert_eq!(a.public(), b.public());
        let meta = std::fs::metadata(d.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let sig = a.sign(b"m");
        assert!(verify_signature(&b.public(), b"m", &sig));
        assert!(!verify_signature(&b.public(), b"n", &sig));
    }

    #[test]
    fn an_exposed_or_broken_key_file_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        AuditKey::load_or_create(d.path()).unwrap();
        let path = d.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AuditKey::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("others may read it") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::write(&path, b"no key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = AuditKey::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("not an Ed25519 key"), "{e}");
    }
}
