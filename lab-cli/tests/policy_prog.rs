//! The policy programs (`policy_from_pod` / `policy_to_pod`, `--policy-mode
//! ebpf`) under BPF_PROG_TEST_RUN, loaded on their own: maps written here
//! as a node's are (policy entries encoded by `policy::bpf::encode`, as the
//! datapath writes them), frames built here, verdicts, marks, counters and
//! verdict events checked exactly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr};

use etherparse::PacketBuilder;
use ipnet::Ipv4Net;
use lab_cli::{
    ebpf::policy::{PolicyMaps, Side, TestBench},
    policy::{
        bpf::{encode, ipcache_key},
        maps::MapEntry,
        model::{Direction, Protocol},
    },
};
use lab_common::{
    policy::{
        EP_EGRESS_DEFAULT_DENY, EP_INGRESS_DEFAULT_DENY, EndpointInfo, MATCH_L3_L4, MATCH_NONE,
        MetricsKey, PolicyEntry, REASON_FORWARDED, REASON_POLICY_DENIED, REASON_POLICY_DENY,
        RemoteEndpointInfo, VerdictEvent, stat,
    },
    verdict,
};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

const DS: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const TF: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const XW: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
const WORLD: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const DS_ID: u32 = 256;
const TF_ID: u32 = 257;
const XW_ID: u32 = 258;
/// Host-side veths of deathstar and tiefighter.
const DS_IF: u32 = 100;
const TF_IF: u32 = 101;
const DS_EP: u32 = 1;
const TF_EP: u32 = 2;

fn ne(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut out, b"")
        .unwrap();
    out
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, b"labctl policy")
        .unwrap();
    out
}

fn ping(src: Ipv4Addr, dst: Ipv4Addr, id: u16, reply: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        src.octets(),
        dst.octets(),
        64,
    );
    if reply {
        b.icmpv4_echo_reply(id, 1).write(&mut out, b"ping").unwrap();
    } else {
        b.icmpv4_echo_request(id, 1)
            .write(&mut out, b"ping")
            .unwrap();
    }
    out
}

fn entry(
    direction: Direction,
    identity: u32,
    protocol: Protocol,
    port: Option<u16>,
    end_port: Option<u16>,
    deny: bool,
) -> MapEntry {
    MapEntry {
        direction,
        identity,
        protocol,
        port,
        end_port,
        deny,
    }
}

/// A bench with the starwars ipcache, deathstar and tiefighter plugged
/// (`ds_flags`, `tf_flags`: their default-deny directions) and the given
/// entries in their maps.
fn bench(ds_flags: u32, ds: &[MapEntry], tf_flags: u32, tf: &[MapEntry]) -> TestBench {
    let bench = TestBench::load().unwrap();
    let mut maps = bench.maps().unwrap();
    for (block, id) in [
        ("0.0.0.0/0", 2),
        ("172.18.0.2/32", 1),
        ("10.244.1.2/32", DS_ID),
        ("10.244.1.3/32", TF_ID),
        ("10.244.2.3/32", XW_ID),
    ] {
        let (prefix, key) = ipcache_key(block.parse::<Ipv4Net>().unwrap());
        maps.set_ipcache(
            prefix,
            key,
            RemoteEndpointInfo {
                sec_identity: id,
                tunnel_endpoint: 0,
                pad: 0,
                key: 0,
                flags: 0,
            },
        )
        .unwrap();
    }
    for (ifindex, id, identity, addr, flags, entries) in [
        (DS_IF, DS_EP, DS_ID, DS, ds_flags, ds),
        (TF_IF, TF_EP, TF_ID, TF, tf_flags, tf),
    ] {
        maps.set_endpoint(
            ifindex,
            EndpointInfo {
                id,
                identity,
                ip4: ne(addr),
                flags,
            },
        )
        .unwrap();
        let set: BTreeSet<MapEntry> = entries.iter().copied().collect();
        for ((prefix, key), flags) in encode(id, &set) {
            maps.set_policy(
                prefix,
                key,
                PolicyEntry {
                    flags,
                    ..PolicyEntry::default()
                },
            )
            .unwrap();
        }
    }
    bench
}

