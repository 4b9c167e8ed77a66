//! `--policy-mode netfilter`: NetworkPolicy as nft rules, as Calico and
//! kube-router write them (per-pod chains, sets of peer addresses), in one
//! table per node:
//!
//! ```text
//! table ip labctl-policy
//!   chain forward  (hook forward)  ct state established,related accept
//!                                  ip saddr vmap @egress-pods
//!                                  ip daddr vmap @ingress-pods
//!   chain input    (hook input)    ct state established,related accept
//!                                  ip saddr vmap @egress-pods
//!   map ingress-pods   POD-ADDR : jump ingress-POD   (this node's pods only)
//!   map egress-pods    POD-ADDR : jump egress-POD
//!   set peers-HASH8    the addresses a rule's peers select (pods by
//!                      selector, ipBlocks minus except): interval set
//!   chain ingress-POD  ip saddr @peers-… meta l4proto tcp th dport 80
//!                        counter return comment "NS/NAME ingress[0]"
//!                      counter meta mark set 0x1ab50000 drop
//!                        comment "default deny: NS/POD ingress"
//! ```
//!
//! Pod traffic passes a node's forward hook whichever way it goes: between
//! pods of one node across the bridge (br_netfilter hands bridged IPv4 to
//! the IP hooks: the lab's pod bridge has `nf_call_iptables` on in this
//! mode), to and from other nodes routed. A pod's egress and ingress are
//! each judged on its own node only (the maps hold that node's pods), so a
//! connection between nodes is judged twice, once on each side, as in
//! Calico. What a pod sends its own node passes the input hook (egress
//! judged there too); what a node sends its own pods is never judged (the
//! output hook has no chain: kubelet's probes, as the evaluator says).
//! Jumps go by address, not by `iifname`: with br_netfilter the IP hooks
//! see the bridge, not the pod's veth, as the in and out devices.
//!
//! Replies pass the first rule (conntrack); an allowed rule `return`s, so
//! a connection between two pods of one node meets the source's egress
//! chain and then the destination's ingress chain in the same hook. A
//! chain ends with the default deny, which stamps the packet's mark with
//! [`lab_common::verdict::mark`] just before dropping it, for the drop
//! tracer.
//!
//! A sync is one `nft -f` transaction per node (the kernel commits it
//! whole, or not at all: a SIGKILL never leaves half a policy). It writes
//! what differs from what the node holds, read back with `nft -j list
//! table`: set elements added and deleted, a changed chain flushed and
//! refilled, stale chains and sets deleted; a table it cannot read back
//! as its own is rebuilt. What it counts are the rules and set elements it
//! writes or deletes: adding or relabelling a pod rewrites the sets (and
//! chains) that select it, on every node.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::IpNet;
use serde_json::Value;

use super::{
    Kind, Policy, PolicyError, PolicyMode,
    datapath::{
        CountedVerdict, Decision, Node, Nodes, PolicyDatapath, PolicyPlan, VerdictCount,
        VerdictCounts, Want, Write, add_count, count_rows,
    },
    eval::{Evaluator, Outcome, Query, Verdict},
    model::{Direction, Peer, Protocol, Section},
};
use crate::kernel::{
    datapath::{Part, ToolRun},
    tool::{self, ToolError},
};

/// The table in each node (a name nft 1.0.6 reads as one word).
pub const TABLE: &str = "labctl-policy";

/// What a change is counted as.
pub const UNIT: &str = "nft rules and set elements";

const INGRESS_MAP: &str = "ingress-pods";
const EGRESS_MAP: &str = "egress-pods";

/// The base chains and their rules, in order.
const BASE: [(&str, &str, &[&str]); 2] = [
    (
        "forward",
        "type filter hook forward priority filter; policy accept;",
        &[
            "ct state established,related accept",
            "ip saddr vmap @egress-pods",
            "ip daddr vmap @ingress-pods",
        ],
    ),
    (
        "input",
        "type filter hook input priority filter; policy accept;",
        &[
            "ct state established,related accept",
            "ip saddr vmap @egress-pods",
        ],
    ),
];

/// The longest comment nft keeps (its user data is 256 bytes).
const MAX_COMMENT: usize = 120;

/// What a pod-chain rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Allowed: on to the other side's chain (or out of the hook).
    Return,
    /// Dropped, with the packet's mark set first.
    Drop(u32),
}

/// One rule of a pod's chain, in a form both written and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `ip saddr @SET` (ingress) or `ip daddr @SET` (egress); None: any
    /// peer.
    pub peers: Option<(Direction, String)>,
    /// (protocol, first port, last port), sorted; empty: any.
    pub ports: Vec<(String, u16, u16)>,
    pub action: Action,
    /// The NFLOG prefix of its `log group` statement ([`log_prefix`]):
    /// every new connection a rule decides is logged for `observe`.
    pub log: Option<String>,
    pub comment: String,
}

