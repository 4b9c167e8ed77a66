//! The drop counter (`lab-ebpf/src/bin/drop_counter.rs`): counts
//! `skb:kfree_skb` drops per (netns, reason code).

use aya::{
    Ebpf,
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
};
use lab_common::{DropCountKey, DropCounterConfig};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    maps, objects, offsets,
};
use crate::kernel::{
    btf::KernelBtf,
    tracefs::{self, EventFormat},
};

const OBJECT: &str = "drop-counter";
const PROGRAM: &str = "drop_counter";
const MAP: &str = "DROP_COUNTS";

/// The attached counter. Dropping it detaches the program.
pub struct DropCounterProgram {
    ebpf: Ebpf,
}

impl DropCounterProgram {
    /// Loads and attaches the counter; `netns_ino` restricts it to one
    /// netns; drops with reason code `consumed` are not counted.
    pub fn attach(
        btf: &KernelBtf,
        consumed: u32,
        netns_ino: Option<u32>,
    ) -> Result<Self, ProgramSetupError> {
        let tracefs = tracefs::ensure_mounted()?;
        let format = EventFormat::read(&tracefs.root, "skb", "kfree_skb")?;
        let config = DropCounterConfig {
            tp_skbaddr: format.field("skbaddr")?.offset,
            tp_reason: format.field("reason")?.offset,
            netns: offsets::netns_offsets(btf)?,
            reason_consumed: consumed,
            filter_netns_ino: netns_ino.unwrap_or(0),
            skb_mark: btf.member_offset("sk_buff", "mark")?,
        };
        let mut ebpf = load_object(OBJECT, objects::DROP_COUNTER, |loader| {
            loader.override_global("CONFIG", &config, true);
        })?;
        let p: &mut TracePoint = program(&mut ebpf, OBJECT, PROGRAM)?;
        p.load().map_err(|e| LoadError::load(PROGRAM, e))?;
        p.attach("skb", "kfree_skb")
            .map_err(|e| LoadError::attach(PROGRAM, "tracepoint skb:kfree_skb", e))?;
        Ok(Self { ebpf })
    }

    /// Current counts per (netns, reason), summed over CPUs.
    pub fn counts(&self) -> Result<Vec<(DropCountKey, u64)>, ProgramSetupError> {
        let map: PerCpuHashMap<_, DropCountKey, u64> = maps::get(&self.ebpf, OBJECT, MAP)?;
        maps::totals(&map, MAP)
    }

    /// Drops that could not be counted because the map was full.
    pub fn uncounted(&self) -> Result<u64, ProgramSetupError> {
        let map: PerCpuArray<_, u64> = maps::get(&self.ebpf, OBJECT, "UNCOUNTED")?;
        let values = map.get(&0, 0).map_err(|source| ProgramSetupError::Map {
            map: "UNCOUNTED",
            source,
        })?;
        Ok(maps::total(&values))
    }
}