/// Runs and checks the verdict and the mark (0 when passed).
fn expect(bench: &mut TestBench, side: Side, ifindex: u32, frame: &[u8], want: Option<bool>) {
    let out = bench.run(side, ifindex, frame).unwrap();
    let egress = side == Side::FromPod;
    match want {
        None => assert_eq!((out.verdict, out.mark), (TC_ACT_UNSPEC, 0), "passes"),
        Some(deny) => assert_eq!(
            (out.verdict, out.mark),
            (TC_ACT_SHOT, verdict::mark(egress, deny)),
            "dropped, deny={deny}"
        ),
    }
}

const PASS: Option<bool> = None;
const DENIED: Option<bool> = Some(false);
const DENY: Option<bool> = Some(true);

/// The counters of endpoint `ep`'s entry for `identity` and the L4 text.
fn counted(maps: &PolicyMaps, ep: u32, identity: u32, l4: &str) -> (u64, u64) {
    let rows = maps.policy_rows().unwrap();
    let (_, _, e) = rows
        .iter()
        .find(|(p, k, _)| {
            k.endpoint == ep
                && k.sec_label == identity
                && lab_cli::policy::bpf::port_proto(*p, k) == l4
        })
        .unwrap_or_else(|| panic!("no entry {ep} {identity} {l4} in {rows:?}"));
    (e.packets, e.bytes)
}

fn metric(maps: &PolicyMaps, ep: u32, reason: u8, dir: u8) -> (u64, u64) {
    maps.metrics()
        .unwrap()
        .into_iter()
        .find(|(k, _)| {
            *k == MetricsKey {
                endpoint: ep,
                reason,
                dir,
                _pad: 0,
            }
        })
        .map_or((0, 0), |(_, v)| (v.packets, v.bytes))
}

fn events(bench: &TestBench) -> Vec<VerdictEvent> {
    bench.maps().unwrap().events().unwrap().drain()
}

