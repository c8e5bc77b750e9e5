//! A driver built for ABI 0.9 that has nothing but the version symbol: the loader must refuse
//! it for the version, which proves the version is read before any other symbol is looked up.

/// The ABI this driver claims.
#[unsafe(no_mangle)]
pub extern "C" fn bottle_driver_abi() -> *const std::ffi::c_char {
    c"0.9.0".as_ptr()
}
