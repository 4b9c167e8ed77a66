//! Network policy as Cilium enforces it (`lab-ebpf/src/bin/policy.rs`):
//! load the `policy` object for a node, pin its maps and programs, attach
//! the programs to pod veths (tcx links pinned beside them), open the
//! pinned maps again to read or change them, and drain the verdict ring
//! buffer.
//!
//! The programs themselves are pinned too (`prog-from`, `prog-to`), so a
//! veth that comes later, or whose link went, is attached to the same
//! programs and maps. Removing the pin directory detaches everything.

use std::path::{Path, PathBuf};

use aya::{
    maps::{
        HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SchedClassifier, TcAttachType},
};
use lab_common::policy::{
    CtEntry, CtKey, EndpointInfo, IPCACHE_STATIC_PREFIX, IpcacheKey, MetricsKey, MetricsValue,
    POLICY_FULL_PREFIX, PolicyEntry, PolicyKey, RemoteEndpointInfo, VerdictEvent, stat,
};

use super::{
    error::ProgramSetupError,
    lb::map_err,
    loader::{LoadError, load_object, program},
    maps, objects, pins,
    tc::{self, TcAttach},
};
use crate::kernel::netns::NetNs;

const OBJECT: &str = "policy";
/// Maps and the file each is pinned as.
const MAPS: [(&str, &str); 7] = [
    ("POLICY_IPCACHE", "ipcache"),
    ("POLICY_ENDPOINTS", "endpoints"),
    ("POLICY_MAP", "policy"),
    ("POLICY_CT", "ct"),
    ("POLICY_METRICS", "metrics"),
    ("POLICY_STATS", "stats"),
    ("POLICY_EVENTS", "events"),
];

/// One of the two programs: where it attaches on a pod's host-side veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// `policy_from_pod`, tc ingress: packets leaving the pod (its egress).
    FromPod,
    /// `policy_to_pod`, tc egress: packets going into the pod (its ingress).
    ToPod,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::FromPod, Side::ToPod];

    pub fn program(self) -> &'static str {
        match self {
            Side::FromPod => "policy_from_pod",
            Side::ToPod => "policy_to_pod",
        }
    }

    pub fn attach_type(self) -> TcAttachType {
        match self {
            Side::FromPod => TcAttachType::Ingress,
            Side::ToPod => TcAttachType::Egress,
        }
    }

    /// `tc ingress` / `tc egress`.
    pub fn hook(self) -> &'static str {
        match self {
            Side::FromPod => "tc ingress",
            Side::ToPod => "tc egress",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Side::FromPod => "from",
            Side::ToPod => "to",
        }
    }

    /// The pinned program.
    fn prog_pin(self, dir: &Path) -> PathBuf {
        dir.join(format!("prog-{}", self.prefix()))
    }

    /// The pinned link on `veth`.
    pub fn link_pin(self, dir: &Path, veth: &str) -> PathBuf {
        dir.join(format!("{}-{veth}", self.prefix()))
    }
}

/// Whether a node's policy object is loaded (its maps pinned in `dir`).
pub fn loaded(dir: &Path) -> bool {
    dir.join(MAPS[2].1).exists() && Side::BOTH.iter().all(|s| s.prog_pin(dir).exists())
}

/// Loads the object, pins its maps and both programs in `dir`.
fn load_and_pin(dir: &Path) -> Result<aya::Ebpf, ProgramSetupError> {
    let mut ebpf = load_object(OBJECT, objects::POLICY, |_| {})?;
    maps::pin_all(&mut ebpf, OBJECT, dir, &MAPS)?;
    for side in Side::BOTH {
        let name = side.program();
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
        prog.pin(side.prog_pin(dir))
            .map_err(|e| maps::pin_error(name, e))?;
    }
    Ok(ebpf)
}

/// Whether the programs load here (the verifier, BTF): loads them and
/// lets them go, pinning nothing.
pub fn can_load() -> Result<(), ProgramSetupError> {
    let mut ebpf = load_object(OBJECT, objects::POLICY, |_| {})?;
    for side in Side::BOTH {
        let name = side.program();
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
    }
    Ok(())
}

