//! Network policy as Cilium enforces it (`--policy-mode ebpf`; the maps
//! are described in `lab_common::policy`), by two tc programs on each
//! pod's host-side veth of a node:
//!
//! - `policy_from_pod` (tc ingress: packets leaving the pod) judges the
//!   pod's **egress**: the peer is the destination;
//! - `policy_to_pod` (tc egress: packets going into the pod) judges its
//!   **ingress**: the peer is the source.
//!
//! Per packet: the veth's endpoint (`POLICY_ENDPOINTS`, by ifindex; a
//! veth that is no endpoint passes); a reply of a connection this side
//! allowed passes (`POLICY_CT`, the reversed tuple on the other side's
//! entry), as does an ICMP error about one. Anything else is judged, every
//! packet, as Cilium judges it: the peer's identity from the ipcache
//! (longest prefix; nothing matching: the world), then two lookups in the
//! endpoint's policy map, one for that identity and one for any identity
//! (0), each the longest match on protocol and port. A deny entry wins;
//! else an allow entry allows; else the packet is dropped if the endpoint
//! is default-deny in this direction (POLICY_DENIED, 133), and passes if
//! not. A deny entry drops with POLICY_DENY (181). A dropped packet's
//! mark says so first (`lab_common::verdict::mark`), for the drop tracer.
//! The deciding entry
//! counts the packet and its bytes (atomically); so do the per-endpoint
//! metrics (by reason and direction), default deny included.
//!
//! The first packet of a connection on this side (or the first after its
//! verdict changed: a policy, or a label, changed) enters it in
//! `POLICY_CT` and emits one `VerdictEvent` into `POLICY_EVENTS`; later
//! packets emit nothing. `POLICY_CT` is an LRU: when it is full the least
//! recently used connection goes; its next original-direction packet is
//! judged (as always) and enters it again, but a reply that comes first is
//! judged as a new connection the other way, and passes only if that is
//! allowed too.
//!
//! Not judged: non-IPv4 frames (ARP), IPv4 fragments after the first
//! (only the first carries ports; it is judged), and protocols other than
//! TCP, UDP, SCTP and ICMP. ICMP is judged with its type as the port (as
//! Cilium's ICMP rules): only rules without ports allow it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Cilium counts policy entries with `__sync_fetch_and_add` (BPF_XADD):
// Rust's `AtomicU64::fetch_add` needs compare-and-swap, which the BPF
// target does not declare, so the intrinsic behind it is called directly
// (lab-ebpf is built with `-Z build-std` under RUSTC_BOOTSTRAP already).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features, reason = "atomic_xadd, see above")
)]

#[cfg(target_arch = "bpf")]
mod program {
    use core::{
        ffi::c_void,
        intrinsics::{AtomicOrdering, atomic_xadd},
    };

    use aya_ebpf::{
        bindings::BPF_NOEXIST,
        helpers::bpf_map_lookup_elem,
        macros::{classifier, map},
        maps::{
            HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
            lpm_trie::{Key, LpmTrie},
        },
        programs::TcContext,
    };
    use lab_common::{
        policy::{
            CT_CAPACITY, CT_EGRESS, CT_INGRESS, CtEntry, CtKey, DIR_EGRESS, DIR_INGRESS,
            ENDPOINTS_CAPACITY, EP_EGRESS_DEFAULT_DENY, EP_INGRESS_DEFAULT_DENY, EVENT_ENFORCED,
            EVENTS_BYTES, EndpointInfo, IPCACHE_CAPACITY, IPCACHE_STATIC_PREFIX, IpcacheKey,
            MATCH_ALL, MATCH_L3_L4, MATCH_L3_ONLY, MATCH_L3_PROTO, MATCH_L4_ONLY, MATCH_NONE,
            MATCH_PROTO_ONLY, METRICS_CAPACITY, MetricsKey, MetricsValue, POLICY_CAPACITY,
            POLICY_FULL_PREFIX, PolicyEntry, PolicyKey, REASON_FORWARDED, REASON_POLICY_DENIED,
            REASON_POLICY_DENY, RemoteEndpointInfo, VerdictEvent, stat,
        },
        proto::{ICMP, SCTP, TCP, UDP},
        verdict,
    };
    use lab_ebpf::tc::{TC_ACT_SHOT, TC_ACT_UNSPEC, get, window};

