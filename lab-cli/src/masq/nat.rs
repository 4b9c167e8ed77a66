//! eBPF masquerading as a learner sees it: what it is asked to do
//! ([`NatParams`]), and its table and counters as `cilium bpf nat list`
//! would show them. The programs and their pins are in `ebpf::nat`.

use std::net::Ipv4Addr;

use lab_common::nat::{
    self as consts, NAT_CLOSING, NAT_PEER_CLOSING, NatConfig, NatEntry, NatKey, stat,
};
use serde::Serialize;

use super::MasqRow;
use crate::{
    ebpf::{self, error::ProgramSetupError, pins, tc::TcAttach},
    kernel::{clock, netns::NetNs, rtnl::Rtnl},
};

pub use crate::ebpf::nat::present;

/// Capacity of the NAT table (mappings).
pub const CAPACITY: usize = consts::CAPACITY as usize;

/// Where a node's NAT is pinned.
pub fn pin_dir(netns_ino: u64) -> std::path::PathBuf {
    pins::nat(netns_ino)
}

/// What the NAT does, before it is loaded.
#[derive(Debug, Clone, Copy)]
pub struct NatParams {
    pub node_addr: Ipv4Addr,
    pub cluster: (Ipv4Addr, u8),
    /// Translated ports (default: [`consts::PORT_MIN`]-[`consts::PORT_MAX`]).
    pub ports: Option<(u16, u16)>,
    /// Idle lifetime of UDP mappings (default [`consts::UDP_TIMEOUT_S`]).
    pub udp_timeout_s: Option<u32>,
    pub tc_attach: TcAttach,
}

impl NatParams {
    fn config(&self, ethernet: bool) -> NatConfig {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.cluster.1))
            .unwrap_or(0);
        let (port_min, port_max) = self.ports.unwrap_or((consts::PORT_MIN, consts::PORT_MAX));
        NatConfig {
            node_addr: u32::from_ne_bytes(self.node_addr.octets()),
            cluster_net: u32::from_ne_bytes(self.cluster.0.octets()),
            cluster_mask: u32::from_ne_bytes(mask.to_be_bytes()),
            port_min,
            port_max,
            udp_timeout_s: self.udp_timeout_s.unwrap_or(consts::UDP_TIMEOUT_S),
            ethernet: u32::from(ethernet),
            ..NatConfig::DEFAULT
        }
    }
}

/// Attaches eBPF masquerading to `uplink` in `ns` and pins it.
pub fn attach(ns: &NetNs, uplink: &str, params: &NatParams) -> Result<(), ProgramSetupError> {
    let ethernet = Rtnl::open(ns)?.has_ethernet_header(uplink)?;
    ebpf::nat::attach(ns, uplink, &params.config(ethernet), params.tc_attach)
}

/// Removes a node's eBPF masquerading (programs and pins).
pub fn detach(ns: &NetNs, netns_ino: u64, uplink: &str) -> Result<(), ProgramSetupError> {
    ebpf::nat::detach(ns, netns_ino, uplink)
}

/// Which table a mapping is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NatDir {
    /// `NAT_OUT`: a pod's flow and what it is translated to.
    Out,
    /// `NAT_IN`: the translated flow and the pod it goes back to.
    In,
}

impl NatDir {
    pub fn as_str(self) -> &'static str {
        match self {
            NatDir::Out => "OUT",
            NatDir::In => "IN",
        }
    }

    /// What the translation rewrites, in Cilium's words.
    pub fn xlate(self) -> &'static str {
        match self {
            NatDir::Out => "XLATE_SRC",
            NatDir::In => "XLATE_DST",
        }
    }
}

