//! Native drivers, loaded with `libloading` through `bottle-driver-sdk`'s C ABI.
//!
//! A driver runs inside bottle with the user's rights, so loading one is guarded in this
//! order, and nothing of the file runs before the last check but its loader constructors:
//!
//! 1. it must lie in bottle's install dir (beside the `bottle` binary) or a dir the user named
//!    (`--driver-dir`, `BOTTLE_DRIVER_PATH`);
//! 2. it must be trusted ([`Trust`]): either it was installed with bottle (in the install dir,
//!    owned by whoever owns the `bottle` binary, and neither it nor the dir writable by group
//!    or others: whoever could swap it could swap `bottle` itself), or its sha256 is pinned in
//!    the user's config (`<config dir>/drivers.yaml`, `drivers: {NAME: sha256:HEX}`), where
//!    NAME is the file's name without `libbottle_driver_`/`.so`;
//! 3. the bytes that were hashed are loaded (from a sealed memfd, so the file cannot be swapped
//!    in between), and its ABI version (semver) is read before any other symbol and must have
//!    major [`ABI_MAJOR`] and at least minor [`ABI_MINOR`];
//! 4. every symbol of the ABI must be there.
//!
//! A call that panics inside the driver comes back as [`NativeError::Panicked`]; the library is
//! never unloaded (its code may still be referenced by threads it started).

use bottle_driver_sdk::{
    ABI_MAJOR, ABI_MINOR, AbiFn, CallFn, ExecPlan, FreeFn, Info, Listed, Probe, Request, Response,
    STATUS_OK, STATUS_PANIC, SYM_ABI, SYM_CALL, SYM_FREE,
};
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file name prefix of native drivers.
pub const FILE_PREFIX: &str = "libbottle_driver_";
/// Where the pins live, under the user's config dir.
pub const PINS_FILE: &str = "drivers.yaml";

/// The largest driver file bottle reads.
pub const MAX_DRIVER_BYTES: u64 = 256 << 20;
/// The largest answer bottle takes from a driver.
pub use bottle_driver_sdk::MAX_ANSWER_BYTES;
/// The longest ABI version string bottle reads.
const MAX_ABI_LEN: usize = 64;

/// Why a native driver was not loaded or a call failed; each one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// No such file.
    #[error("{}: no such driver file; check the path", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("{}: cannot read it: {detail}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A `--driver-dir` that is not there.
    #[error("--driver-dir {}: {detail}; name an existing dir", dir.display())]
    DriverDir {
        /// The dir.
        dir: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Not named like a driver.
    #[error("{}: driver files are named `{FILE_PREFIX}NAME.so` (NAME: lowercase letters, digits, `_`, `-`); rename it", path.display())]
    BadName {
        /// The file.
        path: PathBuf,
    },
    /// Outside the dirs drivers may come from.
    #[error(
        "{} (-> {}): native drivers load only from bottle's install dir or a --driver-dir ({}); move it there or name its dir",
        path.display(), real.display(), dirs
    )]
    NotAllowed {
        /// The file as named.
        path: PathBuf,
        /// Where it really is (links followed).
        real: PathBuf,
        /// The allowed dirs.
        dirs: String,
    },
    /// Not pinned in the user's config (and not installed with bottle).
    #[error(
        "{}: driver `{name}` is not pinned{}; if you trust that file, add `{name}: {hash}` under `drivers:` in {}",
        path.display(),
        not_installed.as_ref().map_or_else(String::new, |why| format!(" (it lies in bottle's install dir, but {why})")),
        pins.as_ref().map_or_else(|| "<config dir>/drivers.yaml (set HOME or XDG_CONFIG_HOME: there is no config dir now)".to_owned(), |p| p.display().to_string())
    )]
    Unpinned {
        /// The file.
        path: PathBuf,
        /// The driver's name.
        name: String,
        /// Its sha256.
        hash: String,
        /// The pins file, when there is a config dir.
        pins: Option<PathBuf>,
        /// Why a file in the install dir is not trusted as installed with bottle.
        not_installed: Option<Box<str>>,
    },
    /// Pinned to another file.
    #[error(
        "{}: driver `{name}` has sha256 {hash}, but {} pins {pinned}; the file changed since you pinned it: pin it again only if you trust the new one",
        path.display(), pins.as_ref().map_or_else(String::new, |p| p.display().to_string())
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
        pins: Option<PathBuf>,
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
    #[error("{}: built for driver ABI {found}, but this bottle speaks {ABI_MAJOR}.{ABI_MINOR} or a later {ABI_MAJOR}.x; rebuild it against bottle-driver-sdk {}", path.display(), bottle_driver_sdk::ABI_VERSION)]
    Abi {
        /// The file.
        path: PathBuf,
        /// What it says.
        found: String,
    },
    /// The driver answered with an error (its message first: it says what happened).
    #[error("{message} (driver `{name}`)")]
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

