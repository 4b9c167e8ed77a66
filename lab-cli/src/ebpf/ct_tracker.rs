//! The eBPF connection tracker: attach to one interface (ingress + egress),
//! read its LRU table as conntrack entries, detach.
//!
//! On kernels >= 6.6 aya attaches through tcx (bpf links: released when the
//! object is dropped, no qdisc); before that through a clsact qdisc and
//! netlink, which is why attaching and detaching both happen inside the
//! interface's namespace.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuHashMap},
    programs::{SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use lab_common::ct::{CtConfig, CtCounters, CtKey, CtValue, ORIG, REPLY, tcp_state};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    objects,
};
use crate::{
    conntrack::entry::{Counters, CtEntry, Source, TCP_STATES, Tuple},
    kernel::{clock, netns::NetNs, rtnl::Rtnl},
};

const OBJECT: &str = "ct-tracker";
const PROGRAM: &str = "ct_tracker";
const MAP: &str = "CT";
const COUNTERS: &str = "CT_COUNTERS";

/// How long an idle flow lives, by protocol and state, in seconds: the
/// netfilter defaults (nf_conntrack_*_timeout*), so both views age alike.
pub fn lifetime_s(proto: u8, state: u8, seen_reply: bool) -> u64 {
    match (proto, state) {
        (6, tcp_state::ESTABLISHED) => 432_000,
        (6, tcp_state::SYN_SENT | tcp_state::SYN_RECV) => 120,
        (6, tcp_state::FIN_WAIT | tcp_state::CLOSE_WAIT | tcp_state::TIME_WAIT) => 120,
        (6, tcp_state::LAST_ACK) => 30,
        (6, tcp_state::CLOSE) => 10,
        (6, _) => 300,
        (17, _) if seen_reply => 120,
        (17, _) => 30,
        _ => 30,
    }
}

/// A tracker attached to one interface. Dropping it detaches.
pub struct CtTracker {
    ebpf: Option<Ebpf>,
    netns: Option<PathBuf>,
    iface: String,
    pin: Option<PathBuf>,
}

impl CtTracker {
    /// Loads the tracker and attaches it to both directions of `iface` in
    /// `ns` (None: the caller's namespace).
    pub fn attach(ns: Option<&NetNs>, iface: &str) -> Result<Self, ProgramSetupError> {
        let rtnl = match ns {
            Some(ns) => Rtnl::open(ns)?,
            None => Rtnl::current()?,
        };
        let ethernet = rtnl.has_ethernet_header(iface)?;
        let config = CtConfig {
            ethernet: u32::from(ethernet),
        };
        let mut ebpf = load_object(OBJECT, objects::CT_TRACKER, |loader| {
            loader.override_global("CT_CONFIG", &config, true);
        })?;
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, PROGRAM)?;
        prog.load().map_err(|e| LoadError::load(PROGRAM, e))?;
        let attach = |prog: &mut SchedClassifier| -> Result<(), LoadError> {
            // Before 6.6 tc programs hang off a clsact qdisc (tcx after).
            if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0))
                && let Err(e) = tc::qdisc_add_clsact(iface)
            {
                tracing::debug!("clsact on {iface}: {e} (already there?)");
            }
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                prog.attach(iface, dir)
                    .map_err(|e| LoadError::attach(PROGRAM, format!("{iface} {dir:?}"), e))?;
            }
            Ok(())
        };
        match ns {
            Some(ns) => ns.run(|| attach(prog))??,
            None => attach(prog)?,
        }
        Ok(Self {
            ebpf: Some(ebpf),
            netns: ns.map(|n| n.path().to_owned()),
            iface: iface.to_owned(),
            pin: None,
        })
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn map(&self, name: &'static str) -> Result<&Map, ProgramSetupError> {
        self.ebpf
            .as_ref()
            .and_then(|e| e.map(name))
            .ok_or(ProgramSetupError::Load(LoadError::MissingMap {
                object: OBJECT,
                map: name,
            }))
    }

    /// The live flows of the table, as conntrack entries.
    pub fn entries(&self) -> Result<Vec<CtEntry>, ProgramSetupError> {
        read_maps(self.map(MAP)?, self.map(COUNTERS)?)
    }

    /// Pins the table and its counters in directory `dir` (`table`,
    /// `counters`) so other labctl processes can read them (`conntrack list
    /// --source bpf`); removed again when the tracker is dropped.
    pub fn pin(&mut self, dir: &Path) -> Result<(), ProgramSetupError> {
        std::fs::create_dir_all(dir).map_err(|source| ProgramSetupError::Io {
            path: dir.to_owned(),
            source,
        })?;
        self.pin = Some(dir.to_owned());
        let ebpf = self.ebpf.as_mut().ok_or(LoadError::MissingMap {
            object: OBJECT,
            map: MAP,
        })?;
        for (name, file) in [(MAP, "table"), (COUNTERS, "counters")] {
            let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap {
                object: OBJECT,
                map: name,
            })?;
            map.pin(dir.join(file)).map_err(|e| pin_error(name, e))?;
        }
        Ok(())
    }
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

