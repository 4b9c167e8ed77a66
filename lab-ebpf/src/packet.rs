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
            if let Some(b) = read::<Bytes<40>>(l3, 0)
                && b.u8(0) & 0x0f == 5
            {
                if ipv4(&b, ev) {
                    transport::<20, 40>(&b, ev);
                }
                return;
            }
            let Some(ip) = read::<Bytes<24>>(l3, 0) else {
                return;
            };
            if !ipv4(&ip, ev) {
                return;
            }
            l3 + ((ip.u8(0) & 0x0f) as u64) * 4
        }
        ETH_P_IPV6 => {
            let Some(ip) = read::<Bytes<40>>(l3, 0) else {
                return;
            };
            ev.family = family::IPV6;
            set_words(&mut ev.saddr, ip.words16::<8>());
            set_words(&mut ev.daddr, ip.words16::<24>());
            match ipv6_l4(l3 + 40, ip.u8(6), ev) {
                Some(l4) => l4,
                None => return,
            }
        }
        _ => return,
    };
    if let Some(l4) = read::<Bytes<16>>(l4, 0) {
        transport::<0, 16>(&l4, ev);
    }
}

/// Header bytes copied out of a packet, 8-byte aligned so that a field at
/// a 4-aligned offset is one load, read in place at constant offsets
/// (checked at compile time). Copying header bytes into smaller arrays
/// (`copy_from_slice`) compiled to a load and a store per byte: 160 of the
/// parser's instructions for an IPv4 drop.
#[repr(C, align(8))]
struct Bytes<const N: usize>([u8; N]);

impl<const N: usize> Bytes<N> {
    /// The byte at `at`, a constant at every call once inlined (so the
    /// bounds check folds away).
    #[inline(always)]
    fn u8(&self, at: usize) -> u8 {
        self.0[at]
    }

    #[inline(always)]
    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }

    /// Four bytes as they are in the packet (network order), as one load.
    #[inline(always)]
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "the buffer is 8-aligned and AT a multiple of 4 (asserted)"
    )]
    fn word<const AT: usize>(&self) -> u32 {
        const { assert!(AT.is_multiple_of(4) && AT + 4 <= N) };
        // SAFETY: in bounds and 4-byte aligned (asserted above).
        unsafe { self.0.as_ptr().add(AT).cast::<u32>().read() }
    }

    /// Sixteen bytes (an IPv6 address) as four loads.
    #[inline(always)]
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "the buffer is 8-aligned and AT a multiple of 4 (asserted)"
    )]
    fn words16<const AT: usize>(&self) -> [u32; 4] {
        const { assert!(AT.is_multiple_of(4) && AT + 16 <= N) };
        // SAFETY: in bounds and 4-byte aligned (asserted above).
        let p = unsafe { self.0.as_ptr().add(AT).cast::<u32>() };
        // SAFETY: as above, each of the four words.
        unsafe { [p.read(), p.add(1).read(), p.add(2).read(), p.add(3).read()] }
    }
}

/// The IPv4 header's fields; false when the packet is a later fragment
/// (no transport header follows).
#[inline(always)]
fn ipv4<const N: usize>(ip: &Bytes<N>, ev: &mut DropEvent) -> bool {
    ev.family = family::IPV4;
    ev.l4proto = ip.u8(9);
    set_words(&mut ev.saddr, [0, 0, MAPPED_V4, ip.word::<12>()]);
    set_words(&mut ev.daddr, [0, 0, MAPPED_V4, ip.word::<16>()]);
    // Only the first fragment carries the L4 header.
    let frag = ip.be16(6);
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
/// the transport header at `AT` in `b` (TCP's flags are its 14th byte).
#[inline(always)]
fn transport<const AT: usize, const N: usize>(b: &Bytes<N>, ev: &mut DropEvent) {
    const { assert!(AT + 14 <= N) };
    match ev.l4proto {
        IPPROTO_TCP => {
            ev.sport = b.be16(AT);
            ev.dport = b.be16(AT + 2);
            ev.tcp_flags = b.u8(AT + 13);
            ev.pkt |= pkt::PORTS;
        }
        IPPROTO_UDP => {
            ev.sport = b.be16(AT);
            ev.dport = b.be16(AT + 2);
            ev.pkt |= pkt::PORTS;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            ev.icmp_type = b.u8(AT);
            ev.icmp_code = b.u8(AT + 1);
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

/// The third word of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), in
/// network order.
const MAPPED_V4: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An address field written as four aligned u32 stores (network-order
/// words): assigning the 16-byte array compiled to a call of
/// compiler_builtins' byte-wise `memset`/`memmove`, or a store per byte.
#[inline(always)]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "the address fields sit at 4-byte offsets of an 8-aligned DropEvent (asserted below)"
)]
fn set_words(dst: &mut [u8; 16], words: [u32; 4]) {
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
        p.write_volatile(words[0]);
        p.add(1).write_volatile(words[1]);
        p.add(2).write_volatile(words[2]);
        p.add(3).write_volatile(words[3]);
    }
}
