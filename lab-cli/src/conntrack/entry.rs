//! One connection-tracking entry, from any source (netfilter's table or an
//! eBPF map), in the shape `labctl conntrack` prints and serializes.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

/// One direction's tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP/SCTP ports; None for ICMP and others.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub icmp_id: Option<u16>,
}

impl Tuple {
    /// No addresses, no ports: the start of a tuple being decoded.
    pub const UNSPECIFIED: Tuple = Tuple {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: None,
        dport: None,
        icmp_type: None,
        icmp_code: None,
        icmp_id: None,
    };

    /// Writes `addr:port` (or just the address, or `[v6]:port`).
    pub fn write_endpoint(
        out: &mut impl std::fmt::Write,
        addr: &IpAddr,
        port: Option<u16>,
    ) -> std::fmt::Result {
        match (addr, port) {
            (IpAddr::V6(a), Some(p)) => write!(out, "[{a}]:{p}"),
            (a, Some(p)) => write!(out, "{a}:{p}"),
            (a, None) => write!(out, "{a}"),
        }
    }

    fn endpoint(addr: &IpAddr, port: Option<u16>) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        Self::write_endpoint(&mut s, addr, port).ok();
        s
    }

    /// Writes `src:port → dst:port [type T code C] [id N]`.
    pub fn write_to(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        Self::write_endpoint(out, &self.src, self.sport)?;
        out.write_str(" → ")?;
        Self::write_endpoint(out, &self.dst, self.dport)?;
        if let (Some(t), Some(c)) = (self.icmp_type, self.icmp_code) {
            write!(out, " type {t} code {c}")?;
        }
        if let Some(id) = self.icmp_id {
            write!(out, " id {id}")?;
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut s = String::new();
        self.write_to(&mut s).ok();
        s
    }
}

/// Packets and bytes seen in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The kernel's netfilter conntrack table (ctnetlink).
    Netfilter,
    /// labctl's own eBPF connection tracker (`conntrack track`).
    Bpf,
    /// Cilium's pinned CT maps.
    Cilium,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CtEntry {
    pub source: Source,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, ... or the protocol number.
    pub proto: String,
    pub proto_num: u8,
    /// TCP state (`ESTABLISHED`, `SYN_SENT`, ...); None for other protocols.
    pub state: Option<String>,
    pub orig: Tuple,
    pub reply: Tuple,
    /// Seconds until the entry expires (None: not tracked by this source).
    pub timeout: Option<u32>,
    /// Status flags: ASSURED, SEEN_REPLY, CONFIRMED, SRC_NAT, DST_NAT, ...
    /// (static names: no allocation per flag and entry).
    pub flags: Vec<&'static str>,
    pub mark: u32,
    pub zone: u16,
    /// Per-direction counters (netfilter: only with nf_conntrack_acct=1).
    pub orig_counters: Option<Counters>,
    pub reply_counters: Option<Counters>,
    /// Kernel entry id (netfilter).
    pub id: Option<u32>,
    /// Seconds since the first and the last packet (eBPF tracker).
    pub age_s: Option<u64>,
    pub idle_s: Option<u64>,
}

/// The TCP conntrack states, indexed as in linux/netfilter/nf_conntrack_tcp.h.
pub const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

/// IPS_* status bits (linux/netfilter/nf_conntrack_common.h) and the names
/// labctl shows for them.
pub const STATUS_FLAGS: [(u32, &str); 15] = [
    (1 << 0, "EXPECTED"),
    (1 << 1, "SEEN_REPLY"),
    (1 << 2, "ASSURED"),
    (1 << 3, "CONFIRMED"),
    (1 << 4, "SRC_NAT"),
    (1 << 5, "DST_NAT"),
    (1 << 6, "SEQ_ADJUST"),
    (1 << 7, "SRC_NAT_DONE"),
    (1 << 8, "DST_NAT_DONE"),
    (1 << 9, "DYING"),
    (1 << 10, "FIXED_TIMEOUT"),
    (1 << 11, "TEMPLATE"),
    (1 << 12, "UNTRACKED"),
    (1 << 13, "HELPER"),
    (1 << 14, "OFFLOAD"),
];

