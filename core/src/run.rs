//! Running a planned bottle on a backend and tearing it down.
//!
//! - [`runner`]: the launch, one sequence for every backend through the [`driver::Driver`]
//!   contract; [`driver`] holds the drivers (Docker in process, native drivers, manifests);
//!   [`launch`] is what they share (the options, the error, the hop token).
//! - [`docker`]: Docker's API, as the Docker driver uses it (bring-up, attach, teardown, the
//!   bundle's images and its watch).
//! - [`keys`]: the run's CAs; [`confine`]: what the host imposes on the agent's container;
//!   [`verify`]: the escape suite; [`phases`]: the launch's clock (`-v`).

pub mod confine;
pub mod docker;
pub mod driver;
pub mod keys;
pub mod launch;
pub mod phases;
pub mod runner;
pub mod verify;
