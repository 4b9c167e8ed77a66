//! Reading kernel structures without CO-RE.
//!
//! Rust eBPF has no CO-RE relocations, so every offset used here is computed
//! by labctl in userspace from the running kernel's BTF and passed in through
//! a global (see `lab_common`). A zero pointer or a failed read yields `None`.

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
use lab_common::NetnsOffsets;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-safe
    // path; a bad address yields an error, never a crash.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// The inode number of the netns of the skb's device, or 0 when unknown.
#[inline(always)]
pub fn skb_netns_ino(skb: u64, off: &NetnsOffsets) -> u32 {
    let Some(dev) = read::<u64>(skb, off.skb_dev) else {
        return 0;
    };
    let Some(net) = read::<u64>(dev, off.dev_nd_net) else {
        return 0;
    };
    read::<u32>(net, off.net_ns_inum).unwrap_or(0)
}

/// bpf_ktime_get_ns(): CLOCK_MONOTONIC in nanoseconds.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and touches no memory.
    unsafe { bpf_ktime_get_ns() }
}
