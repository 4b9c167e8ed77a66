//! `--policy-mode ebpf`: Cilium's identity-based policy. The maps of one
//! node (`lab_common::policy`) are written from [`super::maps::View`],
//! which already says what Cilium would hold; the tc programs
//! (`lab-ebpf/src/bin/policy.rs`) read them on each pod's host-side veth.
//!
//! A plan is, per node, the map entries to put or delete so that the
//! pinned maps hold exactly the view (what is there already and equal is
//! not written again; counters are not compared): ipcache entries (a
//! block → an identity), endpoints (a veth → the pod's endpoint id,
//! identity and default-deny directions) and policy entries (endpoint,
//! peer identity, direction, protocol, port prefix → allow or deny).
//!
//! Encoding, as Cilium's `pkg/maps/policymap` does it:
//! - a port range is split into the fewest aligned prefixes (80-81 is one
//!   `/15` entry; 1-1023 ten entries);
//! - a port with protocol ANY is one entry per TCP, UDP and SCTP;
//! - no port: one protocol (`/8`), or any protocol (`/0`);
//! - deny wins: an allow entry that a deny entry of the same endpoint,
//!   direction and identity covers is not written (the trie would answer
//!   the longer, allowing, prefix); a deny for identity 0 wins over every
//!   identity's allow in the program itself.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    path::PathBuf,
};

use ipnet::Ipv4Net;
use lab_common::{
    policy::{
        DIR_EGRESS, DIR_INGRESS, ENTRY_DENY, ENTRY_PREFIX_SHIFT, ENTRY_WILDCARD_DPORT,
        ENTRY_WILDCARD_PROTOCOL, EP_EGRESS_DEFAULT_DENY, EP_INGRESS_DEFAULT_DENY, EndpointInfo,
        IPCACHE_STATIC_PREFIX, IpcacheKey, POLICY_STATIC_PREFIX, PolicyEntry, PolicyKey,
        REASON_FORWARDED, REASON_POLICY_DENIED, RemoteEndpointInfo,
    },
    proto::{ICMP, SCTP, TCP, UDP},
};
use serde::Serialize;

use super::{
    PolicyError, PolicyMode,
    datapath::{
        CountedVerdict, Decision, Held, MapEntryRef, Node, Nodes, PolicyDatapath, PolicyPlan,
        VerdictCount, VerdictCounts, Want, add_count, count_rows,
    },
    eval::{Evaluator, Party, Query, Verdict},
    identity,
    maps::{MapEntry, View},
    model::{Direction, Protocol},
};
use crate::{
    ebpf::{
        error::ProgramSetupError,
        pins,
        policy::{self as progs, PolicyMaps},
    },
    kernel::{datapath::Part, netns::NetNs, rtnl::Rtnl},
};

/// One entry to put (`Some`) or delete (`None`) in a node's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    Ipcache {
        block: Ipv4Net,
        identity: Option<u32>,
    },
    Endpoint {
        ifindex: u32,
        info: Option<EndpointInfo>,
    },
    Policy {
        prefix: u32,
        key: PolicyKey,
        flags: Option<u8>,
    },
}

impl MapOp {
    fn is_put(&self) -> bool {
        match self {
            MapOp::Ipcache { identity, .. } => identity.is_some(),
            MapOp::Endpoint { info, .. } => info.is_some(),
            MapOp::Policy { flags, .. } => flags.is_some(),
        }
    }

    /// Writes it.
    pub fn write(&self, maps: &mut PolicyMaps) -> Result<(), ProgramSetupError> {
        match self {
            MapOp::Ipcache { block, identity } => {
                let (prefix, key) = ipcache_key(*block);
                match identity {
                    Some(id) => maps.set_ipcache(prefix, key, remote(*id)),
                    None => maps.remove_ipcache(prefix, key),
                }
            }
            MapOp::Endpoint { ifindex, info } => match info {
                Some(info) => maps.set_endpoint(*ifindex, *info),
                None => maps.remove_endpoint(*ifindex),
            },
            MapOp::Policy { prefix, key, flags } => match flags {
                Some(flags) => maps.set_policy(
                    *prefix,
                    *key,
                    PolicyEntry {
                        flags: *flags,
                        ..PolicyEntry::default()
                    },
                ),
                None => maps.remove_policy(*prefix, *key),
            },
        }
    }
}

impl MapOp {
    /// One plan line; `pod` names the endpoint (else its id shows).
    pub fn line(&self, pod: Option<&str>) -> String {
        let sign = if self.is_put() { '+' } else { '-' };
        match self {
            MapOp::Ipcache { block, identity } => match identity {
                Some(id) => format!("{sign} ipcache   {block} -> identity {id}"),
                None => format!("{sign} ipcache   {block}"),
            },
            MapOp::Endpoint { ifindex, info } => match info {
                Some(i) => format!(
                    "{sign} endpoint  {} ifindex {ifindex} identity {}{}",
                    pod.map_or_else(|| format!("ep {}", i.id), |p| format!("{p} (ep {})", i.id)),
                    i.identity,
                    enforced_note(i.flags)
                ),
                None => format!("{sign} endpoint  ifindex {ifindex}"),
            },
            MapOp::Policy { prefix, key, flags } => {
                let verdict = match flags.map(|fl| fl & ENTRY_DENY != 0) {
                    Some(true) => " deny",
                    Some(false) => " allow",
                    None => "",
                };
                format!(
                    "{sign} policy    {} {} {} {}{verdict}",
                    pod.map_or_else(|| format!("ep {}", key.endpoint), str::to_owned),
                    if key.egress != 0 { "egress" } else { "ingress" },
                    peer_name(key.sec_label),
                    port_proto(*prefix, key),
                )
            }
        }
    }
}

impl fmt::Display for MapOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line(None))
    }
}

