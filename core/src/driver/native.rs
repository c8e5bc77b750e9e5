//! Native drivers, loaded with `libloading` through `bottle-driver-sdk`'s C ABI.
//!
//! A driver runs inside bottle with the user's rights, so loading one is guarded in this
//! order, and nothing of the file runs before the last check but its loader constructors:
//!
//! 1. it must lie in bottle's install dir (beside the `bottle` binary) or a dir the user named
//!    (`--driver-dir`);
//! 2. its sha256 must be pinned in the user's config (`<config dir>/drivers.yaml`, `drivers:
//!    {NAME: sha256:HEX}`), where NAME is the file's name without `libbottle_driver_`/`.so`;
//! 3. the bytes that were hashed are loaded (from a sealed memfd, so the file cannot be swapped
//!    in between), and its ABI version (semver) is read before any other symbol and must have
//!    major [`ABI_MAJOR`];
//! 4. every symbol of the ABI must be there.
//!
//! A call that panics inside the driver comes back as [`NativeError::Panicked`]; the library is
//! never unloaded (its code may still be referenced by threads it started).

use bottle_driver_sdk::{
    ABI_MAJOR, AbiFn, CallFn, FreeFn, Request, Response, STATUS_OK, STATUS_PANIC, SYM_ABI,
    SYM_CALL, SYM_FREE,
};
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file name prefix of native drivers.
pub const FILE_PREFIX: &str = "libbottle_driver_";
/// Where the pins live, under the user's config dir.
pub const PINS_FILE: &str = "drivers.yaml";

/// Why a native driver was not loaded or a call failed; each one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// Outside the dirs drivers may come from.
    #[error(
        "{}: native drivers load only from bottle's install dir or a --driver-dir ({}); move it there or name its dir",
        path.display(), dirs
    )]
    NotAllowed {
        /// The file.
        path: PathBuf,
        /// The allowed dirs.
        dirs: String,
    },
    /// Not pinned in the user's config.
    #[error(
        "{}: driver `{name}` is not pinned; if you trust that file, add `{name}: {hash}` under `drivers:` in {}",
        path.display(), pins.display()
    )]
    Unpinned {
        /// The file.
        path: PathBuf,
        /// The driver's name.
        name: String,
        /// Its sha256.
        hash: String,
        /// The pins file.
        pins: PathBuf,
    },
    /// Pinned to another file.
    #[error(
        "{}: driver `{name}` has sha256 {hash}, but {} pins {pinned}; the file changed since you pinned it: pin it again only if you trust the new one",
        path.display(), pins.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The driver's name.
        name: String,
        /// Its sha256.
        hash: String,
        /// The pinned one.
        pinned: String,
        /// The pins file.
        pins: PathBuf,
    },
    /// The pins file is wrong.
    #[error("{}: {message}; write `drivers: {{NAME: sha256:HEX}}`", file.display())]
    Pins {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Not a loadable library.
    #[error("{}: not a loadable driver ({detail}); rebuild it as a cdylib for this platform", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        detail: String,
    },
    /// A symbol of the ABI is missing.
    #[error("{}: no `{symbol}`, so it is no bottle driver (build it with bottle-driver-sdk's export_driver!)", path.display())]
    Symbol {
        /// The file.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// Built for another ABI major.
    #[error("{}: built for driver ABI {found}, but this bottle speaks {ABI_MAJOR}.x; rebuild it against bottle-driver-sdk {}", path.display(), bottle_driver_sdk::ABI_VERSION)]
    Abi {
        /// The file.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// The driver answered with an error.
    #[error("driver `{name}`: {message}")]
    Failed {
        /// The driver.
        name: String,
        /// Its message.
        message: String,
    },
    /// The driver panicked.
    #[error("driver `{name}` panicked ({message}); this is a bug in the driver")]
    Panicked {
        /// The driver.
        name: String,
        /// The panic's message.
        message: String,
    },
}

/// Where drivers may come from and what the user pinned.
#[derive(Debug, Clone, Default)]
pub struct LoadPolicy {
    /// Dirs drivers may be loaded from (canonical).
    pub dirs: Vec<PathBuf>,
    /// Driver name → `sha256:HEX`.
    pub pins: BTreeMap<String, String>,
    /// The pins file, for messages.
    pub pins_file: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    #[serde(default)]
    drivers: BTreeMap<String, String>,
}

impl LoadPolicy {
    /// The install dir (the `bottle` binary's), the `extra` dirs, and the pins in
    /// `config_dir`'s [`PINS_FILE`] (none when it does not exist).
    pub fn new(
        install_dir: Option<&Path>,
        extra: &[PathBuf],
        config_dir: Option<&Path>,
    ) -> Result<LoadPolicy, NativeError> {
        let dirs = install_dir
            .into_iter()
            .map(Path::to_path_buf)
            .chain(extra.iter().cloned())
            .filter_map(|d| d.canonicalize().ok())
            .collect();
        let pins_file = config_dir
            .map(|c| c.join(PINS_FILE))
            .unwrap_or_else(|| PathBuf::from(PINS_FILE));
        let pins = match std::fs::read_to_string(&pins_file) {
            Ok(text) => {
                let parsed: PinsFile =
                    serde_yaml::from_str(&text).map_err(|e| NativeError::Pins {
                        file: pins_file.clone(),
                        message: e.to_string(),
                    })?;
                for (name, pin) in &parsed.drivers {
                    let hex = pin.strip_prefix("sha256:").unwrap_or_default();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(NativeError::Pins {
                            file: pins_file.clone(),
                            message: format!(
                                "drivers.{name}: `{pin}` is no `sha256:` and 64 hex digits"
                            ),
                        });
                    }
                }
                parsed.drivers
            }
            Err(_) => BTreeMap::new(),
        };
        Ok(LoadPolicy {
            dirs,
            pins,
            pins_file,
        })
    }
}