#[test]
fn allowed_default_denied_and_counted_once_per_connection() {
    if !common::privileged("policy programs under BPF_PROG_TEST_RUN") {
        return;
    }
    use Direction::Ingress;
    let rule1 = [entry(Ingress, TF_ID, Protocol::Tcp, Some(80), None, false)];
    let mut b = bench(EP_INGRESS_DEFAULT_DENY, &rule1, 0, &[]);
    let allowed = tcp(TF, 40000, DS, 80);
    let denied = tcp(XW, 40001, DS, 80);
    let world = tcp(WORLD, 40002, DS, 80);
    for _ in 0..3 {
        expect(&mut b, Side::ToPod, DS_IF, &allowed, PASS);
        expect(&mut b, Side::ToPod, DS_IF, &denied, DENIED);
    }
    expect(&mut b, Side::ToPod, DS_IF, &world, DENIED);
    // The other port of an allowed peer is denied too.
    expect(&mut b, Side::ToPod, DS_IF, &tcp(TF, 40003, DS, 81), DENIED);

    let maps = b.maps().unwrap();
    let len = allowed.len() as u64;
    assert_eq!(counted(&maps, DS_EP, TF_ID, "80/TCP"), (3, 3 * len));
    assert_eq!(metric(&maps, DS_EP, REASON_FORWARDED, 1), (3, 3 * len));
    assert_eq!(metric(&maps, DS_EP, REASON_POLICY_DENIED, 1), (5, 5 * len));
    assert_eq!(maps.stats().unwrap()[stat::CT_CREATED as usize], 4);

    // One event per connection, not per packet: 4 connections.
    let ev = events(&b);
    let got: Vec<(u32, u16, u8, u8, u32)> = ev
        .iter()
        .map(|e| {
            (
                e.saddr,
                u16::from_be(e.dport),
                e.reason,
                e.match_type,
                e.remote_identity,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (ne(TF), 80, REASON_FORWARDED, MATCH_L3_L4, TF_ID),
            (ne(XW), 80, REASON_POLICY_DENIED, MATCH_NONE, XW_ID),
            (ne(WORLD), 80, REASON_POLICY_DENIED, MATCH_NONE, 2),
            (ne(TF), 81, REASON_POLICY_DENIED, MATCH_NONE, TF_ID),
        ]
    );
    assert!(
        ev.iter()
            .all(|e| e.endpoint == DS_EP && e.local_identity == DS_ID && e.dir == 1)
    );
    // The endpoint enforces its ingress (Cilium notifies only such a
    // direction), and each first packet was a SYN.
    assert!(
        ev.iter()
            .all(|e| e.flags == lab_common::policy::EVENT_ENFORCED && e.tcp_flags == 0x02),
        "{ev:?}"
    );
    assert_eq!(maps.stats().unwrap()[stat::EVENTS_LOST as usize], 0);
}

#[test]
fn a_deny_wins_over_allow_all_and_over_its_own_identity_s_ports() {
    if !common::privileged("policy programs under BPF_PROG_TEST_RUN") {
        return;
    }
    use Direction::{Egress, Ingress};
    let ds = [
        // Allow everyone, deny the xwing (ingressDeny).
        entry(Ingress, 0, Protocol::Any, None, None, false),
        entry(Ingress, XW_ID, Protocol::Any, None, None, true),
        // An allow of the tiefighter's port 80 under a deny of its TCP.
        entry(Ingress, TF_ID, Protocol::Tcp, Some(80), None, false),
        entry(Ingress, TF_ID, Protocol::Tcp, None, None, true),
    ];
    let tf = [
        // The tiefighter may reach the deathstar, but no one on port 22.
        entry(Egress, DS_ID, Protocol::Any, None, None, false),
        entry(Egress, 0, Protocol::Tcp, Some(22), None, true),
    ];
    let mut b = bench(EP_INGRESS_DEFAULT_DENY, &ds, EP_EGRESS_DEFAULT_DENY, &tf);
    expect(&mut b, Side::ToPod, DS_IF, &tcp(XW, 40000, DS, 80), DENY);
    expect(&mut b, Side::ToPod, DS_IF, &udp(XW, 40000, DS, 53), DENY);
    expect(&mut b, Side::ToPod, DS_IF, &tcp(WORLD, 40000, DS, 80), PASS);
    expect(&mut b, Side::ToPod, DS_IF, &tcp(TF, 40000, DS, 80), DENY);
    expect(&mut b, Side::ToPod, DS_IF, &udp(TF, 40000, DS, 80), PASS);
    expect(&mut b, Side::FromPod, TF_IF, &tcp(TF, 40001, DS, 22), DENY);
    expect(&mut b, Side::FromPod, TF_IF, &tcp(TF, 40001, DS, 23), PASS);
    expect(
        &mut b,
        Side::FromPod,
        TF_IF,
        &tcp(TF, 40001, XW, 23),
        DENIED,
    );

    let maps = b.maps().unwrap();
    assert_eq!(counted(&maps, DS_EP, XW_ID, "ANY").0, 2);
    assert_eq!(counted(&maps, DS_EP, 0, "ANY").0, 2);
    assert_eq!(counted(&maps, DS_EP, TF_ID, "TCP").0, 1);
    assert_eq!(counted(&maps, TF_EP, 0, "22/TCP").0, 1);
    assert_eq!(counted(&maps, TF_EP, DS_ID, "ANY").0, 1);
    let reasons: Vec<u8> = events(&b).iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [
            REASON_POLICY_DENY,
            REASON_POLICY_DENY,
            REASON_FORWARDED,
            REASON_POLICY_DENY,
            REASON_FORWARDED,
            REASON_POLICY_DENY,
            REASON_FORWARDED,
            REASON_POLICY_DENIED
        ],
        "one event per connection"
    );
}

