//! Privileged: `labctl masq` on the lab fixture, against the kernel's own
//! records (conntrack accounting, the MASQUERADE rule's counter).

mod common;

use std::{collections::BTreeMap, net::Ipv4Addr, thread, time::Duration};

use lab_cli::{
    ebpf::masq_counter::MasqCounter,
    kernel::{ctnetlink::Ctnetlink, sysctl},
    lab::{
        Lab, firewall,
        traffic::{self, Proto, TrafficSpec},
    },
};

fn send(lab: &Lab, from: &str, proto: Proto, count: u32) {
    let spec = TrafficSpec {
        proto,
        count,
        ..TrafficSpec::default()
    };
    let (a, w) = (lab.endpoint(from).unwrap(), lab.endpoint("world").unwrap());
    let r = traffic::run(&a, &w, &spec).unwrap();
    assert!(r.all_answered(), "{}", r.text());
}

#[test]
fn the_counter_agrees_with_conntrack_and_the_masquerade_rule() {
    if !common::privileged("the_counter_agrees_with_conntrack_and_the_masquerade_rule") {
        return;
    }
    let lab = common::lab("basic", "msq");
    let node = lab.netns("node1").unwrap();
    node.run(|| sysctl::write(&["net", "netfilter", "nf_conntrack_acct"], "1"))
        .unwrap()
        .unwrap();
    let counter = MasqCounter::attach(&node, "eth0").unwrap();
    // pod-a: 3 TCP connections, two UDP flows, one ping flow; pod-b: 2 TCP
    // connections and one UDP flow.
    send(&lab, "pod-a", Proto::Tcp, 3);
    send(&lab, "pod-a", Proto::Udp, 4);
    send(&lab, "pod-a", Proto::Udp, 2);
    send(&lab, "pod-a", Proto::Icmp, 3);
    send(&lab, "pod-b", Proto::Tcp, 2);
    send(&lab, "pod-b", Proto::Udp, 5);
    thread::sleep(Duration::from_millis(300));
    let rows = counter.rows().unwrap();
    let table = Ctnetlink::open_in(Some(&node)).unwrap().dump(None).unwrap();
    let nat = |pod: Ipv4Addr| -> Vec<_> {
        table
            .iter()
            .filter(|e| e.is_snat() && e.orig.src == std::net::IpAddr::V4(pod))
            .collect()
    };
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let expected_conns = BTreeMap::from([("pod-a", 6), ("pod-b", 3)]);
    for (pod, conns) in expected_conns {
        let addr = lab.endpoint(pod).unwrap().addr;
        let row = rows.iter().find(|r| r.pod == addr).unwrap();
        let entries = nat(addr);
        assert_eq!(row.node, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(row.connections, conns, "{pod}");
        assert_eq!(entries.len() as u64, conns, "{pod}: conntrack --src-nat");
        let sum = |f: fn(&lab_cli::conntrack::entry::CtEntry) -> u64| -> u64 {
            entries.iter().map(|e| f(e)).sum()
        };
        assert_eq!(
            row.packets_out,
            sum(|e| e.orig_counters.unwrap().packets),
            "{pod}"
        );
        assert_eq!(
            row.packets_in,
            sum(|e| e.reply_counters.unwrap().packets),
            "{pod}"
        );
        assert_eq!(
            row.bytes_out,
            sum(|e| e.orig_counters.unwrap().bytes),
            "{pod}"
        );
        assert_eq!(
            row.bytes_in,
            sum(|e| e.reply_counters.unwrap().bytes),
            "{pod}"
        );
        // The translated ports are the reply tuples' destination ports.
        let ports: Vec<u16> = entries.iter().filter_map(|e| e.reply.dport).collect();
        assert_eq!(row.port_min, ports.iter().min().copied(), "{pod}");
        assert_eq!(row.port_max, ports.iter().max().copied(), "{pod}");
    }
    // The MASQUERADE rule is evaluated once per new connection.
    let rules = firewall::list(&node).unwrap();
    let total: u64 = rows.iter().map(|r| r.connections).sum();
    assert_eq!(firewall::masquerade_packets(&rules), Some(total));
}
