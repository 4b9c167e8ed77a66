//! Decoding ctnetlink attributes into [`CtEntry`]: the typed ones
//! netlink-packet-netfilter parses, and the raw ones it leaves (counters,
//! zone, id, ICMP fields, statistics).

use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, Nla as _, NlasIterator};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Tuple as NlTuple,
    },
};

use super::{
    CTA_COUNTERS_BYTES, CTA_COUNTERS_ORIG, CTA_COUNTERS_PACKETS, CTA_COUNTERS_REPLY, CTA_ID,
    CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_CODE,
    CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_ZONE,
};
use crate::conntrack::entry::{
    Counters, CtEntry, Source, TCP_STATES, Tuple, proto_name, status_names,
};

pub(super) fn raw_attributes(m: &NetfilterMessage) -> Vec<DefaultNla> {
    match &m.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::Other { attributes, .. }) => {
            attributes.clone()
        }
        _ => Vec::new(),
    }
}

/// The attribute type without the NLA_F_NESTED / NLA_F_NET_BYTEORDER bits,
/// which DefaultNla keeps in its kind.
pub(super) fn kind(nla: &DefaultNla) -> u16 {
    nla.kind() & netlink_packet_core::NLA_TYPE_MASK
}

fn value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

pub(super) fn be_u32(nla: &DefaultNla) -> u32 {
    value(nla)
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// Counters nested in CTA_COUNTERS_ORIG / _REPLY.
fn counters(nla: &DefaultNla) -> Counters {
    let bytes = value(nla);
    let mut c = Counters::default();
    for inner in NlasIterator::new(&bytes[..]).flatten() {
        let v: &[u8] = inner.value();
        let n = v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        match inner.kind() {
            CTA_COUNTERS_PACKETS => c.packets = n,
            CTA_COUNTERS_BYTES => c.bytes = n,
            _ => {}
        }
    }
    c
}

/// A tuple from CTA_TUPLE_ORIG / _REPLY.
fn tuple(parts: &[NlTuple]) -> Option<(Tuple, u8)> {
    let (mut src, mut dst, mut proto) = (None, None, 0u8);
    let mut t = Tuple {
        src: IpAddr::from([0, 0, 0, 0]),
        dst: IpAddr::from([0, 0, 0, 0]),
        sport: None,
        dport: None,
        icmp_type: None,
        icmp_code: None,
        icmp_id: None,
    };
    for part in parts {
        match part {
            NlTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            NlTuple::Proto(items) => {
                for item in items {
                    match item {
                        ProtoTuple::Protocol(p) => proto = u8::from(*p),
                        ProtoTuple::SourcePort(p) => t.sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => t.dport = Some(*p),
                        ProtoTuple::Other(nla) => {
                            let v = value(nla);
                            match kind(nla) {
                                CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID if v.len() >= 2 => {
                                    t.icmp_id = Some(u16::from_be_bytes([v[0], v[1]]))
                                }
                                CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                                    t.icmp_type = v.first().copied()
                                }
                                CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                                    t.icmp_code = v.first().copied()
                                }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t.src = src?;
    t.dst = dst?;
    Some((t, proto))
}

/// The entry carried by a conntrack message (dump reply or event).
pub(super) fn entry_of(m: &NetfilterMessage) -> Option<CtEntry> {
    let attrs = match &m.inner {
        NetfilterMessageInner::Conntrack(
            ConntrackMessage::New(a) | ConntrackMessage::Get(a) | ConntrackMessage::Delete(a),
        ) => a,
        _ => return None,
    };
    let (mut orig, mut reply, mut proto) = (None, None, 0u8);
    let mut e = CtEntry {
        source: Source::Netfilter,
        family: "ipv4",
        proto: String::new(),
        proto_num: 0,
        state: None,
        orig: Tuple {
            src: IpAddr::from([0, 0, 0, 0]),
            dst: IpAddr::from([0, 0, 0, 0]),
            sport: None,
            dport: None,
            icmp_type: None,
            icmp_code: None,
            icmp_id: None,
        },
        reply: Tuple {
            src: IpAddr::from([0, 0, 0, 0]),
            dst: IpAddr::from([0, 0, 0, 0]),
            sport: None,
            dport: None,
            icmp_type: None,
            icmp_code: None,
            icmp_id: None,
        },
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
    for attr in attrs {
        match attr {
            ConntrackAttribute::CtaTupleOrig(t) => {
                if let Some((t, p)) = tuple(t) {
                    proto = p;
                    orig = Some(t);
                }
            }
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t).map(|(t, _)| t),
            ConntrackAttribute::CtaStatus(s) => e.flags = status_names(s.bits()),
            ConntrackAttribute::CtaTimeout(t) => e.timeout = Some(*t),
            ConntrackAttribute::CtaMark(m) => e.mark = *m,
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for item in tcp {
                            if let ProtoInfoTCP::State(s) = item {
                                e.state = Some(
                                    TCP_STATES
                                        .get(usize::from(*s))
                                        .map_or_else(|| s.to_string(), |n| (*n).to_owned()),
                                );
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::Other(nla) => match kind(nla) {
                CTA_COUNTERS_ORIG => e.orig_counters = Some(counters(nla)),
                CTA_COUNTERS_REPLY => e.reply_counters = Some(counters(nla)),
                CTA_ID => e.id = Some(be_u32(nla)),
                CTA_ZONE => {
                    let v = value(nla);
                    if v.len() >= 2 {
                        e.zone = u16::from_be_bytes([v[0], v[1]]);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
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
    fn nested_counters_are_big_endian_u64() {
        // CTA_COUNTERS_PACKETS = 7, CTA_COUNTERS_BYTES = 420, each an
        // 8-byte value behind a 4-byte attribute header.
        let mut raw = Vec::new();
        for (kind, v) in [(CTA_COUNTERS_PACKETS, 7u64), (CTA_COUNTERS_BYTES, 420)] {
            raw.extend_from_slice(&12u16.to_ne_bytes());
            raw.extend_from_slice(&kind.to_ne_bytes());
            raw.extend_from_slice(&v.to_be_bytes());
        }
        let nla = DefaultNla::new(CTA_COUNTERS_ORIG, raw);
        assert_eq!(
            counters(&nla),
            Counters {
                packets: 7,
                bytes: 420
            }
        );
    }
}
