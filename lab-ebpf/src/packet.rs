//! Header parsing from an skb's linear data (`skb->head + *_header`).

use lab_common::trace::{DropEvent, IPV6_EXT_HEADERS, family, pkt};

use crate::kernel::read;

/// EtherTypes (linux/if_ether.h).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// `(u16)~0U`: a header offset the stack has not set yet.
const UNSET: u16 = 0xffff;

use lab_common::proto::{
    ICMP as IPPROTO_ICMP, ICMPV6 as IPPROTO_ICMPV6, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP,
};

/// IPv6 extension headers (linux/in6.h): hop-by-hop options, routing,
/// fragment, authentication, destination options.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// Fills the L3/L4 fields of `ev` from the skb's headers, where present:
/// `head` and `nh` are the skb's `head` and `network_header`, read by the
/// caller (directly from a BTF-typed skb where it has one, which a
/// subprogram's plain integer argument is not).
/// A BPF subprogram of its own (not inlined): its header copies and the
/// IPv6 extension header walk keep their stack out of the caller's frame.
#[inline(never)]
pub fn parse(head: u64, nh: u16, ev: &mut DropEvent) {
    if head == 0 || nh == UNSET {
        return;
    }
    let l3 = head + nh as u64;
    // Locally generated packets may not have skb->protocol set yet: the IP
    // version nibble tells.
    let mut ethertype = ev.ethertype;
    if ethertype == 0 {
        ethertype = match read::<u8>(l3, 0).map(|b| b >> 4) {
            Some(4) => ETH_P_IP,
            Some(6) => ETH_P_IPV6,
            _ => 0,
        };
    }
    let l4 = match ethertype {
        ETH_P_IP => {
            // The header and the transport header after it in one copy (a
            // helper call saved per drop in the common case, no IP
            // options); bytes past the packet are the skb's own buffer,
            // read but not used.
            if let Some(both) = read::<[u8; 34]>(l3, 0)
                && both[0] & 0x0f == 5
            {
                let mut ip = [0u8; 20];
                ip.copy_from_slice(&both[..20]);
                if ipv4(&ip, ev) {
                    let mut l4 = [0u8; 14];
                    l4.copy_from_slice(&both[20..34]);
                    transport(&l4, ev);
                }
                return;
            }
            let Some(ip) = read::<[u8; 20]>(l3, 0) else {
                return;
            };
            if !ipv4(&ip, ev) {
                return;
            }
            l3 + ((ip[0] & 0x0f) as u64) * 4
        }
        ETH_P_IPV6 => {
            let Some(ip) = read::<[u8; 40]>(l3, 0) else {
                return;
            };
            ev.family = family::IPV6;
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            ev.saddr = s;
            ev.daddr = d;
            match ipv6_l4(l3 + 40, ip[6], ev) {
                Some(l4) => l4,
                None => return,
            }
        }
        _ => return,
    };
    if let Some(l4) = read::<[u8; 14]>(l4, 0) {
        transport(&l4, ev);
    }
}

/// The IPv4 header's fields; false when the packet is a later fragment
/// (no transport header follows).
#[inline(always)]
fn ipv4(ip: &[u8; 20], ev: &mut DropEvent) -> bool {
    ev.family = family::IPV4;
    ev.l4proto = ip[9];
    set_mapped_v4(&mut ev.saddr, [ip[12], ip[13], ip[14], ip[15]]);
    set_mapped_v4(&mut ev.daddr, [ip[16], ip[17], ip[18], ip[19]]);
    // Only the first fragment carries the L4 header.
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let frag_off = frag & 0x1fff;
    if frag & 0x2000 != 0 || frag_off != 0 {
        ev.pkt |= pkt::FRAGMENT;
    }
    if frag_off != 0 {
        ev.pkt |= pkt::LATER_FRAGMENT;
        return false;
    }
    true
}

/// Ports and TCP flags, or ICMP type and code, from the first 14 bytes of
/// the transport header (TCP's flags are its 14th byte).
#[inline(always)]
fn transport(l4: &[u8; 14], ev: &mut DropEvent) {
    match ev.l4proto {
        IPPROTO_TCP => {
            ev.sport = u16::from_be_bytes([l4[0], l4[1]]);
            ev.dport = u16::from_be_bytes([l4[2], l4[3]]);
            ev.tcp_flags = l4[13];
            ev.pkt |= pkt::PORTS;
        }
        IPPROTO_UDP => {
            ev.sport = u16::from_be_bytes([l4[0], l4[1]]);
            ev.dport = u16::from_be_bytes([l4[2], l4[3]]);
            ev.pkt |= pkt::PORTS;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            ev.icmp_type = l4[0];
            ev.icmp_code = l4[1];
        }
        _ => {}
    }
}

/// Walks the IPv6 extension headers from `at` (the header after the fixed
/// one, of type `next`) to the L4 header: sets `ev.l4proto` (and the
/// fragment bits) and returns where the L4 header starts, or None when
/// there is no L4 header to read (a later fragment, a header that could
/// not be read). At most [`IPV6_EXT_HEADERS`] are walked (a bounded loop
/// for the verifier); past them, the protocol is the next header's number.
#[inline(always)]
fn ipv6_l4(mut at: u64, mut next: u8, ev: &mut DropEvent) -> Option<u64> {
    for _ in 0..IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next header, length in 8-octet units not counting the first.
                let Some(h) = read::<[u8; 2]>(at, 0) else {
                    ev.l4proto = next;
                    return None;
                };
                next = h[0];
                at += (h[1] as u64 + 1) * 8;
            }
            IPPROTO_AH => {
                // Length in 4-octet units minus 2 (RFC 4302).
                let Some(h) = read::<[u8; 2]>(at, 0) else {
                    ev.l4proto = next;
                    return None;
                };
                next = h[0];
                at += (h[1] as u64 + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                // Next header, reserved, offset (13 bits) + M flag.
                let Some(h) = read::<[u8; 4]>(at, 0) else {
                    ev.l4proto = next;
                    return None;
                };
                next = h[0];
                at += 8;
                let off_m = u16::from_be_bytes([h[2], h[3]]);
                if off_m & 0xfff9 != 0 {
                    ev.pkt |= pkt::FRAGMENT;
                }
                if off_m & 0xfff8 != 0 {
                    ev.pkt |= pkt::LATER_FRAGMENT;
                    ev.l4proto = next;
                    return None;
                }
            }
            _ => break,
        }
    }
    ev.l4proto = next;
    Some(at)
}

/// `a` as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), written as four
/// aligned u32 stores: assigning the 16-byte array compiled to a call of
/// compiler_builtins' byte-wise `memset` for the ten zero bytes, plus a
/// store per byte.
#[inline(always)]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "the address fields sit at 4-byte offsets of an 8-aligned DropEvent (asserted below)"
)]
fn set_mapped_v4(dst: &mut [u8; 16], a: [u8; 4]) {
    const {
        assert!(
            core::mem::offset_of!(DropEvent, saddr).is_multiple_of(4)
                && core::mem::offset_of!(DropEvent, daddr).is_multiple_of(4)
                && align_of::<DropEvent>() >= 4
        );
    }
    let p = dst.as_mut_ptr().cast::<u32>();
    // SAFETY: four u32s inside the 16-byte field, 4-byte aligned (above).
    unsafe {
        p.write_volatile(0);
        p.add(1).write_volatile(0);
        p.add(2)
            .write_volatile(u32::from_ne_bytes([0, 0, 0xff, 0xff]));
        p.add(3).write_volatile(u32::from_ne_bytes(a));
    }
}
