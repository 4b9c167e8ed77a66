//! Network policy as Cilium enforces it (`labctl lab up starwars
//! --policy-mode ebpf`): the maps of one node, shaped like Cilium's so a
//! learner who reads `labctl policy map POD` can read `cilium bpf policy
//! get` next.
//!
//! ```text
//! POLICY_IPCACHE   (LPM trie)  IpcacheKey{family, ip4}/prefix -> RemoteEndpointInfo{identity}
//!                              every pod, node and CIDR block of the
//!                              cluster; an address nothing covers is the
//!                              world (identity 2)
//! POLICY_ENDPOINTS (hash)      host-side veth ifindex -> EndpointInfo{id,
//!                              identity, address, which directions are
//!                              default deny}
//! POLICY_MAP       (LPM trie)  PolicyKey{endpoint, identity, egress,
//!                              protocol, dport}/prefix -> PolicyEntry{deny,
//!                              packets, bytes}
//! POLICY_CT        (LRU hash)  CtKey{5-tuple, dir} -> CtEntry{verdict, counters}
//! POLICY_METRICS   (per-CPU hash) MetricsKey{endpoint, reason, dir} -> packets, bytes
//! POLICY_EVENTS    (ring buffer) one VerdictEvent per new connection and side
//! ```
//!
//! Differences from Cilium v1.16: Cilium compiles one program per endpoint
//! and gives each its own policy map (`cilium_policy_v2_<EPID>`, key 12
//! bytes after the prefix length); here one program serves every pod of a
//! node, so one map holds every endpoint's entries and its key starts with
//! the endpoint id: drop `endpoint` (and the trailing, never matched `pad`
//! that keeps the counters aligned) and it is Cilium's key, byte for byte.
//! The endpoint table is keyed by ifindex (Cilium's `cilium_lxc` by
//! address), and the connection table is our own small LRU (Cilium's
//! `cilium_ct4_global` is richer).

/// Cilium's `struct ipcache_key` after its LPM prefix length: the prefix
/// length counts bits from `cluster_id` on, so an IPv4 /N is `32 + N`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct IpcacheKey {
    pub cluster_id: u16,
    pub pad1: u8,
    /// [`FAMILY_IPV4`].
    pub family: u8,
    /// Network order.
    pub ip4: u32,
    pub pad4: u32,
    pub pad5: u32,
    pub pad6: u32,
}

/// `ENDPOINT_KEY_IPV4`.
pub const FAMILY_IPV4: u8 = 1;
/// The bits of an [`IpcacheKey`] before the address.
pub const IPCACHE_STATIC_PREFIX: u32 = 32;

impl IpcacheKey {
    pub const fn ipv4(ip4: u32) -> Self {
        Self {
            cluster_id: 0,
            pad1: 0,
            family: FAMILY_IPV4,
            ip4,
            pad4: 0,
            pad5: 0,
            pad6: 0,
        }
    }
}

/// Cilium's `struct remote_endpoint_info` in its IPv4-only form (12
/// bytes; releases whose tunnel endpoint may be IPv6 have 24, the identity
/// first in both: `lab-cli/src/policy/cilium.rs` reads either).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RemoteEndpointInfo {
    pub sec_identity: u32,
    /// The node to tunnel to (0: routed natively, as in the labs).
    pub tunnel_endpoint: u32,
    pub pad: u16,
    /// Encryption key index (unused: 0).
    pub key: u8,
    /// flag_skip_tunnel, flag_has_tunnel_ep (unused: 0).
    pub flags: u8,
}

/// One pod plugged into the node (value of `POLICY_ENDPOINTS`, keyed by
/// its host-side veth's ifindex).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct EndpointInfo {
    /// The endpoint id its policy entries are keyed by (Cilium's `lxc_id`).
    pub id: u32,
    /// Its own security identity (for the verdict events).
    pub identity: u32,
    /// Its address (network order).
    pub ip4: u32,
    /// [`EP_INGRESS_DEFAULT_DENY`], [`EP_EGRESS_DEFAULT_DENY`].
    pub flags: u32,
}

/// A policy selects the endpoint in this direction and turns default deny
/// on: what no entry allows is dropped (POLICY_DENIED). Without it only
/// deny entries drop.
pub const EP_INGRESS_DEFAULT_DENY: u32 = 1;
pub const EP_EGRESS_DEFAULT_DENY: u32 = 2;

