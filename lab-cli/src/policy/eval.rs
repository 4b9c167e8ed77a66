//! The policy evaluator: pure and kernel-free. Given the cluster's pods
//! (labels, namespaces, addresses, nodes) and the policies, it says what
//! happens to a new connection from a pod or address to another on a port,
//! which direction decides, which policy and rule, and why, as `cilium
//! policy trace` would.
//!
//! The semantics are Kubernetes': a pod no policy selects in a direction
//! is open in that direction; once selected, only what some policy allows
//! passes; a connection needs its source's egress and its destination's
//! ingress; replies of an allowed connection pass (the datapaths track
//! connections). Cilium adds deny rules, which win over every allow, and
//! policies that select without turning default deny on.
//!
//! Where the two datapaths differ, [`Flavor`] says which one is asked:
//! netfilter engines (Calico, kube-router) match an `ipBlock` against any
//! address, pods' included, and a selector against all of a pod's labels;
//! Cilium's CIDR rules never select a pod or a node, and its selectors see
//! only the identity-relevant labels ([`identity::relevant`]).
//! CiliumNetworkPolicies are always read as Cilium reads them. Both
//! flavors let a pod's own node reach it (kubelet's probes: Cilium's
//! `allow-localhost`, Calico's host-to-workload rule).

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::{
    identity::{self, Identities, IdentityChange, IdentityLabels},
    model::{
        Direction, Kind, Labels, Namespaces, Peer, Policy, PolicyKey, Protocol, Rule, Section,
        Selector,
    },
};

/// The label every namespace carries with its own name (Kubernetes 1.21+).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A Kubernetes namespace of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with only its automatic name label.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            labels: Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())]),
        }
    }
}

/// A pod as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// The name labctl prints and accepts for it (`LAB/POD`).
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub addr: Ipv4Addr,
    pub node: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub addr: Ipv4Addr,
}

/// Everything selectors are resolved against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// The labels of namespace `name` (only its name label if unknown).
    pub fn namespace_labels(&self, name: &str) -> Labels {
        self.namespaces
            .iter()
            .find(|n| n.name == name)
            .map_or_else(|| Namespace::named(name).labels, |n| n.labels.clone())
    }

    /// Pod `i`'s identity labels.
    pub fn identity_labels(&self, i: usize) -> IdentityLabels {
        let p = &self.pods[i];
        identity::of_pod(
            &p.labels,
            &p.namespace,
            &self.namespace_labels(&p.namespace),
            &p.service_account,
        )
    }

    /// The identities of the pods now, from those of `previous`.
    pub fn identities(&self, previous: &Identities) -> (Identities, IdentityChange) {
        let sets: Vec<IdentityLabels> = (0..self.pods.len())
            .map(|i| self.identity_labels(i))
            .collect();
        previous.allocate(sets.iter())
    }

    pub fn pod_by_addr(&self, addr: Ipv4Addr) -> Option<usize> {
        self.pods.iter().position(|p| p.addr == addr)
    }

    pub fn pod_by_name(&self, name: &str) -> Option<usize> {
        self.pods.iter().position(|p| p.name == name)
    }

    /// An address block as a party: a pod's own address is that pod.
    pub fn party(&self, net: Ipv4Net) -> Party {
        match self.pod_by_addr(net.addr()) {
            Some(i) if net.prefix_len() == 32 => Party::Pod(i),
            _ => Party::Net(net.trunc()),
        }
    }

    /// What a block is to a pod on node `node`: its own node, another
    /// node, or the world.
    fn classify(&self, net: Ipv4Net, node: &str) -> NetKind {
        if net.prefix_len() == 32
            && let Some(n) = self.nodes.iter().find(|n| n.addr == net.addr())
        {
            return if n.name == node {
                NetKind::Host
            } else {
                NetKind::RemoteNode
            };
        }
        NetKind::World
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetKind {
    Host,
    RemoteNode,
    World,
}

impl NetKind {
    fn identity(self) -> u32 {
        match self {
            NetKind::Host => identity::HOST,
            NetKind::RemoteNode => identity::REMOTE_NODE,
            NetKind::World => identity::WORLD,
        }
    }
}

/// Which datapath's reading of the policies is asked (see the module
/// docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// iptables/nftables engines (Calico, kube-router); also labs without
    /// a policy mode.
    #[default]
    Netfilter,
    /// Cilium's identities.
    Cilium,
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// A pod, by its index in [`Cluster::pods`].
    Pod(usize),
    /// An address block outside the pods (a node, the world).
    Net(Ipv4Net),
}

