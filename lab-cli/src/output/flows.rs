//! How `labctl observe` prints: Hubble's compact lines, or JSON objects
//! that are Hubble's `GetFlowsResponse` as `hubble observe -o json` prints
//! it (`flow` or `lost_events`, with `node_name` and `time`) once labctl's
//! extension object (the key `labctl` in `flow` and `lost_events`) is set
//! aside: every other key and enum value is Hubble's schema
//! (`flows::hubble`, checked by a strict parser in the tests). The field
//! mapping is in docs/observe.md.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::width;
use crate::{
    conntrack::netlink::EventKind,
    drops::{reasons::POLICY_DENY, record::PolicyVerdict},
    flows::{
        Endpoint, Flow, Item, L4, Lost, Origin, PolicyEvent, Verdict, flag_names,
        hubble::{self, SchemaError, pb::observer::GetFlowsResponse},
    },
};

/// RFC 3339 in UTC with nanoseconds, as Hubble's JSON times.
fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

fn endpoint_json(e: &Endpoint) -> Value {
    let mut m = Map::new();
    if let Some(p) = &e.pod {
        m.insert("namespace".into(), json!(p.namespace));
        m.insert("pod_name".into(), json!(p.name));
        m.insert(
            "labels".into(),
            json!([format!("k8s:io.kubernetes.pod.namespace={}", p.namespace)]),
        );
    }
    Value::Object(m)
}

fn l4_json(f: &Flow) -> Value {
    let ports = |key: &str| {
        json!({ key: {
            "source_port": f.source.port.unwrap_or(0),
            "destination_port": f.destination.port.unwrap_or(0),
        }})
    };
    match &f.l4 {
        L4::Tcp(flags) => {
            let mut v = ports("TCP");
            if let Some(bits) = flags {
                let set: Map<String, Value> = flag_names(*bits)
                    .into_iter()
                    .map(|n| (n.to_owned(), Value::Bool(true)))
                    .collect();
                v["TCP"]["flags"] = Value::Object(set);
            }
            v
        }
        L4::Udp => ports("UDP"),
        L4::Icmp { v6, kind, code } => {
            let key = if *v6 { "ICMPv6" } else { "ICMPv4" };
            json!({ key: { "type": kind, "code": code } })
        }
        L4::Other(_) => json!({}),
    }
}

/// A policy drop's fields, as Hubble 1.17+ fills them: Cilium's reason
/// number, the direction, the identities, and the policies that denied it
/// (`egress_denied_by` / `ingress_denied_by`, Hubble's `Policy` objects).
fn policy_json(flow: &mut Map<String, Value>, f: &Flow, p: &PolicyVerdict) {
    let code = if f.drop_reason.as_deref() == Some(POLICY_DENY) {
        lab_common::verdict::REASON_POLICY_DENY
    } else {
        lab_common::verdict::REASON_POLICY_DENIED
    };
    flow.insert("drop_reason".into(), json!(code));
    flow.insert(
        "traffic_direction".into(),
        json!(p.direction.to_ascii_uppercase()),
    );
    let Some(n) = &p.names else {
        return;
    };
    let key = format!("{}_denied_by", p.direction);
    flow.insert(key, policy_refs_json(&n.policies));
}

/// Cilium's monitor message type of a policy verdict
/// (`MessageTypePolicyVerdict`); its sub type is 0, as Cilium's
/// `send_policy_verdict_notify` writes it.
const MESSAGE_TYPE_POLICY_VERDICT: u8 = 5;
/// Cilium's `MessageTypeDrop`; its sub type is the drop reason (Cilium's
/// number where labctl has one: a policy datapath's; else 0).
const MESSAGE_TYPE_DROP: u8 = 1;

fn policy_refs_json(policies: &[crate::drops::record::PolicyRef]) -> Value {
    Value::Array(
        policies
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "namespace": p.namespace,
                    "labels": [
                        format!("k8s:io.cilium.k8s.policy.derived-from={}", p.kind),
                        format!("k8s:io.cilium.k8s.policy.name={}", p.name),
                        format!("k8s:io.cilium.k8s.policy.namespace={}", p.namespace),
                    ],
                    "kind": p.kind,
                })
            })
            .collect(),
    )
}