/// Loads the object for the node `ns` unless it is (maps and programs
/// pinned under `dir`), and attaches both programs to each of `veths`
/// that lacks its link. Returns the links made.
pub fn attach(ns: &NetNs, dir: &Path, veths: &[&str]) -> Result<usize, ProgramSetupError> {
    if !loaded(dir) {
        // A half-pinned directory (a killed load) is made again whole.
        detach(dir)?;
        load_and_pin(dir)?;
    }
    let mut made = 0;
    for side in Side::BOTH {
        let missing: Vec<&&str> = veths
            .iter()
            .filter(|v| !side.link_pin(dir, v).exists())
            .collect();
        if missing.is_empty() {
            continue;
        }
        let name = side.program();
        let mut prog =
            SchedClassifier::from_pin(side.prog_pin(dir)).map_err(|e| LoadError::load(name, e))?;
        for veth in missing {
            let pin = side.link_pin(dir, veth);
            tc::attach_pinned(
                ns,
                &mut prog,
                name,
                veth,
                side.attach_type(),
                TcAttach::Auto,
                &pin,
            )?;
            made += 1;
        }
    }
    Ok(made)
}

/// Removes the link pins of veths other than `veths` (pods gone: on a
/// Kubernetes node pods come and go, and a pin would keep a dead link);
/// how many.
pub fn prune(dir: &Path, veths: &[&str]) -> Result<usize, ProgramSetupError> {
    let io = |source| ProgramSetupError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        let stale = Side::BOTH.iter().any(|s| {
            name.strip_prefix(s.prefix())
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|veth| !veths.contains(&veth))
        });
        if stale {
            std::fs::remove_file(dir.join(name.as_ref())).map_err(io)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes a node's pins (detaching its links); nothing pinned is not an
/// error.
pub fn detach(dir: &Path) -> Result<(), ProgramSetupError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProgramSetupError::Io {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// An ipcache row: prefix length (of the key's bits), key, value.
pub type IpcacheRow = (u32, IpcacheKey, RemoteEndpointInfo);
/// A policy map row: prefix length, key, value.
pub type PolicyRow = (u32, PolicyKey, PolicyEntry);

/// The pinned maps of one node, opened for reading and writing.
pub struct PolicyMaps {
    dir: PathBuf,
    ipcache: LpmTrie<MapData, IpcacheKey, RemoteEndpointInfo>,
    endpoints: BpfHashMap<MapData, u32, EndpointInfo>,
    policy: LpmTrie<MapData, PolicyKey, PolicyEntry>,
}

impl PolicyMaps {
    /// The maps pinned in `dir` ([`pins::policy`]).
    pub fn open(dir: &Path) -> Result<Self, ProgramSetupError> {
        Ok(Self {
            dir: dir.to_owned(),
            ipcache: maps::from_pin(&dir.join("ipcache"), "POLICY_IPCACHE", Map::LpmTrie)?,
            endpoints: maps::from_pin(&dir.join("endpoints"), "POLICY_ENDPOINTS", Map::HashMap)?,
            policy: maps::from_pin(&dir.join("policy"), "POLICY_MAP", Map::LpmTrie)?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ipcache_rows(&self) -> Result<Vec<IpcacheRow>, ProgramSetupError> {
        self.ipcache
            .iter()
            .map(|i| {
                let (k, v) = i.map_err(map_err("POLICY_IPCACHE"))?;
                Ok((k.prefix_len(), k.data(), v))
            })
            .collect()
    }

    pub fn set_ipcache(
        &mut self,
        prefix: u32,
        key: IpcacheKey,
        value: RemoteEndpointInfo,
    ) -> Result<(), ProgramSetupError> {
        self.ipcache
            .insert(&Key::new(prefix, key), value, 0)
            .map_err(map_err("POLICY_IPCACHE"))
    }

    pub fn remove_ipcache(
        &mut self,
        prefix: u32,
        key: IpcacheKey,
    ) -> Result<(), ProgramSetupError> {
        self.ipcache
            .remove(&Key::new(prefix, key))
            .map_err(map_err("POLICY_IPCACHE"))
    }

    pub fn endpoint_rows(&self) -> Result<Vec<(u32, EndpointInfo)>, ProgramSetupError> {
        self.endpoints
            .iter()
            .map(|i| i.map_err(map_err("POLICY_ENDPOINTS")))
            .collect()
    }

    pub fn set_endpoint(
        &mut self,
        ifindex: u32,
        info: EndpointInfo,
    ) -> Result<(), ProgramSetupError> {
        self.endpoints
            .insert(ifindex, info, 0)
            .map_err(map_err("POLICY_ENDPOINTS"))
    }

    pub fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), ProgramSetupError> {
        self.endpoints
            .remove(&ifindex)
            .map_err(map_err("POLICY_ENDPOINTS"))
    }

    /// Every policy entry, with its counters.
    pub fn policy_rows(&self) -> Result<Vec<PolicyRow>, ProgramSetupError> {
        self.policy
            .iter()
            .map(|i| {
                let (k, v) = i.map_err(map_err("POLICY_MAP"))?;
                Ok((k.prefix_len(), k.data(), v))
            })
            .collect()
    }

    pub fn set_policy(
        &mut self,
        prefix: u32,
        key: PolicyKey,
        value: PolicyEntry,
    ) -> Result<(), ProgramSetupError> {
        self.policy
            .insert(&Key::new(prefix, key), value, 0)
            .map_err(map_err("POLICY_MAP"))
    }

    pub fn remove_policy(&mut self, prefix: u32, key: PolicyKey) -> Result<(), ProgramSetupError> {
        self.policy
            .remove(&Key::new(prefix, key))
            .map_err(map_err("POLICY_MAP"))
    }

    /// The policy entry the program's lookup of `key` (nothing
    /// wildcarded) finds: the longest prefix covering it, as the kernel's
    /// trie answers the program.
    pub fn lookup_policy(&self, key: PolicyKey) -> Result<Option<PolicyEntry>, ProgramSetupError> {
        match self.policy.get(&Key::new(POLICY_FULL_PREFIX, key), 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("POLICY_MAP")(e)),
        }
    }

    /// The identity the ipcache gives address `ip4` (network order): the
    /// longest prefix covering it, as the program looks it up (None: no
    /// entry, the world).
    pub fn lookup_ipcache(&self, ip4: u32) -> Result<Option<u32>, ProgramSetupError> {
        let key = Key::new(IPCACHE_STATIC_PREFIX + 32, IpcacheKey::ipv4(ip4));
        match self.ipcache.get(&key, 0) {
            Ok(v) => Ok(Some(v.sec_identity)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("POLICY_IPCACHE")(e)),
        }
    }

    /// The endpoint plugged at `ifindex`.
    pub fn endpoint(&self, ifindex: u32) -> Result<Option<EndpointInfo>, ProgramSetupError> {
        match self.endpoints.get(&ifindex, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("POLICY_ENDPOINTS")(e)),
        }
    }

    /// The connections judged, each side's.
    pub fn ct_rows(&self) -> Result<Vec<(CtKey, CtEntry)>, ProgramSetupError> {
        let map: BpfHashMap<_, CtKey, CtEntry> =
            maps::from_pin(&self.dir.join("ct"), "POLICY_CT", Map::LruHashMap)?;
        map.iter()
            .map(|i| i.map_err(map_err("POLICY_CT")))
            .collect()
    }

    /// Packets and bytes per endpoint, verdict and direction (all CPUs).
    pub fn metrics(&self) -> Result<Vec<(MetricsKey, MetricsValue)>, ProgramSetupError> {
        let map: PerCpuHashMap<_, MetricsKey, MetricsValue> = maps::from_pin(
            &self.dir.join("metrics"),
            "POLICY_METRICS",
            Map::PerCpuHashMap,
        )?;
        maps::totals(&map, "POLICY_METRICS")
    }

    /// Node-wide counters: events lost, connections entered.
    pub fn stats(&self) -> Result<[u64; stat::COUNT as usize], ProgramSetupError> {
        let map: PerCpuArray<_, u64> =
            maps::from_pin(&self.dir.join("stats"), "POLICY_STATS", Map::PerCpuArray)?;
        let mut out = [0; stat::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = map.get(&(i as u32), 0).map_err(map_err("POLICY_STATS"))?;
            *slot = maps::total(&values);
        }
        Ok(out)
    }

    /// The verdict ring buffer (one reader at a time).
    pub fn events(&self) -> Result<Events, ProgramSetupError> {
        Ok(Events {
            ring: maps::from_pin(&self.dir.join("events"), "POLICY_EVENTS", Map::RingBuf)?,
        })
    }
}

/// A node's verdict events, as they come.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl Events {
    /// Every event in the ring now.
    pub fn drain(&mut self) -> Vec<VerdictEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<VerdictEvent>() {
                out.push(bytemuck::pod_read_unaligned(
                    &item[..size_of::<VerdictEvent>()],
                ));
            }
        }
        out
    }

    /// The ring's descriptor, to wait for it to be readable.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.ring.as_fd()
    }
}