/// A new connection to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub from: Party,
    pub to: Party,
    pub port: u16,
    pub protocol: Protocol,
}

/// Why a connection was dropped, in Cilium's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DropReason {
    /// Selected, and no rule allows it (default deny): Cilium's drop
    /// reason 133, "Policy denied".
    PolicyDenied,
    /// A deny rule matched: Cilium's 181, "Policy denied by denylist".
    PolicyDeny,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::PolicyDenied => "POLICY_DENIED",
            DropReason::PolicyDeny => "POLICY_DENY",
        }
    }

    /// Cilium's drop reason code (`cilium monitor`, Hubble's
    /// `drop_reason`).
    pub fn code(self) -> u8 {
        match self {
            DropReason::PolicyDenied => 133,
            DropReason::PolicyDeny => 181,
        }
    }
}

/// A rule of a policy, as a trace names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub policy: PolicyKey,
    pub section: Section,
    /// Its position in the section, from 0.
    pub index: usize,
    /// Its file and line.
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for RuleRef {
    /// `default/rule1 ingress[0] (rule1.yaml:9)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}[{}] ({}:{})",
            self.policy,
            self.section.as_str(),
            self.index,
            self.file,
            self.line
        )
    }
}

/// What one direction decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// This side is not a pod: no policy of ours applies.
    NoEndpoint,
    /// No policy selects the pod in this direction: open.
    NotSelected,
    /// Selected, but by no policy that turns default deny on, and no deny
    /// rule matched.
    NotEnforced,
    /// An allow rule matched.
    Allowed { rule: RuleRef },
    /// From the pod's own node, which may always reach it.
    AllowedHost,
    /// Selected and nothing allows it.
    DefaultDenied,
    /// A deny rule matched.
    Denied { rule: RuleRef },
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        !matches!(self, Outcome::DefaultDenied | Outcome::Denied { .. })
    }
}

/// One direction of a verdict: the source's egress or the destination's
/// ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub direction: Direction,
    /// The pod whose policies apply (its name), if this side is a pod.
    pub pod: Option<String>,
    /// The policies that select it and govern this direction.
    pub selected_by: Vec<PolicyKey>,
    /// Whether it is default-deny in this direction.
    pub enforced: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Where the flavors part ways for this connection.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The judgement of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<DropReason>,
    /// The direction that dropped it (the source's egress comes first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Direction>,
    pub egress: Hop,
    pub ingress: Hop,
}

impl Verdict {
    /// The hop that decided: the dropping one, else the destination's.
    pub fn deciding(&self) -> &Hop {
        match self.decided_by {
            Some(Direction::Egress) => &self.egress,
            _ => &self.ingress,
        }
    }
}

/// The policies of a cluster, ready to judge connections.
#[derive(Debug, Clone)]
pub struct Evaluator<'a> {
    pub cluster: &'a Cluster,
    pub identities: Identities,
    policies: Vec<&'a Policy>,
    pub flavor: Flavor,
    /// Each pod's identity labels, by pod index.
    pod_labels: Vec<IdentityLabels>,
}

impl<'a> Evaluator<'a> {
    /// `identities`: the cluster's identity table (see
    /// [`Cluster::identities`]).
    pub fn new(
        cluster: &'a Cluster,
        identities: Identities,
        policies: &'a [Policy],
        flavor: Flavor,
    ) -> Self {
        let mut policies: Vec<&Policy> = policies.iter().collect();
        policies.sort_by_key(|p| p.key());
        Self {
            pod_labels: (0..cluster.pods.len())
                .map(|i| cluster.identity_labels(i))
                .collect(),
            cluster,
            identities,
            policies,
            flavor,
        }
    }

    /// The identity of a party as pod `from`'s node sees it (a node
    /// address is `host` on its own node, `remote-node` elsewhere).
    pub fn identity(&self, party: Party, seen_from: Option<usize>) -> u32 {
        match party {
            Party::Pod(i) => self
                .identities
                .id_of(&self.pod_labels[i])
                .unwrap_or(identity::INIT),
            Party::Net(net) => {
                let node = seen_from.map_or("", |i| self.cluster.pods[i].node.as_str());
                self.cluster.classify(net, node).identity()
            }
        }
    }

    /// A party's identity labels (reserved ones for addresses).
    pub fn labels(&self, party: Party, seen_from: Option<usize>) -> IdentityLabels {
        match party {
            Party::Pod(i) => self.pod_labels[i].clone(),
            Party::Net(_) => {
                identity::reserved(self.identity(party, seen_from)).unwrap_or_default()
            }
        }
    }

