//! bottle: run an AI coding agent in a box it cannot talk its way out of.
//!
//! The crate is laid out by what happens, in the order a run goes through it:
//!
//! - [`hostenv`]: the host environment, read once at the CLI edge and passed in; [`config`]:
//!   bottle's own settings.
//! - [`plugin`]: the WebAssembly plugin host (the only module that touches wasmtime).
//! - [`plan`]: the manifest, consent, every plugin's part checked and merged, the state dir
//!   ([`state`]) written; `--dry-run` stops there.
//! - [`run`]: the launch through one driver contract (Docker, native drivers, manifests),
//!   keys, confinement, the escape suite, teardown.
//! - [`live`]: what agents ask a human through supervise, the answers, and the accesses
//!   granted, applied to the running bottle.
//! - [`audit`]: the run's sealed ledger.
//! - [`model`]: the host's types and the plan, from [`bottle_contract`] (shared with the SDK's
//!   compose helpers and the bundle's init).

pub mod audit;
pub mod config;
pub mod hostenv;
pub mod live;
pub use bottle_contract::model;
pub mod plan;
pub mod plugin;
pub mod run;
pub mod state;
