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
    maps::{HashMap as BpfHashMap, Map, PerCpuArray},
    programs::{SchedClassifier, TcAttachType},
};
use lab_common::{
    masq::{MasqKey, MasqStats},
    nat::{NatConfig, NatEntry, NatKey, stat},
};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    maps, objects, pins,
    tc::{self, TcAttach, TestRunOutput},
};
use crate::kernel::netns::NetNs;

const OBJECT: &str = "nat";
/// Maps and the file each is pinned as (the slot counter `NAT_SLOT_NEXT`
/// needs no pin: only the programs use it, and they hold it).
const MAPS: [(&str, &str); 5] = [
    ("NAT_OUT", "out"),
    ("NAT_IN", "in"),
    ("NAT_STATS", "stats"),
    ("NAT_POD_SLOTS", "pod_slots"),
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
    let dir = pins::nat(ns.inode()?);
    maps::pin_all(&mut ebpf, OBJECT, &dir, &MAPS)?;
    for (name, dir_kind, file) in PROGRAMS {
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
        tc::attach_pinned(ns, prog, name, uplink, dir_kind, mode, &dir.join(file))?;
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
            maps::from_pin(&dir.join(file), name, Map::HashMap)?;
        map.iter()
            .map(|item| item.map_err(|source| ProgramSetupError::Map { map: name, source }))
            .collect()
    };
    let stats: PerCpuArray<_, u64> =
        maps::from_pin(&dir.join("stats"), "NAT_STATS", Map::PerCpuArray)?;
    Ok(NatMaps {
        out: table("NAT_OUT", "out")?,
        r#in: table("NAT_IN", "in")?,
        stats: stat_totals(&stats)?,
    })
}

/// `NAT_STATS` summed over the CPUs.
fn stat_totals<T: std::borrow::Borrow<aya::maps::MapData>>(
    stats: &PerCpuArray<T, u64>,
) -> Result<[u64; stat::COUNT as usize], ProgramSetupError> {
    let mut totals = [0u64; stat::COUNT as usize];
    for (i, slot) in (0u32..).zip(totals.iter_mut()) {
        let values = stats.get(&i, 0).map_err(|source| ProgramSetupError::Map {
            map: "NAT_STATS",
            source,
        })?;
        *slot = maps::total(&values);
    }
    Ok(totals)
}

/// The NAT programs' own per-pod counters (`labctl masq`): each pod's
/// slot, and the per-CPU counts there, added up.
pub fn pod_stats(netns_ino: u64) -> Result<Vec<(MasqKey, MasqStats)>, ProgramSetupError> {
    let dir = pins::nat(netns_ino);
    let slots: BpfHashMap<_, MasqKey, u32> =
        maps::from_pin(&dir.join("pod_slots"), "NAT_POD_SLOTS", Map::HashMap)?;
    let stats: PerCpuArray<_, MasqStats> =
        maps::from_pin(&dir.join("pods"), "NAT_POD_STATS", Map::PerCpuArray)?;
    let mut out = Vec::new();
    for item in slots.iter() {
        let (key, slot) = item.map_err(|source| ProgramSetupError::Map {
            map: "NAT_POD_SLOTS",
            source,
        })?;
        let per_cpu = stats
            .get(&slot, 0)
            .map_err(|source| ProgramSetupError::Map {
                map: "NAT_POD_STATS",
                source,
            })?;
        out.push((key, maps::total(&per_cpu)));
    }
    Ok(out)
}

/// The NAT programs loaded on their own (no interface, no pins) and run on
/// frames given by the caller through BPF_PROG_TEST_RUN: the programs'
/// behaviour and their per-packet cost with nothing else around them.
pub struct TestBench {
    ebpf: aya::Ebpf,
}

/// Which of the two programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Egress,
    Ingress,
}

impl TestBench {
    pub fn load(cfg: &NatConfig) -> Result<Self, ProgramSetupError> {
        Self::load_sized(cfg, lab_common::nat::CAPACITY)
    }

    /// As [`load`](Self::load), with NAT tables of `capacity` mappings
    /// (a small table fills in a few thousand runs).
    pub fn load_sized(cfg: &NatConfig, capacity: u32) -> Result<Self, ProgramSetupError> {
        let cfg = NatConfig { capacity, ..*cfg };
        let mut ebpf = load_object(OBJECT, objects::NAT, |loader| {
            loader.override_global("NAT_CONFIG", &cfg, true);
            loader.map_max_entries("NAT_OUT", capacity);
            loader.map_max_entries("NAT_IN", capacity);
        })?;
        for (name, _, _) in PROGRAMS {
            let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
            prog.load().map_err(|e| LoadError::load(name, e))?;
        }
        Ok(Self { ebpf })
    }

    /// Runs one program `repeat` times on `frame`.
    pub fn run(
        &mut self,
        dir: Direction,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutput, ProgramSetupError> {
        let name = match dir {
            Direction::Egress => PROGRAMS[0].0,
            Direction::Ingress => PROGRAMS[1].0,
        };
        let prog: &mut SchedClassifier = program(&mut self.ebpf, OBJECT, name)?;
        tc::test_run(prog, name, frame, repeat)
    }

    /// The counters, indexed by `lab_common::nat::stat`, as [`read`]
    /// returns a node's.
    pub fn stats(&self) -> Result<[u64; stat::COUNT as usize], ProgramSetupError> {
        let stats: PerCpuArray<_, u64> = maps::get(&self.ebpf, OBJECT, "NAT_STATS")?;
        stat_totals(&stats)
    }

    /// The mappings the programs made, as [`read`] returns a node's.
    pub fn table(&self) -> Result<Vec<(NatKey, NatEntry)>, ProgramSetupError> {
        let map = self.ebpf.map("NAT_OUT").ok_or(LoadError::MissingMap {
            object: OBJECT,
            map: "NAT_OUT",
        })?;
        let map: BpfHashMap<_, NatKey, NatEntry> =
            BpfHashMap::try_from(map).map_err(|source| ProgramSetupError::Map {
                map: "NAT_OUT",
                source,
            })?;
        map.iter()
            .map(|item| {
                item.map_err(|source| ProgramSetupError::Map {
                    map: "NAT_OUT",
                    source,
                })
            })
            .collect()
    }
}
