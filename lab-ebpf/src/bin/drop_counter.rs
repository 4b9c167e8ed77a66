//! The drop counter: a classic tracepoint on `skb:kfree_skb` that counts drops
//! per (netns, reason, policy verdict mark). The first real program of labctl: `labctl demo` and
//! the end-to-end tests use it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        macros::{map, tracepoint},
        maps::{PerCpuArray, PerCpuHashMap},
        programs::TracePointContext,
    };
    use lab_common::{DropCountKey, DropCounterConfig};
    use lab_ebpf::kernel::{read, skb_netns_ino};

    lab_ebpf::license!();

    /// Set by userspace at load time (offsets from tracefs and BTF).
    #[unsafe(no_mangle)]
    static CONFIG: DropCounterConfig = DropCounterConfig::ZERO;

    #[map]
    static DROP_COUNTS: PerCpuHashMap<DropCountKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

    /// Drops that found the map full and could not be counted (slot 0).
    #[map]
    static UNCOUNTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    #[tracepoint(category = "skb", name = "kfree_skb")]
    pub fn drop_counter(ctx: TracePointContext) -> u32 {
        count(&ctx, lab_ebpf::config::read(&CONFIG));
        0
    }

    #[inline(always)]
    fn count(ctx: &TracePointContext, cfg: &DropCounterConfig) {
        // SAFETY: the offsets come from this kernel's tracepoint format file.
        let Ok(skb) = (unsafe { ctx.read_at::<u64>(cfg.tp_skbaddr as usize) }) else {
            return;
        };
        // SAFETY: as above; `reason` is a u32 enum at its format's offset.
        let Ok(reason) = (unsafe { ctx.read_at::<u32>(cfg.tp_reason as usize) }) else {
            return;
        };
        if reason == cfg.reason_consumed {
            return;
        }
        let netns_ino = skb_netns_ino(skb, &cfg.netns);
        if cfg.filter_netns_ino != 0 && netns_ino != cfg.filter_netns_ino {
            return;
        }
        // A policy datapath's drop, apart from the kernel's generic reason.
        let mark = read::<u32>(skb, cfg.skb_mark).unwrap_or(0);
        let key = DropCountKey {
            netns_ino,
            reason,
            policy: lab_common::verdict::policy_mark(mark),
        };
        match DROP_COUNTS.get_ptr_mut(key) {
            // SAFETY: a per-CPU value is only touched by this CPU.
            Some(value) => unsafe { *value += 1 },
            None => {
                // A full map loses the count; userspace sizes the map far
                // above the number of (netns, reason) pairs a lab produces,
                // and every loss is counted.
                if DROP_COUNTS.insert(key, 1, 0).is_err()
                    && let Some(n) = UNCOUNTED.get_ptr_mut(0)
                {
                    // SAFETY: a per-CPU value is only touched by this CPU.
                    unsafe { *n += 1 };
                }
            }
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
