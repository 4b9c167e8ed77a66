//! Privileged: `labctl trace` end to end, in throwaway namespaces, asserting
//! exact counts, tuples, reasons, interfaces and namespace names.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    drops::{
        filter::Filters,
        session::{self, Summary, TraceOptions},
    },
    kernel::netns::NetNs,
    lab::names,
    output::drops::JsonSink,
};
use serde_json::Value;

fn options(ns: &NetNs) -> TraceOptions {
    TraceOptions {
        filters: Filters {
            netns: Some(NetNs::open(ns.name()).unwrap()),
            ..Default::default()
        },
        summary: false,
        interval: Duration::from_secs(1),
        // A backstop only: `trace` stops the session once the traffic is sent.
        duration: Some(Duration::from_secs(60)),
        count: None,
        ready_file: None,
        ring_bytes: 1 << 22,
        classic_tracepoint: false,
        stack: false,
        snaplen: 0,
        stop: None,
        netns_aliases: Some(names::member_names),
        scope: None,
    }
}

/// Runs a session with `opts`, starts `traffic` once it is attached, stops
/// the session once the traffic is sent, and returns the JSON drop lines and
/// the summary.
fn trace(mut opts: TraceOptions, traffic: impl FnOnce()) -> (Vec<Value>, Summary) {
    let ready: PathBuf =
        std::env::temp_dir().join(lab_cli::kernel::netns::unique_name("labtest-ready"));
    opts.ready_file = Some(ready.clone());
    let stop = Arc::new(AtomicBool::new(false));
    opts.stop = Some(stop.clone());
    let session = thread::spawn(move || {
        let mut sink = JsonSink::new(Vec::new());
        let summary = session::run(&opts, &mut sink).expect("trace session");
        (sink.into_inner(), summary)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "tracer never became ready");
        assert!(!session.is_finished(), "tracer ended before it was ready");
        thread::sleep(Duration::from_millis(10));
    }
    traffic();
    stop.store(true, Ordering::Relaxed);
    let (out, summary) = session.join().expect("session thread");
    std::fs::remove_file(&ready).ok();
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (drops, tail): (Vec<Value>, Vec<Value>) =
        lines.into_iter().partition(|v| v["type"] == "drop");
    assert_eq!(tail.len(), 1, "exactly one summary line");
    assert_eq!(tail[0]["type"], "summary");
    assert_eq!(tail[0]["events"], drops.len() as u64);
    (drops, summary)
}

fn ip_netns_exec(ns: &NetNs, args: &[&str]) {
    let status = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .status()
        .expect("run ip netns exec");
    assert!(status.success(), "{args:?} failed in {}", ns.name());
}

#[test]
fn no_socket_drops_carry_the_full_tuple() {
    if !common::privileged("no_socket_drops_carry_the_full_tuple") {
        return;
    }
    let ns = common::netns("labtest-tr");
    let (drops, summary) = trace(options(&ns), || common::send_udp(&ns, 9, 200));
    assert_eq!(drops.len(), 200);
    assert_eq!(summary.by_reason.get("NO_SOCKET"), Some(&200));
    assert_eq!(summary.total(), 200);
    assert_eq!(summary.lost, 0);
    for d in &drops {
        assert_eq!(d["reason"], "NO_SOCKET");
        assert_eq!(d["netns"], ns.name());
        assert_eq!(d["netns_ino"], ns.inode().unwrap());
        assert_eq!(d["ifname"], "lo");
        assert_eq!(d["proto"], "UDP");
        assert_eq!(d["src"], "127.0.0.1");
        assert_eq!(d["dst"], "127.0.0.1");
        assert_eq!(d["dport"], 9);
        assert!(d["sport"].as_u64().unwrap() > 0);
        assert!(
            d["location"]
                .as_str()
                .unwrap()
                .starts_with("__udp4_lib_rcv"),
            "{}",
            d["location"]
        );
    }
}