/// A policy verdict's fields, as Hubble fills them for a policy-verdict
/// event: `event_type` 5, `policy_match_type`, the direction, the drop
/// reason of a denial, and the policies (Hubble 1.17+:
/// `ingress_allowed_by`, `egress_denied_by`, ...).
fn verdict_json(flow: &mut Map<String, Value>, f: &Flow, p: &PolicyEvent) {
    flow.insert(
        "event_type".into(),
        json!({ "type": MESSAGE_TYPE_POLICY_VERDICT }),
    );
    if p.match_type != 0 {
        flow.insert("policy_match_type".into(), json!(p.match_type));
    }
    flow.insert(
        "traffic_direction".into(),
        json!(p.direction.to_ascii_uppercase()),
    );
    let allowed = f.verdict == Verdict::Forwarded;
    if !allowed {
        let code = if f.drop_reason.as_deref() == Some(POLICY_DENY) {
            lab_common::verdict::REASON_POLICY_DENY
        } else {
            lab_common::verdict::REASON_POLICY_DENIED
        };
        flow.insert("drop_reason".into(), json!(code));
    }
    if let Some(n) = &p.names
        && !n.policies.is_empty()
    {
        let key = format!(
            "{}_{}_by",
            p.direction,
            if allowed { "allowed" } else { "denied" }
        );
        flow.insert(key, policy_refs_json(&n.policies));
    }
}

/// The `flow` object.
pub fn flow_json(f: &Flow) -> Value {
    let mut flow = Map::new();
    flow.insert("time".into(), json!(rfc3339(f.time_ns)));
    flow.insert("verdict".into(), json!(f.verdict.as_str()));
    // Hubble's drop_reason_desc holds only Hubble's (Cilium's) reasons;
    // the kernel's goes in the extension and in Summary.
    if let Some(reason) = f
        .drop_reason
        .as_deref()
        .filter(|r| hubble::is_hubble_drop_reason(r))
    {
        flow.insert("drop_reason_desc".into(), json!(reason));
    }
    if let Some(p) = &f.policy {
        policy_json(&mut flow, f, p);
    }
    if let Origin::Drop { .. } = &f.origin {
        let sub_type = f
            .drop_reason
            .as_deref()
            .and_then(hubble::drop_reason_code)
            .unwrap_or(0);
        let mut event = json!({ "type": MESSAGE_TYPE_DROP });
        if sub_type != 0 {
            event["sub_type"] = json!(sub_type);
        }
        flow.insert("event_type".into(), event);
    }
    if let Origin::Policy(p) = &f.origin {
        verdict_json(&mut flow, f, p);
    }
    if let (Some(src), Some(dst)) = (f.source.ip, f.destination.ip) {
        let mut ip = json!({
            "source": src.to_string(),
            "destination": dst.to_string(),
            "ipVersion": if src.is_ipv4() { "IPv4" } else { "IPv6" },
        });
        if let Some(x) = f.source_xlated {
            ip["source_xlated"] = json!(x.to_string());
        }
        flow.insert("IP".into(), ip);
    }
    flow.insert("l4".into(), l4_json(f));
    let mut source = endpoint_json(&f.source);
    let mut destination = endpoint_json(&f.destination);
    if let Some(n) = f.policy.as_ref().and_then(|p| p.names.as_ref()) {
        source["identity"] = json!(n.src_identity);
        destination["identity"] = json!(n.dst_identity);
    }
    if let Origin::Policy(p) = &f.origin {
        let names = p.names.as_ref();
        let ids = [
            p.src_identity.or(names.map(|n| n.src_identity)),
            p.dst_identity.or(names.map(|n| n.dst_identity)),
        ];
        let labels = [names.map(|n| &n.src_labels), names.map(|n| &n.dst_labels)];
        for ((side, id), labels) in [&mut source, &mut destination]
            .into_iter()
            .zip(ids)
            .zip(labels)
        {
            if let Some(id) = id {
                side["identity"] = json!(id);
            }
            // The identity's labels, as Hubble gives them.
            if let Some(l) = labels.filter(|l| !l.is_empty()) {
                side["labels"] = json!(l);
            }
        }
    }
    flow.insert("source".into(), source);
    flow.insert("destination".into(), destination);
    flow.insert("Type".into(), json!("L3_L4"));
    flow.insert("node_name".into(), json!(f.node));
    flow.insert("is_reply".into(), json!(false));
    // A reason Hubble has no value for is said in the summary.
    let summary = match &f.drop_reason {
        Some(reason) if !hubble::is_hubble_drop_reason(reason) => {
            format!("{} (kernel: {reason})", f.summary())
        }
        _ => f.summary(),
    };
    flow.insert("Summary".into(), json!(summary));
    let mut labctl = Map::new();
    if let Some(reason) = &f.drop_reason {
        labctl.insert("drop_reason".into(), json!(reason));
    }
    match &f.origin {
        Origin::Conntrack { event, resync } => {
            labctl.insert("origin".into(), json!("conntrack"));
            labctl.insert("event".into(), json!(event));
            labctl.insert("resync".into(), json!(resync));
        }
        Origin::Tracker { event } => {
            labctl.insert("origin".into(), json!("ebpf-tracker"));
            labctl.insert("event".into(), json!(event));
        }
        Origin::Drop { location, ifname } => {
            labctl.insert("origin".into(), json!("drop"));
            labctl.insert("location".into(), json!(location));
            if let Some(frag) = f.fragment {
                labctl.insert("fragment".into(), json!(frag));
            }
            if let Some(p) = &f.policy {
                labctl.insert("policy".into(), json!(p));
            }
            if let Some(i) = ifname {
                flow.insert("interface".into(), json!({ "name": i }));
            }
        }
        Origin::Policy(p) => {
            labctl.insert("origin".into(), json!("policy-verdict"));
            labctl.insert("datapath".into(), json!(p.source.as_str()));
            labctl.insert("entry".into(), json!(p.entry));
            if let Some(n) = &p.names {
                labctl.insert("lab".into(), json!(n.lab));
                if let Some(pod) = &n.pod {
                    labctl.insert("pod".into(), json!(pod));
                }
                if let Some(rule) = &n.rule {
                    labctl.insert("rule".into(), json!(rule));
                }
            }
        }
    }
    if let Some(nat) = &f.nat {
        labctl.insert("nat".into(), json!(nat));
    }
    if let Some(state) = &f.state {
        labctl.insert("state".into(), json!(state));
    }
    flow.insert(hubble::EXTENSION_KEY.into(), Value::Object(labctl));
    Value::Object(flow)
}