/// The NFLOG group the policy rules log to: 0x1ab5 ("labs", as in
/// [`lab_common::verdict`]'s marks), far from the groups people pick by
/// hand (0-3, 100) and from ulogd's defaults. Log groups are per network
/// namespace: each node has its own.
pub const NFLOG_GROUP: u16 = 0x1ab5;

/// The longest prefix a log statement keeps (NF_LOG_PREFIXLEN is 128,
/// with its NUL).
const MAX_PREFIX: usize = 127;

/// How a rule decided a new connection, as its NFLOG prefix says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogVerdict {
    /// An allow rule matched.
    pub allowed: bool,
    /// A deny rule matched (POLICY_DENY), not a default deny
    /// (POLICY_DENIED).
    pub deny_rule: bool,
    pub direction: Direction,
    /// Cilium's `POLICY_MATCH_*` for the rule's shape (peers, ports).
    pub match_type: u8,
    /// The rule's comment (`default/web ingress[0]`, `default deny: ...`).
    pub rule: String,
}

/// `lp AI2 default/web ingress[0]`: `lp`, then A (allowed), X (a deny
/// rule) or D (default deny), I or E (the pod's ingress or egress), the
/// match type's digit, and the rule's comment (cut to fit).
pub fn log_prefix(v: &LogVerdict) -> String {
    let verdict = match (v.allowed, v.deny_rule) {
        (true, _) => 'A',
        (false, true) => 'X',
        (false, false) => 'D',
    };
    let dir = match v.direction {
        Direction::Ingress => 'I',
        Direction::Egress => 'E',
    };
    let mut s = format!("lp {verdict}{dir}{} {}", v.match_type, v.rule);
    if s.len() > MAX_PREFIX {
        let mut end = MAX_PREFIX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A prefix [`log_prefix`] wrote, read back (None: not one of ours).
pub fn parse_log_prefix(prefix: &str) -> Option<LogVerdict> {
    let rest = prefix.strip_prefix("lp ")?;
    let (code, rule) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut c = code.chars();
    let (allowed, deny_rule) = match c.next()? {
        'A' => (true, false),
        'X' => (false, true),
        'D' => (false, false),
        _ => return None,
    };
    let direction = match c.next()? {
        'I' => Direction::Ingress,
        'E' => Direction::Egress,
        _ => return None,
    };
    let match_type = u8::try_from(c.next()?.to_digit(10)?).ok()?;
    c.next().is_none().then(|| LogVerdict {
        allowed,
        deny_rule,
        direction,
        match_type,
        rule: rule.to_owned(),
    })
}

/// Cilium's `POLICY_MATCH_*` of a rule: by peers (L3) and ports (L4; a
/// protocol with every port is `PROTO`).
fn match_type(peers: bool, ports: &[(String, u16, u16)]) -> u8 {
    use lab_common::policy::{
        MATCH_ALL, MATCH_L3_L4, MATCH_L3_ONLY, MATCH_L3_PROTO, MATCH_L4_ONLY, MATCH_PROTO_ONLY,
    };
    let whole = !ports.is_empty() && ports.iter().all(|(_, lo, hi)| (*lo, *hi) == (0, 65535));
    match (peers, ports.is_empty(), whole) {
        (true, true, _) => MATCH_L3_ONLY,
        (true, false, true) => MATCH_L3_PROTO,
        (true, false, false) => MATCH_L3_L4,
        (false, true, _) => MATCH_ALL,
        (false, false, true) => MATCH_PROTO_ONLY,
        (false, false, false) => MATCH_L4_ONLY,
    }
}

impl Rule {
    /// The rule in nft's syntax (without the table and chain).
    pub fn text(&self) -> String {
        let mut words = Vec::new();
        if let Some((d, set)) = &self.peers {
            let field = match d {
                Direction::Ingress => "saddr",
                Direction::Egress => "daddr",
            };
            words.push(format!("ip {field} @{set}"));
        }
        match self.ports.as_slice() {
            [] => {}
            [(p, 0, 65535)] => words.push(format!("meta l4proto {p}")),
            [(p, lo, hi)] if lo == hi => words.push(format!("meta l4proto {p} th dport {lo}")),
            [(p, lo, hi)] => words.push(format!("meta l4proto {p} th dport {lo}-{hi}")),
            many => {
                let items: Vec<String> = many
                    .iter()
                    .map(|(p, lo, hi)| {
                        if lo == hi {
                            format!("{p} . {lo}")
                        } else {
                            format!("{p} . {lo}-{hi}")
                        }
                    })
                    .collect();
                words.push(format!(
                    "meta l4proto . th dport {{ {} }}",
                    items.join(", ")
                ));
            }
        }
        words.push("counter".to_owned());
        if let Some(prefix) = &self.log {
            words.push(format!("log prefix \"{prefix}\" group {NFLOG_GROUP}"));
        }
        match self.action {
            Action::Return => words.push("return".to_owned()),
            Action::Drop(mark) => words.push(format!("meta mark set {mark:#x} drop")),
        }
        words.push(format!("comment \"{}\"", self.comment));
        words.join(" ")
    }
}

/// A set of peer addresses: disjoint, sorted ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSet {
    pub comment: String,
    pub ranges: Vec<(u32, u32)>,
}

/// What one node's table holds (or is to hold), beside its fixed part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub sets: BTreeMap<String, PeerSet>,
    pub chains: BTreeMap<String, Vec<Rule>>,
    pub ingress: BTreeMap<Ipv4Addr, String>,
    pub egress: BTreeMap<Ipv4Addr, String>,
}

