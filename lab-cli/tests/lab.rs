//! Privileged: `labctl lab` builds every scenario for real, the traffic
//! matrix behaves as the scenario says, and nothing is left behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use lab_cli::{
    kernel::{
        netns::NetNs,
        rtnl::{LinkInfoSummary, RouteSummary, Rtnl},
    },
    lab::{
        Lab, LabError, firewall,
        plan::{ALIAS_PREFIX, LabOptions, node_addr},
        state::LabState,
        traffic::{self, Proto, TrafficReport, TrafficSpec},
    },
};

fn probe(lab: &Lab, from: &str, to: &str, proto: Proto, port: u16) -> TrafficReport {
    let spec = TrafficSpec {
        proto,
        port,
        count: 3,
        timeout: std::time::Duration::from_millis(300),
        ..TrafficSpec::default()
    };
    let (a, b) = (lab.endpoint(from).unwrap(), lab.endpoint(to).unwrap());
    traffic::run(&a, &b, &spec).unwrap_or_else(|e| panic!("{from} -> {to}: {e}"))
}

fn works(lab: &Lab, from: &str, to: &str, proto: Proto, port: u16) -> TrafficReport {
    let r = probe(lab, from, to, proto, port);
    assert!(r.all_answered(), "expected to work: {}", r.text());
    r
}

fn fails(lab: &Lab, from: &str, to: &str, proto: Proto, port: u16) {
    let r = probe(lab, from, to, proto, port);
    assert_eq!(r.answered, 0, "expected to be blocked: {}", r.text());
}

/// Tears the lab down and checks that none of its namespaces, no record,
/// and no host link tagged by it remain.
fn down_and_check_clean(lab: common::TestLab) {
    let namespaces: Vec<String> = lab
        .plan
        .namespaces()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let name = lab.name().to_owned();
    lab.down().expect("lab down");
    for ns in &namespaces {
        assert!(!common::netns_exists(ns), "{ns} left behind");
    }
    assert!(
        LabState::load(&name).unwrap().is_none(),
        "record left behind"
    );
    let tagged: Vec<_> = Rtnl::current()
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .filter(|l| l.alias.as_deref() == Some(&format!("{ALIAS_PREFIX}{name}")))
        .collect();
    assert!(tagged.is_empty(), "host links left behind: {tagged:?}");
}

fn links(lab: &Lab, member: &str) -> Vec<LinkInfoSummary> {
    Rtnl::open(&lab.netns(member).unwrap())
        .unwrap()
        .links()
        .unwrap()
}

#[test]
fn basic_pods_talk_and_the_world_sees_the_node_address() {
    if !common::privileged("basic_pods_talk_and_the_world_sees_the_node_address") {
        return;
    }
    let lab = common::lab("basic", "basic");
    works(&lab, "pod-a", "pod-b", Proto::Icmp, 0);
    works(&lab, "pod-b", "pod-a", Proto::Tcp, 5001);
    let same_node = works(&lab, "pod-a", "pod-b", Proto::Udp, 5002);
    assert_eq!(
        same_node.server_saw,
        BTreeMap::from([(Ipv4Addr::new(10, 244, 1, 2), 3)])
    );
    let udp = works(&lab, "pod-a", "world", Proto::Udp, 5001);
    assert_eq!(udp.server_saw, BTreeMap::from([(node_addr(1), 3)]));
    let tcp = works(&lab, "pod-b", "world", Proto::Tcp, 5001);
    assert_eq!(tcp.server_saw, BTreeMap::from([(node_addr(1), 3)]));
    // One UDP flow (3 datagrams, one conntrack entry) + 3 TCP connections:
    // the masquerade rule is evaluated once per new connection.
    let rules = firewall::list(&lab.netns("node1").unwrap()).unwrap();
    assert_eq!(firewall::masquerade_packets(&rules), Some(4), "{rules}");
    // Status names members as the other commands do; pods are pods.
    let status = lab_cli::lab::status::status(&lab).unwrap();
    let pod_a = status.members.iter().find(|m| m.name == "pod-a").unwrap();
    assert_eq!(
        pod_a.pod.as_deref(),
        Some(format!("{}/pod-a", lab.name()).as_str())
    );
    let node1 = status.members.iter().find(|m| m.name == "node1").unwrap();
    assert_eq!(
        (node1.pod.as_deref(), node1.display.clone()),
        (None, format!("{}/node1", lab.name()))
    );
    down_and_check_clean(lab);
}

