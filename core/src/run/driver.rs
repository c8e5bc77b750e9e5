//! Drivers: what runs a planned bottle, one contract ([`Driver`]) for every backend.
//!
//! Every launch ([`crate::run::runner::launch`]) and every `bottle ps`, `logs`, `stop` and
//! `cleanup` goes through [`Driver`]; which one runs a backend is its [`Kind`]:
//!
//! - [`Kind::Docker`]: Docker, driven in process through its API ([`docker::DockerDriver`]).
//! - [`Kind::Native`]: a native driver ([`native`]), a shared library speaking
//!   `bottle-driver-sdk`'s C ABI, for backends whose run-time side needs I/O the WASM sandbox
//!   never gives (a VM engine's CLI). It drives the agent; the sidecar bundle the backend
//!   rendered beside it (`bundle.compose.yaml`) runs on Docker ([`adapter::NativeAdapter`]).
//! - [`Kind::Manifests`]: no live engine; the rendered documents are completed and handed to
//!   the user with the one command that applies them ([`manifests`]; Kubernetes).
//!
//! The backend's name picks the kind: `docker` and `kubernetes` are built in, any other
//! backend needs the native driver of its name (`libbottle_driver_<backend>.so`): one installed
//! with bottle (beside the binary) loads as it is, one from a `--driver-dir` only once the user
//! pinned it ([`native::Trust`]).

pub mod adapter;
pub mod docker;
pub mod manifests;
pub mod native;

use crate::plan::prepare::Prepared;
use crate::run::launch::{LaunchError, LaunchOptions};
use native::{InstallDir, LoadPolicy, NativeDriver, NativeError};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub use bottle_contract::layout::BUNDLE_COMPOSE_FILE;

/// A driver's answer, later: the trait's methods return these so it stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One backend's way of running bottles.
///
/// A launch goes `probe`, `up`, [`Started::attach`], `down`, and `down` runs whatever
/// happened before it (an error, a signal in any phase): it removes everything of the slug,
/// so a phase cut short leaves nothing behind. `list`, `logs` and `down` also serve `bottle
/// ps`, `logs`, `stop` and `cleanup`, which ask every driver.
pub trait Driver: Send + Sync {
    /// The driver's name (`docker`, or the native driver's backend).
    fn name(&self) -> &str;

    /// Fail when bottle `slug` already has something here (an orphan, or its names taken);
    /// `state_root` holds the state dirs.
    fn probe<'a>(
        &'a self,
        slug: &'a str,
        state_root: &'a Path,
    ) -> BoxFuture<'a, Result<(), LaunchError>>;

    /// Bring `launch`'s bottle up until its agent's command can run.
    fn up<'a>(
        &'a self,
        launch: &'a Launch<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Started<'a> + 'a>, LaunchError>>;

    /// Bottle `slug`'s logs so far, every part's lines prefixed with the part.
    fn logs<'a>(
        &'a self,
        slug: &'a str,
        state_dir: &'a Path,
    ) -> BoxFuture<'a, Result<String, LaunchError>>;

    /// Remove everything of bottle `slug` ([`Teardown`] says where its logs go first).
    fn down<'a>(
        &'a self,
        slug: &'a str,
        teardown: Teardown<'a>,
    ) -> BoxFuture<'a, Result<(), LaunchError>>;

    /// The parts of every bottle this driver runs; `state_root` holds the state dirs.
    fn list<'a>(&'a self, state_root: &'a Path) -> BoxFuture<'a, Result<Vec<Part>, LaunchError>>;
}

/// A bottle brought up by [`Driver::up`], ready for its agent's command.
pub trait Started<'a>: Send {
    /// The escape suite's report, when it ran during bring-up (`bottle verify`).
    fn report(&self) -> Option<crate::run::verify::Report>;

    /// Run the agent's command with the user's terminal attached; its exit code.
    fn attach(self: Box<Self>) -> BoxFuture<'a, Result<i64, LaunchError>>;
}

/// What a driver gets to bring one bottle up.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The planned bottle and its state dir.
    pub prepared: &'a Prepared,
    /// How to run it.
    pub options: &'a LaunchOptions,
}

/// How [`Driver::down`] tears a bottle down.
#[derive(Debug, Clone, Copy)]
pub struct Teardown<'a> {
    /// The bottle's state dir.
    pub state_dir: &'a Path,
    /// Where its logs are written before anything is removed (none: not kept).
    pub log_file: Option<&'a Path>,
    /// A signal cut the launch short: a call the engine was still finishing may land after
    /// the first sweep, so look again.
    pub after_interrupt: bool,
    /// What becomes of the agent's work (`cwd: mount`) once the agent is gone.
    pub work: Work,
}

