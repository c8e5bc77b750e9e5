//! A driver that misbehaves where the ABI cannot stop it, to show the loader does:
//!
//! - its load constructor writes `/tmp/bottle-test-driver-rogue-<pid>`, so a test can tell
//!   whether bottle ran any of its code (it must not before the pin check);
//! - `bottle_driver_call` claims an answer of a terabyte, which bottle must refuse to read.

/// Marks this process as having loaded the driver.
extern "C" fn loaded() {
    let _ = std::fs::write(
        format!("/tmp/bottle-test-driver-rogue-{}", std::process::id()),
        b"loaded\n",
    );
}

/// Run at load time, like any shared library's constructor.
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = loaded;

/// The ABI this driver claims.
#[unsafe(no_mangle)]
pub extern "C" fn bottle_driver_abi() -> *const std::ffi::c_char {
    c"1.1.0".as_ptr()
}

static ANSWER: [u8; 2] = *b"{}";

/// Hands out a real pointer with a length far beyond it.
///
/// # Safety
/// `out` and `out_len` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bottle_driver_call(
    _req: *const u8,
    _len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        *out = ANSWER.as_ptr().cast_mut();
        *out_len = 1 << 40;
    }
    0
}

/// Nothing to free: the answer is static.
#[unsafe(no_mangle)]
pub extern "C" fn bottle_driver_free(_ptr: *mut u8, _len: usize) {}
