//! The eBPF masquerading programs under BPF_PROG_TEST_RUN: frames built
//! here, run through `nat_egress` / `nat_ingress` loaded on their own, and
//! checked field by field, checksums recomputed from scratch (etherparse).
//! The live, end-to-end behaviour is in `masq.rs`.

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