impl Table {
    /// Its rules and set elements (what a first sync writes).
    pub fn size(&self) -> usize {
        self.sets.values().map(|s| s.ranges.len()).sum::<usize>()
            + self.chains.values().map(Vec::len).sum::<usize>()
            + self.ingress.len()
            + self.egress.len()
    }
}

/// A short stable name part: FNV-1a of `s`, 8 hex digits.
fn hash8(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// A pod's chain name: `ingress-POD` (POD without its lab), or a hash
/// when the name is not one nft reads as a single word.
pub fn chain_name(d: Direction, pod: &str) -> String {
    let local = pod.rsplit('/').next().unwrap_or(pod);
    let plain = !local.is_empty()
        && local.len() <= 200
        && local
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain {
        format!("{}-{local}", d.as_str())
    } else {
        format!("{}-{}", d.as_str(), hash8(pod))
    }
}

/// Pod `pod`'s chain on `node`: [`chain_name`], or the whole name's hash
/// when another pod of the node has the same name in another namespace
/// (a Kubernetes node's `default/web` and `shop/web`).
pub fn pod_chain(d: Direction, pod: &str, node: &Node) -> String {
    let local = |n: &str| n.rsplit('/').next().unwrap_or(n).to_owned();
    let namesakes = node
        .pods
        .iter()
        .filter(|p| local(&p.name) == local(pod))
        .count();
    if namesakes > 1 {
        format!("{}-{}", d.as_str(), hash8(pod))
    } else {
        chain_name(d, pod)
    }
}

/// The set of rule `index` of `section` of `policy`.
fn set_name(policy: &Policy, section: Section, index: usize) -> String {
    format!(
        "peers-{}",
        hash8(&format!(
            "{}/{}/{}/{}[{index}]",
            policy.kind.as_str(),
            policy.namespace,
            policy.name,
            section.as_str()
        ))
    )
}

/// A prefix with nothing nft would need escaped (it came from a
/// comment, which has none already).
fn comment_safe(s: String) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\\').collect()
}

