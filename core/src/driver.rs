//! Drivers: what runs a planned bottle at run time, beside the WASM backend plugin that
//! rendered it.
//!
//! - [`Driver::Docker`]: Docker, driven in process through its API ([`crate::docker`]).
//! - [`Driver::Native`]: a native driver ([`native`]), a shared library speaking
//!   `bottle-driver-sdk`'s C ABI, for backends whose run-time side needs I/O the WASM sandbox
//!   never gives (a VM engine's CLI). It drives the agent; the sidecar bundle the backend
//!   rendered beside it (`bundle.compose.yaml`) runs on Docker.
//! - [`Driver::Manifests`]: no live engine; the rendered documents are completed and handed to
//!   the user with the one command that applies them ([`manifests`]; Kubernetes).
//!
//! The backend's name picks the driver: `docker` and `kubernetes` are built in, any other
//! backend needs the native driver of its name (`libbottle_driver_<backend>.so`): one installed
//! with bottle (beside the binary) loads as it is, one from a `--driver-dir` only once the user
//! pinned it ([`native::Trust`]).

pub mod manifests;
pub mod native;

use native::{InstallDir, LoadPolicy, NativeDriver, NativeError};
use std::path::PathBuf;
use std::sync::Arc;

pub use bottle_contract::layout::BUNDLE_COMPOSE_FILE;

/// The env var listing extra driver dirs (`:`-separated), for commands without `--driver-dir`.
pub const DRIVER_PATH_ENV: &str = "BOTTLE_DRIVER_PATH";

/// What runs a bottle of some backend.
#[derive(Debug, Clone)]
pub enum Driver {
    /// Docker, in process.
    Docker,
    /// A native driver for the agent, Docker for the bundle.
    Native(Arc<NativeDriver>),
    /// Documents for the user to apply.
    Manifests,
}

/// Why no driver runs a backend.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No driver file for the backend in any allowed dir.
    #[error(
        "the {backend} backend needs its native driver `{file}`, found in none of: {dirs}; install it beside bottle, or name its dir with --driver-dir and pin it (`bottle drivers check PATH` shows the line to add)"
    )]
    Missing {
        /// The backend.
        backend: String,
        /// The driver's file name.
        file: String,
        /// Where bottle looked.
        dirs: String,
    },
    /// The driver was refused.
    #[error(transparent)]
    Native(#[from] NativeError),
    /// The driver drives another backend.
    #[error("{path}: it says it drives `{said}`, not the {backend} backend; check the file")]
    WrongBackend {
        /// The file.
        path: String,
        /// The backend asked for.
        backend: String,
        /// What the driver said.
        said: String,
    },
}

/// The file name of backend `name`'s native driver.
pub fn driver_file(backend: &str) -> String {
    format!("{}{}.so", native::FILE_PREFIX, backend.replace('-', "_"))
}

impl Driver {
    /// The driver for `backend` under `policy`.
    pub fn for_backend(backend: &str, policy: &LoadPolicy) -> Result<Driver, DriverError> {
        match backend {
            "docker" => return Ok(Driver::Docker),
            "kubernetes" => return Ok(Driver::Manifests),
            _ => {}
        }
        let file = driver_file(backend);
        let Some(path) = policy
            .dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.exists())
        else {
            return Err(DriverError::Missing {
                backend: backend.to_owned(),
                file,
                dirs: policy.dirs_text(),
            });
        };
        let driver = NativeDriver::load(&path, policy)?;
        let info = driver.info()?;
        if info.name != backend {
            return Err(DriverError::WrongBackend {
                path: path.display().to_string(),
                backend: backend.to_owned(),
                said: info.name,
            });
        }
        Ok(Driver::Native(Arc::new(driver)))
    }
}

/// What loading one driver file found.
#[derive(Debug)]
pub struct Surveyed {
    /// The file.
    pub path: PathBuf,
    /// The loaded driver (with why it was trusted), or why it was refused.
    pub loaded: Result<Arc<NativeDriver>, NativeError>,
}

/// Every driver file in `policy`'s dirs (the first of each name), loaded as `bottle run` would
/// load it; an untrusted one is refused before any of its code runs.
pub fn survey(policy: &LoadPolicy) -> Vec<Surveyed> {
    let mut found = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for dir in &policy.dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Some(name) = native::driver_name(&path) else {
                continue;
            };
            if !seen.insert(name) {
                continue;
            }
            let loaded = NativeDriver::load(&path, policy).map(Arc::new);
            found.push(Surveyed { path, loaded });
        }
    }
    found
}

/// Every trusted native driver in `policy`'s dirs, for `ps`, `stop` and `cleanup`; a pinned
/// one that fails to load is a note. Untrusted files are skipped without a word: nothing of
/// them runs, and a user who never pinned one has no bottles of it.
pub fn installed(policy: &LoadPolicy) -> (Vec<Arc<NativeDriver>>, Vec<String>) {
    let mut drivers = Vec::new();
    let mut notes = Vec::new();
    for s in survey(policy) {
        match s.loaded {
            Ok(d) => drivers.push(d),
            Err(NativeError::Unpinned { .. }) => {}
            Err(e) => notes.push(format!("note: {e}")),
        }
    }
    (drivers, notes)
}

/// The load policy of a command: bottle's install dir, `dirs`, the dirs in
/// [`DRIVER_PATH_ENV`], and the user's pins.
pub fn policy(env: &crate::hostenv::HostEnv, dirs: &[PathBuf]) -> Result<LoadPolicy, NativeError> {
    let mut all = dirs.to_vec();
    if let Some(path) = env.get(DRIVER_PATH_ENV) {
        all.extend(std::env::split_paths(path).filter(|p| !p.as_os_str().is_empty()));
    }
    LoadPolicy::new(install_dir(), &all, env.config_dir().as_deref())
}

/// The dir of the running `bottle` and the binary's owner: drivers installed with it load from
/// there.
pub fn install_dir() -> Option<InstallDir> {
    use std::os::unix::fs::MetadataExt as _;
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let owner = std::fs::metadata(&exe).ok()?.uid();
    Some(InstallDir {
        dir: exe.parent()?.to_owned(),
        owner,
    })
}
