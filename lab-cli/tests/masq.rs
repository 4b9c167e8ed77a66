//! Privileged: `labctl masq` on the lab fixture, against the kernel's own
//! records (conntrack accounting, the MASQUERADE rule's counter).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    conntrack::netlink::Ctnetlink,
    kernel::sysctl,
    lab::{
        Lab, firewall,
        traffic::{self, Proto, TrafficSpec},
    },
    masq::MasqCounter,
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
    // The last packets of a flow (a TCP FIN's ACK) may still be on their
    // way: read both views until they agree on the packet counts, or 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (rows, table) = loop {
        let rows = counter.rows().unwrap();
        let table = Ctnetlink::open_in(Some(&node)).unwrap().dump(None).unwrap();
        let agree = rows.iter().all(|r| {
            let (out, inn) = table
                .iter()
                .filter(|e| e.is_snat() && e.orig.src == std::net::IpAddr::V4(r.pod))
                .fold((0, 0), |(o, i), e| {
                    (
                        o + e.orig_counters.map_or(0, |c| c.packets),
                        i + e.reply_counters.map_or(0, |c| c.packets),
                    )
                });
            (r.packets_out, r.packets_in) == (out, inn)
        });
        if (agree && rows.len() == 2) || Instant::now() > deadline {
            break (rows, table);
        }
        thread::sleep(Duration::from_millis(10));
    };
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

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream},
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use lab_cli::{
    ebpf::tc::TcAttach,
    kernel::netns::NetNs,
    lab::plan::{LabOptions, MasqMode},
    masq::nat,
};

fn ebpf_lab(tag: &str, options: LabOptions) -> common::TestLab {
    common::lab_with(
        "basic",
        tag,
        LabOptions {
            masq: MasqMode::Ebpf,
            ..options
        },
    )
}

/// Turns transmit checksum offload off, so every checksum is computed in
/// software and checked by the receiver: a wrong NAT fix-up drops packets.
fn full_checksums(ns: &NetNs, dev: &str) {
    let status = ns
        .run(|| {
            Command::new("ethtool")
                .args(["-K", dev, "tx", "off"])
                .status()
        })
        .unwrap()
        .expect("ethtool (scripts/setup.sh installs it)");
    assert!(status.success(), "ethtool -K {dev} tx off in {}", ns.name());
}

use std::process::Command;

/// A TCP echo server with a thread per connection, in `ns` on `addr`.
struct Echo {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Ipv4Addr>>>,
}