fn comment(s: String) -> String {
    let mut s: String = s.chars().filter(|c| *c != '"' && *c != '\\').collect();
    if s.len() > MAX_COMMENT {
        let mut end = MAX_COMMENT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `net` minus `except`, as ranges.
fn block_ranges(net: &IpNet, except: &[IpNet]) -> Vec<(u32, u32)> {
    let IpNet::V4(net) = net else {
        return Vec::new();
    };
    let mut out = vec![(u32::from(net.network()), u32::from(net.broadcast()))];
    for x in except {
        let IpNet::V4(x) = x else { continue };
        let (xa, xb) = (u32::from(x.network()), u32::from(x.broadcast()));
        out = out
            .into_iter()
            .flat_map(|(a, b)| {
                let mut keep = Vec::new();
                if xb < a || xa > b {
                    keep.push((a, b));
                } else {
                    if xa > a {
                        keep.push((a, xa - 1));
                    }
                    if xb < b {
                        keep.push((xb + 1, b));
                    }
                }
                keep
            })
            .collect();
    }
    out
}

/// Sorted, overlapping ranges merged (adjacent ones stay apart: a pod's
/// address reads as itself).
fn merge(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A range as an nft set element.
fn element(a: u32, b: u32) -> String {
    if a == b {
        return Ipv4Addr::from(a).to_string();
    }
    let size = u64::from(b - a) + 1;
    if size.is_power_of_two() && u64::from(a) % size == 0 {
        let len = 32 - size.trailing_zeros();
        return format!("{}/{len}", Ipv4Addr::from(a));
    }
    format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
}

fn proto_name(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
        Protocol::Any => None,
    }
}

/// A rule's ports: (protocol, first, last), sorted.
fn ports(rule: &super::model::Rule) -> Vec<(String, u16, u16)> {
    let mut out: Vec<(String, u16, u16)> = Vec::new();
    for p in &rule.ports {
        let (lo, hi) = match p.port {
            None => (0, 65535),
            Some(lo) => (lo, p.end_port.unwrap_or(lo).max(lo)),
        };
        let protos: Vec<&str> = match proto_name(p.protocol) {
            Some(n) => vec![n],
            None => vec!["tcp", "udp", "sctp"],
        };
        for n in protos {
            out.push((n.to_owned(), lo, hi));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What node `node`'s table is to hold for `want`: the chains of its own
/// pods, and the sets those chains use.
pub fn desired(want: &Want<'_>, node: &Node) -> Result<Table, PolicyError> {
    if let Some(p) = want
        .policies
        .iter()
        .find(|p| p.kind == Kind::CiliumNetworkPolicy)
    {
        return Err(PolicyError::CiliumWithoutCilium {
            file: p.origin.file.clone(),
            line: p.origin.line,
            lab: node.name.split('/').next().unwrap_or_default().to_owned(),
        });
    }
    let eval = Evaluator::new(
        want.cluster,
        want.identities.clone(),
        want.policies,
        PolicyMode::Netfilter.flavor(),
    );
    let mut table = Table::default();
    for port in &node.pods {
        let Some(pod) = want.cluster.pod_by_name(&port.name) else {
            continue;
        };
        for d in [Direction::Ingress, Direction::Egress] {
            let selecting = eval.selecting(pod, d);
            if !selecting.iter().any(|p| p.default_deny.get(d)) {
                continue;
            }
            let chain = pod_chain(d, &port.name, node);
            let mut rules = Vec::new();
            for (section, action) in [
                (
                    Section::deny(d),
                    Action::Drop(lab_common::verdict::mark(d == Direction::Egress, true)),
                ),
                (Section::allow(d), Action::Return),
            ] {
                for policy in &selecting {
                    for (index, rule) in policy.rules(section).iter().enumerate() {
                        let peers = match &rule.peers {
                            None => None,
                            Some(peers) if peers.is_empty() => continue,
                            Some(peers) => {
                                let name = set_name(policy, section, index);
                                if !table.sets.contains_key(&name) {
                                    let mut ranges = Vec::new();
                                    for peer in peers {
                                        match peer {
                                            Peer::Cidr { cidr, except } => {
                                                ranges.extend(block_ranges(cidr, except));
                                            }
                                            _ => ranges.extend(
                                                eval.peer_pods(policy, peer, pod).into_iter().map(
                                                    |q| {
                                                        let a =
                                                            u32::from(want.cluster.pods[q].addr);
                                                        (a, a)
                                                    },
                                                ),
                                            ),
                                        }
                                    }
                                    table.sets.insert(
                                        name.clone(),
                                        PeerSet {
                                            comment: comment(format!(
                                                "{} {}[{index}] peers",
                                                policy.key(),
                                                section.as_str()
                                            )),
                                            ranges: merge(ranges),
                                        },
                                    );
                                }
                                Some((d, name))
                            }
                        };
                        let ports = ports(rule);
                        let comment =
                            comment(format!("{} {}[{index}]", policy.key(), section.as_str()));
                        let log = log_prefix(&LogVerdict {
                            allowed: action == Action::Return,
                            deny_rule: action != Action::Return,
                            direction: d,
                            match_type: match_type(peers.is_some(), &ports),
                            rule: comment.clone(),
                        });
                        rules.push(Rule {
                            peers,
                            ports,
                            action: action.clone(),
                            log: Some(comment_safe(log)),
                            comment,
                        });
                    }
                }
            }
            let by: Vec<String> = selecting
                .iter()
                .filter(|p| p.default_deny.get(d))
                .map(|p| p.key().to_string())
                .collect();
            let comment = comment(format!(
                "default deny: {} {} (selected by {})",
                port.name.rsplit('/').next().unwrap_or(&port.name),
                d.as_str(),
                by.join(", ")
            ));
            let log = log_prefix(&LogVerdict {
                allowed: false,
                deny_rule: false,
                direction: d,
                match_type: lab_common::policy::MATCH_NONE,
                rule: comment.clone(),
            });
            rules.push(Rule {
                peers: None,
                ports: Vec::new(),
                action: Action::Drop(lab_common::verdict::mark(d == Direction::Egress, false)),
                log: Some(comment_safe(log)),
                comment,
            });
            table.chains.insert(chain.clone(), rules);
            let map = match d {
                Direction::Ingress => &mut table.ingress,
                Direction::Egress => &mut table.egress,
            };
            map.insert(port.addr, chain);
        }
    }
    Ok(table)
}

/// Why a listing is not one this module wrote (it is then rebuilt).
#[derive(Debug)]
struct Foreign;

fn items(listing: &Value) -> impl Iterator<Item = &Value> {
    listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn addr_of(v: &Value) -> Result<u32, Foreign> {
    v.as_str()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .ok_or(Foreign)
}

fn parse_elem(v: &Value) -> Result<(u32, u32), Foreign> {
    if let Some(p) = v.get("prefix") {
        let a = addr_of(p.get("addr").ok_or(Foreign)?)?;
        let len = p.get("len").and_then(Value::as_u64).ok_or(Foreign)?;
        if len > 32 {
            return Err(Foreign);
        }
        let size = 1u64 << (32 - len);
        let b = u32::try_from(u64::from(a) + size - 1).map_err(|_| Foreign)?;
        return Ok((a, b));
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        return match r.as_slice() {
            [a, b] => Ok((addr_of(a)?, addr_of(b)?)),
            _ => Err(Foreign),
        };
    }
    let a = addr_of(v)?;
    Ok((a, a))
}

fn port_of(v: &Value) -> Result<(u16, u16), Foreign> {
    let one = |v: &Value| {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(Foreign)
    };
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        return match r.as_slice() {
            [a, b] => Ok((one(a)?, one(b)?)),
            _ => Err(Foreign),
        };
    }
    let p = one(v)?;
    Ok((p, p))
}

fn proto_of(v: &Value) -> Result<String, Foreign> {
    match v.as_str() {
        Some(p @ ("tcp" | "udp" | "sctp")) => Ok(p.to_owned()),
        _ => Err(Foreign),
    }
}

/// A pod-chain rule read back from `nft -j` (only the shapes
/// [`Rule::text`] writes).
fn parse_rule(r: &Value) -> Result<Rule, Foreign> {
    let mut rule = Rule {
        peers: None,
        ports: Vec::new(),
        action: Action::Return,
        log: None,
        comment: r
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let mut action = None;
    let mut mark = None;
    let mut l4 = None;
    for e in r
        .get("expr")
        .and_then(Value::as_array)
        .ok_or(Foreign)?
        .iter()
    {
        if let Some(m) = e.get("match") {
            let left = m.get("left").ok_or(Foreign)?;
            let right = m.get("right").ok_or(Foreign)?;
            if m.get("op").and_then(Value::as_str) != Some("==") {
                return Err(Foreign);
            }
            if let Some(p) = left.get("payload") {
                let proto = p.get("protocol").and_then(Value::as_str).ok_or(Foreign)?;
                let field = p.get("field").and_then(Value::as_str).ok_or(Foreign)?;
                match (proto, field) {
                    ("ip", "saddr" | "daddr") => {
                        let set = right
                            .as_str()
                            .and_then(|s| s.strip_prefix('@'))
                            .ok_or(Foreign)?;
                        let d = if field == "saddr" {
                            Direction::Ingress
                        } else {
                            Direction::Egress
                        };
                        rule.peers = Some((d, set.to_owned()));
                    }
                    (p @ ("tcp" | "udp" | "sctp"), "dport") => {
                        let (lo, hi) = port_of(right)?;
                        rule.ports.push((p.to_owned(), lo, hi));
                    }
                    ("th", "dport") => {
                        let (lo, hi) = port_of(right)?;
                        let p = l4.take().ok_or(Foreign)?;
                        rule.ports.push((p, lo, hi));
                    }
                    _ => return Err(Foreign),
                }
            } else if left.get("meta").and_then(|m| m.get("key")) == Some(&"l4proto".into()) {
                l4 = Some(proto_of(right)?);
            } else if let Some(parts) = left.get("concat").and_then(Value::as_array) {
                if parts.len() != 2 {
                    return Err(Foreign);
                }
                for item in right.get("set").and_then(Value::as_array).ok_or(Foreign)? {
                    match item
                        .get("concat")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                    {
                        Some([p, port]) => {
                            let (lo, hi) = port_of(port)?;
                            rule.ports.push((proto_of(p)?, lo, hi));
                        }
                        _ => return Err(Foreign),
                    }
                }
            } else {
                return Err(Foreign);
            }
        } else if e.get("counter").is_some() {
        } else if let Some(l) = e.get("log") {
            if l.get("group").and_then(Value::as_u64) != Some(u64::from(NFLOG_GROUP)) {
                return Err(Foreign);
            }
            rule.log = Some(
                l.get("prefix")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            );
        } else if let Some(m) = e.get("mangle") {
            mark = Some(
                m.get("value")
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(Foreign)?,
            );
        } else if e.get("return").is_some() {
            action = Some(Action::Return);
        } else if e.get("drop").is_some() {
            action = Some(Action::Drop(mark.ok_or(Foreign)?));
        } else {
            return Err(Foreign);
        }
    }
    if let Some(p) = l4 {
        rule.ports.push((p, 0, 65535));
    }
    rule.ports.sort();
    rule.action = action.ok_or(Foreign)?;
    Ok(rule)
}

/// What a node's table holds, read back from `nft -j list table`; Err:
/// not (all) ours, or not in the shape we write.
fn held(listing: &Value) -> Result<Table, Foreign> {
    let mut table = Table::default();
    let mut base_rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut maps = BTreeSet::new();
    for item in items(listing) {
        if let Some(s) = item.get("set") {
            let name = s.get("name").and_then(Value::as_str).ok_or(Foreign)?;
            let ranges = match s.get("elem").and_then(Value::as_array) {
                Some(elems) => elems.iter().map(parse_elem).collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            table.sets.insert(
                name.to_owned(),
                PeerSet {
                    comment: s
                        .get("comment")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    ranges: merge(ranges),
                },
            );
        } else if let Some(m) = item.get("map") {
            let name = m.get("name").and_then(Value::as_str).ok_or(Foreign)?;
            let into = match name {
                INGRESS_MAP => &mut table.ingress,
                EGRESS_MAP => &mut table.egress,
                _ => return Err(Foreign),
            };
            maps.insert(name.to_owned());
            for e in m
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match e.as_array().map(Vec::as_slice) {
                    Some([k, v]) => {
                        let target = v
                            .get("jump")
                            .and_then(|j| j.get("target"))
                            .and_then(Value::as_str)
                            .ok_or(Foreign)?;
                        into.insert(Ipv4Addr::from(addr_of(k)?), target.to_owned());
                    }
                    _ => return Err(Foreign),
                }
            }
        } else if let Some(c) = item.get("chain") {
            let name = c.get("name").and_then(Value::as_str).ok_or(Foreign)?;
            if BASE.iter().any(|(b, _, _)| *b == name) {
                base_rules.insert(name.to_owned(), 0);
            } else {
                table.chains.insert(name.to_owned(), Vec::new());
            }
        } else if let Some(r) = item.get("rule") {
            let chain = r.get("chain").and_then(Value::as_str).ok_or(Foreign)?;
            if let Some(n) = base_rules.get_mut(chain) {
                *n += 1;
            } else {
                let rule = parse_rule(r)?;
                table.chains.get_mut(chain).ok_or(Foreign)?.push(rule);
            }
        }
    }
    let base_ok = BASE
        .iter()
        .all(|(name, _, rules)| base_rules.get(*name) == Some(&rules.len()));
    if !base_ok || maps.len() != 2 {
        return Err(Foreign);
    }
    Ok(table)
}

/// The `nft -f` transaction that brings a node from `before` (None: no
/// table, or one to rebuild: `rebuild`) to `after`, line by line, and how
/// many rules and set elements it writes or deletes.
pub fn transaction(
    before: Option<&Table>,
    after: &Table,
    rebuild: bool,
    lab: &str,
) -> (Vec<String>, usize) {
    let t = format!("ip {TABLE}");
    let mut lines = Vec::new();
    let mut changes = 0;
    let empty = Table::default();
    let fresh = before.is_none();
    let before = match before {
        Some(b) => b,
        None => {
            if rebuild {
                lines.push(format!("delete table {t}"));
            }
            lines.push(format!(
                "add table {t} {{ comment \"labctl: NetworkPolicy of lab {lab}, as Calico and kube-router enforce it\"; }}"
            ));
            for (map, what) in [(INGRESS_MAP, "ingress"), (EGRESS_MAP, "egress")] {
                lines.push(format!(
                    "add map {t} {map} {{ type ipv4_addr : verdict; comment \"this node's pods selected for {what}: jump to their chain\"; }}"
                ));
            }
            &empty
        }
    };
    // Sets first (rules refer to them), then chains, the maps that jump
    // to them, and what is stale last.
    for (name, set) in &after.sets {
        let old = before.sets.get(name);
        if old.is_none() {
            lines.push(format!(
                "add set {t} {name} {{ type ipv4_addr; flags interval; comment \"{}\"; }}",
                set.comment
            ));
        }
        let had: BTreeSet<(u32, u32)> = old
            .map(|o| o.ranges.iter().copied().collect())
            .unwrap_or_default();
        let has: BTreeSet<(u32, u32)> = set.ranges.iter().copied().collect();
        let gone: Vec<String> = had.difference(&has).map(|(a, b)| element(*a, *b)).collect();
        let new: Vec<String> = has.difference(&had).map(|(a, b)| element(*a, *b)).collect();
        for chunk in gone.chunks(500) {
            lines.push(format!(
                "delete element {t} {name} {{ {} }}",
                chunk.join(", ")
            ));
        }
        for chunk in new.chunks(500) {
            lines.push(format!("add element {t} {name} {{ {} }}", chunk.join(", ")));
        }
        changes += gone.len() + new.len();
    }
    for (name, rules) in &after.chains {
        match before.chains.get(name) {
            Some(old) if old == rules => continue,
            Some(old) => {
                lines.push(format!("flush chain {t} {name}"));
                changes += old.len();
            }
            None => lines.push(format!("add chain {t} {name}")),
        }
        for r in rules {
            lines.push(format!("add rule {t} {name} {}", r.text()));
        }
        changes += rules.len();
    }
    for (map, was, is) in [
        (INGRESS_MAP, &before.ingress, &after.ingress),
        (EGRESS_MAP, &before.egress, &after.egress),
    ] {
        let gone: Vec<String> = was
            .iter()
            .filter(|(a, c)| is.get(*a) != Some(*c))
            .map(|(a, _)| a.to_string())
            .collect();
        let new: Vec<String> = is
            .iter()
            .filter(|(a, c)| was.get(*a) != Some(*c))
            .map(|(a, c)| format!("{a} : jump {c}"))
            .collect();
        if !gone.is_empty() {
            lines.push(format!(
                "delete element {t} {map} {{ {} }}",
                gone.join(", ")
            ));
        }
        if !new.is_empty() {
            lines.push(format!("add element {t} {map} {{ {} }}", new.join(", ")));
        }
        changes += gone.len() + new.len();
    }
    if fresh {
        for (name, hook, rules) in BASE {
            lines.push(format!("add chain {t} {name} {{ {hook} }}"));
            for r in rules {
                lines.push(format!("add rule {t} {name} {r}"));
            }
        }
    }
    for (name, rules) in &before.chains {
        if !after.chains.contains_key(name) {
            lines.push(format!("flush chain {t} {name}"));
            lines.push(format!("delete chain {t} {name}"));
            changes += rules.len();
        }
    }
    for (name, set) in &before.sets {
        if !after.sets.contains_key(name) {
            lines.push(format!("delete set {t} {name}"));
            changes += set.ranges.len();
        }
    }
    (lines, changes)
}

/// Whether nft said the table is not there.
fn missing(e: &ToolError) -> bool {
    matches!(e, ToolError::Refused { stderr, .. } if stderr.contains("No such file or directory"))
}

/// Milliseconds to wait between two nodes' transactions (tests that kill
/// `policy apply` half-way only; 5 s at most, Ctrl-C ends it).
pub const NODE_DELAY_ENV: &str = "LABCTL_TEST_POLICY_NODE_DELAY_MS";

/// What the rules of a node's table counted (`nft -j list table`), by
/// policy, direction and verdict, into `out`: a rule's comment names its
/// policy (`NS/NAME SECTION[i]`), a chain's last rule is its default deny
/// (`default deny: POD DIRECTION (selected by P, Q)`). Rules of the base
/// chains (no counter) are not policy rules.
pub fn count_rules(listing: &Value, node: &str, out: &mut VerdictCounts) {
    for r in items(listing).filter_map(|i| i.get("rule")) {
        let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default();
        let direction = if chain.starts_with("ingress-") {
            Direction::Ingress
        } else if chain.starts_with("egress-") {
            Direction::Egress
        } else {
            continue;
        };
        let exprs: Vec<&Value> = r
            .get("expr")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let Some(counter) = exprs.iter().find_map(|e| e.get("counter")) else {
            continue;
        };
        let packets = counter.get("packets").and_then(Value::as_u64).unwrap_or(0);
        let bytes = counter.get("bytes").and_then(Value::as_u64).unwrap_or(0);
        let comment = r.get("comment").and_then(Value::as_str).unwrap_or_default();
        let drops = exprs.iter().any(|e| e.get("drop").is_some());
        let (policy, verdict) = if let Some(rest) = comment.strip_prefix("default deny:") {
            let by = rest
                .split_once("(selected by ")
                .map(|(_, by)| by.trim_end_matches(')').replace(' ', ""))
                .unwrap_or_default();
            (by, CountedVerdict::DefaultDenied)
        } else {
            (
                comment.split(' ').next().unwrap_or_default().to_owned(),
                if drops {
                    CountedVerdict::Denied
                } else {
                    CountedVerdict::Allowed
                },
            )
        };
        add_count(
            out,
            (node.to_owned(), policy, direction, verdict),
            packets,
            bytes,
        );
    }
}

pub struct Netfilter {
    nodes: Nodes,
}

impl Netfilter {
    pub fn new(nodes: Nodes) -> Self {
        Self { nodes }
    }

    /// The rules of chain `chain` in `node` as (comment, packets); None:
    /// not read (no such chain, or nft refused).
    fn chain_rules(node: &Node, chain: &str) -> Option<Vec<(String, u64)>> {
        let text = tool::run(
            &node.ns,
            "nft",
            &["-j", "list", "chain", "ip", TABLE, chain],
            None,
        )
        .ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(
            items(&v)
                .filter_map(|i| i.get("rule"))
                .map(|r| {
                    let comment = r
                        .get("comment")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let packets = r
                        .get("expr")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
                        .unwrap_or(0);
                    (comment, packets)
                })
                .collect(),
        )
    }

    /// `nft -j list table` in `node` (None: no table).
    fn listing(node: &Node) -> Result<Option<Value>, PolicyError> {
        match tool::run(&node.ns, "nft", &["-j", "list", "table", "ip", TABLE], None) {
            Ok(text) => Ok(serde_json::from_str(&text).ok()),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl PolicyDatapath for Netfilter {
    fn mode(&self) -> PolicyMode {
        PolicyMode::Netfilter
    }

    fn check(&self) -> Result<(), PolicyError> {
        which::which("nft").map_err(|_| PolicyError::NftMissing)?;
        if !std::path::Path::new("/proc/sys/net/bridge").is_dir() {
            return Err(PolicyError::NoBrNetfilter);
        }
        Ok(())
    }

    fn unit(&self) -> &'static str {
        UNIT
    }

    fn plan(&self, want: &Want<'_>) -> Result<PolicyPlan, PolicyError> {
        let mut plan = PolicyPlan::new(UNIT);
        for node in &self.nodes.nodes {
            let after = desired(want, node)?;
            let listing = Self::listing(node)?;
            let before = listing.as_ref().map(held);
            let (lines, changes) = match &before {
                None => transaction(None, &after, false, &self.nodes.lab),
                Some(Ok(b)) => transaction(Some(b), &after, false, &self.nodes.lab),
                Some(Err(Foreign)) => {
                    let (lines, _) = transaction(None, &after, true, &self.nodes.lab);
                    (lines, after.size())
                }
            };
            let mut input = lines.join("\n");
            input.push('\n');
            plan.push(Part {
                target: node.name.clone(),
                lines,
                changes,
                write: Write::Nft(ToolRun {
                    ns: node.ns.handle(),
                    program: "nft",
                    args: &["-f", "-"],
                    input,
                }),
            });
        }
        Ok(plan)
    }

    fn apply(&self, plan: &PolicyPlan) -> Result<(), PolicyError> {
        let mut written = 0;
        plan.apply(|w| match w {
            Write::Nft(run) if run.input.trim().is_empty() => Ok(()),
            Write::Nft(run) => {
                if written > 0 {
                    crate::kernel::interrupt::test_delay(NODE_DELAY_ENV);
                }
                written += 1;
                run.write().map_err(PolicyError::from)
            }
            Write::Ebpf(_) => Err(PolicyError::ForeignPlan("ebpf")),
        })?;
        Ok(())
    }

    fn explain(&self, want: &Want<'_>, _query: &Query, verdict: &Verdict) -> Vec<Decision> {
        let mut out = Vec::new();
        for hop in [&verdict.egress, &verdict.ingress] {
            let Some(pod) = &hop.pod else { continue };
            let Some(node) = self.nodes.holding(pod) else {
                continue;
            };
            let chain = pod_chain(hop.direction, pod, node);
            let held = Self::chain_rules(node, &chain);
            let planned = desired(want, node)
                .ok()
                .and_then(|t| t.chains.get(&chain).cloned());
            let (entry, allows, comment) = match &hop.outcome {
                Outcome::Allowed { rule } | Outcome::Denied { rule } => {
                    let c = comment(format!(
                        "{} {}[{}]",
                        rule.policy,
                        rule.section.as_str(),
                        rule.index
                    ));
                    (format!("rule \"{c}\""), hop.outcome.allowed(), Some(c))
                }
                Outcome::DefaultDenied => {
                    let c = planned
                        .as_ref()
                        .and_then(|r| r.last())
                        .map(|r| r.comment.clone())
                        .unwrap_or_default();
                    let mark = lab_common::verdict::mark(hop.direction == Direction::Egress, false);
                    (
                        format!("rule \"{c}\" (meta mark set {mark:#x} drop)"),
                        false,
                        Some(c),
                    )
                }
                Outcome::AllowedHost => (
                    "no rule: what a node sends its own pods passes the output hook, which has no chain"
                        .to_owned(),
                    true,
                    None,
                ),
                Outcome::NotSelected | Outcome::NotEnforced | Outcome::NoEndpoint => (
                    format!(
                        "no jump: {} has no {} chain (no policy selects it for {})",
                        pod.rsplit('/').next().unwrap_or(pod),
                        hop.direction.as_str(),
                        hop.direction.as_str()
                    ),
                    true,
                    None,
                ),
            };
            let place = if comment.is_some() {
                format!("table ip {TABLE} chain {chain}")
            } else {
                format!(
                    "table ip {TABLE} map {}",
                    match hop.direction {
                        Direction::Ingress => INGRESS_MAP,
                        Direction::Egress => EGRESS_MAP,
                    }
                )
            };
            let packets = match (&held, &comment) {
                (Some(rules), Some(c)) => rules
                    .iter()
                    .find(|(rc, _)| rc == c)
                    .map(|(_, packets)| *packets),
                _ => None,
            };
            out.push(Decision {
                direction: hop.direction,
                pod: pod.clone(),
                node: node.name.clone(),
                place,
                entry,
                allows,
                packets,
                present: match (&held, &comment) {
                    (Some(_), Some(_)) => Some(packets.is_some()),
                    (None, Some(_)) => None,
                    (_, None) => None,
                },
                map_entry: None,
            });
        }
        out
    }

    fn counters(&self, _want: &Want<'_>) -> Result<Vec<VerdictCount>, PolicyError> {
        let mut counts = VerdictCounts::new();
        for node in &self.nodes.nodes {
            if let Some(listing) = Self::listing(node)? {
                count_rules(&listing, &node.name, &mut counts);
            }
        }
        Ok(count_rows(counts))
    }

    fn teardown(&self) -> Result<(), PolicyError> {
        let mut errors = Vec::new();
        for node in &self.nodes.nodes {
            match tool::run(&node.ns, "nft", &["delete", "table", "ip", TABLE], None) {
                Ok(_) => {}
                Err(e) if missing(&e) => {}
                Err(e) => errors.push(format!("{}: {e}", node.name)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Teardown(errors))
        }
    }
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
