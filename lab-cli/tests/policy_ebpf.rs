//! `--policy-mode ebpf` on a live starwars lab, through the `labctl`
//! binary: Cilium's rule1 (only org=empire reaches the deathstar, on TCP
//! 80) and a UDP rule enforced by the tc programs on the pods' veths,
//! counters read back with `labctl policy map`, one verdict event per
//! connection, relabelling that changes an identity and the verdicts, and
//! no pins after `lab down` (also after SIGKILL of `lab up`). The programs'
//! verdicts packet by packet are in `policy_prog.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    process::{Command, Output},
    time::{Duration, Instant},
};

use lab_cli::{
    ebpf::{pins, policy::PolicyMaps},
    kernel::netns::NetNs,
    lab::{
        Lab,
        plan::{LabOptions, Plan},
        scenario,
    },
    policy::PolicyMode,
};
use lab_common::policy::{DIR_INGRESS, MetricsKey, REASON_FORWARDED, REASON_POLICY_DENIED};
use serde_json::Value;

fn labctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(args)
        .output()
        .expect("run labctl")
}

#[track_caller]
fn json(args: &[&str]) -> Value {
    let out = labctl(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        common::said(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const RULES: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
spec:
  description: L3-L4 policy to restrict deathstar access to empire ships only
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: telemetry
spec:
  endpointSelector:
    matchLabels: {class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {class: tiefighter}
    toPorts:
    - ports: [{port: "5353", protocol: UDP}]
"#;

fn pod_ns(lab: &Lab, pod: &str) -> NetNs {
    NetNs::open(&lab.plan.pod(pod).unwrap().netns).unwrap()
}

fn addr(lab: &Lab, pod: &str) -> Ipv4Addr {
    lab.plan.pod(pod).unwrap().addr
}

/// Whether a TCP connection from `pod` to `to` gets through (a timeout:
/// dropped).
fn connects(lab: &Lab, pod: &str, to: SocketAddrV4) -> bool {
    let r = pod_ns(lab, pod)
        .run(|| TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(1)))
        .unwrap();
    match r {
        Ok(_) => true,
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => false,
        Err(e) => panic!("connect {pod} -> {to}: {e}"),
    }
}

/// Sends `n` datagrams of `payload` bytes from one new socket of `pod`.
fn send_udp(lab: &Lab, pod: &str, to: SocketAddrV4, n: u32, payload: usize) {
    let s = pod_ns(lab, pod)
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    for _ in 0..n {
        s.send_to(&vec![b'x'; payload], to).unwrap();
    }
}

fn node_dir(lab: &Lab, node: usize) -> std::path::PathBuf {
    pins::policy(
        NetNs::open(&lab.plan.nodes[node].netns)
            .unwrap()
            .inode()
            .unwrap(),
    )
}

/// The deathstar-1 side's maps (node1).
fn maps(lab: &Lab) -> PolicyMaps {
    PolicyMaps::open(&node_dir(lab, 0)).unwrap()
}

fn metric(maps: &PolicyMaps, ep: u32, reason: u8) -> u64 {
    maps.metrics()
        .unwrap()
        .into_iter()
        .find(|(k, _)| {
            *k == MetricsKey {
                endpoint: ep,
                reason,
                dir: DIR_INGRESS,
                _pad: 0,
            }
        })
        .map_or(0, |(_, v)| v.packets)
}

/// Polls `f` until it returns `want` (10 s at most), then returns what it
/// says.
fn settle<T: PartialEq + std::fmt::Debug>(want: &T, mut f: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = f();
        if got == *want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn map_entry<'a>(map: &'a Value, identity: u64, port_proto: &str) -> &'a Value {
    map["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["identity"] == identity && e["port_proto"] == port_proto)
        .unwrap_or_else(|| panic!("no {identity} {port_proto} in {map}"))
}

#[test]
fn starwars_rule1_is_enforced_counted_and_follows_a_relabel() {
    if !common::privileged("policy_ebpf starwars") {
        return;
    }
    let lab = common::lab_with(
        "starwars",
        "pebpf",
        LabOptions {
            policy_mode: Some(PolicyMode::Ebpf),
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    let dirs = [node_dir(&lab, 0), node_dir(&lab, 1)];
    assert!(dirs.iter().all(|d| d.join("prog-from").exists()));
    let ds1 = addr(&lab, "deathstar-1");
    // deathstar-1 serves TCP 80 and UDP 5353 (sockets made in its
    // namespace, served from here).
    let web = pod_ns(&lab, "deathstar-1")
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || while web.accept().is_ok() {});
    let udp = pod_ns(&lab, "deathstar-1")
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)))
        .unwrap()
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let http = SocketAddrV4::new(ds1, 80);
    let telemetry = SocketAddrV4::new(ds1, 5353);

    // No policy: everyone lands.
    assert!(connects(&lab, "xwing", http));

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), RULES).unwrap();
    let applied = json(&[
        "policy",
        "apply",
        "-f",
        file.path().to_str().unwrap(),
        "--lab",
        &name,
        "-o",
        "json",
    ]);
    assert_eq!(applied["enforced"], true, "{applied}");

    // What each node holds, as `lab status` reads it: the world, 5 pods,
    // 2 nodes and its pods' gateway; rule1 in deathstar-1's map.
    let held = lab_cli::policy::datapath::datapath(
        PolicyMode::Ebpf,
        lab_cli::lab::policy::nodes(&lab.plan).unwrap(),
    )
    .held()
    .unwrap();
    let lines: Vec<(&str, &[String])> = held
        .iter()
        .map(|h| (h.node.rsplit('/').next().unwrap(), h.lines.as_slice()))
        .collect();
    assert_eq!(
        lines[0],
        (
            "node1",
            &[
                "policy_from_pod, policy_to_pod on 2 of 2 pod veths".to_owned(),
                "2 endpoints (1 enforcing), 9 ipcache entries, 4 policy entries".to_owned()
            ][..]
        )
    );
    let ids = json(&["policy", "identities", "--lab", &name, "-o", "json"]);
    let id_of = |ids: &Value, pod: &str| -> u64 {
        let full = format!("{name}/{pod}");
        ids["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["pods"].as_array().unwrap().iter().any(|p| p == &full))
            .unwrap_or_else(|| panic!("{pod} in {ids}"))["identity"]
            .as_u64()
            .unwrap()
    };
    let (tf_id, xw_id) = (id_of(&ids, "tiefighter"), id_of(&ids, "xwing"));
    let eps = json(&["policy", "endpoints", "--lab", &name, "-o", "json"]);
    let ds1_ep = eps["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pod"] == format!("{name}/deathstar-1"))
        .unwrap()["endpoint"]
        .as_u64()
        .unwrap() as u32;

    // rule1: the tiefighter lands, the xwing does not: N attempts, N
    // verdict events (one per connection, whatever the SYN retransmits).
    let mut events = maps(&lab).events().unwrap();
    events.drain();
    assert!(connects(&lab, "tiefighter", http));
    const N: usize = 3;
    for _ in 0..N {
        assert!(!connects(&lab, "xwing", http));
    }
    let xw = u32::from_ne_bytes(addr(&lab, "xwing").octets());
    let tf = u32::from_ne_bytes(addr(&lab, "tiefighter").octets());
    let mut seen = Vec::new();
    let count = |seen: &[lab_common::policy::VerdictEvent], from: u32, port: u16, reason: u8| {
        seen.iter()
            .filter(|e| {
                e.saddr == from
                    && u16::from_be(e.dport) == port
                    && e.reason == reason
                    && e.endpoint == ds1_ep
                    && e.dir == DIR_INGRESS
            })
            .count()
    };
    let got = settle(&(N, 1), || {
        seen.extend(events.drain());
        (
            count(&seen, xw, 80, REASON_POLICY_DENIED),
            count(&seen, tf, 80, REASON_FORWARDED),
        )
    });
    assert_eq!(got, (N, 1), "denied and allowed connection events");
    assert!(
        seen.iter()
            .filter(|e| e.saddr == xw)
            .all(|e| u64::from(e.remote_identity) == xw_id)
    );

    // UDP, counted exactly: K datagrams from the tiefighter on its entry;
    // M sockets of the xwing, K datagrams each: M events, M*K drops.
    const K: u32 = 5;
    const M: usize = 4;
    const PAYLOAD: usize = 100;
    send_udp(&lab, "tiefighter", telemetry, K, PAYLOAD);
    let mut buf = [0u8; 2048];
    for _ in 0..K {
        assert_eq!(udp.recv_from(&mut buf).unwrap().0, PAYLOAD);
    }
    let before = metric(&maps(&lab), ds1_ep, REASON_POLICY_DENIED);
    for _ in 0..M {
        send_udp(&lab, "xwing", telemetry, K, PAYLOAD);
    }
    let want = before + M as u64 * u64::from(K);
    let dropped = settle(&want, || metric(&maps(&lab), ds1_ep, REASON_POLICY_DENIED));
    assert_eq!(dropped, want);
    let denied_udp = settle(&M, || {
        seen.extend(events.drain());
        count(&seen, xw, 5353, REASON_POLICY_DENIED)
    });
    assert_eq!(denied_udp, M, "one event per socket, not per datagram");
    assert_eq!(count(&seen, tf, 5353, REASON_FORWARDED), 1);
    let map = json(&["policy", "map", "deathstar-1", "--lab", &name, "-o", "json"]);
    let e = map_entry(&map, tf_id, "5353/UDP");
    // Each datagram as tc sees it: Ethernet, IPv4, UDP headers and payload.
    let len = (14 + 20 + 8 + PAYLOAD) as u64;
    assert_eq!(
        (e["packets"].as_u64(), e["bytes"].as_u64()),
        (Some(u64::from(K)), Some(u64::from(K) * len))
    );
    assert_eq!(map["endpoint"].as_u64(), Some(u64::from(ds1_ep)));
    // rule1's entries: the empire's identities on 80/TCP, the host.
    assert!(
        map_entry(&map, tf_id, "80/TCP")["packets"]
            .as_u64()
            .unwrap()
            >= 1
    );
    map_entry(&map, 1, "ANY");

    // `policy trace` names the entry that decides, as the program's
    // lookup finds it, with the counter that traffic produced: K
    // datagrams on the tiefighter's 5353/UDP entry; the xwing's default
    // deny, counted by the endpoint's metrics.
    let trace = |from: &str| {
        let t = json(&[
            "policy",
            "trace",
            "--from",
            from,
            "--to",
            "deathstar-1",
            "--port",
            "5353/udp",
            "--lab",
            &name,
            "-o",
            "json",
        ]);
        t["datapath"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["direction"] == "ingress")
            .cloned()
            .unwrap_or_else(|| panic!("no ingress decision in {t}"))
    };
    let d = trace("tiefighter");
    assert_eq!(d["allows"], true, "{d}");
    assert_eq!(d["map_entry"]["identity"].as_u64(), Some(tf_id), "{d}");
    assert_eq!(d["map_entry"]["port_proto"], "5353/UDP", "{d}");
    assert_eq!(d["map_entry"]["deny"], false, "{d}");
    assert_eq!(d["map_entry"]["endpoint"].as_u64(), Some(u64::from(ds1_ep)));
    assert_eq!(d["map_entry"]["prefix_len"], 96, "nothing wildcarded: {d}");
    assert_eq!(d["packets"].as_u64(), Some(u64::from(K)), "{d}");
    assert_eq!(d["map_entry"]["packets"].as_u64(), Some(u64::from(K)));
    assert_eq!(d["map_entry"]["bytes"].as_u64(), Some(u64::from(K) * len));
    let d = trace("xwing");
    assert_eq!(d["allows"], false, "{d}");
    assert!(
        d.get("map_entry").is_none(),
        "default deny has no entry: {d}"
    );
    assert_eq!(
        d["packets"].as_u64(),
        Some(metric(&maps(&lab), ds1_ep, REASON_POLICY_DENIED)),
        "{d}"
    );
    assert!(d["entry"].as_str().unwrap().contains("default deny"), "{d}");
    assert!(
        !map["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["identity"] == xw_id)
    );

    // The xwing joins the empire: a new identity, and it lands.
    let out = labctl(&[
        "lab",
        "pod",
        "label",
        "xwing",
        "org=empire",
        "--overwrite",
        "--lab",
        &name,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::said(&out.stderr));
    let ids = json(&["policy", "identities", "--lab", &name, "-o", "json"]);
    let new_id = id_of(&ids, "xwing");
    assert_ne!(new_id, xw_id);
    assert!(new_id >= 256);
    let map = json(&["policy", "map", "deathstar-1", "--lab", &name, "-o", "json"]);
    map_entry(&map, new_id, "80/TCP");
    assert!(connects(&lab, "xwing", http));

    lab.down().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} left after lab down", d.display());
    }
}

