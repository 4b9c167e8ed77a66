//! A drop event with every number resolved, and its two output forms: a
//! readable line and an NDJSON object (schema documented in docs/trace.md).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lab_common::trace::{DropEvent, family, pkt};

use super::reasons::PolicyDrop;
use crate::kernel::names::PodRef;
use serde::Serialize;

/// One drop, as printed. Field names and types are the stable JSON schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub reason: String,
    pub reason_code: u32,
    pub netns: String,
    pub netns_ino: u64,
    /// The pod the namespace belongs to, as `NAMESPACE/NAME` (null when it
    /// is not a pod's), with its namespace and uid apart.
    pub pod: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub ifname: Option<String>,
    pub ifindex: u32,
    pub proto: String,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub len: u32,
    pub location: String,
    /// TCP flags as letters (`S`, `SA`, `R`, ...), null for non-TCP.
    pub tcp_flags: Option<String>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// `first` or `later` for a fragment of an IP datagram (a later one has
    /// no ports: only the first carries the L4 header); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragment: Option<&'static str>,
    /// A policy drop (the packet's mark said so): its direction, the
    /// kernel's own reason, and which policy, where labctl knows the lab.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyVerdict>,
    /// Kernel stack, innermost first (only with `--stack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
    /// The packet's first bytes from its network header (only with a
    /// snaplen, for `--pcap`); not part of the JSON.
    #[serde(skip)]
    pub packet: Option<Vec<u8>>,
    /// skb->protocol, or the IP version's when the stack had not set it
    /// (for the pcap's link-layer header).
    #[serde(skip)]
    pub ethertype: u16,
}

/// A policy drop's details: what the mark said, and what the lab's
/// policies say about the packet (filled by the lab layer, see
/// `session::NamePolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVerdict {
    /// `ingress` or `egress`: the side of the pod that was judged.
    pub direction: &'static str,
    /// The kernel's reason for the drop (`NETFILTER_DROP`, `TC_INGRESS`).
    pub kernel_reason: String,
    pub kernel_reason_code: u32,
    /// The mark the datapath set (`0x1ab5000N`).
    pub mark: String,
    #[serde(flatten)]
    pub names: Option<PolicyNames>,
}

/// What the lab's policies say about a dropped packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyNames {
    pub lab: String,
    /// The two ends, as labctl names them (`LAB/POD`, or the address).
    pub from: String,
    pub to: String,
    /// The pod whose policies were judged (the source for egress, the
    /// destination for ingress).
    pub pod: Option<String>,
    /// The policies that denied it: the deny rule's (POLICY_DENY), else
    /// those selecting the pod in that direction, none of which allows it
    /// (POLICY_DENIED).
    pub policies: Vec<PolicyRef>,
    /// The deny rule that matched (`default/p ingressDeny[0] (p.yaml:9)`);
    /// none for a default deny.
    pub rule: Option<String>,
    /// The security identities of the two ends.
    pub src_identity: u32,
    pub dst_identity: u32,
    /// Where the lab's policies do not explain the drop (they allow the
    /// packet in that direction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A policy, by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PolicyRef {
    /// `default/rule1`, as `policy list` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything needed to turn numbers into names. Names are lent, not
/// given: a record is filled in place, one per batch of events, so a drop
/// storm costs no allocation per drop (see [`DropRecord::fill`]).
pub trait Resolve {
    /// Writes the reason's name into `out` (cleared first).
    fn reason(&self, code: u32, out: &mut String);
    fn netns(&mut self, ino: u64) -> &str;
    fn pod(&mut self, ino: u64) -> Option<&PodRef>;
    fn ifname(&mut self, netns_ino: u64, ifindex: u32) -> Option<&str>;
    fn location(&mut self, addr: u64) -> &str;
    /// Converts bpf_ktime_get_ns() to Unix-epoch nanoseconds.
    fn wall_ns(&self, ktime_ns: u64) -> u64;
    /// An event's address as text into `to` (a resolver may remember
    /// recent ones).
    fn address(&mut self, family: u8, bytes: [u8; 16], to: &mut Option<String>) {
        set_address(to, family, bytes);
    }
}

/// `10.0.0.1`, `fd00::1`, or None when the event had no IP header.
pub fn format_address(family: u8, a: [u8; 16]) -> Option<String> {
    let mut out = None;
    set_address(&mut out, family, a);
    out
}

/// Sets `to` to `v`, reusing its allocation.
fn set(to: &mut String, v: &str) {
    to.clear();
    to.push_str(v);
}

