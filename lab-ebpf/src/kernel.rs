//! Reading kernel structures without CO-RE.
//!
//! Rust eBPF has no CO-RE relocations, so every offset used here is computed
//! by labctl in userspace from the running kernel's BTF and passed in through
//! a global (see `lab_common`). A zero pointer or a failed read yields `None`.

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
use lab_common::{
    NetnsOffsets,
    offsets::{AF_INET, AF_INET6, SKB_DST_PTRMASK},
};

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

/// The inode number of the skb's network namespace, or 0 when unknown:
/// its device's, or for a local packet without one [`devless_netns_ino`].
#[inline(always)]
pub fn skb_netns_ino(skb: u64, off: &NetnsOffsets) -> u32 {
    let Some(dev) = read::<u64>(skb, off.skb_dev) else {
        return 0;
    };
    if dev == 0 {
        return devless_netns_ino(skb, off);
    }
    let Some(net) = read::<u64>(dev, off.dev_nd_net) else {
        return 0;
    };
    read::<u32>(net, off.net_ns_inum).unwrap_or(0)
}

/// The namespace of a local packet that has no device (yet): one dropped
/// before the stack gave it one (an OUTPUT-hook drop, an egress policy on
/// the sender, a local routing failure). Its socket's namespace
/// (`skb->sk->__sk_common.skc_net`: every kind of socket starts with a
/// `sock_common`) when that is an IPv4 or IPv6 socket, else its route's
/// device's (`skb_dst(skb)->dev->nd_net`) when it has no socket. 0 when it
/// has neither, when its socket is not an IP one (an AF_UNIX, netlink or
/// vsock buffer is not a network packet), or when it was received
/// (`skb_iif` set: a packet in a socket's queue, whose device the stack let
/// go, as TCP does for every segment it takes in). Read through
/// bpf_probe_read_kernel: `sk` and the dst pointer share unions with other
/// fields, so they are not loaded directly; this runs only for device-less
/// drops, off the common path.
#[inline(always)]
pub fn devless_netns_ino(skb: u64, off: &NetnsOffsets) -> u32 {
    if read::<u32>(skb, off.skb_iif) != Some(0) {
        return 0;
    }
    let net = match read::<u64>(skb, off.skb_sk) {
        Some(sk) if sk != 0 => match read::<u16>(sk, off.sk_family) {
            Some(AF_INET | AF_INET6) => read::<u64>(sk, off.sk_net),
            _ => None,
        },
        _ => {
            let dst = read::<u64>(skb, off.skb_refdst).unwrap_or(0) & SKB_DST_PTRMASK;
            read::<u64>(dst, off.dst_dev).and_then(|dev| read::<u64>(dev, off.dev_nd_net))
        }
    };
    net.and_then(|net| read::<u32>(net, off.net_ns_inum))
        .unwrap_or(0)
}

/// bpf_ktime_get_ns(): CLOCK_MONOTONIC in nanoseconds.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and touches no memory.
    unsafe { bpf_ktime_get_ns() }
}

/// Writes `*src` to `dst` eight bytes at a time. A plain struct copy is
/// lowered on BPF to a call of compiler_builtins' `memmove`, which copies
/// byte by byte: for a drop event (88 bytes) 88 iterations of 8
/// instructions per drop, seen in a storm's profile as a fifth of the
/// tracer's own cost. Volatile stores cannot be merged back into that call.
///
/// # Safety
/// `dst` must be valid for a write of a `T` and 8-byte aligned (a ring
/// buffer record, a map value).
#[inline(always)]
pub unsafe fn copy_words<T: Copy>(dst: *mut T, src: &T) {
    const {
        assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8);
    }
    let d = dst.cast::<u64>();
    let s = core::ptr::from_ref(src).cast::<u64>();
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: i < size_of::<T>() / 8 words of two aligned Ts.
        unsafe { d.add(i).write_volatile(s.add(i).read()) };
        i += 1;
    }
}