#[test]
fn the_classic_tracepoint_sees_the_same_drops() {
    if !common::privileged("the_classic_tracepoint_sees_the_same_drops") {
        return;
    }
    let ns = common::netns("labtest-tp");
    let mut opts = options(&ns);
    opts.classic_tracepoint = true;
    let (drops, summary) = trace(opts, || common::send_udp(&ns, 9, 50));
    assert_eq!(drops.len(), 50);
    assert_eq!(summary.by_reason.get("NO_SOCKET"), Some(&50));
    assert!(drops.iter().all(|d| d["dport"] == 9 && d["ifname"] == "lo"));
}

#[test]
fn a_netfilter_drop_rule_gives_netfilter_drop() {
    if !common::privileged("a_netfilter_drop_rule_gives_netfilter_drop") {
        return;
    }
    let ns = common::netns("labtest-nf");
    ip_netns_exec(&ns, &["nft", "add table inet labtest"]);
    ip_netns_exec(
        &ns,
        &[
            "nft",
            "add chain inet labtest input { type filter hook input priority 0 ; udp dport 5555 drop ; }",
        ],
    );
    let (drops, summary) = trace(options(&ns), || {
        common::send_udp(&ns, 5555, 40);
        common::send_udp(&ns, 9, 10);
    });
    assert_eq!(summary.by_reason.get("NETFILTER_DROP"), Some(&40));
    assert_eq!(summary.by_reason.get("NO_SOCKET"), Some(&10));
    assert_eq!(
        drops
            .iter()
            .filter(|d| d["reason"] == "NETFILTER_DROP" && d["dport"] == 5555)
            .count(),
        40
    );
}

#[test]
fn filters_keep_what_they_should_and_drop_the_rest() {
    if !common::privileged("filters_keep_what_they_should_and_drop_the_rest") {
        return;
    }
    let ns = common::netns("labtest-flt");
    let traffic = || {
        common::send_udp(&ns, 9, 7);
        common::send_udp(&ns, 10, 5);
    };
    // port
    let mut o = options(&ns);
    o.filters.port = Some(10);
    let (drops, s) = trace(o, traffic);
    assert_eq!((drops.len(), s.total()), (5, 5));
    assert!(drops.iter().all(|d| d["dport"] == 10));
    // reason include / exclude
    let mut o = options(&ns);
    o.filters.reasons = vec!["NO_SOCKET".into()];
    assert_eq!(trace(o, traffic).1.total(), 12);
    let mut o = options(&ns);
    o.filters.exclude_reasons = vec!["no_socket".into()];
    assert_eq!(trace(o, traffic).1.total(), 0);
    // protocol
    let mut o = options(&ns);
    o.filters.proto = Some("tcp".into());
    assert_eq!(trace(o, traffic).1.total(), 0);
    let mut o = options(&ns);
    o.filters.proto = Some("udp".into());
    assert_eq!(trace(o, traffic).1.total(), 12);
    // host
    let mut o = options(&ns);
    o.filters.host = Some("127.0.0.2".parse().unwrap());
    assert_eq!(trace(o, traffic).1.total(), 0);
    let mut o = options(&ns);
    o.filters.host = Some("127.0.0.1".parse().unwrap());
    assert_eq!(trace(o, traffic).1.total(), 12);
    // interface, looked up inside the namespace
    let mut o = options(&ns);
    o.filters.iface = Some("lo".into());
    assert_eq!(trace(o, traffic).1.total(), 12);
    // another namespace sees none of it
    let other = common::netns("labtest-flt2");
    assert_eq!(trace(options(&other), traffic).1.total(), 0);
}

#[test]
fn overflow_is_counted_never_silent() {
    if !common::privileged("overflow_is_counted_never_silent") {
        return;
    }
    let ns = common::netns("labtest-loss");
    let mut o = options(&ns);
    o.ring_bytes = 4096; // room for ~45 events
    let (drops, s) = trace(o, || common::send_udp(&ns, 9, 3000));
    assert_eq!(s.total(), 3000, "the kernel counts every drop");
    assert!(s.lost > 0, "a 4 KiB ring must overflow under 3000 drops");
    assert_eq!(drops.len() as u64 + s.lost, s.total());
}