    lab_ebpf::license!();

    /// The world: an address no ipcache entry covers.
    const WORLD: u32 = 2;
    const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
    /// ICMP errors that quote the packet they are about.
    const ICMP_DEST_UNREACH: u8 = 3;
    const ICMP_TIME_EXCEEDED: u8 = 11;
    const ICMP_PARAMETERPROB: u8 = 12;

    #[map]
    static POLICY_IPCACHE: LpmTrie<IpcacheKey, RemoteEndpointInfo> =
        LpmTrie::with_max_entries(IPCACHE_CAPACITY, 0);
    #[map]
    static POLICY_ENDPOINTS: HashMap<u32, EndpointInfo> =
        HashMap::with_max_entries(ENDPOINTS_CAPACITY, 0);
    #[map]
    static POLICY_MAP: LpmTrie<PolicyKey, PolicyEntry> =
        LpmTrie::with_max_entries(POLICY_CAPACITY, 0);
    #[map]
    static POLICY_CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_CAPACITY, 0);
    #[map]
    static POLICY_METRICS: PerCpuHashMap<MetricsKey, MetricsValue> =
        PerCpuHashMap::with_max_entries(METRICS_CAPACITY, 0);
    #[map]
    static POLICY_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);
    #[map]
    static POLICY_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

    /// What a packet is, for policy.
    struct Pkt {
        saddr: u32,
        daddr: u32,
        sport: u16,
        dport: u16,
        proto: u8,
        /// ICMP: the type (the policy's port).
        icmp_type: u8,
        /// An ICMP error: the connection it is about (its original
        /// direction, as quoted).
        related: Option<(u32, u32, u16, u16, u8)>,
        /// Where the transport header starts.
        l4: usize,
    }

    /// The packet's addresses, protocol and ports, read through direct
    /// packet access (ICMP errors' quoted headers through a load).
    #[inline(always)]
    fn parse(ctx: &TcContext) -> Option<Pkt> {
        // Headers are in the linear data almost always; pull them in
        // when they are not.
        let want = ctx.len().min(lab_ebpf::tc::MAX_HDR);
        if ((ctx.data_end() - ctx.data()) as u32) < want {
            ctx.pull_data(want).ok()?;
        }
        let eth = window::<14>(ctx, 0)?;
        // SAFETY: inside the 14-byte window.
        if unsafe { get::<u16>(eth, 12) } != ETH_P_IP_BE {
            return None;
        }
        let ip = window::<20>(ctx, 14)?;
        // SAFETY: every read is inside the 20-byte IP header window.
        let (vihl, frag, proto, saddr, daddr) = unsafe {
            (
                get::<u8>(ip, 0),
                get::<u16>(ip, 6),
                get::<u8>(ip, 9),
                get::<u32>(ip, 12),
                get::<u32>(ip, 16),
            )
        };
        if vihl >> 4 != 4 || u16::from_be(frag) & 0x1fff != 0 {
            return None;
        }
        let l4 = 14 + usize::from(vihl & 0x0f) * 4;
        let h = window::<8>(ctx, l4)?;
        let mut p = Pkt {
            saddr,
            daddr,
            sport: 0,
            dport: 0,
            proto,
            icmp_type: 0,
            related: None,
            l4,
        };
        match proto {
            TCP | UDP | SCTP => {
                // SAFETY: the ports are the first 4 bytes of the 8-byte window.
                unsafe {
                    p.sport = get::<u16>(h, 0);
                    p.dport = get::<u16>(h, 2);
                }
            }
            ICMP => {
                // SAFETY: type and echo id are inside the 8-byte window.
                let (ty, id) = unsafe { (get::<u8>(h, 0), get::<u16>(h, 4)) };
                if matches!(
                    ty,
                    ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB
                ) {
                    p.related = quoted(ctx, l4 + 8);
                }
                // The echo id stands in for both ports (a reply's reversed
                // tuple is the request's); the type is the policy's port.
                p.sport = id;
                p.dport = id;
                p.icmp_type = ty;
            }
            _ => return None,
        }
        Some(p)
    }

    /// The connection an ICMP error quotes (the IP header and the first 4
    /// bytes after it, at `at`).
    #[inline(always)]
    fn quoted(ctx: &TcContext, at: usize) -> Option<(u32, u32, u16, u16, u8)> {
        let ip = ctx.load::<[u8; 20]>(at).ok()?;
        let inner_l4 = at + usize::from(ip[0] & 0x0f) * 4;
        let ports = ctx.load::<[u16; 2]>(inner_l4).ok()?;
        Some((
            u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
            u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
            ports[0],
            ports[1],
            ip[9],
        ))
    }

    /// The identity of `addr` (network order): the longest ipcache prefix
    /// covering it, else the world.
    #[inline(always)]
    fn identity_of(addr: u32) -> u32 {
        let key = Key::new(IPCACHE_STATIC_PREFIX + 32, IpcacheKey::ipv4(addr));
        POLICY_IPCACHE.get(&key).map_or(WORLD, |i| i.sec_identity)
    }

    /// The longest policy entry of `endpoint` matching the rest of the key.
    #[inline(always)]
    fn lookup(key: &Key<PolicyKey>) -> Option<*mut PolicyEntry> {
        // SAFETY: the map and key pointers are valid for the call; the
        // helper returns a pointer into the map's value or null. (The
        // typed `get` gives a shared reference, and entries are counted
        // through this pointer.)
        let p = unsafe {
            bpf_map_lookup_elem(
                &POLICY_MAP as *const _ as *mut c_void,
                key as *const _ as *const c_void,
            )
        };
        (!p.is_null()).then_some(p as *mut PolicyEntry)
    }

    struct Verdict {
        reason: u8,
        match_type: u8,
        entry: Option<*mut PolicyEntry>,
        /// The deciding entry's identity (0: any).
        match_identity: u32,
    }

    /// The endpoint's policy on a connection with `remote` to port `dport`.
    #[inline(always)]
    fn judge(ep: &EndpointInfo, egress: bool, remote: u32, proto: u8, dport: u16) -> Verdict {
        let mut key = Key::new(
            POLICY_FULL_PREFIX,
            PolicyKey {
                endpoint: ep.id,
                sec_label: remote,
                egress: u8::from(egress),
                protocol: proto,
                dport,
                pad: 0,
            },
        );
        let by_id = lookup(&key);
        key.data.sec_label = 0;
        let any = lookup(&key);
        // SAFETY: pointers into map values, valid for this run.
        let (id_deny, any_deny, id_prefix, any_prefix) = unsafe {
            (
                by_id.is_some_and(|e| (*e).is_deny()),
                any.is_some_and(|e| (*e).is_deny()),
                by_id.map_or(0, |e| (*e).l4_prefix()),
                any.map_or(0, |e| (*e).l4_prefix()),
            )
        };
        // A deny wins; else the more specific allow (this identity's when
        // both are as specific).
        let (entry, identity, reason) = if id_deny {
            (by_id, remote, REASON_POLICY_DENY)
        } else if any_deny {
            (any, 0, REASON_POLICY_DENY)
        } else if by_id.is_some() && (any.is_none() || id_prefix >= any_prefix) {
            (by_id, remote, REASON_FORWARDED)
        } else if any.is_some() {
            (any, 0, REASON_FORWARDED)
        } else {
            let deny = if egress {
                EP_EGRESS_DEFAULT_DENY
            } else {
                EP_INGRESS_DEFAULT_DENY
            };
            let reason = if ep.flags & deny != 0 {
                REASON_POLICY_DENIED
            } else {
                REASON_FORWARDED
            };
            return Verdict {
                reason,
                match_type: MATCH_NONE,
                entry: None,
                match_identity: 0,
            };
        };
        let prefix = if identity == remote {
            id_prefix
        } else {
            any_prefix
        };
        let match_type = match (identity != 0, prefix) {
            (true, 0) => MATCH_L3_ONLY,
            (true, 8) => MATCH_L3_PROTO,
            (true, _) => MATCH_L3_L4,
            (false, 0) => MATCH_ALL,
            (false, 8) => MATCH_PROTO_ONLY,
            (false, _) => MATCH_L4_ONLY,
        };
        Verdict {
            reason,
            match_type,
            entry,
            match_identity: identity,
        }
    }

    #[inline(always)]
    fn bump(index: u32) {
        if let Some(v) = POLICY_STATS.get_ptr_mut(index) {
            // SAFETY: this CPU's slot.
            unsafe { *v += 1 };
        }
    }

    /// Counts a packet in the endpoint's metrics.
    #[inline(always)]
    fn count(endpoint: u32, reason: u8, dir: u8, len: u32) {
        let key = MetricsKey {
            endpoint,
            reason,
            dir,
            _pad: 0,
        };
        match POLICY_METRICS.get_ptr_mut(key) {
            // SAFETY: this CPU's copy of the value.
            Some(v) => unsafe {
                (*v).packets += 1;
                (*v).bytes += u64::from(len);
            },
            None => {
                let v = MetricsValue {
                    packets: 1,
                    bytes: u64::from(len),
                };
                // Another CPU may have made it meanwhile: then count
                // in this CPU's copy of that one.
                if POLICY_METRICS
                    .insert(key, v, u64::from(BPF_NOEXIST))
                    .is_err()
                    && let Some(c) = POLICY_METRICS.get_ptr_mut(key)
                {
                    // SAFETY: this CPU's copy of the value.
                    unsafe {
                        (*c).packets += 1;
                        (*c).bytes += u64::from(len);
                    }
                }
            }
        }
    }

    #[classifier]
    pub fn policy_from_pod(ctx: TcContext) -> i32 {
        enforce(&ctx, true)
    }

    #[classifier]
    pub fn policy_to_pod(ctx: TcContext) -> i32 {
        enforce(&ctx, false)
    }

    /// `egress`: the endpoint's egress (the packet leaves the pod).
    #[inline(always)]
    fn enforce(ctx: &TcContext, egress: bool) -> i32 {
        // SAFETY: the context the kernel passed in, valid for this run.
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        // SAFETY: a pointer into the map value, valid for this run.
        let Some(ep) = POLICY_ENDPOINTS.get_ptr(ifindex).map(|e| unsafe { *e }) else {
            return TC_ACT_UNSPEC;
        };
        let Some(p) = parse(ctx) else {
            return TC_ACT_UNSPEC;
        };
        let len = ctx.len();
        let (dir, ct_dir, other_ct_dir) = if egress {
            (DIR_EGRESS, CT_EGRESS, CT_INGRESS)
        } else {
            (DIR_INGRESS, CT_INGRESS, CT_EGRESS)
        };
        // A reply (or an ICMP error) of a connection this side allowed
        // when it came the other way.
        let back = match p.related {
            Some((s, d, sp, dp, proto)) => CtKey::new(s, d, sp, dp, proto, other_ct_dir),
            None => CtKey::new(p.daddr, p.saddr, p.dport, p.sport, p.proto, other_ct_dir),
        };
        if let Some(e) = POLICY_CT.get_ptr_mut(back) {
            // SAFETY: a pointer into the map value, valid for this run;
            // counters of one connection, raced only by its own packets.
            let allowed = unsafe { (*e).reason == REASON_FORWARDED };
            if allowed {
                // SAFETY: as above.
                unsafe {
                    (*e).reply_packets += 1;
                    (*e).reply_bytes += u64::from(len);
                }
                count(ep.id, REASON_FORWARDED, dir, len);
                return TC_ACT_UNSPEC;
            }
        }
        let remote = identity_of(if egress { p.daddr } else { p.saddr });
        let port = if p.proto == ICMP {
            u16::from(p.icmp_type).to_be()
        } else {
            p.dport
        };
        let v = judge(&ep, egress, remote, p.proto, port);
        if let Some(e) = v.entry {
            // SAFETY: a pointer into the policy map's value, valid for this
            // run; shared by every CPU, so counted atomically.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*e).packets, 1);
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    &raw mut (*e).bytes,
                    u64::from(len),
                );
            }
        }
        count(ep.id, v.reason, dir, len);
        let key = CtKey::new(p.saddr, p.daddr, p.sport, p.dport, p.proto, ct_dir);
        let new = match POLICY_CT.get_ptr_mut(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            Some(e) => unsafe {
                (*e).packets += 1;
                (*e).bytes += u64::from(len);
                let changed = (*e).reason != v.reason;
                (*e).reason = v.reason;
                (*e).remote_identity = remote;
                changed
            },
            None => {
                let e = CtEntry {
                    packets: 1,
                    bytes: u64::from(len),
                    reply_packets: 0,
                    reply_bytes: 0,
                    endpoint: ep.id,
                    remote_identity: remote,
                    reason: v.reason,
                    _pad: 0,
                    _pad2: 0,
                    _pad3: 0,
                };
                if POLICY_CT.insert(key, e, 0).is_ok() {
                    bump(stat::CT_CREATED);
                }
                true
            }
        };
        if new {
            let enforced = if egress {
                EP_EGRESS_DEFAULT_DENY
            } else {
                EP_INGRESS_DEFAULT_DENY
            };
            let (match_proto, match_prefix, match_dport) = match v.entry {
                // SAFETY: a pointer into the policy map's value, valid for
                // this run.
                Some(e) => unsafe {
                    let l4 = (*e).l4_prefix();
                    (
                        if l4 == 0 { 0 } else { p.proto },
                        l4,
                        if l4 > 8 { port } else { 0 },
                    )
                },
                None => (0, 0, 0),
            };
            let ev = VerdictEvent {
                saddr: p.saddr,
                daddr: p.daddr,
                sport: p.sport,
                dport: p.dport,
                proto: p.proto,
                dir,
                reason: v.reason,
                match_type: v.match_type,
                endpoint: ep.id,
                ifindex,
                local_identity: ep.identity,
                remote_identity: remote,
                match_identity: v.match_identity,
                match_proto,
                match_prefix,
                match_dport,
                len,
                flags: if ep.flags & enforced != 0 {
                    EVENT_ENFORCED
                } else {
                    0
                },
                // Read only here, once per connection: byte 13 of the TCP
                // header.
                tcp_flags: match p.proto {
                    TCP => ctx.load::<u8>(p.l4 + 13).unwrap_or(0),
                    ICMP => p.icmp_type,
                    _ => 0,
                },
                _pad: 0,
            };
            if POLICY_EVENTS.output::<VerdictEvent>(&ev, 0).is_err() {
                bump(stat::EVENTS_LOST);
            }
        }
        if v.reason == REASON_FORWARDED {
            TC_ACT_UNSPEC
        } else {
            // Tell the drop tracer why (lab_common::verdict).
            ctx.set_mark(verdict::mark(egress, v.reason == REASON_POLICY_DENY));
            TC_ACT_SHOT
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
