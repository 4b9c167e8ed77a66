//! The packet drop tracer (`labctl trace`): its event, its configuration
//! and the offsets it needs, shared by the kernel and user sides.

use crate::offsets::NetnsOffsets;

/// Offsets of everything the tracer reads from kernel structs, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbOffsets {
    /// The skb's device and namespace (with the ways to a device-less
    /// packet's namespace).
    pub netns: NetnsOffsets,
    pub skb_head: u32,
    pub skb_len: u32,
    pub skb_protocol: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// `sk_buff.tail`: the end of the linear data, an offset from `head`
    /// on 64-bit kernels (NET_SKBUFF_DATA_USES_OFFSET).
    pub skb_tail: u32,
    pub dev_ifindex: u32,
    /// `sk_buff.mark`: a policy datapath's verdict (`crate::verdict`).
    pub skb_mark: u32,
}

impl SkbOffsets {
    pub const ZERO: Self = Self {
        netns: NetnsOffsets::ZERO,
        skb_head: 0,
        skb_len: 0,
        skb_protocol: 0,
        skb_network_header: 0,
        skb_transport_header: 0,
        skb_tail: 0,
        dev_ifindex: 0,
        skb_mark: 0,
    };
}

/// The most packet bytes an event can carry (`--snaplen`).
pub const MAX_SNAPLEN: u32 = 2048;

/// The sizes an event's packet copy is reserved in: the smallest that holds
/// the snaplen is used, so a short snaplen keeps ring buffer records small.
pub const SNAPLEN_TIERS: [u32; 5] = [128, 256, 512, 1024, MAX_SNAPLEN];

/// Number of reason codes the in-kernel reason filter covers (bitmap size).
pub const REASON_BITS: usize = 512;

/// Filter flags in [`TraceConfig::flags`].
pub mod flags {
    /// Only reasons whose bit is set in `reasons` pass.
    pub const REASON_INCLUDE: u32 = 1 << 0;
    /// `host` is set (an IPv4-mapped or IPv6 address).
    pub const HOST: u32 = 1 << 1;
    /// Use the classic tracepoint record (offsets `tp_*`), not tp_btf args.
    pub const CLASSIC_TRACEPOINT: u32 = 1 << 2;
    /// Count only (summary mode): no events through the ring buffer.
    pub const SUMMARY_ONLY: u32 = 1 << 3;
    /// Record each drop's kernel stack in the `STACKS` map (`--stack`).
    pub const STACK: u32 = 1 << 4;
    /// Only namespaces whose inode is a key of the `NETNS_SET` map pass
    /// (a node's scope: its own namespace and its pods').
    pub const NETNS_SET: u32 = 1 << 5;
}

/// Capacity of the tracer's `NETNS_SET` map (namespaces in a scope).
pub const NETNS_SET_CAPACITY: u32 = 1024;

/// The tracer's `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    pub off: SkbOffsets,
    /// Offsets in the classic `skb:kfree_skb` record (fallback path).
    pub tp_skbaddr: u32,
    pub tp_location: u32,
    pub tp_reason: u32,
    /// `SKB_CONSUMED` on this kernel: never reported.
    pub reason_consumed: u32,
    pub flags: u32,
    /// 0: any netns.
    pub netns_ino: u32,
    /// 0: any interface.
    pub ifindex: u32,
    /// 0: any port; else either port must match (host byte order).
    pub port: u16,
    /// 0: any; else the IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub l4proto: u8,
    /// The reason filter of policy drops (a packet whose mark is a policy
    /// verdict: `crate::verdict`), which are named by their mark, not by
    /// the kernel's reason: [`policy_reasons::DENIED`] and
    /// [`policy_reasons::DENY`] bits, allowed ones with REASON_INCLUDE,
    /// excluded ones otherwise.
    pub policy_reasons: u8,
    /// With `flags::HOST`: either address must equal it (IPv4 as ::ffff:a.b.c.d).
    pub host: [u8; 16],
    /// 0: no packet bytes; else each event carries up to this many bytes
    /// of the packet from its network header (`--pcap`, `--snaplen`).
    pub snaplen: u32,
    /// The reader is woken each time this many bytes (a power of two) have
    /// been written to the ring buffer ([`wakeup_bytes`] of its size; 0:
    /// only the reader's poll timeout).
    pub wakeup_bytes: u32,
    /// Keeps `reasons` 8-aligned with no padding before it.
    pub _pad2: u32,
    /// One bit per reason code: with REASON_INCLUDE the allowed ones,
    /// otherwise the excluded ones.
    pub reasons: [u64; REASON_BITS / 64],
}

