//! A driver built for ABI 0.9 (every symbol there): the loader must refuse it on the version
//! alone, before touching anything else.

use bottle_driver_sdk::{Driver, Request};

/// The ABI this driver claims.
#[unsafe(no_mangle)]
pub extern "C" fn bottle_driver_abi() -> *const std::ffi::c_char {
    c"0.9.0".as_ptr()
}

struct Old;

impl Driver for Old {
    fn new() -> Self {
        Old
    }
    fn call(&self, _: Request) -> Result<serde_json::Value, String> {
        Ok(serde_json::Value::Null)
    }
}

/// Present, never to be called.
///
/// # Safety
/// The ABI's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bottle_driver_call(
    req: *const u8,
    len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: passed on.
    unsafe {
        bottle_driver_sdk::__call(
            || Old.call(bottle_driver_sdk::__request(req, len)?),
            out,
            out_len,
        )
    }
}

/// Present.
///
/// # Safety
/// The ABI's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bottle_driver_free(ptr: *mut u8, len: usize) {
    // SAFETY: passed on.
    unsafe { bottle_driver_sdk::__free(ptr, len) }
}