/// Sets `to` to `v`, reusing its allocation where both are some.
pub fn set_opt(to: &mut Option<String>, v: Option<&str>) {
    match (to.as_mut(), v) {
        (Some(s), Some(v)) => set(s, v),
        (None, Some(v)) => *to = Some(v.to_owned()),
        (_, None) => *to = None,
    }
}

/// Writes an event's address into `to` (None when it had no IP header).
fn set_address(to: &mut Option<String>, family: u8, a: [u8; 16]) {
    use std::fmt::Write as _;
    let text = to.get_or_insert_with(String::new);
    text.clear();
    let written = match family {
        family::IPV4 => write!(text, "{}", Ipv4Addr::new(a[12], a[13], a[14], a[15])),
        family::IPV6 => write!(text, "{}", Ipv6Addr::from(a)),
        _ => {
            *to = None;
            Ok(())
        }
    };
    // Writing into a String cannot fail.
    written.ok();
}

impl DropRecord {
    pub fn new(ev: &DropEvent, r: &mut impl Resolve) -> Self {
        let mut record = Self::empty();
        record.fill(ev, r);
        record
    }

    /// A record to [`fill`](Self::fill).
    pub fn empty() -> Self {
        Self {
            kind: "drop",
            ts_ns: 0,
            reason: String::new(),
            reason_code: 0,
            netns: String::new(),
            netns_ino: 0,
            pod: None,
            pod_namespace: None,
            pod_uid: None,
            ifname: None,
            ifindex: 0,
            proto: String::new(),
            src: None,
            dst: None,
            sport: None,
            dport: None,
            len: 0,
            location: String::new(),
            tcp_flags: None,
            icmp_type: None,
            icmp_code: None,
            fragment: None,
            policy: None,
            stack: None,
            packet: None,
            ethertype: 0,
        }
    }

    /// Makes this the record of `ev`, every field set again, reusing the
    /// strings' allocations: what the tracer does for each event.
    pub fn fill(&mut self, ev: &DropEvent, r: &mut impl Resolve) {
        let netns_ino = u64::from(ev.netns_ino);
        let ports = ev.pkt & pkt::PORTS != 0;
        let later = ev.pkt & pkt::LATER_FRAGMENT != 0;
        let icmp = matches!(ev.l4proto, 1 | 58) && ev.family != family::NONE && !later;
        // A policy drop keeps the kernel's reason beside its own name; any
        // other drop is named once.
        match PolicyDrop::from_mark(ev.mark) {
            Some(p) => {
                set(&mut self.reason, p.name());
                self.reason_code = p.code();
                let mut kernel_reason = String::new();
                r.reason(ev.reason, &mut kernel_reason);
                self.policy = Some(PolicyVerdict {
                    direction: p.direction(),
                    kernel_reason,
                    kernel_reason_code: ev.reason,
                    mark: format!("{:#x}", ev.mark),
                    names: None,
                });
            }
            None => {
                r.reason(ev.reason, &mut self.reason);
                self.reason_code = ev.reason;
                self.policy = None;
            }
        }
        self.kind = "drop";
        self.ts_ns = r.wall_ns(ev.ts_ns);
        set(&mut self.netns, r.netns(netns_ino));
        self.netns_ino = netns_ino;
        match r.pod(netns_ino) {
            Some(pod) => {
                set_opt(&mut self.pod_namespace, Some(&pod.namespace));
                set_opt(&mut self.pod_uid, pod.uid.as_deref());
                let full = self.pod.get_or_insert_with(String::new);
                full.clear();
                full.push_str(&pod.namespace);
                full.push('/');
                full.push_str(&pod.name);
            }
            None => {
                self.pod = None;
                self.pod_namespace = None;
                self.pod_uid = None;
            }
        }
        set_opt(&mut self.ifname, r.ifname(netns_ino, ev.ifindex));
        self.ifindex = ev.ifindex;
        set_proto(&mut self.proto, ev);
        r.address(ev.family, ev.saddr, &mut self.src);
        r.address(ev.family, ev.daddr, &mut self.dst);
        self.sport = ports.then_some(ev.sport);
        self.dport = ports.then_some(ev.dport);
        self.len = ev.len;
        set(&mut self.location, r.location(ev.location));
        if ev.l4proto == 6 && ports {
            set_tcp_flags(self.tcp_flags.get_or_insert_with(String::new), ev.tcp_flags);
        } else {
            self.tcp_flags = None;
        }
        self.icmp_type = icmp.then_some(ev.icmp_type);
        self.icmp_code = icmp.then_some(ev.icmp_code);
        self.fragment = match (ev.pkt & pkt::FRAGMENT != 0, later) {
            (_, true) => Some("later"),
            (true, false) => Some("first"),
            (false, false) => None,
        };
        self.stack = None;
        self.packet = None;
        self.ethertype = match (ev.ethertype, ev.family) {
            (0, family::IPV4) => 0x0800,
            (0, family::IPV6) => 0x86dd,
            (e, _) => e,
        };
    }
}

