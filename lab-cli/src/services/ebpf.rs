//! The eBPF load balancer's maps as services: planning the map entries
//! that write frontends into them (as Cilium's agent does), writing them,
//! and reading them back; and the datapath of the two eBPF modes (tc per
//! packet, socket-LB per connection), which differ only in where the maps
//! and programs are.
//!
//! A sync reuses the backend id of every backend that stays and the
//! rev-NAT index of every frontend that stays, writes a frontend's backend
//! slots before its master entry (so a program never sees a count with
//! slots missing), and deletes what is gone after. Removing a backend from
//! a service therefore rewrites that service's slots and its master entry,
//! and deletes one backend entry: a handful of map writes, whatever the
//! number of services.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    net::Ipv4Addr,
    path::PathBuf,
};

use lab_common::lb::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};

use super::{
    Flow, FrontendView, ServiceError,
    datapath::{Cluster, ServiceDatapath, ServicePlan, Write, merged},
    ebpf_flows, map_views,
    model::{Endpoint, Frontend, KubeProxyMode, L4},
};
use crate::{
    ebpf::{self as programs, error::ProgramSetupError, lb::LbMaps, pins},
    kernel::{
        cgroup,
        datapath::{Part, Plan},
    },
};

fn be32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// What a change is counted as.
pub const UNIT: &str = "eBPF map entries";

/// One write to a load balancer's maps. Values are as the maps hold them
/// (addresses, ports and rev-NAT indexes in network order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// `LB4_REVERSE_NAT[index] = VIP:port`.
    RevNat {
        index: u16,
        nat: Lb4ReverseNat,
    },
    /// A new backend: its connection counter zeroed, then its entry in
    /// `LB4_BACKENDS`.
    Backend {
        id: u32,
        backend: Lb4Backend,
    },
    /// `LB4_SERVICES[key] = value`: a slot, or the master entry (slot 0).
    Service {
        key: Lb4Key,
        value: Lb4Service,
    },
    DeleteService(Lb4Key),
    DeleteBackend(u32),
    DeleteRevNat(u16),
}

fn frontend(key: &Lb4Key) -> String {
    let proto = L4::from_number(key.proto).map_or("ANY", L4::kube);
    format!(
        "{}:{}/{proto} slot {}",
        addr(key.address),
        u16::from_be(key.dport),
        key.backend_slot
    )
}

/// As `bpftool map update` / `delete` would be read: the map, the key,
/// and the value.
impl fmt::Display for MapOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapOp::RevNat { index, nat } => write!(
                f,
                "update LB4_REVERSE_NAT {} = {}:{}",
                u16::from_be(*index),
                addr(nat.address),
                u16::from_be(nat.port)
            ),
            MapOp::Backend { id, backend } => write!(
                f,
                "update LB4_BACKENDS {id} = {}:{}/{} (LB4_BACKEND_CONNS {id} = 0)",
                addr(backend.address),
                u16::from_be(backend.port),
                L4::from_number(backend.proto).map_or("ANY", L4::kube)
            ),
            MapOp::Service { key, value } if key.backend_slot == 0 => write!(
                f,
                "update LB4_SERVICES {} = {} backend{}, rev-nat {}",
                frontend(key),
                value.count,
                if value.count == 1 { "" } else { "s" },
                u16::from_be(value.rev_nat_index)
            ),
            MapOp::Service { key, value } => write!(
                f,
                "update LB4_SERVICES {} = backend {}, rev-nat {}",
                frontend(key),
                value.backend_id,
                u16::from_be(value.rev_nat_index)
            ),
            MapOp::DeleteService(key) => write!(f, "delete LB4_SERVICES {}", frontend(key)),
            MapOp::DeleteBackend(id) => write!(f, "delete LB4_BACKENDS {id}"),
            MapOp::DeleteRevNat(index) => {
                write!(f, "delete LB4_REVERSE_NAT {}", u16::from_be(*index))
            }
        }
    }
}

