//! eBPF masquerading: `nat_egress` on a node's uplink rewrites pod sources
//! to the node's address (and a free port), `nat_ingress` rewrites replies
//! back, with incremental checksum updates. Mappings live in two hashes
//! (`NAT_OUT`: pod flow -> translation, `NAT_IN`: the reverse), as Cilium's
//! SNAT map holds both; a port is reserved by inserting its reverse entry
//! with BPF_NOEXIST, so two CPUs can never hand out the same one.
//!
//! The hashes are not LRU (Cilium's are): an LRU map evicts whatever its
//! per-CPU lists pick, live mappings included, and a live flow whose
//! mapping went gets a new port mid-flow (cilium/cilium#34833, #37747). Here
//! a mapping goes only when it is expired (unused both ways for its
//! timeout: its `NAT_IN` entry holds the last use either way), or, when the
//! table is full, closed (FIN or RST) and idle for `CLOSING_RECLAIM_S`. The
//! allocation that finds the table full sweeps it
//! (`bpf_for_each_map_elem` over `NAT_IN`, stopping once it freed a
//! sixteenth of the table, backing off for a second after one that freed
//! little) and tries again; a new flow that still finds no room is dropped
//! and counted (`TABLE_FULL`), never given someone else's mapping.
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
    use core::ffi::c_void;

    use aya_ebpf::{
        bindings::BPF_NOEXIST,
        helpers::{
            bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns,
            generated::bpf_for_each_map_elem,
        },
        macros::{classifier, map},
        maps::{Array, HashMap, PerCpuArray},
        programs::TcContext,
    };
    use lab_common::{
        masq::{MasqKey, MasqStats},
        nat::{
            CAPACITY, CLOSING_RECLAIM_S, NAT_CLOSING, NAT_PEER_CLOSING, NO_SLOT, NatConfig,
            NatEntry, NatKey, POD_STATS_CAPACITY, SWEEP_BACKOFF_MS, SWEEP_ENOUGH_DIVISOR,
            SWEEP_MAX_DIVISOR, stat,
        },
        proto::{ICMP as IPPROTO_ICMP, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP},
    };
    use lab_ebpf::tc::{Change, TC_ACT_SHOT, TC_ACT_UNSPEC, parse, rewrite};

    lab_ebpf::license!();

    const ICMP_ECHO: u8 = 8;
    const ICMP_ECHOREPLY: u8 = 0;
    const TCP_FIN_RST: u8 = 0x05;
    const TCP_SYN: u8 = 0x02;
    /// What a map insert returns when the map is full (a preallocated hash:
    /// -E2BIG; one that allocates: -ENOMEM).
    const E2BIG: i32 = 7;
    const ENOMEM: i32 = 12;
    /// Candidate ports tried per new flow before giving up.
    const TRIES: u32 = 32;
    /// `last_ns` is refreshed when older than this (writes dirty the
    /// entry's cache line; idle times are shown in seconds).
    const TOUCH_NS: u64 = 250_000_000;

    #[unsafe(no_mangle)]
    static NAT_CONFIG: NatConfig = NatConfig::DEFAULT;

    #[map]
    static NAT_OUT: HashMap<NatKey, NatEntry> = HashMap::with_max_entries(CAPACITY, 0);
    #[map]
    static NAT_IN: HashMap<NatKey, NatEntry> = HashMap::with_max_entries(CAPACITY, 0);
    /// When the full table may be swept again (ns; 0: at once).
    #[map]
    static NAT_SWEEP: Array<u64> = Array::with_max_entries(1, 0);
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

    /// A FIN or RST seen either way.
    #[inline(always)]
    fn closing(flags: u8) -> bool {
        flags & (NAT_CLOSING | NAT_PEER_CLOSING) != 0
    }

    /// The idle lifetime (ns) of a mapping with these flags.
    #[inline(always)]
    fn lifetime_ns(flags: u8, proto: u8, cfg: &NatConfig) -> u64 {
        let life = match proto {
            IPPROTO_TCP if closing(flags) => cfg.tcp_closing_timeout_s,
            IPPROTO_TCP => cfg.tcp_timeout_s,
            IPPROTO_UDP => cfg.udp_timeout_s,
            _ => cfg.icmp_timeout_s,
        };
        u64::from(life) * 1_000_000_000
    }

    /// Idle past its lifetime: for a `NAT_IN` entry, the mapping (it holds
    /// the last use either way); for a `NAT_OUT` entry, its direction only.
    #[inline(always)]
    fn expired(e: &NatEntry, proto: u8, now: u64, cfg: &NatConfig) -> bool {
        now.saturating_sub(e.last_ns) > lifetime_ns(e.flags, proto, cfg)
    }

    /// `NAT_OUT`'s key for the reverse entry `key` -> `e`.
    #[inline(always)]
    fn out_key(key: &NatKey, e: &NatEntry) -> NatKey {
        let far_port = if key.proto == IPPROTO_ICMP {
            e.to_port
        } else {
            key.sport
        };
        NatKey::new(e.to_addr, key.saddr, e.to_port, far_port, key.proto)
    }

    /// The `NAT_OUT` entry that `NAT_IN`'s `key` -> `e` is the reverse of
    /// (its key), if it still translates to that port.
    #[inline(always)]
    fn out_partner(key: &NatKey, e: &NatEntry) -> Option<NatKey> {
        let k = out_key(key, e);
        let o = NAT_OUT.get_ptr(k)?;
        // SAFETY: a pointer into the map value, valid for this run.
        let v = unsafe { &*o };
        (v.to_port == key.dport && v.to_addr == key.daddr).then_some(k)
    }

    /// `NAT_IN`'s key for a pod flow `key` translated to `node:to_port`.
    #[inline(always)]
    fn in_key(key: &NatKey, to_port: u16, node: u32) -> NatKey {
        let far_port = if key.proto == IPPROTO_ICMP {
            to_port
        } else {
            key.dport
        };
        NatKey::new(key.daddr, node, far_port, to_port, key.proto)
    }

    /// The `NAT_IN` entry of the pod flow `key` mapped by `e` (`NAT_OUT`),
    /// if it is that flow's.
    #[inline(always)]
    fn in_partner(key: &NatKey, e: &NatEntry) -> Option<*mut NatEntry> {
        let b = NAT_IN.get_ptr_mut(in_key(key, e.to_port, e.to_addr))?;
        // SAFETY: a pointer into the map value, valid for this run.
        let v = unsafe { &*b };
        (v.to_addr == key.saddr && v.to_port == key.sport).then_some(b)
    }

    const CLOSING_RECLAIM_NS: u64 = CLOSING_RECLAIM_S as u64 * 1_000_000_000;

    /// The sweep's context, on the caller's stack: the time, and the
    /// `RECLAIMED` count at its start and where it stops. (The count is
    /// kept in `NAT_STATS`, not here: a count in the context would be a
    /// known number the verifier follows through every call.)
    #[repr(C)]
    struct Sweep {
        now: u64,
        stop_at: u64,
    }

    /// One `NAT_IN` entry in a sweep of the full table: its mapping goes if
    /// it is expired, or closed and idle for CLOSING_RECLAIM_S; the sweep
    /// stops (1) once it freed capacity / SWEEP_MAX_DIVISOR.
    #[inline(never)]
    extern "C" fn sweep_one(
        _map: *mut c_void,
        key: *mut NatKey,
        value: *mut NatEntry,
        ctx: *mut Sweep,
    ) -> i64 {
        // SAFETY: the kernel passes the element's key and value and our
        // context, valid during the call.
        let (key, e, s) = unsafe { (*key, &*value, &*ctx) };
        let idle = s.now.saturating_sub(e.last_ns);
        let closed = key.proto == IPPROTO_TCP && closing(e.flags) && idle > CLOSING_RECLAIM_NS;
        if !closed && idle <= lifetime_ns(e.flags, key.proto, config()) {
            return 0;
        }
        if let Some(k) = out_partner(&key, e) {
            NAT_OUT.remove(k).ok();
        }
        if NAT_IN.remove(key).is_ok() {
            bump(stat::RECLAIMED);
        }
        i64::from(reclaimed() >= s.stop_at)
    }

    /// This CPU's `RECLAIMED` count.
    #[inline(always)]
    fn reclaimed() -> u64 {
        NAT_STATS
            .get_ptr(stat::RECLAIMED)
            // SAFETY: this CPU's slot.
            .map_or(0, |v| unsafe { *v })
    }

    /// Sweeps the full table (unless a sweep that freed little ran less
    /// than SWEEP_BACKOFF_MS ago); the mappings freed.
    #[inline(always)]
    fn reclaim(now: u64, cfg: &NatConfig) -> u64 {
        let Some(next) = NAT_SWEEP.get_ptr_mut(0) else {
            return 0;
        };
        // SAFETY: a pointer into the map value, valid for this run (two
        // CPUs may both sweep: deleting twice is harmless).
        let next = unsafe { &mut *next };
        if now < *next {
            return 0;
        }
        let before = reclaimed();
        let mut s = Sweep {
            now,
            stop_at: before + u64::from(cfg.capacity / SWEEP_MAX_DIVISOR).max(1),
        };
        // SAFETY: the map is NAT_IN's definition, the callback has the
        // signature the helper calls, the context lives on this stack.
        unsafe {
            bpf_for_each_map_elem(
                &raw const NAT_IN as *mut c_void,
                sweep_one as *const () as *mut c_void,
                (&raw mut s).cast(),
                0,
            )
        };
        bump(stat::SWEEPS);
        let freed = reclaimed().wrapping_sub(before);
        let enough = u64::from(cfg.capacity / SWEEP_ENOUGH_DIVISOR).max(1);
        *next = if freed >= enough {
            0
        } else {
            now + u64::from(SWEEP_BACKOFF_MS) * 1_000_000
        };
        freed
    }

    /// Marks an entry used now (at most every TOUCH_NS), closing on a FIN
    /// or RST, and open again on a SYN (a new connection on the same
    /// ports); whether it changed.
    #[inline(always)]
    fn touch(e: &mut NatEntry, now: u64, tcp_flags: u8) -> bool {
        let mut changed = false;
        if now.wrapping_sub(e.last_ns) > TOUCH_NS {
            e.last_ns = now;
            changed = true;
        }
        if tcp_flags & TCP_FIN_RST != 0 {
            if e.flags & NAT_CLOSING == 0 {
                e.flags |= NAT_CLOSING;
                changed = true;
            }
        } else if tcp_flags & TCP_SYN != 0 && e.flags & NAT_CLOSING != 0 {
            e.flags &= !NAT_CLOSING;
            changed = true;
        }
        changed
    }

    /// Writes a `NAT_OUT` entry's use and closing state into its mapping's
    /// `NAT_IN` entry (which a sweep reads alone).
    #[inline(always)]
    fn mirror(back: &mut NatEntry, out: &NatEntry) {
        if out.last_ns > back.last_ns {
            back.last_ns = out.last_ns;
        }
        if out.flags & NAT_CLOSING != 0 {
            back.flags |= NAT_PEER_CLOSING;
        } else {
            back.flags &= !NAT_PEER_CLOSING;
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

    /// Takes the port whose reverse entry is at `reverse` for `r.key`
    /// (writing `r.back` there) when that entry's mapping is expired, or is
    /// this flow's own expired mapping; false when the port is in use. A
    /// function of its own, as [`allocate`] that calls it.
    #[inline(never)]
    fn steal(reverse: &NatKey, r: &Request) -> bool {
        let cfg = config();
        let Some(old) = NAT_IN.get_ptr(*reverse) else {
            return false;
        };
        // SAFETY: a pointer into the map value, valid for this run.
        let old = unsafe { &*old };
        let partner = out_partner(reverse, old);
        // This flow's own mapping was found expired (and counted) by the
        // caller; another flow's is counted here.
        if partner != Some(r.key) {
            if !expired(old, r.key.proto, r.now, cfg) {
                return false;
            }
            if let Some(k) = partner {
                NAT_OUT.remove(k).ok();
            }
            bump(stat::EXPIRED);
        }
        NAT_IN.insert(reverse, r.back, 0).is_ok()
    }

    /// What [`allocate`] is asked for: a port for the pod flow `key`, with
    /// its reverse entry `back`, trying `first` first (if `has_first`).
    #[repr(C)]
    struct Request {
        key: NatKey,
        back: NatEntry,
        now: u64,
        first: u16,
        has_first: u16,
        _pad: u32,
    }

    /// [`allocate`]'s answer: `ALLOC_PORT | port` (network order), the
    /// reverse entry written; `ALLOC_FULL`: no room in `NAT_IN`;
    /// `ALLOC_NO_PORT`: TRIES ports tried, all in use.
    const ALLOC_PORT: u32 = 1 << 16;
    const ALLOC_FULL: u32 = 2 << 16;
    const ALLOC_NO_PORT: u32 = 3 << 16;

    /// A port for `r.key`: `r.first` if given, then random ones from the
    /// range; a port is taken when it is free, or when its mapping is
    /// expired (or is this flow's own expired mapping). A function of its
    /// own (a BPF-to-BPF call, one argument: BPF passes five in registers
    /// and none on the stack): the verifier then meets only its result
    /// after it, not every path through its loop, before the sweep and the
    /// second try.
    #[inline(never)]
    fn allocate(r: &Request) -> u32 {
        let cfg = config();
        let span = u32::from(cfg.port_max - cfg.port_min) + 1;
        let mut i = 0;
        while i < TRIES {
            let port = if i == 0 && r.has_first != 0 {
                r.first
            } else {
                // SAFETY: the PRNG helper has no preconditions.
                (cfg.port_min + (unsafe { bpf_get_prandom_u32() } % span) as u16).to_be()
            };
            let reverse = in_key(&r.key, port, cfg.node_addr);
            match NAT_IN.insert(reverse, r.back, u64::from(BPF_NOEXIST)) {
                Ok(()) => return ALLOC_PORT | u32::from(port),
                Err(e) if e == -E2BIG || e == -ENOMEM => return ALLOC_FULL,
                Err(_) => {}
            }
            if steal(&reverse, r) {
                return ALLOC_PORT | u32::from(port);
            }
            bump(stat::COLLISIONS);
            i += 1;
        }
        ALLOC_NO_PORT
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
        // The port tried first for a new mapping: the pod's own when it is
        // in the range (as netfilter does), an expired mapping's own port.
        let mut first = p.sport;
        let mut first_ok = (cfg.port_min..=cfg.port_max).contains(&u16::from_be(p.sport));
        if let Some(e) = NAT_OUT.get_ptr_mut(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            let e = unsafe { &mut *e };
            // Idle this way: the mapping lives on while replies use it
            // (its NAT_IN entry holds the last use either way).
            let live = !expired(e, p.proto, now, cfg)
                || in_partner(&key, e).is_some_and(|b| {
                    // SAFETY: a pointer into the map value, valid for this run.
                    !expired(unsafe { &*b }, p.proto, now, cfg)
                });
            if live {
                if touch(e, now, p.tcp_flags)
                    && let Some(b) = in_partner(&key, e)
                {
                    // SAFETY: a pointer into the map value, valid for this run.
                    mirror(unsafe { &mut *b }, e);
                }
                to_port = e.to_port;
                slot = e.slot;
                found = true;
            } else {
                bump(stat::EXPIRED);
                first = e.to_port;
                first_ok = true;
            }
        }
        if !found {
            slot = pod_slot(MasqKey {
                pod: p.saddr,
                node: cfg.node_addr,
            });
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
            let request = Request {
                key,
                back,
                now,
                first,
                has_first: u16::from(first_ok),
                _pad: 0,
            };
            let mut alloc = allocate(&request);
            // No room: reclaim what is expired or closed, and try once more.
            // (No free port is not a full table: the ports of expired
            // mappings were taken over above, closed ones keep theirs for
            // their closing timeout.)
            if alloc == ALLOC_FULL && reclaim(now, cfg) > 0 {
                alloc = allocate(&request);
            }
            match alloc & !0xffff {
                ALLOC_PORT => {}
                ALLOC_FULL => {
                    bump(stat::TABLE_FULL);
                    return Some(TC_ACT_SHOT);
                }
                _ => {
                    bump(stat::ALLOC_FAILED);
                    return Some(TC_ACT_SHOT);
                }
            }
            let candidate = alloc as u16;
            to_port = candidate;
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
            if NAT_OUT.insert(key, out, 0).is_err() {
                // NAT_OUT full while NAT_IN had room: give the port back.
                NAT_IN.remove(in_key(&key, to_port, cfg.node_addr)).ok();
                bump(stat::TABLE_FULL);
                return Some(TC_ACT_SHOT);
            }
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
        // The last use either way: expired is expired.
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
