//! Names of the kernel's drop reasons, read from its BTF.
//!
//! `enum skb_drop_reason` changes between kernels (values are added in the
//! middle), so names always come from the running kernel, never a table.
//! Since 6.8 the top 16 bits select a subsystem (`enum
//! skb_drop_reason_subsys`, e.g. mac80211, openvswitch) whose reasons have
//! their own numbering.

use std::collections::BTreeMap;

use crate::kernel::btf::{BtfError, KernelBtf};

const SUBSYS_SHIFT: u32 = 16;

/// Reason codes and names of the running kernel.
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    core: BTreeMap<u32, String>,
    subsystems: BTreeMap<u32, String>,
}

impl DropReasons {
    pub fn from_btf(btf: &KernelBtf) -> Result<Self, BtfError> {
        let core = btf.enum_values("skb_drop_reason")?;
        // Older kernels (< 6.8) have no subsystems: that is not an error.
        let subsystems = btf
            .enum_values("skb_drop_reason_subsys")
            .unwrap_or_default();
        Ok(Self::from_values(core, subsystems))
    }

    pub fn from_values(core: Vec<(String, u64)>, subsystems: Vec<(String, u64)>) -> Self {
        let core = core
            .into_iter()
            .filter(|(name, _)| !name.ends_with("_MAX") && !name.ends_with("SUBSYS_MASK"))
            .map(|(name, v)| (v as u32, short_name(&name).to_owned()))
            .collect();
        let subsystems = subsystems
            .into_iter()
            .filter(|(name, _)| !name.ends_with("_NUM"))
            .map(|(name, v)| {
                let n = name.trim_start_matches("SKB_DROP_REASON_SUBSYS_");
                (v as u32, n.to_owned())
            })
            .collect();
        Self { core, subsystems }
    }

    /// Number of core reasons known (what doctor reports).
    pub fn len(&self) -> usize {
        self.core.len()
    }

    pub fn is_empty(&self) -> bool {
        self.core.is_empty()
    }

    /// The value of a reason given by name (`NO_SOCKET`, case-insensitive,
    /// with or without the `SKB_DROP_REASON_` prefix).
    pub fn value(&self, name: &str) -> Option<u32> {
        let wanted = short_name(&name.to_ascii_uppercase()).to_owned();
        self.core
            .iter()
            .find(|(_, n)| **n == wanted)
            .map(|(v, _)| *v)
    }

    /// The name of `code`; subsystem reasons read `SUBSYS:<code>`, and an
    /// unknown code reads `UNKNOWN(<code>)`.
    pub fn name(&self, code: u32) -> String {
        let mut out = String::new();
        self.name_into(code, &mut out);
        out
    }

    /// [`name`](Self::name) into `out` (cleared first), reusing its
    /// allocation.
    pub fn name_into(&self, code: u32, out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        let subsys = code >> SUBSYS_SHIFT;
        let written = if subsys != 0 {
            let low = code & 0xffff;
            match self.subsystems.get(&subsys) {
                Some(s) => write!(out, "{s}:{low}"),
                None => write!(out, "SUBSYS{subsys}:{low}"),
            }
        } else {
            match self.core.get(&code) {
                Some(name) => out.write_str(name),
                None => write!(out, "UNKNOWN({code})"),
            }
        };
        // Writing into a String cannot fail.
        written.ok();
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.core.iter().map(|(v, n)| (*v, n.as_str()))
    }
}

/// A policy datapath's drop, read from the mark it set on the packet
/// before dropping it (`lab_common::verdict`): named as Cilium names it,
/// whatever the kernel's generic reason (an nft `drop` is
/// `NETFILTER_DROP`, a tc program's is `TC_INGRESS`/`TC_EGRESS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyDrop {
    /// The pod's egress was judged (else its ingress).
    pub egress: bool,
    /// A deny rule matched (`POLICY_DENY`), else nothing allowed it
    /// (`POLICY_DENIED`, default deny).
    pub deny: bool,
}

/// Cilium's names of the two policy drop reasons, as `--reason` takes them.
pub const POLICY_DENIED: &str = "POLICY_DENIED";
pub const POLICY_DENY: &str = "POLICY_DENY";

impl PolicyDrop {
    /// The drop a packet's mark says, if it is a policy verdict.
    pub fn from_mark(mark: u32) -> Option<Self> {
        lab_common::verdict::decode(mark).map(|(egress, deny)| Self { egress, deny })
    }