#[test]
fn two_node_routes_pod_cidrs_without_nat() {
    if !common::privileged("two_node_routes_pod_cidrs_without_nat") {
        return;
    }
    let lab = common::lab("two-node", "two");
    works(&lab, "pod-a", "pod-b", Proto::Icmp, 0);
    let r = works(&lab, "pod-b", "pod-a", Proto::Tcp, 5001);
    assert_eq!(
        r.server_saw,
        BTreeMap::from([(Ipv4Addr::new(10, 244, 2, 2), 3)]),
        "pod to pod across nodes keeps the pod address"
    );
    let w = works(&lab, "pod-b", "world", Proto::Udp, 5001);
    assert_eq!(w.server_saw, BTreeMap::from([(node_addr(2), 3)]));
    assert!(links(&lab, "node1").iter().all(|l| l.name != "vxlan0"));
    down_and_check_clean(lab);
}

#[test]
fn overlay_tunnels_pod_traffic_and_reproduces_the_mtu_pitfall() {
    if !common::privileged("overlay_tunnels_pod_traffic_and_reproduces_the_mtu_pitfall") {
        return;
    }
    let lab = common::lab("overlay", "ovl");
    let vxlan = links(&lab, "node1")
        .into_iter()
        .find(|l| l.name == "vxlan0")
        .expect("vxlan0 on node1");
    assert_eq!((vxlan.kind.as_deref(), vxlan.mtu), (Some("vxlan"), 1450));
    let pod_eth0 = links(&lab, "pod-a")
        .into_iter()
        .find(|l| l.name == "eth0")
        .unwrap();
    assert_eq!(pod_eth0.mtu, 1450);
    works(&lab, "pod-a", "pod-b", Proto::Icmp, 0);
    let r = works(&lab, "pod-a", "pod-b", Proto::Tcp, 5001);
    assert_eq!(
        r.server_saw,
        BTreeMap::from([(Ipv4Addr::new(10, 244, 1, 2), 3)])
    );
    works(&lab, "pod-a", "world", Proto::Udp, 5001);
    // The underlay carries the pod traffic inside VXLAN: the tunnel counted it.
    let routes: Vec<RouteSummary> = Rtnl::open(&lab.netns("node1").unwrap())
        .unwrap()
        .routes()
        .unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.dst == "10.244.2.0/24" && r.dev.as_deref() == Some("vxlan0")),
        "{routes:?}"
    );

    // Pods with MTU 1500 over a 1450 tunnel: 1500-byte DF packets vanish,
    // smaller ones pass.
    let pitfall = common::lab_with(
        "overlay",
        "pit",
        LabOptions {
            mtu: Some(1500),
            ..LabOptions::default()
        },
    );
    let big = TrafficSpec {
        proto: Proto::Icmp,
        count: 2,
        size: 1472,
        timeout: std::time::Duration::from_millis(300),
        ..TrafficSpec::default()
    };
    let (a, b) = (
        pitfall.endpoint("pod-a").unwrap(),
        pitfall.endpoint("pod-b").unwrap(),
    );
    assert_eq!(traffic::run(&a, &b, &big).unwrap().answered, 0);
    let small = TrafficSpec { size: 1400, ..big };
    assert!(traffic::run(&a, &b, &small).unwrap().all_answered());
    down_and_check_clean(pitfall);
    down_and_check_clean(lab);
}

#[test]
fn policy_denies_between_pods_except_the_allowed_flow() {
    if !common::privileged("policy_denies_between_pods_except_the_allowed_flow") {
        return;
    }
    let lab = common::lab("policy", "pol");
    works(&lab, "pod-a", "pod-b", Proto::Tcp, 8080);
    fails(&lab, "pod-c", "pod-b", Proto::Tcp, 8080);
    fails(&lab, "pod-a", "pod-b", Proto::Udp, 8080);
    fails(&lab, "pod-b", "pod-a", Proto::Icmp, 0);
    fails(&lab, "pod-a", "pod-c", Proto::Tcp, 5001);
    let w = works(&lab, "pod-c", "world", Proto::Tcp, 5001);
    assert_eq!(w.server_saw, BTreeMap::from([(node_addr(1), 3)]));
    down_and_check_clean(lab);
}

#[test]
fn drops_lab_still_carries_normal_traffic() {
    if !common::privileged("drops_lab_still_carries_normal_traffic") {
        return;
    }
    let lab = common::lab("drops", "drp");
    works(&lab, "pod-a", "pod-b", Proto::Udp, 5001);
    let w = works(&lab, "pod-a", "world", Proto::Udp, 5001);
    assert_eq!(w.server_saw, BTreeMap::from([(node_addr(1), 3)]));
    fails(&lab, "pod-a", "world", Proto::Udp, firewall::DROPPED_PORT);
    down_and_check_clean(lab);
}