/// The agent's work in its layer over your dir (`cwd: mount`), at teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Brought back into your dir, then the layer removed.
    BringBack,
    /// Removed unread (the escape suite's own run).
    Discard,
    /// Left for the run that owns it (a `bottle stop` of a live run: that run brings it back).
    Leave,
}

/// One part of a running bottle, as [`Driver::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The bottle's slug (a label: check it with [`crate::state::valid_slug`] before use).
    pub slug: String,
    /// The engine's name for the part (a container, a machine).
    pub name: String,
    /// What the part is: `agent`, `sidecars`, `service`, `<backend>-vm`.
    pub role: String,
    /// The engine's word for its state (`running`, `exited`, …).
    pub state: String,
    /// When it was made, in seconds since the epoch.
    pub created: i64,
    /// The agent's name, when the part says it.
    pub agent: Option<String>,
}

/// Which driver runs a backend, before it is connected ([`Kind::connect`]).
#[derive(Debug, Clone)]
pub enum Kind {
    /// Docker, in process.
    Docker,
    /// A native driver for the agent, Docker for the bundle.
    Native(Arc<NativeDriver>),
    /// Documents for the user to apply.
    Manifests,
}

impl Kind {
    /// The driver of this kind, connected to its engine.
    pub async fn connect(
        self,
        env: &crate::hostenv::HostEnv,
    ) -> Result<Box<dyn Driver>, LaunchError> {
        Ok(match self {
            Kind::Docker => Box::new(docker::DockerDriver::connect(env).await?),
            Kind::Native(agent) => Box::new(adapter::NativeAdapter::new(
                docker::DockerDriver::connect(env).await?,
                agent,
            )),
            Kind::Manifests => Box::new(manifests::Manifests),
        })
    }
}

/// Every driver `bottle ps`, `logs`, `stop` and `cleanup` ask: Docker, which also runs every
/// backend's bundle, and each trusted native driver.
pub struct Fleet {
    /// Docker.
    pub docker: docker::DockerDriver,
    /// The native drivers, each with Docker for its bundles.
    pub natives: Vec<adapter::NativeAdapter>,
}

impl Fleet {
    /// Docker and each trusted native driver in `policy`'s dirs (none without a policy); a
    /// driver that cannot be loaded is a note.
    pub async fn connect(
        env: &crate::hostenv::HostEnv,
        policy: Option<&LoadPolicy>,
    ) -> Result<(Fleet, Vec<String>), LaunchError> {
        let docker = docker::DockerDriver::connect(env).await?;
        let (agents, notes) = policy.map(installed).unwrap_or_default();
        let natives = agents
            .into_iter()
            .map(|agent| adapter::NativeAdapter::new(docker.clone(), agent))
            .collect();
        Ok((Fleet { docker, natives }, notes))
    }

    /// Every driver, Docker first.
    pub fn drivers(&self) -> impl Iterator<Item = &dyn Driver> {
        std::iter::once(&self.docker as &dyn Driver)
            .chain(self.natives.iter().map(|n| n as &dyn Driver))
    }

    /// Every part every driver lists, each with the index of its driver in
    /// [`Fleet::drivers`]; a driver that cannot list is a note.
    pub async fn parts(&self, state_root: &Path) -> (Vec<(usize, Part)>, Vec<String>) {
        let mut parts = Vec::new();
        let mut notes = Vec::new();
        for (i, d) in self.drivers().enumerate() {
            match d.list(state_root).await {
                Ok(found) => parts.extend(found.into_iter().map(|p| (i, p))),
                Err(e) => notes.push(format!("note: driver `{}`: {e}", d.name())),
            }
        }
        (parts, notes)
    }

    /// The driver that owns bottle `slug` in `parts`: the most specific one listing it (a
    /// native driver's teardown covers its bundle on Docker too), else Docker.
    pub fn owner(&self, slug: &str, parts: &[(usize, Part)]) -> &dyn Driver {
        let i = parts
            .iter()
            .filter(|(_, p)| p.slug == slug)
            .map(|(i, _)| *i)
            .max()
            .unwrap_or(0);
        self.drivers().nth(i).unwrap_or(&self.docker)
    }
}

/// The env var listing extra driver dirs (`:`-separated), for commands without `--driver-dir`.
pub const DRIVER_PATH_ENV: &str = "BOTTLE_DRIVER_PATH";

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

impl Kind {
    /// The driver for `backend` under `policy`.
    pub fn for_backend(backend: &str, policy: &LoadPolicy) -> Result<Kind, DriverError> {
        match backend {
            "docker" => return Ok(Kind::Docker),
            "kubernetes" => return Ok(Kind::Manifests),
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
        Ok(Kind::Native(Arc::new(driver)))
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