impl Drop for CtTracker {
    fn drop(&mut self) {
        if let Some(pin) = self.pin.take()
            && let Err(e) = std::fs::remove_dir_all(&pin)
        {
            tracing::warn!("cannot unpin {}: {e}", pin.display());
        }
        let Some(ebpf) = self.ebpf.take() else {
            return;
        };
        // Netlink detach (kernels before 6.6) must run in the interface's
        // namespace; tcx links are released wherever the fd is closed.
        match &self.netns {
            Some(path) => {
                let ns = NetNs::at("tracker", path);
                if let Err(e) = ns.run(move || drop(ebpf)) {
                    tracing::warn!("detaching the tracker from {}: {e}", self.iface);
                }
            }
            None => drop(ebpf),
        }
    }
}

/// Reads a tracker's table pinned by `conntrack track` in directory `dir`.
pub fn read_pinned(dir: &Path) -> Result<Vec<CtEntry>, ProgramSetupError> {
    let open = |name: &'static str, file: &str| {
        MapData::from_pin(dir.join(file))
            .map_err(|source| ProgramSetupError::Map { map: name, source })
    };
    let table = Map::LruHashMap(open(MAP, "table")?);
    let counters = Map::PerCpuLruHashMap(open(COUNTERS, "counters")?);
    read_maps(&table, &counters)
}

fn read_maps(table: &Map, counters: &Map) -> Result<Vec<CtEntry>, ProgramSetupError> {
    let err = |map| move |source| ProgramSetupError::Map { map, source };
    let table: BpfHashMap<_, CtKey, CtValue> = BpfHashMap::try_from(table).map_err(err(MAP))?;
    let per_cpu: PerCpuHashMap<_, CtKey, CtCounters> =
        PerCpuHashMap::try_from(counters).map_err(err(COUNTERS))?;
    let mut sums: HashMap<CtKey, CtCounters> = HashMap::new();
    for item in per_cpu.iter() {
        let (k, cpus) = item.map_err(err(COUNTERS))?;
        let sum = sums.entry(k).or_default();
        for c in cpus.iter() {
            for d in [ORIG, REPLY] {
                sum.packets[d] += c.packets[d];
                sum.bytes[d] += c.bytes[d];
            }
        }
    }
    let mut raw = Vec::new();
    for item in table.iter() {
        let (k, v) = item.map_err(err(MAP))?;
        raw.push((k, v, sums.get(&k).copied().unwrap_or_default()));
    }
    Ok(to_entries(raw, clock::monotonic_ns()))
}

/// Table rows to entries, leaving out flows idle past their lifetime.
pub fn to_entries(raw: Vec<(CtKey, CtValue, CtCounters)>, now_ns: u64) -> Vec<CtEntry> {
    let mut out: Vec<CtEntry> = raw
        .into_iter()
        .filter_map(|(k, v, c)| {
            let idle_s = now_ns.saturating_sub(v.last_ns) / 1_000_000_000;
            let life = lifetime_s(k.proto, v.state, v.seen_reply != 0);
            (idle_s < life).then(|| entry(&k, &v, &c, now_ns, life - idle_s))
        })
        .collect();
    out.sort_by_key(CtEntry::key);
    out
}