/// What a load balancer's maps hold, as raw rows.
#[derive(Debug, Clone, Default)]
pub struct MapRows {
    pub services: Vec<(Lb4Key, Lb4Service)>,
    pub backends: Vec<(u32, Lb4Backend)>,
    pub revnat: Vec<(u16, Lb4ReverseNat)>,
}

impl MapRows {
    pub fn read(maps: &LbMaps) -> Result<Self, ProgramSetupError> {
        Ok(Self {
            services: maps.service_rows()?,
            backends: maps.backend_rows()?,
            revnat: maps.revnat_rows()?,
        })
    }
}

/// The map writes that make maps holding `old` hold exactly `frontends`,
/// in the order they must be written.
pub fn plan_maps(old: &MapRows, frontends: &[Frontend]) -> Vec<MapOp> {
    let mut ops = Vec::new();
    // Backends: (addr, port, proto) -> id, reusing ids.
    let old_backends: BTreeMap<u32, Lb4Backend> = old.backends.iter().copied().collect();
    let mut ids: BTreeMap<(u32, u16, u8), u32> = old_backends
        .iter()
        .map(|(id, b)| ((b.address, b.port, b.proto), *id))
        .collect();
    let mut used_ids: BTreeSet<u32> = BTreeSet::new();
    let mut next_id = 1u32;
    let old_services: HashMap<Lb4Key, Lb4Service> = old.services.iter().copied().collect();
    let old_revnat: BTreeMap<u16, Lb4ReverseNat> = old.revnat.iter().copied().collect();
    // Rev-NAT indexes: (vip, port, proto) -> index, reusing indexes.
    let mut rev: BTreeMap<(u32, u16, u8), u16> = old_services
        .iter()
        .filter(|(k, _)| k.backend_slot == 0)
        .map(|(k, s)| ((k.address, k.dport, k.proto), s.rev_nat_index))
        .collect();
    let mut used_rev: BTreeSet<u16> = BTreeSet::new();
    let mut taken_rev: BTreeSet<u16> = rev.values().copied().collect();
    let mut taken_ids: BTreeSet<u32> = ids.values().copied().collect();
    let mut next_rev = 1u16;
    let mut wanted_keys = HashSet::new();
    for f in frontends {
        let (vip, port, proto) = (be32(f.vip), f.port.to_be(), f.proto.number());
        let rev_index = match rev.get(&(vip, port, proto)) {
            Some(i) => *i,
            None => {
                while taken_rev.contains(&next_rev.to_be()) {
                    next_rev += 1;
                }
                let i = next_rev.to_be();
                rev.insert((vip, port, proto), i);
                taken_rev.insert(i);
                i
            }
        };
        used_rev.insert(rev_index);
        let nat = Lb4ReverseNat {
            address: vip,
            port,
            _pad: 0,
        };
        if old_revnat.get(&rev_index) != Some(&nat) {
            ops.push(MapOp::RevNat {
                index: rev_index,
                nat,
            });
        }
        let mut slot = 0u16;
        for e in &f.backends {
            let b = Lb4Backend {
                address: be32(e.addr),
                port: e.port.to_be(),
                proto,
                flags: 0,
                cluster_id: 0,
                zone: 0,
                _pad: 0,
            };
            let id = match ids.get(&(b.address, b.port, b.proto)) {
                Some(id) => *id,
                None => {
                    while taken_ids.contains(&next_id) {
                        next_id += 1;
                    }
                    ids.insert((b.address, b.port, b.proto), next_id);
                    taken_ids.insert(next_id);
                    ops.push(MapOp::Backend {
                        id: next_id,
                        backend: b,
                    });
                    next_id
                }
            };
            used_ids.insert(id);
            slot += 1;
            let key = Lb4Key::new(vip, port, proto, slot);
            let value = Lb4Service {
                backend_id: id,
                count: 0,
                rev_nat_index: rev_index,
                flags: 0,
                flags2: 0,
                qcount: 0,
            };
            wanted_keys.insert(key);
            if old_services.get(&key) != Some(&value) {
                ops.push(MapOp::Service { key, value });
            }
        }
        let master = Lb4Key::new(vip, port, proto, 0);
        let value = Lb4Service {
            backend_id: 0,
            count: slot,
            rev_nat_index: rev_index,
            flags: 0,
            flags2: 0,
            qcount: 0,
        };
        wanted_keys.insert(master);
        if old_services.get(&master) != Some(&value) {
            ops.push(MapOp::Service { key: master, value });
        }
    }
    // What is gone: master entries first, then their slots.
    let mut stale: Vec<&Lb4Key> = old_services
        .keys()
        .filter(|k| !wanted_keys.contains(*k))
        .collect();
    stale.sort_by_key(|k| {
        (
            k.backend_slot != 0,
            u32::from_be(k.address),
            u16::from_be(k.dport),
            k.proto,
            k.backend_slot,
        )
    });
    ops.extend(stale.into_iter().map(|k| MapOp::DeleteService(*k)));
    ops.extend(
        old_backends
            .keys()
            .filter(|id| !used_ids.contains(*id))
            .map(|id| MapOp::DeleteBackend(*id)),
    );
    ops.extend(
        old_revnat
            .keys()
            .filter(|i| !used_rev.contains(i))
            .map(|i| MapOp::DeleteRevNat(*i)),
    );
    ops
}