#[test]
fn summary_mode_counts_exactly_without_events() {
    if !common::privileged("summary_mode_counts_exactly_without_events") {
        return;
    }
    let ns = common::netns("labtest-sum");
    let mut o = options(&ns);
    o.summary = true;
    let (drops, s) = trace(o, || common::send_udp(&ns, 9, 2500));
    assert!(drops.is_empty());
    assert_eq!((s.total(), s.lost, s.events), (2500, 0, 0));
    assert_eq!(s.by_location.values().sum::<u64>(), 2500);
}

/// Every planted fault of the drops lab: exactly N drops with the fault's
/// reason, 5-tuple, interface and namespace name, and the same count in the
/// JSON summary.
#[test]
fn each_planted_fault_gives_exactly_its_reason() {
    if !common::privileged("each_planted_fault_gives_exactly_its_reason") {
        return;
    }
    use lab_cli::lab::faults;
    const N: u32 = 50;
    let lab = common::lab("drops", "trc");
    for fault in lab.plan.scenario.faults {
        let at = lab.netns(fault.at).unwrap();
        let opts = options(&at);
        let mut sent = None;
        let (drops, summary) = trace(opts, || {
            sent = Some(faults::trigger(&lab, fault, N).expect("trigger"));
        });
        let report = sent.unwrap();
        assert_eq!(report.sent, N);
        assert_eq!(
            summary.by_reason,
            std::collections::BTreeMap::from([(fault.reason.to_owned(), u64::from(N))]),
            "fault {}",
            fault.name()
        );
        assert_eq!(summary.lost, 0);
        assert_eq!(drops.len(), N as usize, "fault {}", fault.name());
        for d in &drops {
            assert_eq!(d["reason"], fault.reason, "fault {}", fault.name());
            // Lab namespaces are named as members: LAB/MEMBER.
            assert_eq!(d["netns"], names::display(lab.name(), fault.at));
            assert_eq!(d["ifname"], report.iface, "fault {}", fault.name());
            assert_eq!(d["proto"], report.proto.to_string().to_uppercase());
            assert_eq!(d["src"], report.src.to_string());
            assert_eq!(d["dst"], report.dst.to_string());
            assert_eq!(d["sport"], report.sport);
            assert_eq!(d["dport"], report.dport);
        }
    }
}

#[test]
fn stack_shows_the_path_to_the_drop_without_the_tracer() {
    if !common::privileged("stack_shows_the_path_to_the_drop_without_the_tracer") {
        return;
    }
    let ns = common::netns("labtest-stk");
    let mut opts = options(&ns);
    opts.stack = true;
    let (drops, summary) = trace(opts, || common::send_udp(&ns, 9, 20));
    assert_eq!(summary.by_reason.get("NO_SOCKET"), Some(&20));
    assert_eq!(drops.len(), 20);
    for d in &drops {
        let stack: Vec<&str> = d["stack"]
            .as_array()
            .expect("a stack on every drop")
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(
            !stack
                .iter()
                .any(|f| f.starts_with("bpf_prog_") || f.starts_with("__traceiter_")),
            "{stack:?}"
        );
        assert!(
            stack.iter().any(|f| f.starts_with("__udp4_lib_rcv")),
            "{stack:?}"
        );
        assert!(
            stack.iter().any(|f| f.starts_with("__x64_sys_sendto")),
            "{stack:?}"
        );
    }
    // Without --stack the JSON has no "stack" key (the schema stays as documented).
    let (drops, _) = trace(options(&ns), || common::send_udp(&ns, 9, 1));
    assert!(drops[0].get("stack").is_none());
}

