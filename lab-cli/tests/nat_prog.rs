//! The tc programs under BPF_PROG_TEST_RUN: eBPF masquerading
//! (`nat_egress` / `nat_ingress`) and the service load balancer
//! (`lb_from_pod` / `lb_to_pod`), loaded on their own; frames built here
//! and checked field by field, checksums recomputed from scratch
//! (etherparse). The live, end-to-end behaviour is in `masq.rs` and
//! `services.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::net::Ipv4Addr;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use lab_cli::ebpf::nat::{Direction, TestBench};
use lab_common::nat::{NatConfig, stat};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_SHOT: i32 = 2;
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const WORLD: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn config() -> NatConfig {
    NatConfig {
        node_addr: u32::from_ne_bytes(NODE.octets()),
        cluster_net: u32::from_ne_bytes([10, 244, 0, 0]),
        cluster_mask: u32::from_ne_bytes([255, 255, 0, 0]),
        ..NatConfig::DEFAULT
    }
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp,
    Udp,
}

fn frame(l4: L4, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
        src.octets(),
        dst.octets(),
        64,
    );
    let payload = b"labctl nat test payload";
    let mut out = Vec::new();
    match l4 {
        L4::Tcp => b
            .tcp(sport, dport, 1000, 64240)
            .ack(1)
            .psh()
            .write(&mut out, payload),
        L4::Udp => b.udp(sport, dport).write(&mut out, payload),
    }
    .unwrap();
    out
}

/// The frame's 4-tuple, with every checksum verified.
fn tuple(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IP checksum");
    let payload = h.payload.slice();
    let (sport, dport) = match h.transport.as_ref().unwrap() {
        TransportHeader::Tcp(t) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(ip, payload).unwrap(),
                "TCP checksum"
            );
            (t.source_port, t.destination_port)
        }
        TransportHeader::Udp(u) => {
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(ip, payload).unwrap(),
                "UDP checksum"
            );
            (u.source_port, u.destination_port)
        }
        other => panic!("unexpected {other:?}"),
    };
    (ip.source.into(), sport, ip.destination.into(), dport)
}

#[test]
fn egress_masquerades_and_ingress_reverses_with_valid_checksums() {
    if !common::privileged("nat programs under BPF_PROG_TEST_RUN") {
        return;
    }
    let mut bench = TestBench::load(&config()).unwrap();
    for (l4, sport) in [(L4::Tcp, 40000), (L4::Udp, 50000)] {
        let out = bench
            .run(Direction::Egress, &frame(l4, POD, sport, WORLD, 5001), 1)
            .unwrap();
        assert_eq!(out.verdict, TC_ACT_UNSPEC);
        // The pod's own port is kept when it is in the range and free.
        assert_eq!(tuple(&out.frame), (NODE, sport, WORLD, 5001));

        // The same flow again: the same mapping.
        let again = bench
            .run(Direction::Egress, &frame(l4, POD, sport, WORLD, 5001), 1)
            .unwrap();
        assert_eq!(again.frame, out.frame);

        // The reply comes back to the pod.
        let back = bench
            .run(Direction::Ingress, &frame(l4, WORLD, 5001, NODE, sport), 1)
            .unwrap();
        assert_eq!(back.verdict, TC_ACT_UNSPEC);
        assert_eq!(tuple(&back.frame), (WORLD, 5001, POD, sport));
    }
    // A second pod with the same source port gets another port.
    let other = Ipv4Addr::new(10, 244, 1, 3);
    let out = bench
        .run(
            Direction::Egress,
            &frame(L4::Tcp, other, 40000, WORLD, 5001),
            1,
        )
        .unwrap();
    let (src, port, _, _) = tuple(&out.frame);
    assert_eq!(src, NODE);
    assert_ne!(port, 40000);
    assert!((32768..=60999).contains(&port), "{port}");
    let back = bench
        .run(
            Direction::Ingress,
            &frame(L4::Tcp, WORLD, 5001, NODE, port),
            1,
        )
        .unwrap();
    assert_eq!(tuple(&back.frame), (WORLD, 5001, other, 40000));
    assert_eq!(bench.table().unwrap().len(), 3);

    // Not translated: cluster-internal traffic, and replies to no mapping.
    let internal = frame(L4::Tcp, POD, 40001, Ipv4Addr::new(10, 244, 2, 2), 80);
    assert_eq!(
        bench.run(Direction::Egress, &internal, 1).unwrap().frame,
        internal
    );
    let stray = frame(L4::Tcp, WORLD, 5001, NODE, 45678);
    assert_eq!(
        bench.run(Direction::Ingress, &stray, 1).unwrap().frame,
        stray
    );
}

