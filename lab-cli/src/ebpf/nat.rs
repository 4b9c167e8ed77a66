//! eBPF masquerading on a lab node: load the `nat` object, attach its two
//! tc programs to the node's uplink, and pin the links and maps so the
//! translation outlives the `labctl lab up` that set it up. `down` unpins
//! (which detaches) before it deletes the namespaces.
//!
//! Pins live in /sys/fs/bpf/labctl/nat-<netns inode>/: `egress`, `ingress`
//! (links), `out`, `in`, `stats`, `pods` (maps).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    programs::{SchedClassifier, TcAttachType, links::FdLink},
};
use lab_common::{
    masq::{MasqKey, MasqStats},
    nat::{NAT_CLOSING, NatConfig, NatEntry, NatKey, stat},
};
use serde::Serialize;

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    masq_counter::{self, MasqRow},
    objects,
};
use crate::kernel::{bpffs, clock, netns::NetNs, rtnl::Rtnl};

const OBJECT: &str = "nat";
const MAPS: [(&str, &str); 4] = [
    ("NAT_OUT", "out"),
    ("NAT_IN", "in"),
    ("NAT_STATS", "stats"),
    ("NAT_POD_STATS", "pods"),
];
/// Capacity of NAT_OUT and NAT_IN (see lab-ebpf/src/bin/nat.rs).
pub const CAPACITY: usize = 65536;

/// Where a node's NAT is pinned.
pub fn pin_dir(netns_ino: u64) -> PathBuf {
    Path::new(bpffs::BPFFS).join(format!("labctl/nat-{netns_ino}"))
}

/// What the NAT does, before it is loaded.
#[derive(Debug, Clone, Copy)]
pub struct NatParams {
    pub node_addr: Ipv4Addr,
    pub cluster: (Ipv4Addr, u8),
    pub ports: (u16, u16),
    pub udp_timeout_s: u32,
}

impl NatParams {
    fn config(&self, ethernet: bool) -> NatConfig {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.cluster.1))
            .unwrap_or(0);
        NatConfig {
            node_addr: u32::from_ne_bytes(self.node_addr.octets()),
            cluster_net: u32::from_ne_bytes(self.cluster.0.octets()),
            cluster_mask: u32::from_ne_bytes(mask.to_be_bytes()),
            port_min: self.ports.0,
            port_max: self.ports.1,
            tcp_timeout_s: 7200,
            tcp_closing_timeout_s: 10,
            udp_timeout_s: self.udp_timeout_s,
            icmp_timeout_s: 30,
            ethernet: u32::from(ethernet),
        }
    }
}

