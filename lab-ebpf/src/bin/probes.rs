//! Trivial programs, one per program type, loaded (and attached) by
//! `labctl doctor` to learn which program types this kernel accepts; and
//! `noop_tc`, the floor the benchmarks measure tc programs against.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_UNSPEC, xdp_action},
        macros::{
            btf_tracepoint, cgroup_skb, classifier, fentry, kprobe, raw_tracepoint, tracepoint, xdp,
        },
        programs::{
            BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, SkBuffContext,
            TcContext, TracePointContext, XdpContext,
        },
    };

    lab_ebpf::license!();

    #[tracepoint(category = "skb", name = "kfree_skb")]
    pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
        0
    }

    #[btf_tracepoint(function = "kfree_skb")]
    pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
        0
    }

    #[raw_tracepoint(tracepoint = "kfree_skb")]
    pub fn probe_raw_tp(_ctx: RawTracePointContext) -> i32 {
        0
    }

    #[classifier]
    pub fn probe_tc(_ctx: TcContext) -> i32 {
        TC_ACT_OK
    }

    /// Does nothing and lets the next program decide: the per-packet floor
    /// of a tc program, which the benchmarks attach beside a real one.
    #[classifier]
    pub fn noop_tc(_ctx: TcContext) -> i32 {
        TC_ACT_UNSPEC
    }

    /// Does nothing on every transmitted packet: the floor of the
    /// masquerade counter (same hook), for the benchmarks.
    #[btf_tracepoint(function = "net_dev_start_xmit")]
    pub fn noop_xmit(_ctx: BtfTracePointContext) -> i32 {
        0
    }

    #[xdp]
    pub fn probe_xdp(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// Returns 1: let every packet through.
    #[cgroup_skb]
    pub fn probe_cgroup_skb(_ctx: SkBuffContext) -> i32 {
        1
    }

    #[kprobe]
    pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
        0
    }

    #[fentry(function = "tcp_v4_rcv")]
    pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
        0
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