impl Echo {
    fn start(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let listener = ns.run(|| TcpListener::bind(addr)).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        if let std::net::IpAddr::V4(a) = peer.ip() {
                            v.lock().unwrap().push(a);
                        }
                        thread::spawn(move || {
                            conn.set_nonblocking(false).unwrap();
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self { stop, seen }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A TCP connection from `ns`, bound to `src` first (a chosen source port).
fn connect_from(ns: &NetNs, src: SocketAddrV4, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
    ns.run(|| -> std::io::Result<TcpStream> {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(
            &fd,
            sockopt::SendTimeout,
            &nix::sys::time::TimeVal::new(1, 0),
        )?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(src))?;
        // A SYN dropped for lack of a port must fail fast, not after 2 min.
        socket::setsockopt(&fd, sockopt::TcpUserTimeout, &1500)?;
        socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(dst))?;
        Ok(TcpStream::from(fd))
    })
    .unwrap()
}

#[test]
fn ebpf_masquerading_translates_with_valid_checksums() {
    if !common::privileged("ebpf_masquerading_translates_with_valid_checksums") {
        return;
    }
    translates_with_valid_checksums("nat", TcAttach::Auto);
}

/// The NAT on the path kernels before 6.6 take (clsact qdisc, netlink
/// filters), forced on this kernel: the same translations, and `down`
/// removes the filters and the pins.
#[test]
fn ebpf_masquerading_attaches_through_netlink_without_tcx() {
    if !common::privileged("ebpf_masquerading_attaches_through_netlink_without_tcx") {
        return;
    }
    translates_with_valid_checksums("natnl", TcAttach::Netlink);
}

fn translates_with_valid_checksums(tag: &str, tc_attach: TcAttach) {
    let lab = ebpf_lab(
        tag,
        LabOptions {
            tc_attach,
            ..LabOptions::default()
        },
    );
    if tc_attach == TcAttach::Netlink {
        let filters = lab
            .netns("node1")
            .unwrap()
            .run(|| {
                Command::new("tc")
                    .args(["filter", "show", "dev", "eth0", "egress"])
                    .output()
            })
            .unwrap()
            .unwrap();
        let filters = String::from_utf8_lossy(&filters.stdout);
        assert!(
            filters.contains("nat_egress"),
            "no netlink filter: {filters}"
        );
    }
    let node = lab.netns("node1").unwrap();
    let rules = firewall::list(&node).unwrap();
    assert!(!rules.contains("masquerade"), "{rules}");
    for pod in ["pod-a", "pod-b"] {
        full_checksums(&lab.netns(pod).unwrap(), "eth0");
    }
    full_checksums(&lab.netns("world").unwrap(), "underlay0");
    let (a, b, w) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("pod-b").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    for (from, proto, count) in [
        (&a, Proto::Tcp, 3),
        (&a, Proto::Udp, 4),
        (&b, Proto::Icmp, 3),
        (&b, Proto::Tcp, 2),
    ] {
        let r = traffic::run(
            from,
            &w,
            &TrafficSpec {
                proto,
                count,
                size: 1000,
                ..TrafficSpec::default()
            },
        )
        .unwrap();
        // The echo comes back byte for byte (TCP compares it), and the world
        // only ever sees the node.
        assert!(r.all_answered(), "{}", r.text());
        if proto != Proto::Icmp {
            assert!(
                r.server_saw
                    .keys()
                    .all(|s| *s == Ipv4Addr::new(172, 18, 0, 2)),
                "{}",
                r.text()
            );
        }
    }
    // Pod to pod stays untranslated.
    let r = traffic::run(
        &a,
        &b,
        &TrafficSpec {
            proto: Proto::Tcp,
            ..TrafficSpec::default()
        },
    )
    .unwrap();
    assert_eq!(r.server_saw.keys().copied().collect::<Vec<_>>(), [a.addr]);
    let ino = node.inode().unwrap();
    let rows = nat::pod_rows(ino).unwrap();
    let conns: BTreeMap<Ipv4Addr, u64> = rows.iter().map(|r| (r.pod, r.connections)).collect();
    assert_eq!(conns, BTreeMap::from([(a.addr, 4), (b.addr, 3)]));
    let table = nat::table(ino).unwrap();
    assert_eq!(table.used, 7);
    assert_eq!(table.alloc_failed, 0);
    // Every pod has a slot, so the totals are the pods' counts.
    let out: u64 = rows.iter().map(|r| r.packets_out).sum();
    let back: u64 = rows.iter().map(|r| r.packets_in).sum();
    assert!(out >= 3 * 3 + 4 + 3 + 2 * 3, "{out}");
    assert_eq!((table.xlate_out, table.xlate_in), (out, back));
    // Closed TCP flows are marked closing (they expire 10 s after).
    assert!(
        table
            .entries
            .iter()
            .filter(|e| e.proto == "tcp")
            .all(|e| e.closing)
    );
    drop(node);
    let name = lab.name().to_owned();
    lab.down().unwrap();
    assert!(!nat::pin_dir(ino).exists(), "pins of {name} left behind");
}

#[test]
fn two_hundred_concurrent_flows_with_colliding_ports_all_work() {
    if !common::privileged("two_hundred_concurrent_flows_with_colliding_ports_all_work") {
        return;
    }
    let lab = ebpf_lab("nat200", LabOptions::default());
    let world_ns = lab.netns("world").unwrap();
    let server = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 5001);
    let echo = Echo::start(&world_ns, server);
    let mut flows = Vec::new();
    // Both pods use the same 100 source ports toward the same server: every
    // flow of pod-b collides with one of pod-a on its first-choice port.
    for pod in ["pod-a", "pod-b"] {
        let ns = lab.netns(pod).unwrap();
        let addr = lab.endpoint(pod).unwrap().addr;
        for i in 0..100u16 {
            let stream = connect_from(&ns, SocketAddrV4::new(addr, 41000 + i), server)
                .unwrap_or_else(|e| panic!("{pod} flow {i}: {e}"));
            flows.push((format!("{pod}-{i}"), stream));
        }
    }
    for (name, stream) in &mut flows {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(name.as_bytes()).unwrap();
        let mut back = vec![0u8; name.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, name.as_bytes(), "{name}");
    }
    assert_eq!(echo.seen.lock().unwrap().len(), 200);
    assert!(
        echo.seen
            .lock()
            .unwrap()
            .iter()
            .all(|a| *a == Ipv4Addr::new(172, 18, 0, 2))
    );
    let table = nat::table(lab.netns("node1").unwrap().inode().unwrap()).unwrap();
    let ports: std::collections::BTreeSet<u16> = table
        .entries
        .iter()
        .filter(|e| e.dir == "OUT" && e.proto == "tcp")
        .map(|e| e.xlate_port)
        .collect();
    assert_eq!(ports.len(), 200, "every flow has its own port");
    assert!(table.collisions >= 100, "collisions: {}", table.collisions);
    assert_eq!(table.alloc_failed, 0);
}

#[test]
fn expired_mappings_are_replaced_and_a_full_port_range_is_reported() {
    if !common::privileged("expired_mappings_are_replaced_and_a_full_port_range_is_reported") {
        return;
    }
    let lab = ebpf_lab(
        "natfull",
        LabOptions {
            nat_udp_timeout: Some(1),
            nat_ports: Some((40000, 40003)),
            ..LabOptions::default()
        },
    );
    let ino = lab.netns("node1").unwrap().inode().unwrap();
    // UDP: one flow, idle past its 1 s lifetime, then used again.
    let pod = lab.netns("pod-a").unwrap();
    let sock = pod
        .run(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 45000)))
        .unwrap()
        .unwrap();
    let world_ns = lab.netns("world").unwrap();
    let sink = world_ns
        .run(|| std::net::UdpSocket::bind((Ipv4Addr::new(203, 0, 113, 10), 5300)))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 16];
    sock.send_to(b"one", (Ipv4Addr::new(203, 0, 113, 10), 5300))
        .unwrap();
    sink.recv_from(&mut buf).unwrap();
    thread::sleep(Duration::from_millis(2500));
    sock.send_to(b"two", (Ipv4Addr::new(203, 0, 113, 10), 5300))
        .unwrap();
    let (_, from) = sink.recv_from(&mut buf).unwrap();
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2))
    );
    let t = nat::table(ino).unwrap();
    assert_eq!(t.expired, 1, "{t:?}");
    // Four ports for six TCP flows to one server, the first four held
    // open: four connect, two are dropped, and the drops are counted, not
    // silent.
    let echo = Echo::start(
        &world_ns,
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 5001),
    );
    let addr = lab.endpoint("pod-a").unwrap().addr;
    let server = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 5001);
    let results: Vec<std::io::Result<TcpStream>> = (0..6u16)
        .map(|i| connect_from(&pod, SocketAddrV4::new(addr, 46000 + i), server))
        .collect();
    let ok = |r: &[std::io::Result<TcpStream>]| r.iter().map(Result::is_ok).collect::<Vec<_>>();
    assert_eq!(ok(&results), [true, true, true, true, false, false]);
    let t = nat::table(ino).unwrap();
    assert!(t.alloc_failed >= 2, "{t:?}");
    // Closed (FIN both ways), they keep their ports for the 10 s closing
    // timeout (the table is not full: nothing is reclaimed early), then
    // new flows take them over.
    drop(results);
    let closed = Instant::now();
    let before = nat::table(ino).unwrap().expired;
    let mut i = 0;
    while connect_from(&pod, SocketAddrV4::new(addr, 46100 + i), server).is_err() {
        assert!(
            closed.elapsed() < Duration::from_secs(20),
            "{:?}",
            nat::table(ino).unwrap()
        );
        i += 1;
    }
    assert!(
        closed.elapsed() >= Duration::from_secs(9),
        "{:?}",
        closed.elapsed()
    );
    let t = nat::table(ino).unwrap();
    assert!(t.expired > before, "{t:?}");
    assert_eq!((t.reclaimed, t.sweeps), (0, 0), "{t:?}");
    drop(echo);
}

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