fn entry(k: &CtKey, v: &CtValue, c: &CtCounters, now_ns: u64, timeout: u64) -> CtEntry {
    let addr = |a: u32| IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()));
    let port = |p: u16| u16::from_be(p);
    let icmp = k.proto == 1;
    let tuple = |src, dst, sport, dport, echo_type: u8| Tuple {
        src,
        dst,
        sport: (!icmp).then_some(sport),
        dport: (!icmp).then_some(dport),
        icmp_type: icmp.then_some(echo_type),
        icmp_code: icmp.then_some(0),
        icmp_id: icmp.then_some(sport),
    };
    let (s, d, sp, dp) = (addr(k.saddr), addr(k.daddr), port(k.sport), port(k.dport));
    let mut flags = Vec::new();
    if v.seen_reply != 0 {
        flags.push("SEEN_REPLY".to_owned());
    }
    CtEntry {
        source: Source::Bpf,
        family: "ipv4",
        proto: crate::conntrack::entry::proto_name(k.proto, false),
        proto_num: k.proto,
        state: (k.proto == 6).then(|| {
            TCP_STATES
                .get(usize::from(v.state))
                .map_or_else(|| v.state.to_string(), |s| (*s).to_owned())
        }),
        orig: tuple(s, d, sp, dp, 8),
        reply: tuple(d, s, dp, sp, 0),
        timeout: Some(u32::try_from(timeout).unwrap_or(u32::MAX)),
        flags,
        mark: 0,
        zone: 0,
        orig_counters: Some(Counters {
            packets: c.packets[ORIG],
            bytes: c.bytes[ORIG],
        }),
        reply_counters: Some(Counters {
            packets: c.packets[REPLY],
            bytes: c.bytes[REPLY],
        }),
        id: None,
        age_s: Some(now_ns.saturating_sub(v.first_ns) / 1_000_000_000),
        idle_s: Some(now_ns.saturating_sub(v.last_ns) / 1_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(proto: u8, state: u8, last_ns: u64) -> (CtKey, CtValue, CtCounters) {
        (
            CtKey {
                saddr: u32::from_ne_bytes([10, 244, 1, 2]),
                daddr: u32::from_ne_bytes([10, 244, 1, 3]),
                sport: 40000u16.to_be(),
                dport: 8080u16.to_be(),
                proto,
                _pad: [0; 3],
            },
            CtValue {
                first_ns: 0,
                last_ns,
                state,
                fin_dir: 0,
                seen_reply: 1,
                _pad: [0; 5],
            },
            CtCounters {
                packets: [3, 2],
                bytes: [180, 120],
            },
        )
    }

    #[test]
    fn rows_become_entries_in_host_order_and_expire() {
        let now = 100 * 1_000_000_000;
        let entries = to_entries(vec![raw(6, tcp_state::ESTABLISHED, now)], now);
        let e = &entries[0];
        assert_eq!(e.orig.describe(), "10.244.1.2:40000 → 10.244.1.3:8080");
        assert_eq!(e.reply.describe(), "10.244.1.3:8080 → 10.244.1.2:40000");
        assert_eq!(e.state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(
            e.orig_counters,
            Some(Counters {
                packets: 3,
                bytes: 180
            })
        );
        assert_eq!(e.age_s, Some(100));
        assert_eq!(e.timeout, Some(432_000));
        // A replied UDP flow idle for 121 s has expired.
        assert!(to_entries(vec![raw(17, 0, 0)], 121 * 1_000_000_000).is_empty());
        assert_eq!(
            to_entries(vec![raw(17, 0, 0)], 20 * 1_000_000_000)[0].timeout,
            Some(100)
        );
    }
}