/// A node's scope: only the namespaces in the set are traced, and the set
/// is followed as namespaces (pods) come and go.
#[test]
fn a_scope_traces_only_its_namespaces_and_follows_changes() {
    if !common::privileged("a_scope_traces_only_its_namespaces_and_follows_changes") {
        return;
    }
    use lab_cli::drops::session::Scope;
    use std::sync::Mutex;
    let (a, b, c) = (
        common::netns("labtest-sca"),
        common::netns("labtest-scb"),
        common::netns("labtest-scc"),
    );
    let set = Arc::new(Mutex::new(std::collections::BTreeSet::from([
        a.inode().unwrap(),
        b.inode().unwrap(),
    ])));
    let mut opts = options(&a);
    opts.filters.netns = None;
    opts.summary = true;
    let shared = set.clone();
    opts.scope = Some(Scope(Box::new(move || shared.lock().unwrap().clone())));
    let c_ino = c.inode().unwrap();
    let (_, summary) = trace(opts, || {
        common::send_udp(&a, 9, 10);
        common::send_udp(&b, 9, 20);
        common::send_udp(&c, 9, 40);
    });
    assert_eq!(summary.by_reason.get("NO_SOCKET"), Some(&30), "{summary:?}");

    // A namespace joining the scope is traced after the next refresh.
    let mut opts = options(&a);
    opts.filters.netns = None;
    opts.summary = true;
    let shared = set.clone();
    opts.scope = Some(Scope(Box::new(move || shared.lock().unwrap().clone())));
    let (_, summary) = trace(opts, || {
        set.lock().unwrap().insert(c_ino);
        // Poll: send one drop at a time until the refreshed scope counts it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sent = 0;
        loop {
            common::send_udp(&c, 9, 1);
            sent += 1;
            thread::sleep(Duration::from_millis(100));
            assert!(Instant::now() < deadline, "c never joined the scope");
            if sent > 25 {
                break;
            }
        }
    });
    let counted = summary.by_reason.get("NO_SOCKET").copied().unwrap_or(0);
    assert!(counted > 0 && counted < 26, "{summary:?}");
}

/// Lab pods are pods `LAB/POD` in the drops' JSON, and `--pod-namespace
/// LAB` traces the lab's pods, not its nodes.
#[test]
fn lab_pods_are_named_as_pods_and_filtered_by_pod_namespace() {
    if !common::privileged("lab_pods_are_named_as_pods_and_filtered_by_pod_namespace") {
        return;
    }
    use lab_cli::{drops::session::Scope, lab::faults};
    let lab = common::lab("drops", "pods");
    let name = lab.name().to_owned();
    let at = lab.netns("pod-b").unwrap();
    let mut opts = options(&at);
    opts.filters.netns = None;
    opts.scope = Some(Scope(Box::new(move || names::pod_netns_of(&name).unwrap())));
    let closed = faults::find(&lab, "closed-port").unwrap();
    let policy = faults::find(&lab, "policy").unwrap();
    let (drops, summary) = trace(opts, || {
        faults::trigger(&lab, closed, 5).unwrap();
        faults::trigger(&lab, policy, 7).unwrap();
    });
    // The policy fault drops on node1: not a pod, out of scope.
    assert_eq!(
        summary.by_reason,
        std::collections::BTreeMap::from([("NO_SOCKET".to_owned(), 5)])
    );
    assert_eq!(drops.len(), 5);
    for d in &drops {
        assert_eq!(d["pod"], format!("{}/pod-b", lab.name()));
        assert_eq!(d["pod_namespace"], lab.name());
        assert_eq!(d["netns"], format!("{}/pod-b", lab.name()));
    }
    // `--pod` names only pods: a node is refused.
    assert!(names::lookup_pod(&format!("{}/node1", lab.name())).is_err());
    assert_eq!(
        names::lookup_pod(&format!("{}/pod-b", lab.name()))
            .unwrap()
            .inode()
            .unwrap(),
        at.inode().unwrap()
    );
}

/// Drops of three kinds in `ns`: UDP and a TCP SYN to closed ports over
/// IPv4, UDP over IPv6. Returns how many.
fn mixed_drops(ns: &NetNs) -> usize {
    common::send_udp(ns, 9, 5);
    for _ in 0..3 {
        let refused = ns
            .run(|| std::net::TcpStream::connect(("127.0.0.1", 81)))
            .expect("enter netns");
        assert!(refused.is_err(), "nothing listens on port 81");
    }
    let v6 = ns
        .run(|| std::net::UdpSocket::bind("[::1]:0"))
        .expect("enter netns")
        .expect("bind ::1");
    for _ in 0..2 {
        v6.send_to(b"v6", "[::1]:9").expect("send over IPv6");
    }
    5 + 3 + 2
}