fn enforced_note(flags: u32) -> &'static str {
    match (
        flags & EP_INGRESS_DEFAULT_DENY != 0,
        flags & EP_EGRESS_DEFAULT_DENY != 0,
    ) {
        (true, true) => ", enforcing both",
        (true, false) => ", enforcing ingress",
        (false, true) => ", enforcing egress",
        (false, false) => "",
    }
}

/// `identity 257`, `any identity`.
pub fn peer_name(id: u32) -> String {
    if id == 0 {
        "any identity".to_owned()
    } else {
        format!("identity {id}")
    }
}

/// The L4 part of a policy key, as `cilium bpf policy get` prints it:
/// `ANY`, `TCP`, `80/TCP`, `80-81/TCP`.
pub fn port_proto(prefix: u32, key: &PolicyKey) -> String {
    let l4 = prefix.saturating_sub(POLICY_STATIC_PREFIX);
    if l4 == 0 {
        return "ANY".to_owned();
    }
    let proto = proto_name(key.protocol);
    if l4 <= 8 {
        return proto;
    }
    let port = u16::from_be(key.dport);
    let span = 1u32 << (24 - l4.min(24));
    if span == 1 {
        format!("{port}/{proto}")
    } else {
        let last = u32::from(port) + span - 1;
        format!("{port}-{last}/{proto}")
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        TCP => "TCP".to_owned(),
        UDP => "UDP".to_owned(),
        SCTP => "SCTP".to_owned(),
        ICMP => "ICMP".to_owned(),
        0 => "ANY".to_owned(),
        n => n.to_string(),
    }
}

fn remote(identity: u32) -> RemoteEndpointInfo {
    RemoteEndpointInfo {
        sec_identity: identity,
        tunnel_endpoint: 0,
        pad: 0,
        key: 0,
        flags: 0,
    }
}

/// An ipcache block as the trie's prefix length and key.
pub fn ipcache_key(block: Ipv4Net) -> (u32, IpcacheKey) {
    (
        IPCACHE_STATIC_PREFIX + u32::from(block.prefix_len()),
        IpcacheKey::ipv4(u32::from_ne_bytes(block.network().octets())),
    )
}

/// A trie row back as a block (None: not an IPv4 row of ours).
pub fn ipcache_block(prefix: u32, key: &IpcacheKey) -> Option<Ipv4Net> {
    let len = u8::try_from(prefix.checked_sub(IPCACHE_STATIC_PREFIX)?).ok()?;
    Ipv4Net::new(Ipv4Addr::from(key.ip4.to_ne_bytes()), len).ok()
}

/// `[a, e]` as the fewest aligned blocks: (first port, prefix length of
/// the 16 port bits).
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let (mut a, e) = (u32::from(first), u32::from(last));
    let mut out = Vec::new();
    while a <= e {
        let mut k = 0u32;
        while k < 16 && a % (1 << (k + 1)) == 0 && a + (1 << (k + 1)) - 1 <= e {
            k += 1;
        }
        // a <= e <= 65535, so a fits.
        out.push((u16::try_from(a).unwrap_or(u16::MAX), 16 - k));
        a += 1 << k;
    }
    out
}

/// The protocol and port bits of a key, as one 24-bit number.
fn l4_bits(key: &PolicyKey) -> u32 {
    (u32::from(key.protocol) << 16) | u32::from(u16::from_be(key.dport))
}

/// Whether the `(prefix, key)` entry `outer` covers every key `inner`
/// matches (same endpoint, identity and direction).
fn covers(outer: &(u32, PolicyKey), inner: &(u32, PolicyKey)) -> bool {
    let (po, ko) = outer;
    let (pi, ki) = inner;
    if (ko.endpoint, ko.sec_label, ko.egress) != (ki.endpoint, ki.sec_label, ki.egress) || po > pi {
        return false;
    }
    let l4 = po - POLICY_STATIC_PREFIX;
    let mask = if l4 == 0 {
        0
    } else {
        (u32::MAX << (24 - l4)) & 0x00ff_ffff
    };
    l4_bits(ko) & mask == l4_bits(ki) & mask
}

/// One endpoint's map entries, Cilium-encoded (see the module docs):
/// (prefix length, key) → flags.
pub fn encode(endpoint: u32, entries: &BTreeSet<MapEntry>) -> BTreeMap<(u32, PolicyKey), u8> {
    let mut out: BTreeMap<(u32, PolicyKey), u8> = BTreeMap::new();
    for e in entries {
        let base = PolicyKey {
            endpoint,
            sec_label: e.identity,
            egress: u8::from(e.direction == Direction::Egress),
            protocol: 0,
            dport: 0,
            pad: 0,
        };
        let deny = if e.deny { ENTRY_DENY } else { 0 };
        let protos: &[u8] = match e.protocol {
            Protocol::Tcp => &[TCP],
            Protocol::Udp => &[UDP],
            Protocol::Sctp => &[SCTP],
            Protocol::Any if e.port.is_none() => &[0],
            Protocol::Any => &[TCP, UDP, SCTP],
        };
        for &protocol in protos {
            let mut rows: Vec<(u32, PolicyKey, u8)> = Vec::new();
            match (protocol, e.port) {
                (0, _) => rows.push((
                    POLICY_STATIC_PREFIX,
                    base,
                    ENTRY_WILDCARD_PROTOCOL | ENTRY_WILDCARD_DPORT,
                )),
                (_, None) => rows.push((
                    POLICY_STATIC_PREFIX + 8,
                    PolicyKey { protocol, ..base },
                    ENTRY_WILDCARD_DPORT | (8 << ENTRY_PREFIX_SHIFT),
                )),
                (_, Some(port)) => {
                    let last = e.end_port.unwrap_or(port).max(port);
                    for (first, plen) in port_prefixes(port, last) {
                        let l4 = 8 + plen;
                        let wild = if plen < 16 { ENTRY_WILDCARD_DPORT } else { 0 };
                        rows.push((
                            POLICY_STATIC_PREFIX + l4,
                            PolicyKey {
                                protocol,
                                dport: first.to_be(),
                                ..base
                            },
                            // l4 <= 24 fits the 5 bits.
                            wild | ((l4 as u8) << ENTRY_PREFIX_SHIFT),
                        ));
                    }
                }
            }
            for (prefix, key, flags) in rows {
                // A deny and an allow on one key: the deny.
                *out.entry((prefix, key)).or_insert(0) |= flags | deny;
            }
        }
    }
    let denies: Vec<(u32, PolicyKey)> = out
        .iter()
        .filter(|(_, f)| **f & ENTRY_DENY != 0)
        .map(|(k, _)| *k)
        .collect();
    out.retain(|k, f| *f & ENTRY_DENY != 0 || !denies.iter().any(|d| covers(d, k)));
    out
}

