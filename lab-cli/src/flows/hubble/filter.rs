//! The filters of a `GetFlows` request, as Hubble applies them: a flow is
//! sent when it matches one of the whitelist's filters (or the whitelist is
//! empty) and none of the blacklist's; within a filter every field that is
//! set must match one of its values.
//!
//! labctl supports the fields its own filters cover, and a few that cost
//! nothing: `verdict`, `source_pod`, `destination_pod`, `source_ip`,
//! `destination_ip`, `protocol`, `source_port`, `destination_port`,
//! `drop_reason_desc`, `ip_version`, `event_type` (`hubble observe --type
//! drop|policy-verdict`). Any other field set in a request is
//! refused by name ([`Unsupported`]), never ignored.

use std::net::IpAddr;

use ipnet::IpNet;

use super::pb::{
    flow::{Flow, FlowFilter, layer4::Protocol},
    observer::GetFlowsRequest,
};

/// The filter fields labctl applies.
pub const SUPPORTED: &[&str] = &[
    "verdict",
    "source_pod",
    "destination_pod",
    "source_ip",
    "destination_ip",
    "protocol",
    "source_port",
    "destination_port",
    "drop_reason_desc",
    "ip_version",
    "event_type",
];

/// A request labctl cannot answer as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "labctl does not support the flow filter field `{0}`; it supports {fields}",
        fields = SUPPORTED.join(", ")
    )]
    Field(&'static str),
    #[error("labctl does not support `{0}` in GetFlows; ask with number, first and follow instead")]
    Request(&'static str),
    #[error("`first` cannot be combined with `follow`, as in Hubble; drop one of them")]
    FirstWithFollow,
    #[error("`{value}` is not a valid {field}: {why}")]
    Value {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

/// `ns/pod-prefix`, `ns/` (the namespace), `/pod-prefix` or `pod-prefix`
/// (any namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodSelector {
    namespace: Option<String>,
    prefix: String,
}

impl PodSelector {
    fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some((ns, prefix)) => PodSelector {
                namespace: (!ns.is_empty()).then(|| ns.to_owned()),
                prefix: prefix.to_owned(),
            },
            None => PodSelector {
                namespace: None,
                prefix: s.to_owned(),
            },
        }
    }

    fn matches(&self, namespace: &str, pod: &str) -> bool {
        // A side with no pod matches no pod selector.
        !pod.is_empty()
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
            && pod.starts_with(&self.prefix)
    }
}

/// What `protocol` names: Hubble's L4 names (`icmp` is either family) and
/// its L7 ones, which never match a labctl flow (labctl has no L7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProtoSel {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv4,
    Icmpv6,
    L7,
}

impl ProtoSel {
    fn parse(s: &str) -> Result<Self, Unsupported> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "tcp" => ProtoSel::Tcp,
            "udp" => ProtoSel::Udp,
            "sctp" => ProtoSel::Sctp,
            "icmp" => ProtoSel::Icmp,
            "icmpv4" => ProtoSel::Icmpv4,
            "icmpv6" => ProtoSel::Icmpv6,
            "http" | "dns" | "kafka" => ProtoSel::L7,
            _ => {
                return Err(Unsupported::Value {
                    field: "protocol",
                    value: s.to_owned(),
                    why: "Hubble's protocols are tcp, udp, sctp, icmp, icmpv4, icmpv6, http, dns and kafka",
                });
            }
        })
    }

    fn matches(self, p: Option<&Protocol>) -> bool {
        matches!(
            (self, p),
            (ProtoSel::Tcp, Some(Protocol::Tcp(_)))
                | (ProtoSel::Udp, Some(Protocol::Udp(_)))
                | (ProtoSel::Sctp, Some(Protocol::Sctp(_)))
                | (ProtoSel::Icmp | ProtoSel::Icmpv4, Some(Protocol::IcmPv4(_)))
                | (ProtoSel::Icmp | ProtoSel::Icmpv6, Some(Protocol::IcmPv6(_)))
        )
    }
}

/// One `FlowFilter`, compiled.
#[derive(Debug, Clone, Default)]
struct Filter {
    verdict: Vec<i32>,
    source_pod: Vec<PodSelector>,
    destination_pod: Vec<PodSelector>,
    source_ip: Vec<IpNet>,
    destination_ip: Vec<IpNet>,
    protocol: Vec<ProtoSel>,
    source_port: Vec<u16>,
    destination_port: Vec<u16>,
    drop_reason_desc: Vec<i32>,
    ip_version: Vec<i32>,
    /// (type, sub type if matched): Cilium's monitor message types; labctl's
    /// flows are drops (1) and policy verdicts (5), connection events have
    /// none.
    event_type: Vec<(i32, Option<i32>)>,
}