/// Writes `ops` into `maps`, in order.
pub fn apply(maps: &mut LbMaps, ops: &[MapOp]) -> Result<(), ProgramSetupError> {
    for op in ops {
        match op {
            MapOp::RevNat { index, nat } => maps.set_revnat(*index, *nat)?,
            MapOp::Backend { id, backend } => {
                maps.reset_connections(*id)?;
                maps.set_backend(*id, *backend)?;
            }
            MapOp::Service { key, value } => maps.set_service(*key, *value)?,
            MapOp::DeleteService(key) => maps.remove_service(key)?,
            MapOp::DeleteBackend(id) => maps.remove_backend(*id)?,
            MapOp::DeleteRevNat(index) => maps.remove_revnat(*index)?,
        }
    }
    Ok(())
}

/// Writes `frontends` into `maps` (plans, then applies: what a node's
/// sync does to its maps); returns the map entries written or deleted.
pub fn sync(maps: &mut LbMaps, frontends: &[Frontend]) -> Result<usize, ProgramSetupError> {
    let ops = plan_maps(&MapRows::read(maps)?, frontends);
    apply(maps, &ops)?;
    Ok(ops.len())
}

/// The two eBPF modes on a cluster: the tc load balancer on each node's
/// pod veths (maps per node), or socket-LB on the lab's cgroup (one set of
/// maps).
pub struct Ebpf {
    mode: KubeProxyMode,
    cluster: Cluster,
    socket: bool,
}

/// One load balancer: what output calls it, the node it is on (None:
/// socket-LB's, the lab's), its pin directory.
struct Balancer<'a> {
    target: String,
    node: Option<&'a str>,
    dir: PathBuf,
}

impl Ebpf {
    pub fn per_packet(mode: KubeProxyMode, cluster: Cluster) -> Self {
        Self {
            mode,
            cluster,
            socket: false,
        }
    }

    pub fn socket(mode: KubeProxyMode, cluster: Cluster) -> Self {
        Self {
            mode,
            cluster,
            socket: true,
        }
    }

    fn balancers(&self) -> Result<Vec<Balancer<'_>>, ServiceError> {
        if self.socket {
            let cg = self
                .cluster
                .cgroup
                .as_ref()
                .ok_or(ServiceError::NoLabCgroup)?;
            return Ok(vec![Balancer {
                target: format!("cgroup {}", cg.name),
                node: None,
                dir: pins::socklb(cg.inode),
            }]);
        }
        self.cluster
            .nodes
            .iter()
            .map(|n| {
                Ok(Balancer {
                    target: n.name.clone(),
                    node: Some(n.name.as_str()),
                    dir: pins::lb(n.ns.inode()?),
                })
            })
            .collect()
    }
}