/// Cilium's `struct policy_key` after its LPM prefix length, with the
/// endpoint in front (see the module docs). `endpoint`, `sec_label` and
/// `egress` are always matched whole; `protocol` and `dport` are wildcarded
/// by the prefix length: all of `dport` (any port), then `protocol` too
/// (any protocol), or the low bits of `dport` (a port range).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PolicyKey {
    pub endpoint: u32,
    /// The peer's identity; 0 is any peer.
    pub sec_label: u32,
    /// 1: the endpoint's egress, 0: its ingress.
    pub egress: u8,
    /// An IP protocol number; 0 (with the port wildcarded) any.
    pub protocol: u8,
    /// The destination port, network order.
    pub dport: u16,
    /// Always 0, never matched (beyond [`POLICY_FULL_PREFIX`]): it makes the
    /// key 16 bytes after the prefix length, so the kernel's trie node
    /// (a 40-byte header, the key, then the value) places
    /// [`PolicyEntry`]'s counters 8-byte aligned. With a 12-byte key they
    /// straddled cache lines in some allocations and every atomic add
    /// became a bus lock: the program cost 1.5-1.8 µs per packet instead
    /// of 0.24-0.31 µs under BPF_PROG_TEST_RUN (`cargo xtask bench policy`).
    pub pad: u32,
}

/// The prefix length of a [`PolicyKey`] with nothing wildcarded.
pub const POLICY_FULL_PREFIX: u32 = 8 * 12;
/// The bits of [`PolicyKey`] always matched (endpoint, identity, direction).
pub const POLICY_STATIC_PREFIX: u32 = 8 * 9;

/// Cilium's `struct policy_entry` (v1.16, 24 bytes): the flags byte holds
/// `deny:1, wildcard_protocol:1, wildcard_dport:1` and, in bits 3-7, the
/// prefix length of protocol and port (0-24) as Cilium 1.17 keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PolicyEntry {
    /// L7 proxy port (unused: 0).
    pub proxy_port: u16,
    pub flags: u8,
    pub auth_type: u8,
    pub pad1: u16,
    pub pad2: u16,
    /// Packets and bytes this entry decided (updated atomically).
    pub packets: u64,
    pub bytes: u64,
}

pub const ENTRY_DENY: u8 = 1;
pub const ENTRY_WILDCARD_PROTOCOL: u8 = 2;
pub const ENTRY_WILDCARD_DPORT: u8 = 4;
pub const ENTRY_PREFIX_SHIFT: u8 = 3;

impl PolicyEntry {
    pub const fn is_deny(&self) -> bool {
        self.flags & ENTRY_DENY != 0
    }

    /// The prefix length of protocol and port (0: any protocol, 8: any
    /// port of one protocol, 24: one port).
    pub const fn l4_prefix(&self) -> u8 {
        self.flags >> ENTRY_PREFIX_SHIFT
    }
}

/// The key of `POLICY_CT`: a connection as one endpoint's hook saw its
/// first packet. `dir` tells the two sides of a connection between two
/// pods of one node apart: [`CT_EGRESS`] from the source's egress,
/// [`CT_INGRESS`] from the destination's ingress (Cilium's TUPLE_F_OUT
/// and TUPLE_F_IN).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct CtKey {
    /// Network order, as in the packet (ICMP echo: both ports the id).
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: u16,
}

pub const CT_EGRESS: u8 = 0;
pub const CT_INGRESS: u8 = 1;

impl CtKey {
    pub const fn new(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8, dir: u8) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            dir,
            _pad: 0,
        }
    }
}

/// A connection one side has judged (value of `POLICY_CT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct CtEntry {
    /// Packets and bytes of the original direction (judged each time).
    pub packets: u64,
    pub bytes: u64,
    /// Replies let through because the connection was allowed.
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// The endpoint whose hook made it, and the peer's identity then.
    pub endpoint: u32,
    pub remote_identity: u32,
    /// The last verdict: [`REASON_FORWARDED`], [`REASON_POLICY_DENIED`] or
    /// [`REASON_POLICY_DENY`]. A new verdict on a known connection (the
    /// policy changed) is an event again.
    pub reason: u8,
    /// Padding, zero (fields, not an array: zeroing an array is a call to
    /// `memset` in eBPF).
    pub _pad: u8,
    pub _pad2: u16,
    pub _pad3: u32,
}

/// Cilium's drop reasons (and 0, forwarded), as `cilium monitor` and
/// Hubble number them.
pub const REASON_FORWARDED: u8 = 0;
/// Default deny: selected, and no entry allows it.
pub const REASON_POLICY_DENIED: u8 = 133;
/// A deny entry matched.
pub const REASON_POLICY_DENY: u8 = 181;

/// Cilium's `POLICY_INGRESS` / `POLICY_EGRESS` (event and metrics
/// direction).
pub const DIR_INGRESS: u8 = 1;
pub const DIR_EGRESS: u8 = 2;

