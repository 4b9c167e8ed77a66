//! The kernel's monotonic clock, which bpf_ktime_get_ns() also reads: what
//! our programs' timestamps are compared with.

use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in nanoseconds (0 if the clock cannot be read).
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