/// One load balancer's part of a plan, from what its maps hold: one line
/// and one change per map entry written or deleted.
fn balancer_part(
    target: String,
    dir: PathBuf,
    rows: &MapRows,
    frontends: &[Frontend],
) -> Part<Write> {
    let ops = plan_maps(rows, frontends);
    Part {
        target,
        lines: ops.iter().map(ToString::to_string).collect(),
        changes: ops.len(),
        write: Write::Maps { dir, ops },
    }
}

impl ServiceDatapath for Ebpf {
    fn mode(&self) -> KubeProxyMode {
        self.mode
    }

    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn check(&self) -> Result<(), ServiceError> {
        if self.socket && cgroup::cgroup2_root().is_none() {
            return Err(ServiceError::NoCgroup2);
        }
        Ok(())
    }

    fn unit(&self) -> &'static str {
        UNIT
    }

    fn install(&self) -> Result<(), ServiceError> {
        if self.socket {
            let cg = self
                .cluster
                .cgroup
                .as_ref()
                .ok_or(ServiceError::NoLabCgroup)?;
            programs::lb::attach_socket(&cgroup::path(&cg.name)?, cg.inode)?;
            return Ok(());
        }
        for node in &self.cluster.nodes {
            let veths: Vec<&str> = node.veths.iter().map(String::as_str).collect();
            programs::lb::attach_tc(&node.ns, &veths)?;
        }
        Ok(())
    }

    fn plan(&self, frontends: &[Frontend]) -> Result<ServicePlan, ServiceError> {
        let mut plan = Plan::new(UNIT);
        for b in self.balancers()? {
            let rows = MapRows::read(&LbMaps::open(&b.dir)?)?;
            plan.push(balancer_part(b.target, b.dir, &rows, frontends));
        }
        Ok(plan)
    }

    fn read(&self) -> Result<Vec<FrontendView>, ServiceError> {
        let mut per_node = Vec::new();
        for b in self.balancers()? {
            let maps = LbMaps::open(&b.dir)?;
            per_node.push(map_views(read(&maps)?, self.mode.as_str()));
        }
        Ok(merged(per_node))
    }

    fn flows(&self) -> Result<Vec<Flow>, ServiceError> {
        let mut out = Vec::new();
        for b in self.balancers()? {
            out.extend(ebpf_flows(&LbMaps::open(&b.dir)?, b.node)?);
        }
        Ok(out)
    }

    /// Removing the pins detaches the programs (their links are held by
    /// the pins only) and frees the maps.
    fn teardown(&self) -> Result<(), ServiceError> {
        for b in self.balancers()? {
            programs::lb::detach(&b.dir)?;
        }
        Ok(())
    }

    fn loads_programs(&self) -> bool {
        true
    }

    fn pod_cgroups(&self) -> bool {
        self.socket
    }

    fn holder(&self) -> &'static str {
        "eBPF maps"
    }
}

/// One frontend as the maps hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct MapFrontend {
    pub vip: Ipv4Addr,
    pub port: u16,
    /// None: Cilium 1.16's "any protocol" (0).
    pub proto: Option<L4>,
    pub rev_nat_index: u16,
    /// Each slot's backend id, the backend (None: a dangling id) and its
    /// connection count (None where there is no such counter).
    pub backends: Vec<(u32, Option<Endpoint>, Option<u64>)>,
}

