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

/// Where events were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostSource {
    /// The drop tracer's ring buffer was full.
    TracerRing,
    /// The kernel could not queue conntrack events (ENOBUFS).
    CtnetlinkBuffer,
}

impl LostSource {
    /// Hubble's `LostEventSource`: Hubble has no value for a netlink
    /// socket, so conntrack's losses are `UNKNOWN_LOST_EVENT_SOURCE`.
    pub fn hubble(self) -> &'static str {
        match self {
            LostSource::TracerRing => "PERF_EVENT_RING_BUFFER",
            LostSource::CtnetlinkBuffer => "UNKNOWN_LOST_EVENT_SOURCE",
        }
    }

    /// labctl's name for it (in its extension object and compact lines).
    pub fn labctl(self) -> &'static str {
        match self {
            LostSource::TracerRing => "PERF_EVENT_RING_BUFFER",
            LostSource::CtnetlinkBuffer => "CTNETLINK_SOCKET_BUFFER",
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
}

impl FlowFilter {
    pub fn matches(&self, f: &Flow) -> bool {
        let is = |e: &Endpoint, pod: &str| e.pod.as_ref().is_some_and(|p| p.to_string() == pod);
        let in_ns = |e: &Endpoint, ns: &str| e.pod.as_ref().is_some_and(|p| p.namespace == ns);
        self.verdict.is_none_or(|v| v == f.verdict)
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
    }
}
