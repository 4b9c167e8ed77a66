//! Privileged: `labctl conntrack` against the peer tool (conntrack-tools)
//! and against real traffic on the lab fixture.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    conntrack::{entry::Source, join, netlink::Ctnetlink, tracker::CtTracker},
    kernel::netns::NetNs,
    lab::traffic::{self, Proto, TrafficSpec},
};
use serde_json::Value;

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

/// Runs a shell script inside `ns` (children inherit the thread's netns).
fn sh(ns: &NetNs, script: &str) -> String {
    let out = ns
        .run(|| {
            let mut child = Command::new("sh")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Since Linux 4.15 netfilter registers conntrack's hooks in a namespace
/// only once something there needs them (a ct expression, NAT); a rule
/// matching on ct state makes real traffic tracked, as it is on any node.
fn enable_conntrack(ns: &NetNs) {
    sh(
        ns,
        "nft add table ip labtest\n\
         nft add chain ip labtest out '{ type filter hook output priority 0; }'\n\
         nft add rule ip labtest out ct state new counter\n",
    );
}

/// One entry reduced to what both tools print, for comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Flat {
    proto: String,
    state: String,
    orig: Vec<(String, String)>,
    reply: Vec<(String, String)>,
    assured: bool,
    unreplied: bool,
    mark: u32,
    zone: u16,
}

/// Parses `conntrack -L -o extended` (timeout returned apart).
fn parse_conntrack(text: &str) -> Vec<(Flat, u32)> {
    text.lines()
        .filter(|l| l.starts_with("ipv4"))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let timeout = words[4].parse().unwrap();
            let mut flat = Flat {
                proto: words[2].into(),
                state: "-".into(),
                orig: vec![],
                reply: vec![],
                assured: false,
                unreplied: false,
                mark: 0,
                zone: 0,
            };
            let mut in_reply = false;
            for w in &words[5..] {
                match w.split_once('=') {
                    None if *w == "[ASSURED]" => flat.assured = true,
                    None if *w == "[UNREPLIED]" => flat.unreplied = true,
                    None if !w.starts_with('[') => flat.state = (*w).into(),
                    None => {}
                    Some(("mark", v)) => flat.mark = v.parse().unwrap(),
                    Some(("zone", v)) => flat.zone = v.parse().unwrap(),
                    Some(("use", _)) => {}
                    Some((k, v)) => {
                        if k == "src" && !flat.orig.is_empty() {
                            in_reply = true;
                        }
                        let side = if in_reply {
                            &mut flat.reply
                        } else {
                            &mut flat.orig
                        };
                        side.push((k.into(), v.into()));
                    }
                }
            }
            (flat, timeout)
        })
        .collect()
}

/// The same reduction of one `labctl conntrack list --output json` line.
fn flatten_json(v: &Value) -> (Flat, u32) {
    let side = |t: &Value, c: &Value| {
        let mut kv = vec![
            ("src".to_owned(), t["src"].as_str().unwrap().to_owned()),
            ("dst".to_owned(), t["dst"].as_str().unwrap().to_owned()),
        ];
        for (key, name) in [
            ("sport", "sport"),
            ("dport", "dport"),
            ("icmp_type", "type"),
            ("icmp_code", "code"),
            ("icmp_id", "id"),
        ] {
            if let Some(n) = t[key].as_u64() {
                kv.push((name.into(), n.to_string()));
            }
        }
        if c.is_object() {
            kv.push(("packets".into(), c["packets"].to_string()));
            kv.push(("bytes".into(), c["bytes"].to_string()));
        }
        kv
    };
    let flags: Vec<&str> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    (
        Flat {
            proto: v["proto"].as_str().unwrap().into(),
            state: v["state"].as_str().unwrap_or("-").into(),
            orig: side(&v["orig"], &v["orig_counters"]),
            reply: side(&v["reply"], &v["reply_counters"]),
            assured: flags.contains(&"ASSURED"),
            unreplied: !flags.contains(&"SEEN_REPLY"),
            mark: v["mark"].as_u64().unwrap() as u32,
            zone: v["zone"].as_u64().unwrap() as u16,
        },
        v["timeout"].as_u64().unwrap() as u32,
    )
}