/// Groups raw service and backend rows into frontends, slots in order.
/// `conns` gives a backend id's connection count, where known.
pub fn frontends(
    services: &[(Lb4Key, Lb4Service)],
    backends: &BTreeMap<u32, Lb4Backend>,
    conns: impl Fn(u32) -> Option<u64>,
) -> Vec<MapFrontend> {
    // Slots by frontend: 10,000 services have 40,000 entries.
    type Row = (Lb4Key, Lb4Service);
    let mut by_frontend: HashMap<(u32, u16, u8), Vec<&Row>> = HashMap::new();
    for row in services.iter().filter(|(k, _)| k.backend_slot != 0) {
        by_frontend
            .entry((row.0.address, row.0.dport, row.0.proto))
            .or_default()
            .push(row);
    }
    let mut out = Vec::new();
    for (key, master) in services.iter().filter(|(k, _)| k.backend_slot == 0) {
        let mut slots: Vec<_> = by_frontend
            .get(&(key.address, key.dport, key.proto))
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|(k, _)| k.backend_slot <= master.count)
            .copied()
            .collect();
        slots.sort_by_key(|(k, _)| k.backend_slot);
        out.push(MapFrontend {
            vip: addr(key.address),
            port: u16::from_be(key.dport),
            proto: L4::from_number(key.proto),
            rev_nat_index: u16::from_be(master.rev_nat_index),
            backends: slots
                .iter()
                .map(|(_, s)| {
                    let b = backends.get(&s.backend_id).map(|b| Endpoint {
                        addr: addr(b.address),
                        port: u16::from_be(b.port),
                    });
                    (s.backend_id, b, conns(s.backend_id))
                })
                .collect(),
        });
    }
    out.sort_by_key(|f| (f.vip, f.port, f.proto));
    out
}

