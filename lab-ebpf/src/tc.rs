//! Packet access for tc programs (the connection tracker, the NAT, the
//! service load balancer): reading headers through `load` (the tracker), or
//! direct packet access with incremental checksum updates (the NAT and the
//! load balancer, where every helper call counts: see `bin/nat.rs`).

use core::ptr::{read_unaligned, write_unaligned};

use aya_ebpf::{
    bindings::{self, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lab_common::proto::{ICMP as IPPROTO_ICMP, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP};

use crate::packet::ETH_P_IP;

/// No verdict: let the next classifier (and then the stack) decide.
pub const TC_ACT_UNSPEC: i32 = bindings::TC_ACT_UNSPEC;
/// Drop the packet.
pub const TC_ACT_SHOT: i32 = bindings::TC_ACT_SHOT;

/// Where an IPv4 packet's headers are, and its addresses.
pub struct Ipv4 {
    /// Offset of the IP header (after the Ethernet header, if any).
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    pub proto: u8,
    /// Network byte order, as in the packet.
    pub saddr: u32,
    pub daddr: u32,
}

/// Finds the IPv4 header; None for other protocols and for fragments after
/// the first (only the first carries the L4 header).
/// `ethernet`: the device's packets start with a 14-byte Ethernet header.
#[inline(always)]
pub fn ipv4(ctx: &TcContext, ethernet: bool) -> Option<Ipv4> {
    let l3 = if ethernet {
        if u16::from_be(ctx.load::<u16>(12).ok()?) != ETH_P_IP {
            return None;
        }
        14
    } else {
        0
    };
    let ip = ctx.load::<[u8; 20]>(l3).ok()?;
    if ip[0] >> 4 != 4 || u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    Some(Ipv4 {
        l3,
        l4: l3 + usize::from(ip[0] & 0x0f) * 4,
        proto: ip[9],
        saddr: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        daddr: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
    })
}

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

/// Ethernet + the longest IPv4 header + a TCP header without options:
/// what must be in the skb's linear data for direct access.
pub const MAX_HDR: u32 = 14 + 60 + 20;

/// Where the fields of one IPv4 packet are.
pub struct Packet {
    pub l3: usize,
    pub l4: usize,
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    /// Offsets of the ports (or the ICMP id) in the L4 header, and of
    /// the L4 checksum in the packet.
    pub sport_rel: usize,
    pub dport_rel: usize,
    pub csum_off: usize,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
}

/// A pointer to the `LEN` bytes at `off` in the packet, if the linear
/// data has them. Whole headers are checked at once: a check per field
/// is more code, and LLVM turns a one-byte check into a `>=` the
/// verifier cannot use.
#[inline(always)]
pub fn window<const LEN: usize>(ctx: &TcContext, off: usize) -> Option<*mut u8> {
    let start = ctx.data();
    if start + off + LEN > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut u8)
}

/// Reads a `T` at `at + k` (packet fields need not be aligned).
///
/// # Safety
/// `at + k + size_of::<T>()` must be inside a checked [`window`].
#[inline(always)]
pub unsafe fn get<T: Copy>(at: *mut u8, k: usize) -> T {
    // SAFETY: the caller's window covers it.
    unsafe { read_unaligned(at.add(k) as *const T) }
}

/// Writes a `T` at `at + k`.
///
/// # Safety
/// As [`get`]; tc programs may write the packet (the verifier makes a
/// cloned skb's head private first).
#[inline(always)]
pub unsafe fn put<T: Copy>(at: *mut u8, k: usize, v: T) {
    // SAFETY: the caller's window covers it.
    unsafe { write_unaligned(at.add(k) as *mut T, v) }
}

#[inline(always)]
pub fn parse(ctx: &TcContext, ethernet: bool) -> Option<Packet> {
    let l3 = if ethernet { 14 } else { 0 };
    // Headers are in the linear data almost always; pull them in when
    // they are not (as much of them as the packet has).
    let want = ctx.len().min(MAX_HDR);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        ctx.pull_data(want).ok()?;
    }
    if l3 != 0 {
        let eth = window::<14>(ctx, 0)?;
        // SAFETY: inside the 14-byte window.
        if unsafe { get::<u16>(eth, 12) } != ETH_P_IP_BE {
            return None;
        }
    }
    let ip = window::<20>(ctx, l3)?;
    // SAFETY: every read below is inside the 20-byte IP header window.
    let (vihl, frag, proto, saddr, daddr) = unsafe {
        (
            get::<u8>(ip, 0),
            get::<u16>(ip, 6),
            get::<u8>(ip, 9),
            get::<u32>(ip, 12),
            get::<u32>(ip, 16),
        )
    };
    // Only the first fragment carries the L4 header.
    if vihl >> 4 != 4 || u16::from_be(frag) & 0x1fff != 0 {
        return None;
    }
    let l4 = l3 + usize::from(vihl & 0x0f) * 4;
    let mut p = Packet {
        l3,
        l4,
        saddr,
        daddr,
        proto,
        sport_rel: 0,
        dport_rel: 2,
        csum_off: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
    };
    match proto {
        IPPROTO_TCP => {
            let h = window::<20>(ctx, l4)?;
            // SAFETY: inside the 20-byte TCP header window.
            unsafe {
                p.sport = get::<u16>(h, 0);
                p.dport = get::<u16>(h, 2);
                p.tcp_flags = get::<u8>(h, 13);
            }
            p.csum_off = l4 + 16;
        }
        IPPROTO_UDP => {
            let h = window::<8>(ctx, l4)?;
            // SAFETY: inside the 8-byte UDP header window.
            unsafe {
                p.sport = get::<u16>(h, 0);
                p.dport = get::<u16>(h, 2);
            }
            p.csum_off = l4 + 6;
        }
        IPPROTO_ICMP => {
            let h = window::<8>(ctx, l4)?;
            // SAFETY: inside the 8-byte ICMP echo header window.
            unsafe {
                p.icmp_type = get::<u8>(h, 0);
                // The echo id stands in for both ports.
                p.sport = get::<u16>(h, 4);
            }
            p.dport = p.sport;
            p.sport_rel = 4;
            p.dport_rel = 4;
            p.csum_off = l4 + 2;
        }
        _ => return None,
    }
    Some(p)
}