fn labctl_list(ns: &NetNs, extra: &[&str]) -> Vec<Value> {
    let out = labctl()
        .args([
            "conntrack",
            "list",
            "--netns",
            ns.name(),
            "--output",
            "json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// At least 1,000 entries of mixed kinds: TCP in several states, UDP, ICMP,
/// source- and destination-NATed flows, marks and zones, from conntrack -I,
/// plus real flows on lo with accounting.
fn fill_table(ns: &NetNs) {
    enable_conntrack(ns);
    let mut script = String::from("sysctl -qw net.netfilter.nf_conntrack_acct=1\n");
    let states = [
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT",
        "CLOSE_WAIT",
        "TIME_WAIT",
    ];
    for i in 0..1000u32 {
        let (a, b) = (i / 250, i % 250 + 1);
        let src = format!("10.{a}.0.{b}");
        let line = match i % 8 {
            0..=2 => format!(
                "conntrack -I -p tcp -s {src} -d 10.96.0.1 --sport {} --dport 443 --state {} -t 300 -u SEEN_REPLY,ASSURED -m {}",
                20000 + i,
                states[i as usize % states.len()],
                i % 3
            ),
            3 => format!(
                "conntrack -I -p udp -s {src} -d 1.1.1.1 --sport {} --dport 53 -t 30",
                30000 + i
            ),
            // Source NAT, set up by the kernel as masquerade does.
            4 => format!(
                "conntrack -I -p udp -s {src} -d 1.1.1.1 --sport {p} --dport 53 --src-nat 172.18.0.2 -t 60 -u SEEN_REPLY",
                p = 30000 + i
            ),
            // Destination NAT: a Service address answered by a pod.
            5 => format!(
                "conntrack -I -p tcp -s {src} -d 10.96.0.10 --sport {p} --dport 80 --dst-nat 10.244.1.3:8080 --state ESTABLISHED -t 300 -u SEEN_REPLY -w 2",
                p = 40000 + i
            ),
            6 => format!(
                "conntrack -I -p icmp -s {src} -d 10.0.0.254 --icmp-type 8 --icmp-code 0 --icmp-id {} -t 30",
                i
            ),
            _ => format!(
                "conntrack -I -p tcp -s {src} -d 10.96.0.1 --sport {} --dport 80 --state ESTABLISHED -t 200 -u SEEN_REPLY -m 7 -w 3",
                50000 + i
            ),
        };
        script.push_str(&line);
        script.push_str(" 2>/dev/null\n");
    }
    sh(ns, &script);
    // Real flows with counters: a TCP exchange, UDP and ping on lo.
    ns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 7001)).unwrap();
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, 7001)).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        c.write_all(b"hello").unwrap();
        s.write_all(b"world!").unwrap();
        let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for _ in 0..3 {
            u.send_to(b"x", (Ipv4Addr::LOCALHOST, 9)).unwrap();
        }
    })
    .unwrap();
}

#[test]
fn list_matches_conntrack_tools_entry_for_entry() {
    if !common::privileged("list_matches_conntrack_tools_entry_for_entry") {
        return;
    }
    let ns = common::netns("labtest-ct");
    fill_table(&ns);
    let ours: Vec<(Flat, u32)> = labctl_list(&ns, &[]).iter().map(flatten_json).collect();
    let theirs = parse_conntrack(&sh(&ns, "conntrack -L -o extended 2>/dev/null"));
    assert!(theirs.len() >= 1000, "only {} entries", theirs.len());
    let a: BTreeSet<&Flat> = ours.iter().map(|(f, _)| f).collect();
    let b: BTreeSet<&Flat> = theirs.iter().map(|(f, _)| f).collect();
    assert_eq!(ours.len(), theirs.len());
    let only_ours: Vec<_> = a.difference(&b).take(3).collect();
    let only_theirs: Vec<_> = b.difference(&a).take(3).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only labctl: {only_ours:#?}\nonly conntrack: {only_theirs:#?}"
    );
    // Timeouts agree within the seconds between the two reads.
    let theirs_t: BTreeMap<&Flat, u32> = theirs.iter().map(|(f, t)| (f, *t)).collect();
    for (f, t) in &ours {
        assert!(
            t.abs_diff(theirs_t[f]) <= 3,
            "{f:?}: {t} vs {}",
            theirs_t[f]
        );
    }
    // The real flows carry counters: the TCP exchange, both ways.
    let tcp = ours
        .iter()
        .find(|(f, _)| f.orig.contains(&("dport".into(), "7001".into())))
        .unwrap();
    assert!(tcp.0.orig.iter().any(|(k, v)| k == "packets" && v != "0"));
}

