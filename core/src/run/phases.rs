//! How long each phase of a run took, logged at `info` (`bottle -v run …`): where bring-up and
//! teardown spend their time, measured on the user's own machine.

use std::sync::Mutex;
use std::time::Instant;

/// The clock of one run: each [`Phases::done`] logs the phase's duration and the time since
/// the run started.
#[derive(Debug)]
pub struct Phases {
    start: Instant,
    last: Mutex<Instant>,
}

impl Phases {
    /// A clock started at `start` (the process's start, so planning counts too).
    pub fn new(start: Instant) -> Phases {
        Phases {
            start,
            last: Mutex::new(start),
        }
    }

    /// `phase` ended now.
    pub fn done(&self, phase: &str) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!(
            "phase {phase}: {} ms (at {} ms)",
            now.duration_since(*last).as_millis(),
            now.duration_since(self.start).as_millis()
        );
        *last = now;
    }
}

impl Default for Phases {
    fn default() -> Self {
        Phases::new(Instant::now())
    }
}
