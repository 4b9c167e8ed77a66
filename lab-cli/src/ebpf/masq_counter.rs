//! The masquerade counter: load, attach to `tp_btf/net_dev_start_xmit`, read
//! per-pod rows.

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::{Btf, Ebpf, maps::PerCpuHashMap, programs::BtfTracePoint};
use lab_common::masq::{MasqConfig, MasqKey, MasqStats};
use serde::Serialize;

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    objects,
    offsets::netns_offsets,
};
use crate::kernel::{btf::KernelBtf, netns::NetNs, rtnl::Rtnl};

const OBJECT: &str = "masq-counter";
const PROGRAM: &str = "masq_counter";
const MAP: &str = "MASQ_STATS";

/// One pod's masquerade, as `labctl masq` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasqRow {
    pub pod: Ipv4Addr,
    /// The address the pod's flows were translated to.
    pub node: Ipv4Addr,
    pub connections: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Lowest and highest translated source port (None: only ICMP).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
}

/// Offsets into sk_buff, net_device, net and nf_conn from the kernel's BTF.
pub fn config(btf: &KernelBtf) -> Result<MasqConfig, ProgramSetupError> {
    let netns = netns_offsets(btf)?;
    let tuplehash = btf.member_offset("nf_conn", "tuplehash")?;
    let stride = btf.struct_size("nf_conntrack_tuple_hash")? as u32;
    let tuple = btf.member_offset("nf_conntrack_tuple_hash", "tuple")?;
    Ok(MasqConfig {
        skb_nfct: btf.member_offset("sk_buff", "_nfct")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_dev: netns.skb_dev,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        skb_mac_header: btf.member_offset("sk_buff", "mac_header")?,
        dev_ifindex: btf.member_offset("net_device", "ifindex")?,
        dev_nd_net: netns.dev_nd_net,
        net_ns_inum: netns.net_ns_inum,
        ct_status: btf.member_offset("nf_conn", "status")?,
        ct_tuple_orig: tuplehash + tuple,
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
pub struct MasqCounter {
    ebpf: Ebpf,
}

impl MasqCounter {
    /// Counts masquerade in `ns` (a node) with `uplink` its interface to
    /// the outside; the namespace's bridges are skipped for replies, which
    /// are counted on the bridge ports that lead to the pods.
    pub fn attach(ns: &NetNs, uplink: &str) -> Result<Self, ProgramSetupError> {
        let btf = KernelBtf::from_sys()?;
        let mut cfg = config(&btf)?;
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
        let vmlinux = Btf::from_sys_fs()
            .map_err(|e| LoadError::load(PROGRAM, aya::programs::ProgramError::Btf(e)))?;
        let p: &mut BtfTracePoint = program(&mut ebpf, OBJECT, PROGRAM)?;
        p.load("net_dev_start_xmit", &vmlinux)
            .map_err(|e| LoadError::load(PROGRAM, e))?;
        p.attach()
            .map_err(|e| LoadError::attach(PROGRAM, "tp_btf/net_dev_start_xmit", e))?;
        Ok(Self { ebpf })
    }

    /// One row per (pod, node address), sorted by pod address.
    pub fn rows(&self) -> Result<Vec<MasqRow>, ProgramSetupError> {
        let err = |source| ProgramSetupError::Map { map: MAP, source };
        let map: PerCpuHashMap<_, MasqKey, MasqStats> =
            PerCpuHashMap::try_from(self.ebpf.map(MAP).ok_or(LoadError::MissingMap {
                object: OBJECT,
                map: MAP,
            })?)
            .map_err(err)?;
        rows(&map, MAP)
    }
}

/// One row per (pod, node address) of a per-CPU stats map (this counter's,
/// or the eBPF masquerading's own), sorted by pod address.
pub fn rows<T: std::borrow::Borrow<aya::maps::MapData>>(
    map: &PerCpuHashMap<T, MasqKey, MasqStats>,
    name: &'static str,
) -> Result<Vec<MasqRow>, ProgramSetupError> {
    let mut rows = BTreeMap::new();
    for item in map.iter() {
        let (k, cpus) = item.map_err(|source| ProgramSetupError::Map { map: name, source })?;
        rows.insert(
            (k.pod.to_ne_bytes(), k.node.to_ne_bytes()),
            sum(cpus.iter()),
        );
    }
    Ok(rows
        .into_iter()
        .map(|((pod, node), s)| MasqRow {
            pod: Ipv4Addr::from(pod),
            node: Ipv4Addr::from(node),
            connections: s.connections,
            packets_out: s.packets[0],
            packets_in: s.packets[1],
            bytes_out: s.bytes[0],
            bytes_in: s.bytes[1],
            port_min: (s.port_max != 0).then_some(s.port_min),
            port_max: (s.port_max != 0).then_some(s.port_max),
        })
        .collect())
}

/// Adds up the per-CPU slots (ports: the lowest and highest of any CPU).
pub fn sum<'a>(cpus: impl Iterator<Item = &'a MasqStats>) -> MasqStats {
    let mut s = MasqStats::default();
    for c in cpus {
        s.connections += c.connections;
        for d in 0..2 {
            s.packets[d] += c.packets[d];
            s.bytes[d] += c.bytes[d];
        }
        if c.port_max != 0 {
            s.port_min = if s.port_min == 0 {
                c.port_min
            } else {
                s.port_min.min(c.port_min)
            };
            s.port_max = s.port_max.max(c.port_max);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::VMLINUX_BTF;

    #[test]
    fn per_cpu_slots_add_up() {
        let a = MasqStats {
            connections: 2,
            packets: [3, 1],
            bytes: [300, 60],
            port_min: 40010,
            port_max: 40020,
            _pad: 0,
        };
        let b = MasqStats {
            connections: 1,
            packets: [1, 1],
            bytes: [84, 84],
            port_min: 0,
            port_max: 0,
            _pad: 0,
        };
        let c = MasqStats {
            port_min: 39000,
            port_max: 39001,
            ..b
        };
        let s = sum([a, b, c].iter());
        assert_eq!(s.connections, 4);
        assert_eq!(s.packets, [5, 3]);
        assert_eq!((s.port_min, s.port_max), (39000, 40020));
    }

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
