//! Header parsing from an skb's linear data (`skb->head + *_header`).

use lab_common::trace::{DropEvent, SkbOffsets, family};

use crate::kernel::read;

/// EtherTypes (linux/if_ether.h).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// `(u16)~0U`: a header offset the stack has not set yet.
const UNSET: u16 = 0xffff;

use lab_common::proto::{
    ICMP as IPPROTO_ICMP, ICMPV6 as IPPROTO_ICMPV6, TCP as IPPROTO_TCP, UDP as IPPROTO_UDP,
};

/// Fills the L3/L4 fields of `ev` from the skb's headers, where present.
#[inline(always)]
pub fn parse(skb: u64, off: &SkbOffsets, ev: &mut DropEvent) {
    let Some(head) = read::<u64>(skb, off.skb_head) else {
        return;
    };
    let nh = read::<u16>(skb, off.skb_network_header).unwrap_or(UNSET);
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
            let Some(ip) = read::<[u8; 20]>(l3, 0) else {
                return;
            };
            ev.family = family::IPV4;
            ev.l4proto = ip[9];
            ev.saddr = mapped_v4([ip[12], ip[13], ip[14], ip[15]]);
            ev.daddr = mapped_v4([ip[16], ip[17], ip[18], ip[19]]);
            // Only the first fragment carries the L4 header.
            let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            if frag_off != 0 {
                return;
            }
            l3 + ((ip[0] & 0x0f) as u64) * 4
        }
        ETH_P_IPV6 => {
            let Some(ip) = read::<[u8; 40]>(l3, 0) else {
                return;
            };
            ev.family = family::IPV6;
            ev.l4proto = ip[6];
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            d.copy_from_slice(&ip[24..40]);
            ev.saddr = s;
            ev.daddr = d;
            // Extension headers are not walked: the next header must be L4.
            l3 + 40
        }
        _ => return,
    };
    match ev.l4proto {
        IPPROTO_TCP => {
            if let Some(tcp) = read::<[u8; 14]>(l4, 0) {
                ev.sport = u16::from_be_bytes([tcp[0], tcp[1]]);
                ev.dport = u16::from_be_bytes([tcp[2], tcp[3]]);
                ev.tcp_flags = tcp[13];
                ev.has_ports = 1;
            }
        }
        IPPROTO_UDP => {
            if let Some(udp) = read::<[u8; 4]>(l4, 0) {
                ev.sport = u16::from_be_bytes([udp[0], udp[1]]);
                ev.dport = u16::from_be_bytes([udp[2], udp[3]]);
                ev.has_ports = 1;
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if let Some(icmp) = read::<[u8; 2]>(l4, 0) {
                ev.icmp_type = icmp[0];
                ev.icmp_code = icmp[1];
            }
        }
        _ => {}
    }
}

/// IPv4 as an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
#[inline(always)]
fn mapped_v4(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}