/// A TCP SYN (a new connection).
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .write(&mut out, &[])
        .unwrap();
    out
}

#[test]
fn the_load_balancer_translates_a_flow_to_one_backend_and_back() {
    use lab_cli::{
        ebpf::lb::{Side, TestBench as LbBench},
        services::{self, Endpoint, Frontend},
    };
    if !common::privileged("lb programs under BPF_PROG_TEST_RUN") {
        return;
    }
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let empty = Ipv4Addr::new(10, 96, 0, 11);
    let client = Ipv4Addr::new(10, 244, 1, 2);
    let backends: Vec<Ipv4Addr> = [3, 4, 5].map(|h| Ipv4Addr::new(10, 244, 1, h)).to_vec();
    let mut bench = LbBench::load().unwrap();
    let front = |vip, proto, backends: &[Ipv4Addr]| Frontend {
        namespace: "t".into(),
        service: "web".into(),
        vip,
        port: 80,
        proto,
        backends: backends
            .iter()
            .map(|a| Endpoint {
                addr: *a,
                port: 8080,
            })
            .collect(),
    };
    let mut maps = bench.maps().unwrap();
    services::ebpf::sync(
        &mut maps,
        &[
            front(vip, services::L4::Tcp, &backends),
            front(vip, services::L4::Udp, &backends),
            front(empty, services::L4::Tcp, &[]),
        ],
    )
    .unwrap();

    // A new TCP connection goes to one of the backends, checksums intact;
    // its next packets follow, and replies come back from the VIP.
    let (verdict, out) = bench
        .run(Side::FromPod, &syn(client, 40000, vip, 80))
        .unwrap();
    assert_eq!(verdict, TC_ACT_UNSPEC);
    let (src, sport, to, dport) = tuple(&out);
    assert_eq!((src, sport, dport), (client, 40000, 8080));
    assert!(backends.contains(&to), "{to}");
    for _ in 0..5 {
        let (_, next) = bench
            .run(Side::FromPod, &frame(L4::Tcp, client, 40000, vip, 80))
            .unwrap();
        assert_eq!(tuple(&next), (client, 40000, to, 8080));
    }
    let (verdict, back) = bench
        .run(Side::ToPod, &frame(L4::Tcp, to, 8080, client, 40000))
        .unwrap();
    assert_eq!(verdict, TC_ACT_UNSPEC);
    assert_eq!(tuple(&back), (vip, 80, client, 40000));

    // New connections spread over all three backends.
    let mut seen = std::collections::BTreeSet::new();
    for port in 41000..41060 {
        let (_, out) = bench
            .run(Side::FromPod, &syn(client, port, vip, 80))
            .unwrap();
        seen.insert(tuple(&out).2);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // UDP the same way.
    let (_, out) = bench
        .run(Side::FromPod, &frame(L4::Udp, client, 50000, vip, 80))
        .unwrap();
    let (_, _, to, dport) = tuple(&out);
    assert!(backends.contains(&to) && dport == 8080);
    let (_, back) = bench
        .run(Side::ToPod, &frame(L4::Udp, to, 8080, client, 50000))
        .unwrap();
    assert_eq!(tuple(&back), (vip, 80, client, 50000));

    // Untouched: other destinations, and replies of no translated flow.
    let other = frame(L4::Tcp, client, 40001, backends[0], 8080);
    assert_eq!(
        bench.run(Side::FromPod, &other).unwrap(),
        (TC_ACT_UNSPEC, other)
    );
    let stray = frame(L4::Tcp, backends[1], 8080, client, 49999);
    assert_eq!(
        bench.run(Side::ToPod, &stray).unwrap(),
        (TC_ACT_UNSPEC, stray)
    );
    // A service without endpoints drops new connections (DROP_NO_SERVICE).
    let (verdict, _) = bench
        .run(Side::FromPod, &syn(client, 40002, empty, 80))
        .unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
}

/// A TCP segment with the flags `flags` sets (etherparse's builder: `syn()`,
/// `fin()`, `ack(n)`), no payload.
fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: impl FnOnce(
        etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    ) -> etherparse::PacketBuilderStep<etherparse::TcpHeader>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64240);
    flags(b).write(&mut out, &[]).unwrap();
    out
}

