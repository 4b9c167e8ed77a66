//! Privileged: `labctl observe` end to end in a lab: connections with
//! their pods and NAT, drops with their reason, Hubble's filters, and lost
//! events reported with their count. Every `-o json` line is checked with
//! a strict protobuf JSON parser (prost-reflect) against Hubble's schema;
//! `--serve` is checked with a gRPC client built from the same protos.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    net::UdpSocket,
    path::Path,
    process::{Child, Command, Stdio},
};

use lab_cli::lab::traffic::{self, Proto, TrafficSpec};
use serde_json::Value;

/// `labctl observe ARGS -o json`, started and attached.
fn observe(args: &[&str], dir: &Path, tag: &str) -> Child {
    let ready = dir.join(tag);
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .arg("observe")
        .args(args)
        .args(["-o", "json", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut child, &ready);
    child
}

/// Stops an observer (Ctrl-C) and returns its JSON lines.
fn stop(child: Child) -> Vec<Value> {
    common::interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "observe exited with {}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every line, labctl's extension objects set aside, parses as Hubble's
/// `observer.GetFlowsResponse` with a strict protobuf JSON parser: unknown
/// fields and enum names are errors (prost-reflect over the schema built
/// from lab-cli/proto, not labctl's own code).
fn hubble_strict(lines: &[Value]) {
    use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};
    let pool = DescriptorPool::decode(lab_cli::flows::hubble::DESCRIPTOR_SET).unwrap();
    let response = pool
        .get_message_by_name("observer.GetFlowsResponse")
        .unwrap();
    let strict = DeserializeOptions::new().deny_unknown_fields(true);
    for line in lines {
        let mut hubble = line.clone();
        for key in ["flow", "lost_events"] {
            if let Some(object) = hubble.get_mut(key).and_then(Value::as_object_mut) {
                object.remove("labctl");
            }
        }
        if let Err(e) = DynamicMessage::deserialize_with_options(response.clone(), hubble, &strict)
        {
            panic!("not Hubble's schema: {e}\n{line}");
        }
    }
}

fn flows(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter_map(|l| l.get("flow")).collect()
}

#[test]
fn flows_name_pods_show_nat_and_drops_and_filter_like_hubble() {
    if !common::privileged("flows_name_pods_show_nat_and_drops_and_filter_like_hubble") {
        return;
    }
    let lab = common::lab("basic", "obs");
    let name = lab.name().to_owned();
    let pod_a = format!("{name}/pod-a");
    let dir = tempfile::tempdir().unwrap();
    let all = observe(&["--lab", &name], dir.path(), "all");
    let drops_to_a = observe(
        &["--lab", &name, "--verdict", "DROPPED", "--to-pod", &pod_a],
        dir.path(),
        "drops",
    );
    let tcp_from_a = observe(
        &["--protocol", "tcp", "--from-pod", &pod_a],
        dir.path(),
        "tcp",
    );

    // pod-a → world: 3 TCP connections, masqueraded by node1.
    let (a, world) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    let spec = TrafficSpec {
        proto: Proto::Tcp,
        count: 3,
        ..TrafficSpec::default()
    };
    let report = traffic::run(&a, &world, &spec).unwrap();
    assert!(report.all_answered(), "{}", report.text());
    let node_addr = *report.server_saw.keys().next().unwrap();
    // pod-b → pod-a:7777, where nothing listens: 4 drops in pod-a.
    let b = lab.netns("pod-b").unwrap();
    let socket = b.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    for _ in 0..4 {
        socket.send_to(b"x", (a.addr, 7777)).unwrap();
    }

    // Ctrl-C right after the traffic: what the kernel counted is delivered.
    let all = stop(all);
    let drops_to_a = stop(drops_to_a);
    let tcp_from_a = stop(tcp_from_a);
    // Forwarded flows (with SNAT) and NO_SOCKET drops, as Hubble's.
    hubble_strict(&all);

    let all = flows(&all);
    let tcp: Vec<_> = all
        .iter()
        .filter(|f| f["l4"].get("TCP").is_some() && f["labctl"]["event"] == "NEW")
        .collect();
    assert_eq!(tcp.len(), 3, "{all:#?}");
    for f in &tcp {
        assert_eq!(f["verdict"], "FORWARDED");
        assert_eq!(f["source"]["namespace"], name.as_str());
        assert_eq!(f["source"]["pod_name"], "pod-a");
        assert_eq!(f["IP"]["source"], a.addr.to_string());
        assert_eq!(f["IP"]["destination"], world.addr.to_string());
        assert_eq!(f["IP"]["source_xlated"], node_addr.to_string());
        assert_eq!(f["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(f["Summary"], "TCP Flags: SYN");
        assert_eq!(f["node_name"], format!("{name}/node1"));
        let port = f["l4"]["TCP"]["source_port"].as_u64().unwrap();
        assert_eq!(
            f["labctl"]["nat"],
            format!("SNAT as {node_addr}:{port}"),
            "{f}"
        );
    }
    let dropped: Vec<_> = all.iter().filter(|f| f["verdict"] == "DROPPED").collect();
    assert_eq!(dropped.len(), 4, "{all:#?}");
    for f in &dropped {
        // Not one of Hubble's reasons: in labctl's extension and Summary.
        assert!(f.get("drop_reason_desc").is_none(), "{f}");
        assert_eq!(f["labctl"]["drop_reason"], "NO_SOCKET");
        assert_eq!(f["source"]["pod_name"], "pod-b");
        assert_eq!(f["destination"]["pod_name"], "pod-a");
        assert_eq!(f["l4"]["UDP"]["destination_port"], 7777);
        assert_eq!(f["node_name"], pod_a.as_str());
        assert_eq!(f["Summary"], "UDP (kernel: NO_SOCKET)");
    }

    // The filters keep exactly what they name.
    let d = flows(&drops_to_a);
    assert_eq!(d.len(), 4, "{d:#?}");
    assert!(d.iter().all(|f| f["verdict"] == "DROPPED"));
    let t = flows(&tcp_from_a);
    assert!(
        t.iter()
            .all(|f| f["l4"].get("TCP").is_some() && f["source"]["pod_name"] == "pod-a"),
        "{t:#?}"
    );
    assert_eq!(
        t.iter().filter(|f| f["labctl"]["event"] == "NEW").count(),
        3,
        "{t:#?}"
    );

    // The names observe prints are accepted back (a learner types what
    // they see): `lab exec` and `lab traffic` take `LAB/MEMBER`.
    let labctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let world = format!("{name}/world");
    let report = labctl(&["lab", "traffic", &pod_a, &world, "-p", "udp", "-c", "2"]);
    assert!(report.contains("2/2 answered"), "{report}");
    labctl(&["lab", "exec", &format!("{name}/pod-b"), "--", "true"]);
}

#[test]
fn lost_events_are_in_the_stream_with_their_count() {
    if !common::privileged("lost_events_are_in_the_stream_with_their_count") {
        return;
    }
    let ns = common::netns("labtest-ol");
    let dir = tempfile::tempdir().unwrap();
    // A one-page ring buffer overflows in a storm of drops.
    let child = observe(
        &["--netns", ns.name(), "--ring-size", "4096"],
        dir.path(),
        "lost",
    );
    common::send_udp(&ns, 9, 20_000);
    let lines = stop(child);
    hubble_strict(&lines);
    let dropped = flows(&lines)
        .iter()
        .filter(|f| f["verdict"] == "DROPPED")
        .count() as u64;
    let lost: u64 = lines
        .iter()
        .filter_map(|l| l.get("lost_events"))
        .inspect(|l| {
            assert_eq!(l["source"], "PERF_EVENT_RING_BUFFER");
            assert_eq!(l["labctl"]["source"], "PERF_EVENT_RING_BUFFER");
        })
        .map(|l| l["num_events_lost"].as_u64().unwrap())
        .sum();
    assert!(lost > 0, "a one-page ring buffer lost nothing");
    assert_eq!(dropped + lost, 20_000, "{dropped} shown + {lost} lost");
}

/// Runs a shell script inside `ns`.
fn sh(ns: &lab_cli::kernel::netns::NetNs, script: &str) {
    let status = Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

#[test]
fn conntrack_event_losses_are_counted_and_the_missed_flows_resynced() {
    if !common::privileged("conntrack_event_losses_are_counted_and_the_missed_flows_resynced") {
        return;
    }
    let ns = common::netns("labtest-oc");
    // Conntrack runs in a namespace once a rule needs it.
    sh(
        &ns,
        "nft add table ip labtest && \
         nft add chain ip labtest out '{ type filter hook output priority 0; }' && \
         nft add rule ip labtest out ct state new counter",
    );
    let dir = tempfile::tempdir().unwrap();
    // A 4 KiB receive buffer cannot hold a burst of 3,000 NEW events.
    let child = observe(
        &[
            "--netns",
            ns.name(),
            "--buffer-size",
            "4096",
            "--verdict",
            "FORWARDED",
        ],
        dir.path(),
        "ct",
    );
    const FLOWS: u16 = 3000;
    ns.run(|| {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        for port in 0..FLOWS {
            u.send_to(b"x", ("127.0.0.1", 20000 + port)).unwrap();
        }
    })
    .unwrap();
    let lines = stop(child);
    hubble_strict(&lines);
    let flows = flows(&lines);
    let ports: std::collections::BTreeSet<u64> = flows
        .iter()
        .filter(|f| f["labctl"]["event"] == "NEW")
        .filter_map(|f| f["l4"]["UDP"]["destination_port"].as_u64())
        .collect();
    assert_eq!(
        ports.len(),
        usize::from(FLOWS),
        "every flow, seen or resynced"
    );
    let lost: Vec<&Value> = lines.iter().filter_map(|l| l.get("lost_events")).collect();
    assert!(!lost.is_empty(), "a 4 KiB buffer lost nothing");
    // Hubble has no source for a netlink socket: labctl names it.
    assert!(
        lost.iter()
            .all(|l| l["source"] == "UNKNOWN_LOST_EVENT_SOURCE"
                && l["labctl"]["source"] == "CTNETLINK_SOCKET_BUFFER")
    );
    let resynced = flows
        .iter()
        .filter(|f| f["labctl"]["resync"] == true)
        .count() as u64;
    let counted: u64 = lost
        .iter()
        .map(|l| l["num_events_lost"].as_u64().unwrap())
        .sum();
    assert!(resynced > 0);
    assert_eq!(counted, resynced, "each loss counts the flows it hid");
}

#[test]
fn the_ebpf_trackers_connections_are_flows_too() {
    if !common::privileged("the_ebpf_trackers_connections_are_flows_too") {
        return;
    }
    let lab = common::lab("basic", "obt");
    let node = format!("{}/node1", lab.name());
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("track");
    let mut track = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["conntrack", "track", "--netns", &node, "--iface", "eth0"])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_ready(&mut track, &ready);
    let child = observe(&["--netns", &node], dir.path(), "obs");
    let (a, world) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    let spec = TrafficSpec {
        proto: Proto::Tcp,
        count: 2,
        ..TrafficSpec::default()
    };
    let report = traffic::run(&a, &world, &spec).unwrap();
    assert!(report.all_answered(), "{}", report.text());
    let node_addr = *report.server_saw.keys().next().unwrap();
    let lines = stop(child);
    common::interrupt(&track);
    track.wait_with_output().unwrap();
    hubble_strict(&lines);
    let all = flows(&lines);
    let new: Vec<&&Value> = all
        .iter()
        .filter(|f| f["labctl"]["origin"] == "ebpf-tracker" && f["labctl"]["event"] == "NEW")
        .collect();
    assert_eq!(new.len(), 2, "{lines:#?}");
    for f in new {
        // tc on the uplink sees the packets after masquerade.
        assert_eq!(f["IP"]["source"], node_addr.to_string());
        assert_eq!(f["IP"]["destination"], world.addr.to_string());
        assert_eq!(f["verdict"], "FORWARDED");
        assert_eq!(f["node_name"], node.as_str());
    }
}

/// A pod's and a node's local-out drops (an OUTPUT rule: no device yet,
/// UDP over IPv4 and IPv6) are flows of their lab: `observe --lab` shows
/// each with its member as the node, the pod as its source, and no
/// interface, exactly as many as nft counted.
#[test]
fn local_out_drops_are_flows_of_their_lab() {
    if !common::privileged("local_out_drops_are_flows_of_their_lab") {
        return;
    }
    use std::net::{Ipv6Addr, SocketAddr};
    const PORT: u16 = 5001;
    let lab = common::lab("basic", "oblo");
    let name = lab.name().to_owned();
    let (pod_a, node1) = (lab.netns("pod-a").unwrap(), lab.netns("node1").unwrap());
    for ns in [&pod_a, &node1] {
        common::drop_udp_out(ns, PORT);
        common::enable_ipv6_on_lo(ns);
    }
    let (a, b, world) = (
        lab.endpoint("pod-a").unwrap().addr,
        lab.endpoint("pod-b").unwrap().addr,
        lab.endpoint("world").unwrap().addr,
    );
    let dir = tempfile::tempdir().unwrap();
    let child = observe(
        &["--lab", &name, "--verdict", "DROPPED"],
        dir.path(),
        "local-out",
    );
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, PORT).into();
    common::send_udp_dropped_out(&pod_a, (b, PORT).into(), 5);
    common::send_udp_dropped_out(&pod_a, v6, 3);
    common::send_udp_dropped_out(&node1, (world, PORT).into(), 6);
    common::send_udp_dropped_out(&node1, v6, 2);
    let lines = stop(child);
    for (ns, v4, v6) in [(&pod_a, 5, 3), (&node1, 6, 2)] {
        assert_eq!(common::nft_counted(ns, "ip", "labtest_out"), v4);
        assert_eq!(common::nft_counted(ns, "ip6", "labtest_out"), v6);
    }

    // NETFILTER_DROP drops, IPv4 and IPv6, as Hubble's.
    hubble_strict(&lines);
    let all = flows(&lines);
    let out: Vec<_> = all
        .iter()
        .filter(|f| f["labctl"]["drop_reason"] == "NETFILTER_DROP")
        .collect();
    assert_eq!(out.len(), 5 + 3 + 6 + 2, "{all:#?}");
    for f in &out {
        assert_eq!(f["verdict"], "DROPPED", "{f}");
        assert_eq!(f["l4"]["UDP"]["destination_port"], PORT, "{f}");
        assert!(f.get("interface").is_none(), "no device, no interface: {f}");
    }
    let at = |member: &str, src: &str| {
        out.iter()
            .filter(|f| f["node_name"] == format!("{name}/{member}") && f["IP"]["source"] == src)
            .collect::<Vec<_>>()
    };
    // pod-a → pod-b, and pod-a's loopback: pod-a is the source.
    let from_a = at("pod-a", &a.to_string());
    assert_eq!(from_a.len(), 5, "{out:#?}");
    for f in &from_a {
        assert_eq!(f["source"]["pod_name"], "pod-a", "{f}");
        assert_eq!(f["source"]["namespace"], name.as_str(), "{f}");
        assert_eq!(f["destination"]["pod_name"], "pod-b", "{f}");
    }
    let a_v6 = at("pod-a", "::1");
    assert_eq!(a_v6.len(), 3, "{out:#?}");
    assert!(
        a_v6.iter()
            .all(|f| f["source"]["pod_name"] == "pod-a" && f["IP"]["ipVersion"] == "IPv6")
    );
    // node1 is not a pod: no pod on either side.
    let node_drops: Vec<_> = out
        .iter()
        .filter(|f| f["node_name"] == format!("{name}/node1"))
        .collect();
    assert_eq!(node_drops.len(), 6 + 2, "{out:#?}");
    assert_eq!(
        node_drops
            .iter()
            .filter(|f| f["IP"]["destination"] == world.to_string())
            .count(),
        6
    );
    assert!(
        node_drops
            .iter()
            .all(|f| f["source"].get("pod_name").is_none())
    );
}

/// What a GetFlows stream brought: flows (those `keep` accepts) and the
/// events its lost records count, until `done` or the deadline.
#[derive(Debug, Default)]
struct Received {
    flows: u64,
    lost: u64,
    hubble_ring_lost: u64,
}

async fn receive(
    stream: &mut tonic::Streaming<lab_cli::flows::hubble::pb::observer::GetFlowsResponse>,
    got: &mut Received,
    keep: impl Fn(&lab_cli::flows::hubble::pb::flow::Flow) -> bool,
    done: impl Fn(&Received) -> bool,
) {
    use lab_cli::flows::hubble::pb::{
        flow::LostEventSource, observer::get_flows_response::ResponseTypes,
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done(got) {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("the stream stalled at {got:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended at {got:?}"));
        match message.response_types {
            Some(ResponseTypes::Flow(f)) => {
                assert!(keep(&f), "a flow the filters should have kept out: {f:?}");
                got.flows += 1;
            }
            Some(ResponseTypes::LostEvents(l)) => {
                got.lost += l.num_events_lost;
                if l.source() == LostEventSource::HubbleRingBuffer {
                    got.hubble_ring_lost += l.num_events_lost;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `observe --serve`: Hubble's Observer API to clients built from Hubble's
/// protos. ServerStatus and GetNodes; an unsupported filter field refused
/// by name; two followers with different filters at once, one of which
/// stops reading while 20,000 drops arrive: the reader gets every one (or
/// its loss counted), the stalled one keeps only its queue's worth and
/// then a HUBBLE_RING_BUFFER record counting exactly what it missed; then
/// `number`, `first`, whitelists and blacklists over the ring; Ctrl-C ends
/// the followers' streams and the server.
#[test]
fn serve_speaks_hubbles_observer_api_to_several_clients_at_once() {
    if !common::privileged("serve_speaks_hubbles_observer_api_to_several_clients_at_once") {
        return;
    }
    use lab_cli::flows::hubble::pb::{
        flow::{Flow, FlowFilter, Verdict, layer4::Protocol},
        observer::{
            GetFlowsRequest, GetNodesRequest, ServerStatusRequest,
            get_flows_response::ResponseTypes, observer_client::ObserverClient,
        },
        relay::NodeState,
    };
    const N: u64 = 20_000;
    let ns = common::netns("labtest-os");
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("serve");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["observe", "--netns", ns.name(), "--serve", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::wait_ready(&mut child, &ready);
    let url = format!("http://{addr}");
    let to_port_9 = |f: &Flow| {
        f.verdict() == Verdict::Dropped
            && matches!(f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                Some(Protocol::Udp(u)) if u.destination_port == 9)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::scope(|scope| {
        runtime.block_on(async {
            let mut a = ObserverClient::connect(url.clone()).await.unwrap();
            let status = a
                .server_status(ServerStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert!(status.version.starts_with("labctl "), "{status:?}");
            assert_eq!(status.max_flows, 4095);
            assert_eq!(status.num_connected_nodes, Some(1));
            let nodes = a.get_nodes(GetNodesRequest {}).await.unwrap().into_inner();
            assert_eq!(nodes.nodes.len(), 1);
            assert_eq!(nodes.nodes[0].state(), NodeState::NodeConnected);
            assert_eq!(nodes.nodes[0].address, addr);

            // A filter field labctl cannot apply is named, never ignored.
            let err = a
                .get_flows(GetFlowsRequest {
                    whitelist: vec![FlowFilter {
                        source_label: vec!["k8s:app=web".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains("source_label"), "{err}");

            // A follows the drops to port 9; B (its own connection, a small
            // window) follows UDP minus the forwarded, and does not read.
            let drops_to_9 = FlowFilter {
                verdict: vec![Verdict::Dropped.into()],
                destination_port: vec!["9".into()],
                ..Default::default()
            };
            let mut a_stream = a
                .get_flows(GetFlowsRequest {
                    follow: true,
                    whitelist: vec![drops_to_9.clone()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let b_channel = tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
                .connect()
                .await
                .unwrap();
            let mut b = ObserverClient::new(b_channel);
            let mut b_stream = b
                .get_flows(GetFlowsRequest {
                    follow: true,
                    whitelist: vec![FlowFilter {
                        protocol: vec!["udp".into()],
                        ..Default::default()
                    }],
                    blacklist: vec![FlowFilter {
                        verdict: vec![Verdict::Forwarded.into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let sender = scope.spawn(|| common::send_udp(&ns, 9, N as u32));
            let mut got_a = Received::default();
            receive(&mut a_stream, &mut got_a, to_port_9, |r| {
                r.flows + r.lost == N
            })
            .await;
            sender.join().unwrap();
            // B now reads: its queue, then what it missed, counted.
            let mut got_b = Received::default();
            receive(&mut b_stream, &mut got_b, to_port_9, |r| {
                r.flows + r.lost == N
            })
            .await;
            eprintln!("reading client {got_a:?}, stalled client {got_b:?}");
            assert!(got_b.hubble_ring_lost > 0, "B never fell behind: {got_b:?}");
            assert!(
                got_a.flows > got_b.flows,
                "the reading client was held back with the stalled one: A {got_a:?}, B {got_b:?}"
            );

            // number, first, whitelist and blacklist over the ring.
            let ask = |req: GetFlowsRequest| {
                let mut client = a.clone();
                async move {
                    let mut stream = client.get_flows(req).await.unwrap().into_inner();
                    let mut flows = Vec::new();
                    while let Some(m) = stream.message().await.unwrap() {
                        if let Some(ResponseTypes::Flow(f)) = m.response_types {
                            flows.push(f);
                        }
                    }
                    flows
                }
            };
            let time = |f: &Flow| f.time.map(|t| (t.seconds, t.nanos)).unwrap();
            let last = ask(GetFlowsRequest {
                number: 5,
                whitelist: vec![drops_to_9.clone()],
                ..Default::default()
            })
            .await;
            assert_eq!(last.len(), 5);
            assert!(last.iter().all(to_port_9));
            let first = ask(GetFlowsRequest {
                number: 3,
                first: true,
                whitelist: vec![drops_to_9.clone()],
                ..Default::default()
            })
            .await;
            assert_eq!(first.len(), 3);
            assert!(time(&first[2]) <= time(&last[0]), "{first:?} {last:?}");
            let none = |whitelist, blacklist| {
                ask(GetFlowsRequest {
                    number: 10,
                    whitelist,
                    blacklist,
                    ..Default::default()
                })
            };
            assert!(
                none(
                    vec![FlowFilter {
                        protocol: vec!["tcp".into()],
                        ..Default::default()
                    }],
                    vec![]
                )
                .await
                .is_empty()
            );
            assert!(none(vec![], vec![drops_to_9.clone()]).await.is_empty());
            let status = a
                .server_status(ServerStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(status.num_flows, 4095, "{status:?}");

            // Ctrl-C: the followers' streams end, then the server.
            common::interrupt(&child);
            for stream in [&mut a_stream, &mut b_stream] {
                let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    while stream.message().await.ok().flatten().is_some() {}
                })
                .await;
                assert!(end.is_ok(), "a follower's stream did not end at Ctrl-C");
            }
        })
    });
    let status = common::wait_exit(&mut child, 10);
    assert!(status.success(), "observe --serve exited with {status}");
}

/// SIGTERM stops `observe --serve` within its grace even while a follower
/// has stopped reading with a full window and a full queue: exit 0, in
/// less than 8 s (the server's grace is 1 s; the rest is observe's own
/// stop, longer on a loaded machine).
#[test]
fn serve_stops_on_sigterm_even_with_a_stalled_client() {
    if !common::privileged("serve_stops_on_sigterm_even_with_a_stalled_client") {
        return;
    }
    use lab_cli::flows::hubble::pb::observer::{
        GetFlowsRequest, ServerStatusRequest, observer_client::ObserverClient,
    };
    let ns = common::netns("labtest-ot");
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("serve");
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["observe", "--netns", ns.name(), "--serve", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::wait_ready(&mut child, &ready);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        // The stalled follower on a connection of its own (its window is
        // the connection's), the status asked on another.
        let mut stalled_client = ObserverClient::new(channel);
        let mut client = ObserverClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let _stalled = stalled_client
            .get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        common::send_udp(&ns, 9, 10_000);
        // Until the server has seen the drops (the stalled stream is full).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                client.server_status(ServerStatusRequest {}),
            )
            .await
            .expect("ServerStatus did not answer")
            .unwrap()
            .into_inner();
            if status.seen_flows >= 5_000 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{status:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let asked = std::time::Instant::now();
        common::signal(&child, nix::sys::signal::Signal::SIGTERM);
        let status = common::wait_exit(&mut child, 10);
        let took = asked.elapsed();
        assert!(status.success(), "observe --serve exited with {status}");
        assert!(
            took < std::time::Duration::from_secs(8),
            "stopping took {took:?}"
        );
        eprintln!("stopped {took:?} after SIGTERM with a stalled client");
    });
}

/// Only the empire reaches a deathstar, on TCP 80 (a NetworkPolicy: both
/// policy modes enforce it).
const EMPIRE_ONLY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: empire-only}
spec:
  podSelector:
    matchLabels: {class: deathstar}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {org: empire}
    ports:
    - {port: 80, protocol: TCP}
";

/// `labctl ARGS`, which must succeed: its standard output.
fn labctl_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `policy trace` reads from the datapath for the deathstar's
/// ingress from `from` on `port`: the packets its deciding rule or entry
/// counted.
fn ingress_counted(lab: &str, from: &str, port: &str) -> u64 {
    let t: Value = serde_json::from_str(&labctl_ok(&[
        "policy",
        "trace",
        "--from",
        from,
        "--to",
        "deathstar-1",
        "--port",
        port,
        "--lab",
        lab,
        "-o",
        "json",
    ]))
    .unwrap();
    t["datapath"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["direction"] == "ingress")
        .and_then(|d| d["packets"].as_u64())
        .unwrap_or(0)
}

/// Waits (10 s at most) until the deathstar's ingress has counted `want`
/// packets from `from` on `port`.
fn wait_counted(lab: &str, from: &str, port: &str, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = ingress_counted(lab, from, port);
        if got >= want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{from} -> deathstar-1 {port}: {got} of {want} packets counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Traffic to deathstar-1 (which serves TCP 80): `allowed` connections
/// from the tiefighter, each sending data; `denied_udp` sockets of the
/// xwing sending `per_socket` datagrams each to UDP 80; and one TCP
/// attempt of the xwing that the SYN's retransmission makes two packets.
/// Returns once the datapath has judged every packet.
fn verdict_traffic(
    lab: &common::TestLab,
    allowed: usize,
    denied_udp: usize,
    per_socket: usize,
    denied_tcp: bool,
) {
    use std::{
        io::Write as _,
        net::{SocketAddr, TcpStream},
        time::Duration,
    };
    let name = lab.name();
    let ds1 = SocketAddr::from((lab.plan.pod("deathstar-1").unwrap().addr, 80));
    let ns =
        |pod: &str| lab_cli::kernel::netns::NetNs::open(&lab.plan.pod(pod).unwrap().netns).unwrap();
    let (tf, xw) = (ns("tiefighter"), ns("xwing"));
    let before = ingress_counted(name, "xwing", "80/udp");
    for _ in 0..allowed {
        tf.run(|| {
            let mut s = TcpStream::connect_timeout(&ds1, Duration::from_secs(5)).unwrap();
            for _ in 0..3 {
                s.write_all(b"hello").unwrap();
            }
        })
        .unwrap();
    }
    for _ in 0..denied_udp {
        xw.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..per_socket {
                s.send_to(b"x", ds1).unwrap();
            }
        })
        .unwrap();
    }
    if denied_tcp {
        // Past the first retransmission (1 s): two SYNs, one attempt.
        let r = xw
            .run(|| TcpStream::connect_timeout(&ds1, Duration::from_millis(1500)))
            .unwrap();
        assert!(r.is_err(), "the xwing must not land");
    }
    wait_counted(
        name,
        "xwing",
        "80/udp",
        before + (denied_udp * per_socket) as u64,
    );
}

/// Flows that are policy verdicts (Hubble's event type 5).
fn verdicts(lines: &[Value]) -> Vec<&Value> {
    flows(lines)
        .into_iter()
        .filter(|f| f["event_type"]["type"] == 5)
        .collect()
}

fn one_verdict_per_connection(mode: lab_cli::policy::PolicyMode, tag: &str) {
    let lab = common::lab_with(
        "starwars",
        tag,
        lab_cli::lab::plan::LabOptions {
            policy_mode: Some(mode),
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empire-only.yaml");
    std::fs::write(&file, EMPIRE_ONLY).unwrap();
    labctl_ok(&[
        "policy",
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--lab",
        &name,
    ]);
    let web = lab
        .netns("deathstar-1")
        .unwrap()
        .run(|| std::net::TcpListener::bind("0.0.0.0:80"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = web.accept() {
            std::io::copy(&mut s, &mut std::io::sink()).ok();
        }
    });

    // N allowed connections, M denied UDP flows of K datagrams and one
    // denied TCP attempt: N ALLOWED and M + 1 DENIED verdicts.
    const N: usize = 3;
    const M: usize = 4;
    const K: usize = 5;
    let json = observe(&["--lab", &name], dir.path(), "json");
    verdict_traffic(&lab, N, M, K, true);
    let lines = stop(json);
    hubble_strict(&lines);
    let v = verdicts(&lines);
    let allowed: Vec<_> = v.iter().filter(|f| f["verdict"] == "FORWARDED").collect();
    let denied: Vec<_> = v.iter().filter(|f| f["verdict"] == "DROPPED").collect();
    assert_eq!(
        (allowed.len(), denied.len()),
        (N, M + 1),
        "{mode}: one verdict per connection: {v:#?}"
    );
    let ds1 = format!("{}", lab.plan.pod("deathstar-1").unwrap().addr);
    let datapath = match mode {
        lab_cli::policy::PolicyMode::Ebpf => "ebpf",
        lab_cli::policy::PolicyMode::Netfilter => "nflog",
    };
    for f in &allowed {
        assert_eq!(f["traffic_direction"], "INGRESS", "{f}");
        assert_eq!(f["policy_match_type"], 2, "L3-L4: {f}");
        assert_eq!(f["ingress_allowed_by"][0]["name"], "empire-only", "{f}");
        assert_eq!(f["ingress_allowed_by"][0]["kind"], "NetworkPolicy", "{f}");
        assert_eq!(f["source"]["pod_name"], "tiefighter");
        assert_eq!(f["IP"]["destination"], ds1.as_str());
        assert_eq!(f["l4"]["TCP"]["destination_port"], 80);
        assert_eq!(f["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(f["node_name"], format!("{name}/node1"));
        assert_eq!(f["labctl"]["datapath"], datapath);
        assert!(
            f["source"]["labels"]
                .as_array()
                .unwrap()
                .contains(&"k8s:org=empire".into())
        );
    }
    for f in &denied {
        assert_eq!(f["traffic_direction"], "INGRESS", "{f}");
        assert!(f.get("policy_match_type").is_none(), "none: {f}");
        assert_eq!(f["drop_reason_desc"], "POLICY_DENIED", "{f}");
        assert_eq!(f["drop_reason"], 133);
        assert_eq!(f["ingress_denied_by"][0]["name"], "empire-only", "{f}");
        assert_eq!(f["source"]["pod_name"], "xwing");
        assert_eq!(f["labctl"]["datapath"], datapath);
    }
    assert_eq!(
        denied
            .iter()
            .filter(|f| f["l4"].get("UDP").is_some())
            .count(),
        M,
        "one verdict per UDP socket, not per datagram"
    );
    // Identities: the source's differ by side, the destination's is one.
    let id = |f: &&&Value, side: &str| f[side]["identity"].as_u64().unwrap();
    assert!(
        allowed
            .iter()
            .chain(&denied)
            .all(|f| id(f, "destination") == id(&allowed[0], "destination"))
    );
    assert_ne!(id(&allowed[0], "source"), id(&denied[0], "source"));

    // Compact lines, as Hubble prints them.
    let ready = dir.path().join("text");
    let mut text = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args([
            "observe",
            "--lab",
            &name,
            "--type",
            "policy-verdict",
            "--ready-file",
        ])
        .arg(&ready)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_ready(&mut text, &ready);
    verdict_traffic(&lab, 1, 1, K, false);
    common::interrupt(&text);
    let out = text.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).unwrap();
    let joined = out.replace("\n             ", " ");
    // --type policy-verdict: nothing else (the connections, the drops).
    let allowed_lines: Vec<&str> = joined.lines().filter(|l| l.contains(" [")).collect();
    assert_eq!(allowed_lines.len(), 2, "{out}");
    assert!(
        allowed_lines.iter().all(|l| l.contains("policy-verdict:")),
        "{out}"
    );
    assert!(
        allowed_lines
            .iter()
            .any(|l| l.contains(&format!("{name}/tiefighter:"))
                && l.contains("policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)")
                && l.contains("rule default/empire-only ingress[0]")),
        "{out}"
    );
    assert!(
        allowed_lines
            .iter()
            .any(|l| l.contains(&format!("{name}/xwing:"))
                && l.contains(&format!("-> {name}/deathstar-1:80 (ID:"))
                && l.contains("policy-verdict:none INGRESS DENIED (UDP) by default/empire-only")),
        "{out}"
    );
    for l in out.lines() {
        assert!(l.chars().count() <= 80, "{l}");
    }
    lab.down().unwrap();
}

#[test]
fn policy_verdicts_one_per_connection_ebpf() {
    if !common::privileged("policy_verdicts_one_per_connection_ebpf") {
        return;
    }
    one_verdict_per_connection(lab_cli::policy::PolicyMode::Ebpf, "p26ve");
}

#[test]
fn policy_verdicts_one_per_connection_netfilter() {
    if !common::privileged("policy_verdicts_one_per_connection_netfilter") {
        return;
    }
    one_verdict_per_connection(lab_cli::policy::PolicyMode::Netfilter, "p26vn");
}
