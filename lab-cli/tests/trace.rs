//! Privileged: `labctl trace` end to end, in throwaway namespaces, asserting
//! exact counts, tuples, reasons, interfaces and namespace names.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    drops::{
        filter::Filters,
        session::{self, Summary, TraceOptions},
    },
    kernel::{interrupt::Trigger, netns::NetNs},
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
        gone: None,
        netns_aliases: Some(names::member_names),
        scope: None,
        policy_names: None,
    }
}

/// Runs a session with `opts`, starts `traffic` once it is attached, stops
/// the session once the traffic is sent, and returns the JSON drop lines and
/// the summary.
fn trace(opts: TraceOptions, traffic: impl FnOnce()) -> (Vec<Value>, Summary) {
    trace_all(vec![opts], traffic).pop().unwrap()
}

/// [`trace`] with several sessions at once, all attached before `traffic`
/// starts: each one's drop lines and summary, in the order of `all`.
fn trace_all(all: Vec<TraceOptions>, traffic: impl FnOnce()) -> Vec<(Vec<Value>, Summary)> {
    let stop = Trigger::new();
    let mut readies = Vec::new();
    let mut sessions = Vec::new();
    for mut opts in all {
        let ready: PathBuf =
            std::env::temp_dir().join(lab_cli::kernel::netns::unique_name("labtest-ready"));
        opts.ready_file = Some(ready.clone());
        opts.stop = Some(stop.clone());
        readies.push(ready);
        sessions.push(thread::spawn(move || {
            let mut sink = JsonSink::new(Vec::new());
            let summary = session::run(&opts, &mut sink).expect("trace session");
            (sink.into_inner(), summary)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (ready, session) in readies.iter().zip(&sessions) {
        while !ready.exists() {
            assert!(Instant::now() < deadline, "tracer never became ready");
            assert!(!session.is_finished(), "tracer ended before it was ready");
            thread::sleep(Duration::from_millis(10));
        }
    }
    traffic();
    stop.fire();
    let mut results = Vec::new();
    for (ready, session) in readies.iter().zip(sessions) {
        let (out, summary) = session.join().expect("session thread");
        std::fs::remove_file(ready).ok();
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
        results.push((drops, summary));
    }
    results
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
            BTreeMap::from([(fault.reason.to_owned(), u64::from(N))]),
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
        BTreeMap::from([("NO_SOCKET".to_owned(), 5)])
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
        // A drop without a device (a local packet dropped on its way out)
        // has no interface: `NETNS/-`.
        format!("{}/{}", s(&d["netns"]), d["ifname"].as_str().unwrap_or("-")),
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

/// A local packet dropped on its way out, before it has a device: the
/// sender's namespace and no interface.
const OUT_PORT: u16 = 5001;

/// The drops among `drops` with no interface (`ifname` null, ifindex 0).
fn without_interface(drops: &[Value]) -> Vec<&Value> {
    drops
        .iter()
        .filter(|d| d["ifname"].is_null() && d["ifindex"] == 0)
        .collect()
}

/// Checks the local-out UDP drops of one namespace: each in `netns` (and
/// `pod`), without an interface, to port OUT_PORT; `v4` of them to `v4_dst`
/// and `v6` to `::1`, nothing else.
fn assert_local_out(
    drops: &[&Value],
    netns: &str,
    pod: Option<&str>,
    (v4, v4_dst): (usize, &str),
    v6: usize,
) {
    assert_eq!(drops.len(), v4 + v6, "{netns}: {drops:#?}");
    for d in drops {
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
        assert_eq!(d["netns"], netns, "{d}");
        assert_eq!(d["pod"], pod.map_or(Value::Null, Value::from), "{d}");
        assert_eq!(
            (&d["ifname"], &d["ifindex"]),
            (&Value::Null, &Value::from(0))
        );
        assert_eq!(
            (&d["proto"], &d["dport"]),
            (&Value::from("UDP"), &Value::from(OUT_PORT))
        );
        assert!(
            d["location"].as_str().unwrap().starts_with("nft_do_chain"),
            "{d}"
        );
    }
    let to = |dst: &str| drops.iter().filter(|d| d["dst"] == dst).count();
    assert_eq!((to(v4_dst), to("::1")), (v4, v6), "{netns}: {drops:#?}");
}

/// Drops on the way out have no device yet. The tracer names their
/// namespace by their socket (UDP over IPv4 and IPv6 dropped by OUTPUT
/// rules) or, for a packet without a socket (the reset a reject rule
/// sends), by its route's device; their interface is unknown, so
/// `--iface lo` keeps only the SYNs the reject rule dropped on `lo`. Both
/// hooks, under `--netns`, exactly as many as nft counted.
#[test]
fn local_out_drops_are_in_their_namespace_without_an_interface() {
    if !common::privileged("local_out_drops_are_in_their_namespace_without_an_interface") {
        return;
    }
    for classic in [false, true] {
        let ns = common::netns("labtest-lo");
        common::drop_udp_out(&ns, OUT_PORT);
        common::reject_and_drop_resets(&ns, 81);
        let mut all = options(&ns);
        all.classic_tracepoint = classic;
        let mut on_lo = options(&ns);
        on_lo.classic_tracepoint = classic;
        on_lo.filters.iface = Some("lo".into());
        let results = trace_all(vec![all, on_lo], || {
            common::send_udp_dropped_out(&ns, (Ipv4Addr::LOCALHOST, OUT_PORT).into(), 7);
            common::send_udp_dropped_out(&ns, (Ipv6Addr::LOCALHOST, OUT_PORT).into(), 4);
            common::send_unanswered_syns(&ns, 81, 3);
        });
        let hook = if classic { "classic" } else { "tp_btf" };
        // nft's own counts: 7 + 4 datagrams, 3 SYNs rejected, 3 resets.
        assert_eq!(common::nft_counted(&ns, "ip", "labtest_out"), 7);
        assert_eq!(common::nft_counted(&ns, "ip6", "labtest_out"), 4);
        assert_eq!(common::nft_counted(&ns, "ip", "labtest_rst"), 3 + 3);

        let (drops, summary) = &results[0];
        assert_eq!(
            summary.by_reason,
            BTreeMap::from([("NETFILTER_DROP".to_owned(), 7 + 4 + 3 + 3)]),
            "{hook}: {drops:#?}"
        );
        assert_eq!(drops.len(), 17, "{hook}");
        for d in drops {
            assert_eq!(d["netns"], ns.name(), "{hook}: {d}");
            assert_eq!(d["netns_ino"], ns.inode().unwrap(), "{hook}: {d}");
        }
        let out = without_interface(drops);
        let (udp, resets): (Vec<&Value>, Vec<&Value>) =
            out.into_iter().partition(|d| d["proto"] == "UDP");
        assert_local_out(&udp, ns.name(), None, (7, "127.0.0.1"), 4);
        // The resets: no socket, no device; named by their route.
        assert_eq!(resets.len(), 3, "{hook}: {drops:#?}");
        for d in &resets {
            assert_eq!(
                (&d["proto"], &d["sport"]),
                (&Value::from("TCP"), &Value::from(81))
            );
            assert!(d["tcp_flags"].as_str().unwrap().contains('R'), "{d}");
        }
        // The SYNs the reject rule dropped, on lo.
        let syns: Vec<&Value> = drops.iter().filter(|d| d["ifname"] == "lo").collect();
        assert_eq!(syns.len(), 3, "{hook}: {drops:#?}");
        assert!(
            syns.iter()
                .all(|d| d["tcp_flags"] == "S" && d["dport"] == 81)
        );

        let (drops, summary) = &results[1];
        assert_eq!(summary.total(), 3, "{hook}: --iface lo: {drops:#?}");
        assert!(
            drops
                .iter()
                .all(|d| d["ifname"] == "lo" && d["tcp_flags"] == "S")
        );
    }
}

/// The text trace's drops, one string each (a drop line starts with its
/// time; what does not fit 80 columns continues on indented lines, joined
/// back here); the banner and the summary are left out.
fn text_records(stdout: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_drop = false;
    for line in stdout.lines() {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(line.to_owned());
            in_drop = true;
        } else if in_drop && line.starts_with(' ') {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            in_drop = false;
        }
    }
    out
}

/// A local-out drop's packet is in the pcap on an interface named
/// `NETNS/-` (it had no device), with its tuple and comment, as tshark
/// reads them; the text line shows `-` in the interface column.
#[test]
fn local_out_drops_in_the_pcap_and_the_text_have_no_interface() {
    if !common::privileged("local_out_drops_in_the_pcap_and_the_text_have_no_interface") {
        return;
    }
    let ns = common::netns("labtest-lp");
    common::drop_udp_out(&ns, OUT_PORT);
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
    let text_ready = dir.path().join("text-ready");
    let mut text = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args([
            "trace",
            "--netns",
            ns.name(),
            "--count",
            "5",
            "--ready-file",
        ])
        .arg(&text_ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut text, &text_ready);
    common::send_udp_dropped_out(&ns, (Ipv4Addr::LOCALHOST, OUT_PORT).into(), 3);
    common::send_udp_dropped_out(&ns, (Ipv6Addr::LOCALHOST, OUT_PORT).into(), 2);
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let drops: Vec<Value> = lines.into_iter().filter(|v| v["type"] == "drop").collect();
    assert_local_out(
        &drops.iter().collect::<Vec<_>>(),
        ns.name(),
        None,
        (3, "127.0.0.1"),
        2,
    );
    let packets = tshark_fields(&std::fs::read(&pcap).unwrap());
    assert_eq!(packets.len(), 5, "one packet per drop");
    for (packet, drop) in packets.iter().zip(&drops) {
        assert_eq!(packet, &expected_fields(drop));
        assert_eq!(packet[0], format!("{}/-", ns.name()));
    }

    // `--count 5` ends the text trace after the five drops.
    let status = common::wait_exit(&mut text, 20);
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut text.stdout.take().unwrap(), &mut stdout).unwrap();
    let records = text_records(&stdout);
    let rows: Vec<Vec<&str>> = records
        .iter()
        .map(|l| l.split_whitespace().collect())
        .filter(|w: &Vec<&str>| w.len() > 3 && w.contains(&"NETFILTER_DROP"))
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    for w in rows {
        // time, namespace, interface, protocol, ...
        assert_eq!((w[1], w[2], w[3]), (ns.name(), "-", "UDP"), "{stdout}");
    }
}

/// Local-out drops in a lab's pod and node (an OUTPUT rule in each, UDP
/// over IPv4 and IPv6) are named by their member and pod, without an
/// interface, and kept by `--netns`, `--pod`, `--pod-namespace` and a
/// node's scope (the default scope in a container), exactly as nft counted
/// them.
#[test]
fn local_out_drops_in_a_lab_are_named_by_member_and_pod() {
    if !common::privileged("local_out_drops_in_a_lab_are_named_by_member_and_pod") {
        return;
    }
    use lab_cli::{drops::session::Scope, kernel::node};
    let lab = common::lab("basic", "lout");
    let name = lab.name().to_owned();
    let member = |m: &str| format!("{name}/{m}");
    let (pod_a, node1) = (lab.netns("pod-a").unwrap(), lab.netns("node1").unwrap());
    for ns in [&pod_a, &node1] {
        common::drop_udp_out(ns, OUT_PORT);
        common::enable_ipv6_on_lo(ns);
    }
    let (pod_b, world) = (
        lab.endpoint("pod-b").unwrap().addr,
        lab.endpoint("world").unwrap().addr,
    );
    let netns = |spec: &str| {
        let mut o = options(&pod_a);
        o.filters.netns = Some(names::lookup_netns(spec).unwrap());
        o
    };
    let mut pod = options(&pod_a);
    pod.filters.netns = Some(names::lookup_pod(&member("pod-a")).unwrap());
    let mut pods = options(&pod_a);
    pods.filters.netns = None;
    let lab_name = name.clone();
    pods.scope = Some(Scope(Box::new(move || {
        names::pod_netns_of(&lab_name).unwrap()
    })));
    let mut node_scope = options(&pod_a);
    node_scope.filters.netns = None;
    node_scope.filters.port = Some(OUT_PORT);
    node_scope.scope = Some(Scope(Box::new(node::scope)));
    let results = trace_all(
        vec![
            netns(&member("pod-a")),
            pod,
            pods,
            netns(&member("node1")),
            node_scope,
        ],
        || {
            common::send_udp_dropped_out(&pod_a, (pod_b, OUT_PORT).into(), 5);
            common::send_udp_dropped_out(&pod_a, (Ipv6Addr::LOCALHOST, OUT_PORT).into(), 3);
            common::send_udp_dropped_out(&node1, (world, OUT_PORT).into(), 6);
            common::send_udp_dropped_out(&node1, (Ipv6Addr::LOCALHOST, OUT_PORT).into(), 2);
        },
    );
    assert_eq!(common::nft_counted(&pod_a, "ip", "labtest_out"), 5);
    assert_eq!(common::nft_counted(&pod_a, "ip6", "labtest_out"), 3);
    assert_eq!(common::nft_counted(&node1, "ip", "labtest_out"), 6);
    assert_eq!(common::nft_counted(&node1, "ip6", "labtest_out"), 2);

    let (pod_b, world) = (pod_b.to_string(), world.to_string());
    let pod_a_name = member("pod-a");
    let in_pod_a = |drops: &[Value]| {
        assert_local_out(
            &drops.iter().collect::<Vec<_>>(),
            &pod_a_name,
            Some(&pod_a_name),
            (5, &pod_b),
            3,
        );
    };
    let [by_netns, by_pod, by_pod_namespace, node1_drops, scoped] = &results[..] else {
        unreachable!()
    };
    in_pod_a(&by_netns.0);
    in_pod_a(&by_pod.0);
    in_pod_a(&by_pod_namespace.0);
    assert_local_out(
        &node1_drops.0.iter().collect::<Vec<_>>(),
        &member("node1"),
        None,
        (6, &world),
        2,
    );
    // A node's scope holds every named namespace: others' labs too (other
    // tests run on this kernel), so this lab's are told apart by inode.
    let of = |ns: &NetNs| {
        let ino = ns.inode().unwrap();
        scoped
            .0
            .iter()
            .filter(|d| d["netns_ino"] == ino)
            .cloned()
            .collect::<Vec<Value>>()
    };
    in_pod_a(&of(&pod_a));
    assert_local_out(
        &of(&node1).iter().collect::<Vec<_>>(),
        &member("node1"),
        None,
        (6, &world),
        2,
    );
}

/// `find-the-drop`'s pod-a fault (an nft OUTPUT rule in table `chaos`, as
/// the exercise plants it) is found by the command its hint gives, `labctl
/// trace --proto udp --port 5001` in the default scope (a node's, in a
/// container): the namespace column names `LAB/pod-a`, the interface `-`.
#[test]
fn find_the_drop_pod_a_fault_is_found_in_the_default_scope() {
    if !common::privileged("find_the_drop_pod_a_fault_is_found_in_the_default_scope") {
        return;
    }
    use lab_cli::exercises::{
        catalog,
        model::{Choice, Value},
    };
    let source = catalog::find(&catalog::load(None).unwrap(), "find-the-drop").unwrap();
    let text = |v: &Value| v.text();
    let fault = source.header.params["fault"]
        .choices
        .iter()
        .find_map(|c| match c {
            Choice::Table(t) if t.get("member").map(text).as_deref() == Some("pod-a") => {
                Some(t.clone())
            }
            _ => None,
        })
        .expect("find-the-drop has a pod-a fault");
    let plant = text(&fault["plant"]);
    assert!(
        plant.contains("table ip chaos") && plant.contains("hook output"),
        "{plant}"
    );
    assert_eq!(text(&fault["plant_in"]), "pod-a");
    let lab = common::lab(&source.header.scenario, "ftd");
    let pod_a = lab.netns("pod-a").unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", pod_a.name(), "sh", "-c", &plant])
        .status()
        .unwrap();
    assert!(status.success(), "{plant}");

    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["trace", "--proto", "udp", "--port", "5001", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut child, &ready);
    // As `labctl lab traffic pod-a pod-b --proto udp` sends it.
    let pod_b = lab.endpoint("pod-b").unwrap().addr;
    common::send_udp_dropped_out(&pod_a, (pod_b, 5001).into(), 4);
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    if lab_cli::kernel::node::container().is_some() {
        assert!(
            stderr.contains("tracing this node's namespaces only"),
            "{stderr}"
        );
    }
    let member = format!("{}/pod-a", lab.name());
    // Other tests' drops to port 5001 may show too: this lab's are named.
    let records = text_records(&stdout);
    let rows: Vec<Vec<&str>> = records
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.get(1) == Some(&member.as_str()))
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    let dst = format!("{pod_b}:5001");
    for w in rows {
        assert_eq!(&w[2..4], ["-", "UDP"], "{stdout}");
        assert!(
            w.contains(&"NETFILTER_DROP") && w.contains(&dst.as_str()),
            "{stdout}"
        );
    }
}

/// An AF_UNIX buffer freed unread (SOCKET_CLOSE) has no device and a
/// socket, but it is not a network packet: it stays out of its namespace
/// (`?`, seen by `--scope all`), while the namespace's local-out UDP drops
/// are in it.
#[test]
fn unix_socket_buffers_stay_out_of_the_namespace() {
    if !common::privileged("unix_socket_buffers_stay_out_of_the_namespace") {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    let ns = common::netns("labtest-ux");
    common::drop_udp_out(&ns, OUT_PORT);
    let mut everywhere = options(&ns);
    everywhere.filters.netns = None;
    let results = trace_all(vec![options(&ns), everywhere], || {
        for _ in 0..3 {
            let (a, b) = ns.run(UnixDatagram::pair).unwrap().unwrap();
            a.send(b"unread").unwrap();
            drop(b);
        }
        common::send_udp_dropped_out(&ns, (Ipv4Addr::LOCALHOST, OUT_PORT).into(), 2);
    });
    let (drops, summary) = &results[0];
    assert_eq!(
        summary.by_reason,
        BTreeMap::from([("NETFILTER_DROP".to_owned(), 2)]),
        "{drops:#?}"
    );
    // Other tests' unix buffers may be freed too: at least ours, all `?`.
    let unix: Vec<&Value> = results[1]
        .0
        .iter()
        .filter(|d| {
            d["reason"] == "SOCKET_CLOSE"
                && d["location"]
                    .as_str()
                    .unwrap()
                    .starts_with("unix_release_sock")
        })
        .collect();
    assert!(unix.len() >= 3, "{:#?}", results[1].0);
    assert!(
        unix.iter()
            .all(|d| d["netns"] == "?" && d["netns_ino"] == 0)
    );
}

/// The namespaces of lab `lab` (its nodes' and pods'), as a session's scope.
fn lab_scope(lab: &lab_cli::lab::Lab) -> session::Scope {
    let inodes: std::collections::BTreeSet<u64> =
        lab.state.namespaces.iter().map(|r| r.inode).collect();
    session::Scope(Box::new(move || inodes.clone()))
}

/// Every drop in lab `lab`'s namespaces, policy drops named by its policies.
fn lab_options(lab: &lab_cli::lab::Lab) -> TraceOptions {
    TraceOptions {
        duration: Some(Duration::from_secs(60)),
        netns_aliases: Some(names::member_names),
        scope: Some(lab_scope(lab)),
        policy_names: Some(lab_cli::lab::policy::drop_namer()),
        ..TraceOptions::default()
    }
}

/// The namespace of the node pod `pod` of `lab` runs on, and its address.
fn node_of(lab: &lab_cli::lab::Lab, pod: &str) -> (NetNs, Ipv4Addr) {
    let p = lab.plan.find_pod(pod).unwrap();
    let node = &lab.plan.nodes[p.node].name;
    (lab.netns(node).unwrap(), p.addr)
}

/// Plants what a policy datapath does in `pod`'s node: UDP from `from` to
/// `to`:`port` marked `mark` (0: left alone) and dropped in the forward
/// hook. Table `ip labtest_pol` (a chain each call).
fn plant_drop(
    lab: &lab_cli::lab::Lab,
    at_node_of: &str,
    from: &str,
    to: &str,
    port: u16,
    mark: u32,
) {
    let (node, _) = node_of(lab, at_node_of);
    let (src, dst) = (
        lab.endpoint(from).unwrap().addr,
        lab.endpoint(to).unwrap().addr,
    );
    let set_mark = if mark == 0 {
        String::new()
    } else {
        format!("meta mark set {mark:#x} ")
    };
    common::nft(
        &node,
        &format!(
            "table ip labtest_pol {{ chain fwd_{from}_{port} {{ type filter hook forward priority -10; ip saddr {src} ip daddr {dst} udp dport {port} counter {set_mark}drop; }}; }}\n"
        ),
    );
}

/// Sends `n` datagrams from pod `from` to pod `to`:`port`.
fn send_pod_udp(lab: &lab_cli::lab::Lab, from: &str, to: &str, port: u16, n: u32) {
    let ns = lab.netns(from).unwrap();
    let dst = lab.endpoint(to).unwrap().addr;
    let socket = ns
        .run(|| std::net::UdpSocket::bind("0.0.0.0:0"))
        .expect("enter netns")
        .expect("bind");
    for i in 0..n {
        socket.send_to(&i.to_be_bytes(), (dst, port)).expect("send");
    }
}

/// `labctl policy apply -f` of `yaml` in lab `lab`.
fn apply_policy(lab: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["policy", "apply", "--lab", lab, "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::said(&out.stderr));
}

/// `labctl observe --lab LAB -o json`, attached.
fn observe_lab(lab: &str, dir: &std::path::Path) -> std::process::Child {
    let ready = dir.join("observe-ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["observe", "--lab", lab, "-o", "json", "--ready-file"])
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut child, &ready);
    child
}

/// Stops an observer (Ctrl-C) and returns its DROPPED flows.
fn observed_drops(child: std::process::Child) -> Vec<Value> {
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "observe exited with {}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|l| l.get("flow").cloned())
        .filter(|f| f["verdict"] == "DROPPED")
        .collect()
}

const DEATHSTAR_EMPIRE_ONLY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deathstar-empire-only
spec:
  podSelector:
    matchLabels: {class: deathstar}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {org: empire}
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: xwing-dns-only
spec:
  podSelector:
    matchLabels: {class: xwing}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
    ports: [{port: 53, protocol: UDP}]
  # Its way to the deathstar is left to the deathstar's ingress.
  - to:
    - podSelector:
        matchLabels: {class: deathstar}
    ports: [{port: 80, protocol: UDP}]
"#;

#[test]
fn policy_drops_are_named_with_their_direction_policy_and_pods() {
    if !common::privileged("policy_drops_are_named_with_their_direction_policy_and_pods") {
        return;
    }
    let lab = common::lab_with(
        "starwars",
        "trpol",
        lab_cli::lab::plan::LabOptions {
            policy_mode: Some(lab_cli::policy::PolicyMode::Netfilter),
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    apply_policy(&name, DEATHSTAR_EMPIRE_ONLY);
    // What the netfilter datapath does for these policies: deathstar-1's
    // ingress denies the xwing (default deny), the xwing's egress denies
    // the tiefighter; and a plain drop no policy has anything to do with.
    let ingress = lab_common::verdict::mark(false, false);
    let egress = lab_common::verdict::mark(true, false);
    plant_drop(&lab, "deathstar-1", "xwing", "deathstar-1", 80, ingress);
    plant_drop(&lab, "xwing", "xwing", "tiefighter", 5000, egress);
    plant_drop(&lab, "tiefighter", "coredns", "tiefighter", 7, 0);
    let n = 5;

    let dir = tempfile::tempdir().unwrap();
    let observer = observe_lab(&name, dir.path());
    let counter = lab_cli::drops::counter::DropCounter::attach(None).unwrap();
    let mut exporter =
        lab_cli::metrics::Exporter::start(lab_cli::kernel::netns::Selection::Listed(Vec::new()))
            .unwrap();
    let only_policy = TraceOptions {
        filters: Filters {
            reasons: vec!["POLICY_DENIED".into()],
            ..Default::default()
        },
        ..lab_options(&lab)
    };
    let classic = TraceOptions {
        classic_tracepoint: true,
        ..lab_options(&lab)
    };
    let mut results = trace_all(vec![lab_options(&lab), only_policy, classic], || {
        send_pod_udp(&lab, "xwing", "deathstar-1", 80, n);
        send_pod_udp(&lab, "xwing", "tiefighter", 5000, n);
        send_pod_udp(&lab, "coredns", "tiefighter", 7, n);
    });
    let flows = observed_drops(observer);
    let (classic, _) = results.pop().unwrap();
    let (filtered, filtered_summary) = results.pop().unwrap();
    let (drops, summary) = results.pop().unwrap();
    // The classic tracepoint reads the mark too: the same drops, named alike.
    let named = |ds: &[Value]| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = ds
            .iter()
            .map(|d| {
                (
                    d["reason"].to_string(),
                    d["policy"]["direction"].to_string(),
                    d["policy"]["policies"].to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(named(&classic), named(&drops));
    // The drop counter (metrics, demo) counts them by the mark's name.
    let lab_inodes: std::collections::BTreeSet<u32> = lab
        .state
        .namespaces
        .iter()
        .map(|r| r.inode as u32)
        .collect();
    let mut counted = BTreeMap::new();
    for (key, k) in counter.counts().unwrap() {
        if lab_inodes.contains(&key.netns_ino) {
            *counted.entry(counter.name(&key)).or_insert(0) += k;
        }
    }
    assert_eq!(
        counted.get("POLICY_DENIED"),
        Some(&(2 * u64::from(n))),
        "{counted:?}"
    );
    // metrics: drops by reason, policy drops by direction too.
    let scraped = exporter.scrape().unwrap();
    let with = |family: &str, labels: &str| {
        scraped
            .lines()
            .filter(|l| l.starts_with(family) && l.contains(labels))
            .filter(|l| l.contains(&format!("netns=\"{name}/node")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        with("labctl_drops_total{", "reason=\"POLICY_DENIED\""),
        2 * u64::from(n),
        "{scraped}"
    );
    assert_eq!(
        with("labctl_policy_drops_total{", "direction=\"ingress\""),
        u64::from(n),
        "{scraped}"
    );
    assert_eq!(
        with("labctl_policy_drops_total{", "direction=\"egress\""),
        u64::from(n),
        "{scraped}"
    );
    assert_eq!(
        counted.get("NETFILTER_DROP"),
        Some(&u64::from(n)),
        "{counted:?}"
    );

    let pod = |p: &str| format!("{name}/{p}");
    let of = |d: &Value, port: u64| d["dport"] == port;
    let ingress_drops: Vec<&Value> = drops.iter().filter(|d| of(d, 80)).collect();
    let egress_drops: Vec<&Value> = drops.iter().filter(|d| of(d, 5000)).collect();
    let plain: Vec<&Value> = drops.iter().filter(|d| of(d, 7)).collect();
    assert_eq!(
        (ingress_drops.len(), egress_drops.len(), plain.len()),
        (n as usize, n as usize, n as usize),
        "{drops:#?}"
    );
    assert_eq!(
        summary.by_reason.get("POLICY_DENIED"),
        Some(&(2 * u64::from(n)))
    );
    assert_eq!(summary.lost, 0);
    for d in &ingress_drops {
        assert_eq!(d["reason"], "POLICY_DENIED");
        assert_eq!(d["reason_code"], 133);
        let p = &d["policy"];
        assert_eq!(p["direction"], "ingress");
        assert_eq!(p["kernel_reason"], "NETFILTER_DROP");
        assert_eq!(p["mark"], "0x1ab50000");
        assert_eq!(p["lab"], name.as_str());
        assert_eq!(p["from"], pod("xwing"));
        assert_eq!(p["to"], pod("deathstar-1"));
        assert_eq!(p["pod"], pod("deathstar-1"));
        assert_eq!(
            p["policies"],
            serde_json::json!([{"kind": "NetworkPolicy", "namespace": "default", "name": "deathstar-empire-only"}])
        );
        assert_eq!(p["rule"], Value::Null);
        assert!(p["src_identity"].as_u64().unwrap() >= 256, "{p}");
        assert!(p["dst_identity"].as_u64().unwrap() >= 256, "{p}");
        assert_ne!(p["src_identity"], p["dst_identity"]);
        assert!(p.get("note").is_none(), "{p}");
    }
    for d in &egress_drops {
        assert_eq!(d["reason"], "POLICY_DENIED");
        let p = &d["policy"];
        assert_eq!(p["direction"], "egress");
        assert_eq!(p["pod"], pod("xwing"));
        assert_eq!(p["to"], pod("tiefighter"));
        assert_eq!(p["policies"][0]["name"], "xwing-dns-only");
    }
    for d in &plain {
        assert_eq!(d["reason"], "NETFILTER_DROP");
        assert!(d.get("policy").is_none(), "{d}");
    }
    // --reason POLICY_DENIED: the policy drops, not the plain one.
    assert_eq!(filtered.len(), 2 * n as usize, "{filtered:#?}");
    assert!(filtered.iter().all(|d| d["reason"] == "POLICY_DENIED"));
    assert_eq!(
        filtered_summary.by_reason.keys().collect::<Vec<_>>(),
        ["POLICY_DENIED"]
    );

    // observe: Hubble's fields.
    let flow_to = |port: u64| -> Vec<&Value> {
        flows
            .iter()
            .filter(|f| f["l4"]["UDP"]["destination_port"] == port)
            .collect()
    };
    let (fi, fe, fp) = (flow_to(80), flow_to(5000), flow_to(7));
    assert_eq!(
        (fi.len(), fe.len(), fp.len()),
        (n as usize, n as usize, n as usize)
    );
    for f in &fi {
        assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
        assert_eq!(f["drop_reason"], 133);
        assert_eq!(f["traffic_direction"], "INGRESS");
        assert_eq!(f["source"]["pod_name"], "xwing");
        assert_eq!(f["destination"]["pod_name"], "deathstar-1");
        assert_eq!(f["ingress_denied_by"][0]["name"], "deathstar-empire-only");
        assert_eq!(f["ingress_denied_by"][0]["namespace"], "default");
        assert!(f.get("egress_denied_by").is_none());
    }
    for f in &fe {
        assert_eq!(f["traffic_direction"], "EGRESS");
        assert_eq!(f["source"]["pod_name"], "xwing");
        assert_eq!(f["destination"]["pod_name"], "tiefighter");
        assert_eq!(f["egress_denied_by"][0]["name"], "xwing-dns-only");
    }
    for f in &fp {
        // Not one of Hubble's reasons: in labctl's extension only.
        assert!(f.get("drop_reason_desc").is_none(), "{f}");
        assert_eq!(f["labctl"]["drop_reason"], "NETFILTER_DROP");
        assert!(f.get("traffic_direction").is_none(), "{f}");
    }
}

#[test]
fn a_deny_rule_drop_is_policy_deny_with_its_rule() {
    if !common::privileged("a_deny_rule_drop_is_policy_deny_with_its_rule") {
        return;
    }
    // Deny rules are Cilium's: a lab whose policies Cilium reads.
    let lab = common::lab_with(
        "starwars",
        "trdeny",
        lab_cli::lab::plan::LabOptions {
            policy_mode: Some(lab_cli::policy::PolicyMode::Ebpf),
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    apply_policy(
        &name,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: no-rebels\nspec:\n  endpointSelector:\n    matchLabels: {class: deathstar}\n  ingressDeny:\n  - fromEndpoints:\n    - matchLabels: {org: alliance}\n",
    );
    let deny = lab_common::verdict::mark(false, true);
    plant_drop(&lab, "deathstar-2", "xwing", "deathstar-2", 80, deny);
    let n = 4;
    let dir = tempfile::tempdir().unwrap();
    let observer = observe_lab(&name, dir.path());
    let only_deny = TraceOptions {
        filters: Filters {
            reasons: vec!["POLICY_DENY".into()],
            ..Default::default()
        },
        ..lab_options(&lab)
    };
    let exclude_deny = TraceOptions {
        filters: Filters {
            exclude_reasons: vec!["POLICY_DENY".into()],
            ..Default::default()
        },
        ..lab_options(&lab)
    };
    let mut results = trace_all(vec![only_deny, exclude_deny], || {
        send_pod_udp(&lab, "xwing", "deathstar-2", 80, n);
    });
    let flows = observed_drops(observer);
    let (excluded, _) = results.pop().unwrap();
    let (drops, summary) = results.pop().unwrap();
    assert_eq!(drops.len(), n as usize, "{drops:#?}");
    assert_eq!(summary.by_reason.get("POLICY_DENY"), Some(&u64::from(n)));
    assert!(
        excluded.iter().all(|d| d["reason"] != "POLICY_DENY"),
        "{excluded:#?}"
    );
    for d in &drops {
        assert_eq!(d["reason"], "POLICY_DENY");
        assert_eq!(d["reason_code"], 181);
        let p = &d["policy"];
        assert_eq!(p["direction"], "ingress");
        assert_eq!(p["pod"], format!("{name}/deathstar-2"));
        assert_eq!(p["policies"][0]["kind"], "CiliumNetworkPolicy");
        assert_eq!(p["policies"][0]["name"], "no-rebels");
        let rule = p["rule"].as_str().unwrap();
        assert!(
            rule.starts_with("default/no-rebels ingressDeny[0] ("),
            "{rule}"
        );
    }
    let denied: Vec<&Value> = flows
        .iter()
        .filter(|f| f["drop_reason_desc"] == "POLICY_DENY")
        .collect();
    assert_eq!(denied.len(), n as usize, "{flows:#?}");
    for f in &denied {
        assert_eq!(f["drop_reason"], 181);
        assert_eq!(f["traffic_direction"], "INGRESS");
        assert_eq!(f["ingress_denied_by"][0]["name"], "no-rebels");
        assert_eq!(f["ingress_denied_by"][0]["kind"], "CiliumNetworkPolicy");
        assert_eq!(f["destination"]["pod_name"], "deathstar-2");
    }
}

/// The one's-complement sum of `data` (16-bit words), for the ICMPv6
/// checksum.
fn ones_sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// An MLDv2 report as the kernel sends one (RFC 3810): an IPv6 header to
/// ff02::16 with hop limit 1, a hop-by-hop header with the router alert
/// option, and the ICMPv6 report (type 143) with one record joining
/// `group`.
fn mld_report(src: Ipv6Addr, group: Ipv6Addr) -> Vec<u8> {
    let dst: Ipv6Addr = "ff02::16".parse().unwrap();
    let mut icmp = vec![143, 0, 0, 0, 0, 0, 0, 1];
    // CHANGE_TO_EXCLUDE_MODE, no aux data, no sources.
    icmp.extend_from_slice(&[4, 0, 0, 0]);
    icmp.extend_from_slice(&group.octets());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let mut sum = ones_sum(&pseudo) + ones_sum(&icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    // Next header ICMPv6, length 0 (8 bytes): router alert (MLD), PadN.
    let hop_by_hop = [58, 0, 5, 2, 0, 0, 1, 0];
    let payload = hop_by_hop.len() + icmp.len();
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(payload as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 1]); // next header hop-by-hop, hop limit 1
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&hop_by_hop);
    packet.extend_from_slice(&icmp);
    packet
}

/// tshark's view of a pcap's IPv6 packets: per packet the first next
/// header, the ICMPv6 type, the destination and the source.
fn tshark_icmpv6(pcap: &[u8]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mld.pcapng");
    std::fs::write(&file, pcap).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "ipv6.nxt", "-e", "icmpv6.type", "-e", "ipv6.dst"])
        .args(["-e", "ipv6.src"])
        .output()
        .expect("run tshark (scripts/setup.sh installs it)");
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

#[test]
fn mld_reports_behind_a_hop_by_hop_header_are_icmpv6() {
    if !common::privileged("mld_reports_behind_a_hop_by_hop_header_are_icmpv6") {
        return;
    }
    let ns = common::netns("labtest-mld");
    common::enable_ipv6_on_lo(&ns);
    // A multicast link (a veth pair). Our reports come from fe80::1ab5,
    // an address of no interface, so the OUTPUT rule drops them and
    // nothing else (the kernel's own reports come from fe80::1).
    ip_netns_exec(
        &ns,
        &[
            "ip", "link", "add", "labmld0", "type", "veth", "peer", "name", "labmld1",
        ],
    );
    for dev in ["labmld0", "labmld1"] {
        ip_netns_exec(&ns, &["ip", "link", "set", dev, "addrgenmode", "none"]);
        ip_netns_exec(&ns, &["ip", "link", "set", dev, "up"]);
    }
    ip_netns_exec(
        &ns,
        &["ip", "addr", "add", "fe80::1/64", "dev", "labmld0", "nodad"],
    );
    common::nft(
        &ns,
        "table ip6 labtest_mld { chain out { type filter hook output priority 0; ip6 saddr fe80::1ab5 ip6 daddr ff02::16 counter drop; }; }\n",
    );
    let ifindex = ns
        .run(|| nix::net::if_::if_nametoindex("labmld0"))
        .unwrap()
        .unwrap();
    // A raw IPv6 socket with the header included, as a host's MLD sends.
    let socket = ns
        .run(|| {
            nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet6,
                nix::sys::socket::SockType::Raw,
                nix::sys::socket::SockFlag::empty(),
                nix::sys::socket::SockProtocol::Raw,
            )
        })
        .unwrap()
        .unwrap();
    let group: Ipv6Addr = "ff15::1ab5".parse().unwrap();
    let report = mld_report("fe80::1ab5".parse().unwrap(), group);
    let to = nix::sys::socket::SockaddrIn6::from(std::net::SocketAddrV6::new(
        "ff02::16".parse().unwrap(),
        0,
        0,
        ifindex,
    ));
    let n = 4u32;

    let dir = tempfile::tempdir().unwrap();
    let (pcap, ready) = (dir.path().join("mld.pcapng"), dir.path().join("ready"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["trace", "--netns", ns.name(), "-o", "json", "--pcap"])
        .arg(&pcap)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut child, &ready);
    let observe_ready = dir.path().join("observe-ready");
    let mut observer = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["observe", "--netns", ns.name(), "--protocol", "icmpv6"])
        .args(["-o", "json", "--ready-file"])
        .arg(&observe_ready)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut observer, &observe_ready);
    let icmpv6 = TraceOptions {
        filters: Filters {
            proto: Some("icmpv6".into()),
            ..options(&ns).filters
        },
        ..options(&ns)
    };
    let udp = TraceOptions {
        filters: Filters {
            proto: Some("udp".into()),
            ..options(&ns).filters
        },
        ..options(&ns)
    };
    let mut results = trace_all(vec![icmpv6, udp], || {
        for _ in 0..n {
            let sent = nix::sys::socket::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                &report,
                &to,
                nix::sys::socket::MsgFlags::empty(),
            );
            // The OUTPUT rule drops it: the kernel tells the sender.
            assert_eq!(sent, Err(nix::errno::Errno::EPERM));
        }
    });
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let flows = observed_drops(observer);
    let ours: Vec<&Value> = flows
        .iter()
        .filter(|f| f["IP"]["source"] == "fe80::1ab5")
        .collect();
    assert_eq!(ours.len(), n as usize, "{flows:#?}");
    for f in &ours {
        assert_eq!(f["IP"]["ipVersion"], "IPv6");
        assert_eq!(f["l4"]["ICMPv6"]["type"], 143);
        // Hubble's summary, with the kernel's reason Hubble has no value for.
        assert_eq!(
            f["Summary"],
            "ICMPv6 MLDv2MulticastListenerReport (kernel: NETFILTER_DROP)"
        );
    }
    let (udp_drops, _) = results.pop().unwrap();
    let (icmp_drops, _) = results.pop().unwrap();
    let drops: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "drop")
        .collect();

    // The kernel's own count agrees.
    assert_eq!(common::nft_counted(&ns, "ip6", "labtest_mld"), u64::from(n));
    // Nothing in the namespace is left unparsed behind its extension
    // headers.
    assert!(drops.iter().all(|d| d["proto"] != "IP(0)"), "{drops:#?}");
    let drops: Vec<Value> = drops
        .into_iter()
        .filter(|d| d["src"] == "fe80::1ab5")
        .collect();
    assert_eq!(drops.len(), n as usize, "{drops:#?}");
    for d in &drops {
        assert_eq!(d["reason"], "NETFILTER_DROP");
        assert_eq!(d["proto"], "ICMPv6");
        assert_eq!(d["icmp_type"], 143);
        assert_eq!(d["icmp_code"], 0);
        assert_eq!(d["dst"], "ff02::16");
        // Dropped on its way out, before it was given its device.
        assert_eq!(d["ifname"], Value::Null);
        assert!(d.get("fragment").is_none());
    }
    // --proto icmpv6 keeps them; --proto udp has none.
    let ours = |ds: &[Value]| ds.iter().filter(|d| d["src"] == "fe80::1ab5").count();
    assert_eq!(ours(&icmp_drops), n as usize);
    assert!(
        icmp_drops
            .iter()
            .filter(|d| d["src"] == "fe80::1ab5")
            .all(|d| d["icmp_type"] == 143)
    );
    assert_eq!(ours(&udp_drops), 0, "{udp_drops:#?}");
    // tshark reads the same packets: hop-by-hop first, then MLDv2.
    let packets: Vec<Vec<String>> = tshark_icmpv6(&std::fs::read(&pcap).unwrap())
        .into_iter()
        .filter(|p| p[3] == "fe80::1ab5")
        .collect();
    assert_eq!(packets.len(), n as usize);
    for p in &packets {
        assert_eq!(p, &["0", "143", "ff02::16", "fe80::1ab5"], "{packets:?}");
    }
}

#[test]
fn fragments_show_ports_on_the_first_only() {
    if !common::privileged("fragments_show_ports_on_the_first_only") {
        return;
    }
    let ns = common::netns("labtest-frag");
    common::enable_ipv6_on_lo(&ns);
    // The smallest IPv6 link: a 3000-byte datagram leaves in 3 fragments
    // (1232 + 1232 + 544 bytes of it), dropped one by one on their way
    // in, before reassembly.
    ip_netns_exec(&ns, &["ip", "link", "set", "lo", "mtu", "1280"]);
    common::nft(
        &ns,
        "table ip6 labtest_frag { chain pre { type filter hook prerouting priority -300; ip6 daddr ::1 ip6 nexthdr ipv6-frag counter drop; }; }\n",
    );
    let datagrams = 3u32;
    let port = TraceOptions {
        filters: Filters {
            port: Some(9),
            ..options(&ns).filters
        },
        ..options(&ns)
    };
    let udp = TraceOptions {
        filters: Filters {
            proto: Some("udp".into()),
            ..options(&ns).filters
        },
        ..options(&ns)
    };
    let mut results = trace_all(vec![options(&ns), port, udp], || {
        let socket = ns
            .run(|| std::net::UdpSocket::bind("[::1]:0"))
            .expect("enter netns")
            .expect("bind ::1");
        for _ in 0..datagrams {
            socket.send_to(&[7u8; 3000], "[::1]:9").expect("send");
        }
    });
    let (udp_drops, _) = results.pop().unwrap();
    let (port_drops, _) = results.pop().unwrap();
    let (drops, summary) = results.pop().unwrap();
    let fragments = 3 * datagrams as usize;
    assert_eq!(
        common::nft_counted(&ns, "ip6", "labtest_frag"),
        fragments as u64
    );
    assert_eq!(drops.len(), fragments, "{drops:#?}");
    assert_eq!(
        summary.by_reason.get("NETFILTER_DROP"),
        Some(&(fragments as u64))
    );
    let first: Vec<&Value> = drops.iter().filter(|d| d["fragment"] == "first").collect();
    let later: Vec<&Value> = drops.iter().filter(|d| d["fragment"] == "later").collect();
    assert_eq!((first.len(), later.len()), (3, 6), "{drops:#?}");
    for d in &drops {
        assert_eq!(d["proto"], "UDP");
        assert_eq!(d["src"], "::1");
        assert_eq!(d["dst"], "::1");
    }
    for d in &first {
        assert_eq!(d["dport"], 9);
        assert!(d["sport"].as_u64().unwrap() > 0);
    }
    for d in &later {
        assert_eq!(d["dport"], Value::Null);
        assert_eq!(d["sport"], Value::Null);
    }
    // --port 9: only the first fragments carry it; --proto udp: all.
    assert_eq!(port_drops.len(), 3, "{port_drops:#?}");
    assert!(port_drops.iter().all(|d| d["fragment"] == "first"));
    assert_eq!(udp_drops.len(), fragments);
}