/// The key of `POLICY_METRICS` (Cilium's `cilium_metrics` is per node;
/// this one is per endpoint too).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MetricsKey {
    pub endpoint: u32,
    /// [`REASON_FORWARDED`] or a drop reason.
    pub reason: u8,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub dir: u8,
    pub _pad: u16,
}

/// Packets and bytes (per CPU in `POLICY_METRICS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

/// How the deciding entry matched (Cilium's `POLICY_MATCH_*`).
pub const MATCH_NONE: u8 = 0;
/// This identity, any protocol.
pub const MATCH_L3_ONLY: u8 = 1;
/// This identity, this port.
pub const MATCH_L3_L4: u8 = 2;
/// Any identity, this port.
pub const MATCH_L4_ONLY: u8 = 3;
/// Any identity, any protocol.
pub const MATCH_ALL: u8 = 4;
/// This identity, any port of this protocol.
pub const MATCH_L3_PROTO: u8 = 5;
/// Any identity, any port of this protocol.
pub const MATCH_PROTO_ONLY: u8 = 6;

/// One verdict on a new connection (or a new verdict on a known one), on
/// one side: what `POLICY_EVENTS` carries, as Cilium's policy verdict
/// notification.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct VerdictEvent {
    /// Network order, as in the packet.
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`] of the endpoint.
    pub dir: u8,
    /// [`REASON_FORWARDED`], [`REASON_POLICY_DENIED`], [`REASON_POLICY_DENY`].
    pub reason: u8,
    /// `MATCH_*`: how the deciding entry matched (none for default deny
    /// and for a direction without default deny that nothing matched).
    pub match_type: u8,
    pub endpoint: u32,
    pub ifindex: u32,
    pub local_identity: u32,
    pub remote_identity: u32,
    /// The deciding entry's key: identity (0 any), protocol, port
    /// (network order) and protocol/port prefix length.
    pub match_identity: u32,
    pub match_proto: u8,
    pub match_prefix: u8,
    pub match_dport: u16,
    /// The packet's length.
    pub len: u32,
    /// [`EVENT_ENFORCED`]: the endpoint is default deny in this direction
    /// (Cilium sends policy verdict notifications only for a direction
    /// with policy enforcement on: `POLICY_VERDICT_LOG_FILTER`).
    pub flags: u8,
    /// The TCP flags byte of the packet; for ICMP its type; else 0.
    pub tcp_flags: u8,
    pub _pad: u16,
}

/// [`VerdictEvent::flags`]: the endpoint enforces policy in the event's
/// direction (default deny).
pub const EVENT_ENFORCED: u8 = 1;

/// Node-wide counters (`POLICY_STATS`, per CPU, by index).
pub mod stat {
    /// Verdict events lost because the ring buffer was full.
    pub const EVENTS_LOST: u32 = 0;
    /// Connections entered in the connection table.
    pub const CT_CREATED: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Pods, nodes and CIDR blocks in a node's ipcache.
pub const IPCACHE_CAPACITY: u32 = 16384;
/// Entries of every endpoint's policy together.
pub const POLICY_CAPACITY: u32 = 65536;
pub const ENDPOINTS_CAPACITY: u32 = 4096;
/// Connections remembered per node; the least recently used goes first
/// when it is full.
pub const CT_CAPACITY: u32 = 65536;
pub const METRICS_CAPACITY: u32 = 16384;
/// The verdict ring buffer, bytes.
pub const EVENTS_BYTES: u32 = 1 << 20;

// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for IpcacheKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RemoteEndpointInfo {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointInfo {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicyEntry {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtEntry {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MetricsKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MetricsValue {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for VerdictEvent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_ciliums_sizes() {
        // ipcache_key 24 and remote_endpoint_info 12 (IPv4 form), policy_key
        // 12 and policy_entry 24, each key after its 4-byte prefix length.
        assert_eq!(4 + size_of::<IpcacheKey>(), 24);
        assert_eq!(size_of::<RemoteEndpointInfo>(), 12);
        assert_eq!(size_of::<PolicyKey>() - 8, 8);
        // After the prefix length: a multiple of 8, so that the trie puts
        // the entry's u64 counters 8-byte aligned.
        assert_eq!(size_of::<PolicyKey>() % 8, 0);
        assert_eq!(POLICY_FULL_PREFIX - 32, 64, "Cilium's POLICY_FULL_PREFIX");
        assert_eq!(size_of::<PolicyEntry>(), 24);
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<CtEntry>(), 48);
        assert_eq!(size_of::<EndpointInfo>(), 16);
        assert_eq!(size_of::<MetricsKey>(), 8);
        assert_eq!(size_of::<VerdictEvent>(), 48);
    }
}
