//! Decoding ctnetlink attributes into [`CtEntry`], straight from the
//! receive buffer.
//!
//! netlink-packet-netfilter can parse these messages too, but it builds a
//! Vec for every nested attribute and leaves counters, zone, id and the
//! ICMP fields raw anyway; on a 100,000-entry table that made `conntrack
//! list` slower than conntrack-tools. Requests are still built with it.
//! Attribute numbers are from linux/netfilter/nfnetlink_conntrack.h.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::conntrack::entry::{
    Counters, CtEntry, Source, TCP_STATES, Tuple, proto_name, status_names,
};

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;

/// NLA_TYPE_MASK: the attribute type without NLA_F_NESTED and
/// NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Calls `f(kind, value)` for each attribute in `bytes` (struct nlattr:
/// length and type in host order, values padded to 4 bytes); stops at the
/// first malformed one. Written out rather than through netlink-packet-core's
/// `NlasIterator`, which checks each header through generic parsers:
/// profiled on `conntrack list` of 100,000 entries, the iterator and its
/// parsers were 13% of the process's time, two fifths of all its time in
/// userspace (the kernel's dump is the rest).
pub(super) fn each(mut bytes: &[u8], mut f: impl FnMut(u16, &[u8])) {
    while let [l0, l1, t0, t1, ..] = *bytes {
        let len = usize::from(u16::from_ne_bytes([l0, l1]));
        let Some(value) = bytes.get(4..len) else {
            return;
        };
        f(u16::from_ne_bytes([t0, t1]) & NLA_TYPE_MASK, value);
        bytes = bytes.get((len + 3) & !3..).unwrap_or(&[]);
    }
}

pub(super) fn be_u32(v: &[u8]) -> u32 {
    v.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn be_u16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Counters nested in CTA_COUNTERS_ORIG / _REPLY.
fn counters(bytes: &[u8]) -> Counters {
    let mut c = Counters::default();
    each(bytes, |kind, v| match kind {
        CTA_COUNTERS_PACKETS => c.packets = be_u64(v),
        CTA_COUNTERS_BYTES => c.bytes = be_u64(v),
        _ => {}
    });
    c
}

/// A tuple from CTA_TUPLE_ORIG / _REPLY, and its protocol number.
fn tuple(bytes: &[u8]) -> Option<(Tuple, u8)> {
    let (mut src, mut dst, mut proto) = (None, None, 0u8);
    let mut t = Tuple::UNSPECIFIED;
    let v4 = |v: &[u8]| -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(v.get(..4)?).ok()?,
        )))
    };
    let v6 = |v: &[u8]| -> Option<IpAddr> {
        Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(v.get(..16)?).ok()?,
        )))
    };
    each(bytes, |kind, v| match kind {
        CTA_TUPLE_IP => each(v, |k, a| match k {
            CTA_IP_V4_SRC => src = v4(a),
            CTA_IP_V4_DST => dst = v4(a),
            CTA_IP_V6_SRC => src = v6(a),
            CTA_IP_V6_DST => dst = v6(a),
            _ => {}
        }),
        CTA_TUPLE_PROTO => each(v, |k, p| match k {
            CTA_PROTO_NUM => proto = p.first().copied().unwrap_or(0),
            CTA_PROTO_SRC_PORT => t.sport = be_u16(p),
            CTA_PROTO_DST_PORT => t.dport = be_u16(p),
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => t.icmp_id = be_u16(p),
            CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => t.icmp_type = p.first().copied(),
            CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => t.icmp_code = p.first().copied(),
            _ => {}
        }),
        _ => {}
    });
    t.src = src?;
    t.dst = dst?;
    Some((t, proto))
}

/// The TCP state nested in CTA_PROTOINFO.
fn tcp_state(bytes: &[u8]) -> Option<String> {
    let mut state = None;
    each(bytes, |kind, v| {
        if kind == CTA_PROTOINFO_TCP {
            each(v, |k, s| {
                if k == CTA_PROTOINFO_TCP_STATE
                    && let Some(&n) = s.first()
                {
                    state = Some(
                        TCP_STATES
                            .get(usize::from(n))
                            .map_or_else(|| n.to_string(), |name| (*name).to_owned()),
                    );
                }
            });
        }
    });
    state
}