/// What the policy programs decide on one side of a new connection, from
/// the endpoint's two lookups (the peer identity's entry and any
/// identity's, each the longest prefix covering the protocol and port):
/// a deny wins; else the more specific allow (the identity's when both
/// are as specific); else default deny if the endpoint enforces this
/// direction. The same order as `judge` in `lab-ebpf/src/bin/policy.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The deciding entry: the identity it is keyed by (0: any) and the
    /// entry.
    pub entry: Option<(u32, PolicyEntry)>,
    /// `REASON_FORWARDED`, `REASON_POLICY_DENIED` or `REASON_POLICY_DENY`.
    pub reason: u8,
    /// Cilium's `POLICY_MATCH_*`.
    pub match_type: u8,
}

pub fn judge(
    by_id: Option<PolicyEntry>,
    any: Option<PolicyEntry>,
    remote: u32,
    enforced: bool,
) -> Judgement {
    use lab_common::policy::{
        MATCH_ALL, MATCH_L3_L4, MATCH_L3_ONLY, MATCH_L3_PROTO, MATCH_L4_ONLY, MATCH_NONE,
        MATCH_PROTO_ONLY, REASON_FORWARDED, REASON_POLICY_DENY,
    };
    let deny = |e: &Option<PolicyEntry>| e.is_some_and(|e| e.is_deny());
    let prefix = |e: &Option<PolicyEntry>| e.map_or(0, |e| e.l4_prefix());
    let chosen = if deny(&by_id) {
        by_id.map(|e| (remote, e, REASON_POLICY_DENY))
    } else if deny(&any) {
        any.map(|e| (0, e, REASON_POLICY_DENY))
    } else if by_id.is_some() && (any.is_none() || prefix(&by_id) >= prefix(&any)) {
        by_id.map(|e| (remote, e, REASON_FORWARDED))
    } else {
        any.map(|e| (0, e, REASON_FORWARDED))
    };
    match chosen {
        Some((identity, e, reason)) => Judgement {
            entry: Some((identity, e)),
            reason,
            match_type: match (identity != 0, e.l4_prefix()) {
                (true, 0) => MATCH_L3_ONLY,
                (true, 8) => MATCH_L3_PROTO,
                (true, _) => MATCH_L3_L4,
                (false, 0) => MATCH_ALL,
                (false, 8) => MATCH_PROTO_ONLY,
                (false, _) => MATCH_L4_ONLY,
            },
        },
        None => Judgement {
            entry: None,
            reason: if enforced {
                REASON_POLICY_DENIED
            } else {
                REASON_FORWARDED
            },
            match_type: MATCH_NONE,
        },
    }
}

/// The key of the entry a lookup of (`endpoint`, `identity`, `egress`,
/// `protocol`, `dport` in network order) found, from the prefix length
/// its flags keep.
pub fn found_key(
    endpoint: u32,
    identity: u32,
    egress: bool,
    protocol: u8,
    dport: u16,
    entry: &PolicyEntry,
) -> (u32, PolicyKey) {
    let l4 = u32::from(entry.l4_prefix()).min(24);
    let bits = (u32::from(protocol) << 16) | u32::from(u16::from_be(dport));
    let mask = if l4 == 0 {
        0
    } else {
        (u32::MAX << (24 - l4)) & 0x00ff_ffff
    };
    let kept = bits & mask;
    (
        POLICY_STATIC_PREFIX + l4,
        PolicyKey {
            endpoint,
            sec_label: identity,
            egress: u8::from(egress),
            protocol: (kept >> 16) as u8,
            dport: ((kept & 0xffff) as u16).to_be(),
            pad: 0,
        },
    )
}

/// What one node's maps hold (or should), without counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRows {
    pub ipcache: BTreeMap<Ipv4Net, u32>,
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub policy: BTreeMap<(u32, PolicyKey), u8>,
}

impl NodeRows {
    /// Reads a node's pinned maps.
    pub fn read(maps: &PolicyMaps) -> Result<Self, ProgramSetupError> {
        Ok(Self {
            ipcache: maps
                .ipcache_rows()?
                .iter()
                .filter_map(|(p, k, v)| Some((ipcache_block(*p, k)?, v.sec_identity)))
                .collect(),
            endpoints: maps.endpoint_rows()?.into_iter().collect(),
            policy: maps
                .policy_rows()?
                .into_iter()
                .map(|(p, k, v)| ((p, k), v.flags))
                .collect(),
        })
    }