/// One JSON line, as `hubble observe -o json` prints a GetFlowsResponse.
pub fn item_json(item: &Item) -> Value {
    match item {
        Item::Flow(f) => json!({
            "flow": flow_json(f),
            "node_name": f.node,
            "time": rfc3339(f.time_ns),
        }),
        Item::Lost(l) => json!({
            "lost_events": {
                "source": l.source.hubble(),
                "num_events_lost": l.count,
                hubble::EXTENSION_KEY: { "source": l.source.labctl() },
            },
            "node_name": l.node,
            "time": rfc3339(l.time_ns),
        }),
    }
}

/// An item as Hubble's `GetFlowsResponse` (for `observe --serve`): its
/// JSON line, parsed strictly against Hubble's schema, so the API and
/// `-o json` cannot differ.
pub fn item_response(item: &Item) -> Result<GetFlowsResponse, SchemaError> {
    hubble::strict_response(item_json(item))
}

/// `10.0.0.2:40000`, `lab/pod-a:40000` (the pod's name for its address),
/// `[fd00::2]:53`.
fn endpoint_text(e: &Endpoint) -> String {
    let host = match (&e.pod, e.ip) {
        (Some(p), _) => p.to_string(),
        (None, Some(std::net::IpAddr::V6(a))) if e.port.is_some() => format!("[{a}]"),
        (None, Some(a)) => a.to_string(),
        (None, None) => "-".into(),
    };
    match e.port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

fn clock(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns % 1_000_000_000) / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{millis:03}")
}

/// Where a compact line's continuation starts: under the source.
const COMPACT_INDENT: usize = 13;

