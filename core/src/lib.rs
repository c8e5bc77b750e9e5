//! bottle: run an AI coding agent in a box it cannot talk its way out of.
//!
//! The crate is laid out by job:
//!
//! - [`plugin`]: the WebAssembly plugin host (the only module that touches wasmtime).
//! - [`model`]: the host's types for everything that crosses the plugin boundary.
//! - [`merge`]: merging sidecar fragments into one [`model::Stack`]; conflicts name both plugins.
//! - [`policy`]: the one place capabilities a plugin asks for are checked against grants.
//! - [`paths`]: where bottle keeps caches, state and config.

pub mod confine;
pub mod consent;
pub mod docker;
pub mod keys;
pub mod launch;
pub mod lifecycle;
pub mod manifest;
pub mod merge;
pub mod model;
pub mod paths;
pub mod planner;
pub mod plugin;
pub mod policy;
pub mod state;
pub mod verify;
pub mod workdir;
