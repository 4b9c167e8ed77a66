//! labctl's eBPF connection tracker (`labctl conntrack track`): a tc
//! classifier, attached to ingress and egress of one interface, that keeps
//! its own connection table in an LRU hash keyed by the first packet's
//! IPv4 5-tuple, the way Cilium's CT maps work: TCP state, per-direction
//! packets and bytes, first and last seen. It only observes (TC_ACT_UNSPEC:
//! the next classifier, if any, still runs).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::bindings::BPF_NOEXIST;
    use aya_ebpf::{
        macros::{classifier, map},
        maps::{LruHashMap, LruPerCpuHashMap},
        programs::TcContext,
    };
    use lab_common::{
        ct::{CAPACITY, CtConfig, CtCounters, CtKey, CtValue, ORIG, REPLY, tcp_state},
        proto::{ICMP as IPPROTO_ICMP, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP},
    };
    use lab_ebpf::tc::TC_ACT_UNSPEC;

    lab_ebpf::license!();

    const TCP_FIN: u8 = 0x01;
    const TCP_SYN: u8 = 0x02;
    const TCP_RST: u8 = 0x04;
    const TCP_ACK: u8 = 0x10;

    #[unsafe(no_mangle)]
    static CT_CONFIG: CtConfig = CtConfig { ethernet: 1 };

    #[map]
    static CT: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(CAPACITY, 0);

    /// Packets and bytes per flow and direction, per CPU (same keys as CT).
    #[map]
    static CT_COUNTERS: LruPerCpuHashMap<CtKey, CtCounters> =
        LruPerCpuHashMap::with_max_entries(CAPACITY, 0);

    #[classifier]
    pub fn ct_tracker(ctx: TcContext) -> i32 {
        track(&ctx);
        TC_ACT_UNSPEC
    }

    #[inline(always)]
    fn track(ctx: &TcContext) -> Option<()> {
        let cfg = lab_ebpf::config::read(&CT_CONFIG);
        let ip = lab_ebpf::tc::ipv4(ctx, cfg.ethernet != 0)?;
        let (proto, l4) = (ip.proto, ip.l4);
        let (sport, dport, flags) = match proto {
            IPPROTO_TCP => {
                let h = ctx.load::<[u8; 14]>(l4).ok()?;
                (
                    u16::from_ne_bytes([h[0], h[1]]),
                    u16::from_ne_bytes([h[2], h[3]]),
                    h[13],
                )
            }
            IPPROTO_UDP => {
                let h = ctx.load::<[u8; 4]>(l4).ok()?;
                (
                    u16::from_ne_bytes([h[0], h[1]]),
                    u16::from_ne_bytes([h[2], h[3]]),
                    0,
                )
            }
            IPPROTO_ICMP => {
                let h = ctx.load::<[u8; 6]>(l4).ok()?;
                // Echo request (8) and reply (0) only; the id stands in for
                // both ports so a reply's reversed key is the same.
                if h[0] != 8 && h[0] != 0 {
                    return None;
                }
                let id = u16::from_ne_bytes([h[4], h[5]]);
                (id, id, 0)
            }
            _ => return None,
        };
        let key = CtKey::new(ip.saddr, ip.daddr, sport, dport, proto);
        let reverse = key.reversed();
        // SAFETY: reading the monotonic clock has no preconditions.
        let now = lab_ebpf::kernel::now_ns();
        let (entry, dir, flow) = if let Some(v) = CT.get_ptr_mut(key) {
            (v, ORIG, key)
        } else if let Some(v) = CT.get_ptr_mut(reverse) {
            (v, REPLY, reverse)
        } else {
            let state = match proto {
                IPPROTO_TCP if flags & (TCP_SYN | TCP_ACK) == TCP_SYN => tcp_state::SYN_SENT,
                // Picked up in the middle, as netfilter's loose tracking does.
                IPPROTO_TCP if flags & TCP_RST == 0 => tcp_state::ESTABLISHED,
                IPPROTO_TCP => tcp_state::CLOSE,
                _ => tcp_state::NONE,
            };
            let fresh = CtValue {
                first_ns: now,
                last_ns: now,
                state,
                fin_dir: 0,
                seen_reply: 0,
                _pad: [0; 5],
            };
            // BPF_NOEXIST: if another CPU created it meanwhile, use theirs.
            CT.insert(key, fresh, u64::from(BPF_NOEXIST)).ok();
            (CT.get_ptr_mut(key)?, ORIG, key)
        };
        let counters = match CT_COUNTERS.get_ptr_mut(flow) {
            Some(c) => c,
            None => {
                CT_COUNTERS.insert(flow, CtCounters::default(), 0).ok();
                CT_COUNTERS.get_ptr_mut(flow)?
            }
        };
        // SAFETY: both pointers point into map values, valid for this
        // program run; the counters are this CPU's own slot.
        unsafe {
            (*counters).packets[dir] += 1;
            (*counters).bytes[dir] += u64::from(ctx.len());
            (*entry).last_ns = now;
            if dir == REPLY {
                (*entry).seen_reply = 1;
            }
            if proto == IPPROTO_TCP {
                (*entry).state =
                    next_state((*entry).state, flags, dir as u8, &mut (*entry).fin_dir);
            }
        }
        Some(())
    }

    /// A small TCP state machine with netfilter's state names.
    #[inline(always)]
    fn next_state(state: u8, flags: u8, dir: u8, fin_dir: &mut u8) -> u8 {
        use tcp_state::*;
        if flags & TCP_RST != 0 {
            return CLOSE;
        }
        if flags & TCP_SYN != 0 {
            return match (flags & TCP_ACK != 0, dir as usize, state) {
                // A new connection reusing the tuple.
                (false, ORIG, NONE | CLOSE | TIME_WAIT) => SYN_SENT,
                (true, REPLY, SYN_SENT) => SYN_RECV,
                _ => state,
            };
        }
        if flags & TCP_FIN != 0 {
            return match state {
                SYN_RECV | ESTABLISHED => {
                    *fin_dir = dir;
                    FIN_WAIT
                }
                FIN_WAIT if dir != *fin_dir => LAST_ACK,
                _ => state,
            };
        }
        if flags & TCP_ACK != 0 {
            return match state {
                SYN_RECV if dir as usize == ORIG => ESTABLISHED,
                LAST_ACK if dir == *fin_dir => TIME_WAIT,
                _ => state,
            };
        }
        state
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
