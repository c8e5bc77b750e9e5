//! Drivers: what runs a planned bottle at run time, beside the WASM backend plugin that
//! rendered it.
//!
//! [`native`] loads native drivers (shared libraries speaking `bottle-driver-sdk`'s C ABI) for
//! backends whose run-time side needs I/O the WASM sandbox never gives. Docker is driven in
//! process ([`crate::docker`]).

pub mod native;
