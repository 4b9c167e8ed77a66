//! How a policy datapath tells the drop tracer that it dropped a packet,
//! and why: it stamps the packet's mark just before dropping it.
//!
//! Both `--policy-mode`s drop through the kernel's generic paths (an nft
//! `drop` verdict is `NETFILTER_DROP`, a tc program's `TC_ACT_SHOT` is
//! `TC_INGRESS`/`TC_EGRESS`), so the drop reason alone cannot say "policy".
//! Just before dropping, a policy rule or program sets `skb->mark` to
//! [`MARK`] with the direction and the kind of denial in the low bits; the
//! drop tracer reads the mark of every dropped packet and, when
//! `mark & MARK_MASK == MARK`, names the drop `POLICY_DENIED` (no rule
//! allowed it: default deny) or `POLICY_DENY` (a deny rule matched), as
//! Cilium's drop reasons do. The policy, the rule and the identities are
//! then found by user space, which judges the packet's tuple with the
//! lab's policies (the datapaths agree with that judgement: tested).
//!
//! The packet is dropped right after it is marked, so no other user of the
//! mark (kube-proxy's 0x4000/0x8000, Cilium's own) ever sees it.
//!
//! ```text
//!  31            16 15         2  1      0
//! +----------------+------------+-------+-----+
//! |     0x1AB5     |  reserved  | deny  | egr |
//! +----------------+------------+-------+-----+
//! ```

/// The mark's fixed upper half.
pub const MARK: u32 = 0x1AB5_0000;
/// The bits that identify a policy mark.
pub const MARK_MASK: u32 = 0xFFFF_0000;
/// Set: the pod's egress was judged (the packet left it); clear: its
/// ingress.
pub const MARK_EGRESS: u32 = 0x1;
/// Set: a deny rule matched (`POLICY_DENY`, 181); clear: nothing allowed
/// it (`POLICY_DENIED`, 133).
pub const MARK_DENY: u32 = 0x2;

/// Cilium's drop reason numbers for the two, as Hubble prints them.
pub const REASON_POLICY_DENIED: u32 = 133;
pub const REASON_POLICY_DENY: u32 = 181;

/// The mark a datapath sets before dropping.
pub const fn mark(egress: bool, deny: bool) -> u32 {
    MARK | if egress { MARK_EGRESS } else { 0 } | if deny { MARK_DENY } else { 0 }
}

/// What a dropped packet's mark says: `Some((egress, deny))` for a policy
/// drop.
pub const fn decode(mark: u32) -> Option<(bool, bool)> {
    if mark & MARK_MASK == MARK {
        Some((mark & MARK_EGRESS != 0, mark & MARK_DENY != 0))
    } else {
        None
    }
}

/// `mark` when it is a policy verdict, else 0: what the tracer and the
/// counter key their counts with (any other mark would only multiply keys).
#[inline(always)]
pub const fn policy_mark(mark: u32) -> u32 {
    if mark & MARK_MASK == MARK {
        mark & (MARK_MASK | MARK_EGRESS | MARK_DENY)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_others_are_not_policy() {
        for egress in [false, true] {
            for deny in [false, true] {
                assert_eq!(decode(mark(egress, deny)), Some((egress, deny)));
            }
        }
        assert_eq!(decode(0), None);
        assert_eq!(decode(0x4000), None);
        assert_eq!(decode(0x1AB4_0003), None);
        assert_eq!(policy_mark(mark(true, true)), 0x1AB5_0003);
        assert_eq!(policy_mark(0x1AB5_0F01), 0x1AB5_0001);
        assert_eq!(policy_mark(0x4000), 0);
    }
}
