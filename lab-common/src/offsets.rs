//! Kernel struct offsets computed in userspace from BTF and handed to the
//! programs as globals (Rust eBPF has no CO-RE relocations).

/// Offsets to go from an `struct sk_buff *` to its device's netns inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `offsetof(struct sk_buff, dev)`
    pub skb_dev: u32,
    /// `offsetof(struct net_device, nd_net.net)`
    pub dev_nd_net: u32,
    /// `offsetof(struct net, ns.inum)`
    pub net_ns_inum: u32,
}

impl NetnsOffsets {
    pub const ZERO: Self = Self {
        skb_dev: 0,
        dev_nd_net: 0,
        net_ns_inum: 0,
    };
}

// SAFETY: `#[repr(C)]`, `Copy`, three u32 and no padding.
// SAFETY: `NetnsOffsets` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for NetnsOffsets {}
