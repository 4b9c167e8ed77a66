//! The masquerade counter behind `labctl masq`: a BTF tracepoint on
//! `net:net_dev_start_xmit` (works without kprobes or fentry) that reads the
//! conntrack entry attached to each transmitted skb (`skb->_nfct`) and, for
//! source-NATed flows, counts per pod and node address: new connections,
//! packets and bytes per direction, and the translated ports in use.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::bindings::BPF_NOEXIST;
    use aya_ebpf::{
        macros::{btf_tracepoint, map},
        maps::{LruHashMap, PerCpuHashMap},
        programs::BtfTracePointContext,
    };
    use lab_common::masq::{MasqConfig, MasqKey, MasqStats, SEEN_CAPACITY, SeenKey};
    use lab_ebpf::kernel::read;

    lab_ebpf::license!();

    /// IPS_SRC_NAT in `nf_conn.status`.
    const IPS_SRC_NAT: u64 = 1 << 4;
    /// ctinfo values from IP_CT_IS_REPLY (3) on are the reply direction.
    const IP_CT_IS_REPLY: u64 = 3;
    const NFCT_INFOMASK: u64 = 7;

    #[unsafe(no_mangle)]
    static MASQ_CONFIG: MasqConfig = MasqConfig {
        skb_nfct: 0,
        skb_len: 0,
        skb_dev: 0,
        skb_network_header: 0,
        skb_mac_header: 0,
        dev_ifindex: 0,
        dev_nd_net: 0,
        net_ns_inum: 0,
        ct_status: 0,
        ct_tuple_orig: 0,
        ct_tuple_reply: 0,
        tuple_src_u3: 0,
        tuple_src_u: 0,
        tuple_dst_u3: 0,
        tuple_dst_u: 0,
        tuple_dst_protonum: 0,
        netns_ino: 0,
        uplink_ifindex: 0,
        skip_ifindex: [0; 4],
    };

    #[map]
    static MASQ_STATS: PerCpuHashMap<MasqKey, MasqStats> = PerCpuHashMap::with_max_entries(4096, 0);

    #[map]
    static MASQ_SEEN: LruHashMap<SeenKey, u8> = LruHashMap::with_max_entries(SEEN_CAPACITY, 0);

    #[btf_tracepoint(function = "net_dev_start_xmit")]
    pub fn masq_counter(ctx: BtfTracePointContext) -> i32 {
        // net_dev_start_xmit(const struct sk_buff *skb, const struct net_device *dev)
        let skb: u64 = ctx.arg(0);
        count(skb);
        0
    }

    #[inline(always)]
    fn count(skb: u64) -> Option<()> {
        let cfg = lab_ebpf::config::read(&MASQ_CONFIG);
        let dev = read::<u64>(skb, cfg.skb_dev)?;
        let net = read::<u64>(dev, cfg.dev_nd_net)?;
        if read::<u32>(net, cfg.net_ns_inum)? != cfg.netns_ino {
            return None;
        }
        let nfct = read::<u64>(skb, cfg.skb_nfct)?;
        let ct = nfct & !NFCT_INFOMASK;
        if ct == 0 || read::<u64>(ct, cfg.ct_status)? & IPS_SRC_NAT == 0 {
            return None;
        }
        let reply = nfct & NFCT_INFOMASK >= IP_CT_IS_REPLY;
        let ifindex = read::<u32>(dev, cfg.dev_ifindex)?;
        let counted_here = if reply {
            ifindex != cfg.uplink_ifindex && !cfg.skip_ifindex.contains(&ifindex)
        } else {
            ifindex == cfg.uplink_ifindex
        };
        if !counted_here {
            return None;
        }
        let orig = ct + u64::from(cfg.ct_tuple_orig);
        let back = ct + u64::from(cfg.ct_tuple_reply);
        let key = MasqKey {
            pod: read::<u32>(orig, cfg.tuple_src_u3)?,
            node: read::<u32>(back, cfg.tuple_dst_u3)?,
        };
        let node_port = u16::from_be(read::<u16>(back, cfg.tuple_dst_u)?);
        let proto = read::<u8>(orig, cfg.tuple_dst_protonum)?;
        let len = read::<u32>(skb, cfg.skb_len)?;
        let l2 = read::<u16>(skb, cfg.skb_network_header)?
            .saturating_sub(read::<u16>(skb, cfg.skb_mac_header)?);
        let dir = usize::from(reply);

        let stats = match MASQ_STATS.get_ptr_mut(key) {
            Some(s) => s,
            None => {
                MASQ_STATS.insert(key, MasqStats::default(), 0).ok();
                MASQ_STATS.get_ptr_mut(key)?
            }
        };
        let seen = SeenKey {
            ct,
            pod: key.pod,
            orig_sport: read::<u16>(orig, cfg.tuple_src_u)?,
            node_port,
        };
        // BPF_NOEXIST: succeeds once per connection.
        let new = MASQ_SEEN.insert(seen, 1, u64::from(BPF_NOEXIST)).is_ok();
        // SAFETY: this CPU's slot of a per-CPU map value.
        unsafe {
            (*stats).packets[dir] += 1;
            (*stats).bytes[dir] += u64::from(len.saturating_sub(u32::from(l2)));
            if new {
                (*stats).connections += 1;
                // TCP and UDP have ports (ICMP's id is not a port).
                if proto == 6 || proto == 17 {
                    if (*stats).port_min == 0 || node_port < (*stats).port_min {
                        (*stats).port_min = node_port;
                    }
                    if node_port > (*stats).port_max {
                        (*stats).port_max = node_port;
                    }
                }
            }
        }
        Some(())
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