#[test]
fn filters_agree_with_conntrack_tools() {
    if !common::privileged("filters_agree_with_conntrack_tools") {
        return;
    }
    let ns = common::netns("labtest-ctf");
    fill_table(&ns);
    let count_theirs = |args: &str| {
        parse_conntrack(&sh(
            &ns,
            &format!("conntrack -L -o extended {args} 2>/dev/null"),
        ))
        .len()
    };
    for (ours, theirs) in [
        (vec!["--snat"], "--src-nat"),
        (vec!["--dnat"], "--dst-nat"),
        (vec!["--any-nat"], "--any-nat"),
        (vec!["--mark", "7"], "--mark 7"),
        (vec!["--proto", "icmp"], "-p icmp"),
        (
            vec!["--proto", "tcp", "--state", "TIME_WAIT"],
            "-p tcp --state TIME_WAIT",
        ),
        (vec!["--src", "10.1.0.0/16"], "-s 10.1.0.0/16"),
        (vec!["--zone", "3"], "-w 3"),
        (vec!["--proto", "udp", "--dport", "53"], "-p udp --dport 53"),
    ] {
        let n = labctl_list(&ns, &ours).len();
        assert!(n > 0, "{ours:?} matched nothing");
        assert_eq!(n, count_theirs(theirs), "{ours:?} vs conntrack {theirs}");
    }
    // Bad input: one sentence, exit 2.
    let out = labctl()
        .args([
            "conntrack",
            "list",
            "--netns",
            ns.name(),
            "--src",
            "10.0.0.0/40",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(common::said(&out.stderr).contains("is not an address or CIDR"));
    let out = labctl()
        .args(["conntrack", "list", "--netns", "labtest-no-such-ns"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stats_match_conntrack_tools() {
    if !common::privileged("stats_match_conntrack_tools") {
        return;
    }
    let ns = common::netns("labtest-cts");
    sh(
        &ns,
        "conntrack -I -p udp -s 10.0.0.1 -d 10.0.0.2 --sport 1 --dport 2 -t 60 2>/dev/null",
    );
    let out = labctl()
        .args(["conntrack", "stats", "--netns", ns.name(), "-o", "json"])
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["entries"], 1);
    let max: u64 = sh(&ns, "sysctl -n net.netfilter.nf_conntrack_max")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stats["max"], max);
    let theirs = sh(&ns, "conntrack -S 2>/dev/null");
    let cpus = stats["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), theirs.lines().count());
    for (line, ours) in theirs.lines().zip(cpus) {
        for field in line.split_whitespace().skip(1) {
            let (k, v) = field.split_once('=').unwrap();
            assert_eq!(ours[k].as_u64(), Some(v.parse().unwrap()), "{k} in {line}");
        }
    }
}

fn watch(ns: &NetNs, extra: &[&str], act: impl FnOnce()) -> Vec<Value> {
    let ready: PathBuf =
        std::env::temp_dir().join(lab_cli::kernel::netns::unique_name("labtest-w"));
    let child = labctl()
        .args([
            "conntrack",
            "watch",
            "--netns",
            ns.name(),
            "-o",
            "json",
            "--ready-file",
        ])
        .arg(&ready)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "watch never became ready");
        thread::sleep(Duration::from_millis(10));
    }
    act();
    // Stop right after the traffic: watch still reads what is queued.
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&ready).ok();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn watch_reports_new_update_destroy_in_order() {
    if !common::privileged("watch_reports_new_update_destroy_in_order") {
        return;
    }
    let ns = common::netns("labtest-ctw");
    enable_conntrack(&ns);
    let lines = watch(&ns, &["--dport", "7002"], || {
        ns.run(|| {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 7002)).unwrap();
            let c = TcpStream::connect((Ipv4Addr::LOCALHOST, 7002)).unwrap();
            let (s, _) = listener.accept().unwrap();
            drop(c);
            drop(s);
        })
        .unwrap();
        thread::sleep(Duration::from_millis(200));
        sh(&ns, "conntrack -D -p tcp --dport 7002 2>/dev/null");
    });
    let (events, summary): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|v| v["type"] == "event");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"NEW"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"DESTROY"), "{kinds:?}");
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "UPDATE"),
        "{kinds:?}"
    );
    assert!(kinds.len() >= 3, "{kinds:?}");
    // Updates walk the handshake: the last one is after the close.
    let states: Vec<&str> = events.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(states[0], "SYN_SENT", "{states:?}");
    assert!(states.contains(&"ESTABLISHED"), "{states:?}");
    assert_eq!(summary[0]["overruns"], 0);
}

