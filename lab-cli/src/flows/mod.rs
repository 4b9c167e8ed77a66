//! `labctl observe`: one stream of flows in Hubble's vocabulary, from what
//! labctl already sees: connections starting and ending (ctnetlink NEW and
//! DESTROY events; the eBPF tracker's table where it runs) as FORWARDED,
//! and packet drops (the drop tracer) as DROPPED with their reason. Lost
//! events are never silent: each loss is an item of its own with its count,
//! as Hubble's `lost_events`. `hubble` holds Hubble's own schema and the
//! Observer API that `observe --serve` speaks.

pub mod hubble;
pub mod observe;

use std::net::IpAddr;

use crate::{
    conntrack::{
        entry::{CtEntry, Source},
        netlink::EventKind,
    },
    drops::record::{DropRecord, PolicyVerdict},
    kernel::names::PodRef,
};

/// Hubble's verdicts that labctl produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Verdict {
    Forwarded,
    Dropped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Forwarded => "FORWARDED",
            Verdict::Dropped => "DROPPED",
        }
    }
}

/// Hubble's event types that labctl's flows are (`--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowType {
    /// A policy datapath's verdict on a new connection.
    PolicyVerdict,
    /// A packet drop.
    Drop,
    /// A connection starting or ending (conntrack, the eBPF tracker).
    Trace,
}

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// The pod with this address, where known.
    pub pod: Option<PodRef>,
}

/// The transport part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4 {
    /// TCP with its flags byte where a packet was seen (drops), None for
    /// connection events.
    Tcp(Option<u8>),
    Udp,
    Icmp {
        v6: bool,
        kind: u8,
        code: u8,
    },
    /// Any other protocol, by number (or by name when not IP).
    Other(String),
}

/// What produced a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A conntrack event (resync: found by a table dump after lost events).
    Conntrack { event: EventKind, resync: bool },
    /// labctl's eBPF tracker's table (`conntrack track`).
    Tracker { event: EventKind },
    /// A packet drop, where the kernel freed it.
    Drop {
        location: String,
        ifname: Option<String>,
    },
    /// A policy datapath's verdict on a new connection (Hubble's
    /// policy-verdict events).
    Policy(Box<PolicyEvent>),
}

/// Which datapath reported a policy verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The eBPF policy programs' verdict ring buffer (`--policy-mode ebpf`).
    Ebpf,
    /// The `log group` statements of the netfilter rules (NFLOG,
    /// `--policy-mode netfilter`).
    Nflog,
}

impl PolicySource {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::Ebpf => "ebpf",
            PolicySource::Nflog => "nflog",
        }
    }
}

/// One policy verdict on a new connection, on one side (the source
/// pod's egress or the destination pod's ingress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    pub source: PolicySource,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// Cilium's `POLICY_MATCH_*` (`lab_common::policy::MATCH_*`).
    pub match_type: u8,
    /// The deciding map entry or nft rule, in the datapath's words.
    pub entry: String,
    /// The two ends' identities as the datapath saw them (eBPF), else as
    /// the lab's policies give them.
    pub src_identity: Option<u32>,
    pub dst_identity: Option<u32>,
    /// What the lab's policies say (None: no lab's node).
    pub names: Option<crate::lab::policy::VerdictNames>,
}

/// Hubble's `PolicyMatchType` strings (`api.PolicyMatchType.String()`).
pub fn match_type_name(m: u8) -> &'static str {
    match m {
        1 => "L3-Only",
        2 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "none",
    }
}

/// One flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Unix-epoch nanoseconds (when labctl saw the event, for conntrack).
    pub time_ns: u64,
    pub verdict: Verdict,
    /// The kernel's drop reason (`NO_SOCKET`), for drops; a policy
    /// datapath's (`POLICY_DENIED`, `POLICY_DENY`) where its mark says so.
    pub drop_reason: Option<String>,
    /// A policy drop's direction, policies and identities.
    pub policy: Option<PolicyVerdict>,
    /// `first` or `later` for a fragment of an IP datagram.
    pub fragment: Option<&'static str>,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub l4: L4,
    /// Where the flow was seen: the namespace's name (a node, a pod, `host`).
    pub node: String,
    /// The translation in words (`SNAT as 172.18.0.2:40000`), and the
    /// source after SNAT (Hubble's `IP.source_xlated`).
    pub nat: Option<String>,
    pub source_xlated: Option<IpAddr>,
    /// TCP state of a connection event.
    pub state: Option<String>,
    pub origin: Origin,
}

