//! The WebAssembly plugin host: the only part of bottle that links wasmtime.
//!
//! [`PluginHost`] owns the process's one engine and the compiled-code cache. [`PluginHost::load`]
//! turns bytes into a [`LoadedPlugin`]: it compiles (or loads from cache), checks the imports
//! against the contract, picks the bindings for the component's API version, and
//! trial-instantiates it so a mismatch shows up before any work starts. Each hook call then runs
//! in a fresh store with a fuel budget, an epoch deadline and a memory cap.

mod builtin;
mod cache;
mod discover;
mod inspect;
pub mod since_v0_1_0;
mod store;

pub use builtin::builtins;
pub use cache::{Cache, CacheStatus, content_hash};
pub use discover::{DiscoverError, Override, PluginSet, discover};
pub use inspect::ALLOWED_IMPORTS;
pub use store::Limits;

use crate::model::{self, PluginInfo, PluginKind};
use semver::Version;
use since_v0_1_0 as v0_1;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use store::CallState;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Trap};

/// Where a plugin's bytes came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Embedded in the `bottle` binary, by file name.
    Builtin(&'static str),
    /// A file, usually from `--plugin-dir`.
    File(PathBuf),
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::Builtin(name) => write!(f, "built-in {name}"),
            PluginSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a plugin could not be loaded. Each message names the plugin and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{source_path}: cannot read plugin: {error}")]
    Read {
        /// The file.
        source_path: PluginSource,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The bytes are not a WebAssembly component.
    #[error(
        "{plugin}: not a WebAssembly component ({detail}); build plugins with `cargo build --target wasm32-wasip2`"
    )]
    NotComponent {
        /// The plugin.
        plugin: PluginSource,
        /// What the parser said.
        detail: String,
    },
    /// The component could not be compiled.
    #[error("{plugin}: cannot compile component: {detail}")]
    Compile {
        /// The plugin.
        plugin: PluginSource,
        /// The compiler's message.
        detail: String,
    },
    /// The component imports something plugins may not use.
    #[error(
        "{plugin}: imports `{import}`, which plugins may not use (allowed: {allowed}); plugins must be pure: no files, sockets or HTTP"
    )]
    ForbiddenImport {
        /// The plugin.
        plugin: PluginSource,
        /// The offending import.
        import: String,
        /// The allowed prefixes.
        allowed: String,
    },
    /// The component exports no bottle plugin interface.
    #[error(
        "{plugin}: exports no `bottle:plugin/sidecar` or `bottle:plugin/backend` interface; is it built with bottle-plugin-sdk?"
    )]
    NotAPlugin {
        /// The plugin.
        plugin: PluginSource,
    },
    /// The component was built for an API version this host does not speak.
    #[error(
        "{plugin}: built for plugin API {found}, but this bottle supports {supported}; rebuild the plugin against a matching bottle-plugin-sdk"
    )]
    IncompatibleApi {
        /// The plugin.
        plugin: PluginSource,
        /// The version it exports.
        found: String,
        /// The supported range.
        supported: String,
    },
    /// Import or export types do not match the contract.
    #[error("{plugin}: does not match plugin API {api}: {detail}")]
    Mismatch {
        /// The plugin.
        plugin: PluginSource,
        /// The API version it claims.
        api: Version,
        /// wasmtime's message.
        detail: String,
    },
    /// The trial call of `info` failed.
    #[error(transparent)]
    Trial(#[from] CallError),
}

/// What went wrong inside a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapKind {
    /// The guest panicked; the message is its stderr.
    Panic,
    /// The guest used up its fuel.
    OutOfFuel,
    /// The guest ran past its epoch deadline.
    Timeout,
    /// The guest hit its memory cap.
    OutOfMemory,
    /// Any other trap.
    Other(String),
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrapKind::Panic => f.write_str("panicked"),
            TrapKind::OutOfFuel => {
                f.write_str("used up its CPU budget (fuel); it may loop forever")
            }
            TrapKind::Timeout => f.write_str("ran past its time limit; it may loop forever"),
            TrapKind::OutOfMemory => f.write_str("hit its memory limit"),
            TrapKind::Other(t) => write!(f, "trapped: {t}"),
        }
    }
}