/// A TCP connection pod -> `dst`:443 from `sport` opened both ways (SYN
/// out, SYN-ACK back); its translated port.
fn open(bench: &mut TestBench, sport: u16, dst: Ipv4Addr) -> u16 {
    let out = bench
        .run(Direction::Egress, &syn(POD, sport, dst, 443), 1)
        .unwrap();
    assert_eq!(out.verdict, TC_ACT_UNSPEC);
    let (src, port, _, _) = tuple(&out.frame);
    assert_eq!(src, NODE);
    let back = bench
        .run(
            Direction::Ingress,
            &tcp(dst, 443, NODE, port, |b| b.syn().ack(1)),
            1,
        )
        .unwrap();
    assert_eq!(tuple(&back.frame), (dst, 443, POD, sport));
    port
}

/// Whether the connection from `sport` still translates to `port` both
/// ways (a data segment out, one back).
fn still_mapped(bench: &mut TestBench, sport: u16, dst: Ipv4Addr, port: u16) -> (bool, bool) {
    let out = bench
        .run(Direction::Egress, &frame(L4::Tcp, POD, sport, dst, 443), 1)
        .unwrap();
    let back = bench
        .run(Direction::Ingress, &frame(L4::Tcp, dst, 443, NODE, port), 1)
        .unwrap();
    (
        out.verdict == TC_ACT_UNSPEC && tuple(&out.frame) == (NODE, port, dst, 443),
        tuple(&back.frame) == (dst, 443, POD, sport),
    )
}

/// A UDP datagram of a new flow (number `n`) from another pod: its verdict.
fn short_flow(bench: &mut TestBench, n: u32) -> i32 {
    let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + n / 60_000);
    let out = bench
        .run(
            Direction::Egress,
            &frame(
                L4::Udp,
                Ipv4Addr::new(10, 244, 1, 9),
                5353,
                dst,
                1 + (n % 60_000) as u16,
            ),
            1,
        )
        .unwrap();
    assert!(
        [TC_ACT_UNSPEC, TC_ACT_SHOT].contains(&out.verdict),
        "{}",
        out.verdict
    );
    out.verdict
}

/// Long-lived TCP connections (opened both ways, then idle while two
/// tables' worth of new flows come, then used again, round after round)
/// keep their translated port and get their replies: the NAT never evicts
/// a live mapping nor gives a live flow a new port. The new flows (UDP,
/// live for 30 s) fill what is left of the table, and the rest are
/// refused and counted, each one. The held connections' pod ports are
/// outside the NAT range, so each got a random port and a re-made mapping
/// would show as another port. (With the LRU maps this replaced, every
/// held packet of every round came out with a new port.)
#[test]
fn a_live_mapping_is_never_evicted_while_short_flows_churn() {
    if !common::privileged("nat programs under BPF_PROG_TEST_RUN") {
        return;
    }
    const CAPACITY: u32 = 1024;
    const HELD: u16 = 64;
    const ROUNDS: u32 = 8;
    let mut bench = TestBench::load_sized(&config(), CAPACITY).unwrap();
    let held: Vec<(u16, u16)> = (0..HELD)
        .map(|i| (1000 + i, open(&mut bench, 1000 + i, WORLD)))
        .collect();
    let (mut remapped, mut lost_replies, mut translated, mut refused) = (0, 0, 0u64, 0u64);
    let mut n = 0;
    for _ in 0..ROUNDS {
        for _ in 0..2 * CAPACITY {
            match short_flow(&mut bench, n) {
                TC_ACT_UNSPEC => translated += 1,
                _ => refused += 1,
            }
            n += 1;
        }
        for &(sport, port) in &held {
            let (out, back) = still_mapped(&mut bench, sport, WORLD, port);
            remapped += u32::from(!out);
            lost_replies += u32::from(!back);
        }
    }
    let stats = bench.stats().unwrap();
    assert_eq!(
        (remapped, lost_replies),
        (0, 0),
        "of {HELD} held connections' packets over {ROUNDS} rounds: {remapped} went out with another port, {lost_replies} replies were not translated back; counters {stats:?}"
    );
    // The table holds exactly its capacity; every refused packet is
    // counted, and nothing was reclaimed (everything is live).
    assert_eq!(translated, u64::from(CAPACITY - u32::from(HELD)));
    assert_eq!(refused, u64::from(ROUNDS * 2 * CAPACITY) - translated);
    assert_eq!(stats[stat::TABLE_FULL as usize], refused, "{stats:?}");
    assert_eq!(stats[stat::RECLAIMED as usize], 0, "{stats:?}");
    assert_eq!(
        stats[stat::ALLOCATED as usize],
        u64::from(CAPACITY),
        "{stats:?}"
    );
    assert!(stats[stat::SWEEPS as usize] >= 1, "{stats:?}");
}

