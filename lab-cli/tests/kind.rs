//! labctl inside a kind-like node: a two-node cluster of privileged
//! containers running containerd with CRI pods (see `common/kind.rs`), and
//! labctl copied into node 1 as `scripts/kind.sh` copies it into a kind node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

mod common;
#[path = "common/kind.rs"]
mod kind;

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use kind::{Cluster, Node, Pod};
use serde_json::Value;

/// Sends `n` datagrams from the node's own namespace to `pod`'s closed
/// port 9: each is dropped inside the pod's namespace (no socket).
fn drop_in(node: &Node, pod: &Pod, n: u32) {
    let ns = lab_cli::kernel::netns::NetNs::open(node.netns_name()).unwrap();
    let socket = ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    for i in 0..n {
        socket.send_to(&i.to_be_bytes(), (pod.ip, 9)).unwrap();
    }
}

/// Starts `labctl ARGS --ready-file F` in the node; returns once it is
/// tracing.
fn start_in(node: &Node, args: &[&str]) -> Child {
    let ready = format!("/tmp/labctl-ready-{}", fastrand::u32(..));
    let mut full = vec!["labctl"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--ready-file", &ready]);
    let mut child = node
        .exec_cmd(&full)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.path(&ready).exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "labctl {args:?} in {} exited ({status}) before it was ready: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "labctl {args:?} never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits for a `--count` trace to finish; its stdout lines.
fn finish(child: Child) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("trace did not see its --count of drops within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    BufReader::new(&out.stdout[..])
        .lines()
        .map(Result::unwrap)
        .collect()
}

fn json_drops(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "drop")
        .collect()
}

/// The labctl to copy into the node: the static one scripts/kind.sh ships
/// (`cargo xtask test` builds it), or this build's where there is none.
fn node_binary() -> std::path::PathBuf {
    match std::env::var_os("LABCTL_NODE_BIN") {
        Some(bin) => bin.into(),
        None => {
            assert!(
                std::env::var_os("LABCTL_REQUIRE_PRIVILEGED").is_none(),
                "LABCTL_NODE_BIN (the static labctl) is not set: run this through `cargo xtask test`"
            );
            env!("CARGO_BIN_EXE_labctl").into()
        }
    }
}

#[test]
fn inside_a_node_labctl_names_its_pods_and_keeps_to_its_node() {
    if !common::privileged("kind nodes") {
        return;
    }
    let mut cluster = Cluster::up("kind", 2);
    let web = cluster.nodes[0].run_pod("default", "web");
    let db = cluster.nodes[1].run_pod("shop", "db");
    let node1 = &cluster.nodes[0];
    let node2 = &cluster.nodes[1];
    std::fs::copy(node_binary(), node1.local_bin().join("labctl")).unwrap();

    // doctor passes inside the node and sees the runtime and its pod.
    let out = node1
        .exec_cmd(&["labctl", "doctor", "--output", "json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor JSON: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "doctor failed in the node: {report:#}"
    );
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no `{name}` check: {report:#}"))
            .clone()
    };
    let runtime = check("container runtime");
    assert_eq!(runtime["ok"], true, "{runtime:#}");
    assert!(
        runtime["seen"]
            .as_str()
            .unwrap()
            .contains("1 pod sandboxes, 1 named"),
        "{runtime:#}"
    );
    assert_eq!(check("bpffs (node)")["ok"], true);
    assert!(
        check("where")["seen"]
            .as_str()
            .unwrap()
            .contains("in a docker container"),
        "{report:#}"
    );

    // Default scope: this node's namespaces only. Node 2's pod drops first;
    // were they shown, they would be the first three events.
    let trace = start_in(
        node1,
        &["trace", "--output", "json", "--port", "9", "--count", "3"],
    );
    drop_in(node2, &db, 3);
    drop_in(node1, &web, 3);
    let drops = json_drops(&finish(trace));
    assert_eq!(drops.len(), 3, "{drops:#?}");
    for d in &drops {
        assert_eq!(d["netns_ino"], web.netns_ino, "{d:#}");
        assert_eq!(d["netns"], "default/web", "{d:#}");
        assert_eq!(d["pod"], "default/web", "{d:#}");
        assert_eq!(d["pod_namespace"], "default", "{d:#}");
        assert_eq!(d["pod_uid"], web.uid.as_str(), "{d:#}");
        assert_eq!(d["dst"], web.ip.to_string(), "{d:#}");
    }

    // Local-out drops (an OUTPUT rule in the pod: dropped before the packet
    // has a device) are in the pod's namespace: the default scope keeps
    // them and names the pod, the interface unknown. Node 2's pod drops
    // first; were they shown, they would be the first three events.
    let in_pod = |node: &Node, pod: &Pod| {
        lab_cli::kernel::netns::NetNs::at(&pod.name, &node.path(&pod.netns_path))
    };
    let (web_ns, db_ns) = (in_pod(node1, &web), in_pod(node2, &db));
    for ns in [&web_ns, &db_ns] {
        common::drop_udp_out(ns, 5001);
    }
    let trace = start_in(
        node1,
        &[
            "trace", "--output", "json", "--port", "5001", "--count", "3",
        ],
    );
    common::send_udp_dropped_out(&db_ns, (node2.addr, 5001).into(), 3);
    common::send_udp_dropped_out(&web_ns, (node1.addr, 5001).into(), 3);
    let drops = json_drops(&finish(trace));
    assert_eq!(drops.len(), 3, "{drops:#?}");
    for d in &drops {
        assert_eq!(d["netns_ino"], web.netns_ino, "{d:#}");
        assert_eq!(d["netns"], "default/web", "{d:#}");
        assert_eq!(d["pod"], "default/web", "{d:#}");
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d:#}");
        assert_eq!(
            (&d["ifname"], &d["ifindex"]),
            (&Value::Null, &Value::from(0))
        );
        assert_eq!(d["src"], web.ip.to_string(), "{d:#}");
        assert_eq!(d["dst"], node1.addr.to_string(), "{d:#}");
    }
    assert_eq!(common::nft_counted(&web_ns, "ip", "labtest_out"), 3);
    assert_eq!(common::nft_counted(&db_ns, "ip", "labtest_out"), 3);

    // `--scope all`: node 2's pod too, by inode (node 1 cannot name it, and
    // does not pretend to).
    let trace = start_in(
        node1,
        &[
            "trace", "--output", "json", "--scope", "all", "--port", "9", "--count", "6",
        ],
    );
    drop_in(node2, &db, 3);
    drop_in(node1, &web, 3);
    let drops = json_drops(&finish(trace));
    let theirs: Vec<_> = drops
        .iter()
        .filter(|d| d["netns_ino"] == db.netns_ino)
        .collect();
    let ours: Vec<_> = drops
        .iter()
        .filter(|d| d["netns_ino"] == web.netns_ino)
        .collect();
    assert_eq!((theirs.len(), ours.len()), (3, 3), "{drops:#?}");
    for d in theirs {
        assert_eq!(d["pod"], Value::Null, "{d:#}");
        assert_eq!(d["netns"], db.netns_ino.to_string(), "{d:#}");
    }

    // Text, and the pod named on the command line as it was printed.
    let trace = start_in(node1, &["trace", "--pod", "default/web", "--count", "1"]);
    drop_in(node1, &web, 1);
    let text = finish(trace).join("\n");
    assert!(text.contains("default/web"), "{text}");

    // Conntrack in the node's namespace: the flows to the pod, named.
    let out = node1.exec(&[
        "labctl",
        "conntrack",
        "list",
        "--pod",
        "default/web",
        "--output",
        "json",
    ]);
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!entries.is_empty(), "no conntrack entries for the pod");
    for e in &entries {
        assert_eq!(e["dst_pod"], "default/web", "{e:#}");
        assert_eq!(e["orig"]["dst"], web.ip.to_string(), "{e:#}");
        assert_eq!(e["orig"]["dport"], 9, "{e:#}");
    }
    let table = node1.exec(&["labctl", "conntrack", "list", "--pod", "default/web"]);
    assert!(table.contains("default/web"), "{table}");

    // Without the runtime's socket, kubelet's cgroups and log directories
    // still name the pod.
    let trace = start_in(
        node1,
        &[
            "--cri-socket",
            "/run/no-such-runtime.sock",
            "trace",
            "--output",
            "json",
            "--port",
            "9",
            "--count",
            "1",
        ],
    );
    drop_in(node1, &web, 1);
    let drops = json_drops(&finish(trace));
    assert_eq!(drops[0]["pod"], "default/web", "{drops:#?}");
    assert_eq!(drops[0]["pod_uid"], web.uid.as_str(), "{drops:#?}");

    // A pod that appears while a trace follows its namespace is traced and
    // named: drops are sent until the trace has seen one (it picks up new
    // pods within its scope refresh).
    let trace = start_in(
        node1,
        &[
            "trace",
            "--pod-namespace",
            "default",
            "--output",
            "json",
            "--count",
            "1",
        ],
    );
    let api = cluster.nodes[0].run_pod("default", "api");
    let node1 = &cluster.nodes[0];
    let mut trace = trace;
    let deadline = Instant::now() + Duration::from_secs(20);
    while trace.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the new pod's drops were never shown"
        );
        drop_in(node1, &api, 1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let drops = json_drops(&finish(trace));
    assert_eq!(drops[0]["pod"], "default/api", "{drops:#?}");
    assert_eq!(drops[0]["netns_ino"], api.netns_ino, "{drops:#?}");

    // Network policy on the node's real pods: labels from CRI, enforced by
    // the eBPF datapath on the pods' veths, explained by `policy trace`.
    node_policy(&mut cluster);

    // A pod that goes is no longer named; its name is refused.
    cluster.nodes[0].remove_pod(&api);
    cluster.nodes[0].remove_pod(&web);
    let out = cluster.nodes[0]
        .exec_cmd(&["labctl", "trace", "--pod", "default/web", "--count", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::said(&out.stderr);
    assert!(err.contains("no pod `default/web`"), "{err}");

    let left = cluster.down();
    assert!(left.is_empty(), "teardown left: {left:#?}");
}

/// Pod `pod`'s namespace on `node`, entered from the host.
fn pod_ns(node: &Node, pod: &Pod) -> lab_cli::kernel::netns::NetNs {
    lab_cli::kernel::netns::NetNs::at(&pod.name, &node.path(&pod.netns_path))
}

/// Whether a TCP connection from `from` to `to` is answered within 1 s
/// (a denied SYN is dropped: the connect times out).
fn connects(node: &Node, from: &Pod, to: SocketAddr) -> bool {
    pod_ns(node, from)
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok())
        .unwrap()
}

/// `labctl ARGS -o json` in the node, its JSON; panics on failure.
fn labctl_json(node: &Node, args: &[&str]) -> Value {
    let mut full = vec!["labctl"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--output", "json"]);
    let out = node.exec_cmd(&full).output().unwrap();
    assert!(
        out.status.success(),
        "labctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "labctl {args:?} JSON: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const EMPIRE_ONLY: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: empire-only
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
";

const EMPIRE_NETPOL: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: empire-only
  namespace: default
spec:
  podSelector:
    matchLabels:
      class: deathstar
  ingress:
  - from:
    - podSelector:
        matchLabels:
          org: empire
    ports:
    - port: 80
      protocol: TCP
";

/// Pods created through CRI with labels; a CiliumNetworkPolicy applied
/// on the node (no lab: the node is implied); real connections allowed
/// and denied as the policy says, `policy trace` agreeing; a pod created
/// again with other labels gets another identity and verdict; deleting
/// the policies removes every pin.
fn node_policy(cluster: &mut Cluster) {
    let t = Instant::now();
    let deathstar = cluster.nodes[0].run_pod_labelled(
        "default",
        "deathstar",
        &[("org", "empire"), ("class", "deathstar")],
    );
    let tiefighter =
        cluster.nodes[0].run_pod_labelled("default", "tiefighter", &[("org", "empire")]);
    let xwing = cluster.nodes[0].run_pod_labelled("default", "xwing", &[("org", "alliance")]);
    let node = &cluster.nodes[0];
    let port80 = SocketAddr::from((deathstar.ip, 80));
    let _server = pod_ns(node, &deathstar)
        .run(|| TcpListener::bind(port80))
        .unwrap()
        .unwrap();
    // Open before any policy: what the policy changes is the policy's.
    assert!(connects(node, &tiefighter, port80));
    assert!(connects(node, &xwing, port80));

    std::fs::write(node.path("/tmp/empire-only.yaml"), EMPIRE_ONLY).unwrap();
    let applied = labctl_json(node, &["policy", "apply", "-f", "/tmp/empire-only.yaml"]);
    assert_eq!(applied["node"], node.name.as_str(), "{applied:#}");
    assert_eq!(applied["policy_mode"], "ebpf", "{applied:#}");
    assert_eq!(applied["enforced"], true, "{applied:#}");
    assert_eq!(
        applied["applied"][0]["selects"],
        serde_json::json!(["default/deathstar"]),
        "{applied:#}"
    );
    assert!(connects(node, &tiefighter, port80), "empire is let in");
    assert!(!connects(node, &xwing, port80), "the alliance is kept out");

    let trace = |node: &Node, from: &str| {
        labctl_json(
            node,
            &[
                "policy",
                "trace",
                "--from",
                from,
                "--to",
                "default/deathstar",
                "--port",
                "80",
            ],
        )
    };
    let t_tie = trace(node, "default/tiefighter");
    assert_eq!(t_tie["verdict"]["allowed"], true, "{t_tie:#}");
    // The entry of the deathstar's policy map that lets the empire in,
    // named as the program's lookup finds it, with the connection it
    // counted.
    let ingress = t_tie["datapath"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["direction"] == "ingress")
        .unwrap_or_else(|| panic!("no ingress decision: {t_tie:#}"));
    assert_eq!(ingress["allows"], true, "{t_tie:#}");
    assert_eq!(
        ingress["map_entry"]["identity"], t_tie["from"]["identity"],
        "{t_tie:#}"
    );
    assert_eq!(ingress["map_entry"]["port_proto"], "80/TCP", "{t_tie:#}");
    assert!(
        ingress["map_entry"]["packets"].as_u64().unwrap() >= 1,
        "{t_tie:#}"
    );
    let t_x = trace(node, "default/xwing");
    assert_eq!(t_x["verdict"]["allowed"], false, "{t_x:#}");
    assert_eq!(t_x["verdict"]["drop_reason"], "POLICY_DENIED", "{t_x:#}");
    assert_ne!(t_x["from"]["identity"], t_tie["from"]["identity"]);
    assert!(
        t_x["from"]["labels"]
            .as_array()
            .unwrap()
            .contains(&Value::from("k8s:org=alliance")),
        "{t_x:#}"
    );

    // As text, as `cilium policy trace` reads.
    let text = node.exec(&[
        "labctl",
        "policy",
        "trace",
        "--from",
        "xwing",
        "--to",
        "deathstar",
        "--port",
        "80",
    ]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!("(node {}, policy mode ebpf", node.name)),
        "{text}"
    );
    assert!(
        flat.contains("Final verdict: DENIED: POLICY_DENIED"),
        "{text}"
    );

    // The maps as `cilium endpoint list` and `cilium bpf policy get` show
    // them: three endpoints, deathstar enforcing ingress, its allow entry
    // for the empire's identity counting the connection let in.
    let eps = labctl_json(node, &["policy", "endpoints"]);
    let pods: Vec<&str> = eps["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pod"].as_str().unwrap())
        .collect();
    for p in ["default/deathstar", "default/tiefighter", "default/xwing"] {
        assert!(pods.contains(&p), "{eps:#}");
    }
    assert_eq!(eps["node"], node.name.as_str(), "{eps:#}");
    assert_eq!(eps["lab"], Value::Null, "{eps:#}");
    let map = labctl_json(node, &["policy", "map", "default/deathstar"]);
    let allow = map["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["identity"] == t_tie["from"]["identity"] && e["port_proto"] == "80/TCP")
        .unwrap_or_else(|| panic!("no allow entry for the empire: {map:#}"));
    assert_eq!(allow["policy"], "Allow", "{map:#}");
    assert!(allow["packets"].as_u64().unwrap() > 0, "{map:#}");

    // Relabel as kubelet does it: the pod created again with other labels.
    // `policy sync --watch` follows the runtime's pods: the new pod is
    // enforced with no other command (without it, its address is not in
    // the ipcache: `world`, kept out).
    let watch = start_in(node, &["policy", "sync", "--watch", "--output", "json"]);
    cluster.nodes[0].remove_pod(&xwing);
    let xwing = cluster.nodes[0].run_pod_labelled("default", "xwing", &[("org", "empire")]);
    let node = &cluster.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects(node, &xwing, port80) {
        assert!(
            Instant::now() < deadline,
            "the recreated pod was not enforced by `policy sync --watch`"
        );
    }
    common::interrupt(&watch);
    let lines = finish(watch);
    let changes: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        changes
            .iter()
            .any(|c| c["added"] == serde_json::json!(["default/xwing"])),
        "{lines:#?}"
    );
    let t_x2 = trace(node, "default/xwing");
    assert_eq!(t_x2["verdict"]["allowed"], true, "{t_x2:#}");
    assert_eq!(
        t_x2["from"]["identity"], t_tie["from"]["identity"],
        "{t_x2:#}"
    );
    assert!(
        connects(node, &xwing, port80),
        "the relabelled pod is let in"
    );
    // One identity for the empire's two fighters; the alliance's is gone.
    let ids = labctl_json(node, &["policy", "identities"]);
    let rows = ids["identities"].as_array().unwrap();
    let empire = rows
        .iter()
        .find(|r| r["identity"] == t_tie["from"]["identity"])
        .unwrap_or_else(|| panic!("{ids:#}"));
    assert_eq!(
        empire["pods"],
        serde_json::json!(["default/tiefighter", "default/xwing"]),
        "{ids:#}"
    );
    assert!(
        rows.iter()
            .all(|r| r["identity"] != t_x["from"]["identity"]),
        "{ids:#}"
    );

    // The recreated pod's old veth is gone, and its links' pins with it:
    // one pin per side per endpoint.
    let ino = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/proc/{}/ns/net", node.pid()))
            .unwrap()
            .ino()
    };
    let pins = node.path(&format!("/sys/fs/bpf/labctl/policy-{ino}"));
    let links = std::fs::read_dir(&pins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("from-") || n.starts_with("to-"))
        .count();
    let eps = labctl_json(node, &["policy", "endpoints"]);
    assert_eq!(
        links,
        2 * eps["endpoints"].as_array().unwrap().len(),
        "{eps:#}"
    );

    // Deleting the node's last policy removes its datapath: no pins left.
    let deleted = labctl_json(node, &["policy", "delete", "--all"]);
    assert_eq!(deleted["enforced"], false, "{deleted:#}");
    assert!(!pins.exists(), "pins left after `policy delete --all`");
    let out = node
        .exec_cmd(&["labctl", "policy", "endpoints"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = common::said(&out.stderr);
    assert!(err.contains("holds no eBPF policy maps"), "{err}");
    assert!(connects(node, &tiefighter, port80));

    // The same on the netfilter datapath (as Calico), with a
    // NetworkPolicy: the node's chains name the pods; a pod of the
    // alliance is kept out again.
    let rebel = cluster.nodes[0].run_pod_labelled("default", "rebel", &[("org", "alliance")]);
    let node = &cluster.nodes[0];
    std::fs::write(node.path("/tmp/empire-netpol.yaml"), EMPIRE_NETPOL).unwrap();
    let applied = labctl_json(
        node,
        &[
            "policy",
            "apply",
            "--node",
            "--policy-mode",
            "netfilter",
            "-f",
            "/tmp/empire-netpol.yaml",
        ],
    );
    assert_eq!(applied["policy_mode"], "netfilter", "{applied:#}");
    // The node's mode is the first apply's: another one is refused, in one
    // sentence with the fix, and changes nothing.
    let out = node
        .exec_cmd(&[
            "labctl",
            "policy",
            "apply",
            "--policy-mode",
            "ebpf",
            "-f",
            "/tmp/empire-only.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = common::said(&out.stderr);
    assert!(err.contains("policy delete --node --all"), "{err}");
    let list = node.exec(&["labctl", "policy", "list"]);
    assert!(list.contains(&format!("node {}", node.name)), "{list}");
    assert!(list.contains("policy mode netfilter; 1 policy"), "{list}");
    assert!(list.contains("selects default/deathstar"), "{list}");
    assert!(connects(node, &xwing, port80), "empire is let in");
    assert!(!connects(node, &rebel, port80), "the alliance is kept out");
    let t_r = trace(node, "rebel");
    assert_eq!(t_r["verdict"]["drop_reason"], "POLICY_DENIED", "{t_r:#}");
    assert_eq!(trace(node, "xwing")["verdict"]["allowed"], true);
    labctl_json(node, &["policy", "delete", "--node", "--all"]);
    let tables = node.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("labctl-policy"), "{tables}");
    assert!(connects(node, &rebel, port80));
    for p in [&deathstar, &tiefighter, &xwing, &rebel] {
        cluster.nodes[0].remove_pod(p);
    }
    eprintln!("node policy in {:?}", t.elapsed());
}

/// Accepts one connection on `listener` within 5 s; the peer's address.
fn accept_one(listener: &TcpListener) -> Ipv4Addr {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok((_, SocketAddr::V4(peer))) => return *peer.ip(),
            Ok((_, peer)) => panic!("an IPv6 peer {peer}"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection within 5 s");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The calls `labctl cni log -o json` shows in `node`.
fn cni_calls(node: &Node) -> Vec<Value> {
    let out = node
        .exec_cmd(&["labctl", "cni", "log", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cni log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cni log JSON: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// labctl as the nodes' CNI plugin, called by containerd for pods created
/// through CRI as kubelet creates them: addresses from each node's range,
/// pods reaching each other across nodes with their own addresses, the
/// world (an address beyond the nodes) reached masqueraded as the node,
/// containerd's calls in `cni log`, and nothing left once the pods are
/// gone.
#[test]
fn containerd_calls_labctl_as_its_cni_plugin() {
    if !common::privileged("kind nodes with labctl as the CNI plugin") {
        return;
    }
    let cni = kind::Cni::Labctl {
        binary: node_binary(),
        conflist: kind::labctl_conflist,
    };
    let mut cluster = Cluster::up_with("cni", 2, &cni);
    let a = cluster.nodes[0].run_pod("default", "a");
    let c = cluster.nodes[0].run_pod("shop", "c");
    let b = cluster.nodes[1].run_pod("default", "b");
    let (node1, node2) = (&cluster.nodes[0], &cluster.nodes[1]);
    for (pod, node) in [(&a, node1), (&c, node1), (&b, node2)] {
        let range: ipnet::Ipv4Net = node.pod_cidr().parse().unwrap();
        assert!(
            range.contains(&pod.ip),
            "{} got {} outside {range}",
            pod.name,
            pod.ip
        );
    }
    assert_ne!(a.ip, c.ip);

    // Pod to pod, on one node and across nodes: the peer sees the pod's
    // own address (no masquerade inside the cluster).
    let listener = pod_ns(node2, &b)
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)))
        .unwrap()
        .unwrap();
    for (node, from) in [(node1, &a), (node1, &c)] {
        assert!(connects(node, from, SocketAddr::from((b.ip, 8080))));
        assert_eq!(accept_one(&listener), from.ip, "{} → b", from.name);
    }
    let on_a = pod_ns(node1, &a)
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)))
        .unwrap()
        .unwrap();
    assert!(connects(node2, &b, SocketAddr::from((a.ip, 8080))));
    assert_eq!(accept_one(&on_a), b.ip, "b → a");
    assert!(connects(node1, &c, SocketAddr::from((a.ip, 8080))));
    assert_eq!(accept_one(&on_a), c.ip, "c → a");

    // The world: an address beyond the nodes, on the fabric; pods reach it
    // as their node (masqueraded).
    let fabric = lab_cli::kernel::netns::NetNs::open(cluster.fabric_name()).unwrap();
    std::process::Command::new("ip")
        .args([
            "-n",
            cluster.fabric_name(),
            "addr",
            "add",
            "172.31.0.254/24",
            "dev",
            "br0",
        ])
        .status()
        .unwrap();
    let world = fabric
        .run(|| TcpListener::bind((Ipv4Addr::new(172, 31, 0, 254), 8081)))
        .unwrap()
        .unwrap();
    let out = SocketAddr::from((Ipv4Addr::new(172, 31, 0, 254), 8081));
    assert!(connects(node1, &a, out));
    assert_eq!(accept_one(&world), node1.addr, "a → world as node 1");
    assert!(connects(node2, &b, out));
    assert_eq!(accept_one(&world), node2.addr, "b → world as node 2");

    // containerd's calls, as the plugin logged them: an ADD per pod with
    // the sandbox's id, netns and the address CRI reported.
    let calls = cni_calls(node1);
    for pod in [&a, &c] {
        let add = calls
            .iter()
            .find(|r| r["verb"] == "ADD" && r["container_id"] == pod.id.as_str())
            .unwrap_or_else(|| panic!("no ADD for {} in {calls:#?}", pod.name));
        assert_eq!(add["ifname"], "eth0");
        assert_eq!(add["netns"], pod.netns_path.as_str());
        assert_eq!(
            add["result"]["ips"][0]["address"],
            format!("{}/32", pod.ip).as_str(),
            "{add:#}"
        );
        assert_eq!(add["config"]["type"], "labctl-cni");
    }
    let text = node1.exec(&["labctl", "cni", "log"]);
    assert!(text.contains("ADD") && text.contains(&a.id[..12]), "{text}");

    // Identity policy on labctl-cni's pods: labels reach labctl through
    // CRI once the sandbox is up (not in the ADD: CNI_ARGS has no labels),
    // the node's policy finds each pod's veth by the /32 route ADD made.
    let deathstar = cluster.nodes[0].run_pod_labelled(
        "default",
        "deathstar",
        &[("org", "empire"), ("class", "deathstar")],
    );
    let tiefighter =
        cluster.nodes[0].run_pod_labelled("default", "tiefighter", &[("org", "empire")]);
    let xwing = cluster.nodes[0].run_pod_labelled("default", "xwing", &[("org", "alliance")]);
    let node1 = &cluster.nodes[0];
    let port80 = SocketAddr::from((deathstar.ip, 80));
    let _server = pod_ns(node1, &deathstar)
        .run(|| TcpListener::bind(port80))
        .unwrap()
        .unwrap();
    assert!(connects(node1, &xwing, port80), "open before any policy");
    std::fs::write(node1.path("/tmp/empire-only.yaml"), EMPIRE_ONLY).unwrap();
    let applied = labctl_json(node1, &["policy", "apply", "-f", "/tmp/empire-only.yaml"]);
    assert_eq!(applied["enforced"], true, "{applied:#}");
    assert!(connects(node1, &tiefighter, port80), "empire is let in");
    assert!(!connects(node1, &xwing, port80), "the alliance is kept out");
    let eps = labctl_json(node1, &["policy", "endpoints"]);
    let links = node1.exec(&["ip", "-o", "link"]);
    for pod in ["default/deathstar", "default/tiefighter", "default/xwing"] {
        let ep = eps["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pod"] == pod)
            .unwrap_or_else(|| panic!("no endpoint for {pod}: {eps:#}"));
        let link = format!("{}: lc", ep["ifindex"]);
        assert!(
            links.lines().any(|l| l.starts_with(&link)),
            "{pod}'s endpoint is not on a labctl-cni veth: {ep:#}\n{links}"
        );
    }
    for pod in [&deathstar, &tiefighter, &xwing] {
        cluster.nodes[0].remove_pod(pod);
    }

    // Removal: DEL called, the pod's veth, address and masquerade gone.
    let a_veth = calls
        .iter()
        .find(|r| r["verb"] == "ADD" && r["container_id"] == a.id.as_str())
        .and_then(|r| r["result"]["interfaces"][0]["name"].as_str())
        .unwrap()
        .to_owned();
    cluster.nodes[0].remove_pod(&a);
    cluster.nodes[0].remove_pod(&c);
    cluster.nodes[1].remove_pod(&b);
    let (node1, node2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let calls = cni_calls(node1);
    assert!(
        calls.iter().any(|r| r["verb"] == "DEL"
            && r["container_id"] == a.id.as_str()
            && r["error"].is_null()),
        "no clean DEL for a: {calls:#?}"
    );
    let links = node1.exec(&["ip", "-o", "link"]);
    assert!(!links.contains(&a_veth), "{a_veth} left: {links}");
    for node in [node1, node2] {
        let store = node.path("/var/lib/cni/labctl/labctl");
        let left: Vec<String> = std::fs::read_dir(&store)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{}: addresses still held: {left:?}",
            node.name
        );
        let tables = node.exec(&["nft", "list", "tables"]);
        assert!(!tables.contains("labctl-cni"), "{}: {tables}", node.name);
    }
    let left = cluster.down();
    assert!(left.is_empty(), "teardown left: {left:#?}");
}