/// A failed hook call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guest trapped; its stderr (panic message) is attached.
    #[error("plugin `{plugin}` {kind} in `{hook}`{}", stderr_suffix(.stderr))]
    Trap {
        /// Plugin name (or source before `info` answered).
        plugin: String,
        /// The hook.
        hook: &'static str,
        /// What kind of trap.
        kind: TrapKind,
        /// What the guest wrote to stderr.
        stderr: String,
    },
    /// The plugin returned an error value.
    #[error("plugin `{plugin}` refused in `{hook}`: {error}")]
    Plugin {
        /// Plugin name.
        plugin: String,
        /// The hook.
        hook: &'static str,
        /// Its error.
        error: model::PluginError,
    },
    /// The plugin returned a value that breaks the contract.
    #[error("plugin `{plugin}` broke the contract in `{hook}`: {detail}")]
    Contract {
        /// Plugin name.
        plugin: String,
        /// The hook.
        hook: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The hook was called on a plugin of the other kind.
    #[error("plugin `{plugin}` is a {kind} plugin and has no `{hook}` hook")]
    WrongKind {
        /// Plugin name.
        plugin: String,
        /// Its kind.
        kind: PluginKind,
        /// The hook.
        hook: &'static str,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Bindings of one loaded component, by API version and world.
enum Bindings {
    SidecarV0_1(v0_1::sidecar::SidecarPluginPre<CallState>),
    BackendV0_1(v0_1::backend::BackendPluginPre<CallState>),
}

/// A plugin ready to call. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPlugin {
    inner: Arc<Inner>,
}

struct Inner {
    info: PluginInfo,
    api: Version,
    source: PluginSource,
    hash: String,
    cache: CacheStatus,
    bindings: Bindings,
    engine: Engine,
    limits: Limits,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("info", &self.inner.info)
            .field("api", &self.inner.api)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// The API version it was built for.
    pub fn api_version(&self) -> &Version {
        &self.inner.api
    }

    /// Where it came from.
    pub fn source(&self) -> &PluginSource {
        &self.inner.source
    }

    /// SHA-256 of its bytes, hex.
    pub fn content_hash(&self) -> &str {
        &self.inner.hash
    }

    /// Whether its compiled code came from the cache.
    pub fn cache_status(&self) -> CacheStatus {
        self.inner.cache
    }

    /// Phase 1 of a sidecar.
    pub fn prepare(
        &self,
        bottle: &model::Bottle,
        settings: &str,
    ) -> Result<model::Plan, CallError> {
        const HOOK: &str = "prepare";
        let Bindings::SidecarV0_1(pre) = &self.inner.bindings else {
            return Err(self.wrong_kind(HOOK));
        };
        let input = v0_1::bottle(bottle, settings);
        let out = self.call(HOOK, |store| {
            pre.instantiate(&mut *store)?
                .bottle_plugin_sidecar()
                .call_prepare(&mut *store, &input)
        })?;
        out.map(Into::into)
            .map_err(|e| self.refused(HOOK, e.into()))
    }

    /// Phase 2 of a sidecar.
    pub fn render(
        &self,
        ctx: &model::RenderContext,
        settings: &str,
    ) -> Result<model::Fragment, CallError> {
        const HOOK: &str = "render";
        let Bindings::SidecarV0_1(pre) = &self.inner.bindings else {
            return Err(self.wrong_kind(HOOK));
        };
        let input = v0_1::render_context(ctx, settings);
        let out = self.call(HOOK, |store| {
            pre.instantiate(&mut *store)?
                .bottle_plugin_sidecar()
                .call_render(&mut *store, &input)
        })?;
        let fragment = out.map_err(|e| self.refused(HOOK, e.into()))?;
        v0_1::fragment(fragment).map_err(|detail| CallError::Contract {
            plugin: self.name().to_owned(),
            hook: HOOK,
            detail,
        })
    }

    /// A backend's render.
    pub fn render_backend(
        &self,
        stack: &model::Stack,
        settings: &str,
    ) -> Result<model::Deployment, CallError> {
        const HOOK: &str = "render";
        let Bindings::BackendV0_1(pre) = &self.inner.bindings else {
            return Err(self.wrong_kind(HOOK));
        };
        let input = v0_1::stack(stack, settings);
        let out = self.call(HOOK, |store| {
            pre.instantiate(&mut *store)?
                .bottle_plugin_backend()
                .call_render(&mut *store, &input)
        })?;
        out.map(v0_1::deployment)
            .map_err(|e| self.refused(HOOK, e.into()))
    }

    fn call<T>(
        &self,
        hook: &'static str,
        f: impl FnOnce(&mut wasmtime::Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        store::call(&self.inner.engine, &self.inner.limits, self.name(), hook, f)
    }

    fn refused(&self, hook: &'static str, error: model::PluginError) -> CallError {
        CallError::Plugin {
            plugin: self.name().to_owned(),
            hook,
            error,
        }
    }

    fn wrong_kind(&self, hook: &'static str) -> CallError {
        CallError::WrongKind {
            plugin: self.name().to_owned(),
            kind: self.inner.info.kind,
            hook,
        }
    }
}

/// The process's plugin host: one engine, one cache, one linker per API version and world.
pub struct PluginHost {
    engine: Engine,
    cache: Cache,
    limits: Limits,
    sidecar_v0_1: OnceLock<Linker<CallState>>,
    backend_v0_1: OnceLock<Linker<CallState>>,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache", &self.cache)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The one engine of this process, with its epoch ticker.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).expect("the static engine config is valid");
        store::start_epoch_ticker(&engine);
        engine
    })
}

