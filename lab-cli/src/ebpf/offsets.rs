//! Kernel struct offsets for our programs, computed from the running
//! kernel's BTF (the stand-in for CO-RE relocations, which Rust eBPF lacks).

use lab_common::{NetnsOffsets, trace::SkbOffsets};

use crate::kernel::btf::{BtfError, KernelBtf};

/// skb -> dev -> nd_net.net -> ns.inum; for a local packet (skb_iif 0)
/// without a device, skb -> sk -> __sk_common.skc_net.net (for an IP
/// socket: skc_family), or
/// skb -> _skb_refdst -> dev (in
/// an anonymous union with `dev_rcu` on recent kernels, which
/// `member_offset` looks through).
pub fn netns_offsets(btf: &KernelBtf) -> Result<NetnsOffsets, BtfError> {
    Ok(NetnsOffsets {
        skb_dev: btf.member_offset("sk_buff", "dev")?,
        dev_nd_net: btf.member_offset("net_device", "nd_net.net")?,
        net_ns_inum: btf.member_offset("net", "ns.inum")?,
        skb_iif: btf.member_offset("sk_buff", "skb_iif")?,
        skb_sk: btf.member_offset("sk_buff", "sk")?,
        sk_family: btf.member_offset("sock", "__sk_common.skc_family")?,
        sk_net: btf.member_offset("sock", "__sk_common.skc_net.net")?,
        skb_refdst: btf.member_offset("sk_buff", "_skb_refdst")?,
        dst_dev: btf.member_offset("dst_entry", "dev")?,
    })
}

/// Everything the drop tracer reads from an skb, its device and netns.
pub fn skb_offsets(btf: &KernelBtf) -> Result<SkbOffsets, BtfError> {
    Ok(SkbOffsets {
        netns: netns_offsets(btf)?,
        skb_head: btf.member_offset("sk_buff", "head")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_protocol: btf.member_offset("sk_buff", "protocol")?,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        skb_transport_header: btf.member_offset("sk_buff", "transport_header")?,
        skb_tail: btf.member_offset("sk_buff", "tail")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        skb_mark: btf.member_offset("sk_buff", "mark")?,
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

        // `sk` follows the next/prev/dev group (24 bytes on 64-bit kernels).
        assert_eq!(off.skb_sk, 24);
        // `_skb_refdst` is a pointer-sized word after `sk` and before `len`.
        let len = btf.member_offset("sk_buff", "len").unwrap();
        assert!(
            off.skb_refdst > off.skb_sk && off.skb_refdst + 8 <= len,
            "_skb_refdst at {} (sk {}, len {len})",
            off.skb_refdst,
            off.skb_sk
        );
        assert_eq!(off.skb_refdst % 8, 0);
        assert!(
            off.skb_iif > off.skb_refdst
                && off.skb_iif + 4 <= btf.member_offset("sk_buff", "head").unwrap()
        );
        // Every socket starts with its `sock_common`: the namespace is the
        // same field for full, request and timewait sockets.
        assert_eq!(btf.member_offset("sock", "__sk_common").unwrap(), 0);
        let skc_net = btf.member_offset("sock_common", "skc_net").unwrap();
        assert_eq!(off.sk_net, skc_net);
        assert_eq!(
            btf.member_offset("inet_timewait_sock", "__tw_common.skc_net.net")
                .unwrap(),
            skc_net
        );
        assert_eq!(
            btf.member_offset("request_sock", "__req_common.skc_net.net")
                .unwrap(),
            skc_net
        );
        assert!((off.sk_net as usize) < btf.struct_size("sock_common").unwrap());
        // skc_family sits between the port pair and skc_net.
        let ports = btf.member_offset("sock_common", "skc_portpair").unwrap();
        assert_eq!(off.sk_family, ports + 4);
        assert!(off.sk_family < off.sk_net);
        // `dst_entry.dev` is its first member; on recent kernels it shares
        // an anonymous union with `dev_rcu`, which is looked through.
        assert_eq!(off.dst_dev, 0);
        if let Ok(dev_rcu) = btf.member_offset("dst_entry", "dev_rcu") {
            assert_eq!(off.dst_dev, dev_rcu);
        }
    }

    #[test]
    fn the_tracer_uses_the_same_netns_offsets() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let btf = KernelBtf::from_sys().unwrap();
        let skb = skb_offsets(&btf).unwrap();
        assert_eq!(skb.netns, netns_offsets(&btf).unwrap());
        assert!(skb.dev_ifindex > 0);
        // `mark` shares an anonymous union with `reserved_tailroom`.
        assert_eq!(
            skb.skb_mark,
            btf.member_offset("sk_buff", "reserved_tailroom").unwrap()
        );
    }
}