#[test]
fn sigkill_of_lab_up_leaves_no_pins_after_lab_down() {
    if !common::privileged("policy_ebpf sigkill") {
        return;
    }
    let name = common::lab_name("pebpfkill");
    let options = LabOptions {
        policy_mode: Some(PolicyMode::Ebpf),
        ..Default::default()
    };
    let plan = Plan::new(&name, scenario::find("starwars").unwrap(), options).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args([
            "lab",
            "up",
            "starwars",
            "--name",
            &name,
            "--policy-mode",
            "ebpf",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once node1's policy programs are pinned (or when it is done).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dirs = Vec::new();
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        dirs = plan
            .nodes
            .iter()
            .filter_map(|n| NetNs::open(&n.netns).ok()?.inode().ok())
            .map(pins::policy)
            .collect();
        if dirs.first().is_some_and(|d| d.exists()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    common::signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert!(!dirs.is_empty(), "lab up made no node in 30 s");
    let out = labctl(&["lab", "down", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", common::said(&out.stderr));
    for d in &dirs {
        assert!(!d.exists(), "{} left after lab down", d.display());
    }
}

/// Cilium's maps as Cilium pins them (made with bpftool in a directory of
/// our own), read by the views' `--cilium` code.
#[test]
fn cilium_s_pinned_maps_are_read_with_their_layouts() {
    if !common::privileged("policy_ebpf cilium maps") {
        return;
    }
    let dir = pins::ensure_root()
        .unwrap()
        .join(format!("cilium-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).unwrap();
        }
    }
    let _gone = Gone(dir.clone());
    let bpftool = |args: &[&str]| {
        let out = Command::new("bpftool").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "bpftool {args:?}: {}",
            common::said(&out.stderr)
        );
    };
    let hex = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
    let update = |map: &std::path::Path, key: &str, value: &str| {
        let mut args = vec!["map".to_owned(), "update".into(), "pinned".into()];
        args.push(map.to_str().unwrap().into());
        args.push("key".into());
        args.push("hex".into());
        args.extend(hex(key));
        args.push("value".into());
        args.push("hex".into());
        args.extend(hex(value));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bpftool(&args);
    };
    // v1.17's ipcache: key 4 + 20 bytes, value 24 bytes.
    let ipcache = dir.join("cilium_ipcache_v2");
    bpftool(&[
        "map",
        "create",
        ipcache.to_str().unwrap(),
        "type",
        "lpm_trie",
        "key",
        "24",
        "value",
        "24",
        "entries",
        "16",
        "name",
        "cilium_ipcache",
        "flags",
        "1",
    ]);
    let zeros12 = "00 00 00 00 00 00 00 00 00 00 00 00";
    // 10.244.1.7/32 -> 257; 203.0.113.0/24 -> 16777217; 0.0.0.0/0 -> 2.
    for (prefix, addr, id) in [
        ("40", "0a f4 01 07", "01 01 00 00"),
        ("38", "cb 00 71 00", "01 00 00 01"),
        ("20", "00 00 00 00", "02 00 00 00"),
    ] {
        update(
            &ipcache,
            &format!("{prefix} 00 00 00 00 00 00 01 {addr} {zeros12}"),
            &format!("{id} {zeros12} 00 00 00 00 00 00 00 00"),
        );
    }
    // Endpoint 123's policy map: key 4 + 8 bytes, value 24 bytes.
    let policy = dir.join("cilium_policy_v2_00123");
    bpftool(&[
        "map",
        "create",
        policy.to_str().unwrap(),
        "type",
        "lpm_trie",
        "key",
        "12",
        "value",
        "24",
        "entries",
        "16",
        "name",
        "cilium_policy",
        "flags",
        "1",
    ]);
    let counters = |packets: &str, bytes: &str| {
        format!("{packets} 00 00 00 00 00 00 00 {bytes} 00 00 00 00 00 00 00")
    };
    // Allow ingress 257 80/TCP (3 packets, 222 bytes); deny egress any
    // TCP; allow ingress from the host, any protocol.
    update(
        &policy,
        "40 00 00 00 01 01 00 00 00 06 00 50",
        &format!("00 00 c0 00 00 00 00 00 {}", counters("03", "de")),
    );
    update(
        &policy,
        "30 00 00 00 00 00 00 00 01 06 00 00",
        &format!("00 00 45 00 00 00 00 00 {}", counters("00", "00")),
    );
    update(
        &policy,
        "28 00 00 00 01 00 00 00 00 00 00 00",
        &format!("00 00 06 00 00 00 00 00 {}", counters("00", "00")),
    );

    use lab_cli::commands::policy_maps;
    let ids = policy_maps::cilium_identities(&dir).unwrap();
    let got: Vec<(u32, Vec<String>, Vec<String>)> = ids
        .into_iter()
        .map(|r| (r.identity, r.labels, r.pods))
        .collect();
    assert_eq!(
        got,
        [
            (2, vec!["reserved:world".to_owned()], vec![]),
            (257, vec![], vec!["10.244.1.7".to_owned()]),
            (16_777_217, vec!["cidr:203.0.113.0/24".to_owned()], vec![]),
        ]
    );
    let eps = policy_maps::cilium_endpoints(&dir).unwrap();
    assert_eq!(eps.endpoints.len(), 1);
    assert_eq!(
        (eps.endpoints[0].endpoint, eps.endpoints[0].policy_entries),
        (123, 3)
    );
    let map = policy_maps::cilium_map(&dir, "123").unwrap();
    let mut text = Vec::new();
    policy_maps::write_map(&mut text, &map).unwrap();
    let text = String::from_utf8(text).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("POLICY"))
        .skip(1)
        .collect();
    assert!(text.starts_with("cilium_policy_v2_00123: endpoint 123 on this node\n"));
    assert_eq!(
        rows,
        [
            "Allow   Ingress    1         ANY             0        0  reserved:host",
            "Allow   Ingress    257       80/TCP        222        3",
            "Deny    Egress     ANY       TCP             0        0  ANY",
        ],
        "{text}"
    );
    let err = policy_maps::cilium_map(&dir, "7").unwrap_err().to_string();
    assert!(err.contains("its endpoints: 123"), "{err}");
}