    /// The policies, in key order.
    pub fn policies(&self) -> &[&'a Policy] {
        &self.policies
    }

    /// Whether `policy` applies to pod `pod` (its subject selects it).
    pub fn selects(&self, policy: &Policy, pod: usize) -> bool {
        let p = &self.cluster.pods[pod];
        match policy.kind {
            Kind::NetworkPolicy => {
                p.namespace == policy.namespace && self.pod_selector(&policy.subject, pod)
            }
            Kind::CiliumNetworkPolicy => policy
                .subject
                .matches_by(|k| identity::lookup(&self.pod_labels[pod], k)),
        }
    }

    /// The pods `policy` selects.
    pub fn selected(&self, policy: &Policy) -> Vec<usize> {
        (0..self.cluster.pods.len())
            .filter(|&i| self.selects(policy, i))
            .collect()
    }

    /// A NetworkPolicy pod selector on pod `pod`: all its labels
    /// (netfilter), or only those in its identity (Cilium).
    fn pod_selector(&self, sel: &Selector, pod: usize) -> bool {
        match self.flavor {
            Flavor::Netfilter => sel.matches(&self.cluster.pods[pod].labels),
            Flavor::Cilium => {
                sel.matches_by(|k| identity::lookup(&self.pod_labels[pod], &format!("k8s:{k}")))
            }
        }
    }

    fn namespace_selector(&self, sel: &Selector, pod: usize) -> bool {
        match self.flavor {
            Flavor::Netfilter => sel.matches(
                &self
                    .cluster
                    .namespace_labels(&self.cluster.pods[pod].namespace),
            ),
            Flavor::Cilium => sel.matches_by(|k| {
                identity::lookup(
                    &self.pod_labels[pod],
                    &format!("k8s:{}{k}", identity::NAMESPACE_LABELS_PREFIX),
                )
            }),
        }
    }

    /// Whether `peer` of `policy` (which applies to pod `endpoint`) is
    /// `party`; notes where the flavors differ.
    fn peer_matches(
        &self,
        policy: &Policy,
        peer: &Peer,
        endpoint: usize,
        party: Party,
        notes: &mut Vec<String>,
    ) -> bool {
        match (peer, party) {
            (Peer::Pods { namespaces, pods }, Party::Pod(q)) => {
                let ns = match namespaces {
                    Namespaces::Own(ns) => self.cluster.pods[q].namespace == *ns,
                    Namespaces::Matching(sel) => self.namespace_selector(sel, q),
                };
                ns && self.pod_selector(pods, q)
            }
            (Peer::Pods { .. }, Party::Net(_)) => false,
            (Peer::Endpoints { selector }, _) => {
                let labels = self.labels(party, Some(endpoint));
                selector.matches_by(|k| identity::lookup(&labels, k))
            }
            (Peer::Entity { entity }, _) => {
                let id = self.identity(party, Some(endpoint));
                identity::in_entity(*entity, id, &self.labels(party, Some(endpoint)))
            }
            (Peer::Cidr { cidr, except }, _) => {
                let (net, managed) = match party {
                    Party::Pod(q) => (host_net(self.cluster.pods[q].addr), Some("pod")),
                    Party::Net(n) => {
                        let node = &self.cluster.pods[endpoint].node;
                        let kind = self.cluster.classify(n, node);
                        (n, (kind != NetKind::World).then_some("node"))
                    }
                };
                if !block_contains(cidr, except, net) {
                    return false;
                }
                let cilium =
                    policy.kind == Kind::CiliumNetworkPolicy || self.flavor == Flavor::Cilium;
                match managed {
                    Some(what) if cilium => {
                        notes.push(format!(
                            "{} of {} covers this {what}'s address {net}, but Cilium's CIDR rules never select a {what} (netfilter engines would match it)",
                            cidr_name(policy),
                            policy.key()
                        ));
                        false
                    }
                    _ => true,
                }
            }
        }
    }

    /// The pods `peer` of `policy` (applying to pod `endpoint`) selects,
    /// as this flavor reads it (the netfilter datapath's peer sets).
    pub fn peer_pods(&self, policy: &Policy, peer: &Peer, endpoint: usize) -> Vec<usize> {
        (0..self.cluster.pods.len())
            .filter(|&q| self.peer_matches(policy, peer, endpoint, Party::Pod(q), &mut Vec::new()))
            .collect()
    }

