//! Service load balancing (`lab-ebpf/src/bin/lb.rs`): load the `lb`
//! object, attach its tc programs to pod veths (per packet) or its cgroup
//! programs to a cgroup (socket-LB), pin maps and links so they outlive
//! the `labctl` that set them up, and open the pinned maps again to read
//! or change the services.
//!
//! Removing the pin directory detaches everything: the tcx and cgroup
//! links are held by their pins only. (With a clsact qdisc, before 6.6,
//! the tc filters stay until the veth goes, which `lab down` does.)

use std::path::{Path, PathBuf};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, links::FdLink},
};
use lab_common::{
    flow::FlowKey,
    lb::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service, LbCtEntry, RevSkEntry, RevSkKey},
};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    maps, objects, pins,
    tc::{self, TcAttach},
};
use crate::kernel::netns::NetNs;

const OBJECT: &str = "lb";
/// Maps and the file each is pinned as.
const MAPS: [(&str, &str); 7] = [
    ("LB4_SERVICES", "services"),
    ("LB4_BACKENDS", "backends"),
    ("LB4_REVERSE_NAT", "revnat"),
    ("LB4_CT", "ct"),
    ("LB4_CT_REV", "ct_rev"),
    ("LB4_REVERSE_SK", "reverse_sk"),
    ("LB4_BACKEND_CONNS", "conns"),
];
/// The tc programs, their direction on a pod's host-side veth, and the
/// prefix of their link pins.
const TC_PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("lb_from_pod", TcAttachType::Ingress, "from"),
    ("lb_to_pod", TcAttachType::Egress, "to"),
];
/// The socket-LB programs (each pinned under its hook's name).
const SOCK_PROGRAMS: [(&str, &str); 4] = [
    ("sock_connect4", "connect4"),
    ("sock_sendmsg4", "sendmsg4"),
    ("sock_recvmsg4", "recvmsg4"),
    ("sock_getpeername4", "getpeername4"),
];

fn load_and_pin(dir: &Path) -> Result<aya::Ebpf, ProgramSetupError> {
    let mut ebpf = load_object(OBJECT, objects::LB, |_| {})?;
    maps::pin_all(&mut ebpf, OBJECT, dir, &MAPS)?;
    Ok(ebpf)
}

/// Attaches the tc load balancer to each of `veths` (host-side ends of pod
/// veth pairs) in `ns`, pinned under [`pins::lb`].
pub fn attach_tc(ns: &NetNs, veths: &[&str]) -> Result<(), ProgramSetupError> {
    let dir = pins::lb(ns.inode()?);
    let mut ebpf = load_and_pin(&dir)?;
    for (name, dir_kind, prefix) in TC_PROGRAMS {
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
        for veth in veths {
            let pin = dir.join(format!("{prefix}-{veth}"));
            tc::attach_pinned(ns, prog, name, veth, dir_kind, TcAttach::Auto, &pin)?;
        }
    }
    Ok(())
}

/// Attaches socket-LB to the cgroup at `cgroup` (inode `cgroup_ino`),
/// pinned under [`pins::socklb`]: every socket created by a process in it
/// or below is translated, nothing else.
pub fn attach_socket(cgroup: &Path, cgroup_ino: u64) -> Result<(), ProgramSetupError> {
    let dir = pins::socklb(cgroup_ino);
    let mut ebpf = load_and_pin(&dir)?;
    let cg = std::fs::File::open(cgroup).map_err(|source| ProgramSetupError::Io {
        path: cgroup.to_owned(),
        source,
    })?;
    for (name, file) in SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, OBJECT, name)?;
        prog.load().map_err(|e| LoadError::load(name, e))?;
        let id = prog
            .attach(&cg, CgroupAttachMode::Single)
            .map_err(|e| LoadError::attach(name, cgroup.display().to_string(), e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| LoadError::attach(name, cgroup.display().to_string(), e))?;
        let fd = FdLink::try_from(link).map_err(|source| ProgramSetupError::Link {
            program: name,
            source,
        })?;
        fd.pin(dir.join(file))
            .map_err(|e| maps::pin_error(name, e))?;
    }
    Ok(())
}

