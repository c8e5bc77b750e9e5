//! The native driver ABI: how `bottle` drives a backend whose run-time side needs I/O the WASM
//! sandbox will never give (a VM engine's CLI, a cluster's API).
//!
//! A driver is a shared library exporting three C symbols:
//!
//! - [`SYM_ABI`]: `const char *bottle_driver_abi(void)`, the ABI version it was built for, as
//!   semver text. The host calls it first, before any other symbol, and loads the driver only
//!   when its major version is [`ABI_MAJOR`].
//! - [`SYM_CALL`]: `int bottle_driver_call(const uint8_t *req, size_t len, uint8_t **out,
//!   size_t *out_len)`: one JSON [`Request`] in, one JSON [`Response`] out (the driver's
//!   memory, handed back through the third symbol). It returns [`STATUS_OK`], [`STATUS_ERROR`]
//!   or [`STATUS_PANIC`]: a panic never crosses the boundary.
//! - [`SYM_FREE`]: `void bottle_driver_free(uint8_t *ptr, size_t len)`.
//!
//! In Rust, implement [`Driver`] and call [`export_driver!`]; the macro writes the three
//! symbols. A driver runs in the host's process with the host's rights: the host loads one only
//! from its install dir or a dir the user names, and only when the user's config pins the
//! file's sha256.

use serde::{Deserialize, Serialize};

/// The ABI version this crate implements.
pub const ABI_VERSION: &str = "1.1.0";
/// The same, NUL-terminated, as [`SYM_ABI`] returns it.
pub const ABI_VERSION_C: &std::ffi::CStr = c"1.1.0";
/// The major version a host of this ABI loads.
pub const ABI_MAJOR: u64 = 1;
/// The oldest minor of [`ABI_MAJOR`] a host of this ABI loads: 1.1 added [`Request::Up`]'s
/// `hop_token` and `bundle_address`, which a 1.0 driver would refuse as unknown fields.
pub const ABI_MINOR: u64 = 1;

/// `const char *bottle_driver_abi(void)`.
pub const SYM_ABI: &str = "bottle_driver_abi";
/// `int bottle_driver_call(const uint8_t *, size_t, uint8_t **, size_t *)`.
pub const SYM_CALL: &str = "bottle_driver_call";
/// `void bottle_driver_free(uint8_t *, size_t)`.
pub const SYM_FREE: &str = "bottle_driver_free";

/// [`SYM_ABI`]'s type.
pub type AbiFn = unsafe extern "C" fn() -> *const std::ffi::c_char;
/// [`SYM_CALL`]'s type.
pub type CallFn = unsafe extern "C" fn(*const u8, usize, *mut *mut u8, *mut usize) -> i32;
/// [`SYM_FREE`]'s type.
pub type FreeFn = unsafe extern "C" fn(*mut u8, usize);

/// The largest answer bottle takes from a driver: a driver keeps what it passes on (a
/// machine's output, which the agent writes) well under it.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The call answered (the response holds the result).
pub const STATUS_OK: i32 = 0;
/// The call failed (the response holds the error).
pub const STATUS_ERROR: i32 = 1;
/// The driver panicked (the response holds the panic's message).
pub const STATUS_PANIC: i32 = 2;

/// What the host asks a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Its name and version ([`Info`]).
    Info,
    /// Whether this machine can run what the driver drives ([`Probe`]).
    Probe,
    /// Bring up the agent of the bottle whose state dir is `state_dir` (the backend plugin's
    /// documents are there; the host has started the sidecar bundle already). On failure the
    /// driver removes whatever it created before it answers.
    Up {
        /// The bottle's slug.
        slug: String,
        /// Its state dir.
        state_dir: String,
        /// The agent's image as a local archive (`docker save`) the host wrote, if the driver
        /// needs one.
        #[serde(default)]
        image_archive: Option<String>,
        /// The hop token the bundle's daemons ask of the agent (`bottle_contract::hop`): the
        /// driver puts it in place of the placeholder in the files it copies for the agent.
        #[serde(default)]
        hop_token: Option<String>,
        /// The bundle container's address, which the agent reaches it at (the driver puts it in
        /// place of `bottle_contract::names::BUNDLE_ADDRESS_PLACEHOLDER`); none without a bundle.
        #[serde(default)]
        bundle_address: Option<String>,
    },
    /// How to run a command in the bottle's agent with the user's terminal attached
    /// ([`ExecPlan`]): the host spawns it, so the terminal never passes through the driver.
    Exec {
        /// The bottle's slug.
        slug: String,
        /// Its state dir.
        state_dir: String,
        /// The command.
        command: Vec<String>,
        /// Its working dir in the agent.
        workdir: Option<String>,
        /// Whether the host's stdin is a terminal.
        tty: bool,
        /// The hop token the bundle's egress asks of the agent's proxy requests (the driver
        /// puts it into the agent's proxy URLs for this exec only, never into a file).
        #[serde(default)]
        hop_token: Option<String>,
    },
    /// The agent's own output so far, as text (`{"text": …}`).
    Logs {
        /// The bottle's slug.
        slug: String,
        /// Its state dir.
        state_dir: String,
    },
    /// Tear the agent down; everything it created is removed, its logs kept in the state dir.
    /// Answers `{"removed": bool}`: whether there was anything to remove.
    Down {
        /// The bottle's slug.
        slug: String,
        /// Its state dir.
        state_dir: String,
    },
    /// Everything this driver runs for the bottles under `state_root` ([`Listed`] each).
    List {
        /// The dir holding every bottle's state dir.
        state_root: String,
    },
}