/// Bottle's install dir: the dir of the running `bottle`, and who owns that binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallDir {
    /// The dir (canonical).
    pub dir: PathBuf,
    /// The uid owning the `bottle` binary.
    pub owner: u32,
}

/// Why a loaded driver was trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Installed with bottle: in its install dir, owned by `bottle`'s owner, writable by no one
    /// else.
    Installed {
        /// The owner's uid.
        owner: u32,
    },
    /// Its sha256 is pinned in the user's pins file.
    Pinned {
        /// The pins file.
        file: PathBuf,
    },
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Installed { owner } => write!(
                f,
                "installed with bottle (in its install dir, owned by uid {owner} like the bottle binary, writable by no one else)"
            ),
            Trust::Pinned { file } => write!(f, "its sha256 is pinned in {}", file.display()),
        }
    }
}

/// Where drivers may come from and what the user pinned.
#[derive(Debug, Clone, Default)]
pub struct LoadPolicy {
    /// Bottle's install dir, whose own drivers need no pin.
    pub install: Option<InstallDir>,
    /// Dirs drivers may be loaded from (canonical), the install dir first.
    pub dirs: Vec<PathBuf>,
    /// Driver name → `sha256:HEX`.
    pub pins: BTreeMap<String, String>,
    /// The pins file, for messages; none without a config dir (and then nothing is pinned).
    pub pins_file: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    #[serde(default)]
    drivers: BTreeMap<String, String>,
}