/// The packet a policy verdict was given on (the connection's first on
/// that side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictPacket {
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    /// Host order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP: the flags byte; ICMP: the type.
    pub info: u8,
}

impl VerdictPacket {
    /// The packet's IPv4 header and the start of its transport header
    /// (what NFLOG copies); None when it is not IPv4.
    pub fn parse(ip: &[u8]) -> Option<Self> {
        let vihl = *ip.first()?;
        if vihl >> 4 != 4 || ip.len() < 20 {
            return None;
        }
        let octets =
            |at: usize| std::net::Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
        let proto = ip[9];
        let l4 = ip.get(usize::from(vihl & 0x0f) * 4..).unwrap_or_default();
        let be16 = |at: usize| {
            l4.get(at..at + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
        };
        let (sport, dport, info) = match proto {
            6 => (be16(0), be16(2), l4.get(13).copied().unwrap_or(0)),
            17 | 132 => (be16(0), be16(2), 0),
            1 => (be16(4), be16(4), l4.first().copied().unwrap_or(0)),
            _ => (0, 0, 0),
        };
        Some(Self {
            src: octets(12),
            dst: octets(16),
            sport,
            dport,
            proto,
            info,
        })
    }
}

/// Where events were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostSource {
    /// The drop tracer's ring buffer was full.
    TracerRing,
    /// The kernel could not queue conntrack events (ENOBUFS).
    CtnetlinkBuffer,
    /// The eBPF policy programs' verdict ring buffer was full.
    PolicyRing,
    /// The kernel could not queue NFLOG messages of the netfilter policy
    /// rules (ENOBUFS; counted in datagrams, each one or more verdicts).
    NflogBuffer,
}

impl LostSource {
    /// Hubble's `LostEventSource`: Hubble has no value for a netlink
    /// socket, so conntrack's losses are `UNKNOWN_LOST_EVENT_SOURCE`.
    pub fn hubble(self) -> &'static str {
        match self {
            LostSource::TracerRing | LostSource::PolicyRing => "PERF_EVENT_RING_BUFFER",
            LostSource::CtnetlinkBuffer | LostSource::NflogBuffer => "UNKNOWN_LOST_EVENT_SOURCE",
        }
    }

    /// labctl's name for it (in its extension object and compact lines).
    pub fn labctl(self) -> &'static str {
        match self {
            LostSource::TracerRing => "PERF_EVENT_RING_BUFFER",
            LostSource::CtnetlinkBuffer => "CTNETLINK_SOCKET_BUFFER",
            LostSource::PolicyRing => "POLICY_VERDICT_RING_BUFFER",
            LostSource::NflogBuffer => "NFLOG_SOCKET_BUFFER",
        }
    }
}

/// Events that never made it into the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub time_ns: u64,
    pub source: LostSource,
    /// Events lost (for conntrack: flows the resync found that the events
    /// missed).
    pub count: u64,
    pub node: String,
}

/// An item of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Flow(Box<Flow>),
    Lost(Lost),
}

/// Finds the pod with an address, in the view of one namespace.
pub trait PodsByAddr {
    fn pod(&mut self, netns_ino: u64, ip: IpAddr) -> Option<PodRef>;
}

impl Flow {
    /// A connection event from a conntrack table (netfilter or the eBPF
    /// tracker): its original direction, with the NAT applied.
    pub fn from_conntrack(
        entry: &CtEntry,
        event: EventKind,
        resync: bool,
        node: &str,
        netns_ino: u64,
        time_ns: u64,
        pods: &mut impl PodsByAddr,
    ) -> Self {
        let o = &entry.orig;
        // A new TCP connection in SYN_SENT began with the client's SYN.
        let syn = event == EventKind::New && entry.state.as_deref() == Some("SYN_SENT");
        let l4 = match entry.proto_num {
            6 => L4::Tcp(syn.then_some(0x02)),
            17 => L4::Udp,
            1 | 58 => L4::Icmp {
                v6: entry.proto_num == 58,
                kind: o.icmp_type.unwrap_or(0),
                code: o.icmp_code.unwrap_or(0),
            },
            _ => L4::Other(entry.proto.clone()),
        };
        let origin = match entry.source {
            Source::Bpf => Origin::Tracker { event },
            _ => Origin::Conntrack { event, resync },
        };
        Flow {
            time_ns,
            verdict: Verdict::Forwarded,
            drop_reason: None,
            policy: None,
            fragment: None,
            source: Endpoint {
                ip: Some(o.src),
                port: o.sport,
                pod: pods.pod(netns_ino, o.src),
            },
            destination: Endpoint {
                ip: Some(o.dst),
                port: o.dport,
                pod: pods.pod(netns_ino, o.dst),
            },
            l4,
            node: node.to_owned(),
            nat: entry.nat(),
            source_xlated: entry.is_snat().then_some(entry.reply.dst),
            state: entry.state.clone(),
            origin,
        }
    }

