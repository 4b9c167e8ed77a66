//! eBPF masquerading on a lab node (`lab-ebpf/src/bin/nat.rs`): load the
//! `nat` object, attach its two tc programs to the node's uplink, pin the
//! maps (and, with tcx, the links) so the translation outlives the `labctl
//! lab up` that set it up, and read the pinned maps back as raw rows.
//!
//! With tcx (6.6+) the pinned links keep the programs attached, and
//! removing the pins detaches them. With a clsact qdisc (before 6.6, or
//! [`TcAttach::Netlink`]) the netlink filters keep them attached until they
//! are removed ([`detach`]) or the interface goes.

use aya::{
    maps::{HashMap as BpfHashMap, Map, PerCpuArray, PerCpuHashMap},
    programs::{SchedClassifier, TcAttachType, links::FdLink},
};
use lab_common::{
    masq::{MasqKey, MasqStats},
    nat::{NatConfig, NatEntry, NatKey, stat},
};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    maps, objects, pins,
    tc::{self, TcAttach},
};
use crate::kernel::netns::NetNs;

const OBJECT: &str = "nat";
/// Maps and the file each is pinned as.
const MAPS: [(&str, &str); 4] = [
    ("NAT_OUT", "out"),
    ("NAT_IN", "in"),
    ("NAT_STATS", "stats"),
    ("NAT_POD_STATS", "pods"),
];
/// Programs, their direction and the file their tcx link is pinned as.
const PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("nat_egress", TcAttachType::Egress, "egress"),
    ("nat_ingress", TcAttachType::Ingress, "ingress"),
];

/// Attaches eBPF masquerading configured by `cfg` to `uplink` in `ns` and
/// pins it. `cfg.ethernet` is filled in from the uplink.
pub fn attach(
    ns: &NetNs,
    uplink: &str,
    cfg: &NatConfig,
    mode: TcAttach,
) -> Result<(), ProgramSetupError> {
    let mut ebpf = load_object(OBJECT, objects::NAT, |loader| {
        loader.override_global("NAT_CONFIG", cfg, true);
    })?;
    pins::ensure_root()?;
    let dir = pins::nat(ns.inode()?);
    std::fs::create_dir_all(&dir).map_err(|source| ProgramSetupError::Io {
        path: dir.clone(),
        source,
    })?;
    for (name, file) in MAPS {
        maps::pin(&mut ebpf, OBJECT, name, &dir.join(file))?;
    }
    for (name, dir_kind, file) in PROGRAMS {
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
        let id = tc::attach(Some(ns), prog, name, uplink, dir_kind, mode)?;
        let link = prog
            .take_link(id)
            .map_err(|e| LoadError::attach(name, uplink, e))?;
        if mode.uses_netlink() {
            // The filter holds the program; the link is only a handle whose
            // drop would detach it, so it is let go without dropping.
            std::mem::forget(link);
            continue;
        }
        let fd = FdLink::try_from(link).map_err(|source| ProgramSetupError::Link {
            program: name,
            source,
        })?;
        fd.pin(dir.join(file))
            .map_err(|e| maps::pin_error(name, e))?;
    }
    Ok(())
}

/// Removes a node's masquerading: the netlink filters on `uplink` in `ns`
/// when they were attached that way (no link pins), then the pins (which
/// detaches tcx links and frees the maps).
pub fn detach(ns: &NetNs, netns_ino: u64, uplink: &str) -> Result<(), ProgramSetupError> {
    let dir = pins::nat(netns_ino);
    if !dir.exists() {
        return Ok(());
    }
    let tcx = PROGRAMS.iter().all(|(_, _, file)| dir.join(file).exists());
    if !tcx {
        for (name, dir_kind, _) in PROGRAMS {
            tc::detach_netlink(ns, name, uplink, dir_kind)?;
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|source| ProgramSetupError::Io { path: dir, source })
}

/// Whether eBPF masquerading is pinned for the namespace with this inode.
pub fn present(netns_ino: u64) -> bool {
    pins::nat(netns_ino).join("out").exists()
}

/// The raw contents of a node's pinned maps.
pub struct NatMaps {
    /// `NAT_OUT`: pod flow -> translation.
    pub out: Vec<(NatKey, NatEntry)>,
    /// `NAT_IN`: translated flow -> pod.
    pub r#in: Vec<(NatKey, NatEntry)>,
    /// `NAT_STATS`, indexed by `lab_common::nat::stat`.
    pub stats: [u64; stat::COUNT as usize],
}

/// Reads a node's pinned NAT table and counters.
pub fn read(netns_ino: u64) -> Result<NatMaps, ProgramSetupError> {
    let dir = pins::nat(netns_ino);
    let table = |name: &'static str, file: &str| -> Result<Vec<_>, ProgramSetupError> {
        let map: BpfHashMap<_, NatKey, NatEntry> =
            maps::from_pin(&dir.join(file), name, Map::LruHashMap)?;
        map.iter()
            .map(|item| item.map_err(|source| ProgramSetupError::Map { map: name, source }))
            .collect()
    };
    let stats: PerCpuArray<_, u64> =
        maps::from_pin(&dir.join("stats"), "NAT_STATS", Map::PerCpuArray)?;
    let mut totals = [0u64; stat::COUNT as usize];
    for (i, slot) in (0u32..).zip(totals.iter_mut()) {
        let values = stats.get(&i, 0).map_err(|source| ProgramSetupError::Map {
            map: "NAT_STATS",
            source,
        })?;
        *slot = maps::total(&values);
    }
    Ok(NatMaps {
        out: table("NAT_OUT", "out")?,
        r#in: table("NAT_IN", "in")?,
        stats: totals,
    })
}

/// The NAT programs' own per-pod counters (`labctl masq`).
pub fn pod_stats(netns_ino: u64) -> Result<Vec<(MasqKey, MasqStats)>, ProgramSetupError> {
    let map: PerCpuHashMap<_, MasqKey, MasqStats> = maps::from_pin(
        &pins::nat(netns_ino).join("pods"),
        "NAT_POD_STATS",
        Map::PerCpuHashMap,
    )?;
    maps::totals(&map, "NAT_POD_STATS")
}