#[test]
fn port_ranges_and_protocol_wildcards_match_by_longest_prefix() {
    if !common::privileged("policy programs under BPF_PROG_TEST_RUN") {
        return;
    }
    use Direction::Ingress;
    let ds = [
        entry(Ingress, TF_ID, Protocol::Tcp, Some(8080), Some(8083), false),
        entry(Ingress, XW_ID, Protocol::Udp, None, None, false),
    ];
    let mut b = bench(EP_INGRESS_DEFAULT_DENY, &ds, 0, &[]);
    for port in 8078..=8085 {
        let want = if (8080..=8083).contains(&port) {
            PASS
        } else {
            DENIED
        };
        expect(&mut b, Side::ToPod, DS_IF, &tcp(TF, 40000, DS, port), want);
    }
    expect(&mut b, Side::ToPod, DS_IF, &udp(XW, 40000, DS, 5353), PASS);
    expect(&mut b, Side::ToPod, DS_IF, &udp(XW, 40000, DS, 53), PASS);
    expect(
        &mut b,
        Side::ToPod,
        DS_IF,
        &tcp(XW, 40000, DS, 5353),
        DENIED,
    );
    let maps = b.maps().unwrap();
    assert_eq!(counted(&maps, DS_EP, TF_ID, "8080-8083/TCP").0, 4);
    assert_eq!(counted(&maps, DS_EP, XW_ID, "UDP").0, 2);
}

#[test]
fn replies_pass_through_the_ct_and_new_connections_the_other_way_are_judged() {
    if !common::privileged("policy programs under BPF_PROG_TEST_RUN") {
        return;
    }
    use Direction::Ingress;
    let ds = [
        entry(Ingress, TF_ID, Protocol::Tcp, Some(80), None, false),
        entry(Ingress, XW_ID, Protocol::Any, None, None, false),
    ];
    // The deathstar enforces both directions and allows no egress.
    let both = EP_INGRESS_DEFAULT_DENY | EP_EGRESS_DEFAULT_DENY;
    let mut b = bench(both, &ds, 0, &[]);
    let syn = tcp(TF, 40000, DS, 80);
    let reply = tcp(DS, 80, TF, 40000);
    expect(&mut b, Side::ToPod, DS_IF, &syn, PASS);
    for _ in 0..2 {
        expect(&mut b, Side::FromPod, DS_IF, &reply, PASS);
    }
    // Not a reply: another port, and a connection the deathstar opens.
    expect(
        &mut b,
        Side::FromPod,
        DS_IF,
        &tcp(DS, 81, TF, 40000),
        DENIED,
    );
    expect(
        &mut b,
        Side::FromPod,
        DS_IF,
        &tcp(DS, 40000, TF, 80),
        DENIED,
    );
    // A reply of a denied connection is judged, and denied.
    expect(&mut b, Side::ToPod, DS_IF, &tcp(TF, 40001, DS, 81), DENIED);
    expect(
        &mut b,
        Side::FromPod,
        DS_IF,
        &tcp(DS, 81, TF, 40001),
        DENIED,
    );

    // ICMP: no L3-only rule for the tiefighter, so no ping; the xwing's
    // ping passes, and its echo reply goes back through the CT.
    expect(&mut b, Side::ToPod, DS_IF, &ping(TF, DS, 7, false), DENIED);
    expect(&mut b, Side::ToPod, DS_IF, &ping(XW, DS, 8, false), PASS);
    expect(&mut b, Side::FromPod, DS_IF, &ping(DS, XW, 8, true), PASS);
    expect(&mut b, Side::FromPod, DS_IF, &ping(DS, XW, 9, true), DENIED);
    // An ICMP verdict carries the type (8: echo request) where a TCP one
    // carries the flags.
    let pings: Vec<u8> = events(&b)
        .iter()
        .filter(|e| e.proto == 1 && e.dir == 1)
        .map(|e| e.tcp_flags)
        .collect();
    assert_eq!(pings, [8, 8], "the two pings' verdicts");

    let maps = b.maps().unwrap();
    let ct = maps.ct_rows().unwrap();
    let (_, e) = ct
        .iter()
        .find(|(k, _)| k.saddr == ne(TF) && u16::from_be(k.dport) == 80)
        .unwrap();
    assert_eq!(
        (e.packets, e.reply_packets, e.reason),
        (1, 2, REASON_FORWARDED)
    );
    assert_eq!(counted(&maps, DS_EP, TF_ID, "80/TCP").0, 1);
    assert_eq!(metric(&maps, DS_EP, REASON_FORWARDED, 2).0, 3);
    assert_eq!(metric(&maps, DS_EP, REASON_POLICY_DENIED, 2).0, 4);
}

