//! One fresh, sandboxed store per hook call.
//!
//! A store never outlives its call: no state survives between calls (purity is enforced, not
//! hoped for) and a trapped instance is never entered again.

use super::since_v0_1_0::{self as v0_1, wit};
use super::{CallError, classify};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The resource caps of one hook call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel (roughly wasm instructions) per call. A real `prepare` uses about 10 thousand.
    pub fuel: u64,
    /// Wall-clock budget per call, in epoch ticks of [`EPOCH_TICK`].
    pub epoch_ticks: u64,
    /// Linear memory cap per call, in bytes.
    pub memory_bytes: usize,
    /// How much guest stderr is kept (panic messages).
    pub stderr_bytes: usize,
}

impl Default for Limits {
    /// 200 M fuel (about 0.1 s of a tight loop), 0.5 s wall clock, 64 MiB, 64 KiB of stderr.
    fn default() -> Self {
        Limits {
            fuel: 200_000_000,
            epoch_ticks: 50,
            memory_bytes: 64 << 20,
            stderr_bytes: 64 << 10,
        }
    }
}

/// What a store holds during a call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: String,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for CallState {}

impl v0_1::HostImports for CallState {
    fn log(&mut self, level: wit::Level, message: String) {
        let plugin = self.plugin.as_str();
        match level {
            wit::Level::Trace => tracing::trace!(target: "bottle::plugin", plugin, "{message}"),
            wit::Level::Debug => tracing::debug!(target: "bottle::plugin", plugin, "{message}"),
            wit::Level::Info => tracing::info!(target: "bottle::plugin", plugin, "{message}"),
            wit::Level::Warn => tracing::warn!(target: "bottle::plugin", plugin, "{message}"),
            wit::Level::Error => tracing::error!(target: "bottle::plugin", plugin, "{message}"),
        }
    }
}

/// A clock stopped at the epoch: plugins get no time, so the same input gives the same output.
struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Run `f` in a fresh store and classify any failure.
pub(super) fn call<T>(
    engine: &Engine,
    limits: &Limits,
    plugin: &str,
    hook: &'static str,
    f: impl FnOnce(&mut Store<CallState>) -> wasmtime::Result<T>,
) -> Result<T, CallError> {
    let stderr = MemoryOutputPipe::new(limits.stderr_bytes);
    // No preopens, no env, no args, no network: the builder's defaults. Randomness and clocks
    // are pinned so that a plugin cannot smuggle non-determinism into its output.
    let wasi = WasiCtxBuilder::new()
        .stderr(stderr.clone())
        .insecure_random_seed(0)
        .insecure_random(wasmtime_wasi::Deterministic::new(vec![0x5a; 32]))
        .secure_random(wasmtime_wasi::Deterministic::new(vec![0xa5; 32]))
        .wall_clock(StoppedClock)
        .monotonic_clock(StoppedClock)
        .build();
    let state = CallState {
        wasi,
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(16)
            .tables(16)
            .memories(4)
            .build(),
        plugin: plugin.to_owned(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    let to_call_error = |e: wasmtime::Error, stderr: &MemoryOutputPipe| {
        classify(
            plugin,
            hook,
            &e,
            String::from_utf8_lossy(&stderr.contents()).into_owned(),
        )
    };
    store
        .set_fuel(limits.fuel)
        .map_err(|e| to_call_error(e, &stderr))?;
    store.set_epoch_deadline(limits.epoch_ticks);
    f(&mut store).map_err(|e| to_call_error(e, &stderr))
}

/// Advance `engine`'s epoch every [`EPOCH_TICK`] for as long as the engine lives.
pub(super) fn start_epoch_ticker(engine: &Engine) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("bottle-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