/// A loaded native driver.
pub struct NativeDriver {
    name: String,
    path: PathBuf,
    abi: String,
    call: CallFn,
    free: FreeFn,
    // Never unloaded: see the module doc.
    _lib: ManuallyDrop<libloading::Library>,
    // Never closed either: the loader knows the library by its `/proc/self/fd/N` name and may
    // keep it listed even after a failed load, so a later driver must never get the same N (it
    // would be handed this library).
    _memfd: ManuallyDrop<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for NativeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeDriver")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("abi", &self.abi)
            .finish()
    }
}

/// The driver name of `path`: `libbottle_driver_NAME.so` → `NAME`.
pub fn driver_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let name = file.strip_prefix(FILE_PREFIX)?.strip_suffix(".so")?;
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    ok.then(|| name.to_owned())
}

/// `bytes` in a sealed in-memory file, to load from.
fn in_memory(name: &str, bytes: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        format!("bottle-driver-{name}"),
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, bytes)?;
    let fd = std::os::fd::OwnedFd::from(f);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// `sha256:HEX` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl NativeDriver {
    /// Load the driver at `path` under `policy` (see the module doc for the checks).
    pub fn load(path: &Path, policy: &LoadPolicy) -> Result<NativeDriver, NativeError> {
        let load_error = |detail: String| NativeError::Load {
            path: path.to_owned(),
            detail,
        };
        let real = path.canonicalize().map_err(|e| load_error(e.to_string()))?;
        if !real
            .parent()
            .is_some_and(|p| policy.dirs.iter().any(|d| d == p))
        {
            return Err(NativeError::NotAllowed {
                path: path.to_owned(),
                dirs: policy
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let name = driver_name(&real)
            .ok_or_else(|| load_error(format!("driver files are named `{FILE_PREFIX}NAME.so`")))?;
        // Read once: the bytes hashed are the bytes loaded (from a memfd, below), so the file
        // cannot be swapped between the check and the load.
        let bytes = std::fs::read(&real).map_err(|e| load_error(e.to_string()))?;
        let hash = sha256(&bytes);
        match policy.pins.get(&name) {
            None => {
                return Err(NativeError::Unpinned {
                    path: path.to_owned(),
                    name,
                    hash,
                    pins: policy.pins_file.clone(),
                });
            }
            Some(pinned) if !pinned.eq_ignore_ascii_case(&hash) => {
                return Err(NativeError::Mismatch {
                    path: path.to_owned(),
                    name,
                    hash,
                    pinned: pinned.clone(),
                    pins: policy.pins_file.clone(),
                });
            }
            Some(_) => {}
        }
        // Never closed, even when the load fails below: see `NativeDriver::_memfd`.
        let memfd =
            ManuallyDrop::new(in_memory(&name, &bytes).map_err(|e| load_error(e.to_string()))?);
        // SAFETY: a native driver is trusted code once pinned; this runs its constructors.
        let lib =
            unsafe { libloading::Library::new(format!("/proc/self/fd/{}", memfd.as_raw_fd())) }
                .map_err(|e| load_error(e.to_string()))?;
        let symbol = |name: &'static str| NativeError::Symbol {
            path: path.to_owned(),
            symbol: name,
        };
        // The ABI version first, before any other symbol is touched.
        // SAFETY: the symbol's type is the ABI's.
        let abi_fn: AbiFn =
            *unsafe { lib.get::<AbiFn>(SYM_ABI.as_bytes()) }.map_err(|_| symbol(SYM_ABI))?;
        // SAFETY: the ABI: a static NUL-terminated string (or null).
        let raw = unsafe { abi_fn() };
        let abi = if raw.is_null() {
            String::new()
        } else {
            // SAFETY: as above.
            unsafe { std::ffi::CStr::from_ptr(raw) }
                .to_string_lossy()
                .chars()
                .take(64)
                .collect()
        };
        let compatible = semver::Version::parse(&abi).is_ok_and(|v| v.major == ABI_MAJOR);
        if !compatible {
            return Err(NativeError::Abi {
                path: path.to_owned(),
                found: if abi.is_empty() { "(none)".into() } else { abi },
            });
        }
        // SAFETY: the symbols' types are the ABI's.
        let call: CallFn =
            *unsafe { lib.get::<CallFn>(SYM_CALL.as_bytes()) }.map_err(|_| symbol(SYM_CALL))?;
        // SAFETY: as above.
        let free: FreeFn =
            *unsafe { lib.get::<FreeFn>(SYM_FREE.as_bytes()) }.map_err(|_| symbol(SYM_FREE))?;
        Ok(NativeDriver {
            name,
            path: real,
            abi,
            call,
            free,
            _lib: ManuallyDrop::new(lib),
            _memfd: memfd,
        })
    }

    /// Its name (the backend it drives).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ABI version it was built for.
    pub fn abi(&self) -> &str {
        &self.abi
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ask the driver `request`.
    pub fn call(&self, request: &Request) -> Result<serde_json::Value, NativeError> {
        let failed = |message: String| NativeError::Failed {
            name: self.name.clone(),
            message,
        };
        let req = serde_json::to_vec(request).map_err(|e| failed(e.to_string()))?;
        let (mut out, mut out_len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: the ABI: `req` is readable for its length, `out`/`out_len` are writable.
        let status = unsafe { (self.call)(req.as_ptr(), req.len(), &mut out, &mut out_len) };
        if out.is_null() {
            return Err(failed(format!("no response (status {status})")));
        }
        // SAFETY: the ABI: the driver handed out `out_len` bytes at `out`, ours until freed.
        let bytes = unsafe { std::slice::from_raw_parts(out, out_len) }.to_vec();
        // SAFETY: freed once, with what the driver handed out.
        unsafe { (self.free)(out, out_len) };
        let response: Response = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("an answer that is not the ABI's ({e})")))?;
        match (status, response) {
            (STATUS_OK, Response::Ok(v)) => Ok(v),
            (STATUS_PANIC, Response::Error(message)) => Err(NativeError::Panicked {
                name: self.name.clone(),
                message,
            }),
            (_, Response::Error(message)) => Err(failed(message)),
            (s, Response::Ok(_)) => Err(failed(format!("status {s} with a result"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_come_from_the_file_name() {
        assert_eq!(
            driver_name(Path::new("/x/libbottle_driver_smolmachines.so")).as_deref(),
            Some("smolmachines")
        );
        for bad in [
            "/x/libfoo.so",
            "/x/libbottle_driver_.so",
            "/x/libbottle_driver_A.so",
            "/x/libbottle_driver_x.dylib",
        ] {
            assert_eq!(driver_name(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn bad_pins_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(PINS_FILE), "drivers: {x: md5:abc}\n").unwrap();
        let e = LoadPolicy::new(None, &[], Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("drivers.yaml") && e.contains("drivers.x"), "{e}");
        std::fs::write(d.path().join(PINS_FILE), "driver: {}\n").unwrap();
        let e = LoadPolicy::new(None, &[], Some(d.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