pub fn status_names(status: u32) -> Vec<&'static str> {
    STATUS_FLAGS
        .iter()
        .filter(|(bit, _)| status & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// `tcp`, `udp`, ... as `conntrack -L` names them; other numbers (and
/// ICMPv6's outside IPv6) as numbers.
pub fn proto_name(num: u8, v6: bool) -> String {
    match lab_common::proto::name(num) {
        Some(name) if num != lab_common::proto::ICMPV6 || v6 => name.to_owned(),
        _ => num.to_string(),
    }
}

impl CtEntry {
    /// Source NAT: the reply does not come back to the original source. For
    /// netfilter entries the kernel must also have done the NAT
    /// (SRC_NAT_DONE), as libnetfilter_conntrack (`conntrack --src-nat`)
    /// decides it: a tuple mismatch alone can be a hand-made entry.
    pub fn is_snat(&self) -> bool {
        self.nat_done("SRC_NAT_DONE")
            && (self.orig.src != self.reply.dst || self.orig.sport != self.reply.dport)
    }

    /// Destination NAT: the reply does not come from the original destination.
    pub fn is_dnat(&self) -> bool {
        self.nat_done("DST_NAT_DONE")
            && (self.orig.dst != self.reply.src || self.orig.dport != self.reply.sport)
    }

    fn nat_done(&self, flag: &str) -> bool {
        self.source != Source::Netfilter || self.has_flag(flag)
    }

    /// The translation in plain words, e.g. `SNAT as 172.18.0.2:40000`.
    pub fn nat(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.is_snat() {
            parts.push(format!(
                "SNAT as {}",
                Tuple::endpoint(&self.reply.dst, self.reply.dport)
            ));
        }
        if self.is_dnat() {
            parts.push(format!(
                "DNAT to {}",
                Tuple::endpoint(&self.reply.src, self.reply.sport)
            ));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// Packets + bytes in both directions (0 when not counted).
    pub fn totals(&self) -> (u64, u64) {
        let c = |c: &Option<Counters>| c.unwrap_or_default();
        let (o, r) = (c(&self.orig_counters), c(&self.reply_counters));
        (o.packets + r.packets, o.bytes + r.bytes)
    }

    /// The key joining the views: protocol and original tuple.
    pub fn key(&self) -> (u8, Tuple) {
        (self.proto_num, self.orig.clone())
    }
}

/// The JSON object for one entry: the entry plus the derived NAT fields.
#[derive(Debug, Serialize)]
pub struct EntryJson<'a> {
    #[serde(flatten)]
    pub entry: &'a CtEntry,
    /// `snat`, `dnat`, `snat+dnat` or null.
    pub nat_kind: Option<&'static str>,
    pub nat: Option<String>,
    /// With `--source all`: the views this flow appears in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_by: Option<Vec<Source>>,
    /// The pods (`NAMESPACE/NAME`) the original direction's addresses
    /// belong to, where known.
    pub src_pod: Option<String>,
    pub dst_pod: Option<String>,
}

impl<'a> EntryJson<'a> {
    /// Names the original direction's addresses that are in `pods`.
    pub fn with_pods(
        mut self,
        pods: &std::collections::HashMap<Ipv4Addr, crate::kernel::names::PodRef>,
    ) -> Self {
        let pod = |a: &IpAddr| match a {
            IpAddr::V4(v4) => pods.get(v4).map(ToString::to_string),
            IpAddr::V6(_) => None,
        };
        self.src_pod = pod(&self.entry.orig.src);
        self.dst_pod = pod(&self.entry.orig.dst);
        self
    }

    pub fn new(entry: &'a CtEntry) -> Self {
        let nat_kind = match (entry.is_snat(), entry.is_dnat()) {
            (true, true) => Some("snat+dnat"),
            (true, false) => Some("snat"),
            (false, true) => Some("dnat"),
            (false, false) => None,
        };
        Self {
            entry,
            nat_kind,
            nat: entry.nat(),
            seen_by: None,
            src_pod: None,
            dst_pod: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn udp_snat() -> CtEntry {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        CtEntry {
            source: Source::Netfilter,
            family: "ipv4",
            proto: "udp".into(),
            proto_num: 17,
            state: None,
            orig: Tuple {
                src: a("10.244.1.2"),
                dst: a("1.1.1.1"),
                sport: Some(40000),
                dport: Some(53),
                icmp_type: None,
                icmp_code: None,
                icmp_id: None,
            },
            reply: Tuple {
                src: a("1.1.1.1"),
                dst: a("172.18.0.2"),
                sport: Some(53),
                dport: Some(40000),
                icmp_type: None,
                icmp_code: None,
                icmp_id: None,
            },
            timeout: Some(29),
            flags: status_names(0b1_1000_1010),
            mark: 0,
            zone: 0,
            orig_counters: None,
            reply_counters: None,
            id: None,
            age_s: None,
            idle_s: None,
        }
    }

    #[test]
    fn source_nat_is_described_plainly() {
        let e = udp_snat();
        assert!(e.is_snat() && !e.is_dnat());
        assert_eq!(e.nat().as_deref(), Some("SNAT as 172.18.0.2:40000"));
        assert_eq!(
            e.flags,
            ["SEEN_REPLY", "CONFIRMED", "SRC_NAT_DONE", "DST_NAT_DONE"]
        );
        assert_eq!(e.orig.describe(), "10.244.1.2:40000 → 1.1.1.1:53");
        let json = serde_json::to_value(EntryJson::new(&e)).unwrap();
        assert_eq!(json["nat_kind"], "snat");
        assert_eq!(json["orig"]["sport"], 40000);
        assert!(json.get("seen_by").is_none());
    }

    #[test]
    fn destination_nat_and_plain_flows() {
        let mut e = udp_snat();
        e.reply.dst = e.orig.src;
        assert_eq!(e.nat(), None);
        e.reply.src = "10.244.1.3".parse().unwrap();
        e.reply.sport = Some(8053);
        assert_eq!(e.nat().as_deref(), Some("DNAT to 10.244.1.3:8053"));
        assert_eq!(proto_name(58, true), "icmpv6");
        assert_eq!(proto_name(99, false), "99");
    }
}