/// The protocol's name (`UDP`, `ICMPv6`, `ARP`, `IP(253)`) into `to`.
fn set_proto(to: &mut String, ev: &DropEvent) {
    use std::fmt::Write as _;
    to.clear();
    let written = if ev.family != family::NONE {
        match lab_common::proto::name(ev.l4proto) {
            Some("icmpv6") => to.write_str("ICMPv6"),
            Some(name) => {
                to.push_str(name);
                to.make_ascii_uppercase();
                Ok(())
            }
            None => write!(to, "IP({})", ev.l4proto),
        }
    } else {
        match ev.ethertype {
            0x0806 => to.write_str("ARP"),
            0x8100 => to.write_str("VLAN"),
            0x88cc => to.write_str("LLDP"),
            0 => to.write_str("unknown"),
            e => write!(to, "ETH({e:#06x})"),
        }
    };
    // Writing into a String cannot fail.
    written.ok();
}

/// Letters for the TCP flags byte, in tcpdump's order.
pub fn tcp_flags(bits: u8) -> String {
    let mut s = String::new();
    set_tcp_flags(&mut s, bits);
    s
}

fn set_tcp_flags(to: &mut String, bits: u8) {
    const NAMES: [(u8, char); 8] = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'C'),
    ];
    to.clear();
    to.extend(NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, c)| *c));
    if to.is_empty() {
        to.push('.');
    }
}