/// Hubble's compact line: `TIME [NODE]: SRC -> DST POINT VERDICT (SUMMARY)`,
/// with `<>` for drops as Hubble prints them, then the NAT; continued on
/// lines indented under the time where it does not fit 80 columns.
pub fn compact(item: &Item) -> String {
    match item {
        Item::Flow(f) => {
            let (arrow, point) = match &f.origin {
                Origin::Conntrack { event, resync } => (
                    "->",
                    format!(
                        "ct-{}{}",
                        event_word(*event),
                        if *resync { " (resync)" } else { "" }
                    ),
                ),
                Origin::Tracker { event } => ("->", format!("ebpf-ct-{}", event_word(*event))),
                Origin::Policy(p) => {
                    return verdict_compact(f, p);
                }
                Origin::Drop { .. } => {
                    let mut point = f.drop_reason.clone().unwrap_or_default();
                    if let Some(p) = &f.policy {
                        point = format!("{point} {}", p.direction.to_ascii_uppercase());
                    }
                    ("<>", point)
                }
            };
            let mut pieces = vec![
                format!("{} [{}]:", clock(f.time_ns), f.node),
                endpoint_text(&f.source),
                arrow.to_owned(),
                endpoint_text(&f.destination),
                point,
                f.verdict.as_str().to_owned(),
                format!("({})", f.summary()),
            ];
            pieces.extend(f.nat.clone());
            if f.fragment == Some("later") {
                pieces.push("(fragment)".into());
            }
            if f.verdict == Verdict::Dropped
                && let Origin::Drop { location, .. } = &f.origin
            {
                pieces.push(format!("at {location}"));
            }
            if let Some(p) = &f.policy {
                pieces.extend(super::drops::policy_pieces(p));
            }
            width::pieces(&pieces, COMPACT_INDENT)
        }
        Item::Lost(Lost {
            time_ns,
            source,
            count,
            node,
        }) => width::pieces(
            &[
                format!("{} [{node}]:", clock(*time_ns)),
                format!("EVENTS LOST: {} {count}", source.labctl()),
            ],
            COMPACT_INDENT,
        ),
    }
}

/// A policy verdict as Hubble's compact line: `SRC (ID:N) -> DST (ID:M)
/// policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)`, then the
/// policies behind it.
fn verdict_compact(f: &Flow, p: &PolicyEvent) -> String {
    let names = p.names.as_ref();
    let id = |own: Option<u32>, named: Option<u32>| own.or(named).map(|i| format!("(ID:{i})"));
    let mut pieces = vec![
        format!("{} [{}]:", clock(f.time_ns), f.node),
        endpoint_text(&f.source),
    ];
    pieces.extend(id(p.src_identity, names.map(|n| n.src_identity)));
    pieces.push("->".into());
    pieces.push(endpoint_text(&f.destination));
    pieces.extend(id(p.dst_identity, names.map(|n| n.dst_identity)));
    pieces.push(format!(
        "policy-verdict:{} {}",
        crate::flows::match_type_name(p.match_type),
        p.direction.to_ascii_uppercase()
    ));
    pieces.push(
        if f.verdict == Verdict::Forwarded {
            "ALLOWED"
        } else {
            "DENIED"
        }
        .into(),
    );
    pieces.push(format!("({})", f.summary()));
    if let Some(n) = names {
        if let Some(rule) = &n.rule {
            pieces.push(format!("rule {rule}"));
        } else if !n.policies.is_empty() {
            let by: Vec<String> = n.policies.iter().map(ToString::to_string).collect();
            pieces.push(format!("by {}", by.join(", ")));
        }
    }
    width::pieces(&pieces, COMPACT_INDENT)
}

