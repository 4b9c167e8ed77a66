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
use lab_common::nat::NatConfig;

const TC_ACT_UNSPEC: i32 = -1;
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
    const TC_ACT_SHOT: i32 = 2;
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