#[test]
fn a_veth_that_is_no_endpoint_and_non_ip_frames_pass() {
    if !common::privileged("policy programs under BPF_PROG_TEST_RUN") {
        return;
    }
    let mut b = bench(
        EP_INGRESS_DEFAULT_DENY | EP_EGRESS_DEFAULT_DENY,
        &[],
        0,
        &[],
    );
    expect(&mut b, Side::ToPod, DS_IF, &tcp(XW, 1, DS, 80), DENIED);
    expect(&mut b, Side::ToPod, 999, &tcp(XW, 1, DS, 80), PASS);
    expect(&mut b, Side::FromPod, 999, &tcp(DS, 80, XW, 1), PASS);
    // ARP on an enforcing endpoint.
    let mut arp = vec![0xffu8; 6];
    arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend([0u8; 28]);
    expect(&mut b, Side::ToPod, DS_IF, &arp, PASS);
    assert_eq!(events(&b).len(), 1);
}

mod agreement {
    //! The programs against the evaluator (Cilium's reading): for policy
    //! sets covering the semantics, every pod to every pod on TCP 80 and
    //! 8080, UDP and TCP 53, each node's maps written by the datapath's own
    //! code (`policy::bpf::node_rows`), the source's egress run on its node,
    //! then the destination's ingress on its node.

    use lab_cli::policy::{
        Cluster, Evaluator, Flavor, Party, Query,
        bpf::{NodeRows, Plugged, node_rows, view},
        datapath::Want,
        eval::{Namespace, Node, Pod},
        identity::Identities,
        yaml::parse,
    };

    use super::*;

    fn pod(name: &str, ns: &str, labels: &[(&str, &str)], node: u8, last: u8) -> Pod {
        Pod {
            name: format!("lab/{name}"),
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            addr: Ipv4Addr::new(10, 244, node, last),
            node: format!("node{node}"),
            service_account: "default".into(),
        }
    }

    fn starwars() -> Cluster {
        let ds = [("org", "empire"), ("class", "deathstar")];
        Cluster {
            namespaces: vec![Namespace::named("default"), Namespace::named("kube-system")],
            pods: vec![
                pod("deathstar-1", "default", &ds, 1, 2),
                pod(
                    "tiefighter",
                    "default",
                    &[("org", "empire"), ("class", "tiefighter")],
                    1,
                    3,
                ),
                pod("deathstar-2", "default", &ds, 2, 2),
                pod(
                    "xwing",
                    "default",
                    &[("org", "alliance"), ("class", "xwing")],
                    2,
                    3,
                ),
                pod("coredns", "kube-system", &[("k8s-app", "kube-dns")], 2, 4),
            ],
            nodes: (1..=2)
                .map(|n| Node {
                    name: format!("node{n}"),
                    addr: Ipv4Addr::new(172, 18, 0, n + 1),
                })
                .collect(),
        }
    }

    const SETS: &[(&str, &str)] = &[
        (
            "rule1",
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1}
spec:
  endpointSelector: {matchLabels: {org: empire, class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]
",
        ),
        (
            "default deny in default, DNS from kube-system",
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-kube-system, namespace: default}
spec:
  podSelector: {matchLabels: {class: deathstar}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
",
        ),
        (
            "xwing egress: DNS only",
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns-only}
spec:
  endpointSelector: {matchLabels: {class: xwing}}
  egress:
  - toEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}
    toPorts: [{ports: [{port: \"53\", protocol: ANY}]}]
",
        ),
        (
            "allow all, deny the alliance",
            "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-rebels}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {org: alliance}}]
",
        ),
        (
            "a port range, and egress default deny",
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: default}
spec:
  podSelector: {matchLabels: {class: deathstar}}
  ingress:
  - from: [{podSelector: {matchLabels: {class: tiefighter}}}]
    ports: [{port: 50, endPort: 100, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tiefighter-quiet, namespace: default}
spec:
  podSelector: {matchLabels: {class: tiefighter}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {class: deathstar}}}]
    ports: [{port: 80, protocol: TCP}]
",
        ),
    ];

