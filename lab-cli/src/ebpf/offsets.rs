//! Kernel struct offsets for our programs, computed from the running
//! kernel's BTF (the stand-in for CO-RE relocations, which Rust eBPF lacks).

use lab_common::{NetnsOffsets, trace::SkbOffsets};

use crate::kernel::btf::{BtfError, KernelBtf};

/// skb -> dev -> nd_net.net -> ns.inum
pub fn netns_offsets(btf: &KernelBtf) -> Result<NetnsOffsets, BtfError> {
    Ok(NetnsOffsets {
        skb_dev: btf.member_offset("sk_buff", "dev")?,
        dev_nd_net: btf.member_offset("net_device", "nd_net.net")?,
        net_ns_inum: btf.member_offset("net", "ns.inum")?,
    })
}

/// Everything the drop tracer reads from an skb, its device and netns.
pub fn skb_offsets(btf: &KernelBtf) -> Result<SkbOffsets, BtfError> {
    let netns = netns_offsets(btf)?;
    Ok(SkbOffsets {
        skb_dev: netns.skb_dev,
        skb_head: btf.member_offset("sk_buff", "head")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_protocol: btf.member_offset("sk_buff", "protocol")?,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        skb_transport_header: btf.member_offset("sk_buff", "transport_header")?,
        skb_tail: btf.member_offset("sk_buff", "tail")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        dev_nd_net: netns.dev_nd_net,
        net_ns_inum: netns.net_ns_inum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::VMLINUX_BTF;

    #[test]
    fn netns_offsets_of_the_running_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let btf = KernelBtf::from_sys().unwrap();
        let off = netns_offsets(&btf).unwrap();
        assert_eq!(off.skb_dev, 16);
        assert!(off.dev_nd_net > 0);
        assert!((off.net_ns_inum as usize) < btf.struct_size("net").unwrap());
    }
}