/// tshark's view of a pcap: per packet the interface, the 5-tuple and the
/// comment.
fn tshark_fields(pcap: &[u8]) -> Vec<Vec<String>> {
    let mut child = Command::new("tshark")
        .args(["-r", "-", "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.interface_name",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
        ])
        .args(["-e", "ip.dst", "-e", "ipv6.dst", "-e", "udp.srcport"])
        .args([
            "-e",
            "tcp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "tcp.dstport",
        ])
        .args(["-e", "frame.comment"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tshark (scripts/setup.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = pcap.to_vec();
    let writer = thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "tshark cannot read the pcap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// A drop line's interface, 5-tuple and comment as tshark prints them.
fn expected_fields(d: &Value) -> Vec<String> {
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    let v6 = s(&d["src"]).contains(':');
    let (tcp, port) = (d["proto"] == "TCP", |v: &Value| v.to_string());
    let pick = |yes: bool, v: String| if yes { v } else { String::new() };
    vec![
        format!("{}/{}", s(&d["netns"]), s(&d["ifname"])),
        pick(!v6, s(&d["src"])),
        pick(v6, s(&d["src"])),
        pick(!v6, s(&d["dst"])),
        pick(v6, s(&d["dst"])),
        pick(!tcp, port(&d["sport"])),
        pick(tcp, port(&d["sport"])),
        pick(!tcp, port(&d["dport"])),
        pick(tcp, port(&d["dport"])),
        format!(
            "drop reason {} at {} in netns {}",
            s(&d["reason"]),
            s(&d["location"]),
            s(&d["netns"])
        ),
    ]
}

#[test]
fn pcap_has_every_drop_with_its_tuple_and_reason() {
    if !common::privileged("pcap_has_every_drop_with_its_tuple_and_reason") {
        return;
    }
    let ns = common::netns("labtest-pc");
    let dir = tempfile::tempdir().unwrap();
    let (pcap, ready) = (dir.path().join("drops.pcapng"), dir.path().join("ready"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["trace", "--netns", ns.name(), "-o", "json", "--pcap"])
        .arg(&pcap)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut child, &ready);
    let sent = mixed_drops(&ns);
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let drops: Vec<&Value> = lines.iter().filter(|v| v["type"] == "drop").collect();
    assert_eq!(drops.len(), sent, "{lines:?}");
    let packets = tshark_fields(&std::fs::read(&pcap).unwrap());
    assert_eq!(packets.len(), drops.len(), "one packet per drop");
    for (packet, drop) in packets.iter().zip(&drops) {
        assert_eq!(packet, &expected_fields(drop));
    }
    let tcp = packets.iter().filter(|p| p[8] == "81").count();
    let v6 = packets.iter().filter(|p| p[2] == "::1").count();
    assert_eq!((tcp, v6), (3, 2));
}

#[test]
fn pcap_on_stdout_pipes_into_tshark() {
    if !common::privileged("pcap_on_stdout_pipes_into_tshark") {
        return;
    }
    let ns = common::netns("labtest-ps");
    let ready = tempfile::tempdir().unwrap().keep().join("ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args([
            "trace",
            "--netns",
            ns.name(),
            "--pcap",
            "-",
            "--snaplen",
            "28",
        ])
        .args(["--count", "4", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut child, &ready);
    common::send_udp(&ns, 9, 4);
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(ready.parent().unwrap()).ok();
    assert!(out.status.success());
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(summary.contains("NO_SOCKET"), "{summary}");
    let packets = tshark_fields(&out.stdout);
    assert_eq!(packets.len(), 4);
    for p in &packets {
        // 28 bytes: the IPv4 and UDP headers, no payload.
        assert_eq!((p[1].as_str(), p[7].as_str()), ("127.0.0.1", "9"));
    }
    let caplen = Command::new("tshark")
        .args(["-r", "-", "-T", "fields", "-e", "frame.cap_len"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            std::io::Write::write_all(&mut c.stdin.take().unwrap(), &out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let lens = String::from_utf8(caplen.stdout).unwrap();
    assert_eq!(lens.lines().collect::<Vec<_>>(), ["44"; 4], "16 + 28 bytes");
}
