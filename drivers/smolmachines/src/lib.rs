//! The smolmachines driver: runs a bottle's agent as a smolvm microVM, beside the sidecar
//! bundle the host runs in Docker.
//!
//! bottle loads it as a native driver (`libbottle_driver_smolmachines.so`, pinned by the user)
//! because driving a VM engine takes I/O the WASM plugins never get: spawning the smolvm CLI,
//! files in the state dir. The smolmachines backend plugin renders what runs (the `Smolfile`,
//! the address rewrites); this driver makes the machine from it ([`machine`]), drives the
//! engine ([`engine`]) and tells why a host cannot boot one ([`probe`]).
//!
//! Everything smolvm keeps for a bottle lives under `<state dir>/smolvm/` (`--state-dir`), so a
//! bottle's machine goes when its state dir goes, and [`Request::List`] finds machines by
//! walking the state root.

pub mod engine;
pub mod machine;
pub mod probe;

use bottle_driver_sdk::{Driver, Info, Request, export_driver};
use std::path::Path;

/// The driver.
pub struct Smolmachines;

impl Driver for Smolmachines {
    fn new() -> Self {
        Smolmachines
    }

    fn call(&self, request: Request) -> Result<serde_json::Value, String> {
        let json = |v: &dyn erased::Serialize| v.to_json();
        match request {
            Request::Info => json(&Info {
                name: "smolmachines".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            Request::Probe => json(&probe::probe(&engine::Engine::locate()?)),
            Request::Up {
                slug,
                state_dir,
                image_archive,
                hop_token,
                bundle_address,
            } => {
                let engine = engine::Engine::locate()?;
                let archive = image_archive.ok_or(
                    "no agent image archive: the host must `docker save` the agent image first",
                )?;
                machine::up(
                    &engine,
                    &slug,
                    Path::new(&state_dir),
                    Path::new(&archive),
                    hop_token.as_deref(),
                    bundle_address.as_deref(),
                )?;
                Ok(serde_json::json!({"machine": machine::name(&slug)}))
            }
            Request::Exec {
                slug,
                state_dir,
                command,
                workdir,
                tty,
                hop_token,
            } => json(&machine::exec_plan(
                &engine::Engine::locate()?,
                &slug,
                Path::new(&state_dir),
                &command,
                workdir.as_deref(),
                tty,
                hop_token.as_deref(),
            )?),
            Request::Logs { slug, state_dir } => {
                let text = machine::logs(&engine::Engine::locate()?, &slug, Path::new(&state_dir))?;
                Ok(serde_json::json!({ "text": text }))
            }
            Request::Down { slug, state_dir } => {
                let removed =
                    machine::down(&engine::Engine::locate()?, &slug, Path::new(&state_dir))?;
                Ok(serde_json::json!({ "removed": removed }))
            }
            Request::List { state_root } => json(&machine::list(
                &engine::Engine::locate()?,
                Path::new(&state_root),
            )?),
        }
    }
}

/// `serde_json::to_value` behind a trait object, so each arm above stays one expression.
mod erased {
    /// A value that serialises to JSON.
    pub trait Serialize {
        /// The value as JSON.
        fn to_json(&self) -> Result<serde_json::Value, String>;
    }

    impl<T: serde::Serialize> Serialize for T {
        fn to_json(&self) -> Result<serde_json::Value, String> {
            serde_json::to_value(self).map_err(|e| e.to_string())
        }
    }
}

export_driver!(Smolmachines);