/// Attaches eBPF masquerading to `uplink` in `ns` and pins it.
pub fn attach(ns: &NetNs, uplink: &str, params: &NatParams) -> Result<(), ProgramSetupError> {
    let ethernet = Rtnl::open(ns)?.has_ethernet_header(uplink)?;
    let cfg = params.config(ethernet);
    let mut ebpf = load_object(OBJECT, objects::NAT, |loader| {
        loader.override_global("NAT_CONFIG", &cfg, true);
    })?;
    bpffs::ensure_mounted().map_err(|e| ProgramSetupError::Io {
        path: bpffs::BPFFS.into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let dir = pin_dir(ns.inode()?);
    std::fs::create_dir_all(&dir).map_err(|source| ProgramSetupError::Io {
        path: dir.clone(),
        source,
    })?;
    for (name, file) in MAPS {
        let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap {
            object: OBJECT,
            map: name,
        })?;
        map.pin(dir.join(file)).map_err(|e| pin_error(name, e))?;
    }
    for (name, dir_kind, file) in [
        ("nat_egress", TcAttachType::Egress, "egress"),
        ("nat_ingress", TcAttachType::Ingress, "ingress"),
    ] {
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
        let id = ns
            .run(|| prog.attach(uplink, dir_kind))?
            .map_err(|e| LoadError::attach(name, format!("{uplink} {dir_kind:?}"), e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| LoadError::attach(name, uplink, e))?;
        match FdLink::try_from(link) {
            // tcx (6.6+): the pinned link keeps the program attached.
            Ok(fd) => {
                fd.pin(dir.join(file)).map_err(|e| pin_error(name, e))?;
            }
            // Before 6.6 the filter hangs off the clsact qdisc and lives
            // until the qdisc (or the namespace) goes: keep it attached.
            Err(e) => {
                tracing::debug!("{name}: not an fd link ({e}); left on the qdisc");
            }
        }
    }
    Ok(())
}

fn pin_error(map: &'static str, error: aya::pin::PinError) -> ProgramSetupError {
    ProgramSetupError::Map {
        map,
        source: aya::maps::MapError::PinError {
            name: Some(map.into()),
            error,
        },
    }
}

/// Removes a node's pins: the links go (the programs detach), the maps go.
pub fn detach(netns_ino: u64) -> std::io::Result<()> {
    match std::fs::remove_dir_all(pin_dir(netns_ino)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One mapping, as `cilium bpf nat list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRow {
    /// `OUT` (pod flow -> translation) or `IN` (reverse).
    pub dir: &'static str,
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
}

impl NatTable {
    pub fn summary(&self) -> NatSummary {
        NatSummary {
            used: self.used,
            capacity: self.capacity,
            allocated: self.allocated,
            collisions: self.collisions,
            alloc_failed: self.alloc_failed,
        }
    }
}

fn open(dir: &Path, file: &str, name: &'static str) -> Result<MapData, ProgramSetupError> {
    MapData::from_pin(dir.join(file)).map_err(|source| ProgramSetupError::Map { map: name, source })
}

/// Whether eBPF masquerading is pinned for the namespace with this inode.
pub fn present(netns_ino: u64) -> bool {
    pin_dir(netns_ino).join("out").exists()
}

/// Reads a node's pinned NAT table.
pub fn table(netns_ino: u64) -> Result<NatTable, ProgramSetupError> {
    let dir = pin_dir(netns_ino);
    let now = clock::monotonic_ns();
    let mut entries = Vec::new();
    for (name, file, dir_name) in [("NAT_OUT", "out", "OUT"), ("NAT_IN", "in", "IN")] {
        let map = Map::LruHashMap(open(&dir, file, name)?);
        let map: BpfHashMap<_, NatKey, NatEntry> = BpfHashMap::try_from(map)
            .map_err(|source| ProgramSetupError::Map { map: name, source })?;
        for item in map.iter() {
            let (k, v) = item.map_err(|source| ProgramSetupError::Map { map: name, source })?;
            entries.push(NatRow {
                dir: dir_name,
                proto: crate::conntrack::entry::proto_name(k.proto, false),
                src: Ipv4Addr::from(k.saddr.to_ne_bytes()),
                sport: u16::from_be(k.sport),
                dst: Ipv4Addr::from(k.daddr.to_ne_bytes()),
                dport: u16::from_be(k.dport),
                xlate_addr: Ipv4Addr::from(v.to_addr.to_ne_bytes()),
                xlate_port: u16::from_be(v.to_port),
                closing: v.flags & NAT_CLOSING != 0,
                age_s: now.saturating_sub(v.created_ns) / 1_000_000_000,
                idle_s: now.saturating_sub(v.last_ns) / 1_000_000_000,
            });
        }
    }
    entries.sort_by(|a, b| {
        (a.dir, a.src, a.sport)
            .cmp(&(b.dir, b.src, b.sport))
            .reverse()
    });
    let stats = Map::PerCpuArray(open(&dir, "stats", "NAT_STATS")?);
    let stats: PerCpuArray<_, u64> =
        PerCpuArray::try_from(stats).map_err(|source| ProgramSetupError::Map {
            map: "NAT_STATS",
            source,
        })?;
    let get = |i: u32| -> Result<u64, ProgramSetupError> {
        Ok(stats
            .get(&i, 0)
            .map_err(|source| ProgramSetupError::Map {
                map: "NAT_STATS",
                source,
            })?
            .iter()
            .sum())
    };
    Ok(NatTable {
        used: entries.iter().filter(|e| e.dir == "OUT").count(),
        capacity: CAPACITY,
        allocated: get(stat::ALLOCATED)?,
        collisions: get(stat::COLLISIONS)?,
        alloc_failed: get(stat::ALLOC_FAILED)?,
        xlate_out: get(stat::XLATE_OUT)?,
        xlate_in: get(stat::XLATE_IN)?,
        expired: get(stat::EXPIRED)?,
        entries,
    })
}

/// Per-pod rows from the NAT programs' own counters (`labctl masq`).
pub fn pod_rows(netns_ino: u64) -> Result<Vec<MasqRow>, ProgramSetupError> {
    let dir = pin_dir(netns_ino);
    let map = Map::PerCpuHashMap(open(&dir, "pods", "NAT_POD_STATS")?);
    let map: PerCpuHashMap<_, MasqKey, MasqStats> =
        PerCpuHashMap::try_from(map).map_err(|source| ProgramSetupError::Map {
            map: "NAT_POD_STATS",
            source,
        })?;
    masq_counter::rows(&map, "NAT_POD_STATS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_mask_is_in_network_order() {
        let p = NatParams {
            node_addr: Ipv4Addr::new(172, 18, 0, 2),
            cluster: (Ipv4Addr::new(10, 244, 0, 0), 16),
            ports: (32768, 60999),
            udp_timeout_s: 30,
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