/// The most unread data the ring buffer's reader is left with before it is
/// woken (it also polls on a timeout).
pub const WAKEUP_BYTES_MAX: u32 = 64 * 1024;

/// How often the reader of a ring buffer of `ring_bytes` (a power of two)
/// is woken: every 64 KiB written, or every quarter of a smaller ring, so
/// that a small ring (`--ring-size 16K`) is read before it fills.
pub const fn wakeup_bytes(ring_bytes: u32) -> u32 {
    let quarter = ring_bytes / 4;
    if quarter < WAKEUP_BYTES_MAX {
        quarter
    } else {
        WAKEUP_BYTES_MAX
    }
}

impl TraceConfig {
    pub const ZERO: Self = Self {
        off: SkbOffsets::ZERO,
        tp_skbaddr: 0,
        tp_location: 0,
        tp_reason: 0,
        reason_consumed: 0,
        flags: 0,
        netns_ino: 0,
        ifindex: 0,
        port: 0,
        l4proto: 0,
        policy_reasons: 0,
        host: [0; 16],
        snaplen: 0,
        wakeup_bytes: 0,
        _pad2: 0,
        reasons: [0; REASON_BITS / 64],
    };

    /// Whether `reason` passes the reason filter.
    #[inline(always)]
    pub fn reason_allowed(&self, reason: u32) -> bool {
        let r = reason as usize;
        let bit = if r < REASON_BITS {
            (self.reasons[r / 64] >> (r % 64)) & 1 == 1
        } else {
            false
        };
        if self.flags & flags::REASON_INCLUDE != 0 {
            bit
        } else {
            !bit
        }
    }

    /// Whether a policy drop (`deny`: a deny rule's) passes the reason
    /// filter.
    #[inline(always)]
    pub fn policy_allowed(&self, deny: bool) -> bool {
        let bit = if deny {
            policy_reasons::DENY
        } else {
            policy_reasons::DENIED
        };
        let set = self.policy_reasons & bit != 0;
        if self.flags & flags::REASON_INCLUDE != 0 {
            set
        } else {
            !set
        }
    }

    pub fn set_reason_bit(&mut self, reason: u32) {
        let r = reason as usize;
        if r < REASON_BITS {
            self.reasons[r / 64] |= 1 << (r % 64);
        }
    }
}

/// Bits of [`TraceConfig::policy_reasons`].
pub mod policy_reasons {
    /// `POLICY_DENIED`: nothing allowed it (default deny).
    pub const DENIED: u8 = 1 << 0;
    /// `POLICY_DENY`: a deny rule matched.
    pub const DENY: u8 = 1 << 1;
}

/// Bits of [`DropEvent::pkt`].
pub mod pkt {
    /// `sport`/`dport` are valid.
    pub const PORTS: u8 = 1 << 0;
    /// The packet is a fragment (IPv4 MF or offset, an IPv6 fragment header).
    pub const FRAGMENT: u8 = 1 << 1;
    /// A fragment other than the first: it carries no L4 header (no ports,
    /// no flags, no ICMP type); `l4proto` is still the datagram's.
    pub const LATER_FRAGMENT: u8 = 1 << 2;
}

/// The most IPv6 extension headers the tracer walks to reach the L4
/// header (hop-by-hop, routing, fragment, destination options, AH).
pub const IPV6_EXT_HEADERS: usize = 6;

/// Address family of an event, in [`DropEvent::family`].
pub mod family {
    pub const NONE: u8 = 0;
    pub const IPV4: u8 = 4;
    pub const IPV6: u8 = 6;
}

