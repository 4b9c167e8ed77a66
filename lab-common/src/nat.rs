//! eBPF masquerading (`labctl lab up basic --masq ebpf`): tc programs on a
//! node's uplink that SNAT pod traffic to the node's address on egress and
//! reverse it on ingress, with a NAT table of pod flows and their reverse
//! entries, as Cilium's BPF masquerading has. Unlike Cilium's LRU maps, the
//! tables are plain hashes: a live mapping is never evicted; a full table
//! reclaims expired and closed mappings, and refuses (and counts) new flows
//! when there are none.

/// A flow as it leaves a pod (`NAT_OUT` key) or as it comes back to the
/// node (`NAT_IN` key).
pub type NatKey = crate::flow::FlowKey;

/// What a key translates to: the new address and port (network order),
/// and when the mapping was made and last used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct NatEntry {
    pub created_ns: u64,
    pub last_ns: u64,
    pub to_addr: u32,
    pub to_port: u16,
    /// Bit 0: a FIN or RST was seen (the TCP flow is closing).
    pub flags: u8,
    pub _pad: u8,
    /// The pod's slot in `NAT_POD_STATS` ([`NO_SLOT`]: not counted per pod),
    /// so a packet's per-pod counting is an array index, not a hash lookup.
    pub slot: u32,
    pub _pad2: u32,
}

/// A mapping whose pod has no slot (the per-pod table was full).
pub const NO_SLOT: u32 = u32::MAX;

/// `flags`: this entry's direction saw a FIN or RST.
pub const NAT_CLOSING: u8 = 1;
/// `flags` of a `NAT_IN` entry: the pod's direction saw a FIN or RST. A
/// `NAT_IN` entry carries its mapping's whole state: its `last_ns` is the
/// last use either way (the egress program writes it there too, at most
/// every quarter second), so a sweep decides from it alone.
pub const NAT_PEER_CLOSING: u8 = 2;

/// Entries of `NAT_OUT` and of `NAT_IN` (each): mappings.
pub const CAPACITY: u32 = 65536;
/// A closed TCP mapping (FIN or RST seen) idle this long may be reclaimed
/// before its timeout when the table is full (netfilter's early drop of
/// closing connections); not sooner, so the closing handshake and a
/// half-closed transfer keep their mapping.
pub const CLOSING_RECLAIM_S: u32 = 1;
/// A sweep of the full table that freed fewer than capacity / this many
/// mappings is not run again for [`SWEEP_BACKOFF_MS`]: a table full of live
/// mappings costs one sweep a second, not one per new flow.
pub const SWEEP_ENOUGH_DIVISOR: u32 = 64;
/// A sweep stops once it has freed capacity / this many mappings (a
/// sweep's time grows with what it frees: about 0.7 µs a mapping).
pub const SWEEP_MAX_DIVISOR: u32 = 16;
pub const SWEEP_BACKOFF_MS: u32 = 1000;
/// Entries of `NAT_POD_SLOTS` and `NAT_POD_STATS`: pods per node.
pub const POD_STATS_CAPACITY: u32 = 4096;
/// The translated port range, as Linux's default ip_local_port_range.
pub const PORT_MIN: u16 = 32768;
pub const PORT_MAX: u16 = 60999;
/// Idle lifetimes in seconds (netfilter's defaults for UDP and ICMP; TCP
/// as Cilium's SNAT map).
pub const TCP_TIMEOUT_S: u32 = 7200;
pub const TCP_CLOSING_TIMEOUT_S: u32 = 10;
pub const UDP_TIMEOUT_S: u32 = 30;
pub const ICMP_TIMEOUT_S: u32 = 30;

/// Counters in `NAT_STATS` (a per-CPU array).
pub mod stat {
    /// New mappings made.
    pub const ALLOCATED: u32 = 0;
    /// Candidate ports found taken while allocating.
    pub const COLLISIONS: u32 = 1;
    /// Packets dropped because no port was free (the defined "full" case).
    pub const ALLOC_FAILED: u32 = 2;
    /// Packets translated on egress / ingress for pods without a slot in
    /// `NAT_POD_STATS`; the pods' own counts there are the rest (userspace
    /// adds them up).
    pub const XLATE_OUT: u32 = 3;
    pub const XLATE_IN: u32 = 4;
    /// Mappings found expired and replaced.
    pub const EXPIRED: u32 = 5;
    /// Packets of new flows dropped because the table was full of live
    /// mappings (nothing expired or closed to reclaim): the flow is refused,
    /// no live mapping is evicted.
    pub const TABLE_FULL: u32 = 6;
    /// Mappings reclaimed by the sweeps of a full table (expired, or closed
    /// and idle for [`super::CLOSING_RECLAIM_S`]).
    pub const RECLAIMED: u32 = 7;
    /// Sweeps of the full table.
    pub const SWEEPS: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// Settings written into the programs before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// The node's address (network order): what pods are translated to.
    pub node_addr: u32,
    /// Pod range (network order): only sources inside it are translated,
    /// and never toward destinations inside it.
    pub cluster_net: u32,
    pub cluster_mask: u32,
    /// Translated ports are taken from [port_min, port_max] (host order).
    pub port_min: u16,
    pub port_max: u16,
    /// Idle lifetimes in seconds.
    pub tcp_timeout_s: u32,
    pub tcp_closing_timeout_s: u32,
    pub udp_timeout_s: u32,
    pub icmp_timeout_s: u32,
    /// 1: Ethernet frames (14-byte header); 0: raw IP.
    pub ethernet: u32,
    /// Entries of `NAT_OUT` and `NAT_IN` as loaded (what a sweep's
    /// "enough" is measured against).
    pub capacity: u32,
}

impl NatConfig {
    /// The defaults, with no node or pod range yet (the programs' initial
    /// value; userspace writes the real one before loading).
    pub const DEFAULT: NatConfig = NatConfig {
        node_addr: 0,
        cluster_net: 0,
        cluster_mask: 0,
        port_min: PORT_MIN,
        port_max: PORT_MAX,
        tcp_timeout_s: TCP_TIMEOUT_S,
        tcp_closing_timeout_s: TCP_CLOSING_TIMEOUT_S,
        udp_timeout_s: UDP_TIMEOUT_S,
        icmp_timeout_s: ICMP_TIMEOUT_S,
        ethernet: 1,
        capacity: CAPACITY,
    };
}

// SAFETY: `NatEntry` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for NatEntry {}
// SAFETY: `NatConfig` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for NatConfig {}