#[test]
fn a_failure_in_the_middle_of_up_rolls_everything_back() {
    if !common::privileged("a_failure_in_the_middle_of_up_rolls_everything_back") {
        return;
    }
    let name = common::lab_name("rb");
    // Steps: 5 namespaces of two-node (world, 2 nodes, 2 pods), then world,
    // node1, node2, pod-a, pod-b. Fail after some namespaces, after the
    // world, and at the very last step.
    for step in [3, 7, 10] {
        let err = Lab::up_failing_at(Some(&name), "two-node", step).unwrap_err();
        match &err {
            LabError::RolledBack { source, leftovers } => {
                assert!(leftovers.is_empty(), "{leftovers:?}");
                assert!(matches!(**source, LabError::InjectedFailure(s) if s == step));
            }
            other => panic!("step {step}: {other}"),
        }
        for member in ["world", "node1", "node2", "pod-a", "pod-b"] {
            assert!(!common::netns_exists(&format!("{name}-{member}")));
        }
        assert!(LabState::load(&name).unwrap().is_none());
    }
}

#[test]
fn name_clashes_and_foreign_namespaces_are_never_touched() {
    if !common::privileged("name_clashes_and_foreign_namespaces_are_never_touched") {
        return;
    }
    let name = common::lab_name("clash");
    // Someone else's namespace with a name the lab needs: refused, nothing built.
    let foreign = NetNs::create(&format!("{name}-pod-b")).unwrap();
    let err = Lab::up(Some(&name), "basic", LabOptions::default()).unwrap_err();
    assert!(matches!(err, LabError::NameClash(ref n) if n == foreign.name()));
    assert!(err.is_usage());
    assert!(!common::netns_exists(&format!("{name}-node1")));
    assert!(common::netns_exists(foreign.name()));
    drop(foreign);

    // A lab whose namespace was replaced behind its back: down removes the
    // rest and refuses to delete the stranger.
    let lab = common::lab("basic", "clash");
    assert!(matches!(
        Lab::up(Some(lab.name()), "basic", LabOptions::default()),
        Err(LabError::AlreadyUp { .. })
    ));
    let victim = format!("{}-pod-a", lab.name());
    lab_cli::kernel::netns::remove(&victim, NetNs::open(&victim).unwrap().path()).unwrap();
    let stranger = NetNs::create(&victim).unwrap();
    let err = lab.down().unwrap_err();
    assert!(
        err.to_string().contains("is not the one this lab created"),
        "{err}"
    );
    assert!(common::netns_exists(stranger.name()));
    assert!(!common::netns_exists(&format!(
        "{}-node1",
        common::lab_name("clash")
    )));
    // The record stays (it names what was not removed) until the user fixes it.
    drop(stranger);
    lab_cli::lab::down(Some(&common::lab_name("clash"))).unwrap();
}

