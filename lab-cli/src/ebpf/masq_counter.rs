//! The masquerade counter (`lab-ebpf/src/bin/masq_counter.rs`): load,
//! attach to `tp_btf/net_dev_start_xmit`, read its per-pod counters.

use aya::{Ebpf, maps::PerCpuHashMap, programs::BtfTracePoint};
use lab_common::masq::{CT_WINDOW, MasqConfig, MasqKey, MasqStats};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program, vmlinux_btf},
    maps, objects,
    offsets::netns_offsets,
};
use crate::kernel::{btf::KernelBtf, netns::NetNs, rtnl::Rtnl};

const OBJECT: &str = "masq-counter";
const PROGRAM: &str = "masq_counter";
const MAP: &str = "MASQ_STATS";

/// Offsets into sk_buff, net_device, net and nf_conn from the kernel's BTF.
pub fn config(btf: &KernelBtf) -> Result<MasqConfig, ProgramSetupError> {
    let netns = netns_offsets(btf)?;
    let tuplehash = btf.member_offset("nf_conn", "tuplehash")?;
    let stride = btf.struct_size("nf_conntrack_tuple_hash")? as u32;
    let tuple = btf.member_offset("nf_conntrack_tuple_hash", "tuple")?;
    let ct_status = btf.member_offset("nf_conn", "status")?;
    let ct_tuple_orig = tuplehash + tuple;
    // The program copies both tuples and the status in one read.
    if ct_status < ct_tuple_orig || (ct_status + 8 - ct_tuple_orig) as usize > CT_WINDOW {
        return Err(ProgramSetupError::Layout(format!(
            "nf_conn.status at {ct_status} is not within {CT_WINDOW} bytes after the original tuple at {ct_tuple_orig}"
        )));
    }
    Ok(MasqConfig {
        skb_nfct: btf.member_offset("sk_buff", "_nfct")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_dev: netns.skb_dev,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        skb_mac_header: btf.member_offset("sk_buff", "mac_header")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        dev_nd_net: netns.dev_nd_net,
        net_ns_inum: netns.net_ns_inum,
        ct_status,
        ct_tuple_orig,
        ct_tuple_reply: tuplehash + stride + tuple,
        tuple_src_u3: btf.member_offset("nf_conntrack_tuple", "src.u3")?,
        tuple_src_u: btf.member_offset("nf_conntrack_tuple", "src.u")?,
        tuple_dst_u3: btf.member_offset("nf_conntrack_tuple", "dst.u3")?,
        tuple_dst_u: btf.member_offset("nf_conntrack_tuple", "dst.u")?,
        tuple_dst_protonum: btf.member_offset("nf_conntrack_tuple", "dst.protonum")?,
        netns_ino: 0,
        uplink_ifindex: 0,
        skip_ifindex: [0; 4],
    })
}

/// The counter, attached until dropped.
pub struct MasqCounterProgram {
    ebpf: Ebpf,
}

impl MasqCounterProgram {
    /// Counts masquerade in `ns` (a node) with `uplink` its interface to
    /// the outside; the namespace's bridges are skipped for replies, which
    /// are counted on the bridge ports that lead to the pods.
    pub fn attach(btf: &KernelBtf, ns: &NetNs, uplink: &str) -> Result<Self, ProgramSetupError> {
        let mut cfg = config(btf)?;
        let rtnl = Rtnl::open(ns)?;
        let links = rtnl.links()?;
        cfg.uplink_ifindex = rtnl.index(uplink)?;
        cfg.netns_ino = ns.inode()? as u32;
        for (slot, link) in cfg
            .skip_ifindex
            .iter_mut()
            .zip(links.iter().filter(|l| l.kind.as_deref() == Some("bridge")))
        {
            *slot = link.index;
        }
        let mut ebpf = load_object(OBJECT, objects::MASQ_COUNTER, |loader| {
            loader.override_global("MASQ_CONFIG", &cfg, true);
        })?;
        let vmlinux = vmlinux_btf(PROGRAM)?;
        let p: &mut BtfTracePoint = program(&mut ebpf, OBJECT, PROGRAM)?;
        p.load("net_dev_start_xmit", &vmlinux)
            .map_err(|e| LoadError::load(PROGRAM, e))?;
        p.attach()
            .map_err(|e| LoadError::attach(PROGRAM, "tp_btf/net_dev_start_xmit", e))?;
        Ok(Self { ebpf })
    }

    /// Per (pod, node address): the totals over the CPUs.
    pub fn rows(&self) -> Result<Vec<(MasqKey, MasqStats)>, ProgramSetupError> {
        let map: PerCpuHashMap<_, MasqKey, MasqStats> = maps::get(&self.ebpf, OBJECT, MAP)?;
        maps::totals(&map, MAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::VMLINUX_BTF;

    #[test]
    fn conntrack_offsets_come_from_this_kernels_btf() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            return;
        }
        let btf = KernelBtf::from_sys().unwrap();
        let cfg = config(&btf).unwrap();
        // The reply tuple is one tuple_hash after the original.
        assert_eq!(
            (cfg.ct_tuple_reply - cfg.ct_tuple_orig) as usize,
            btf.struct_size("nf_conntrack_tuple_hash").unwrap()
        );
        // src.u3 leads the tuple; dst.u follows dst.u3 (16 bytes).
        assert_eq!(cfg.tuple_src_u3, 0);
        assert_eq!(cfg.tuple_dst_u, cfg.tuple_dst_u3 + 16);
        assert!(cfg.ct_status > cfg.ct_tuple_reply);
    }
}