/// A driver's answer, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// The result.
    Ok(serde_json::Value),
    /// Why not, in one line that says what to do.
    Error(String),
}

/// A driver's answer to [`Request::Info`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The backend it drives (the backend plugin's name).
    pub name: String,
    /// Its own version.
    pub version: String,
}

/// A driver's answer to [`Request::Probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Whether a bottle can run here.
    pub can_run: bool,
    /// Why (not), in one line.
    pub reason: String,
}

/// A driver's answer to [`Request::Exec`]: the program the host runs attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPlan {
    /// The program (an absolute path).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Env set for it on top of the host's.
    pub env: Vec<(String, String)>,
}

/// One thing a driver runs, in its answer to [`Request::List`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The bottle's slug.
    pub slug: String,
    /// The engine's name for it.
    pub name: String,
    /// The engine's word for its state (`running`, `created`, `stopped`, …).
    pub state: String,
    /// When it was created, in seconds since the epoch.
    pub created: i64,
}

/// A native driver.
pub trait Driver: Send + Sync + 'static {
    /// A new driver (once per load).
    fn new() -> Self
    where
        Self: Sized;
    /// Answer `request`.
    fn call(&self, request: Request) -> Result<serde_json::Value, String>;
}

/// Write the three symbols for `$ty` (a [`Driver`]).
#[macro_export]
macro_rules! export_driver {
    ($ty:ty) => {
        // With `panic = "abort"` a panic ends the host's process instead of becoming
        // STATUS_PANIC: refuse to build such a driver.
        #[cfg(panic = "abort")]
        compile_error!(
            "bottle drivers must be built with panic = \"unwind\": a panic must never cross the C ABI"
        );

        /// The ABI version this driver was built for.
        #[unsafe(no_mangle)]
        pub extern "C" fn bottle_driver_abi() -> *const ::std::ffi::c_char {
            $crate::ABI_VERSION_C.as_ptr()
        }

        /// One call: JSON in, JSON out.
        ///
        /// # Safety
        /// `req` must point to `len` readable bytes; `out` and `out_len` must be writable.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn bottle_driver_call(
            req: *const u8,
            len: usize,
            out: *mut *mut u8,
            out_len: *mut usize,
        ) -> i32 {
            static DRIVER: ::std::sync::OnceLock<$ty> = ::std::sync::OnceLock::new();
            // SAFETY: the host's contract, passed on.
            unsafe {
                $crate::__call(
                    || {
                        <$ty as $crate::Driver>::call(
                            DRIVER.get_or_init(<$ty as $crate::Driver>::new),
                            $crate::__request(req, len)?,
                        )
                    },
                    out,
                    out_len,
                )
            }
        }

        /// Free a response.
        ///
        /// # Safety
        /// `ptr` and `len` must come from one `bottle_driver_call`, freed once.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn bottle_driver_free(ptr: *mut u8, len: usize) {
            // SAFETY: the host's contract, passed on.
            unsafe { $crate::__free(ptr, len) }
        }
    };
}

/// The request behind `req`. Not part of the API (used by [`export_driver!`]).
///
/// # Safety
/// `req` must point to `len` readable bytes.
#[doc(hidden)]
pub unsafe fn __request(req: *const u8, len: usize) -> Result<Request, String> {
    if req.is_null() {
        return Err("no request".into());
    }
    // SAFETY: the caller's contract.
    let bytes = unsafe { std::slice::from_raw_parts(req, len) };
    serde_json::from_slice(bytes).map_err(|e| format!("a request this driver does not know: {e}"))
}

/// Run `answer` with panics caught and hand its response out. Not part of the API.
///
/// # Safety
/// `out` and `out_len` must be writable.
#[doc(hidden)]
pub unsafe fn __call(
    answer: impl FnOnce() -> Result<serde_json::Value, String>,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    let (status, response) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(answer)) {
        Ok(Ok(v)) => (STATUS_OK, Response::Ok(v)),
        Ok(Err(e)) => (STATUS_ERROR, Response::Error(e)),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            (STATUS_PANIC, Response::Error(why))
        }
    };
    let bytes = serde_json::to_vec(&response)
        .unwrap_or_else(|_| br#"{"error":"unserialisable response"}"#.to_vec())
        .into_boxed_slice();
    if out.is_null() || out_len.is_null() {
        return STATUS_ERROR;
    }
    let len = bytes.len();
    let ptr = Box::into_raw(bytes).cast::<u8>();
    // SAFETY: the caller's contract.
    unsafe {
        *out = ptr;
        *out_len = len;
    }
    status
}

/// Free what [`__call`] handed out. Not part of the API.
///
/// # Safety
/// `ptr` and `len` must come from one [`__call`], freed once.
#[doc(hidden)]
pub unsafe fn __free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: the caller's contract: a boxed slice of `len` bytes from `__call`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_json_tagged_by_op() {
        let r: Request =
            serde_json::from_str(r#"{"op":"up","slug":"a-1","state_dir":"/s"}"#).unwrap();
        assert_eq!(
            r,
            Request::Up {
                slug: "a-1".into(),
                state_dir: "/s".into(),
                image_archive: None,
                hop_token: None,
                bundle_address: None,
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
    }

    #[test]
    fn a_panic_becomes_a_status_and_its_message() {
        let (mut out, mut len) = (std::ptr::null_mut(), 0);
        let status = unsafe { __call(|| panic!("boom"), &mut out, &mut len) };
        assert_eq!(status, STATUS_PANIC);
        let bytes = unsafe { std::slice::from_raw_parts(out, len) }.to_vec();
        unsafe { __free(out, len) };
        let r: Response = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(r, Response::Error("boom".into()));
    }
}