/// A full table makes room from mappings that are over (UDP flows past
/// their timeout, TCP connections closed both ways and idle for a second),
/// never from live ones: open connections, and a closed connection's ports
/// opened again by a new SYN, keep their mappings through the sweep.
#[test]
fn a_full_table_reclaims_only_expired_and_closed_mappings() {
    if !common::privileged("nat programs under BPF_PROG_TEST_RUN") {
        return;
    }
    const CAPACITY: u32 = 256;
    const HELD: u16 = 16;
    const CLOSED: u16 = 120;
    let cfg = NatConfig {
        udp_timeout_s: 1,
        ..config()
    };
    let mut bench = TestBench::load_sized(&cfg, CAPACITY).unwrap();
    let held: Vec<(u16, u16)> = (0..HELD)
        .map(|i| (1000 + i, open(&mut bench, 1000 + i, WORLD)))
        .collect();
    // Connections closed both ways (FIN out, FIN back).
    let far = Ipv4Addr::new(192, 0, 2, 1);
    let mut closed = Vec::new();
    for i in 0..CLOSED {
        let sport = 2000 + i;
        let port = open(&mut bench, sport, far);
        for (dir, f) in [
            (
                Direction::Egress,
                tcp(POD, sport, far, 443, |b| b.fin().ack(1)),
            ),
            (
                Direction::Ingress,
                tcp(far, 443, NODE, port, |b| b.fin().ack(1)),
            ),
        ] {
            assert_eq!(bench.run(dir, &f, 1).unwrap().verdict, TC_ACT_UNSPEC);
        }
        closed.push((sport, port));
    }
    // The ports of the first closed one opened again (a new SYN, as a
    // client reusing its port does): a live connection again.
    let (reopened, reopened_port) = closed[0];
    assert_eq!(open(&mut bench, reopened, far), reopened_port);
    // UDP flows fill the rest.
    let mut n = 0;
    let udp = CAPACITY - u32::from(HELD + CLOSED);
    for _ in 0..udp {
        assert_eq!(short_flow(&mut bench, n), TC_ACT_UNSPEC);
        n += 1;
    }
    // Full: nothing is over yet (the UDP flows are live for a second, the
    // closed connections not idle for one), so a new flow is refused...
    assert_eq!(short_flow(&mut bench, n), TC_ACT_SHOT);
    n += 1;
    let mut refused = 1;
    // ... until they are.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while short_flow(&mut bench, n) == TC_ACT_SHOT {
        n += 1;
        refused += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "nothing reclaimed: {:?}",
            bench.stats().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    n += 1;
    // New flows take the place of every UDP flow and every closed
    // connection but the reopened one (a sweep frees at most a sixteenth
    // of the table, the next full table sweeps again), then are refused.
    let reclaimable = udp + u32::from(CLOSED) - 1;
    let mut accepted = 1;
    while short_flow(&mut bench, n) == TC_ACT_UNSPEC {
        n += 1;
        accepted += 1;
        assert!(accepted <= reclaimable, "a live mapping was reclaimed");
    }
    refused += 1;
    let stats = bench.stats().unwrap();
    assert_eq!(accepted, reclaimable, "{stats:?}");
    assert_eq!(stats[stat::TABLE_FULL as usize], refused, "{stats:?}");
    assert_eq!(
        stats[stat::RECLAIMED as usize],
        u64::from(reclaimable),
        "{stats:?}"
    );
    assert!(
        stats[stat::SWEEPS as usize] >= u64::from(reclaimable.div_ceil(CAPACITY / 16)),
        "{stats:?}"
    );
    let live = held
        .iter()
        .map(|&(sport, port)| (sport, WORLD, port))
        .chain([(reopened, far, reopened_port)]);
    for (sport, dst, port) in live {
        assert_eq!(
            still_mapped(&mut bench, sport, dst, port),
            (true, true),
            "connection from port {sport}"
        );
    }
    assert_eq!(bench.table().unwrap().len(), CAPACITY as usize);
}
