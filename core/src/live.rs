//! A running bottle changed by a human: what its agent asked supervise for, the answers, and
//! the accesses granted, applied while the agent runs.
//!
//! - [`requests`]: the agents' requests and the human's decisions (`bottle approvals`).
//! - [`granted`]: the accesses approved, laid over a manifest, kept per run and `--persist`ed.
//! - [`apply`]: an approval re-planned, written and reloaded in the running bottle, or refused.
//! - [`dashboard`]: the terminal UI over all of them.

pub mod apply;
pub mod dashboard;
pub mod granted;
pub mod requests;
