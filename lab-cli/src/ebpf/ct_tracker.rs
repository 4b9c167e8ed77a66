//! The eBPF connection tracker (`lab-ebpf/src/bin/ct_tracker.rs`): attach
//! to one interface (ingress + egress), read its LRU table and per-CPU
//! counters as raw rows, pin them, detach.
//!
//! On kernels >= 6.6 the programs hang off tcx links (released when the
//! object is dropped); before that off a clsact qdisc through netlink,
//! which is why detaching happens inside the interface's namespace.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuHashMap},
    programs::{SchedClassifier, TcAttachType},
};
use lab_common::ct::{CtConfig, CtCounters, CtKey, CtValue};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    maps, objects,
    tc::{self, TcAttach},
};
use crate::kernel::{netns::NetNs, rtnl::Rtnl};

const OBJECT: &str = "ct-tracker";
const PROGRAM: &str = "ct_tracker";
const MAP: &str = "CT";
const COUNTERS: &str = "CT_COUNTERS";
/// File names of the pinned maps in a tracker's pin directory.
const PINS: [(&str, &str); 2] = [(MAP, "table"), (COUNTERS, "counters")];

/// One flow of the table: key, state, and per-direction totals.
pub type CtRow = (CtKey, CtValue, CtCounters);

/// A tracker attached to one interface. Dropping it detaches (and unpins).
pub struct CtTrackerProgram {
    ebpf: Option<Ebpf>,
    netns: Option<PathBuf>,
    iface: String,
    pin: Option<PathBuf>,
}

impl CtTrackerProgram {
    /// Loads the tracker and attaches it to both directions of `iface` in
    /// `ns` (None: the caller's namespace).
    pub fn attach(ns: Option<&NetNs>, iface: &str) -> Result<Self, ProgramSetupError> {
        let rtnl = match ns {
            Some(ns) => Rtnl::open(ns)?,
            None => Rtnl::current()?,
        };
        let config = CtConfig {
            ethernet: u32::from(rtnl.has_ethernet_header(iface)?),
        };
        let mut ebpf = load_object(OBJECT, objects::CT_TRACKER, |loader| {
            loader.override_global("CT_CONFIG", &config, true);
        })?;
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, PROGRAM)?;
        prog.load().map_err(|e| LoadError::load(PROGRAM, e))?;
        for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
            tc::attach(ns, prog, PROGRAM, iface, dir, TcAttach::Auto)?;
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

    fn ebpf(&self) -> Result<&Ebpf, ProgramSetupError> {
        self.ebpf
            .as_ref()
            .ok_or(ProgramSetupError::Load(LoadError::MissingMap {
                object: OBJECT,
                map: MAP,
            }))
    }

    /// The rows of the table, with their counters.
    pub fn rows(&self) -> Result<Vec<CtRow>, ProgramSetupError> {
        let ebpf = self.ebpf()?;
        read(
            maps::get(ebpf, OBJECT, MAP)?,
            maps::get(ebpf, OBJECT, COUNTERS)?,
        )
    }

    /// Pins the table and its counters in directory `dir` so other labctl
    /// processes can read them ([`read_pinned`]); removed again when the
    /// tracker is dropped.
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
        for (name, file) in PINS {
            maps::pin(ebpf, OBJECT, name, &dir.join(file))?;
        }
        Ok(())
    }
}

impl Drop for CtTrackerProgram {
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
                match ns.run(move || drop(ebpf)) {
                    Ok(()) => {}
                    // Its namespace is gone (`lab down`), and with it the
                    // interface the program was attached to.
                    Err(e) if !path.exists() => {
                        tracing::debug!("detaching the tracker from {}: {e}", self.iface);
                    }
                    Err(e) => tracing::warn!("detaching the tracker from {}: {e}", self.iface),
                }
            }
            None => drop(ebpf),
        }
    }
}

/// Reads a tracker's table pinned by another process in directory `dir`.
pub fn read_pinned(dir: &Path) -> Result<Vec<CtRow>, ProgramSetupError> {
    let [(table, table_file), (counters, counters_file)] = PINS;
    read(
        maps::from_pin(&dir.join(table_file), table, Map::LruHashMap)?,
        maps::from_pin(&dir.join(counters_file), counters, Map::PerCpuLruHashMap)?,
    )
}

fn read<T: std::borrow::Borrow<MapData>>(
    table: BpfHashMap<T, CtKey, CtValue>,
    counters: PerCpuHashMap<T, CtKey, CtCounters>,
) -> Result<Vec<CtRow>, ProgramSetupError> {
    let sums: HashMap<CtKey, CtCounters> = maps::totals(&counters, COUNTERS)?.into_iter().collect();
    table
        .iter()
        .map(|item| {
            let (k, v) = item.map_err(|source| ProgramSetupError::Map { map: MAP, source })?;
            Ok((k, v, sums.get(&k).copied().unwrap_or_default()))
        })
        .collect()
}