fn event_word(e: EventKind) -> &'static str {
    match e {
        EventKind::New => "new",
        EventKind::Update => "update",
        EventKind::Destroy => "destroy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flows::{
            LostSource, PodsByAddr,
            hubble::pb::{flow::DropReason, observer::get_flows_response::ResponseTypes},
        },
        kernel::names::PodRef,
    };

    struct LabPods;
    impl PodsByAddr for LabPods {
        fn pod(&mut self, _: u64, ip: std::net::IpAddr) -> Option<PodRef> {
            (ip.to_string() == "10.0.0.1").then(|| PodRef {
                namespace: "lab".into(),
                name: "pod-a".into(),
                uid: None,
            })
        }
    }

    #[test]
    fn a_drop_in_hubble_shape() {
        let mut r = crate::drops::record::tests::sample_udp();
        r.proto = "TCP".into();
        r.tcp_flags = Some("S".into());
        r.src = Some("10.0.0.1".into());
        let item = Item::Flow(Box::new(Flow::from_drop(&r, &mut LabPods)));
        let v = item_json(&item);
        assert_eq!(v["flow"]["verdict"], "DROPPED");
        // The kernel's reason is not one of Hubble's: the extension and
        // the summary carry it.
        assert!(v["flow"].get("drop_reason_desc").is_none(), "{v}");
        assert_eq!(v["flow"]["labctl"]["drop_reason"], "NO_SOCKET");
        assert_eq!(v["flow"]["IP"]["source"], "10.0.0.1");
        assert_eq!(v["flow"]["IP"]["ipVersion"], "IPv4");
        assert_eq!(v["flow"]["l4"]["TCP"]["destination_port"], 9);
        assert_eq!(v["flow"]["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(v["flow"]["source"]["pod_name"], "pod-a");
        assert_eq!(v["flow"]["source"]["namespace"], "lab");
        assert_eq!(v["flow"]["destination"], json!({}));
        assert_eq!(v["flow"]["Summary"], "TCP Flags: SYN (kernel: NO_SOCKET)");
        // Cilium's drop message type; the kernel's reason has no number of
        // Cilium's.
        assert_eq!(v["flow"]["event_type"], json!({"type": 1}));
        assert_eq!(v["flow"]["interface"]["name"], "lo");
        // Hubble's schema takes it, and the same flow with a reason of
        // Hubble's carries it in drop_reason_desc.
        let Some(ResponseTypes::Flow(pb)) = item_response(&item).unwrap().response_types else {
            panic!("not a flow");
        };
        #[allow(
            deprecated,
            reason = "Summary is deprecated in Hubble but still filled"
        )]
        let summary = pb.summary.clone();
        assert_eq!(summary, "TCP Flags: SYN (kernel: NO_SOCKET)");
        assert_eq!(pb.drop_reason_desc(), DropReason::Unknown);
        r.reason = "POLICY_DENIED".into();
        let policy = Item::Flow(Box::new(Flow::from_drop(&r, &mut LabPods)));
        assert_eq!(
            item_json(&policy)["flow"]["drop_reason_desc"],
            "POLICY_DENIED"
        );
        let Some(ResponseTypes::Flow(pb)) = item_response(&policy).unwrap().response_types else {
            panic!("not a flow");
        };
        assert_eq!(pb.drop_reason_desc(), DropReason::PolicyDenied);
        assert_eq!(
            item_json(&policy)["flow"]["event_type"],
            json!({"type": 1, "sub_type": 133})
        );
        assert_eq!(v["node_name"], "labtest-a");
        assert_eq!(v["time"], "2023-11-14T23:15:23.000456000Z");
        assert_eq!(
            compact(&item),
            "23:15:23.000 [labtest-a]: lab/pod-a:40000 <> 127.0.0.2:9 NO_SOCKET DROPPED\n             (TCP Flags: SYN) at __udp4_lib_rcv+0x5a3"
        );
    }

    #[test]
    fn a_policy_drop_in_hubble_shape() {
        use crate::drops::record::{PolicyNames, PolicyRef};
        let mut r = crate::drops::record::tests::sample_udp();
        r.src = Some("10.0.0.1".into());
        r.reason = "POLICY_DENY".into();
        r.reason_code = 181;
        r.policy = Some(PolicyVerdict {
            direction: "egress",
            kernel_reason: "NETFILTER_DROP".into(),
            kernel_reason_code: 6,
            mark: "0x1ab50003".into(),
            names: Some(PolicyNames {
                lab: "sw".into(),
                from: "sw/pod-a".into(),
                to: "127.0.0.2".into(),
                pod: Some("sw/pod-a".into()),
                policies: vec![PolicyRef {
                    kind: "CiliumNetworkPolicy",
                    namespace: "default".into(),
                    name: "no-out".into(),
                }],
                rule: Some("default/no-out egressDeny[0] (p.yaml:7)".into()),
                src_identity: 300,
                dst_identity: 2,
                note: None,
            }),
        });
        let item = Item::Flow(Box::new(Flow::from_drop(&r, &mut LabPods)));
        let v = item_json(&item);
        let f = &v["flow"];
        assert_eq!(f["drop_reason_desc"], "POLICY_DENY");
        assert_eq!(f["drop_reason"], 181);
        assert_eq!(f["traffic_direction"], "EGRESS");
        assert_eq!(f["egress_denied_by"][0]["name"], "no-out");
        assert_eq!(f["egress_denied_by"][0]["namespace"], "default");
        assert_eq!(f["egress_denied_by"][0]["kind"], "CiliumNetworkPolicy");
        assert!(f.get("ingress_denied_by").is_none());
        assert_eq!(f["source"]["identity"], 300);
        assert_eq!(f["destination"]["identity"], 2);
        assert_eq!(f["labctl"]["policy"]["kernel_reason"], "NETFILTER_DROP");
        let line = compact(&item);
        assert!(line.contains("<> 127.0.0.2:9 POLICY_DENY EGRESS"), "{line}");
        assert!(line.contains("DROPPED (UDP)"), "{line}");
        assert!(line.contains("rule default/no-out egressDeny[0]"), "{line}");
        for l in line.lines() {
            assert!(width::width(l) <= width::COLUMNS, "{l}");
        }
    }

    fn verdict_flow(allowed: bool) -> Item {
        use crate::{
            drops::record::PolicyRef,
            flows::{PolicySource, VerdictPacket},
            lab::policy::VerdictNames,
        };
        let packet = VerdictPacket {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            sport: 40000,
            dport: 80,
            proto: 6,
            info: 0x02,
        };
        let event = PolicyEvent {
            source: PolicySource::Ebpf,
            direction: "ingress",
            match_type: if allowed { 2 } else { 0 },
            entry: "endpoint 1 ingress identity 300 80/TCP allow".into(),
            src_identity: Some(300),
            dst_identity: Some(301),
            names: Some(VerdictNames {
                lab: "sw".into(),
                pod: Some("sw/pod-b".into()),
                policies: vec![PolicyRef {
                    kind: "CiliumNetworkPolicy",
                    namespace: "default".into(),
                    name: "rule1".into(),
                }],
                rule: allowed.then(|| "default/rule1 ingress[0] (p.yaml:7)".into()),
                src_identity: 300,
                dst_identity: 301,
                src_labels: vec!["k8s:org=empire".into()],
                dst_labels: vec!["k8s:class=deathstar".into(), "k8s:org=empire".into()],
            }),
        };
        let f = Flow::from_policy(
            &packet,
            (!allowed).then_some("POLICY_DENIED"),
            "sw/node1",
            0,
            1_700_003_723_000_456_000,
            event,
            &mut LabPods,
        );
        Item::Flow(Box::new(f))
    }

    #[test]
    fn policy_verdicts_in_hubble_shape() {
        let allowed = verdict_flow(true);
        let v = item_json(&allowed);
        let f = &v["flow"];
        assert_eq!(f["verdict"], "FORWARDED");
        assert_eq!(f["event_type"], json!({"type": 5}));
        assert_eq!(f["policy_match_type"], 2);
        assert_eq!(f["traffic_direction"], "INGRESS");
        assert_eq!(f["ingress_allowed_by"][0]["name"], "rule1");
        assert_eq!(f["ingress_allowed_by"][0]["kind"], "CiliumNetworkPolicy");
        assert!(f.get("ingress_denied_by").is_none());
        assert!(f.get("drop_reason").is_none());
        assert_eq!(f["source"]["identity"], 300);
        assert_eq!(f["source"]["labels"], json!(["k8s:org=empire"]));
        assert_eq!(f["destination"]["identity"], 301);
        assert_eq!(f["l4"]["TCP"]["flags"]["SYN"], true);
        assert_eq!(f["labctl"]["origin"], "policy-verdict");
        assert_eq!(f["labctl"]["datapath"], "ebpf");
        let Some(ResponseTypes::Flow(pb)) = item_response(&allowed).unwrap().response_types else {
            panic!("not a flow");
        };
        assert_eq!(pb.policy_match_type, 2);
        assert_eq!(pb.event_type.as_ref().map(|e| e.r#type), Some(5));
        assert_eq!(pb.ingress_allowed_by.len(), 1);
        assert_eq!(
            compact(&allowed),
            "23:15:23.000 [sw/node1]: lab/pod-a:40000 (ID:300) -> 10.0.0.2:80 (ID:301)\n             policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)\n             rule default/rule1 ingress[0] (p.yaml:7)"
        );

        let denied = verdict_flow(false);
        let v = item_json(&denied);
        let f = &v["flow"];
        assert_eq!(f["verdict"], "DROPPED");
        assert_eq!(f["drop_reason"], 133);
        assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
        assert!(f.get("policy_match_type").is_none(), "none is 0");
        assert_eq!(f["ingress_denied_by"][0]["name"], "rule1");
        let Some(ResponseTypes::Flow(pb)) = item_response(&denied).unwrap().response_types else {
            panic!("not a flow");
        };
        assert_eq!(pb.drop_reason_desc(), DropReason::PolicyDenied);
        assert_eq!(pb.ingress_denied_by.len(), 1);
        let line = compact(&denied);
        assert!(
            line.contains("policy-verdict:none INGRESS DENIED (TCP Flags: SYN)"),
            "{line}"
        );
        assert!(line.ends_with("by default/rule1"), "{line}");
        for l in line.lines() {
            assert!(width::width(l) <= width::COLUMNS, "{l}");
        }
    }

    #[test]
    fn lost_events_in_hubble_shape() {
        let item = Item::Lost(Lost {
            time_ns: 0,
            source: LostSource::TracerRing,
            count: 17,
            node: "drop tracer".into(),
        });
        assert_eq!(
            item_json(&item)["lost_events"],
            json!({"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": 17,
                "labctl": {"source": "PERF_EVENT_RING_BUFFER"}})
        );
        assert_eq!(
            compact(&item),
            "00:00:00.000 [drop tracer]: EVENTS LOST: PERF_EVENT_RING_BUFFER 17"
        );
        // Conntrack's losses have no Hubble source of their own.
        let ct = Item::Lost(Lost {
            time_ns: 0,
            source: LostSource::CtnetlinkBuffer,
            count: 3,
            node: "lab/node1".into(),
        });
        let v = item_json(&ct);
        assert_eq!(v["lost_events"]["source"], "UNKNOWN_LOST_EVENT_SOURCE");
        assert_eq!(
            v["lost_events"]["labctl"]["source"],
            "CTNETLINK_SOCKET_BUFFER"
        );
        // The policy datapaths' losses: the verdict ring is a ring
        // buffer as Hubble's; NFLOG's socket has no Hubble source either.
        for (source, hubble, labctl) in [
            (
                LostSource::PolicyRing,
                "PERF_EVENT_RING_BUFFER",
                "POLICY_VERDICT_RING_BUFFER",
            ),
            (
                LostSource::NflogBuffer,
                "UNKNOWN_LOST_EVENT_SOURCE",
                "NFLOG_SOCKET_BUFFER",
            ),
        ] {
            let lost = Item::Lost(Lost {
                time_ns: 0,
                source,
                count: 2,
                node: "lab/node1".into(),
            });
            let v = item_json(&lost);
            assert_eq!(v["lost_events"]["source"], hubble);
            assert_eq!(v["lost_events"]["labctl"]["source"], labctl);
            item_response(&lost).unwrap();
        }
        for item in [&item, &ct] {
            let Some(ResponseTypes::LostEvents(l)) = item_response(item).unwrap().response_types
            else {
                panic!("not a loss");
            };
            assert_eq!(l.num_events_lost, if item == &ct { 3 } else { 17 });
        }
    }
}