    /// What changes `self` into `want`: puts first (ipcache, policy,
    /// endpoints: an endpoint turns default deny on once its entries are
    /// in), then deletes (endpoints, policy, ipcache).
    pub fn diff(&self, want: &NodeRows) -> Vec<MapOp> {
        let mut puts = Vec::new();
        let mut dels = Vec::new();
        for (block, id) in &want.ipcache {
            if self.ipcache.get(block) != Some(id) {
                puts.push(MapOp::Ipcache {
                    block: *block,
                    identity: Some(*id),
                });
            }
        }
        for ((prefix, key), flags) in &want.policy {
            if self.policy.get(&(*prefix, *key)) != Some(flags) {
                puts.push(MapOp::Policy {
                    prefix: *prefix,
                    key: *key,
                    flags: Some(*flags),
                });
            }
        }
        for (ifindex, info) in &want.endpoints {
            if self.endpoints.get(ifindex) != Some(info) {
                puts.push(MapOp::Endpoint {
                    ifindex: *ifindex,
                    info: Some(*info),
                });
            }
        }
        for ifindex in self.endpoints.keys() {
            if !want.endpoints.contains_key(ifindex) {
                dels.push(MapOp::Endpoint {
                    ifindex: *ifindex,
                    info: None,
                });
            }
        }
        for (prefix, key) in self.policy.keys() {
            if !want.policy.contains_key(&(*prefix, *key)) {
                dels.push(MapOp::Policy {
                    prefix: *prefix,
                    key: *key,
                    flags: None,
                });
            }
        }
        for block in self.ipcache.keys() {
            if !want.ipcache.contains_key(block) {
                dels.push(MapOp::Ipcache {
                    block: *block,
                    identity: None,
                });
            }
        }
        puts.extend(dels);
        puts
    }
}

/// A pod plugged into a node, as the plan needs it.
#[derive(Debug, Clone)]
pub struct Plugged {
    /// `LAB/POD`.
    pub name: String,
    pub addr: Ipv4Addr,
    pub ifindex: u32,
}

/// The endpoint id of pod `index` of the cluster (Cilium's are small
/// numbers too; these are stable as long as the lab's pods are).
pub fn endpoint_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// What node `node` (the cluster's name for it) should hold for `view`,
/// with `pods` its plugged pods and `host` its own addresses (the pods'
/// gateway among them: Cilium's ipcache gives every address of the node,
/// `cilium_host`'s too, the host identity).
pub fn node_rows(
    view: &View,
    want: &Want<'_>,
    node: &str,
    pods: &[Plugged],
    host: &[Ipv4Addr],
) -> NodeRows {
    let mut rows = NodeRows {
        ipcache: view.ipcache.get(node).cloned().unwrap_or_default(),
        ..NodeRows::default()
    };
    for a in host {
        rows.ipcache
            .entry(Ipv4Net::from(*a))
            .or_insert(identity::HOST);
    }
    for p in pods {
        let Some(i) = want.cluster.pod_by_name(&p.name) else {
            continue;
        };
        let id = endpoint_id(i);
        let ep = view.endpoints.get(&p.name).cloned().unwrap_or_default();
        let identity = rows
            .ipcache
            .get(&Ipv4Net::from(p.addr))
            .copied()
            .unwrap_or(identity::WORLD);
        let mut flags = 0;
        if ep.enforced.ingress {
            flags |= EP_INGRESS_DEFAULT_DENY;
        }
        if ep.enforced.egress {
            flags |= EP_EGRESS_DEFAULT_DENY;
        }
        rows.endpoints.insert(
            p.ifindex,
            EndpointInfo {
                id,
                identity,
                ip4: u32::from_ne_bytes(p.addr.octets()),
                flags,
            },
        );
        rows.policy.extend(encode(id, &ep.entries));
    }
    rows
}

/// What the applier writes on one node.
#[derive(Debug)]
pub struct Write {
    pub ns: NetNs,
    pub dir: PathBuf,
    /// The node's pod veths (attached first where they are not).
    pub veths: Vec<String>,
    pub ops: Vec<MapOp>,
}

impl Write {
    pub fn write(&self) -> Result<(), ProgramSetupError> {
        let veths: Vec<&str> = self.veths.iter().map(String::as_str).collect();
        progs::attach(&self.ns, &self.dir, &veths)?;
        progs::prune(&self.dir, &veths)?;
        let mut maps = PolicyMaps::open(&self.dir)?;
        for op in &self.ops {
            op.write(&mut maps)?;
        }
        Ok(())
    }
}

/// A change count for plans and demonstrations: ipcache, endpoint and
/// policy entries written or deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ipcache: usize,
    pub endpoints: usize,
    pub policy: usize,
}

impl Counts {
    pub fn of(ops: &[MapOp]) -> Self {
        let mut c = Counts::default();
        for op in ops {
            match op {
                MapOp::Ipcache { .. } => c.ipcache += 1,
                MapOp::Endpoint { .. } => c.endpoints += 1,
                MapOp::Policy { .. } => c.policy += 1,
            }
        }
        c
    }
}

pub struct Ebpf {
    nodes: Nodes,
}

impl Ebpf {
    pub fn new(nodes: Nodes) -> Self {
        Self { nodes }
    }

