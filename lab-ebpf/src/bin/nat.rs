//! eBPF masquerading: `nat_egress` on a node's uplink rewrites pod sources
//! to the node's address (and a free port), `nat_ingress` rewrites replies
//! back, with incremental checksum updates. Mappings live in two LRU hashes
//! (`NAT_OUT`: pod flow -> translation, `NAT_IN`: the reverse), as Cilium's
//! SNAT maps do; a port is reserved by inserting its reverse entry with
//! BPF_NOEXIST, so two CPUs can never hand out the same one.
//!
//! Per packet of an established flow the work is kept to one hash lookup
//! and as few helper calls as correctness allows (on this machine kind, a
//! helper call costs tens of nanoseconds on its own: every kernel `ret`
//! goes through the SRSO return thunk): headers are read and rewritten
//! through direct packet access, the IP checksum is updated here, and only
//! the L4 checksum goes through `bpf_l4_csum_replace`, which alone knows
//! the skb's checksum state (CHECKSUM_PARTIAL keeps a pseudo-header sum in
//! the field; CHECKSUM_COMPLETE needs `skb->csum` adjusted). The clock is
//! read once per tick per CPU (see `now_ns`), `last_ns` is written at most
//! every quarter second, and a pod's counters are found by the slot kept in
//! its mapping.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::BPF_NOEXIST,
        helpers::{bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns},
        macros::{classifier, map},
        maps::{HashMap, LruHashMap, PerCpuArray},
        programs::TcContext,
    };
    use lab_common::{
        masq::{MasqKey, MasqStats},
        nat::{
            CAPACITY, NAT_CLOSING, NO_SLOT, NatConfig, NatEntry, NatKey, POD_STATS_CAPACITY, stat,
        },
        proto::{ICMP as IPPROTO_ICMP, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP},
    };
    use lab_ebpf::tc::{Change, TC_ACT_SHOT, TC_ACT_UNSPEC, parse, rewrite};

    lab_ebpf::license!();

    const ICMP_ECHO: u8 = 8;
    const ICMP_ECHOREPLY: u8 = 0;
    const TCP_FIN_RST: u8 = 0x05;
    /// Candidate ports tried per new flow before giving up.
    const TRIES: u32 = 32;
    /// `last_ns` is refreshed when older than this (writes dirty the
    /// entry's cache line; idle times are shown in seconds).
    const TOUCH_NS: u64 = 250_000_000;

    #[unsafe(no_mangle)]
    static NAT_CONFIG: NatConfig = NatConfig::DEFAULT;

    #[map]
    static NAT_OUT: LruHashMap<NatKey, NatEntry> = LruHashMap::with_max_entries(CAPACITY, 0);
    #[map]
    static NAT_IN: LruHashMap<NatKey, NatEntry> = LruHashMap::with_max_entries(CAPACITY, 0);
    #[map]
    static NAT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
    /// Per pod, as the masquerade counter keeps them (`labctl masq`): each
    /// pod (and node address) gets a slot when its first mapping is made,
    /// kept in the mapping, and its counts live at that slot.
    #[map]
    static NAT_POD_SLOTS: HashMap<MasqKey, u32> = HashMap::with_max_entries(POD_STATS_CAPACITY, 0);
    #[map]
    static NAT_POD_STATS: PerCpuArray<MasqStats> =
        PerCpuArray::with_max_entries(POD_STATS_CAPACITY, 0);
    /// The clock as last read on this CPU, and the tick it was read in.
    #[map]
    static NAT_CLOCK: PerCpuArray<Clock> = PerCpuArray::with_max_entries(1, 0);

    #[repr(C)]
    struct Clock {
        jiffies: u64,
        ns: u64,
    }

    /// Who holds each slot: a slot is taken by inserting its owner with
    /// BPF_NOEXIST (as ports are), so two CPUs never share one.
    #[map]
    static NAT_SLOT_OWNERS: HashMap<u32, MasqKey> =
        HashMap::with_max_entries(POD_STATS_CAPACITY, 0);
    /// Slots probed from a pod's preferred one before giving up.
    const SLOT_TRIES: u32 = 16;

    #[inline(always)]
    fn config() -> &'static NatConfig {
        lab_ebpf::config::read(&NAT_CONFIG)
    }

    #[inline(always)]
    fn bump(index: u32) {
        if let Some(v) = NAT_STATS.get_ptr_mut(index) {
            // SAFETY: this CPU's slot.
            unsafe { *v += 1 };
        }
    }

    /// CLOCK_MONOTONIC_COARSE in ns, read at most once per tick per CPU:
    /// within a tick (`jiffies` unchanged; the verifier turns
    /// `bpf_jiffies64` into a plain load) the reading cached in `NAT_CLOCK`
    /// is reused. A tick (1–10 ms) is plenty for idle timeouts in seconds;
    /// reading a clock per packet cost 30–90 ns in traffic here (cold
    /// timekeeping cache lines), as `cargo xtask bench masq` shows.
    #[inline(always)]
    fn now_ns() -> u64 {
        // SAFETY: the helper takes no arguments and touches no memory.
        let j = unsafe { bpf_jiffies64() };
        let Some(c) = NAT_CLOCK.get_ptr_mut(0) else {
            // SAFETY: as above.
            return unsafe { bpf_ktime_get_coarse_ns() };
        };
        // SAFETY: this CPU's slot of a per-CPU map value.
        let c = unsafe { &mut *c };
        if c.jiffies != j || c.ns == 0 {
            // SAFETY: as above.
            c.ns = unsafe { bpf_ktime_get_coarse_ns() };
            c.jiffies = j;
        }
        c.ns
    }

    #[inline(always)]
    fn expired(e: &NatEntry, proto: u8, now: u64, cfg: &NatConfig) -> bool {
        let life = match proto {
            IPPROTO_TCP if e.flags & NAT_CLOSING != 0 => cfg.tcp_closing_timeout_s,
            IPPROTO_TCP => cfg.tcp_timeout_s,
            IPPROTO_UDP => cfg.udp_timeout_s,
            _ => cfg.icmp_timeout_s,
        };
        now.saturating_sub(e.last_ns) > u64::from(life) * 1_000_000_000
    }

    /// Marks an entry used now (at most every TOUCH_NS), and closing on a
    /// FIN or RST.
    #[inline(always)]
    fn touch(e: &mut NatEntry, now: u64, tcp_flags: u8) {
        if now.wrapping_sub(e.last_ns) > TOUCH_NS {
            e.last_ns = now;
        }
        if tcp_flags & TCP_FIN_RST != 0 && e.flags & NAT_CLOSING == 0 {
            e.flags |= NAT_CLOSING;
        }
    }

    #[inline(always)]
    fn in_cluster(addr: u32, cfg: &NatConfig) -> bool {
        addr & cfg.cluster_mask == cfg.cluster_net
    }

    /// The pod's slot in `NAT_POD_STATS`, given one on its first mapping
    /// (NO_SLOT when none is free). Only new mappings come here.
    #[inline(always)]
    fn pod_slot(key: MasqKey) -> u32 {
        if let Some(slot) = NAT_POD_SLOTS.get_ptr(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            return unsafe { *slot };
        }
        // Probe from a slot picked by the key (Fibonacci hashing).
        let start = (key.pod ^ key.node.rotate_left(16)).wrapping_mul(0x9e37_79b1) >> 16;
        let mut i = 0;
        while i < SLOT_TRIES {
            let slot = (start + i) % POD_STATS_CAPACITY;
            if NAT_SLOT_OWNERS
                .insert(slot, key, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                if NAT_POD_SLOTS
                    .insert(key, slot, u64::from(BPF_NOEXIST))
                    .is_ok()
                {
                    return slot;
                }
                // Another CPU gave this pod a slot first: free ours, use
                // that one.
                NAT_SLOT_OWNERS.remove(slot).ok();
                // SAFETY: a pointer into the map value, valid for this run.
                return NAT_POD_SLOTS
                    .get_ptr(key)
                    .map_or(NO_SLOT, |s| unsafe { *s });
            }
            i += 1;
        }
        NO_SLOT
    }

    /// Counts a translated packet for the pod at `slot` (direction 0 out,
    /// 1 in), and, when it opened a mapping, the connection and its port
    /// (`new_port`, host order; None for ICMP or an existing mapping).
    #[inline(always)]
    fn count(
        ctx: &TcContext,
        cfg: &NatConfig,
        slot: u32,
        dir: usize,
        new: bool,
        new_port: Option<u16>,
    ) -> Option<()> {
        let Some(s) = NAT_POD_STATS.get_ptr_mut(slot) else {
            // No slot: the packet is counted in the totals only (the pods'
            // counts make up the rest of them, so a counted packet touches
            // one counter, not two).
            bump(if dir == 0 {
                stat::XLATE_OUT
            } else {
                stat::XLATE_IN
            });
            return None;
        };
        let l2 = if cfg.ethernet != 0 { 14 } else { 0 };
        // SAFETY: this CPU's slot of a per-CPU map value.
        unsafe {
            (*s).packets[dir] += 1;
            (*s).bytes[dir] += u64::from(ctx.len().saturating_sub(l2));
            if new {
                (*s).connections += 1;
            }
            if let Some(port) = new_port {
                if (*s).port_min == 0 || port < (*s).port_min {
                    (*s).port_min = port;
                }
                if port > (*s).port_max {
                    (*s).port_max = port;
                }
            }
        }
        Some(())
    }

    #[classifier]
    pub fn nat_egress(ctx: TcContext) -> i32 {
        egress(&ctx).unwrap_or(TC_ACT_UNSPEC)
    }

    #[inline(always)]
    fn egress(ctx: &TcContext) -> Option<i32> {
        let cfg = config();
        let p = parse(ctx, cfg.ethernet != 0)?;
        if !in_cluster(p.saddr, cfg) || in_cluster(p.daddr, cfg) {
            return None;
        }
        if p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO {
            return None;
        }
        let key = NatKey::new(p.saddr, p.daddr, p.sport, p.dport, p.proto);
        let now = now_ns();
        let mut to_port = 0u16;
        let mut slot = NO_SLOT;
        let mut found = false;
        let mut new = false;
        if let Some(e) = NAT_OUT.get_ptr_mut(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            let e = unsafe { &mut *e };
            if expired(e, p.proto, now, cfg) {
                bump(stat::EXPIRED);
            } else {
                touch(e, now, p.tcp_flags);
                to_port = e.to_port;
                slot = e.slot;
                found = true;
            }
        }
        if !found {
            slot = pod_slot(MasqKey {
                pod: p.saddr,
                node: cfg.node_addr,
            });
            // Keep the pod's own port when it is free (as netfilter does),
            // otherwise try random ones from the range.
            let span = u32::from(cfg.port_max - cfg.port_min) + 1;
            let mut i = 0;
            while i < TRIES {
                let host =
                    if i == 0 && (cfg.port_min..=cfg.port_max).contains(&u16::from_be(p.sport)) {
                        u16::from_be(p.sport)
                    } else {
                        // SAFETY: the PRNG helper has no preconditions.
                        cfg.port_min + (unsafe { bpf_get_prandom_u32() } % span) as u16
                    };
                let candidate = host.to_be();
                let reverse = NatKey::new(
                    p.daddr,
                    cfg.node_addr,
                    if p.proto == IPPROTO_ICMP {
                        candidate
                    } else {
                        p.dport
                    },
                    candidate,
                    p.proto,
                );
                let back = NatEntry {
                    created_ns: now,
                    last_ns: now,
                    to_addr: p.saddr,
                    to_port: p.sport,
                    flags: 0,
                    _pad: 0,
                    slot,
                    _pad2: 0,
                };
                let mut taken = NAT_IN
                    .insert(reverse, back, u64::from(BPF_NOEXIST))
                    .is_err();
                if taken
                    && let Some(old) = NAT_IN.get_ptr(reverse)
                    && expired(
                        // SAFETY: a pointer into the map value, valid for this run.
                        unsafe { &*old },
                        p.proto,
                        now,
                        cfg,
                    )
                {
                    taken = NAT_IN.insert(reverse, back, 0).is_err();
                }
                if !taken {
                    to_port = candidate;
                    found = true;
                    break;
                }
                bump(stat::COLLISIONS);
                i += 1;
            }
            if !found {
                bump(stat::ALLOC_FAILED);
                return Some(TC_ACT_SHOT);
            }
            let out = NatEntry {
                created_ns: now,
                last_ns: now,
                to_addr: cfg.node_addr,
                to_port,
                flags: 0,
                _pad: 0,
                slot,
                _pad2: 0,
            };
            NAT_OUT.insert(key, out, 0).ok()?;
            bump(stat::ALLOCATED);
            new = true;
        }
        rewrite(
            ctx,
            &p,
            Change {
                addr_rel: 12,
                old_addr: p.saddr,
                new_addr: cfg.node_addr,
                port_rel: p.sport_rel,
                old_port: p.sport,
                new_port: to_port,
            },
        )?;
        // ICMP's echo id is not a port.
        let port = (new && p.proto != IPPROTO_ICMP).then(|| u16::from_be(to_port));
        count(ctx, cfg, slot, 0, new, port)?;
        Some(TC_ACT_UNSPEC)
    }

    #[classifier]
    pub fn nat_ingress(ctx: TcContext) -> i32 {
        ingress(&ctx).unwrap_or(TC_ACT_UNSPEC)
    }

    #[inline(always)]
    fn ingress(ctx: &TcContext) -> Option<i32> {
        let cfg = config();
        let p = parse(ctx, cfg.ethernet != 0)?;
        if p.daddr != cfg.node_addr {
            return None;
        }
        if p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHOREPLY {
            return None;
        }
        let key = NatKey::new(p.saddr, p.daddr, p.sport, p.dport, p.proto);
        let now = now_ns();
        let e = NAT_IN.get_ptr_mut(key)?;
        // SAFETY: a pointer into the map value, valid for this run.
        let e = unsafe { &mut *e };
        if expired(e, p.proto, now, cfg) {
            return None;
        }
        touch(e, now, p.tcp_flags);
        let (pod, pod_port, slot) = (e.to_addr, e.to_port, e.slot);
        rewrite(
            ctx,
            &p,
            Change {
                addr_rel: 16,
                old_addr: p.daddr,
                new_addr: pod,
                port_rel: p.dport_rel,
                old_port: p.dport,
                new_port: pod_port,
            },
        )?;
        count(ctx, cfg, slot, 1, false, None)?;
        Some(TC_ACT_UNSPEC)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