    /// One bench per node, written as the datapath writes a node.
    fn benches(cluster: &Cluster, want: &Want<'_>) -> Vec<TestBench> {
        let v = view(want);
        (1..=2)
            .map(|n| {
                let node = format!("node{n}");
                let plugged: Vec<Plugged> = cluster
                    .pods
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.node == node)
                    .map(|(i, p)| Plugged {
                        name: p.name.clone(),
                        addr: p.addr,
                        ifindex: 10 + i as u32,
                    })
                    .collect();
                let rows = node_rows(&v, want, &node, &plugged, &[]);
                let bench = TestBench::load().unwrap();
                let mut maps = bench.maps().unwrap();
                for op in NodeRows::default().diff(&rows) {
                    op.write(&mut maps).unwrap();
                }
                bench
            })
            .collect()
    }

    #[test]
    fn the_programs_agree_with_the_evaluator() {
        if !common::privileged("policy programs under BPF_PROG_TEST_RUN") {
            return;
        }
        let cluster = starwars();
        let (ids, _) = cluster.identities(&Identities::default());
        let mut sport = 20000u16;
        for (what, yaml) in SETS {
            let policies = parse("set.yaml", yaml).unwrap();
            let want = Want {
                cluster: &cluster,
                identities: &ids,
                policies: &policies,
            };
            let mut benches = benches(&cluster, &want);
            let eval = Evaluator::new(&cluster, ids.clone(), &policies, Flavor::Cilium);
            let (mut checked, mut drops) = (0, 0);
            for (a, pa) in cluster.pods.iter().enumerate() {
                for (b, pb) in cluster.pods.iter().enumerate() {
                    if a == b {
                        continue;
                    }
                    for (proto, port) in [
                        (Protocol::Tcp, 80),
                        (Protocol::Tcp, 8080),
                        (Protocol::Udp, 53),
                        (Protocol::Tcp, 53),
                    ] {
                        sport += 1;
                        let frame = match proto {
                            Protocol::Udp => udp(pa.addr, sport, pb.addr, port),
                            _ => tcp(pa.addr, sport, pb.addr, port),
                        };
                        let node = |p: &Pod| usize::from(p.node == "node2");
                        let run = |bench: &mut TestBench, side, i: usize| {
                            let out = bench.run(side, 10 + i as u32, &frame).unwrap();
                            match out.verdict {
                                TC_ACT_SHOT => Some(match verdict::decode(out.mark) {
                                    Some((_, true)) => 181u8,
                                    Some((_, false)) => 133,
                                    None => panic!("dropped without a policy mark"),
                                }),
                                _ => None,
                            }
                        };
                        let dropped = run(&mut benches[node(pa)], Side::FromPod, a)
                            .or_else(|| run(&mut benches[node(pb)], Side::ToPod, b));
                        let v = eval.evaluate(&Query {
                            from: Party::Pod(a),
                            to: Party::Pod(b),
                            port,
                            protocol: proto,
                        });
                        assert_eq!(
                            dropped,
                            v.drop_reason.map(|r| r.code()),
                            "{what}: {} -> {} {port}/{}",
                            pa.name,
                            pb.name,
                            proto.lower()
                        );
                        checked += 1;
                        drops += usize::from(dropped.is_some());
                    }
                }
            }
            assert_eq!(checked, 5 * 4 * 4);
            assert!(
                0 < drops && drops < checked,
                "{what}: {drops} of {checked} dropped"
            );
        }
    }
}
