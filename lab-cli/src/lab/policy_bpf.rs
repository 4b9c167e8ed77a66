//! `--policy-mode ebpf` read back from the nodes' pinned maps: the
//! identities in use (`labctl policy identities`), the endpoints and the
//! ipcache (`policy endpoints`), one endpoint's policy map with its
//! counters (`policy map POD`, as `cilium bpf policy get`). The labels of
//! an identity come from the lab's identity table (Cilium's come from its
//! kvstore or CRDs the same way: the datapath holds numbers only).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use lab_common::policy::{
    ENTRY_DENY, EP_EGRESS_DEFAULT_DENY, EP_INGRESS_DEFAULT_DENY, POLICY_STATIC_PREFIX,
};
use serde::Serialize;

use super::{
    Lab, LabError,
    names::display,
    policy::{cluster, identities, nodes},
};
use crate::{
    ebpf::{
        pins,
        policy::{self as progs, PolicyMaps, PolicyRow},
    },
    policy::{Cluster, datapath::Nodes},
    policy::{
        PolicyError, PolicyMode,
        bpf::{self, ipcache_block},
        identity::{self, Identities},
        maps::FIRST_CIDR_IDENTITY,
        model::Direction,
    },
};

/// One node's maps as read.
struct NodeMaps {
    node: String,
    ipcache: BTreeMap<Ipv4Net, u32>,
    endpoints: Vec<(u32, lab_common::policy::EndpointInfo)>,
    policy: Vec<PolicyRow>,
}

/// Where the views read: a lab's nodes, or a Kubernetes node's
/// (`--node`), with the pods and identities to name what the maps hold.
pub struct Seen {
    /// The lab's name, or the node's.
    pub name: String,
    /// Whether it is a Kubernetes node (`--node`), not a lab.
    pub node: bool,
    pub mode: Option<PolicyMode>,
    pub nodes: Nodes,
    pub cluster: Cluster,
    pub identities: Identities,
}

impl Seen {
    pub fn of_lab(lab: &Lab) -> Result<Self, LabError> {
        let cluster = cluster(lab);
        let (identities, _) = identities(lab, &cluster);
        Ok(Self {
            name: lab.name().to_owned(),
            node: false,
            mode: lab.plan.options.policy_mode,
            nodes: nodes(&lab.plan)?,
            cluster,
            identities,
        })
    }
}

/// Every node's pinned maps; an error naming the fix when the lab has
/// none (not `--policy-mode ebpf`).
fn read_nodes(seen: &Seen) -> Result<Vec<NodeMaps>, LabError> {
    let none = || -> LabError {
        if seen.node {
            PolicyError::NoNodeEbpfMaps(seen.name.clone()).into()
        } else {
            PolicyError::NoEbpfMaps(seen.name.clone()).into()
        }
    };
    if seen.mode != Some(PolicyMode::Ebpf) {
        return Err(none());
    }
    let mut out = Vec::new();
    for n in &seen.nodes.nodes {
        let dir = pins::policy(n.ns.inode()?);
        if !progs::loaded(&dir) {
            continue;
        }
        let maps = PolicyMaps::open(&dir)?;
        out.push(NodeMaps {
            node: n.name.clone(),
            ipcache: maps
                .ipcache_rows()?
                .iter()
                .filter_map(|(p, k, v)| Some((ipcache_block(*p, k)?, v.sec_identity)))
                .collect(),
            endpoints: maps.endpoint_rows()?,
            policy: maps.policy_rows()?,
        });
    }
    if out.is_empty() {
        return Err(none());
    }
    Ok(out)
}