/// The entry carried by a conntrack message's attributes.
pub(super) fn entry(bytes: &[u8]) -> Option<CtEntry> {
    let (mut orig, mut reply, mut proto) = (None, None, 0u8);
    let mut e = CtEntry {
        source: Source::Netfilter,
        family: "ipv4",
        proto: String::new(),
        proto_num: 0,
        state: None,
        orig: Tuple::UNSPECIFIED,
        reply: Tuple::UNSPECIFIED,
        timeout: None,
        flags: Vec::new(),
        mark: 0,
        zone: 0,
        orig_counters: None,
        reply_counters: None,
        id: None,
        age_s: None,
        idle_s: None,
    };
    each(bytes, |kind, v| match kind {
        CTA_TUPLE_ORIG => {
            if let Some((t, p)) = tuple(v) {
                proto = p;
                orig = Some(t);
            }
        }
        CTA_TUPLE_REPLY => reply = tuple(v).map(|(t, _)| t),
        CTA_STATUS => e.flags = status_names(be_u32(v)),
        CTA_PROTOINFO => e.state = tcp_state(v),
        CTA_TIMEOUT => e.timeout = Some(be_u32(v)),
        CTA_MARK => e.mark = be_u32(v),
        CTA_COUNTERS_ORIG => e.orig_counters = Some(counters(v)),
        CTA_COUNTERS_REPLY => e.reply_counters = Some(counters(v)),
        CTA_ID => e.id = Some(be_u32(v)),
        CTA_ZONE => e.zone = be_u16(v).unwrap_or(0),
        _ => {}
    });
    e.orig = orig?;
    e.reply = reply?;
    let v6 = e.orig.src.is_ipv6();
    e.family = if v6 { "ipv6" } else { "ipv4" };
    e.proto_num = proto;
    e.proto = proto_name(proto, v6);
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attribute_walk_pads_masks_and_stops_at_a_bad_length() {
        // len 5 (one value byte, 3 padding), NLA_F_NESTED | 1; len 8, type 2;
        // then a header claiming more bytes than remain.
        let mut b = Vec::new();
        b.extend_from_slice(&5u16.to_ne_bytes());
        b.extend_from_slice(&(0x8000u16 | 1).to_ne_bytes());
        b.extend_from_slice(&[7, 0, 0, 0]);
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        b.extend_from_slice(&64u16.to_ne_bytes());
        b.extend_from_slice(&3u16.to_ne_bytes());
        let mut seen = Vec::new();
        each(&b, |k, v| seen.push((k, v.to_vec())));
        assert_eq!(seen, [(1, vec![7]), (2, vec![1, 2, 3, 4])]);
        // A zero length ends the walk instead of looping.
        let mut n = 0;
        each(&[0, 0, 1, 0, 9, 9, 9, 9], |_, _| n += 1);
        assert_eq!(n, 0);
    }

    /// One attribute: length, type (with the nested flag when asked), value.
    fn nla(kind: u16, nested: bool, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&(kind | if nested { 0x8000 } else { 0 }).to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    fn tuple_attr(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let ip = [
            nla(CTA_IP_V4_SRC, false, &src),
            nla(CTA_IP_V4_DST, false, &dst),
        ]
        .concat();
        let proto = [
            nla(CTA_PROTO_NUM, false, &[17]),
            nla(CTA_PROTO_SRC_PORT, false, &sport.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, false, &dport.to_be_bytes()),
        ]
        .concat();
        nla(
            kind,
            true,
            &[
                nla(CTA_TUPLE_IP, true, &ip),
                nla(CTA_TUPLE_PROTO, true, &proto),
            ]
            .concat(),
        )
    }

    #[test]
    fn a_source_nated_udp_entry_decodes_field_by_field() {
        let counters_attr = |kind, p: u64, b: u64| {
            nla(
                kind,
                true,
                &[
                    nla(CTA_COUNTERS_PACKETS, false, &p.to_be_bytes()),
                    nla(CTA_COUNTERS_BYTES, false, &b.to_be_bytes()),
                ]
                .concat(),
            )
        };
        let msg = [
            tuple_attr(CTA_TUPLE_ORIG, [10, 244, 1, 2], [1, 1, 1, 1], 40000, 53),
            tuple_attr(CTA_TUPLE_REPLY, [1, 1, 1, 1], [172, 18, 0, 2], 53, 40000),
            nla(CTA_STATUS, false, &0b1_1000_1010u32.to_be_bytes()),
            nla(CTA_TIMEOUT, false, &29u32.to_be_bytes()),
            nla(CTA_MARK, false, &7u32.to_be_bytes()),
            counters_attr(CTA_COUNTERS_ORIG, 3, 252),
            counters_attr(CTA_COUNTERS_REPLY, 2, 168),
            nla(CTA_ZONE, false, &3u16.to_be_bytes()),
        ]
        .concat();
        let e = entry(&msg).unwrap();
        assert_eq!(e.proto, "udp");
        assert_eq!(e.orig.describe(), "10.244.1.2:40000 → 1.1.1.1:53");
        assert_eq!(e.nat().as_deref(), Some("SNAT as 172.18.0.2:40000"));
        assert_eq!(e.timeout, Some(29));
        assert_eq!((e.mark, e.zone), (7, 3));
        assert_eq!(
            e.orig_counters,
            Some(Counters {
                packets: 3,
                bytes: 252
            })
        );
        assert_eq!(e.reply_counters.unwrap().packets, 2);
        assert!(e.has_flag("SRC_NAT_DONE"));
        // Without a reply tuple there is no entry.
        assert!(entry(&msg[..tuple_attr(CTA_TUPLE_ORIG, [0; 4], [0; 4], 0, 0).len()]).is_none());
    }
}