impl PartialEq<&str> for NatDir {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One mapping, as `cilium bpf nat list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRow {
    pub dir: NatDir,
    pub proto: String,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// XLATE_SRC (OUT) or XLATE_DST (IN) address and port.
    pub xlate_addr: Ipv4Addr,
    pub xlate_port: u16,
    pub closing: bool,
    pub age_s: u64,
    pub idle_s: u64,
    /// The pods (`NAMESPACE/NAME`) with these addresses, where known.
    pub src_pod: Option<String>,
    pub dst_pod: Option<String>,
}

/// The NAT table of a node, its counters and fill level.
#[derive(Debug, Clone, Serialize)]
pub struct NatTable {
    pub entries: Vec<NatRow>,
    /// Mappings (OUT entries) in use, and the table's capacity.
    pub used: usize,
    pub capacity: usize,
    pub allocated: u64,
    pub collisions: u64,
    /// Packets dropped because no port was free.
    pub alloc_failed: u64,
    /// Packets of new flows dropped because the table was full of live
    /// mappings (none expired or closed to reclaim): a full table refuses
    /// new flows, it never evicts a live one.
    pub table_full: u64,
    /// Mappings reclaimed by sweeps of the full table (expired, or closed
    /// and idle), and the sweeps.
    pub reclaimed: u64,
    pub sweeps: u64,
    pub xlate_out: u64,
    pub xlate_in: u64,
    pub expired: u64,
}

/// The table without its entries (for `lab status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatSummary {
    pub used: usize,
    pub capacity: usize,
    pub allocated: u64,
    pub collisions: u64,
    pub alloc_failed: u64,
    pub table_full: u64,
}

impl NatTable {
    pub fn summary(&self) -> NatSummary {
        NatSummary {
            used: self.used,
            capacity: self.capacity,
            allocated: self.allocated,
            collisions: self.collisions,
            alloc_failed: self.alloc_failed,
            table_full: self.table_full,
        }
    }
}

fn row(dir: NatDir, k: &NatKey, v: &NatEntry, now: u64) -> NatRow {
    NatRow {
        dir,
        proto: lab_common::proto::name(k.proto).map_or_else(|| k.proto.to_string(), str::to_owned),
        src: Ipv4Addr::from(k.saddr.to_ne_bytes()),
        sport: u16::from_be(k.sport),
        dst: Ipv4Addr::from(k.daddr.to_ne_bytes()),
        dport: u16::from_be(k.dport),
        xlate_addr: Ipv4Addr::from(v.to_addr.to_ne_bytes()),
        xlate_port: u16::from_be(v.to_port),
        closing: v.flags & (NAT_CLOSING | NAT_PEER_CLOSING) != 0,
        age_s: now.saturating_sub(v.created_ns) / 1_000_000_000,
        src_pod: None,
        dst_pod: None,
        idle_s: now.saturating_sub(v.last_ns) / 1_000_000_000,
    }
}

/// Reads a node's pinned NAT table.
pub fn table(netns_ino: u64) -> Result<NatTable, ProgramSetupError> {
    let maps = ebpf::nat::read(netns_ino)?;
    let now = clock::monotonic_ns();
    let mut entries: Vec<NatRow> = maps
        .out
        .iter()
        .map(|(k, v)| row(NatDir::Out, k, v, now))
        .chain(maps.r#in.iter().map(|(k, v)| row(NatDir::In, k, v, now)))
        .collect();
    entries.sort_by(|a, b| {
        (a.dir, a.src, a.sport)
            .cmp(&(b.dir, b.src, b.sport))
            .reverse()
    });
    let get = |i: u32| maps.stats[i as usize];
    // Packets of pods with a slot are counted there only.
    let pods = ebpf::nat::pod_stats(netns_ino)?;
    let pod_packets = |dir: usize| pods.iter().map(|(_, s)| s.packets[dir]).sum::<u64>();
    Ok(NatTable {
        used: maps.out.len(),
        capacity: CAPACITY,
        allocated: get(stat::ALLOCATED),
        collisions: get(stat::COLLISIONS),
        alloc_failed: get(stat::ALLOC_FAILED),
        table_full: get(stat::TABLE_FULL),
        reclaimed: get(stat::RECLAIMED),
        sweeps: get(stat::SWEEPS),
        xlate_out: get(stat::XLATE_OUT) + pod_packets(0),
        xlate_in: get(stat::XLATE_IN) + pod_packets(1),
        expired: get(stat::EXPIRED),
        entries,
    })
}

/// Per-pod rows from the NAT programs' own counters (`labctl masq`).
pub fn pod_rows(netns_ino: u64) -> Result<Vec<MasqRow>, ProgramSetupError> {
    Ok(super::rows(ebpf::nat::pod_stats(netns_ino)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_mask_is_in_network_order() {
        let p = NatParams {
            node_addr: Ipv4Addr::new(172, 18, 0, 2),
            cluster: (Ipv4Addr::new(10, 244, 0, 0), 16),
            ports: Some((32768, 60999)),
            udp_timeout_s: Some(30),
            tc_attach: TcAttach::Auto,
        };
        let c = p.config(true);
        // 10.244.1.2 is in 10.244.0.0/16, 10.245.0.1 is not.
        let inside = u32::from_ne_bytes([10, 244, 1, 2]);
        let outside = u32::from_ne_bytes([10, 245, 0, 1]);
        assert_eq!(inside & c.cluster_mask, c.cluster_net);
        assert_ne!(outside & c.cluster_mask, c.cluster_net);
        assert_eq!(c.node_addr.to_ne_bytes(), [172, 18, 0, 2]);
    }
}
