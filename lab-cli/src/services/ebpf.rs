//! The eBPF load balancer's maps as services: writing frontends into them
//! (as Cilium's agent does) and reading them back.
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
    net::Ipv4Addr,
};

use lab_common::lb::{Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service};

use super::model::{Endpoint, Frontend, L4};
use crate::ebpf::{error::ProgramSetupError, lb::LbMaps};

fn be32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// Writes `frontends` into `maps`; returns the map entries written or deleted.
pub fn sync(maps: &mut LbMaps, frontends: &[Frontend]) -> Result<usize, ProgramSetupError> {
    let mut changes = 0;
    // Backends: (addr, port, proto) -> id, reusing ids.
    let old_backends: BTreeMap<u32, Lb4Backend> = maps.backend_rows()?.into_iter().collect();
    let mut ids: BTreeMap<(u32, u16, u8), u32> = old_backends
        .iter()
        .map(|(id, b)| ((b.address, b.port, b.proto), *id))
        .collect();
    let mut used_ids: BTreeSet<u32> = BTreeSet::new();
    let mut next_id = 1u32;
    let old_services: HashMap<Lb4Key, Lb4Service> = maps.service_rows()?.into_iter().collect();
    let old_revnat: BTreeMap<u16, Lb4ReverseNat> = maps.revnat_rows()?.into_iter().collect();
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
            maps.set_revnat(rev_index, nat)?;
            changes += 1;
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
                    maps.reset_connections(next_id)?;
                    maps.set_backend(next_id, b)?;
                    changes += 1;
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
                maps.set_service(key, value)?;
                changes += 1;
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
            maps.set_service(master, value)?;
            changes += 1;
        }
    }
    // What is gone: master entries first, then their slots.
    let mut stale: Vec<&Lb4Key> = old_services
        .keys()
        .filter(|k| !wanted_keys.contains(*k))
        .collect();
    stale.sort_by_key(|k| k.backend_slot != 0);
    for key in stale {
        maps.remove_service(key)?;
        changes += 1;
    }
    for (id, _) in old_backends
        .iter()
        .filter(|(id, _)| !used_ids.contains(*id))
    {
        maps.remove_backend(*id)?;
        changes += 1;
    }
    for i in old_revnat.keys().filter(|i| !used_rev.contains(i)) {
        maps.remove_revnat(*i)?;
        changes += 1;
    }
    Ok(changes)
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
}
