//! The masquerade counter behind `labctl masq`: a BTF tracepoint on
//! `net:net_dev_start_xmit` (works without kprobes or fentry) that reads the
//! conntrack entry attached to each transmitted skb (`skb->_nfct`) and, for
//! source-NATed flows, counts per pod and node address: new connections,
//! packets and bytes per direction, and the translated ports in use.
//!
//! It runs for every packet any device of the machine transmits, so the
//! common case (another namespace's packet) is three direct loads and a
//! compare; a counted packet adds one read of the conntrack entry and two
//! map lookups.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::bindings::BPF_NOEXIST;
    use aya_ebpf::helpers::bpf_probe_read_kernel;
    use aya_ebpf::{
        macros::{btf_tracepoint, map},
        maps::{LruHashMap, PerCpuHashMap},
        programs::BtfTracePointContext,
    };
    use lab_common::masq::{CT_WINDOW, MasqConfig, MasqKey, MasqStats, SEEN_CAPACITY, SeenKey};

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
        let skb: *const u8 = ctx.arg(0);
        count(skb);
        0
    }

    /// A `T` at `base + off`, loaded directly: `base` is a BTF-typed kernel
    /// pointer (the tracepoint's skb, or a pointer field read from it) and
    /// `off` a constant to the verifier (a frozen read-only global), which
    /// checks the access against the kernel's struct layout; a fault reads
    /// as zero. No helper call: this runs for every packet every device of
    /// the machine transmits.
    ///
    /// # Safety
    /// `base` must be such a pointer and `off` a field offset inside it.
    #[inline(always)]
    unsafe fn load<T: Copy>(base: *const u8, off: u32) -> T {
        // SAFETY: the caller's contract; the verifier enforces it.
        unsafe { core::ptr::read(base.add(off as usize) as *const T) }
    }

    /// A `T` at `off` in the copied conntrack window, if it fits.
    #[inline(always)]
    fn field<T: Copy>(ct: &[u8; CT_WINDOW], off: u32) -> Option<T> {
        let off = off as usize;
        if off + size_of::<T>() > CT_WINDOW {
            return None;
        }
        // SAFETY: in bounds, checked above; any bytes are a valid T here
        // (integers).
        Some(unsafe { core::ptr::read_unaligned(ct.as_ptr().add(off) as *const T) })
    }

    #[inline(always)]
    fn count(skb: *const u8) -> Option<()> {
        let cfg = lab_ebpf::config::read(&MASQ_CONFIG);
        // SAFETY: skb is the tracepoint's sk_buff; the offsets are its
        // fields and those of the net_device and net it points to.
        let (dev, nfct) = unsafe {
            (
                load::<*const u8>(skb, cfg.skb_dev),
                load::<u64>(skb, cfg.skb_nfct),
            )
        };
        if dev.is_null() {
            return None;
        }
        // SAFETY: as above.
        let net = unsafe { load::<*const u8>(dev, cfg.dev_nd_net) };
        // SAFETY: as above.
        if net.is_null() || unsafe { load::<u32>(net, cfg.net_ns_inum) } != cfg.netns_ino {
            return None;
        }
        let ct = nfct & !NFCT_INFOMASK;
        if ct == 0 {
            return None;
        }
        // Both tuples and the status in one read (nf_conn is reached
        // through an integer, `_nfct`, so it cannot be loaded directly).
        let window = ct + u64::from(cfg.ct_tuple_orig);
        // SAFETY: bpf_probe_read_kernel copies through the kernel's
        // fault-safe path; a bad address is an error, never a crash.
        let w = unsafe { bpf_probe_read_kernel(window as *const [u8; CT_WINDOW]) }.ok()?;
        let status = field::<u64>(&w, cfg.ct_status - cfg.ct_tuple_orig)?;
        if status & IPS_SRC_NAT == 0 {
            return None;
        }
        let reply = nfct & NFCT_INFOMASK >= IP_CT_IS_REPLY;
        // SAFETY: dev is the skb's net_device.
        let ifindex = unsafe { load::<u32>(dev, cfg.dev_ifindex) };
        let counted_here = if reply {
            ifindex != cfg.uplink_ifindex && !cfg.skip_ifindex.contains(&ifindex)
        } else {
            ifindex == cfg.uplink_ifindex
        };
        if !counted_here {
            return None;
        }
        let back = cfg.ct_tuple_reply - cfg.ct_tuple_orig;
        let key = MasqKey {
            pod: field::<u32>(&w, cfg.tuple_src_u3)?,
            node: field::<u32>(&w, back + cfg.tuple_dst_u3)?,
        };
        let node_port = u16::from_be(field::<u16>(&w, back + cfg.tuple_dst_u)?);
        let proto = field::<u8>(&w, cfg.tuple_dst_protonum)?;
        // SAFETY: skb's own fields.
        let (len, nh, mh) = unsafe {
            (
                load::<u32>(skb, cfg.skb_len),
                load::<u16>(skb, cfg.skb_network_header),
                load::<u16>(skb, cfg.skb_mac_header),
            )
        };
        let l2 = nh.saturating_sub(mh);
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
            orig_sport: field::<u16>(&w, cfg.tuple_src_u)?,
            node_port,
        };
        // A lookup before the insert: an insert attempt on an LRU map takes
        // a node from its free list even when the key is there. BPF_NOEXIST:
        // succeeds once per connection.
        // SAFETY: the value is only tested for presence.
        let new = unsafe { MASQ_SEEN.get(seen) }.is_none()
            && MASQ_SEEN.insert(seen, 1, u64::from(BPF_NOEXIST)).is_ok();
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