    /// A policy verdict on a new connection: the first packet's tuple,
    /// whether it was allowed, the drop reason if not (`POLICY_DENIED`,
    /// `POLICY_DENY`).
    pub fn from_policy(
        packet: &VerdictPacket,
        drop_reason: Option<&str>,
        node: &str,
        netns_ino: u64,
        time_ns: u64,
        event: PolicyEvent,
        pods: &mut impl PodsByAddr,
    ) -> Self {
        let (src, dst) = (IpAddr::V4(packet.src), IpAddr::V4(packet.dst));
        let ports = matches!(packet.proto, 6 | 17 | 132);
        let l4 = match packet.proto {
            6 => L4::Tcp((packet.info != 0).then_some(packet.info)),
            17 => L4::Udp,
            1 => L4::Icmp {
                v6: false,
                kind: packet.info,
                code: 0,
            },
            132 => L4::Other("SCTP".into()),
            n => L4::Other(n.to_string()),
        };
        Flow {
            time_ns,
            verdict: if drop_reason.is_some() {
                Verdict::Dropped
            } else {
                Verdict::Forwarded
            },
            drop_reason: drop_reason.map(str::to_owned),
            policy: None,
            fragment: None,
            source: Endpoint {
                ip: Some(src),
                port: ports.then_some(packet.sport),
                pod: pods.pod(netns_ino, src),
            },
            destination: Endpoint {
                ip: Some(dst),
                port: ports.then_some(packet.dport),
                pod: pods.pod(netns_ino, dst),
            },
            l4,
            node: node.to_owned(),
            nat: None,
            source_xlated: None,
            state: None,
            origin: Origin::Policy(Box::new(event)),
        }
    }

    /// A drop from the tracer.
    pub fn from_drop(r: &DropRecord, pods: &mut impl PodsByAddr) -> Self {
        let ip = |s: &Option<String>| s.as_deref().and_then(|a| a.parse::<IpAddr>().ok());
        let (src, dst) = (ip(&r.src), ip(&r.dst));
        // Loopback in a pod's namespace is that pod.
        let own = r
            .pod_namespace
            .as_ref()
            .zip(r.pod.as_ref())
            .map(|(ns, pod)| PodRef {
                namespace: ns.clone(),
                name: pod
                    .strip_prefix(&format!("{ns}/"))
                    .unwrap_or(pod)
                    .to_owned(),
                uid: r.pod_uid.clone(),
            });
        let mut endpoint = |ip: Option<IpAddr>, port: Option<u16>| Endpoint {
            ip,
            port,
            pod: ip.and_then(|a| match a.is_loopback() {
                true => own.clone(),
                false => pods.pod(r.netns_ino, a),
            }),
        };
        let source = endpoint(src, r.sport);
        let destination = endpoint(dst, r.dport);
        let l4 = match r.proto.as_str() {
            "TCP" => L4::Tcp(r.tcp_flags.as_deref().map(flag_bits)),
            "UDP" => L4::Udp,
            "ICMP" | "ICMPv6" => L4::Icmp {
                v6: r.proto == "ICMPv6",
                kind: r.icmp_type.unwrap_or(0),
                code: r.icmp_code.unwrap_or(0),
            },
            other => L4::Other(other.to_owned()),
        };
        Flow {
            time_ns: r.ts_ns,
            verdict: Verdict::Dropped,
            drop_reason: Some(r.reason.clone()),
            policy: r.policy.clone(),
            fragment: r.fragment,
            source,
            destination,
            l4,
            node: r.netns.clone(),
            nat: None,
            source_xlated: None,
            state: None,
            origin: Origin::Drop {
                location: r.location.clone(),
                ifname: r.ifname.clone(),
            },
        }
    }