    /// `POLICY_DENIED` or `POLICY_DENY`.
    pub fn name(self) -> &'static str {
        if self.deny {
            POLICY_DENY
        } else {
            POLICY_DENIED
        }
    }

    /// Cilium's drop reason number (Hubble's `drop_reason`): 133 or 181.
    pub fn code(self) -> u32 {
        if self.deny {
            lab_common::verdict::REASON_POLICY_DENY
        } else {
            lab_common::verdict::REASON_POLICY_DENIED
        }
    }

    /// `ingress` or `egress` (the pod's side that was judged).
    pub fn direction(self) -> &'static str {
        if self.egress { "egress" } else { "ingress" }
    }
}

/// A policy reason given by name (any case, as `--reason` takes it):
/// `Some(deny)`.
pub fn policy_reason(name: &str) -> Option<bool> {
    match name.to_ascii_uppercase().as_str() {
        POLICY_DENIED => Some(false),
        POLICY_DENY => Some(true),
        _ => None,
    }
}

/// The name of a drop: its policy reason when its mark is a policy
/// verdict, else the kernel's reason.
pub fn drop_name(reasons: &DropReasons, code: u32, mark: u32) -> String {
    match PolicyDrop::from_mark(mark) {
        Some(p) => p.name().to_owned(),
        None => reasons.name(code),
    }
}

/// `SKB_DROP_REASON_NO_SOCKET` -> `NO_SOCKET`, `SKB_CONSUMED` -> `CONSUMED`:
/// the one spelling of a reason everywhere labctl prints or looks one up.
pub fn short_name(name: &str) -> &str {
    name.strip_prefix("SKB_DROP_REASON_")
        .or_else(|| name.strip_prefix("SKB_"))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DropReasons {
        let core = [
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_CONSUMED", 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
            ("SKB_DROP_REASON_NO_SOCKET", 3),
            ("SKB_DROP_REASON_MAX", 4),
            ("SKB_DROP_REASON_SUBSYS_MASK", 0xffff0000),
        ];
        let subsys = [
            ("SKB_DROP_REASON_SUBSYS_CORE", 0),
            ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3),
            ("SKB_DROP_REASON_SUBSYS_NUM", 4),
        ];
        let own = |v: &[(&str, u64)]| v.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        DropReasons::from_values(own(&core), own(&subsys))
    }

    #[test]
    fn names_are_shortened_and_markers_dropped() {
        let r = sample();
        assert_eq!(r.name(3), "NO_SOCKET");
        assert_eq!(r.name(1), "CONSUMED");
        assert_eq!(r.name(4), "UNKNOWN(4)");
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn subsystem_bits_are_decoded() {
        let r = sample();
        assert_eq!(r.name((3 << 16) | 7), "OPENVSWITCH:7");
        assert_eq!(r.name((9 << 16) | 1), "SUBSYS9:1");
    }

    #[test]
    fn policy_marks_are_named_as_cilium_names_them() {
        use lab_common::verdict::mark;
        let r = sample();
        assert_eq!(drop_name(&r, 3, 0), "NO_SOCKET");
        assert_eq!(drop_name(&r, 3, 0x4000), "NO_SOCKET");
        assert_eq!(drop_name(&r, 3, mark(true, false)), "POLICY_DENIED");
        assert_eq!(drop_name(&r, 3, mark(false, true)), "POLICY_DENY");
        let p = PolicyDrop::from_mark(mark(false, true)).unwrap();
        assert_eq!((p.code(), p.direction()), (181, "ingress"));
        let p = PolicyDrop::from_mark(mark(true, false)).unwrap();
        assert_eq!(
            (p.code(), p.direction(), p.name()),
            (133, "egress", "POLICY_DENIED")
        );
        assert_eq!(policy_reason("policy_denied"), Some(false));
        assert_eq!(policy_reason("POLICY_DENY"), Some(true));
        assert_eq!(policy_reason("NO_SOCKET"), None);
    }

    #[test]
    fn values_are_found_by_any_spelling() {
        let r = sample();
        assert_eq!(r.value("no_socket"), Some(3));
        assert_eq!(r.value("SKB_DROP_REASON_NO_SOCKET"), Some(3));
        assert_eq!(r.value("nope"), None);
    }
}