impl PluginHost {
    /// A host using `cache` for compiled code and `limits` for every call.
    pub fn new(cache: Cache, limits: Limits) -> Self {
        PluginHost {
            engine: engine().clone(),
            cache,
            limits,
            sidecar_v0_1: OnceLock::new(),
            backend_v0_1: OnceLock::new(),
        }
    }

    /// The host every command uses: compiled code cached in `env`'s cache dir (none without
    /// one), default limits.
    pub fn for_env(env: &crate::hostenv::HostEnv) -> Self {
        let cache = env
            .cache_dir()
            .map_or_else(Cache::disabled, |d| Cache::at(&d));
        PluginHost::new(cache, Limits::default())
    }

    /// The compiled-code cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Load a plugin: compile or fetch from cache, check imports and API version, trial-instantiate.
    pub fn load(
        &self,
        source: PluginSource,
        bytes: &[u8],
        hash: Option<&str>,
    ) -> Result<LoadedPlugin, LoadError> {
        if !inspect::looks_like_component(bytes) {
            return Err(LoadError::NotComponent {
                plugin: source,
                detail: inspect::describe_non_component(bytes),
            });
        }
        let hash = hash.map_or_else(|| cache::content_hash(bytes), str::to_owned);
        let (component, cache_status) = self
            .cache
            .load_or_compile(&self.engine, bytes, &hash)
            .map_err(|e| LoadError::Compile {
                plugin: source.clone(),
                detail: format!("{e:#}"),
            })?;
        let role = inspect::check(&self.engine, &component, &source)?;
        let bindings = self.bind(&component, &role, &source)?;
        let trial_name = source.to_string();
        let info = match &bindings {
            Bindings::SidecarV0_1(pre) => {
                store::call(&self.engine, &self.limits, &trial_name, "info", |s| {
                    pre.instantiate(&mut *s)?
                        .bottle_plugin_sidecar()
                        .call_info(&mut *s)
                })?
            }
            Bindings::BackendV0_1(pre) => {
                store::call(&self.engine, &self.limits, &trial_name, "info", |s| {
                    pre.instantiate(&mut *s)?
                        .bottle_plugin_backend()
                        .call_info(&mut *s)
                })?
            }
        };
        let info: PluginInfo = info.into();
        if info.kind != role.kind {
            return Err(LoadError::Mismatch {
                plugin: source,
                api: role.api,
                detail: format!(
                    "exports the {} interface but `info` says kind {}",
                    role.kind, info.kind
                ),
            });
        }
        if !inspect::valid_name(&info.name) {
            return Err(LoadError::Mismatch {
                plugin: source,
                api: role.api,
                detail: format!(
                    "`info` gives the name {:?}; names are lower-case letters, digits and `-`, starting with a letter",
                    info.name
                ),
            });
        }
        Ok(LoadedPlugin {
            inner: Arc::new(Inner {
                info,
                api: role.api,
                source,
                hash,
                cache: cache_status,
                bindings,
                engine: self.engine.clone(),
                limits: self.limits.clone(),
            }),
        })
    }

