//! The drop counter: counts `skb:kfree_skb` drops per (netns, reason).

use std::collections::BTreeMap;

use aya::{Ebpf, maps::PerCpuHashMap, programs::TracePoint};
use lab_common::{DropCountKey, DropCounterConfig};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object},
    objects, offsets,
};
use crate::{
    drop_reason::DropReasons,
    kernel::{
        btf::KernelBtf,
        tracefs::{self, EventFormat},
    },
};

const OBJECT: &str = "drop-counter";
const PROGRAM: &str = "drop_counter";
const MAP: &str = "DROP_COUNTS";

/// The attached drop counter. Dropping it detaches the program.
pub struct DropCounter {
    ebpf: Ebpf,
    reasons: DropReasons,
}

impl DropCounter {
    /// Loads and attaches the counter; `netns_ino` restricts it to one netns.
    pub fn attach(netns_ino: Option<u32>) -> Result<Self, ProgramSetupError> {
        let tracefs = tracefs::ensure_mounted()?;
        let format = EventFormat::read(&tracefs.root, "skb", "kfree_skb")?;
        let btf = KernelBtf::from_sys()?;
        let reasons = DropReasons::from_btf(&btf)?;
        let config = DropCounterConfig {
            tp_skbaddr: format.field("skbaddr")?.offset,
            tp_reason: format.field("reason")?.offset,
            netns: offsets::netns_offsets(&btf)?,
            reason_consumed: reasons.value("CONSUMED").unwrap_or(1),
            filter_netns_ino: netns_ino.unwrap_or(0),
        };
        let mut ebpf = load_object(OBJECT, objects::DROP_COUNTER, |loader| {
            loader.override_global("CONFIG", &config, true);
        })?;
        let program: &mut TracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or(LoadError::MissingProgram {
                object: OBJECT,
                program: PROGRAM,
            })?
            .try_into()
            .map_err(|e| LoadError::load(PROGRAM, e))?;
        program.load().map_err(|e| LoadError::load(PROGRAM, e))?;
        program
            .attach("skb", "kfree_skb")
            .map_err(|e| LoadError::attach(PROGRAM, "tracepoint skb:kfree_skb", e))?;
        Ok(Self { ebpf, reasons })
    }

    /// Current counts, summed over CPUs.
    pub fn counts(&self) -> Result<BTreeMap<DropCountKey, u64>, ProgramSetupError> {
        let map_err = |source| ProgramSetupError::Map { map: MAP, source };
        let map = self.ebpf.map(MAP).ok_or(LoadError::MissingMap {
            object: OBJECT,
            map: MAP,
        })?;
        let map: PerCpuHashMap<_, DropCountKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_err)?;
        let mut counts = BTreeMap::new();
        for entry in map.iter() {
            let (key, per_cpu) = entry.map_err(map_err)?;
            counts.insert(key, per_cpu.iter().sum());
        }
        Ok(counts)
    }

    pub fn reasons(&self) -> &DropReasons {
        &self.reasons
    }
}
