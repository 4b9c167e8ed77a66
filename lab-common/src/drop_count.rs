//! The drop counter: how many packets the kernel freed with a drop reason,
//! per network namespace and reason.

use crate::offsets::NetnsOffsets;

/// Key of the `DROP_COUNTS` per-CPU hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropCountKey {
    /// Inode number of the skb's network namespace: its device's, or for a
    /// local packet without one its socket's or its route's device's (0:
    /// unknown).
    pub netns_ino: u32,
    /// The `enum skb_drop_reason` value the kernel passed to `kfree_skb`.
    pub reason: u32,
    /// The packet's mark when it is a policy verdict (`crate::verdict`),
    /// else 0.
    pub policy: u32,
}

/// The drop counter's `CONFIG` global, set by userspace at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounterConfig {
    /// Offset of `skbaddr` in the `skb:kfree_skb` tracepoint record.
    pub tp_skbaddr: u32,
    /// Offset of `reason` in the `skb:kfree_skb` tracepoint record.
    pub tp_reason: u32,
    pub netns: NetnsOffsets,
    /// `SKB_CONSUMED` on this kernel: not a drop, never counted.
    pub reason_consumed: u32,
    /// Only count drops in this netns (inode); 0 counts every netns.
    pub filter_netns_ino: u32,
    /// `offsetof(struct sk_buff, mark)`.
    pub skb_mark: u32,
}

impl DropCounterConfig {
    pub const ZERO: Self = Self {
        tp_skbaddr: 0,
        tp_reason: 0,
        netns: NetnsOffsets::ZERO,
        reason_consumed: 0,
        filter_netns_ino: 0,
        skb_mark: 0,
    };
}

// SAFETY: `DropCountKey` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropCountKey {}
// SAFETY: `#[repr(C)]`, `Copy`, only u32 fields, no padding.
// SAFETY: `DropCounterConfig` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropCounterConfig {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<DropCountKey>(), 12);
        assert_eq!(align_of::<DropCountKey>(), 4);
        assert_eq!(size_of::<DropCounterConfig>(), (5 + 9) * 4);
    }
}
