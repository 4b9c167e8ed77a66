//! eBPF masquerading: `nat_egress` on a node's uplink rewrites pod sources
//! to the node's address (and a free port), `nat_ingress` rewrites replies
//! back, with incremental checksum updates. Mappings live in two LRU hashes
//! (`NAT_OUT`: pod flow -> translation, `NAT_IN`: the reverse), as Cilium's
//! SNAT maps do; a port is reserved by inserting its reverse entry with
//! BPF_NOEXIST, so two CPUs can never hand out the same one.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST},
        helpers::bpf_get_prandom_u32,
        macros::{classifier, map},
        maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
        programs::TcContext,
    };
    use lab_common::{
        masq::{MasqKey, MasqStats},
        nat::{CAPACITY, NAT_CLOSING, NatConfig, NatEntry, NatKey, POD_STATS_CAPACITY, stat},
        proto::{ICMP as IPPROTO_ICMP, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP},
    };
    use lab_ebpf::tc::{TC_ACT_SHOT, TC_ACT_UNSPEC};

    lab_ebpf::license!();

    const ICMP_ECHO: u8 = 8;
    const ICMP_ECHOREPLY: u8 = 0;
    const TCP_FIN_RST: u8 = 0x05;
    /// Candidate ports tried per new flow before giving up.
    const TRIES: u32 = 32;

    #[unsafe(no_mangle)]
    static NAT_CONFIG: NatConfig = NatConfig::DEFAULT;

    #[map]
    static NAT_OUT: LruHashMap<NatKey, NatEntry> = LruHashMap::with_max_entries(CAPACITY, 0);
    #[map]
    static NAT_IN: LruHashMap<NatKey, NatEntry> = LruHashMap::with_max_entries(CAPACITY, 0);
    #[map]
    static NAT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
    /// Per pod, as the masquerade counter keeps them (`labctl masq`).
    #[map]
    static NAT_POD_STATS: PerCpuHashMap<MasqKey, MasqStats> =
        PerCpuHashMap::with_max_entries(POD_STATS_CAPACITY, 0);

    /// Where the fields of one IPv4 packet are.
    struct Packet {
        l3: usize,
        saddr: u32,
        daddr: u32,
        proto: u8,
        /// Offsets of the port (or ICMP id) to rewrite and of the L4 checksum.
        sport_off: usize,
        dport_off: usize,
        csum_off: usize,
        sport: u16,
        dport: u16,
        tcp_flags: u8,
        icmp_type: u8,
    }

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

    #[inline(always)]
    fn parse(ctx: &TcContext, cfg: &NatConfig) -> Option<Packet> {
        let ip = lab_ebpf::tc::ipv4(ctx, cfg.ethernet != 0)?;
        let (l3, l4, proto) = (ip.l3, ip.l4, ip.proto);
        let mut p = Packet {
            l3,
            saddr: ip.saddr,
            daddr: ip.daddr,
            proto,
            sport_off: l4,
            dport_off: l4 + 2,
            csum_off: 0,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: 0,
        };
        match proto {
            IPPROTO_TCP => {
                let h = ctx.load::<[u8; 14]>(l4).ok()?;
                p.sport = u16::from_ne_bytes([h[0], h[1]]);
                p.dport = u16::from_ne_bytes([h[2], h[3]]);
                p.tcp_flags = h[13];
                p.csum_off = l4 + 16;
            }
            IPPROTO_UDP => {
                let h = ctx.load::<[u8; 4]>(l4).ok()?;
                p.sport = u16::from_ne_bytes([h[0], h[1]]);
                p.dport = u16::from_ne_bytes([h[2], h[3]]);
                p.csum_off = l4 + 6;
            }
            IPPROTO_ICMP => {
                let h = ctx.load::<[u8; 6]>(l4).ok()?;
                p.icmp_type = h[0];
                // The echo id stands in for both ports.
                p.sport = u16::from_ne_bytes([h[4], h[5]]);
                p.dport = p.sport;
                p.sport_off = l4 + 4;
                p.dport_off = l4 + 4;
                p.csum_off = l4 + 2;
            }
            _ => return None,
        }
        Some(p)
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

    #[inline(always)]
    fn in_cluster(addr: u32, cfg: &NatConfig) -> bool {
        addr & cfg.cluster_mask == cfg.cluster_net
    }

    /// One address (source or destination) and one port to change.
    struct Change {
        addr_off: usize,
        old_addr: u32,
        new_addr: u32,
        port_off: usize,
        old_port: u16,
        new_port: u16,
    }

    /// Applies a change, fixing the IP and L4 checksums incrementally.
    #[inline(always)]
    fn rewrite(ctx: &TcContext, p: &Packet, c: Change) -> Option<()> {
        let Change {
            addr_off,
            old_addr,
            new_addr,
            port_off,
            old_port,
            new_port,
        } = c;
        let udp0 = if p.proto == IPPROTO_UDP {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        };
        if p.proto != IPPROTO_ICMP {
            // TCP and UDP checksums cover the addresses (pseudo-header).
            ctx.l4_csum_replace(
                p.csum_off,
                u64::from(old_addr),
                u64::from(new_addr),
                u64::from(BPF_F_PSEUDO_HDR) | udp0 | 4,
            )
            .ok()?;
        }
        ctx.l4_csum_replace(
            p.csum_off,
            u64::from(old_port),
            u64::from(new_port),
            udp0 | 2,
        )
        .ok()?;
        ctx.l3_csum_replace(p.l3 + 10, u64::from(old_addr), u64::from(new_addr), 4)
            .ok()?;
        ctx.store(addr_off, &new_addr, 0).ok()?;
        ctx.store(port_off, &new_port, 0).ok()?;
        Some(())
    }

    /// Counts a translated packet for a pod (direction 0 out, 1 in), and,
    /// when it opened a mapping, the connection and its port (`new_port`,
    /// host order; None for ICMP or an existing mapping).
    #[inline(always)]
    fn count(
        ctx: &TcContext,
        cfg: &NatConfig,
        key: MasqKey,
        dir: usize,
        new: bool,
        new_port: Option<u16>,
    ) -> Option<()> {
        let s = match NAT_POD_STATS.get_ptr_mut(key) {
            Some(s) => s,
            None => {
                NAT_POD_STATS.insert(key, MasqStats::default(), 0).ok();
                NAT_POD_STATS.get_ptr_mut(key)?
            }
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
        let p = parse(ctx, cfg)?;
        if !in_cluster(p.saddr, cfg) || in_cluster(p.daddr, cfg) {
            return None;
        }
        if p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO {
            return None;
        }
        let key = NatKey {
            saddr: p.saddr,
            daddr: p.daddr,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
            _pad: [0; 3],
        };
        // SAFETY: reading the monotonic clock has no preconditions.
        let now = lab_ebpf::kernel::now_ns();
        let mut to_port = 0u16;
        let mut found = false;
        let mut new = false;
        if let Some(e) = NAT_OUT.get_ptr_mut(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            let e = unsafe { &mut *e };
            if expired(e, p.proto, now, cfg) {
                bump(stat::EXPIRED);
            } else {
                e.last_ns = now;
                if p.tcp_flags & TCP_FIN_RST != 0 {
                    e.flags |= NAT_CLOSING;
                }
                to_port = e.to_port;
                found = true;
            }
        }
        let stats_key = MasqKey {
            pod: p.saddr,
            node: cfg.node_addr,
        };
        if !found {
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
                let reverse = NatKey {
                    saddr: p.daddr,
                    daddr: cfg.node_addr,
                    sport: if p.proto == IPPROTO_ICMP {
                        candidate
                    } else {
                        p.dport
                    },
                    dport: candidate,
                    proto: p.proto,
                    _pad: [0; 3],
                };
                let back = NatEntry {
                    created_ns: now,
                    last_ns: now,
                    to_addr: p.saddr,
                    to_port: p.sport,
                    flags: 0,
                    _pad: 0,
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
            };
            NAT_OUT.insert(key, out, 0).ok()?;
            bump(stat::ALLOCATED);
            new = true;
        }
        rewrite(
            ctx,
            &p,
            Change {
                addr_off: p.l3 + 12,
                old_addr: p.saddr,
                new_addr: cfg.node_addr,
                port_off: p.sport_off,
                old_port: p.sport,
                new_port: to_port,
            },
        )?;
        bump(stat::XLATE_OUT);
        // ICMP's echo id is not a port.
        let port = (new && p.proto != IPPROTO_ICMP).then(|| u16::from_be(to_port));
        count(ctx, cfg, stats_key, 0, new, port)?;
        Some(TC_ACT_UNSPEC)
    }

    #[classifier]
    pub fn nat_ingress(ctx: TcContext) -> i32 {
        ingress(&ctx).unwrap_or(TC_ACT_UNSPEC)
    }

    #[inline(always)]
    fn ingress(ctx: &TcContext) -> Option<i32> {
        let cfg = config();
        let p = parse(ctx, cfg)?;
        if p.daddr != cfg.node_addr {
            return None;
        }
        if p.proto == IPPROTO_ICMP && p.icmp_type != ICMP_ECHOREPLY {
            return None;
        }
        let key = NatKey {
            saddr: p.saddr,
            daddr: p.daddr,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
            _pad: [0; 3],
        };
        // SAFETY: reading the monotonic clock has no preconditions.
        let now = lab_ebpf::kernel::now_ns();
        let e = NAT_IN.get_ptr_mut(key)?;
        // SAFETY: a pointer into the map value, valid for this run.
        let e = unsafe { &mut *e };
        if expired(e, p.proto, now, cfg) {
            return None;
        }
        e.last_ns = now;
        if p.tcp_flags & TCP_FIN_RST != 0 {
            e.flags |= NAT_CLOSING;
        }
        let (pod, pod_port) = (e.to_addr, e.to_port);
        rewrite(
            ctx,
            &p,
            Change {
                addr_off: p.l3 + 16,
                old_addr: p.daddr,
                new_addr: pod,
                port_off: p.dport_off,
                old_port: p.dport,
                new_port: pod_port,
            },
        )?;
        bump(stat::XLATE_IN);
        let key = MasqKey {
            pod,
            node: cfg.node_addr,
        };
        count(ctx, cfg, key, 1, false, None)?;
        Some(TC_ACT_UNSPEC)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
