//! The licence every object declares.
//!
//! The kernel only lets GPL-compatible programs call GPL-only helpers such as
//! `bpf_probe_read_kernel`; "Dual MIT/GPL" is on its list of compatible strings.

/// Placed in each object's `license` section by the `license!` macro.
#[macro_export]
macro_rules! license {
    () => {
        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            // The verifier rejects any program with a reachable panic, so this
            // is never executed; it only satisfies `no_std`.
            loop {}
        }
    };
}