    /// The cluster's name of a node (`node1` for `lab/node1`).
    fn cluster_node<'a>(&self, node: &'a Node) -> &'a str {
        node.name
            .strip_prefix(&format!("{}/", self.nodes.lab))
            .unwrap_or(&node.name)
    }

    fn plugged(node: &Node) -> Result<Vec<Plugged>, PolicyError> {
        node.pods
            .iter()
            .map(|p| {
                let veth = p.veth.clone();
                let ifindex = node
                    .ns
                    .run(move || nix::net::if_::if_nametoindex(veth.as_str()))
                    .map_err(ProgramSetupError::from)?
                    .map_err(|e| PolicyError::NoVeth {
                        veth: p.veth.clone(),
                        node: node.name.clone(),
                        reason: e.desc().to_owned(),
                    })?;
                Ok(Plugged {
                    name: p.name.clone(),
                    addr: p.addr,
                    ifindex,
                })
            })
            .collect()
    }

    /// The node's own IPv4 addresses (loopback's aside).
    fn host_addrs(node: &Node) -> Result<Vec<Ipv4Addr>, PolicyError> {
        let links = Rtnl::open(&node.ns)
            .and_then(|r| r.links())
            .map_err(ProgramSetupError::from)?;
        Ok(links
            .iter()
            .flat_map(|l| &l.addresses)
            .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
            .filter(|a| !a.is_loopback())
            .collect())
    }

    fn dir(node: &Node) -> Result<PathBuf, PolicyError> {
        Ok(pins::policy(
            node.ns.inode().map_err(ProgramSetupError::from)?,
        ))
    }

    /// One node's part of the plan for `view`.
    pub fn node_part(
        &self,
        node: &Node,
        view: &View,
        want: &Want<'_>,
    ) -> Result<Part<super::datapath::Write>, PolicyError> {
        let dir = Self::dir(node)?;
        let current = if progs::loaded(&dir) {
            NodeRows::read(&PolicyMaps::open(&dir)?)?
        } else {
            NodeRows::default()
        };
        let plugged = Self::plugged(node)?;
        let host = Self::host_addrs(node)?;
        let rows = node_rows(view, want, self.cluster_node(node), &plugged, &host);
        let ops = current.diff(&rows);
        let lab_prefix = format!("{}/", self.nodes.lab);
        let names: BTreeMap<u32, &str> = plugged
            .iter()
            .filter_map(|p| {
                let id = endpoint_id(want.cluster.pod_by_name(&p.name)?);
                Some((id, p.name.strip_prefix(&lab_prefix).unwrap_or(&p.name)))
            })
            .collect();
        let lines = ops
            .iter()
            .map(|op| {
                let ep = match op {
                    MapOp::Policy { key, .. } => Some(key.endpoint),
                    MapOp::Endpoint {
                        info: Some(info), ..
                    } => Some(info.id),
                    _ => None,
                };
                op.line(ep.and_then(|e| names.get(&e).copied()))
            })
            .collect();
        Ok(Part {
            target: node.name.clone(),
            lines,
            changes: ops.len(),
            write: super::datapath::Write::Ebpf(Write {
                ns: node.ns.handle(),
                dir,
                veths: node.pods.iter().map(|p| p.veth.clone()).collect(),
                ops,
            }),
        })
    }
}

impl Ebpf {
    /// One side of a connection as the node's pinned maps decide it: the
    /// peer's identity from the ipcache, the endpoint's two policy-map
    /// lookups (the kernel's trie answers them as it answers the
    /// program), then [`judge`].
    fn decide(
        &self,
        node: &Node,
        pod: &str,
        egress: bool,
        peer: Ipv4Addr,
        query: &Query,
    ) -> Result<Decision, PolicyError> {
        let direction = if egress {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let dir = Self::dir(node)?;
        if !progs::loaded(&dir) {
            return Err(PolicyError::NoEbpfMaps(self.nodes.lab.clone()));
        }
        let maps = PolicyMaps::open(&dir)?;
        let port = node
            .pods
            .iter()
            .find(|p| p.name == pod)
            .ok_or_else(|| PolicyError::NoEndpoint(pod.to_owned()))?;
        let plugged = Self::plugged(&Node {
            name: node.name.clone(),
            ns: node.ns.handle(),
            pods: vec![port.clone()],
        })?;
        let ifindex = plugged.first().map_or(0, |p| p.ifindex);
        let ep = maps
            .endpoint(ifindex)?
            .ok_or_else(|| PolicyError::NoEndpoint(pod.to_owned()))?;
        let remote = maps
            .lookup_ipcache(u32::from_ne_bytes(peer.octets()))?
            .unwrap_or(identity::WORLD);
        let protocol = match query.protocol {
            Protocol::Udp => UDP,
            Protocol::Sctp => SCTP,
            Protocol::Tcp | Protocol::Any => TCP,
        };
        let key = |sec_label| PolicyKey {
            endpoint: ep.id,
            sec_label,
            egress: u8::from(egress),
            protocol,
            dport: query.port.to_be(),
            pad: 0,
        };
        let by_id = maps.lookup_policy(key(remote))?;
        let any = maps.lookup_policy(key(0))?;
        let enforced = ep.flags
            & if egress {
                EP_EGRESS_DEFAULT_DENY
            } else {
                EP_INGRESS_DEFAULT_DENY
            }
            != 0;
        let j = judge(by_id, any, remote, enforced);
        let place = format!("policy map of endpoint {} ({pod})", ep.id);
        let short = pod.rsplit('/').next().unwrap_or(pod);
        let (entry, packets, map_entry) = match j.entry {
            Some((identity, e)) => {
                let (prefix, k) =
                    found_key(ep.id, identity, egress, protocol, query.port.to_be(), &e);
                let port_proto = port_proto(prefix, &k);
                let words = format!(
                    "{} {} {port_proto} {} (prefix /{prefix})",
                    direction.as_str(),
                    peer_name(identity),
                    if e.is_deny() { "deny" } else { "allow" }
                );
                (
                    words,
                    Some(e.packets),
                    Some(MapEntryRef {
                        endpoint: ep.id,
                        identity,
                        direction,
                        port_proto,
                        prefix_len: prefix,
                        deny: e.is_deny(),
                        packets: e.packets,
                        bytes: e.bytes,
                    }),
                )
            }
            None if enforced => {
                // Default deny has no entry: the endpoint's metrics
                // count what it dropped.
                let dir_code = if egress { DIR_EGRESS } else { DIR_INGRESS };
                let dropped = maps
                    .metrics()?
                    .iter()
                    .find(|(k, _)| {
                        k.endpoint == ep.id && k.reason == REASON_POLICY_DENIED && k.dir == dir_code
                    })
                    .map_or(0, |(_, v)| v.packets);
                (
                    format!(
                        "no entry for {} on {}/{}: {short} is default deny for {} (POLICY_DENIED)",
                        peer_name(remote),
                        query.port,
                        proto_name(protocol),
                        direction.as_str()
                    ),
                    Some(dropped),
                    None,
                )
            }
            None => (
                format!(
                    "no entry: {short} does not enforce {} (no policy turns default deny on)",
                    direction.as_str()
                ),
                None,
                None,
            ),
        };
        Ok(Decision {
            direction,
            pod: pod.to_owned(),
            node: node.name.clone(),
            place,
            entry,
            allows: j.reason == REASON_FORWARDED,
            packets,
            // Only an entry can be missing from the kernel.
            present: j.entry.is_some().then_some(true),
            map_entry,
        })
    }
}

/// Cilium's view of `want`.
pub fn view(want: &Want<'_>) -> View {
    Evaluator::new(
        want.cluster,
        want.identities.clone(),
        want.policies,
        PolicyMode::Ebpf.flavor(),
    )
    .view()
}

impl PolicyDatapath for Ebpf {
    fn mode(&self) -> PolicyMode {
        PolicyMode::Ebpf
    }

