//! The packet drop tracer behind `labctl trace`.
//!
//! Hooks `skb:kfree_skb` through the BTF tracepoint (typed arguments) or,
//! where tp_btf is unavailable, the classic tracepoint with record offsets
//! read from tracefs. Every filter runs here, before an event is reserved;
//! per-reason and per-location counters are kept in maps so the summary is
//! exact even when the ring buffer overflows, and every event that cannot be
//! reserved is counted in `LOST`.
//!
//! A drop's namespace is its device's; a packet without a device (a local
//! packet dropped on its way out, before the stack gave it one) takes its
//! socket's, else its route's device's, so the namespace filters keep it
//! too. Its interface stays unknown (ifindex 0).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
    use aya_ebpf::{
        bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS},
        macros::{btf_tracepoint, map, tracepoint},
        maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
        programs::{BtfTracePointContext, TracePointContext, tracing::StackIdContext},
    };
    use lab_common::{
        trace::{
            COUNTS_CAPACITY, DropEvent, DropSite, LOST_INDEX, NETNS_SET_CAPACITY, SNAPLEN_TIERS,
            SkbOffsets, TraceConfig, family, flags, pkt,
        },
        verdict,
    };
    use lab_ebpf::{
        kernel::{copy_words, devless_netns_ino, read},
        packet,
    };

    lab_ebpf::license!();

    #[unsafe(no_mangle)]
    static CONFIG: TraceConfig = TraceConfig::ZERO;

    /// Resized by userspace (`--ring-size`) before loading.
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

    #[map]
    static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Drops per (location, reason): the summary by reason and by location.
    #[map]
    static COUNTS: PerCpuHashMap<DropSite, u64> =
        PerCpuHashMap::with_max_entries(COUNTS_CAPACITY, 0);

    /// The namespaces in scope, with `flags::NETNS_SET` (kept current by
    /// userspace as pods come and go).
    #[map]
    static NETNS_SET: HashMap<u32, u8> = HashMap::with_max_entries(NETNS_SET_CAPACITY, 0);

    /// Kernel stacks of drops, when `--stack` asks for them.
    #[map]
    static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

    #[btf_tracepoint(function = "kfree_skb")]
    pub fn drop_tracer_btf(ctx: BtfTracePointContext) -> i32 {
        // kfree_skb(skb, location, reason[, rx_sk since 6.11])
        let skb: u64 = ctx.arg(0);
        let location: u64 = ctx.arg(1);
        let reason: u64 = ctx.arg(2);
        handle::<true, _>(&ctx, skb, location, reason as u32);
        0
    }

    #[tracepoint(category = "skb", name = "kfree_skb")]
    pub fn drop_tracer_tp(ctx: TracePointContext) -> u32 {
        let cfg = config();
        // SAFETY: offsets come from this kernel's tracefs format file.
        let fields = unsafe {
            (
                ctx.read_at::<u64>(cfg.tp_skbaddr as usize),
                ctx.read_at::<u64>(cfg.tp_location as usize),
                ctx.read_at::<u32>(cfg.tp_reason as usize),
            )
        };
        let (Ok(skb), Ok(location), Ok(reason)) = fields else {
            return 0;
        };
        handle::<false, _>(&ctx, skb, location, reason);
        0
    }

    #[inline(always)]
    fn config() -> &'static TraceConfig {
        lab_ebpf::config::read(&CONFIG)
    }

    /// A `T` at `base + off`, or 0 when `base` is null. With `DIRECT`,
    /// `base` is a BTF-typed kernel pointer (tp_btf's skb, or a pointer
    /// field loaded from it) and `off` a constant to the verifier (a field
    /// offset in the frozen CONFIG), so the field is loaded directly, the
    /// verifier checking the access against the kernel's layout (a fault
    /// reads as zero); otherwise (the classic tracepoint, whose skb is a
    /// plain integer) through bpf_probe_read_kernel. The direct load saves
    /// a helper call per field on every drop.
    #[inline(always)]
    fn field<const DIRECT: bool, T: Copy + Default>(base: u64, off: u32) -> T {
        if base == 0 {
            return T::default();
        }
        if DIRECT {
            // SAFETY: see above; the verifier enforces it.
            unsafe { core::ptr::read((base as *const u8).add(off as usize) as *const T) }
        } else {
            read::<T>(base, off).unwrap_or_default()
        }
    }

    /// [`devless_netns_ino`] as a BPF subprogram of its own, so that its
    /// helper calls and registers stay out of `handle`: a drop with a
    /// device, the common case, runs the same loads and branches as before
    /// this path existed.
    #[inline(never)]
    fn netns_without_dev(skb: u64) -> u64 {
        u64::from(devless_netns_ino(skb, &config().off.netns))
    }

    #[inline(always)]
    fn handle<const DIRECT: bool, C: StackIdContext>(
        ctx: &C,
        skb: u64,
        location: u64,
        reason: u32,
    ) {
        let cfg = config();
        if reason == cfg.reason_consumed {
            return;
        }
        let off = &cfg.off;
        // A policy datapath marks what it drops (lab_common::verdict): such
        // a drop is named and filtered by its mark, not by the kernel's
        // generic reason (NETFILTER_DROP, TC_INGRESS, ...).
        let mark = field::<DIRECT, u32>(skb, off.skb_mark);
        let policy = verdict::policy_mark(mark);
        let passes = if policy != 0 {
            cfg.policy_allowed(policy & verdict::MARK_DENY != 0)
        } else {
            cfg.reason_allowed(reason)
        };
        if !passes {
            return;
        }
        let dev = field::<DIRECT, u64>(skb, off.netns.skb_dev);
        // No device: the interface is unknown (0), the namespace is the
        // socket's or the route's (a local packet dropped before it was
        // given a device).
        let ifindex = field::<DIRECT, u32>(dev, off.dev_ifindex);
        if cfg.ifindex != 0 && ifindex != cfg.ifindex {
            return;
        }
        let netns_ino = if dev != 0 {
            let net = field::<DIRECT, u64>(dev, off.netns.dev_nd_net);
            field::<DIRECT, u32>(net, off.netns.net_ns_inum)
        } else {
            netns_without_dev(skb) as u32
        };
        if cfg.netns_ino != 0 && netns_ino != cfg.netns_ino {
            return;
        }
        // SAFETY: the value is only tested for presence, never kept.
        if cfg.flags & flags::NETNS_SET != 0 && unsafe { NETNS_SET.get(netns_ino) }.is_none() {
            return;
        }

        let mut ev = DropEvent::ZERO;
        ev.location = location;
        ev.netns_ino = netns_ino;
        ev.ifindex = ifindex;
        ev.reason = reason;
        ev.mark = mark;
        ev.len = field::<DIRECT, u32>(skb, off.skb_len);
        ev.ethertype = u16::from_be(field::<DIRECT, u16>(skb, off.skb_protocol));
        // Summary mode without packet filters needs no packet fields: skip
        // the header reads, the costliest part per drop.
        let packet_filters = cfg.l4proto != 0 || cfg.port != 0 || cfg.flags & flags::HOST != 0;
        if cfg.flags & flags::SUMMARY_ONLY == 0 || packet_filters {
            packet::parse(
                field::<DIRECT, u64>(skb, off.skb_head),
                field::<DIRECT, u16>(skb, off.skb_network_header),
                &mut ev,
            );
        }

        if cfg.l4proto != 0 && ev.l4proto != cfg.l4proto {
            return;
        }
        if cfg.port != 0
            && (ev.pkt & pkt::PORTS == 0 || (ev.sport != cfg.port && ev.dport != cfg.port))
        {
            return;
        }
        if cfg.flags & flags::HOST != 0
            && (ev.family == family::NONE || (ev.saddr != cfg.host && ev.daddr != cfg.host))
        {
            return;
        }

        add(
            &COUNTS,
            DropSite {
                location,
                reason,
                policy,
            },
        );
        if cfg.flags & flags::SUMMARY_ONLY != 0 {
            return;
        }
        ev.ts_ns = lab_ebpf::kernel::now_ns();
        if cfg.flags & flags::STACK != 0 {
            ev.stack_id = match ctx.get_stackid(&STACKS, 0) {
                Ok(id) => id as i32,
                Err(_) => -1,
            };
        }
        let sent = match cfg.snaplen {
            0 => send_event(&ev),
            n if n <= SNAPLEN_TIERS[0] => send_with_packet::<128>(&ev, skb, off, n),
            n if n <= SNAPLEN_TIERS[1] => send_with_packet::<256>(&ev, skb, off, n),
            n if n <= SNAPLEN_TIERS[2] => send_with_packet::<512>(&ev, skb, off, n),
            n if n <= SNAPLEN_TIERS[3] => send_with_packet::<1024>(&ev, skb, off, n),
            n => send_with_packet::<2048>(&ev, skb, off, n),
        };
        if !sent && let Some(lost) = LOST.get_ptr_mut(LOST_INDEX) {
            // SAFETY: per-CPU slot, only this CPU writes it.
            unsafe { *lost += 1 };
        }
    }

    /// Waking the reader for every event costs more than the event itself
    /// in a drop storm: a wake-up is an irq_work whose self-IPI is an MSR
    /// write, a VM exit on a virtual machine. Wake it once per
    /// `wakeup_bytes` written (a power of two, 64 KiB or a quarter of a
    /// smaller ring): only the record that carries the ring's producer
    /// position across a multiple of it wakes. (Waking on every record
    /// while the unread data was above the mark spent a quarter of the
    /// tracer's cost per drop whenever the reader fell behind; waking when
    /// the unread data crossed the mark still woke hundreds of times a
    /// batch, the reader draining around the mark.) A crossing missed (two
    /// CPUs reserving at once) is caught by the reader's poll timeout,
    /// which also shows a lone drop within it.
    #[inline(always)]
    fn wake_flags(record: u64) -> u64 {
        let mark = u64::from(config().wakeup_bytes);
        let written = EVENTS.query(u64::from(BPF_RB_PROD_POS));
        if mark != 0 && written & (mark - 1) < record {
            u64::from(BPF_RB_FORCE_WAKEUP)
        } else {
            u64::from(BPF_RB_NO_WAKEUP)
        }
    }

    /// What a record of a `T` takes in the ring: the kernel's 8-byte
    /// header, the size rounded up to 8.
    #[inline(always)]
    const fn record_bytes<T>() -> u64 {
        (8 + size_of::<T>() as u64).next_multiple_of(8)
    }

    /// The event alone; false when the ring buffer is full.
    #[inline(always)]
    fn send_event(ev: &DropEvent) -> bool {
        match EVENTS.reserve::<DropEvent>(0) {
            Some(mut slot) => {
                // SAFETY: a reserved record of a DropEvent, 8-byte aligned.
                unsafe { copy_words(slot.as_mut_ptr(), ev) };
                slot.submit(wake_flags(record_bytes::<DropEvent>()));
                true
            }
            None => false,
        }
    }

    /// An event followed by room for N packet bytes. The verifier needs a
    /// constant reservation size, so each snaplen tier is its own size.
    #[repr(C)]
    struct WithPacket<const N: usize> {
        ev: DropEvent,
        data: [u8; N],
    }

    /// The event and up to `snaplen` bytes of its packet from the network
    /// header (the linear part only: what lies between the network header
    /// and `tail`); false when the ring buffer is full.
    #[inline(always)]
    fn send_with_packet<const N: usize>(
        ev: &DropEvent,
        skb: u64,
        off: &SkbOffsets,
        snaplen: u32,
    ) -> bool {
        let Some(mut slot) = EVENTS.reserve::<WithPacket<N>>(0) else {
            return false;
        };
        let rec = slot.as_mut_ptr();
        let mut caplen = 0u32;
        let head = read::<u64>(skb, off.skb_head).unwrap_or(0);
        let nh = read::<u16>(skb, off.skb_network_header).unwrap_or(0xffff);
        let tail = read::<u32>(skb, off.skb_tail).unwrap_or(0);
        if head != 0 && nh != 0xffff && tail > u32::from(nh) {
            let mut n = tail - u32::from(nh);
            if n > snaplen {
                n = snaplen;
            }
            if n > N as u32 {
                n = N as u32;
            }
            // SAFETY: `rec` points at a reserved record of N data bytes and
            // n <= N; the helper reads kernel memory through the fault-safe
            // path.
            let ret = unsafe {
                bpf_probe_read_kernel(
                    (*rec).data.as_mut_ptr().cast(),
                    n,
                    (head + u64::from(nh)) as *const _,
                )
            };
            if ret == 0 {
                caplen = n;
            }
        }
        // SAFETY: `rec` points at the reserved record (8-byte aligned);
        // only its event part is written here (the data bytes were written
        // above).
        unsafe {
            let dst = core::ptr::addr_of_mut!((*rec).ev);
            copy_words(dst, ev);
            core::ptr::addr_of_mut!((*dst).caplen).write(caplen);
        }
        slot.submit(wake_flags(record_bytes::<WithPacket<N>>()));
        true
    }

    #[inline(always)]
    fn add<K>(map: &PerCpuHashMap<K, u64>, key: K) {
        match map.get_ptr_mut(&key) {
            // SAFETY: per-CPU value, only this CPU writes it.
            Some(v) => unsafe { *v += 1 },
            None => {
                // A full map only loses the summary line for a new key; the
                // maps are sized far above the number of reasons/locations.
                map.insert(&key, 1, 0).ok();
            }
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
