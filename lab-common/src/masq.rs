//! The masquerade counter (`labctl masq`): per pod address and translated
//! (node) address, new NATed connections, packets and bytes per direction,
//! and the translated ports in use, read from each transmitted skb's
//! conntrack entry.

/// Where the program finds what it reads; all offsets from BTF at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasqConfig {
    pub skb_nfct: u32,
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_network_header: u32,
    pub skb_mac_header: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub ct_status: u32,
    /// `nf_conn.tuplehash[0].tuple`.
    pub ct_tuple_orig: u32,
    /// `nf_conn.tuplehash[1].tuple`.
    pub ct_tuple_reply: u32,
    pub tuple_src_u3: u32,
    pub tuple_src_u: u32,
    pub tuple_dst_u3: u32,
    pub tuple_dst_u: u32,
    pub tuple_dst_protonum: u32,
    /// Only this namespace (the node).
    pub netns_ino: u32,
    /// Original-direction packets are counted leaving this interface.
    pub uplink_ifindex: u32,
    /// Reply-direction packets are counted leaving any other interface of
    /// the namespace except these (bridges: counted again on their ports).
    pub skip_ifindex: [u32; 4],
}

/// A pod (original source) and the address it was translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MasqKey {
    /// Network byte order, as in the packet.
    pub pod: u32,
    pub node: u32,
}

/// Per-CPU counts; userspace adds the CPUs up (min/max for ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MasqStats {
    pub connections: u64,
    /// [original, reply]
    pub packets: [u64; 2],
    /// IP bytes (the link-layer header is not counted, as conntrack).
    pub bytes: [u64; 2],
    /// Lowest and highest translated source port seen (host order); 0/0:
    /// none (ICMP).
    pub port_min: u16,
    pub port_max: u16,
    pub _pad: u32,
}

/// Connections remembered as counted (`MASQ_SEEN`, an LRU).
pub const SEEN_CAPACITY: u32 = 65536;

/// Bytes of `nf_conn` the counter copies in one read: from the original
/// tuple to the end of `status` (both tuples and the status, which follow
/// each other in every kernel since 4.x; labctl checks it at load).
pub const CT_WINDOW: usize = 128;

/// A connection already counted: the conntrack entry's address plus its
/// tuple ports, so a recycled entry with a new flow counts again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeenKey {
    pub ct: u64,
    pub pod: u32,
    pub orig_sport: u16,
    pub node_port: u16,
}

// SAFETY: `MasqConfig` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MasqConfig {}
// SAFETY: `MasqKey` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MasqKey {}
// SAFETY: `MasqStats` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for MasqStats {}
