//! Packet access for tc programs (the connection tracker, the NAT).

use aya_ebpf::{bindings, programs::TcContext};

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