/// One drop, as sent through the ring buffer. Userspace decodes it with
/// bytemuck, whose derive proves at compile time there is no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct DropEvent {
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Kernel text address where the skb was freed.
    pub location: u64,
    pub netns_ino: u32,
    pub ifindex: u32,
    pub reason: u32,
    /// skb->len.
    pub len: u32,
    /// skb->protocol in host byte order (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP).
    pub ethertype: u16,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number; 0 when not IP.
    pub l4proto: u8,
    pub family: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// [`pkt`] bits: ports valid, a fragment, a later fragment.
    pub pkt: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Id of the kernel stack in the `STACKS` map; negative when not
    /// collected (no `--stack`) or when collecting failed.
    pub stack_id: i32,
    /// Packet bytes following the event in its ring buffer record, copied
    /// from the network header (0 without a snaplen).
    pub caplen: u32,
    /// skb->mark when it was dropped: a policy datapath's verdict when
    /// `crate::verdict::decode` says so.
    pub mark: u32,
}

impl DropEvent {
    pub const ZERO: Self = Self {
        ts_ns: 0,
        location: 0,
        netns_ino: 0,
        ifindex: 0,
        reason: 0,
        len: 0,
        ethertype: 0,
        sport: 0,
        dport: 0,
        l4proto: 0,
        family: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        pkt: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        stack_id: -1,
        caplen: 0,
        mark: 0,
    };
}

/// Key of the tracer's `COUNTS` per-CPU hash: where and why the kernel
/// freed a packet. One map (one lookup per drop) serves both the by-reason
/// and the by-location summaries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropSite {
    /// Kernel text address where the skb was freed.
    pub location: u64,
    pub reason: u32,
    /// The packet's mark when it is a policy verdict (`crate::verdict`),
    /// else 0: a policy drop is counted apart from the kernel's reason.
    pub policy: u32,
}

/// Capacity of the `COUNTS` map: (reason, location) pairs seen.
pub const COUNTS_CAPACITY: u32 = 8192;

/// Index of the lost-event counter in the `LOST` per-CPU array.
pub const LOST_INDEX: u32 = 0;

// SAFETY: `#[repr(C)]`, `Copy`, fields laid out without padding (checked by
// the size assertions in the tests below).
// SAFETY: `SkbOffsets` is #[repr(C)], made of u32s only (its own and its
// `NetnsOffsets`'), with no padding: any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SkbOffsets {}
// SAFETY: `TraceConfig` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TraceConfig {}
// SAFETY: `DropEvent` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropEvent {}
// SAFETY: `DropSite` is #[repr(C)], made of integers only, with no padding
// (8 + 4 + 4 bytes): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropSite {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<SkbOffsets>(), (9 + 8) * 4);
        assert_eq!(
            size_of::<TraceConfig>(),
            68 + 7 * 4 + 2 + 1 + 1 + 16 + 4 + 4 + 4 + 64
        );
        assert_eq!(
            size_of::<DropEvent>(),
            8 + 8 + 4 * 4 + 2 * 3 + 6 + 32 + 4 + 8
        );
    }

    #[test]
    fn the_reader_is_woken_within_a_quarter_of_its_ring() {
        assert_eq!(wakeup_bytes(4096), 1024);
        assert_eq!(wakeup_bytes(64 * 1024), 16 * 1024);
        assert_eq!(wakeup_bytes(256 * 1024), WAKEUP_BYTES_MAX);
        assert_eq!(wakeup_bytes(1 << 28), WAKEUP_BYTES_MAX);
        assert!(wakeup_bytes(8192).is_power_of_two());
    }

    #[test]
    fn policy_reasons_filter_apart_from_the_kernel_reasons() {
        let mut c = TraceConfig::ZERO;
        assert!(c.policy_allowed(false) && c.policy_allowed(true));
        c.policy_reasons = policy_reasons::DENY;
        assert!(c.policy_allowed(false) && !c.policy_allowed(true));
        c.flags |= flags::REASON_INCLUDE;
        assert!(!c.policy_allowed(false) && c.policy_allowed(true));
        c.policy_reasons = 0;
        assert!(!c.policy_allowed(false) && !c.policy_allowed(true));
    }

    #[test]
    fn reason_filter_include_and_exclude() {
        let mut c = TraceConfig::ZERO;
        assert!(c.reason_allowed(3));
        c.set_reason_bit(3);
        assert!(!c.reason_allowed(3));
        assert!(c.reason_allowed(4));
        c.flags |= flags::REASON_INCLUDE;
        assert!(c.reason_allowed(3));
        assert!(!c.reason_allowed(4));
        assert!(!c.reason_allowed(100_000));
    }
}