    fn check(&self) -> Result<(), PolicyError> {
        // Loading is what tells: the kernel's verifier, BTF.
        Ok(progs::can_load()?)
    }

    fn unit(&self) -> &'static str {
        "ipcache, endpoint and policy map entries"
    }

    fn install(&self) -> Result<(), PolicyError> {
        for node in &self.nodes.nodes {
            let dir = Self::dir(node)?;
            let veths: Vec<&str> = node.pods.iter().map(|p| p.veth.as_str()).collect();
            progs::attach(&node.ns, &dir, &veths)?;
        }
        Ok(())
    }

    fn plan(&self, want: &Want<'_>) -> Result<PolicyPlan, PolicyError> {
        let view = view(want);
        let mut plan = PolicyPlan::new(self.unit());
        for node in &self.nodes.nodes {
            plan.push(self.node_part(node, &view, want)?);
        }
        Ok(plan)
    }

    fn apply(&self, plan: &PolicyPlan) -> Result<(), PolicyError> {
        Ok(plan.apply(|w| match w {
            super::datapath::Write::Ebpf(w) => Ok(w.write()?),
            _ => Err(PolicyError::ForeignPlan("ebpf")),
        })?)
    }

    fn teardown(&self) -> Result<(), PolicyError> {
        for node in &self.nodes.nodes {
            // A node already gone took its veths and links with it.
            if !node.ns.path().exists() {
                continue;
            }
            progs::detach(&Self::dir(node)?)?;
        }
        Ok(())
    }

    fn loads_programs(&self) -> bool {
        true
    }

    fn explain(&self, want: &Want<'_>, query: &Query, verdict: &Verdict) -> Vec<Decision> {
        let addr = |p: Party| match p {
            Party::Pod(i) => want.cluster.pods[i].addr,
            Party::Net(n) => n.addr(),
        };
        let (src, dst) = (addr(query.from), addr(query.to));
        let mut out = Vec::new();
        for hop in [&verdict.egress, &verdict.ingress] {
            let Some(pod) = &hop.pod else { continue };
            let Some(node) = self.nodes.holding(pod) else {
                continue;
            };
            let egress = hop.direction == Direction::Egress;
            let peer = if egress { dst } else { src };
            match self.decide(node, pod, egress, peer, query) {
                Ok(d) => out.push(d),
                Err(e) => out.push(Decision {
                    direction: hop.direction,
                    pod: pod.clone(),
                    node: node.name.clone(),
                    place: "policy maps".to_owned(),
                    entry: format!("not read: {e}"),
                    allows: hop.outcome.allowed(),
                    packets: None,
                    present: None,
                    map_entry: None,
                }),
            }
        }
        out
    }