#[test]
fn masq_and_nat_table_commands_print_their_schemas() {
    if !common::privileged("masq_and_nat_table_commands_print_their_schemas") {
        return;
    }
    let lab = common::lab("basic", "msqcli");
    let node = lab.netns("node1").unwrap();
    let ready = std::env::temp_dir().join(lab_cli::kernel::netns::unique_name("labtest-m"));
    let counting = labctl()
        .args(["masq", "--netns", node.name(), "-o", "json", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "masq never became ready");
        thread::sleep(Duration::from_millis(10));
    }
    send(&lab, "pod-b", Proto::Tcp, 2);
    // Stop after the traffic (Ctrl-C ends `masq` normally).
    common::interrupt(&counting);
    let out = counting.wait_with_output().unwrap();
    std::fs::remove_file(&ready).ok();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["pod"], "10.244.1.3");
    // A lab's pods are named as pods: LAB/POD.
    assert_eq!(rows[0]["pod_name"], format!("{}/pod-b", lab.name()));
    assert_eq!(rows[0]["node"], "172.18.0.2");
    assert_eq!(rows[0]["connections"], 2);
    // No eBPF masquerading on this node: nat-table says how to get it.
    let out = labctl()
        .args(["masq", "nat-table", "--netns", node.name()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::said(&out.stderr).contains("--masq ebpf"));

    let eb = ebpf_lab("msqcli2", LabOptions::default());
    send(&eb, "pod-a", Proto::Udp, 2);
    let node = eb.netns("node1").unwrap();
    let out = labctl()
        .args(["masq", "nat-table", "--netns", node.name(), "-o", "json"])
        .output()
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(table["used"], 1);
    assert_eq!(table["entries"].as_array().unwrap().len(), 2, "OUT and IN");
    let out = labctl()
        .args([
            "masq",
            "--netns",
            node.name(),
            "--duration",
            "0.1",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["packets_out"], 2);
    assert_eq!(row["packets_in"], 2);
}

/// Another pod's connection: open (used now and then) or closed (FIN
/// both ways, long ago).
#[derive(Clone, Copy, PartialEq)]
enum Other {
    Open,
    Closed,
}

/// Mapping `i` of another pod's connection (10.200.x.y -> 198.18.x.1:443)
/// and its reverse entry, as a node's NAT would hold them.
fn other_mapping(
    i: u32,
    state: Other,
) -> [(lab_common::nat::NatKey, lab_common::nat::NatEntry); 2] {
    use lab_common::nat::{NAT_CLOSING, NAT_PEER_CLOSING};
    let (last_ns, flags) = match state {
        Other::Open => (u64::MAX / 2, 0),
        Other::Closed => (0, NAT_CLOSING | NAT_PEER_CLOSING),
    };
    use lab_common::nat::{NO_SLOT, NatEntry, NatKey};
    let pod = u32::from_ne_bytes([
        10,
        200 + (i / 62_500) as u8,
        ((i / 250) % 250) as u8,
        (i % 250 + 1) as u8,
    ]);
    let (far, node) = (
        u32::from_ne_bytes([198, 18, (i / 60_000) as u8, 1]),
        u32::from_ne_bytes([172, 18, 0, 2]),
    );
    let (pod_port, port) = (20000u16.to_be(), (1 + (i % 60_000) as u16).to_be());
    let entry = |to_addr, to_port| NatEntry {
        created_ns: 0,
        last_ns,
        to_addr,
        to_port,
        flags,
        _pad: 0,
        slot: NO_SLOT,
        _pad2: 0,
    };
    [
        (
            NatKey::new(pod, far, pod_port, 443u16.to_be(), 6),
            entry(node, port),
        ),
        (
            NatKey::new(far, node, 443u16.to_be(), port, 6),
            entry(pod, pod_port),
        ),
    ]
}

/// Writes mappings `from..to` of [`other_mapping`] into a node's pinned
/// NAT tables (new ones, or updates of the same).
fn put_other_mappings(node_ino: u64, from: u32, to: u32, state: Other) {
    use aya::maps::{HashMap, Map, MapData};
    let dir = nat::pin_dir(node_ino);
    let open = |f: &str| -> HashMap<MapData, lab_common::nat::NatKey, lab_common::nat::NatEntry> {
        HashMap::try_from(Map::HashMap(MapData::from_pin(dir.join(f)).unwrap())).unwrap()
    };
    let (mut out, mut back) = (open("out"), open("in"));
    for i in from..to {
        let [(ko, vo), (ki, vi)] = other_mapping(i, state);
        out.insert(ko, vo, 0).unwrap();
        back.insert(ki, vi, 0).unwrap();
    }
}

/// A node's NAT table filled with other pods' live connections, but for
/// a few mappings: new flows beyond those few are refused (dropped at tc
/// egress) and counted, in `masq nat-table`, `labctl metrics` and the drop
/// counter; the connections already there, ours and the others', keep
/// their mappings. Once the others' mappings are expired, a sweep
/// reclaims them and new flows get through again.
#[test]
fn a_full_nat_table_refuses_new_flows_counts_them_and_keeps_live_ones() {
    if !common::privileged("a_full_nat_table_refuses_new_flows_counts_them_and_keeps_live_ones") {
        return;
    }
    const FREE: usize = 8;
    const NEW: usize = 20;
    let lab = ebpf_lab("natfill", LabOptions::default());
    let node = lab.netns("node1").unwrap();
    let ino = node.inode().unwrap();
    let node_name = format!("{}/node1", lab.name());
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut metrics = Killed(
        labctl()
            .args(["metrics", "--listen", "127.0.0.1:0", "--netns", &node_name])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::wait_ready(&mut metrics.0, &ready);

    // Our long-lived connections: pod-a -> world, echoing.
    let world = Ipv4Addr::new(203, 0, 113, 10);
    let echo = Echo::start(&lab.netns("world").unwrap(), SocketAddrV4::new(world, 5001));
    let (pod_a, a) = (
        lab.netns("pod-a").unwrap(),
        lab.endpoint("pod-a").unwrap().addr,
    );
    let mut held: Vec<(u16, TcpStream)> = (0..4u16)
        .map(|i| {
            let port = 47000 + i;
            let s = connect_from(
                &pod_a,
                SocketAddrV4::new(a, port),
                SocketAddrV4::new(world, 5001),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            (port, s)
        })
        .collect();
    let echoes = |held: &mut Vec<(u16, TcpStream)>| {
        for (port, s) in held.iter_mut() {
            let msg = format!("held {port}");
            s.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg.as_bytes());
        }
    };
    echoes(&mut held);
    let translated = |t: &nat::NatTable| -> BTreeMap<u16, u16> {
        t.entries
            .iter()
            .filter(|e| e.dir == "OUT" && e.src == a && e.proto == "tcp")
            .map(|e| (e.sport, e.xlate_port))
            .collect()
    };
    let before = translated(&nat::table(ino).unwrap());
    assert_eq!(before.len(), 4, "{before:?}");

    // Everything else: other pods' live connections.
    let t = nat::table(ino).unwrap();
    let ins = t.entries.iter().filter(|e| e.dir == "IN").count();
    let others = (t.capacity - t.used.max(ins) - FREE) as u32;
    put_other_mappings(ino, 0, others, Other::Open);

    // NEW new flows: UDP from pod-b, each from its own port.
    let sink = lab
        .netns("world")
        .unwrap()
        .run(|| std::net::UdpSocket::bind((world, 5300)))
        .unwrap()
        .unwrap();
    let pod_b = lab.netns("pod-b").unwrap();
    let senders: Vec<std::net::UdpSocket> = (0..NEW)
        .map(|_| {
            pod_b
                .run(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                .unwrap()
                .unwrap()
        })
        .collect();
    for s in &senders {
        s.send_to(b"new flow", (world, 5300)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = nat::table(ino).unwrap();
        if t.table_full >= (NEW - FREE) as u64 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "refusals never counted: {}",
            t.table_full
        );
        thread::sleep(Duration::from_millis(50));
    };
    // Exactly the free mappings were taken, the rest refused and counted;
    // nothing was reclaimed (everything is live), nothing evicted.
    assert_eq!(t.table_full, (NEW - FREE) as u64);
    assert_eq!(t.reclaimed, 0);
    assert_eq!(t.used, t.capacity);
    assert_eq!(translated(&t), before, "our connections kept their ports");
    let others_kept = t
        .entries
        .iter()
        .filter(|e| e.dir == "OUT" && e.dst.octets()[..2] == [198, 18])
        .count();
    assert_eq!(
        others_kept, others as usize,
        "the others' mappings are all there"
    );
    sink.set_nonblocking(true).unwrap();
    let mut got = std::collections::BTreeSet::new();
    let mut buf = [0u8; 64];
    while let Ok((_, from)) = sink.recv_from(&mut buf) {
        assert_eq!(
            from.ip(),
            std::net::IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2))
        );
        got.insert(from.port());
    }
    assert_eq!(got.len(), FREE, "datagrams that got through: {got:?}");
    echoes(&mut held);

    // Visible: the metrics (NAT events, and the drops by reason).
    let text = http_get(&url);
    let sample = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(
        sample(&format!(
            "labctl_nat_events_total{{event=\"table_full\",netns=\"{node_name}\"}}"
        )),
        Some((NEW - FREE) as u64),
        "{text}"
    );
    assert_eq!(
        sample(&format!(
            "labctl_drops_total{{netns=\"{node_name}\",pod=\"\",reason=\"TC_EGRESS\"}}"
        )),
        Some((NEW - FREE) as u64),
        "{text}"
    );

    // The others' connections are over (closed long ago): the next new
    // flow's sweep reclaims them (once the back-off after the sweep that
    // freed nothing is over).
    put_other_mappings(ino, 0, others, Other::Closed);
    let deadline = Instant::now() + Duration::from_secs(10);
    sink.set_nonblocking(false).unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    loop {
        let s = pod_b
            .run(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .unwrap()
            .unwrap();
        s.send_to(b"after", (world, 5300)).unwrap();
        if sink.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "nothing was reclaimed: {}", {
            let t = nat::table(ino).unwrap();
            format!(
                "{} mappings, {} refused, {} sweeps, {} reclaimed",
                t.used, t.table_full, t.sweeps, t.reclaimed
            )
        });
    }
    let t = nat::table(ino).unwrap();
    assert!(
        t.reclaimed >= u64::from(others).min(t.capacity as u64 / 16),
        "{}",
        t.reclaimed
    );
    assert_eq!(translated(&t), before);
    echoes(&mut held);

    // And `masq nat-table` says so, in JSON and in text (the others'
    // mappings removed first: a short table).
    {
        use aya::maps::{HashMap, Map, MapData};
        let dir = nat::pin_dir(ino);
        for f in ["out", "in"] {
            let mut m: HashMap<MapData, lab_common::nat::NatKey, lab_common::nat::NatEntry> =
                HashMap::try_from(Map::HashMap(MapData::from_pin(dir.join(f)).unwrap())).unwrap();
            for i in 0..others {
                let [(ko, _), (ki, _)] = other_mapping(i, Other::Closed);
                m.remove(if f == "out" { &ko } else { &ki }).ok();
            }
        }
    }
    let out = labctl()
        .args(["masq", "nat-table", "--netns", &node_name, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::said(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["table_full"].as_u64().unwrap() >= (NEW - FREE) as u64,
        "{json}"
    );
    assert_eq!(json["reclaimed"].as_u64(), Some(t.reclaimed), "{json}");
    assert!(json["sweeps"].as_u64().unwrap() >= 2, "{json}");
    let out = labctl()
        .args(["masq", "nat-table", "--netns", &node_name])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("table full:"), "{text}");
    common::interrupt(&metrics.0);
    assert!(common::wait_exit(&mut metrics.0, 10).success());
    drop(echo);
}

/// A child killed when dropped (even on panic).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// GET `url` (http://HOST:PORT/PATH) with HTTP/1.0; the body.
fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}
