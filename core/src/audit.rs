//! The audit ledger: one append-only record per decision that matters, per bottle, that no one
//! can quietly edit.
//!
//! - [`chain`]: the records and their hash chain (each line names the sha256 of the line
//!   before it), checked line by line;
//! - [`key`]: the per-user Ed25519 key (`<config dir>/audit.key`, 0600) whose signature seals
//!   the chain's head, so a rewritten chain cannot be sealed again by anyone else;
//! - [`collect`]: the records of a run, from the host's own knowledge (start, stop) and from
//!   the bundle's access log (each such record says the bundle wrote it).

pub mod chain;
pub mod collect;
pub mod key;
pub mod ocsf;

pub use chain::{Record, Verified, VerifyError, Writer};

pub use bottle_contract::layout::LEDGER_FILE;