    /// Hubble's `Summary`: `TCP Flags: SYN`, `UDP`, `ICMPv4 EchoRequest`.
    pub fn summary(&self) -> String {
        match &self.l4 {
            L4::Tcp(Some(bits)) => format!("TCP Flags: {}", flag_names(*bits).join(", ")),
            L4::Tcp(None) => match &self.origin {
                Origin::Drop { .. } => "TCP".into(),
                _ => format!("TCP {}", self.state.as_deref().unwrap_or(""))
                    .trim_end()
                    .into(),
            },
            L4::Udp => "UDP".into(),
            L4::Icmp { v6, kind, code } => icmp_summary(*v6, *kind, *code),
            L4::Other(p) => p.clone(),
        }
    }

    /// Hubble's event type of the flow.
    pub fn kind(&self) -> FlowType {
        match self.origin {
            Origin::Policy(_) => FlowType::PolicyVerdict,
            Origin::Drop { .. } => FlowType::Drop,
            Origin::Conntrack { .. } | Origin::Tracker { .. } => FlowType::Trace,
        }
    }

    /// The protocol's name as `--protocol` takes it.
    pub fn protocol(&self) -> &str {
        match &self.l4 {
            L4::Tcp(_) => "tcp",
            L4::Udp => "udp",
            L4::Icmp { v6: false, .. } => "icmp",
            L4::Icmp { v6: true, .. } => "icmpv6",
            L4::Other(p) => p,
        }
    }
}

