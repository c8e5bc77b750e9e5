//! A driver with the right ABI version and no `bottle_driver_call`: the loader must refuse it
//! naming the symbol.

/// The ABI this driver claims.
#[unsafe(no_mangle)]
pub extern "C" fn bottle_driver_abi() -> *const std::ffi::c_char {
    c"1.1.0".as_ptr()
}
