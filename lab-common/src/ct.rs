//! The eBPF connection tracker's table (`labctl conntrack track`): an LRU
//! hash keyed by the IPv4 5-tuple of the first packet seen, as Cilium's CT
//! maps are.

/// A flow as its first packet showed it (the tracker's table key).
pub type CtKey = crate::flow::FlowKey;

/// Entries of the table (`CT`) and of its counters (`CT_COUNTERS`).
pub const CAPACITY: u32 = 65536;

/// Direction index in [`CtValue`] counters.
pub const ORIG: usize = 0;
pub const REPLY: usize = 1;

/// TCP states, numbered as netfilter's (linux/netfilter/nf_conntrack_tcp.h).
pub mod tcp_state {
    pub const NONE: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const CLOSE_WAIT: u8 = 5;
    pub const LAST_ACK: u8 = 6;
    pub const TIME_WAIT: u8 = 7;
    pub const CLOSE: u8 = 8;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct CtValue {
    /// bpf_ktime_get_ns() of the first and the last packet.
    pub first_ns: u64,
    pub last_ns: u64,
    /// A `tcp_state` value; NONE for UDP and ICMP.
    pub state: u8,
    /// Direction (ORIG/REPLY) of the first FIN.
    pub fin_dir: u8,
    /// Bit 0: a reply was seen.
    pub seen_reply: u8,
    pub _pad: [u8; 5],
}

/// Per-direction counters of a flow, in a per-CPU map beside the table:
/// the BPF target has no atomic read-modify-write in Rust's core, and
/// per-CPU slots need none; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct CtCounters {
    pub packets: [u64; 2],
    /// skb->len summed per direction (frame sizes including the Ethernet
    /// header on Ethernet devices, IP packet sizes on L3 devices).
    pub bytes: [u64; 2],
}

/// Global settings of the tracker program, written before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtConfig {
    /// 1: the interface carries Ethernet frames (skip 14 bytes); 0: raw IP.
    pub ethernet: u32,
}

// SAFETY: `CtValue` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtValue {}
// SAFETY: `CtConfig` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtConfig {}
// SAFETY: `CtCounters` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtCounters {}