fn ips(field: &'static str, values: &[String]) -> Result<Vec<IpNet>, Unsupported> {
    values
        .iter()
        .map(|v| {
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Unsupported::Value {
                    field,
                    value: v.clone(),
                    why: "give an address (10.0.0.1) or a CIDR (10.0.0.0/24)",
                })
        })
        .collect()
}

fn ports(field: &'static str, values: &[String]) -> Result<Vec<u16>, Unsupported> {
    values
        .iter()
        .map(|v| {
            v.parse().map_err(|_| Unsupported::Value {
                field,
                value: v.clone(),
                why: "give a port number from 0 to 65535",
            })
        })
        .collect()
}

impl Filter {
    fn compile(f: &FlowFilter) -> Result<Self, Unsupported> {
        // Every field of Hubble's FlowFilter, by name: a field added to the
        // schema does not compile here until it is supported or refused.
        let FlowFilter {
            uuid,
            source_ip,
            source_ip_xlated,
            source_pod,
            source_fqdn,
            source_label,
            source_service,
            source_workload,
            source_cluster_name,
            destination_ip,
            destination_pod,
            destination_fqdn,
            destination_label,
            destination_service,
            destination_workload,
            destination_cluster_name,
            traffic_direction,
            verdict,
            drop_reason_desc,
            interface,
            event_type,
            http_status_code,
            protocol,
            source_port,
            destination_port,
            reply,
            dns_query,
            source_identity,
            destination_identity,
            http_method,
            http_path,
            http_url,
            http_header,
            tcp_flags,
            node_name,
            node_labels,
            ip_version,
            trace_id,
            ip_trace_id,
            encrypted,
            experimental,
        } = f;
        let unsupported = [
            ("uuid", !uuid.is_empty()),
            ("source_ip_xlated", !source_ip_xlated.is_empty()),
            ("source_fqdn", !source_fqdn.is_empty()),
            ("source_label", !source_label.is_empty()),
            ("source_service", !source_service.is_empty()),
            ("source_workload", !source_workload.is_empty()),
            ("source_cluster_name", !source_cluster_name.is_empty()),
            ("destination_fqdn", !destination_fqdn.is_empty()),
            ("destination_label", !destination_label.is_empty()),
            ("destination_service", !destination_service.is_empty()),
            ("destination_workload", !destination_workload.is_empty()),
            (
                "destination_cluster_name",
                !destination_cluster_name.is_empty(),
            ),
            ("traffic_direction", !traffic_direction.is_empty()),
            ("interface", !interface.is_empty()),
            ("http_status_code", !http_status_code.is_empty()),
            ("reply", !reply.is_empty()),
            ("dns_query", !dns_query.is_empty()),
            ("source_identity", !source_identity.is_empty()),
            ("destination_identity", !destination_identity.is_empty()),
            ("http_method", !http_method.is_empty()),
            ("http_path", !http_path.is_empty()),
            ("http_url", !http_url.is_empty()),
            ("http_header", !http_header.is_empty()),
            ("tcp_flags", !tcp_flags.is_empty()),
            ("node_name", !node_name.is_empty()),
            ("node_labels", !node_labels.is_empty()),
            ("trace_id", !trace_id.is_empty()),
            ("ip_trace_id", !ip_trace_id.is_empty()),
            ("encrypted", !encrypted.is_empty()),
            (
                "experimental.cel_expression",
                experimental
                    .as_ref()
                    .is_some_and(|e| !e.cel_expression.is_empty()),
            ),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(Unsupported::Field(name));
        }
        Ok(Filter {
            verdict: verdict.clone(),
            source_pod: source_pod.iter().map(|s| PodSelector::parse(s)).collect(),
            destination_pod: destination_pod
                .iter()
                .map(|s| PodSelector::parse(s))
                .collect(),
            source_ip: ips("source_ip", source_ip)?,
            destination_ip: ips("destination_ip", destination_ip)?,
            protocol: protocol
                .iter()
                .map(|p| ProtoSel::parse(p))
                .collect::<Result<_, _>>()?,
            source_port: ports("source_port", source_port)?,
            destination_port: ports("destination_port", destination_port)?,
            drop_reason_desc: drop_reason_desc.clone(),
            ip_version: ip_version.clone(),
            event_type: event_type
                .iter()
                .map(|e| (e.r#type, e.match_sub_type.then_some(e.sub_type)))
                .collect(),
        })
    }

    fn matches(&self, f: &Flow) -> bool {
        fn any<T>(values: &[T], hit: impl Fn(&T) -> bool) -> bool {
            values.is_empty() || values.iter().any(hit)
        }
        let pod = |e: &Option<super::pb::flow::Endpoint>| {
            e.as_ref()
                .map(|e| (e.namespace.clone(), e.pod_name.clone()))
                .unwrap_or_default()
        };
        let (src_ns, src_pod) = pod(&f.source);
        let (dst_ns, dst_pod) = pod(&f.destination);
        let ip = f.ip.as_ref();
        let addr = |s: Option<&String>| s.and_then(|s| s.parse::<IpAddr>().ok());
        let src_ip = addr(ip.map(|i| &i.source));
        let dst_ip = addr(ip.map(|i| &i.destination));
        let l4 = f.l4.as_ref().and_then(|l| l.protocol.as_ref());
        let (sport, dport) = match l4 {
            Some(Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
            Some(Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
            Some(Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
            _ => (None, None),
        };
        any(&self.verdict, |v| *v == f.verdict)
            && any(&self.source_pod, |s| s.matches(&src_ns, &src_pod))
            && any(&self.destination_pod, |s| s.matches(&dst_ns, &dst_pod))
            && any(&self.source_ip, |n| src_ip.is_some_and(|a| n.contains(&a)))
            && any(&self.destination_ip, |n| {
                dst_ip.is_some_and(|a| n.contains(&a))
            })
            && any(&self.protocol, |p| p.matches(l4))
            && any(&self.source_port, |p| sport == Some(u32::from(*p)))
            && any(&self.destination_port, |p| dport == Some(u32::from(*p)))
            && any(&self.drop_reason_desc, |r| *r == f.drop_reason_desc)
            && any(&self.ip_version, |v| ip.is_some_and(|i| i.ip_version == *v))
            && any(&self.event_type, |(t, sub)| {
                f.event_type
                    .as_ref()
                    .is_some_and(|e| e.r#type == *t && sub.is_none_or(|s| e.sub_type == s))
            })
    }
}

/// A request's whitelist and blacklist.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    whitelist: Vec<Filter>,
    blacklist: Vec<Filter>,
}

impl Filters {
    /// The request's filters; a field or option labctl does not support is
    /// an error naming it.
    #[allow(
        deprecated,
        reason = "experimental.field_mask is deprecated in Hubble but still sent by older clients: it is refused by name"
    )]
    pub fn from_request(req: &GetFlowsRequest) -> Result<Self, Unsupported> {
        let set_mask =
            |m: &Option<prost_types::FieldMask>| m.as_ref().is_some_and(|m| !m.paths.is_empty());
        let request_options = [
            ("since", req.since.is_some()),
            ("until", req.until.is_some()),
            ("field_mask", set_mask(&req.field_mask)),
            (
                "experimental.field_mask",
                req.experimental
                    .as_ref()
                    .is_some_and(|e| set_mask(&e.field_mask)),
            ),
            ("extensions", req.extensions.is_some()),
        ];
        if let Some((name, _)) = request_options.iter().find(|(_, set)| *set) {
            return Err(Unsupported::Request(name));
        }
        if req.first && req.follow {
            return Err(Unsupported::FirstWithFollow);
        }
        let compile = |list: &[FlowFilter]| {
            list.iter()
                .map(Filter::compile)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Filters {
            whitelist: compile(&req.whitelist)?,
            blacklist: compile(&req.blacklist)?,
        })
    }

    pub fn matches(&self, f: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|w| w.matches(f)))
            && !self.blacklist.iter().any(|b| b.matches(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::hubble::pb::flow::{Endpoint, Ip, Layer4, Udp, Verdict};

    fn flow() -> Flow {
        Flow {
            verdict: Verdict::Dropped.into(),
            ip: Some(Ip {
                source: "10.0.0.2".into(),
                destination: "10.0.0.1".into(),
                ip_version: 1,
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::Udp(Udp {
                    source_port: 40000,
                    destination_port: 53,
                })),
            }),
            source: Some(Endpoint {
                namespace: "lab".into(),
                pod_name: "pod-b".into(),
                ..Default::default()
            }),
            destination: Some(Endpoint::default()),
            ..Default::default()
        }
    }

    fn request(white: Vec<FlowFilter>, black: Vec<FlowFilter>) -> GetFlowsRequest {
        GetFlowsRequest {
            whitelist: white,
            blacklist: black,
            ..Default::default()
        }
    }

    fn keeps(white: Vec<FlowFilter>, black: Vec<FlowFilter>) -> bool {
        Filters::from_request(&request(white, black))
            .unwrap()
            .matches(&flow())
    }

    #[test]
    fn filters_match_as_hubbles() {
        let f = |build: fn(&mut FlowFilter)| {
            let mut filter = FlowFilter::default();
            build(&mut filter);
            filter
        };
        assert!(keeps(vec![], vec![]));
        assert!(keeps(vec![f(|f| f.verdict = vec![2])], vec![]));
        assert!(!keeps(vec![f(|f| f.verdict = vec![1])], vec![]));
        // One whitelist filter of several is enough; all fields of one.
        assert!(keeps(
            vec![
                f(|f| f.verdict = vec![1]),
                f(|f| {
                    f.source_pod = vec!["lab/pod-".into()];
                    f.destination_port = vec!["53".into()];
                    f.protocol = vec!["UDP".into()];
                })
            ],
            vec![]
        ));
        assert!(keeps(
            vec![f(|f| f.source_pod = vec!["lab/".into()])],
            vec![]
        ));
        assert!(keeps(
            vec![f(|f| f.source_pod = vec!["/pod-b".into()])],
            vec![]
        ));
        assert!(!keeps(
            vec![f(|f| f.source_pod = vec!["other/".into()])],
            vec![]
        ));
        // The destination has no pod: no pod selector matches it.
        assert!(!keeps(
            vec![f(|f| f.destination_pod = vec!["lab/".into()])],
            vec![]
        ));
        assert!(keeps(
            vec![f(|f| f.source_ip = vec!["10.0.0.0/24".into()])],
            vec![]
        ));
        assert!(!keeps(
            vec![f(|f| f.destination_ip = vec!["10.0.0.2".into()])],
            vec![]
        ));
        assert!(!keeps(
            vec![f(|f| f.protocol = vec!["icmp".into()])],
            vec![]
        ));
        assert!(!keeps(vec![f(|f| f.protocol = vec!["dns".into()])], vec![]));
        // The blacklist removes what it matches.
        assert!(!keeps(
            vec![],
            vec![f(|f| f.source_port = vec!["40000".into()])]
        ));
        assert!(keeps(
            vec![],
            vec![f(|f| f.source_port = vec!["40001".into()])]
        ));
        // `hubble observe --type policy-verdict` (5) and `--type drop`
        // (1, any sub type unless asked): a flow without an event type
        // (a connection event) matches neither.
        let types = |t: i32, sub: Option<i32>| {
            let filter = FlowFilter {
                event_type: vec![crate::flows::hubble::pb::flow::EventTypeFilter {
                    r#type: t,
                    match_sub_type: sub.is_some(),
                    sub_type: sub.unwrap_or(0),
                }],
                ..Default::default()
            };
            Filters::from_request(&request(vec![filter], vec![])).unwrap()
        };
        assert!(!types(5, None).matches(&flow()));
        let mut verdict = flow();
        verdict.event_type = Some(crate::flows::hubble::pb::flow::CiliumEventType {
            r#type: 5,
            sub_type: 0,
        });
        assert!(types(5, None).matches(&verdict));
        assert!(!types(1, None).matches(&verdict));
        let mut drop = flow();
        drop.event_type = Some(crate::flows::hubble::pb::flow::CiliumEventType {
            r#type: 1,
            sub_type: 133,
        });
        assert!(types(1, None).matches(&drop));
        assert!(types(1, Some(133)).matches(&drop));
        assert!(!types(1, Some(181)).matches(&drop));
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        let e = Filters::from_request(&request(
            vec![FlowFilter {
                source_label: vec!["k8s:app=web".into()],
                ..Default::default()
            }],
            vec![],
        ))
        .unwrap_err();
        assert_eq!(e, Unsupported::Field("source_label"));
        assert!(e.to_string().contains("`source_label`"), "{e}");
        let e = Filters::from_request(&request(
            vec![],
            vec![FlowFilter {
                http_method: vec!["GET".into()],
                ..Default::default()
            }],
        ))
        .unwrap_err();
        assert_eq!(e, Unsupported::Field("http_method"));
        let since = GetFlowsRequest {
            since: Some(prost_types::Timestamp::default()),
            ..Default::default()
        };
        assert_eq!(
            Filters::from_request(&since).unwrap_err(),
            Unsupported::Request("since")
        );
        let both = GetFlowsRequest {
            first: true,
            follow: true,
            ..Default::default()
        };
        assert_eq!(
            Filters::from_request(&both).unwrap_err(),
            Unsupported::FirstWithFollow
        );
        let port = request(
            vec![FlowFilter {
                source_port: vec!["http".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(matches!(
            Filters::from_request(&port).unwrap_err(),
            Unsupported::Value {
                field: "source_port",
                ..
            }
        ));
    }
}