/// RFC 1624 incremental update of a 16-bit one's-complement checksum
/// for a 32-bit field changing from `from` to `to` (all as stored:
/// one's-complement sums do not care about byte order).
#[inline(always)]
pub fn csum_replace4(check: u16, from: u32, to: u32) -> u16 {
    let mut s = u64::from(!check)
        + u64::from(!from & 0xffff)
        + u64::from(!from >> 16)
        + u64::from(to & 0xffff)
        + u64::from(to >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// One address (source or destination) and one port to change.
pub struct Change {
    /// Offsets in the IP header and in the L4 header.
    pub addr_rel: usize,
    pub old_addr: u32,
    pub new_addr: u32,
    pub port_rel: usize,
    pub old_port: u16,
    pub new_port: u16,
}

/// Applies a change, fixing the IP and L4 checksums incrementally.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, p: &Packet, c: Change) -> Option<()> {
    let Change {
        addr_rel,
        old_addr,
        new_addr,
        port_rel,
        old_port,
        new_port,
    } = c;
    let ip = window::<20>(ctx, p.l3)?;
    let l4 = window::<8>(ctx, p.l4)?;
    // SAFETY: the IP check and addresses are inside the 20-byte IP
    // window; the ports (or echo id) inside the L4 header's first 8.
    unsafe {
        let check = get::<u16>(ip, 10);
        put(ip, 10, csum_replace4(check, old_addr, new_addr));
        put(ip, addr_rel, new_addr);
        put(l4, port_rel, new_port);
    }
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
    Some(())
}