/// TCP flag names in Hubble's order and spelling.
const TCP_FLAGS: [(u8, &str); 8] = [
    (0x02, "SYN"),
    (0x10, "ACK"),
    (0x01, "FIN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
];

pub fn flag_names(bits: u8) -> Vec<&'static str> {
    TCP_FLAGS
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The flags byte back from the tracer's letters (`SA`).
fn flag_bits(letters: &str) -> u8 {
    letters
        .chars()
        .map(|c| match c {
            'S' => 0x02,
            'F' => 0x01,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

fn icmp_summary(v6: bool, kind: u8, code: u8) -> String {
    let name = match (v6, kind) {
        (false, 0) => Some("EchoReply"),
        (false, 3) => Some("DestinationUnreachable"),
        (false, 8) => Some("EchoRequest"),
        (false, 11) => Some("TimeExceeded"),
        (true, 1) => Some("DestinationUnreachable"),
        (true, 128) => Some("EchoRequest"),
        (true, 129) => Some("EchoReply"),
        (true, 130) => Some("MLDv1MulticastListenerQuery"),
        (true, 131) => Some("MLDv1MulticastListenerReport"),
        (true, 132) => Some("MLDv1MulticastListenerDone"),
        (true, 133) => Some("RouterSolicitation"),
        (true, 134) => Some("RouterAdvertisement"),
        (true, 135) => Some("NeighborSolicitation"),
        (true, 136) => Some("NeighborAdvertisement"),
        (true, 143) => Some("MLDv2MulticastListenerReport"),
        _ => None,
    };
    let family = if v6 { "ICMPv6" } else { "ICMPv4" };
    match name {
        Some(n) => format!("{family} {n}"),
        None => format!("{family} type {kind} code {code}"),
    }
}

/// `--verdict`, `--pod`, ...: Hubble's filters that fit; all must match.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub verdict: Option<Verdict>,
    /// Either side is this pod (`NAMESPACE/NAME`).
    pub pod: Option<String>,
    pub from_pod: Option<String>,
    pub to_pod: Option<String>,
    /// Either side is a pod of this namespace.
    pub namespace: Option<String>,
    pub protocol: Option<String>,
    /// Either port.
    pub port: Option<u16>,
    /// Only flows of this type.
    pub kind: Option<FlowType>,
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        let is = |e: &Endpoint, pod: &str| e.pod.as_ref().is_some_and(|p| p.to_string() == pod);
        let in_ns = |e: &Endpoint, ns: &str| e.pod.as_ref().is_some_and(|p| p.namespace == ns);
        self.verdict.is_none_or(|v| v == f.verdict)
            && self.kind.is_none_or(|k| k == f.kind())
            && self
                .pod
                .as_deref()
                .is_none_or(|p| is(&f.source, p) || is(&f.destination, p))
            && self.from_pod.as_deref().is_none_or(|p| is(&f.source, p))
            && self.to_pod.as_deref().is_none_or(|p| is(&f.destination, p))
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| in_ns(&f.source, n) || in_ns(&f.destination, n))
            && self
                .protocol
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(f.protocol()))
            && self
                .port
                .is_none_or(|p| f.source.port == Some(p) || f.destination.port == Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoPods;
    impl PodsByAddr for NoPods {
        fn pod(&mut self, _: u64, ip: IpAddr) -> Option<PodRef> {
            (ip.to_string() == "10.0.0.2").then(|| PodRef {
                namespace: "lab".into(),
                name: "b".into(),
                uid: None,
            })
        }
    }

    #[test]
    fn drops_become_dropped_flows_with_hubble_summaries() {
        let mut r = crate::drops::record::tests::sample_udp();
        r.dst = Some("10.0.0.2".into());
        let f = Flow::from_drop(&r, &mut NoPods);
        assert_eq!(f.verdict, Verdict::Dropped);
        assert_eq!(f.drop_reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(f.summary(), "UDP");
        assert_eq!(f.destination.pod.as_ref().unwrap().to_string(), "lab/b");
        assert!(f.source.pod.is_none());
        // Loopback in a pod's namespace is the pod itself.
        r.pod = Some("lab/a".into());
        r.pod_namespace = Some("lab".into());
        let f = Flow::from_drop(&r, &mut NoPods);
        assert_eq!(f.source.pod.as_ref().unwrap().to_string(), "lab/a");
        r.proto = "TCP".into();
        r.tcp_flags = Some("SA".into());
        assert_eq!(
            Flow::from_drop(&r, &mut NoPods).summary(),
            "TCP Flags: SYN, ACK"
        );
        assert_eq!(icmp_summary(false, 8, 0), "ICMPv4 EchoRequest");
        assert_eq!(icmp_summary(true, 2, 0), "ICMPv6 type 2 code 0");
        assert_eq!(
            icmp_summary(true, 143, 0),
            "ICMPv6 MLDv2MulticastListenerReport"
        );
    }

    #[test]
    fn verdict_packets_are_read_from_what_nflog_copies() {
        // IPv4 (IHL 5) 10.0.0.1 -> 10.0.0.2, TCP 40000 -> 80, SYN.
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let mut tcp = vec![0u8; 20];
        tcp[..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[13] = 0x02;
        ip.extend(&tcp);
        let p = VerdictPacket::parse(&ip).unwrap();
        assert_eq!(
            (
                p.src.to_string(),
                p.dst.to_string(),
                p.sport,
                p.dport,
                p.proto,
                p.info
            ),
            ("10.0.0.1".into(), "10.0.0.2".into(), 40000, 80, 6, 0x02)
        );
        // ICMP echo request: the id for both ports, the type as info.
        let mut icmp = ip[..20].to_vec();
        icmp[9] = 1;
        icmp.extend([8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let p = VerdictPacket::parse(&icmp).unwrap();
        assert_eq!((p.sport, p.dport, p.info), (0x1234, 0x1234, 8));
        assert!(VerdictPacket::parse(&[0x60; 40]).is_none(), "not IPv4");
        assert!(VerdictPacket::parse(&ip[..10]).is_none(), "cut short");
    }

    #[test]
    fn filters_match_either_side_or_one() {
        let mut r = crate::drops::record::tests::sample_udp();
        r.dst = Some("10.0.0.2".into());
        let f = Flow::from_drop(&r, &mut NoPods);
        let yes = |filter: FlowFilter| filter.matches(&f);
        assert!(yes(FlowFilter::default()));
        assert!(yes(FlowFilter {
            pod: Some("lab/b".into()),
            ..Default::default()
        }));
        assert!(yes(FlowFilter {
            to_pod: Some("lab/b".into()),
            protocol: Some("UDP".into()),
            port: Some(9),
            namespace: Some("lab".into()),
            verdict: Some(Verdict::Dropped),
            ..Default::default()
        }));
        assert!(!yes(FlowFilter {
            from_pod: Some("lab/b".into()),
            ..Default::default()
        }));
        assert!(!yes(FlowFilter {
            verdict: Some(Verdict::Forwarded),
            ..Default::default()
        }));
        assert!(!yes(FlowFilter {
            port: Some(80),
            ..Default::default()
        }));
        assert!(yes(FlowFilter {
            kind: Some(FlowType::Drop),
            ..Default::default()
        }));
        assert!(!yes(FlowFilter {
            kind: Some(FlowType::PolicyVerdict),
            ..Default::default()
        }));
    }
}