    fn counters(&self, want: &Want<'_>) -> Result<Vec<VerdictCount>, PolicyError> {
        let eval = Evaluator::new(
            want.cluster,
            want.identities.clone(),
            want.policies,
            PolicyMode::Ebpf.flavor(),
        );
        let mut counts = VerdictCounts::new();
        for node in &self.nodes.nodes {
            let dir = Self::dir(node)?;
            if !progs::loaded(&dir) {
                continue;
            }
            let maps = PolicyMaps::open(&dir)?;
            // The policies behind each (endpoint, key) of this node's pods.
            let mut owners: BTreeMap<(u32, PolicyKey), String> = BTreeMap::new();
            let mut pods: BTreeMap<u32, usize> = BTreeMap::new();
            for p in &node.pods {
                let Some(i) = want.cluster.pod_by_name(&p.name) else {
                    continue;
                };
                let ep = endpoint_id(i);
                pods.insert(ep, i);
                for (entry, policies) in eval.entry_policies(i) {
                    let names: Vec<String> = policies.into_iter().collect();
                    for (key, _) in encode(ep, &BTreeSet::from([entry])) {
                        owners.insert(key, names.join(","));
                    }
                }
            }
            for (prefix, key, value) in maps.policy_rows()? {
                if !pods.contains_key(&key.endpoint) {
                    continue;
                }
                let policy = owners.get(&(prefix, key)).cloned().unwrap_or_else(|| {
                    if key.sec_label == identity::HOST {
                        "allow-localhost".to_owned()
                    } else {
                        String::new()
                    }
                });
                let direction = if key.egress != 0 {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let verdict = if value.is_deny() {
                    CountedVerdict::Denied
                } else {
                    CountedVerdict::Allowed
                };
                add_count(
                    &mut counts,
                    (node.name.clone(), policy, direction, verdict),
                    value.packets,
                    value.bytes,
                );
            }
            // Default deny has no entry: the per-endpoint metrics count it.
            for (key, value) in maps.metrics()? {
                let Some(&i) = pods.get(&key.endpoint) else {
                    continue;
                };
                if key.reason != REASON_POLICY_DENIED {
                    continue;
                }
                let direction = if key.dir == DIR_EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let by: Vec<String> = eval
                    .selecting(i, direction)
                    .iter()
                    .filter(|p| p.default_deny.get(direction))
                    .map(|p| p.key().to_string())
                    .collect();
                add_count(
                    &mut counts,
                    (
                        node.name.clone(),
                        by.join(","),
                        direction,
                        CountedVerdict::DefaultDenied,
                    ),
                    value.packets,
                    value.bytes,
                );
            }
        }
        Ok(count_rows(counts))
    }

    fn held(&self) -> Result<Vec<Held>, PolicyError> {
        let mut out = Vec::new();
        for node in &self.nodes.nodes {
            let dir = Self::dir(node)?;
            let lines = if progs::loaded(&dir) {
                let rows = NodeRows::read(&PolicyMaps::open(&dir)?)?;
                let attached = node
                    .pods
                    .iter()
                    .filter(|p| {
                        progs::Side::BOTH
                            .iter()
                            .all(|s| s.link_pin(&dir, &p.veth).exists())
                    })
                    .count();
                let enforcing = rows.endpoints.values().filter(|e| e.flags != 0).count();
                vec![
                    format!(
                        "policy_from_pod, policy_to_pod on {attached} of {} pod veths",
                        node.pods.len()
                    ),
                    format!(
                        "{} endpoints ({enforcing} enforcing), {} ipcache entries, {} policy entries",
                        rows.endpoints.len(),
                        rows.ipcache.len(),
                        rows.policy.len()
                    ),
                ]
            } else {
                vec!["no policy programs loaded".to_owned()]
            };
            out.push(Held {
                node: node.name.clone(),
                lines,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(identity: u32, protocol: Protocol, port: Option<u16>, end: Option<u16>) -> MapEntry {
        MapEntry {
            direction: Direction::Ingress,
            identity,
            protocol,
            port,
            end_port: end,
            deny: false,
        }
    }

    #[test]
    fn port_ranges_are_the_fewest_aligned_prefixes() {
        assert_eq!(port_prefixes(80, 80), [(80, 16)]);
        assert_eq!(port_prefixes(80, 81), [(80, 15)]);
        assert_eq!(port_prefixes(80, 95), [(80, 12)]);
        assert_eq!(
            port_prefixes(1, 1023),
            [
                (1, 16),
                (2, 15),
                (4, 14),
                (8, 13),
                (16, 12),
                (32, 11),
                (64, 10),
                (128, 9),
                (256, 8),
                (512, 7)
            ]
        );
        assert_eq!(port_prefixes(0, 65535), [(0, 0)]);
        assert_eq!(port_prefixes(65535, 65535), [(65535, 16)]);
    }

    #[test]
    fn encoding_follows_cilium_and_prints_as_cilium_does() {
        let set = BTreeSet::from([
            entry(256, Protocol::Tcp, Some(80), None),
            entry(257, Protocol::Tcp, Some(8080), Some(8081)),
            entry(258, Protocol::Udp, None, None),
            entry(1, Protocol::Any, None, None),
            entry(0, Protocol::Any, Some(53), None),
        ]);
        let rows = encode(7, &set);
        let shown: Vec<(u32, String, u8)> = rows
            .iter()
            .map(|((p, k), f)| (k.sec_label, port_proto(*p, k), *f))
            .collect();
        assert_eq!(
            shown,
            // Ordered by prefix length, then key.
            [
                (1, "ANY".to_owned(), 6),
                (258, "UDP".to_owned(), 4 | (8 << 3)),
                (257, "8080-8081/TCP".to_owned(), 4 | (23 << 3)),
                (0, "53/TCP".to_owned(), 24 << 3),
                (0, "53/UDP".to_owned(), 24 << 3),
                (0, "53/SCTP".to_owned(), 24 << 3),
                (256, "80/TCP".to_owned(), 24 << 3),
            ]
        );
        assert!(rows.keys().all(|(_, k)| k.endpoint == 7 && k.egress == 0));
    }

    #[test]
    fn a_deny_removes_the_allows_it_covers() {
        let mut deny = entry(256, Protocol::Tcp, None, None);
        deny.deny = true;
        let set = BTreeSet::from([
            entry(256, Protocol::Tcp, Some(80), None),
            entry(256, Protocol::Udp, Some(53), None),
            entry(257, Protocol::Tcp, Some(80), None),
            deny,
        ]);
        let shown: Vec<(u32, String, bool)> = encode(1, &set)
            .iter()
            .map(|((p, k), f)| (k.sec_label, port_proto(*p, k), f & ENTRY_DENY != 0))
            .collect();
        assert_eq!(
            shown,
            [
                (256, "TCP".to_owned(), true),
                (256, "53/UDP".to_owned(), false),
                (257, "80/TCP".to_owned(), false),
            ]
        );
    }

    mod demo {
        use std::net::Ipv4Addr;

        use super::super::*;
        use crate::policy::{
            eval::{Cluster, Namespace, Node as ClusterNode, Pod},
            identity::Identities,
            yaml::parse,
        };

        fn pod(name: &str, labels: &[(&str, &str)], node: &str, last: u8) -> Pod {
            Pod {
                name: format!("lab/{name}"),
                namespace: "default".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                addr: Ipv4Addr::new(10, 244, if node == "node1" { 1 } else { 2 }, last),
                node: node.into(),
                service_account: "default".into(),
            }
        }

        const DS: &[(&str, &str)] = &[("org", "empire"), ("class", "deathstar")];
        const TF: &[(&str, &str)] = &[("org", "empire"), ("class", "tiefighter")];

        fn starwars() -> Cluster {
            Cluster {
                namespaces: vec![Namespace::named("default")],
                pods: vec![
                    pod("deathstar-1", DS, "node1", 2),
                    pod("tiefighter", TF, "node1", 3),
                    pod("deathstar-2", DS, "node2", 2),
                    pod("xwing", &[("org", "alliance")], "node2", 3),
                ],
                nodes: ["node1", "node2"]
                    .iter()
                    .zip([2, 3])
                    .map(|(n, last)| ClusterNode {
                        name: (*n).into(),
                        addr: Ipv4Addr::new(172, 18, 0, last),
                    })
                    .collect(),
            }
        }

        const RULE1: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1}
spec:
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: \"80\", protocol: TCP}]
";

        /// Every node's rows, each pod plugged at ifindex 10 + its index.
        fn rows(
            cluster: &Cluster,
            ids: &Identities,
            policies: &[crate::policy::Policy],
        ) -> Vec<NodeRows> {
            let want = Want {
                cluster,
                identities: ids,
                policies,
            };
            let v = view(&want);
            ["node1", "node2"]
                .iter()
                .map(|n| {
                    let plugged: Vec<Plugged> = cluster
                        .pods
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.node == *n)
                        .map(|(i, p)| Plugged {
                            name: p.name.clone(),
                            addr: p.addr,
                            ifindex: 10 + i as u32,
                        })
                        .collect();
                    node_rows(&v, &want, n, &plugged, &[])
                })
                .collect()
        }

        /// The changes on each node when `add` joins starwars under rule1.
        fn adding(add: Pod) -> Vec<Counts> {
            let policies = parse("t.yaml", RULE1).unwrap();
            let before = starwars();
            let (ids, _) = before.identities(&Identities::default());
            let r0 = rows(&before, &ids, &policies);
            let mut after = before.clone();
            after.pods.push(add);
            let (ids2, change) = after.identities(&ids);
            assert!(change.allocated.is_empty(), "its labels have an identity");
            let r1 = rows(&after, &ids2, &policies);
            r0.iter()
                .zip(&r1)
                .map(|(a, b)| {
                    let ops = a.diff(b);
                    // Nothing in the maps of the endpoints already there.
                    assert!(
                        ops.iter().all(|op| match op {
                            MapOp::Policy { key, .. } => key.endpoint == 5,
                            _ => true,
                        }),
                        "{ops:?}"
                    );
                    Counts::of(&ops)
                })
                .collect()
        }

        #[test]
        fn a_pod_with_known_labels_writes_one_ipcache_entry_per_node_and_no_policy_entry() {
            let c = adding(pod("tiefighter-2", TF, "node1", 4));
            assert_eq!(
                c,
                [
                    Counts {
                        ipcache: 1,
                        endpoints: 1,
                        policy: 0
                    },
                    Counts {
                        ipcache: 1,
                        endpoints: 0,
                        policy: 0
                    }
                ]
            );
            // A third deathstar: its own new map is filled (the empire's two
            // identities on 80/TCP, and the host), no one else's.
            let c = adding(pod("deathstar-3", DS, "node2", 4));
            assert_eq!(
                c[0],
                Counts {
                    ipcache: 1,
                    endpoints: 0,
                    policy: 0
                }
            );
            assert_eq!(
                c[1],
                Counts {
                    ipcache: 1,
                    endpoints: 1,
                    policy: 3
                }
            );
        }
    }

    #[test]
    fn the_judgement_is_the_programs_and_names_the_entry_found() {
        use lab_common::policy::{
            MATCH_L3_L4, MATCH_L4_ONLY, MATCH_NONE, REASON_FORWARDED, REASON_POLICY_DENIED,
            REASON_POLICY_DENY,
        };
        let allow = |l4: u8| PolicyEntry {
            flags: l4 << ENTRY_PREFIX_SHIFT,
            ..PolicyEntry::default()
        };
        let deny = |l4: u8| PolicyEntry {
            flags: ENTRY_DENY | (l4 << ENTRY_PREFIX_SHIFT),
            ..PolicyEntry::default()
        };
        // This identity's port wins over any identity's protocol.
        let j = judge(Some(allow(24)), Some(allow(8)), 300, true);
        assert_eq!(
            (j.entry.map(|e| e.0), j.reason, j.match_type),
            (Some(300), REASON_FORWARDED, MATCH_L3_L4)
        );
        // Any identity's port over this identity's protocol.
        let j = judge(Some(allow(8)), Some(allow(24)), 300, true);
        assert_eq!(
            (j.entry.map(|e| e.0), j.match_type),
            (Some(0), MATCH_L4_ONLY)
        );
        // A deny of any identity wins over this identity's allow.
        let j = judge(Some(allow(24)), Some(deny(0)), 300, true);
        assert_eq!(
            (j.entry.map(|e| e.0), j.reason),
            (Some(0), REASON_POLICY_DENY)
        );
        // Nothing: default deny only where it is enforced.
        assert_eq!(judge(None, None, 300, true).reason, REASON_POLICY_DENIED);
        let open = judge(None, None, 300, false);
        assert_eq!(
            (open.reason, open.match_type),
            (REASON_FORWARDED, MATCH_NONE)
        );
        // The key found, from the prefix the entry keeps: 8080 in an
        // 8080-8081 entry (/23 of protocol and port).
        let (prefix, key) = found_key(7, 300, false, TCP, 8081u16.to_be(), &allow(23));
        assert_eq!(prefix, POLICY_STATIC_PREFIX + 23);
        assert_eq!(port_proto(prefix, &key), "8080-8081/TCP");
        let (prefix, key) = found_key(7, 0, true, UDP, 53u16.to_be(), &allow(0));
        assert_eq!(
            (port_proto(prefix, &key), key.protocol, key.dport),
            ("ANY".into(), 0, 0)
        );
        let found = BTreeSet::from([entry(300, Protocol::Tcp, Some(8080), Some(8081))]);
        assert!(encode(7, &found).contains_key(&found_key(
            7,
            300,
            false,
            TCP,
            8081u16.to_be(),
            &allow(23)
        )));
    }

    #[test]
    fn a_diff_writes_only_what_differs_puts_first() {
        let block = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let mut have = NodeRows::default();
        have.ipcache.insert(block("10.244.1.2/32"), 256);
        have.ipcache.insert(block("10.244.1.9/32"), 300);
        let mut want = have.clone();
        want.ipcache.remove(&block("10.244.1.9/32"));
        want.ipcache.insert(block("10.244.1.4/32"), 256);
        let ops = have.diff(&want);
        assert_eq!(
            ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "+ ipcache   10.244.1.4/32 -> identity 256",
                "- ipcache   10.244.1.9/32"
            ]
        );
        assert!(want.diff(&want).is_empty());
    }
}
