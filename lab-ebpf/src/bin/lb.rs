//! Service load balancing, in two places, as Cilium does it (the maps are
//! described in `lab_common::lb`):
//!
//! - per packet, by tc programs on each pod's host-side veth (`--kube-proxy
//!   ebpf`): `lb_from_pod` (tc ingress: packets leaving the pod) looks a
//!   new flow's destination up, picks a backend, remembers the choice in
//!   `LB4_CT` and rewrites the destination; every later packet of the flow
//!   goes to the same backend. `lb_to_pod` (tc egress: packets going into
//!   the pod) puts the VIP back as the source of the backend's replies
//!   (`LB4_CT_REV`). Checksums are updated incrementally.
//! - per connection, by cgroup programs (`--kube-proxy ebpf-socket`,
//!   socket-LB): `connect4` and `sendmsg4` rewrite the address a socket
//!   connects or sends to, so the packets carry the backend's address from
//!   the start; `recvmsg4` and `getpeername4` show the VIP again
//!   (`LB4_REVERSE_SK`, per socket cookie).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        EbpfContext as _,
        helpers::bpf_get_socket_cookie,
        macros::{cgroup_sock_addr, classifier, map},
        maps::{HashMap, LruHashMap, PerCpuArray},
        programs::{SockAddrContext, TcContext},
    };
    use lab_common::{
        flow::FlowKey,
        lb::{
            BACKENDS_CAPACITY, CT_CAPACITY, Lb4Backend, Lb4Key, Lb4ReverseNat, Lb4Service,
            LbCtEntry, RevSkEntry, RevSkKey, SERVICES_CAPACITY,
        },
        proto::{TCP as IPPROTO_TCP, UDP as IPPROTO_UDP},
    };
    use lab_ebpf::{
        lb::{Lookup, pick},
        tc::{Change, TC_ACT_SHOT, TC_ACT_UNSPEC, parse, rewrite},
    };

    lab_ebpf::license!();

    const TCP_SYN: u8 = 0x02;
    const TCP_ACK: u8 = 0x10;
    /// Offsets of the addresses in the IPv4 header.
    const SADDR: usize = 12;
    const DADDR: usize = 16;
    /// What a cgroup sock_addr program returns to let the call go on, or to
    /// refuse it (EPERM).
    const ALLOW: i32 = 1;
    const REJECT: i32 = 0;

    #[map]
    static LB4_SERVICES: HashMap<Lb4Key, Lb4Service> =
        HashMap::with_max_entries(SERVICES_CAPACITY, 0);
    #[map]
    static LB4_BACKENDS: HashMap<u32, Lb4Backend> = HashMap::with_max_entries(BACKENDS_CAPACITY, 0);
    #[map]
    static LB4_REVERSE_NAT: HashMap<u16, Lb4ReverseNat> =
        HashMap::with_max_entries(SERVICES_CAPACITY, 0);
    #[map]
    static LB4_CT: LruHashMap<FlowKey, LbCtEntry> = LruHashMap::with_max_entries(CT_CAPACITY, 0);
    #[map]
    static LB4_CT_REV: LruHashMap<FlowKey, Lb4ReverseNat> =
        LruHashMap::with_max_entries(CT_CAPACITY, 0);
    #[map]
    static LB4_REVERSE_SK: LruHashMap<RevSkKey, RevSkEntry> =
        LruHashMap::with_max_entries(CT_CAPACITY, 0);
    /// New connections (socket-LB: connects and unconnected sends) given to
    /// each backend, indexed by backend id.
    #[map]
    static LB4_BACKEND_CONNS: PerCpuArray<u64> =
        PerCpuArray::with_max_entries(BACKENDS_CAPACITY, 0);

    #[inline(always)]
    fn count(backend_id: u32) {
        if let Some(v) = LB4_BACKEND_CONNS.get_ptr_mut(backend_id) {
            // SAFETY: this CPU's slot.
            unsafe { *v += 1 };
        }
    }

    #[classifier]
    pub fn lb_from_pod(ctx: TcContext) -> i32 {
        from_pod(&ctx).unwrap_or(TC_ACT_UNSPEC)
    }

    #[inline(always)]
    fn from_pod(ctx: &TcContext) -> Option<i32> {
        let p = parse(ctx, true)?;
        if p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP {
            return None;
        }
        let key = FlowKey::new(p.saddr, p.daddr, p.sport, p.dport, p.proto);
        // A SYN starts a new connection even on a reused port: it picks again.
        let syn = p.proto == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let mut to = None;
        if !syn && let Some(e) = LB4_CT.get_ptr(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            let e = unsafe { *e };
            // A UDP flow whose backend went away picks a new one; TCP keeps
            // its backend (the connection lives there).
            if p.proto == IPPROTO_TCP || LB4_BACKENDS.get_ptr(e.backend_id).is_some() {
                to = Some((e.backend_addr, e.backend_port));
            }
        }
        let (addr, port) = match to {
            Some(t) => t,
            None => match pick(&LB4_SERVICES, &LB4_BACKENDS, p.daddr, p.dport, p.proto) {
                Lookup::NotService => return None,
                // Cilium drops these (DROP_NO_SERVICE).
                Lookup::NoBackend => return Some(TC_ACT_SHOT),
                Lookup::Backend(b) => {
                    let entry = LbCtEntry {
                        backend_id: b.backend_id,
                        backend_addr: b.backend.address,
                        backend_port: b.backend.port,
                        rev_nat_index: b.rev_nat_index,
                    };
                    let reply =
                        FlowKey::new(b.backend.address, p.saddr, b.backend.port, p.sport, p.proto);
                    let vip = Lb4ReverseNat {
                        address: p.daddr,
                        port: p.dport,
                        _pad: 0,
                    };
                    LB4_CT_REV.insert(reply, vip, 0).ok()?;
                    LB4_CT.insert(key, entry, 0).ok()?;
                    count(b.backend_id);
                    (b.backend.address, b.backend.port)
                }
            },
        };
        rewrite(
            ctx,
            &p,
            Change {
                addr_rel: DADDR,
                old_addr: p.daddr,
                new_addr: addr,
                port_rel: p.dport_rel,
                old_port: p.dport,
                new_port: port,
            },
        )?;
        None
    }

    #[classifier]
    pub fn lb_to_pod(ctx: TcContext) -> i32 {
        to_pod(&ctx).unwrap_or(TC_ACT_UNSPEC)
    }

    #[inline(always)]
    fn to_pod(ctx: &TcContext) -> Option<i32> {
        let p = parse(ctx, true)?;
        if p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP {
            return None;
        }
        let key = FlowKey::new(p.saddr, p.daddr, p.sport, p.dport, p.proto);
        // SAFETY: a pointer into the map value, valid for this run.
        let vip = unsafe { *LB4_CT_REV.get_ptr(key)? };
        rewrite(
            ctx,
            &p,
            Change {
                addr_rel: SADDR,
                old_addr: p.saddr,
                new_addr: vip.address,
                port_rel: p.sport_rel,
                old_port: p.sport,
                new_port: vip.port,
            },
        )?;
        None
    }

    #[cgroup_sock_addr(connect4)]
    pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
        xlate_fwd(&ctx)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
        xlate_fwd(&ctx)
    }

    #[cgroup_sock_addr(recvmsg4)]
    pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
        xlate_rev(&ctx)
    }

    #[cgroup_sock_addr(getpeername4)]
    pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
        xlate_rev(&ctx)
    }

    /// connect() or sendto() towards a VIP: point the socket at a backend.
    #[inline(always)]
    fn xlate_fwd(ctx: &SockAddrContext) -> i32 {
        // SAFETY: the context the kernel passed in, valid for this run.
        let sa = unsafe { &mut *ctx.sock_addr };
        let proto = sa.protocol as u8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return ALLOW;
        }
        let (vip, port) = (sa.user_ip4, sa.user_port as u16);
        match pick(&LB4_SERVICES, &LB4_BACKENDS, vip, port, proto) {
            Lookup::NotService => ALLOW,
            // No endpoints: the call fails (EPERM) instead of sending to
            // an address nobody answers.
            Lookup::NoBackend => REJECT,
            Lookup::Backend(b) => {
                sa.user_ip4 = b.backend.address;
                sa.user_port = u32::from(b.backend.port);
                // SAFETY: the helper takes the program's own context.
                let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
                let key = RevSkKey {
                    cookie,
                    address: b.backend.address,
                    port: b.backend.port,
                    _pad: 0,
                };
                let entry = RevSkEntry {
                    address: vip,
                    port,
                    rev_nat_index: b.rev_nat_index,
                };
                if LB4_REVERSE_SK.insert(key, entry, 0).is_err() {
                    return REJECT;
                }
                count(b.backend_id);
                ALLOW
            }
        }
    }

    /// recvfrom() or getpeername() of a backend's address on a socket we
    /// pointed at it: show the VIP.
    #[inline(always)]
    fn xlate_rev(ctx: &SockAddrContext) -> i32 {
        // SAFETY: the context the kernel passed in, valid for this run.
        let sa = unsafe { &mut *ctx.sock_addr };
        // SAFETY: the helper takes the program's own context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let key = RevSkKey {
            cookie,
            address: sa.user_ip4,
            port: sa.user_port as u16,
            _pad: 0,
        };
        if let Some(e) = LB4_REVERSE_SK.get_ptr(key) {
            // SAFETY: a pointer into the map value, valid for this run.
            let e = unsafe { *e };
            sa.user_ip4 = e.address;
            sa.user_port = u32::from(e.port);
        }
        ALLOW
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
