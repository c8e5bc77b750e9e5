//! bottle: run an AI coding agent in a box it cannot talk its way out of.
//!
//! The crate is laid out by job, in the order a run goes through them:
//!
//! - [`hostenv`]: the host environment, read once at the CLI edge and passed in.
//! - [`manifest`]: agent manifests, YAML to a validated [`manifest::Manifest`];
//!   [`consent`]: a manifest you did not write runs only once you confirm it.
//! - [`plugin`]: the WebAssembly plugin host (the only module that touches wasmtime).
//! - [`planner`]: every plugin run for one bottle; [`policy`] checks what each asks for
//!   against the grants, [`merge`] merges their fragments into one stack.
//! - [`prepare`]: plans a run and writes its state dir ([`state`]); `--dry-run` stops here.
//! - [`runner`]: runs a prepared bottle: keys ([`keys`]), Docker ([`docker`]), attach,
//!   teardown; [`confine`] is what the host imposes on the agent, [`verify`] the escape suite.
//! - [`approvals`]: what agents asked supervise for and the human's answers; [`live`] applies
//!   an approval to the running bottle (re-plan, write, reload, confirm), [`approved`] keeps
//!   the approved accesses; [`dashboard`] is the terminal UI over them.
//! - [`model`]: the host's types and the plan, from [`bottle_contract`] (shared with the SDK's
//!   compose helpers and the bundle's init).

pub mod approvals;
pub mod approved;
pub mod audit;
pub mod config;
pub mod confine;
pub mod consent;
pub mod dashboard;
pub mod docker;
pub mod driver;
pub mod hostenv;
pub mod keys;
pub mod live;
pub mod manifest;
pub mod merge;
pub use bottle_contract::model;
pub mod phases;
pub mod planner;
pub mod plugin;
pub mod policy;
pub mod prepare;
pub mod runner;
pub mod state;
pub mod verify;
pub mod workdir;