impl LoadPolicy {
    /// The dirs drivers may load from, for messages (`none` when there are none).
    pub fn dirs_text(&self) -> String {
        if self.dirs.is_empty() {
            return "none".into();
        }
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The install dir (the `bottle` binary's), the `extra` dirs (each must exist), and the
    /// pins in `config_dir`'s [`PINS_FILE`] (none when it does not exist, or when there is no
    /// config dir: a pins file is never looked for relative to the cwd).
    pub fn new(
        install: Option<InstallDir>,
        extra: &[PathBuf],
        config_dir: Option<&Path>,
    ) -> Result<LoadPolicy, NativeError> {
        let install = install.and_then(|i| {
            Some(InstallDir {
                dir: i.dir.canonicalize().ok()?,
                owner: i.owner,
            })
        });
        let mut dirs: Vec<PathBuf> = install.iter().map(|i| i.dir.clone()).collect();
        for d in extra {
            let real = d.canonicalize().map_err(|e| NativeError::DriverDir {
                dir: d.clone(),
                detail: e.to_string(),
            })?;
            if !real.is_dir() {
                return Err(NativeError::DriverDir {
                    dir: d.clone(),
                    detail: "not a dir".into(),
                });
            }
            dirs.push(real);
        }
        let pins_file = config_dir.map(|c| c.join(PINS_FILE));
        let pins = match &pins_file {
            None => BTreeMap::new(),
            Some(file) => read_pins(file)?,
        };
        Ok(LoadPolicy {
            install,
            dirs,
            pins,
            pins_file,
        })
    }
}

/// The pins in `file`; none when it does not exist.
fn read_pins(file: &Path) -> Result<BTreeMap<String, String>, NativeError> {
    let pins_error = |message: String| NativeError::Pins {
        file: file.to_owned(),
        message,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(pins_error(format!("cannot read it ({e})"))),
    };
    let parsed: PinsFile = serde_yaml::from_str(&text).map_err(|e| pins_error(e.to_string()))?;
    for (name, pin) in &parsed.drivers {
        let hex = pin.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(pins_error(format!(
                "drivers.{name}: `{pin}` is no `sha256:` and 64 hex digits"
            )));
        }
    }
    Ok(parsed.drivers)
}

/// The bytes of the regular file at `real` and its metadata, both read through one handle that
/// never follows a link, never blocks on a fifo and stops at [`MAX_DRIVER_BYTES`].
fn read_driver_file(path: &Path, real: &Path) -> Result<(Vec<u8>, std::fs::Metadata), NativeError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => NativeError::NotFound {
            path: path.to_owned(),
        },
        _ => NativeError::Io {
            path: path.to_owned(),
            detail: e.to_string(),
        },
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(real)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(NativeError::Io {
            path: path.to_owned(),
            detail: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_DRIVER_BYTES {
        return Err(NativeError::Io {
            path: path.to_owned(),
            detail: format!("larger than {} MiB", MAX_DRIVER_BYTES >> 20),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_DRIVER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_DRIVER_BYTES {
        return Err(NativeError::Io {
            path: path.to_owned(),
            detail: format!("larger than {} MiB", MAX_DRIVER_BYTES >> 20),
        });
    }
    Ok((bytes, meta))
}

/// Whether the driver file `real` (with `meta`, read from the handle its bytes came from) was
/// installed with bottle; `Err` says why not, for a file that lies in the install dir.
fn installed_with_bottle(
    install: &InstallDir,
    real: &Path,
    meta: &std::fs::Metadata,
) -> Result<Trust, String> {
    use std::os::unix::fs::MetadataExt as _;
    const GROUP_OR_OTHERS_WRITE: u32 = 0o022;
    if meta.uid() != install.owner {
        return Err(format!(
            "it is owned by uid {}, not by uid {} who owns the bottle binary",
            meta.uid(),
            install.owner
        ));
    }
    if meta.mode() & GROUP_OR_OTHERS_WRITE != 0 {
        return Err(format!(
            "group or others may write it (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    let dir = real.parent().unwrap_or(Path::new("/"));
    let dir_meta = std::fs::metadata(dir).map_err(|e| format!("its dir cannot be read ({e})"))?;
    if dir_meta.uid() != install.owner && dir_meta.uid() != 0 {
        return Err(format!(
            "its dir is owned by uid {}, neither root nor the bottle binary's owner",
            dir_meta.uid()
        ));
    }
    if dir_meta.mode() & GROUP_OR_OTHERS_WRITE != 0 {
        return Err(format!(
            "group or others may write its dir (mode {:o})",
            dir_meta.mode() & 0o7777
        ));
    }
    Ok(Trust::Installed {
        owner: install.owner,
    })
}

/// `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`.
fn libc_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32
}

/// A loaded native driver.
pub struct NativeDriver {
    name: String,
    path: PathBuf,
    trust: Trust,
    abi: String,
    call: CallFn,
    free: FreeFn,
    // Never unloaded: see the module doc.
    _lib: ManuallyDrop<libloading::os::unix::Library>,
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
    use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};
    // Not dumpable until sealed: no other process, not even this user's, can open the file
    // through /proc/<pid>/fd meanwhile (and map it for writing before the seal).
    let was = dumpable_behavior().ok();
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    let sealed = write_and_seal(name, bytes);
    if let Some(was) = was {
        let _ = set_dumpable_behavior(was);
    }
    sealed
}

/// `bytes` in a new in-memory file, sealed (see [`in_memory`]).
fn write_and_seal(name: &str, bytes: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        format!("bottle-driver-{name}"),
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, bytes)?;
    let fd = std::os::fd::OwnedFd::from(f);
    // FUTURE_WRITE (Linux 5.1), not WRITE: sealing WRITE first waits for every extra
    // reference to the file's pages to go, and a page still in another core's LRU batch (the
    // writing thread moved) holds one, so it failed now and then with EBUSY under load.
    // FUTURE_WRITE refuses every later write and writable shared mapping alike; only a writable
    // mapping made before the seal would outlive it, and none exists: the file was written with
    // `write`, and no other process could open it (see [`in_memory`]).
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::FUTURE_WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
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

/// The text at `raw` up to its NUL, read no further than `max` bytes; none when `raw` is null,
/// has no NUL within `max` bytes or is no UTF-8.
///
/// # Safety
/// `raw` must be null or point to readable bytes up to its NUL or `max` bytes, whichever comes
/// first.
unsafe fn bounded_c_str(raw: *const std::ffi::c_char, max: usize) -> Option<String> {
    if raw.is_null() {
        return None;
    }
    let mut bytes = Vec::new();
    for i in 0..max {
        // SAFETY: the caller's contract: readable up to the NUL, which has not come yet.
        let b = unsafe { *raw.cast::<u8>().add(i) };
        if b == 0 {
            return String::from_utf8(bytes).ok();
        }
        bytes.push(b);
    }
    None
}

impl NativeDriver {
    /// Load the driver at `path` under `policy` (see the module doc for the checks).
    pub fn load(path: &Path, policy: &LoadPolicy) -> Result<NativeDriver, NativeError> {
        let load_error = |detail: String| NativeError::Load {
            path: path.to_owned(),
            detail,
        };
        let real = path.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NativeError::NotFound {
                path: path.to_owned(),
            },
            _ => NativeError::Io {
                path: path.to_owned(),
                detail: e.to_string(),
            },
        })?;
        if !real
            .parent()
            .is_some_and(|p| policy.dirs.iter().any(|d| d == p))
        {
            return Err(NativeError::NotAllowed {
                path: path.to_owned(),
                real,
                dirs: policy.dirs_text(),
            });
        }
        let name = driver_name(&real).ok_or_else(|| NativeError::BadName {
            path: path.to_owned(),
        })?;
        // Read once: the bytes hashed are the bytes loaded (from a memfd, below), so the file
        // cannot be swapped between the check and the load.
        let (bytes, meta) = read_driver_file(path, &real)?;
        let installed = policy
            .install
            .as_ref()
            .filter(|i| real.parent() == Some(i.dir.as_path()))
            .map(|i| installed_with_bottle(i, &real, &meta));
        let trust = match installed {
            Some(Ok(trust)) => trust,
            not_installed => {
                let not_installed = not_installed
                    .and_then(Result::err)
                    .map(String::into_boxed_str);
                let hash = sha256(&bytes);
                match (policy.pins.get(&name), &policy.pins_file) {
                    (Some(pinned), Some(file)) if pinned.eq_ignore_ascii_case(&hash) => {
                        Trust::Pinned { file: file.clone() }
                    }
                    (Some(pinned), _) => {
                        return Err(NativeError::Mismatch {
                            path: path.to_owned(),
                            name,
                            hash,
                            pinned: pinned.clone(),
                            pins: policy.pins_file.clone(),
                        });
                    }
                    (None, _) => {
                        return Err(NativeError::Unpinned {
                            path: path.to_owned(),
                            name,
                            hash,
                            pins: policy.pins_file.clone(),
                            not_installed,
                        });
                    }
                }
            }
        };
        // Never closed, even when the load fails below: see `NativeDriver::_memfd`.
        let memfd =
            ManuallyDrop::new(in_memory(&name, &bytes).map_err(|e| load_error(e.to_string()))?);
        // RTLD_NOW: every symbol the driver needs is bound here, so a missing one is a load
        // error now, not a crash in the middle of a run. RTLD_LOCAL: its symbols never resolve
        // another library's.
        // SAFETY: a native driver is trusted code once installed with bottle or pinned; this runs
        // its constructors.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(format!("/proc/self/fd/{}", memfd.as_raw_fd())),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }
        .map_err(|e| load_error(e.to_string()))?;
        // Never unloaded, not even when a check below refuses it: its constructors ran and may
        // have left threads or handlers behind that point into its code.
        let lib = ManuallyDrop::new(lib);
        let symbol = |name: &'static str| NativeError::Symbol {
            path: path.to_owned(),
            symbol: name,
        };
        // The ABI version first, before any other symbol is touched.
        // SAFETY: the symbol's type is the ABI's.
        let abi_fn: AbiFn =
            *unsafe { lib.get::<AbiFn>(SYM_ABI.as_bytes()) }.map_err(|_| symbol(SYM_ABI))?;
        // SAFETY: the ABI: a static NUL-terminated string (or null).
        let abi = unsafe { bounded_c_str(abi_fn(), MAX_ABI_LEN) };
        let compatible = abi.as_deref().is_some_and(compatible_abi);
        let abi = match abi {
            Some(a) if compatible => a,
            other => {
                return Err(NativeError::Abi {
                    path: path.to_owned(),
                    found: other.map_or_else(
                        || format!("(none, or longer than {MAX_ABI_LEN} bytes)"),
                        |a| format!("{a:?}"),
                    ),
                });
            }
        };
        // SAFETY: the symbols' types are the ABI's.
        let call: CallFn =
            *unsafe { lib.get::<CallFn>(SYM_CALL.as_bytes()) }.map_err(|_| symbol(SYM_CALL))?;
        // SAFETY: as above.
        let free: FreeFn =
            *unsafe { lib.get::<FreeFn>(SYM_FREE.as_bytes()) }.map_err(|_| symbol(SYM_FREE))?;
        Ok(NativeDriver {
            name,
            path: real,
            trust,
            abi,
            call,
            free,
            _lib: lib,
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

    /// Why it was trusted.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Ask `request` and read the answer as `T`.
    fn ask<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Result<T, NativeError> {
        serde_json::from_value(self.call(request)?).map_err(|e| NativeError::Failed {
            name: self.name.clone(),
            message: format!("an answer that is not the ABI's ({e})"),
        })
    }

    /// Its name and version.
    pub fn info(&self) -> Result<Info, NativeError> {
        self.ask(&Request::Info)
    }

    /// Whether this host can run its bottles.
    pub fn probe(&self) -> Result<Probe, NativeError> {
        self.ask(&Request::Probe)
    }

    /// Bring up bottle `slug`'s agent (see [`Request::Up`]).
    pub fn up(
        &self,
        slug: &str,
        state_dir: &Path,
        image_archive: Option<&Path>,
        hop_token: Option<&str>,
        bundle_address: Option<std::net::IpAddr>,
    ) -> Result<(), NativeError> {
        self.call(&Request::Up {
            slug: slug.to_owned(),
            state_dir: state_dir.display().to_string(),
            image_archive: image_archive.map(|p| p.display().to_string()),
            hop_token: hop_token.map(str::to_owned),
            bundle_address: bundle_address.map(|a| a.to_string()),
        })
        .map(drop)
    }

    /// How to run `command` in the agent attached (see [`Request::Exec`]).
    pub fn exec_plan(
        &self,
        slug: &str,
        state_dir: &Path,
        command: &[String],
        workdir: Option<&str>,
        tty: bool,
        hop_token: Option<&str>,
    ) -> Result<ExecPlan, NativeError> {
        self.ask(&Request::Exec {
            slug: slug.to_owned(),
            state_dir: state_dir.display().to_string(),
            command: command.to_vec(),
            workdir: workdir.map(str::to_owned),
            tty,
            hop_token: hop_token.map(str::to_owned),
        })
    }

    /// The agent's output so far.
    pub fn logs(&self, slug: &str, state_dir: &Path) -> Result<String, NativeError> {
        #[derive(serde::Deserialize)]
        struct Logs {
            text: String,
        }
        self.ask::<Logs>(&Request::Logs {
            slug: slug.to_owned(),
            state_dir: state_dir.display().to_string(),
        })
        .map(|l| l.text)
    }

    /// Tear bottle `slug`'s agent down; whether there was anything.
    pub fn down(&self, slug: &str, state_dir: &Path) -> Result<bool, NativeError> {
        #[derive(serde::Deserialize)]
        struct Down {
            removed: bool,
        }
        self.ask::<Down>(&Request::Down {
            slug: slug.to_owned(),
            state_dir: state_dir.display().to_string(),
        })
        .map(|d| d.removed)
    }

    /// What it runs for the bottles under `state_root`.
    pub fn list(&self, state_root: &Path) -> Result<Vec<Listed>, NativeError> {
        self.ask(&Request::List {
            state_root: state_root.display().to_string(),
        })
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
        if out_len > MAX_ANSWER_BYTES {
            // Not read: a length that large is a broken driver, not an answer. Handed back
            // untouched, as the ABI says.
            // SAFETY: freed once, with what the driver handed out.
            unsafe { (self.free)(out, out_len) };
            return Err(failed(format!(
                "an answer of {out_len} bytes, more than the {} MiB bottle takes",
                MAX_ANSWER_BYTES >> 20
            )));
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

/// Whether a driver claiming ABI `version` speaks what this host asks: the same major, and a
/// minor no older than the newest field the host sends.
fn compatible_abi(version: &str) -> bool {
    semver::Version::parse(version).is_ok_and(|v| v.major == ABI_MAJOR && v.minor >= ABI_MINOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_major_at_the_hosts_minor_or_later_is_compatible() {
        for ok in ["1.1.0", "1.1.7", "1.9.0"] {
            assert!(compatible_abi(ok), "{ok}");
        }
        // 1.0 drivers would refuse Up's hop token as an unknown field.
        for refused in ["0.9.0", "1.0.0", "1.0.9", "2.0.0", "1.1", "", "x"] {
            assert!(!compatible_abi(refused), "{refused}");
        }
    }

    #[test]
    fn the_loaded_bytes_cannot_be_changed_after_the_hash() {
        use std::os::fd::AsRawFd;
        let fd = in_memory("t", b"the bytes hashed").unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        // Another open of the same file, as any process allowed to open it would get.
        let mut other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(std::io::Write::write_all(&mut other, b"swapped").is_err());
        assert!(other.set_len(1).is_err(), "shrunk");
        assert!(other.set_len(1 << 20).is_err(), "grown");
        // SAFETY: a fresh mapping of 16 bytes at an address the kernel picks, never touched (nor
        // made: the seal refuses it).
        let writable_shared = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                16,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &other,
                0,
            )
        };
        assert!(writable_shared.is_err(), "mapped for writing");
        assert!(
            rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::empty()).is_err(),
            "the seals themselves can be changed"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"the bytes hashed");
    }

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