    fn bind(
        &self,
        component: &Component,
        role: &inspect::Role,
        source: &PluginSource,
    ) -> Result<Bindings, LoadError> {
        let mismatch = |e: wasmtime::Error| LoadError::Mismatch {
            plugin: source.clone(),
            api: role.api.clone(),
            detail: format!("{e:#}"),
        };
        // Only one API line exists so far; `inspect::check` already refused the others.
        match role.kind {
            PluginKind::Sidecar => {
                let linker = self.linker(&self.sidecar_v0_1, |l| {
                    v0_1::sidecar::SidecarPlugin::add_to_linker::<CallState, HasSelf<CallState>>(
                        l,
                        |s| s,
                    )
                });
                let pre = linker.instantiate_pre(component).map_err(mismatch)?;
                Ok(Bindings::SidecarV0_1(
                    v0_1::sidecar::SidecarPluginPre::new(pre).map_err(mismatch)?,
                ))
            }
            PluginKind::Backend => {
                let linker = self.linker(&self.backend_v0_1, |l| {
                    v0_1::backend::BackendPlugin::add_to_linker::<CallState, HasSelf<CallState>>(
                        l,
                        |s| s,
                    )
                });
                let pre = linker.instantiate_pre(component).map_err(mismatch)?;
                Ok(Bindings::BackendV0_1(
                    v0_1::backend::BackendPluginPre::new(pre).map_err(mismatch)?,
                ))
            }
        }
    }

    /// The linker of one world, built once: the world's bottle imports, then WASI (whose context
    /// is empty per call).
    fn linker<'a>(
        &self,
        cell: &'a OnceLock<Linker<CallState>>,
        add_world: impl FnOnce(&mut Linker<CallState>) -> wasmtime::Result<()>,
    ) -> &'a Linker<CallState> {
        cell.get_or_init(|| {
            let mut l = Linker::new(&self.engine);
            add_world(&mut l).expect("the contract's imports link");
            wasmtime_wasi::p2::add_to_linker_sync(&mut l).expect("WASI links");
            l
        })
    }
}

/// Sort a wasmtime error from a call into a [`CallError`].
fn classify(plugin: &str, hook: &'static str, err: &wasmtime::Error, stderr: String) -> CallError {
    let kind = match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => TrapKind::OutOfFuel,
        Some(Trap::Interrupt) => TrapKind::Timeout,
        _ if stderr.contains("memory allocation of") || stderr.contains("out of memory") => {
            TrapKind::OutOfMemory
        }
        Some(Trap::UnreachableCodeReached) if stderr.contains("panicked") => TrapKind::Panic,
        Some(t) => TrapKind::Other(t.to_string()),
        None => TrapKind::Other(format!("{err:#}")),
    };
    CallError::Trap {
        plugin: plugin.to_owned(),
        hook,
        kind,
        stderr,
    }
}