    fn rule_matches(
        &self,
        policy: &Policy,
        rule: &Rule,
        endpoint: usize,
        party: Party,
        q: &Query,
        notes: &mut Vec<String>,
    ) -> bool {
        let port =
            rule.ports.is_empty() || rule.ports.iter().any(|p| p.matches(q.port, q.protocol));
        port && match &rule.peers {
            None => true,
            Some(peers) => peers
                .iter()
                .any(|peer| self.peer_matches(policy, peer, endpoint, party, notes)),
        }
    }

    /// The first rule of `section` of the policies in `selecting` that
    /// matches.
    fn first_match(
        &self,
        selecting: &[&Policy],
        section: Section,
        endpoint: usize,
        party: Party,
        q: &Query,
        notes: &mut Vec<String>,
    ) -> Option<RuleRef> {
        for policy in selecting {
            for (index, rule) in policy.rules(section).iter().enumerate() {
                if self.rule_matches(policy, rule, endpoint, party, q, notes) {
                    return Some(RuleRef {
                        policy: policy.key(),
                        section,
                        index,
                        file: policy.origin.file.clone(),
                        line: rule.line,
                    });
                }
            }
        }
        None
    }

    /// The policies selecting pod `pod` that govern direction `d`.
    pub fn selecting(&self, pod: usize, d: Direction) -> Vec<&'a Policy> {
        self.policies
            .iter()
            .copied()
            .filter(|p| p.applies.get(d) && self.selects(p, pod))
            .collect()
    }

    /// Direction `d` of pod `endpoint` for traffic with `party`.
    fn hop(&self, d: Direction, endpoint: Party, party: Party, q: &Query) -> Hop {
        let Party::Pod(e) = endpoint else {
            return Hop {
                direction: d,
                pod: None,
                selected_by: Vec::new(),
                enforced: false,
                outcome: Outcome::NoEndpoint,
                notes: Vec::new(),
            };
        };
        let selecting = self.selecting(e, d);
        let enforced = selecting.iter().any(|p| p.default_deny.get(d));
        let mut notes = Vec::new();
        let outcome = if selecting.is_empty() {
            Outcome::NotSelected
        } else if let Some(rule) =
            self.first_match(&selecting, Section::deny(d), e, party, q, &mut notes)
        {
            Outcome::Denied { rule }
        } else if let Some(rule) =
            self.first_match(&selecting, Section::allow(d), e, party, q, &mut notes)
        {
            Outcome::Allowed { rule }
        } else if !enforced {
            Outcome::NotEnforced
        } else if d == Direction::Ingress
            && matches!(party, Party::Net(n) if self.cluster.classify(n, &self.cluster.pods[e].node) == NetKind::Host)
        {
            Outcome::AllowedHost
        } else {
            Outcome::DefaultDenied
        };
        notes.dedup();
        Hop {
            direction: d,
            pod: Some(self.cluster.pods[e].name.clone()),
            selected_by: selecting.iter().map(|p| p.key()).collect(),
            enforced,
            outcome,
            notes,
        }
    }

    /// The verdict on a new connection.
    pub fn evaluate(&self, q: &Query) -> Verdict {
        let egress = self.hop(Direction::Egress, q.from, q.to, q);
        let ingress = self.hop(Direction::Ingress, q.to, q.from, q);
        let decided_by = if !egress.outcome.allowed() {
            Some(Direction::Egress)
        } else if !ingress.outcome.allowed() {
            Some(Direction::Ingress)
        } else {
            None
        };
        let drop_reason = decided_by.map(|d| {
            let hop = if d == Direction::Egress {
                &egress
            } else {
                &ingress
            };
            match hop.outcome {
                Outcome::Denied { .. } => DropReason::PolicyDeny,
                _ => DropReason::PolicyDenied,
            }
        });
        Verdict {
            allowed: decided_by.is_none(),
            drop_reason,
            decided_by,
            egress,
            ingress,
        }
    }
}

fn host_net(addr: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::from(addr)
}

/// How the policy's kind spells an address block.
fn cidr_name(policy: &Policy) -> &'static str {
    match policy.kind {
        Kind::NetworkPolicy => "an ipBlock",
        Kind::CiliumNetworkPolicy => "a CIDR rule",
    }
}

/// Whether every address of `net` is in `cidr` and none in `except`.
pub fn block_contains(cidr: &IpNet, except: &[IpNet], net: Ipv4Net) -> bool {
    let IpNet::V4(cidr) = cidr else {
        return false;
    };
    cidr.contains(&net)
        && !except.iter().any(|x| match x {
            IpNet::V4(x) => x.contains(&net.network()) || net.contains(&x.network()),
            IpNet::V6(_) => false,
        })
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