/// The frontends of one of our load balancers.
pub fn read(maps: &LbMaps) -> Result<Vec<MapFrontend>, ProgramSetupError> {
    let services = maps.service_rows()?;
    let backends: BTreeMap<u32, Lb4Backend> = maps.backend_rows()?.into_iter().collect();
    let mut counts = BTreeMap::new();
    for id in backends.keys() {
        counts.insert(*id, maps.connections(*id)?);
    }
    Ok(frontends(&services, &backends, |id| {
        counts.get(&id).copied()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rows_group_into_frontends_in_slot_order() {
        let vip = be32(Ipv4Addr::new(10, 96, 0, 10));
        let key = |slot| Lb4Key::new(vip, 80u16.to_be(), 6, slot);
        let svc = |id, count| Lb4Service {
            backend_id: id,
            count,
            rev_nat_index: 1u16.to_be(),
            flags: 0,
            flags2: 0,
            qcount: 0,
        };
        // Slot 3 is beyond the count (a shrink in progress): not shown.
        let services = vec![
            (key(2), svc(7, 0)),
            (key(0), svc(0, 2)),
            (key(1), svc(5, 0)),
            (key(3), svc(9, 0)),
        ];
        let backend = |h| Lb4Backend {
            address: be32(Ipv4Addr::new(10, 244, 1, h)),
            port: 8080u16.to_be(),
            proto: 6,
            flags: 0,
            cluster_id: 0,
            zone: 0,
            _pad: 0,
        };
        let backends = BTreeMap::from([(5, backend(3)), (7, backend(4))]);
        let got = frontends(&services, &backends, |id| Some(u64::from(id) * 10));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].port, got[0].proto, got[0].rev_nat_index),
            (80, Some(L4::Tcp), 1)
        );
        let ids: Vec<_> = got[0].backends.iter().map(|b| (b.0, b.2)).collect();
        assert_eq!(ids, [(5, Some(50)), (7, Some(70))]);
        assert_eq!(
            got[0].backends[1].1.as_ref().unwrap().to_string(),
            "10.244.1.4:8080"
        );
    }

    /// The rows `ops` leave in maps holding `rows` (a model of the writes).
    fn written(mut rows: MapRows, ops: &[MapOp]) -> MapRows {
        fn put<K: PartialEq + Copy, V: Copy>(rows: &mut Vec<(K, V)>, k: K, v: V) {
            rows.retain(|(x, _)| *x != k);
            rows.push((k, v));
        }
        for op in ops {
            match op {
                MapOp::RevNat { index, nat } => put(&mut rows.revnat, *index, *nat),
                MapOp::Backend { id, backend } => put(&mut rows.backends, *id, *backend),
                MapOp::Service { key, value } => put(&mut rows.services, *key, *value),
                MapOp::DeleteService(k) => rows.services.retain(|(x, _)| x != k),
                MapOp::DeleteBackend(id) => rows.backends.retain(|(x, _)| x != id),
                MapOp::DeleteRevNat(i) => rows.revnat.retain(|(x, _)| x != i),
            }
        }
        rows
    }

    #[test]
    fn adding_a_fourth_backend_plans_exactly_three_map_entries() {
        let backend = |n, h| Endpoint {
            addr: Ipv4Addr::new(10, 244, n, h),
            port: 8080,
        };
        let mut f = Frontend {
            namespace: "ns1".into(),
            service: "svc1".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: L4::Tcp,
            backends: vec![backend(1, 3), backend(2, 2), backend(2, 3)],
        };
        // The first sync: rev-NAT, 3 backends, 3 slots, the master entry.
        let first = plan_maps(&MapRows::default(), std::slice::from_ref(&f));
        assert_eq!(first.len(), 8, "{first:?}");
        let rows = written(MapRows::default(), &first);
        f.backends.push(backend(1, 4));
        let part = balancer_part(
            "lab/node1".into(),
            PathBuf::from("/sys/fs/bpf/labctl/lb-1"),
            &rows,
            std::slice::from_ref(&f),
        );
        // The new backend, its slot, and the master entry's count: the
        // other slots, backends and the rev-NAT entry stay.
        assert_eq!(
            part.lines,
            [
                "update LB4_BACKENDS 4 = 10.244.1.4:8080/TCP (LB4_BACKEND_CONNS 4 = 0)",
                "update LB4_SERVICES 10.96.0.10:80/TCP slot 4 = backend 4, rev-nat 1",
                "update LB4_SERVICES 10.96.0.10:80/TCP slot 0 = 4 backends, rev-nat 1",
            ]
        );
        assert_eq!(part.changes, 3);
        let Write::Maps { dir, ops } = &part.write else {
            panic!("the eBPF modes write maps: {:?}", part.write)
        };
        assert_eq!(dir, &PathBuf::from("/sys/fs/bpf/labctl/lb-1"));
        let vip = be32(f.vip);
        assert_eq!(
            ops[1],
            MapOp::Service {
                key: Lb4Key::new(vip, 80u16.to_be(), 6, 4),
                value: Lb4Service {
                    backend_id: 4,
                    count: 0,
                    rev_nat_index: 1u16.to_be(),
                    flags: 0,
                    flags2: 0,
                    qcount: 0,
                },
            }
        );

        // Removing the first backend: every slot after it moves up, the
        // last slot and the backend go, masters before slots.
        let rows = written(rows, ops);
        f.backends.remove(0);
        let ops = plan_maps(&rows, std::slice::from_ref(&f));
        let lines: Vec<String> = ops.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "update LB4_SERVICES 10.96.0.10:80/TCP slot 1 = backend 2, rev-nat 1",
                "update LB4_SERVICES 10.96.0.10:80/TCP slot 2 = backend 3, rev-nat 1",
                "update LB4_SERVICES 10.96.0.10:80/TCP slot 3 = backend 4, rev-nat 1",
                "update LB4_SERVICES 10.96.0.10:80/TCP slot 0 = 3 backends, rev-nat 1",
                "delete LB4_SERVICES 10.96.0.10:80/TCP slot 4",
                "delete LB4_BACKENDS 1",
            ]
        );
        // Written, the maps hold the frontend; planned again, nothing.
        let rows = written(rows, &ops);
        assert!(plan_maps(&rows, std::slice::from_ref(&f)).is_empty());
        let backends: BTreeMap<u32, Lb4Backend> = rows.backends.iter().copied().collect();
        let got = frontends(&rows.services, &backends, |_| None);
        let eps: Vec<String> = got[0]
            .backends
            .iter()
            .map(|b| b.1.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(
            eps,
            ["10.244.2.2:8080", "10.244.2.3:8080", "10.244.1.4:8080"]
        );
        // The service gone: master first, then its slots, backends, rev-NAT.
        let ops = plan_maps(&rows, &[]);
        assert_eq!(ops.len(), 1 + 3 + 3 + 1, "{ops:?}");
        assert!(matches!(ops[0], MapOp::DeleteService(k) if k.backend_slot == 0));
        assert_eq!(ops.last(), Some(&MapOp::DeleteRevNat(1u16.to_be())));
    }
}
