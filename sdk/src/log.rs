//! Logging from a plugin.
//!
//! In wasm the lines go to the host, which tags them with the plugin's name and passes them to
//! its `tracing` subscriber. Natively (plugin unit tests) they are kept in a thread-local so tests
//! can assert on them with [`take`].

use crate::types::Level;

/// Send one line to the host's log.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::sidecar_bindings::bottle::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::LINES.with(|lines| lines.borrow_mut().push((level, message.to_owned())));
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Natively: the lines logged on this thread so far, oldest first (the buffer is emptied).
#[cfg(not(target_arch = "wasm32"))]
pub fn take() -> Vec<(Level, String)> {
    native::LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut()))
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::Level;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }
}