/// Removes a load balancer's pins (detaching its links); nothing pinned is
/// not an error.
pub fn detach(dir: &Path) -> Result<(), ProgramSetupError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProgramSetupError::Io {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The pinned maps of one load balancer, opened for reading and writing.
pub struct LbMaps {
    dir: PathBuf,
    services: BpfHashMap<MapData, Lb4Key, Lb4Service>,
    backends: BpfHashMap<MapData, u32, Lb4Backend>,
    revnat: BpfHashMap<MapData, u16, Lb4ReverseNat>,
    conns: PerCpuArray<MapData, u64>,
}

/// A map error as a setup error.
pub fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProgramSetupError {
    move |source| ProgramSetupError::Map { map, source }
}

impl LbMaps {
    /// The maps pinned in `dir` ([`pins::lb`] or [`pins::socklb`]).
    pub fn open(dir: &Path) -> Result<Self, ProgramSetupError> {
        Ok(Self {
            dir: dir.to_owned(),
            services: maps::from_pin(&dir.join("services"), "LB4_SERVICES", Map::HashMap)?,
            backends: maps::from_pin(&dir.join("backends"), "LB4_BACKENDS", Map::HashMap)?,
            revnat: maps::from_pin(&dir.join("revnat"), "LB4_REVERSE_NAT", Map::HashMap)?,
            conns: maps::from_pin(&dir.join("conns"), "LB4_BACKEND_CONNS", Map::PerCpuArray)?,
        })
    }

    /// Every entry of `LB4_SERVICES`.
    pub fn service_rows(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, ProgramSetupError> {
        self.services
            .iter()
            .map(|i| i.map_err(map_err("LB4_SERVICES")))
            .collect()
    }

    pub fn set_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), ProgramSetupError> {
        self.services
            .insert(key, value, 0)
            .map_err(map_err("LB4_SERVICES"))
    }

    pub fn remove_service(&mut self, key: &Lb4Key) -> Result<(), ProgramSetupError> {
        self.services.remove(key).map_err(map_err("LB4_SERVICES"))
    }

    pub fn set_backend(&mut self, id: u32, value: Lb4Backend) -> Result<(), ProgramSetupError> {
        self.backends
            .insert(id, value, 0)
            .map_err(map_err("LB4_BACKENDS"))
    }

    pub fn remove_backend(&mut self, id: u32) -> Result<(), ProgramSetupError> {
        self.backends.remove(&id).map_err(map_err("LB4_BACKENDS"))
    }

    /// Every entry of `LB4_REVERSE_NAT`.
    pub fn revnat_rows(&self) -> Result<Vec<(u16, Lb4ReverseNat)>, ProgramSetupError> {
        self.revnat
            .iter()
            .map(|i| i.map_err(map_err("LB4_REVERSE_NAT")))
            .collect()
    }

    pub fn set_revnat(
        &mut self,
        index: u16,
        value: Lb4ReverseNat,
    ) -> Result<(), ProgramSetupError> {
        self.revnat
            .insert(index, value, 0)
            .map_err(map_err("LB4_REVERSE_NAT"))
    }

    pub fn remove_revnat(&mut self, index: u16) -> Result<(), ProgramSetupError> {
        self.revnat
            .remove(&index)
            .map_err(map_err("LB4_REVERSE_NAT"))
    }

    /// Every entry of `LB4_BACKENDS`.
    pub fn backend_rows(&self) -> Result<Vec<(u32, Lb4Backend)>, ProgramSetupError> {
        self.backends
            .iter()
            .map(|i| i.map_err(map_err("LB4_BACKENDS")))
            .collect()
    }

    /// New connections given to backend `id` so far (all CPUs).
    pub fn connections(&self, id: u32) -> Result<u64, ProgramSetupError> {
        let values = self
            .conns
            .get(&id, 0)
            .map_err(map_err("LB4_BACKEND_CONNS"))?;
        Ok(maps::total(&values))
    }

    /// Zeroes backend `id`'s connection count (a new backend in a reused id).
    pub fn reset_connections(&mut self, id: u32) -> Result<(), ProgramSetupError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| ProgramSetupError::Io {
            path: "/sys/devices/system/cpu/possible".into(),
            source,
        })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus]).map_err(|source| {
            ProgramSetupError::Io {
                path: self.dir.join("conns"),
                source,
            }
        })?;
        self.conns
            .set(id, zeros, 0)
            .map_err(map_err("LB4_BACKEND_CONNS"))
    }

    /// The tc load balancer's translated connections (client flow ->
    /// backend); empty for socket-LB.
    pub fn connections_table(&self) -> Result<Vec<(FlowKey, LbCtEntry)>, ProgramSetupError> {
        let path = self.dir.join("ct");
        let map: BpfHashMap<_, FlowKey, LbCtEntry> =
            maps::from_pin(&path, "LB4_CT", Map::LruHashMap)?;
        map.iter().map(|i| i.map_err(map_err("LB4_CT"))).collect()
    }

    /// Socket-LB's per-socket reverse entries.
    pub fn socket_table(&self) -> Result<Vec<(RevSkKey, RevSkEntry)>, ProgramSetupError> {
        let path = self.dir.join("reverse_sk");
        let map: BpfHashMap<_, RevSkKey, RevSkEntry> =
            maps::from_pin(&path, "LB4_REVERSE_SK", Map::LruHashMap)?;
        map.iter()
            .map(|i| i.map_err(map_err("LB4_REVERSE_SK")))
            .collect()
    }
}

/// The tc load balancer loaded on its own (attached nowhere), its maps
/// pinned in a directory of its own so they can be written as a node's
/// are ([`LbMaps`]), and run on frames given by the caller through
/// BPF_PROG_TEST_RUN. The directory goes when the bench is dropped.
pub struct TestBench {
    ebpf: aya::Ebpf,
    dir: PathBuf,
}

/// Which of the two tc programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `lb_from_pod`: a packet leaving a pod.
    FromPod,
    /// `lb_to_pod`: a packet going into a pod.
    ToPod,
}

impl TestBench {
    pub fn load() -> Result<Self, ProgramSetupError> {
        let dir = pins::root().join(format!(
            "lb-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut ebpf = load_and_pin(&dir)?;
        for (name, _, _) in TC_PROGRAMS {
            let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, name)?;
            prog.load().map_err(|e| LoadError::load(name, e))?;
        }
        Ok(Self { ebpf, dir })
    }

    /// The maps, to write services into (`services::ebpf::sync`).
    pub fn maps(&self) -> Result<LbMaps, ProgramSetupError> {
        LbMaps::open(&self.dir)
    }

    /// Runs one program once on `frame`: its verdict and the frame after.
    pub fn run(&mut self, side: Side, frame: &[u8]) -> Result<(i32, Vec<u8>), ProgramSetupError> {
        let name = match side {
            Side::FromPod => TC_PROGRAMS[0].0,
            Side::ToPod => TC_PROGRAMS[1].0,
        };
        let prog: &mut SchedClassifier = program(&mut self.ebpf, OBJECT, name)?;
        let out = tc::test_run(prog, name, frame, 1)?;
        Ok((out.verdict, out.frame))
    }
}

impl Drop for TestBench {
    fn drop(&mut self) {
        if let Err(e) = detach(&self.dir) {
            tracing::warn!("{e}");
        }
    }
}
