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
        let subsys = code >> SUBSYS_SHIFT;
        if subsys != 0 {
            let low = code & 0xffff;
            return match self.subsystems.get(&subsys) {
                Some(s) => format!("{s}:{low}"),
                None => format!("SUBSYS{subsys}:{low}"),
            };
        }
        self.core
            .get(&code)
            .cloned()
            .unwrap_or_else(|| format!("UNKNOWN({code})"))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.core.iter().map(|(v, n)| (*v, n.as_str()))
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
    fn values_are_found_by_any_spelling() {
        let r = sample();
        assert_eq!(r.value("no_socket"), Some(3));
        assert_eq!(r.value("SKB_DROP_REASON_NO_SOCKET"), Some(3));
        assert_eq!(r.value("nope"), None);
    }
}
