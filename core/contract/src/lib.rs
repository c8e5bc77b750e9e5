//! What bottle's parts agree on, with no engine and no I/O.
//!
//! The host (`bottle`), the SDK's compose helpers (`bottle-plugin-compose`, built into wasm
//! plugins) and the sidecar bundle's init (`bottle-init`, a static binary) each used to define
//! these for themselves. Here they are defined once:
//!
//! - [`model`]: the host's types for everything that crosses the plugin boundary, and the
//!   [`model::BottlePlan`] a launch runs;
//! - [`layout`]: the state dir's files and modes, and the in-container paths bottle owns;
//! - [`compose`]: the subset of the Compose spec bottle writes and reads back, one schema both
//!   ways (unknown fields are refused when read);
//! - [`daemons`]: the daemon list the bundle's init runs;
//! - [`egress`]: egress's `routes.yaml` and the request rules a route carries;
//! - [`hop`]: the token that authenticates the agent's hop to the bundle's daemons;
//! - [`gate`]: git-gate's `gate.yaml`, which the plugin renders and the daemon reads;
//! - [`go`]: the go-ahead the host gives the agent's waiting command, with its env;
//! - [`handoff`]: the agent's listeners, handed to the bundle's daemons (an agent on no network);
//! - [`supervise`]: supervise's queue files (the agent's requests, the human's decisions);
//! - [`terminal`]: text the agent or the bundle wrote, made safe to print;
//! - [`logline`]: the daemons' numbered, ASCII-only log lines the audit ledger reads;
//! - [`labels`]: the label keys on everything bottle creates;
//! - [`names`]: validated env names, relative paths and host names, and the secret-prefix rule.

pub mod compose;
pub mod daemons;
pub mod egress;
pub mod gate;
pub mod go;
pub mod handoff;
pub mod hop;
pub mod labels;
pub mod layout;
pub mod logline;
pub mod model;
pub mod names;
pub mod ports;
pub mod supervise;
pub mod terminal;