/// The policy programs loaded on their own (attached nowhere), their maps
/// and programs pinned in a directory of their own so they are written as
/// a node's are ([`PolicyMaps`]), and run on frames given by the caller
/// through BPF_PROG_TEST_RUN. A test run's packet is on `lo` (ifindex 1):
/// [`TestBench::run`] plugs the endpoint the caller names there first. The
/// directory goes when the bench is dropped.
pub struct TestBench {
    progs: [SchedClassifier; 2],
    dir: PathBuf,
}

/// The ifindex of a BPF_PROG_TEST_RUN packet (the loopback device).
const TEST_RUN_IFINDEX: u32 = 1;

impl TestBench {
    pub fn load() -> Result<Self, ProgramSetupError> {
        let dir = pins::root().join(format!(
            "policy-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        load_and_pin(&dir)?;
        let from = |side: Side| {
            SchedClassifier::from_pin(side.prog_pin(&dir))
                .map_err(|e| LoadError::load(side.program(), e))
        };
        Ok(Self {
            progs: [from(Side::FromPod)?, from(Side::ToPod)?],
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The maps, to write a node's entries into.
    pub fn maps(&self) -> Result<PolicyMaps, ProgramSetupError> {
        PolicyMaps::open(&self.dir)
    }

    /// Runs one program once on `frame` as the veth with ifindex
    /// `ifindex` (whose endpoint entry is copied to the test run's
    /// device): its verdict (TC_ACT_*) and the packet's mark after it.
    pub fn run(
        &mut self,
        side: Side,
        ifindex: u32,
        frame: &[u8],
    ) -> Result<TestRun, ProgramSetupError> {
        self.run_repeat(side, ifindex, frame, 1)
    }

    /// As [`TestBench::run`], `repeat` times: the kernel's average time
    /// per run too.
    pub fn run_repeat(
        &mut self,
        side: Side,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRun, ProgramSetupError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let mut maps = self.maps()?;
        // A veth that is no endpoint: none on the test device either.
        let plugged = maps.endpoints.get(&ifindex, 0).ok();
        if let Some(ep) = plugged {
            maps.set_endpoint(TEST_RUN_IFINDEX, ep)?;
        }
        let i = match side {
            Side::FromPod => 0,
            Side::ToPod => 1,
        };
        // A zeroed `struct __sk_buff` in and out: the mark comes back at
        // offset 8 (after `len` and `pkt_type`).
        let ctx_in = [0u8; SK_BUFF_SIZE];
        let mut ctx_out = [0u8; SK_BUFF_SIZE];
        let mut data_out = vec![0u8; frame.len() + 256];
        let result = self.progs[i]
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut data_out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| LoadError::Program {
                program: side.program().to_owned(),
                source: Box::new(e),
            });
        if plugged.is_some() {
            maps.remove_endpoint(TEST_RUN_IFINDEX)?;
        }
        let result = result?;
        Ok(TestRun {
            verdict: result.return_value as i32,
            mark: u32::from_ne_bytes([ctx_out[8], ctx_out[9], ctx_out[10], ctx_out[11]]),
            ns_per_run: result.duration.as_nanos() as u64,
        })
    }
}

/// `sizeof(struct __sk_buff)` (192 since Linux 5.16; the kernel takes a
/// shorter one, and gives back as much as fits).
const SK_BUFF_SIZE: usize = 192;

/// One BPF_PROG_TEST_RUN of a policy program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// TC_ACT_*.
    pub verdict: i32,
    /// The packet's mark after the program (set on a policy drop).
    pub mark: u32,
    /// The kernel's average time per run, in nanoseconds.
    pub ns_per_run: u64,
}

impl Drop for TestBench {
    fn drop(&mut self) {
        if let Err(e) = detach(&self.dir) {
            tracing::warn!("{e}");
        }
    }
}