#[test]
fn two_labs_coexist_and_concurrent_ups_are_serialized() {
    if !common::privileged("two_labs_coexist_and_concurrent_ups_are_serialized") {
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| common::lab("basic", "co1"));
        let b = s.spawn(|| common::lab("basic", "co2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    works(&a, "pod-a", "world", Proto::Udp, 5001);
    works(&b, "pod-a", "world", Proto::Udp, 5001);
    down_and_check_clean(a);
    works(&b, "pod-b", "pod-a", Proto::Icmp, 0);
    down_and_check_clean(b);
}

/// The pod-side and bridge-side configuration a CNI ADD produced.
#[derive(Debug, PartialEq, Eq)]
struct PodWiring {
    pod_addrs: Vec<String>,
    pod_mtu: u32,
    pod_routes: Vec<(String, Option<Ipv4Addr>, Option<String>)>,
    bridge_addrs: Vec<String>,
    host_veth_master: Option<String>,
    host_veth_mtu: u32,
}

fn wiring(pod: &NetNs, node: &NetNs) -> PodWiring {
    let pod_rt = Rtnl::open(pod).unwrap();
    let eth0 = pod_rt
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "eth0")
        .expect("eth0 in the pod");
    let mut pod_routes: Vec<_> = pod_rt
        .routes()
        .unwrap()
        .into_iter()
        .map(|r| (r.dst, r.via, r.dev))
        .collect();
    pod_routes.sort();
    let node_links = Rtnl::open(node).unwrap().links().unwrap();
    let bridge = node_links.iter().find(|l| l.name == "cni0").expect("cni0");
    let veths: Vec<_> = node_links
        .iter()
        .filter(|l| l.master.as_deref() == Some("cni0"))
        .collect();
    assert_eq!(veths.len(), 1, "{veths:?}");
    // IPv4 only: labs disable IPv6 on purpose (quiet traces); the plugin's
    // namespaces keep their fe80:: link-local addresses.
    let v4 = |addrs: &[String]| -> Vec<String> {
        addrs.iter().filter(|a| !a.contains(':')).cloned().collect()
    };
    PodWiring {
        pod_addrs: v4(&eth0.addresses),
        pod_mtu: eth0.mtu,
        pod_routes,
        bridge_addrs: v4(&bridge.addresses),
        host_veth_master: veths[0].master.clone(),
        host_veth_mtu: veths[0].mtu,
    }
}

#[test]
fn pods_are_wired_like_the_reference_cni_bridge_plugin() {
    if !common::privileged("pods_are_wired_like_the_reference_cni_bridge_plugin") {
        return;
    }
    let plugin = std::path::Path::new("/usr/lib/cni/bridge");
    assert!(
        plugin.exists(),
        "containernetworking-plugins is missing; run scripts/setup.sh"
    );
    // Ours: the one-pod-per-node layout of two-node (pod-a on node1).
    let lab = common::lab("two-node", "cni");
    let ours = wiring(&lab.netns("pod-a").unwrap(), &lab.netns("node1").unwrap());

    // Theirs: bridge + host-local, CNI_COMMAND=ADD per the CNI spec, run in
    // a node namespace for a pod namespace.
    let node = common::netns("labtest-cni-node");
    let pod = common::netns("labtest-cni-pod");
    let data_dir = std::env::temp_dir().join(lab_cli::kernel::netns::unique_name("labtest-cni"));
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "labctl-peer",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": false,
        "mtu": 1500,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.244.1.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": data_dir,
        }
    });
    let output = node
        .run(|| {
            let mut child = Command::new(plugin)
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", "labctl-peer-check")
                .env("CNI_NETNS", pod.path())
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", "/usr/lib/cni")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(config.to_string().as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .unwrap();
    std::fs::remove_dir_all(&data_dir).ok();
    assert!(
        output.status.success(),
        "CNI ADD failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs = wiring(&pod, &node);
    assert_eq!(ours, theirs);
    assert_eq!(ours.pod_addrs, ["10.244.1.2/24"]);
    drop(lab);
}

#[test]
fn streams_and_timed_probes_report_what_the_sink_received() {
    if !common::privileged("streams_and_timed_probes_report_what_the_sink_received") {
        return;
    }
    let lab = common::lab("basic", "strm");
    let (a, w) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    let stream = traffic::run(
        &a,
        &w,
        &TrafficSpec {
            proto: Proto::TcpStream,
            duration: Some(std::time::Duration::from_millis(500)),
            ..TrafficSpec::default()
        },
    )
    .unwrap();
    assert!(stream.all_answered(), "{}", stream.text());
    assert!(stream.bytes.unwrap() > 1_000_000, "{}", stream.text());
    assert_eq!(stream.server_saw, BTreeMap::from([(node_addr(1), 1)]));
    let timed = traffic::run(
        &a,
        &lab.endpoint("pod-b").unwrap(),
        &TrafficSpec {
            proto: Proto::Udp,
            duration: Some(std::time::Duration::from_millis(300)),
            ..TrafficSpec::default()
        },
    )
    .unwrap();
    assert!(timed.sent > 10 && timed.all_answered(), "{}", timed.text());
    assert_eq!(
        timed.server_saw,
        BTreeMap::from([(Ipv4Addr::new(10, 244, 1, 2), u64::from(timed.sent))])
    );
}

#[test]
fn down_cleans_up_after_an_up_that_was_killed() {
    if !common::privileged("down_cleans_up_after_an_up_that_was_killed") {
        return;
    }
    let name = common::lab_name("kill");
    let members = ["world", "node1", "node2", "pod-a", "pod-b"];
    // Kill `up` at different moments (it may also finish first): whatever
    // it left, `down` removes all of it.
    let mut found = 0;
    for delay_ms in [5u64, 15, 25, 40, 200] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["lab", "up", "two-node", "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().ok();
        child.wait().unwrap();
        if let Some(state) = LabState::load(&name).unwrap() {
            found += 1;
            eprintln!(
                "killed at {delay_ms} ms: {} namespaces recorded, complete: {}",
                state.namespaces.len(),
                state.complete
            );
            lab_cli::lab::down(Some(&name)).unwrap();
        }
        for m in members {
            assert!(
                !common::netns_exists(&format!("{name}-{m}")),
                "{name}-{m} left after a kill at {delay_ms} ms"
            );
        }
        assert!(LabState::load(&name).unwrap().is_none());
    }
    // At 200 ms `up` has long finished: at least that lab was found and removed.
    assert!(found >= 1);
}