/// The labels of identity `id` (workload, reserved or CIDR).
fn labels_of(ids: &Identities, id: u32, ipcache: &BTreeMap<Ipv4Net, u32>) -> Vec<String> {
    if let Some(l) = ids.labels(id) {
        return identity::display(&l);
    }
    if id > FIRST_CIDR_IDENTITY {
        return ipcache
            .iter()
            .filter(|(_, i)| **i == id)
            .map(|(b, _)| format!("cidr:{b}"))
            .collect();
    }
    Vec::new()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityRow {
    pub identity: u32,
    pub labels: Vec<String>,
    /// The pods the ipcache gives it (`LAB/POD`).
    pub pods: Vec<String>,
}

/// `labctl policy identities`: every identity some node's ipcache holds.
pub fn identity_rows(seen: &Seen) -> Result<Vec<IdentityRow>, LabError> {
    let nodes = read_nodes(seen)?;
    let cl = &seen.cluster;
    let ids = &seen.identities;
    let mut rows: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut all_cache = BTreeMap::new();
    for n in &nodes {
        for (block, id) in &n.ipcache {
            all_cache.insert(*block, *id);
            let pods = rows.entry(*id).or_default();
            if block.prefix_len() == 32
                && let Some(i) = cl.pod_by_addr(block.addr())
            {
                pods.insert(cl.pods[i].name.clone());
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|(id, pods)| IdentityRow {
            identity: id,
            labels: labels_of(ids, id, &all_cache),
            pods: pods.into_iter().collect(),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRow {
    pub endpoint: u32,
    pub pod: String,
    pub node: String,
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub identity: u32,
    /// Directions whose default is deny (a policy selects the pod).
    pub enforcing: Vec<Direction>,
    /// Entries in its policy map.
    pub policy_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpcacheRow {
    pub prefix: Ipv4Net,
    pub identity: u32,
    /// The nodes whose ipcache holds it with this identity.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointsView {
    /// The lab (None: a Kubernetes node's, `node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub endpoints: Vec<EndpointRow>,
    pub ipcache: Vec<IpcacheRow>,
}

/// `labctl policy endpoints`: the endpoints of every node and the
/// ipcaches.
pub fn endpoints(seen: &Seen) -> Result<EndpointsView, LabError> {
    let nodes = read_nodes(seen)?;
    let cl = &seen.cluster;
    let mut endpoints = Vec::new();
    let mut ipcache: BTreeMap<(Ipv4Net, u32), Vec<String>> = BTreeMap::new();
    for n in &nodes {
        for (ifindex, e) in &n.endpoints {
            let addr = Ipv4Addr::from(e.ip4.to_ne_bytes());
            let mut enforcing = Vec::new();
            if e.flags & EP_INGRESS_DEFAULT_DENY != 0 {
                enforcing.push(Direction::Ingress);
            }
            if e.flags & EP_EGRESS_DEFAULT_DENY != 0 {
                enforcing.push(Direction::Egress);
            }
            endpoints.push(EndpointRow {
                endpoint: e.id,
                pod: cl
                    .pod_by_addr(addr)
                    .map_or_else(|| addr.to_string(), |i| cl.pods[i].name.clone()),
                node: n.node.clone(),
                ifindex: *ifindex,
                address: addr,
                identity: e.identity,
                enforcing,
                policy_entries: n
                    .policy
                    .iter()
                    .filter(|(_, k, _)| k.endpoint == e.id)
                    .count(),
            });
        }
        for (block, id) in &n.ipcache {
            ipcache
                .entry((*block, *id))
                .or_default()
                .push(n.node.clone());
        }
    }
    endpoints.sort_by(|a, b| (&a.node, a.endpoint).cmp(&(&b.node, b.endpoint)));
    Ok(EndpointsView {
        lab: (!seen.node).then(|| seen.name.clone()),
        node: seen.node.then(|| seen.name.clone()),
        endpoints,
        ipcache: ipcache
            .into_iter()
            .map(|((prefix, identity), nodes)| IpcacheRow {
                prefix,
                identity,
                nodes,
            })
            .collect(),
    })
}

/// One policy map entry, as `cilium bpf policy get` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapRow {
    /// `Allow` or `Deny`.
    pub policy: &'static str,
    pub direction: Direction,
    /// 0: any identity.
    pub identity: u32,
    pub labels: Vec<String>,
    /// `ANY`, `TCP`, `80/TCP`, `8080-8083/TCP`.
    pub port_proto: String,
    pub bytes: u64,
    pub packets: u64,
    /// The prefix length of protocol and port (0-24), as Cilium's PREFIX.
    pub prefix: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapView {
    pub pod: String,
    pub node: String,
    pub endpoint: u32,
    pub identity: u32,
    /// The directions in which it is default deny (a policy selects it):
    /// what no entry allows there is dropped.
    pub default_deny: Vec<Direction>,
    pub entries: Vec<MapRow>,
}

/// `labctl policy map POD`.
pub fn map(lab: &Lab, pod: &str) -> Result<MapView, LabError> {
    let local = lab.local_name(pod);
    let Some(p) = lab.plan.find_pod(local) else {
        return Err(lab.no_such_member(local));
    };
    map_of(&Seen::of_lab(lab)?, &display(lab.name(), &p.name), p.addr)
}

/// `labctl policy map POD` of pod `name` (as output names it) at `addr`.
pub fn map_of(seen: &Seen, name: &str, addr: Ipv4Addr) -> Result<MapView, LabError> {
    let name = name.to_owned();
    let nodes = read_nodes(seen)?;
    let ids = &seen.identities;
    let ip4 = u32::from_ne_bytes(addr.octets());
    for n in &nodes {
        let Some((_, ep)) = n.endpoints.iter().find(|(_, e)| e.ip4 == ip4) else {
            continue;
        };
        let mut entries: Vec<MapRow> = n
            .policy
            .iter()
            .filter(|(_, k, _)| k.endpoint == ep.id)
            .map(|(prefix, k, v)| MapRow {
                policy: if v.flags & ENTRY_DENY != 0 {
                    "Deny"
                } else {
                    "Allow"
                },
                direction: if k.egress != 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                identity: k.sec_label,
                labels: if k.sec_label == 0 {
                    vec!["ANY".to_owned()]
                } else {
                    labels_of(ids, k.sec_label, &n.ipcache)
                },
                port_proto: bpf::port_proto(*prefix, k),
                bytes: v.bytes,
                packets: v.packets,
                prefix: prefix.saturating_sub(POLICY_STATIC_PREFIX),
            })
            .collect();
        entries.sort_by(|a, b| {
            (a.direction, a.policy, a.identity, &a.port_proto).cmp(&(
                b.direction,
                b.policy,
                b.identity,
                &b.port_proto,
            ))
        });
        return Ok(MapView {
            pod: name,
            node: n.node.clone(),
            endpoint: ep.id,
            identity: ep.identity,
            default_deny: [
                (EP_INGRESS_DEFAULT_DENY, Direction::Ingress),
                (EP_EGRESS_DEFAULT_DENY, Direction::Egress),
            ]
            .into_iter()
            .filter(|(bit, _)| ep.flags & bit != 0)
            .map(|(_, d)| d)
            .collect(),
            entries,
        });
    }
    Err(PolicyError::NoEndpoint(name).into())
}
