//! Planning a bottle, before anything runs: the manifest read and confirmed, every plugin's
//! part checked and merged into one stack, the state dir written.
//!
//! - [`manifest`]: agent manifests, YAML to a validated [`manifest::Manifest`]; [`consent`]:
//!   a manifest you did not write runs only once you confirm it.
//! - [`planner`]: every plugin run for one bottle; [`policy`] checks what each asks for
//!   against the grants, [`merge`] merges their fragments into one stack.
//! - [`prepare`]: plans a run and writes its state dir; `--dry-run` stops here.
//! - [`workdir`]: the working dir the agent shares with you: which dirs may be handed over,
//!   the agent's layer over it, and how its work comes back.

pub mod consent;
pub mod manifest;
pub mod merge;
pub mod planner;
pub mod policy;
pub mod prepare;
pub mod workdir;