#[test]
fn watch_survives_a_lost_event_burst_and_resynchronizes() {
    if !common::privileged("watch_survives_a_lost_event_burst_and_resynchronizes") {
        return;
    }
    let ns = common::netns("labtest-ctb");
    enable_conntrack(&ns);
    const FLOWS: u16 = 3000;
    // A 4 KiB receive buffer cannot hold a burst of 3,000 NEW events.
    let lines = watch(&ns, &["--buffer-size", "4096", "--proto", "udp"], || {
        ns.run(|| {
            let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            for port in 0..FLOWS {
                u.send_to(b"x", (Ipv4Addr::LOCALHOST, 20000 + port))
                    .unwrap();
            }
        })
        .unwrap();
    });
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert!(summary["overruns"].as_u64().unwrap() >= 1, "{summary}");
    let new_ports: BTreeSet<u64> = lines
        .iter()
        .filter(|v| v["event"] == "NEW")
        .filter_map(|v| v["orig"]["dport"].as_u64())
        .collect();
    assert_eq!(new_ports.len(), usize::from(FLOWS), "{summary}");
    assert!(lines.iter().any(|v| v["resync"] == true));
}

#[test]
fn the_ebpf_tracker_counts_exactly_what_netfilter_counts() {
    if !common::privileged("the_ebpf_tracker_counts_exactly_what_netfilter_counts") {
        return;
    }
    let lab = common::lab("basic", "ctb");
    let node = lab.netns("node1").unwrap();
    sh(&node, "sysctl -qw net.netfilter.nf_conntrack_acct=1");
    let tracker = CtTracker::attach(Some(&node), "eth0").unwrap();
    let (a, w) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    let run = |proto, count| {
        let spec = TrafficSpec {
            proto,
            count,
            ..TrafficSpec::default()
        };
        assert!(traffic::run(&a, &w, &spec).unwrap().all_answered());
    };
    run(Proto::Tcp, 1);
    run(Proto::Udp, 3);
    run(Proto::Icmp, 2);
    // The TCP flow reaches TIME_WAIT with the last ACK: poll for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let bpf = loop {
        let bpf = tracker.entries().unwrap();
        let done = bpf
            .iter()
            .any(|e| e.proto_num == 6 && e.state.as_deref() == Some("TIME_WAIT"));
        if (bpf.len() == 3 && done) || Instant::now() > deadline {
            break bpf;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let nf = Ctnetlink::open_in(Some(&node)).unwrap().dump(None).unwrap();
    assert_eq!(bpf.len(), 3, "{bpf:#?}");
    let joined = join::join(nf.clone(), bpf.clone());
    for (proto, state) in [(6, Some("TIME_WAIT")), (17, None), (1, None)] {
        let b = bpf.iter().find(|e| e.proto_num == proto).unwrap();
        assert_eq!(b.state.as_deref(), state, "{b:?}");
        // On the uplink the tracker sees the translated flow: the node's address.
        assert_eq!(b.orig.src.to_string(), "172.18.0.2");
        let (n, seen) = joined
            .iter()
            .find(|(e, s)| e.proto_num == proto && s.contains(&Source::Bpf))
            .unwrap_or_else(|| panic!("proto {proto} not joined"));
        assert_eq!(seen, &[Source::Netfilter, Source::Bpf]);
        // Same packets each way; bytes differ by the Ethernet header the
        // tracker sees on eth0 (netfilter counts IP bytes).
        for (ours, theirs) in [
            (b.orig_counters, n.orig_counters),
            (b.reply_counters, n.reply_counters),
        ] {
            let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
            assert_eq!(ours.packets, theirs.packets, "proto {proto}");
            assert_eq!(
                ours.bytes,
                theirs.bytes + 14 * theirs.packets,
                "proto {proto}"
            );
        }
    }
    let udp = bpf.iter().find(|e| e.proto_num == 17).unwrap();
    // 3 datagrams of 56 payload bytes: 20 + 8 + 56 + 14 bytes each.
    assert_eq!(udp.orig_counters.unwrap().packets, 3);
    assert_eq!(udp.orig_counters.unwrap().bytes, 3 * 98);
    assert!(udp.has_flag("SEEN_REPLY"));
}

#[test]
fn track_then_list_all_joins_both_views_and_cleans_up() {
    if !common::privileged("track_then_list_all_joins_both_views_and_cleans_up") {
        return;
    }
    let lab = common::lab("basic", "cttr");
    let node = lab.netns("node1").unwrap();
    // Without a tracker, --source bpf says how to start one.
    let out = labctl()
        .args([
            "conntrack",
            "list",
            "--netns",
            node.name(),
            "--source",
            "bpf",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::said(&out.stderr).contains("labctl conntrack track --iface IF"));
    let ready: PathBuf =
        std::env::temp_dir().join(lab_cli::kernel::netns::unique_name("labtest-tr"));
    let track = labctl()
        .args([
            "conntrack",
            "track",
            "--netns",
            node.name(),
            "--iface",
            "eth0",
            "--ready-file",
        ])
        .arg(&ready)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "track never became ready");
        thread::sleep(Duration::from_millis(10));
    }
    let spec = TrafficSpec {
        proto: Proto::Tcp,
        count: 2,
        ..TrafficSpec::default()
    };
    let (a, w) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    assert!(traffic::run(&a, &w, &spec).unwrap().all_answered());
    let all = labctl_list(&node, &["--source", "all"]);
    let both: Vec<&Value> = all
        .iter()
        .filter(|e| e["seen_by"] == serde_json::json!(["netfilter", "bpf"]))
        .collect();
    assert_eq!(both.len(), 2, "{all:#?}");
    assert!(
        both.iter()
            .all(|e| e["nat_kind"] == "snat" && e["state"] == "TIME_WAIT")
    );
    // Pod addresses are named as pods (LAB/POD); the world is not a pod.
    assert!(
        both.iter()
            .all(|e| e["src_pod"] == format!("{}/pod-a", lab.name()) && e["dst_pod"].is_null()),
        "{both:#?}"
    );
    // --pod / --pod-namespace keep exactly that pod's (those pods') flows.
    let pod_a = labctl_list(&node, &["--pod", &format!("{}/pod-a", lab.name())]);
    assert_eq!(pod_a.len(), 2, "{pod_a:#?}");
    assert!(labctl_list(&node, &["--pod", &format!("{}/pod-b", lab.name())]).is_empty());
    assert_eq!(
        labctl_list(&node, &["--pod-namespace", lab.name()]).len(),
        2
    );
    let node1 = labctl()
        .args(["conntrack", "list", "--netns", node.name(), "--pod"])
        .arg(format!("{}/node1", lab.name()))
        .output()
        .unwrap();
    assert_eq!(node1.status.code(), Some(2), "a node is not a pod");
    common::interrupt(&track);
    let out = track.wait_with_output().unwrap();
    std::fs::remove_file(&ready).ok();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 flows seen by the eBPF tracker on eth0")
    );
    let pins: Vec<_> = std::fs::read_dir(lab_cli::ebpf::pins::root())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let ino = node.inode().unwrap().to_string();
    assert!(
        !pins.iter().any(|p| p.to_string_lossy().contains(&ino)),
        "pin left behind: {pins:?}"
    );
    // No Cilium here: one clear sentence.
    let out = labctl()
        .args(["conntrack", "list", "--source", "cilium"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::said(&out.stderr).contains("Cilium's CT maps are not on this machine"));
}
