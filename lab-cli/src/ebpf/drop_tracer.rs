//! Loading and reading the packet drop tracer (`lab-ebpf/src/bin/drop_tracer.rs`).

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf,
    maps::{HashMap as AyaHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{BtfTracePoint, TracePoint},
};
use lab_common::trace::{self, DropEvent, DropSite, LOST_INDEX, TraceConfig, flags};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, vmlinux_btf},
    maps, objects,
    offsets::skb_offsets,
};
use crate::kernel::{
    btf::KernelBtf,
    tracefs::{self, EventFormat},
};

const OBJECT: &str = "drop-tracer";
const BTF_PROGRAM: &str = "drop_tracer_btf";
const TP_PROGRAM: &str = "drop_tracer_tp";

/// Which hook the tracer ended up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `tp_btf/kfree_skb`: typed arguments, preferred.
    BtfTracepoint,
    /// `tracepoint/skb/kfree_skb`: record offsets from tracefs.
    Tracepoint,
}

impl Hook {
    pub fn describe(self) -> &'static str {
        match self {
            Hook::BtfTracepoint => "tp_btf/kfree_skb",
            Hook::Tracepoint => "tracepoint skb:kfree_skb",
        }
    }
}

/// The attached tracer. Dropping it detaches the program.
pub struct DropTracer {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    hook: Hook,
}

impl DropTracer {
    /// Fills in offsets and the consumed reason, loads, and attaches. `config`
    /// carries the filters; `ring_bytes` sizes the ring buffer.
    pub fn attach(
        btf: &KernelBtf,
        mut config: TraceConfig,
        reason_consumed: u32,
        ring_bytes: u32,
        prefer_classic: bool,
    ) -> Result<Self, ProgramSetupError> {
        let page = 4096;
        if !ring_bytes.is_power_of_two() || ring_bytes < page {
            return Err(ProgramSetupError::RingSize(ring_bytes));
        }
        let tracefs = tracefs::ensure_mounted()?;
        let format = EventFormat::read(&tracefs.root, "skb", "kfree_skb")?;
        config.off = skb_offsets(btf)?;
        config.tp_skbaddr = format.field("skbaddr")?.offset;
        config.tp_location = format.field("location")?.offset;
        config.tp_reason = format.field("reason")?.offset;
        config.reason_consumed = reason_consumed;
        config.wakeup_bytes = trace::wakeup_bytes(ring_bytes);

        let mut ebpf = load_object(OBJECT, objects::DROP_TRACER, |loader| {
            loader.override_global("CONFIG", &config, true);
            loader.map_max_entries("EVENTS", ring_bytes);
        })?;
        let hook = if prefer_classic {
            attach_tracepoint(&mut ebpf)?
        } else {
            match attach_btf(&mut ebpf) {
                Ok(hook) => hook,
                Err(e) => {
                    tracing::info!("tp_btf unavailable ({e}); using the classic tracepoint");
                    attach_tracepoint(&mut ebpf)?
                }
            }
        };
        let ring = maps::take(&mut ebpf, OBJECT, "EVENTS")?;
        Ok(Self { ebpf, ring, hook })
    }

    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// The ring buffer, to poll its fd and drain it.
    pub fn ring(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    /// Events that could not be reserved in the ring buffer (all CPUs).
    pub fn lost(&self) -> Result<u64, ProgramSetupError> {
        let lost: PerCpuArray<_, u64> = maps::get(&self.ebpf, OBJECT, "LOST")?;
        let values = lost
            .get(&LOST_INDEX, 0)
            .map_err(|source| ProgramSetupError::Map {
                map: "LOST",
                source,
            })?;
        Ok(maps::total(&values))
    }

    /// Exact drops per (location, reason), counted in the kernel after
    /// filtering.
    pub fn counts(&self) -> Result<Vec<(DropSite, u64)>, ProgramSetupError> {
        let map: PerCpuHashMap<_, DropSite, u64> = maps::get(&self.ebpf, OBJECT, "COUNTS")?;
        maps::totals(&map, "COUNTS")
    }

    /// Exact drops per reason code.
    pub fn reason_counts(&self) -> Result<BTreeMap<u32, u64>, ProgramSetupError> {
        let mut by = BTreeMap::new();
        for (site, n) in self.counts()? {
            *by.entry(site.reason).or_default() += n;
        }
        Ok(by)
    }

    /// Makes the namespaces with these inodes the scope (with
    /// `flags::NETNS_SET` in the config): adds the new ones, removes those
    /// gone. Returns how many are in scope.
    pub fn set_scope(&mut self, inodes: &BTreeSet<u32>) -> Result<usize, ProgramSetupError> {
        let err = |source| ProgramSetupError::Map {
            map: "NETNS_SET",
            source,
        };
        let mut map: AyaHashMap<_, u32, u8> = maps::get_mut(&mut self.ebpf, OBJECT, "NETNS_SET")?;
        let present: BTreeSet<u32> = map.keys().filter_map(Result::ok).collect();
        for gone in present.difference(inodes) {
            map.remove(gone).map_err(err)?;
        }
        for new in inodes.difference(&present) {
            map.insert(new, 1, 0).map_err(err)?;
        }
        Ok(inodes.len())
    }

    /// The kernel stack recorded under `id` (`--stack`), innermost first.
    pub fn stack(&self, id: i32) -> Result<Vec<u64>, ProgramSetupError> {
        let err = |source| ProgramSetupError::Map {
            map: "STACKS",
            source,
        };
        let map: StackTraceMap<_> = maps::get(&self.ebpf, OBJECT, "STACKS")?;
        let id = u32::try_from(id).map_err(|_| err(aya::maps::MapError::KeyNotFound))?;
        let trace = map.get(&id, 0).map_err(err)?;
        Ok(trace.frames().iter().map(|f| f.ip).collect())
    }
}

/// Decodes one ring buffer record: the event and the packet bytes that
/// follow it (empty without a snaplen); `None` if it is too short.
pub fn decode(bytes: &[u8]) -> Option<(DropEvent, &[u8])> {
    let (head, rest) = bytes.split_at_checked(size_of::<DropEvent>())?;
    let ev: DropEvent = bytemuck::pod_read_unaligned(head);
    let packet = rest.get(..ev.caplen as usize)?;
    Some((ev, packet))
}

fn attach_btf(ebpf: &mut Ebpf) -> Result<Hook, ProgramSetupError> {
    let btf = vmlinux_btf(BTF_PROGRAM)?;
    let p: &mut BtfTracePoint = program(ebpf, BTF_PROGRAM)?;
    p.load("kfree_skb", &btf)
        .map_err(|e| LoadError::load(BTF_PROGRAM, e))?;
    p.attach()
        .map_err(|e| LoadError::attach(BTF_PROGRAM, "tp_btf/kfree_skb", e))?;
    Ok(Hook::BtfTracepoint)
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<Hook, ProgramSetupError> {
    let p: &mut TracePoint = program(ebpf, TP_PROGRAM)?;
    p.load().map_err(|e| LoadError::load(TP_PROGRAM, e))?;
    p.attach("skb", "kfree_skb")
        .map_err(|e| LoadError::attach(TP_PROGRAM, "tracepoint skb:kfree_skb", e))?;
    Ok(Hook::Tracepoint)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    super::loader::program(ebpf, OBJECT, name)
}

/// Asks the program to record each drop's kernel stack.
pub fn with_stacks(config: &mut TraceConfig) {
    config.flags |= flags::STACK;
}

/// Flag helper for callers building a config.
pub fn summary_only(config: &mut TraceConfig) {
    config.flags |= flags::SUMMARY_ONLY;
}
