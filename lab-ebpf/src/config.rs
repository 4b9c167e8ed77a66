//! Reading a program's configuration global.
//!
//! Each program has a `#[no_mangle] static` that userspace rewrites before
//! loading (`EbpfLoader::override_global`). The compiler must not fold the
//! initial value into the code, and a large struct must not be copied onto
//! the 512-byte BPF stack: reading the reference itself volatilely gives an
//! opaque pointer, so every field is loaded from the map at run time.

/// The global `value`, as rewritten by the loader.
#[inline(always)]
pub fn read<T>(value: &'static T) -> &'static T {
    // SAFETY: `&value` points to a valid, aligned reference on our stack;
    // a volatile read of it yields that same reference.
    unsafe { core::ptr::read_volatile(&value) }
}