/// Parses `--host`: an IPv4 or IPv6 address, in the event's 16-byte form.
pub fn host_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    // The rendering lives in output; these tests check the fields feeding it.
    use crate::output::drops::drop_line;

    /// The record of a UDP drop on lo (for output's golden tests too).
    pub(crate) fn sample_udp() -> DropRecord {
        DropRecord::new(&udp_event(), &mut Fixed)
    }

    struct Fixed;
    impl Resolve for Fixed {
        fn reason(&self, code: u32, out: &mut String) {
            out.clear();
            if code == 3 {
                out.push_str("NO_SOCKET");
            } else {
                out.push_str(&format!("R{code}"));
            }
        }
        fn netns(&mut self, _: u64) -> &str {
            "labtest-a"
        }
        fn pod(&mut self, _: u64) -> Option<&PodRef> {
            None
        }
        fn ifname(&mut self, _: u64, ifindex: u32) -> Option<&str> {
            (ifindex == 1).then_some("lo")
        }
        fn location(&mut self, _: u64) -> &str {
            "__udp4_lib_rcv+0x5a3"
        }
        fn wall_ns(&self, k: u64) -> u64 {
            k + 1_700_000_000_000_000_000
        }
    }

    fn udp_event() -> DropEvent {
        let mut ev = DropEvent::ZERO;
        ev.ts_ns = 3_723_000_456_000; // 01:02:03.000456 after the epoch offset below
        ev.reason = 3;
        ev.netns_ino = 4026532245;
        ev.ifindex = 1;
        ev.len = 32;
        ev.ethertype = 0x0800;
        ev.family = family::IPV4;
        ev.l4proto = 17;
        ev.pkt = pkt::PORTS;
        ev.sport = 40000;
        ev.dport = 9;
        ev.saddr = host_key("127.0.0.1".parse().unwrap());
        ev.daddr = host_key("127.0.0.2".parse().unwrap());
        ev.location = 0xffffffff81a005a3;
        ev
    }

    #[test]
    fn json_golden() {
        let rec = DropRecord::new(&udp_event(), &mut Fixed);
        assert_eq!(
            serde_json::to_string(&rec).unwrap(),
            r#"{"type":"drop","ts_ns":1700003723000456000,"reason":"NO_SOCKET","reason_code":3,"netns":"labtest-a","netns_ino":4026532245,"pod":null,"pod_namespace":null,"pod_uid":null,"ifname":"lo","ifindex":1,"proto":"UDP","src":"127.0.0.1","dst":"127.0.0.2","sport":40000,"dport":9,"len":32,"location":"__udp4_lib_rcv+0x5a3","tcp_flags":null,"icmp_type":null,"icmp_code":null}"#
        );
    }

    #[test]
    fn tcp_icmp_and_arp_render() {
        let mut ev = udp_event();
        ev.l4proto = 6;
        ev.tcp_flags = 0x12;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!(rec.proto, "TCP");
        assert_eq!(rec.tcp_flags.as_deref(), Some("SA"));

        let mut ev = udp_event();
        ev.l4proto = 1;
        ev.pkt = 0;
        ev.icmp_type = 8;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!(
            (rec.sport, rec.icmp_type, rec.icmp_code),
            (None, Some(8), Some(0))
        );
        assert!(drop_line(&rec, false).contains("ICMP type 8 code 0 127.0.0.1 → 127.0.0.2"));

        let mut ev = DropEvent::ZERO;
        ev.ethertype = 0x0806;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!((rec.proto.as_str(), rec.src.clone()), ("ARP", None));
    }

    #[test]
    fn a_policy_mark_names_the_drop_and_keeps_the_kernel_reason() {
        let mut ev = udp_event();
        ev.mark = lab_common::verdict::mark(false, false);
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!(
            (rec.reason.as_str(), rec.reason_code),
            ("POLICY_DENIED", 133)
        );
        let p = rec.policy.clone().unwrap();
        assert_eq!(
            (p.direction, p.kernel_reason.as_str(), p.kernel_reason_code),
            ("ingress", "NO_SOCKET", 3)
        );
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["reason"], "POLICY_DENIED");
        assert_eq!(json["policy"]["direction"], "ingress");
        assert_eq!(json["policy"]["mark"], "0x1ab50000");
        assert!(json["policy"].get("lab").is_none());
        ev.mark = lab_common::verdict::mark(true, true);
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!((rec.reason.as_str(), rec.reason_code), ("POLICY_DENY", 181));
        assert_eq!(rec.policy.unwrap().direction, "egress");
        // Any other mark is not a policy's.
        ev.mark = 0x4000;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!((rec.reason.as_str(), rec.policy), ("NO_SOCKET", None));
    }

    #[test]
    fn fragments_are_said_and_later_ones_have_no_ports() {
        let mut ev = udp_event();
        ev.pkt = pkt::PORTS | pkt::FRAGMENT;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!((rec.fragment, rec.dport), (Some("first"), Some(9)));
        ev.pkt = pkt::FRAGMENT | pkt::LATER_FRAGMENT;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!(
            (rec.fragment, rec.dport, rec.proto.as_str()),
            (Some("later"), None, "UDP")
        );
        assert_eq!(serde_json::to_value(&rec).unwrap()["fragment"], "later");
        ev.l4proto = 58;
        ev.icmp_type = 143;
        let rec = DropRecord::new(&ev, &mut Fixed);
        assert_eq!((rec.proto.as_str(), rec.icmp_type), ("ICMPv6", None));
    }

    #[test]
    fn a_record_filled_again_is_the_new_events_record() {
        // The tracer fills one record per batch: nothing of the event
        // before may stay, whatever the two were.
        let mut policy_tcp = udp_event();
        policy_tcp.l4proto = 6;
        policy_tcp.tcp_flags = 0x02;
        policy_tcp.mark = lab_common::verdict::mark(true, false);
        policy_tcp.pkt = pkt::PORTS | pkt::FRAGMENT;
        let mut arp = DropEvent::ZERO;
        arp.ethertype = 0x0806;
        let mut v6 = udp_event();
        v6.family = family::IPV6;
        v6.saddr = host_key("fd00::1".parse().unwrap());
        v6.reason = 77;
        let events = [
            udp_event(),
            policy_tcp,
            arp,
            v6,
            udp_event(),
            arp,
            policy_tcp,
        ];
        let mut record = DropRecord::empty();
        for before in &events {
            for ev in &events {
                record.fill(before, &mut Fixed);
                record.stack = Some(vec!["x".into()]);
                record.packet = Some(vec![1]);
                record.fill(ev, &mut Fixed);
                assert_eq!(record, DropRecord::new(ev, &mut Fixed));
            }
        }
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let mut ev = udp_event();
        ev.family = family::IPV6;
        ev.saddr = host_key("::1".parse().unwrap());
        ev.daddr = host_key("fd00::2".parse().unwrap());
        let line = drop_line(&DropRecord::new(&ev, &mut Fixed), false);
        assert!(line.contains("[::1]:40000 → [fd00::2]:9"), "{line}");
    }
}
