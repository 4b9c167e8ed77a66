//! Kernel struct offsets computed in userspace from BTF and handed to the
//! programs as globals (Rust eBPF has no CO-RE relocations).

/// Offsets to go from a `struct sk_buff *` to the inode of its network
/// namespace: through its device (`skb->dev`), or, for a local packet that
/// has none yet (never received on an interface, dropped before it was
/// given one: an OUTPUT-hook drop, an egress policy on the sender, a local
/// routing failure), through its socket (`skb->sk`, when it is an IPv4 or
/// IPv6 one), else through its route's device (`skb_dst(skb)->dev`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `offsetof(struct sk_buff, dev)`
    pub skb_dev: u32,
    /// `offsetof(struct net_device, nd_net.net)`
    pub dev_nd_net: u32,
    /// `offsetof(struct net, ns.inum)`
    pub net_ns_inum: u32,
    /// `offsetof(struct sk_buff, skb_iif)`: the interface a received packet
    /// came in on, 0 for a local one.
    pub skb_iif: u32,
    /// `offsetof(struct sk_buff, sk)`
    pub skb_sk: u32,
    /// `offsetof(struct sock, __sk_common.skc_family)` (the `sock_common`
    /// every kind of socket starts with: full, request and timewait).
    pub sk_family: u32,
    /// `offsetof(struct sock, __sk_common.skc_net.net)`
    pub sk_net: u32,
    /// `offsetof(struct sk_buff, _skb_refdst)`: a `struct dst_entry *`
    /// whose low bit is the `SKB_DST_NOREF` flag.
    pub skb_refdst: u32,
    /// `offsetof(struct dst_entry, dev)`
    pub dst_dev: u32,
}

impl NetnsOffsets {
    pub const ZERO: Self = Self {
        skb_dev: 0,
        dev_nd_net: 0,
        net_ns_inum: 0,
        skb_iif: 0,
        skb_sk: 0,
        sk_family: 0,
        sk_net: 0,
        skb_refdst: 0,
        dst_dev: 0,
    };
}

/// `SKB_DST_PTRMASK`: `_skb_refdst` without its `SKB_DST_NOREF` bit is the
/// `struct dst_entry *`.
pub const SKB_DST_PTRMASK: u64 = !1;

/// `AF_INET` and `AF_INET6` (linux/socket.h), in `sock_common.skc_family`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

// SAFETY: `NetnsOffsets` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for NetnsOffsets {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_padding() {
        assert_eq!(size_of::<NetnsOffsets>(), 9 * 4);
    }
}
