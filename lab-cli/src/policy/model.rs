//! The policy model: Kubernetes NetworkPolicy and Cilium's
//! CiliumNetworkPolicy (L3/L4) as one set of types, as the YAML reader
//! leaves them and the lab's record keeps them.
//!
//! Both kinds become a [`Policy`]: a subject (the pods of its namespace it
//! selects), allow rules per direction, Cilium's deny rules, and in which
//! directions selecting a pod makes it default-deny. What differs between
//! the kinds stays visible where it matters: a NetworkPolicy peer selects
//! pods and namespaces by their Kubernetes labels ([`Peer::Pods`]), a
//! Cilium peer selects security identities by their labels
//! ([`Peer::Endpoints`], keys carry a source: `k8s:app`, `any:app`).

use std::{collections::BTreeMap, fmt};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Kubernetes labels: key to value.
pub type Labels = BTreeMap<String, String>;

/// The namespace a policy or pod is in when none is given, as kubectl's.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Which API a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// `cilium.io/v2` CiliumNetworkPolicy.
    CiliumNetworkPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::CiliumNetworkPolicy => "cilium.io/v2",
        }
    }

    /// kubectl's short name (`kubectl get netpol`, `kubectl get cnp`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "netpol",
            Kind::CiliumNetworkPolicy => "cnp",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A direction of traffic, seen from the pod whose policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directions {
    pub ingress: bool,
    pub egress: bool,
}

impl Directions {
    pub fn get(self, d: Direction) -> bool {
        match d {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }
}

/// A label selector's operator (`matchExpressions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One `matchExpressions` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A Kubernetes label selector: every `matchLabels` pair and every
/// requirement must hold (an empty selector selects everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether a key is named (in `matchLabels` or an expression).
    pub fn mentions(&self, key: impl Fn(&str) -> bool) -> bool {
        self.match_labels.keys().any(|k| key(k))
            || self.match_expressions.iter().any(|r| key(&r.key))
    }
}

impl fmt::Display for Selector {
    /// `org=empire,class in (deathstar),!debug`, as kubectl's `-l`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("{} (all)");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// The namespaces a NetworkPolicy peer's pods may be in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Namespaces {
    /// No `namespaceSelector`: the policy's own namespace.
    Own(String),
    /// A `namespaceSelector`, matched against namespaces' labels.
    Matching(Selector),
}

/// Cilium's entities: peers named by what they are, not by labels or
/// addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    /// Everything outside the cluster (reserved identity 2).
    World,
    /// The node the endpoint runs on (identity 1).
    Host,
    /// The other nodes of the cluster (identity 6).
    RemoteNode,
    /// Every endpoint and node of the cluster.
    Cluster,
    /// Endpoints whose identity is not resolved yet (identity 5).
    Init,
    /// Cilium's health endpoints (identity 4).
    Health,
    /// Pods Cilium does not manage (identity 3).
    Unmanaged,
    /// The Kubernetes API server (identity 7).
    KubeApiserver,
    /// Cilium's ingress proxy (identity 8).
    Ingress,
    /// Everything.
    All,
}

impl Entity {
    pub const ALL: [Entity; 10] = [
        Entity::World,
        Entity::Host,
        Entity::RemoteNode,
        Entity::Cluster,
        Entity::Init,
        Entity::Health,
        Entity::Unmanaged,
        Entity::KubeApiserver,
        Entity::Ingress,
        Entity::All,
    ];

    /// As a policy spells it (`toEntities: [world]`).
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::World => "world",
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::Cluster => "cluster",
            Entity::Init => "init",
            Entity::Health => "health",
            Entity::Unmanaged => "unmanaged",
            Entity::KubeApiserver => "kube-apiserver",
            Entity::Ingress => "ingress",
            Entity::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Who a rule allows (or denies) on the other side of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Peer {
    /// A NetworkPolicy `podSelector` and/or `namespaceSelector`: pods whose
    /// labels match `pods` in namespaces `namespaces` (both given: AND).
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    /// A Cilium `fromEndpoints`/`toEndpoints` selector, matched against
    /// identity labels (`k8s:org=empire`); the policy's namespace is
    /// already part of it unless it names a namespace itself.
    Endpoints { selector: Selector },
    /// An address block with holes (`ipBlock`, `fromCIDR`, `toCIDRSet`).
    Cidr {
        cidr: IpNet,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<IpNet>,
    },
    /// A Cilium entity (`fromEntities`, `toEntities`).
    Entity { entity: Entity },
}

/// A transport protocol of a port rule (`Any`: Cilium's `ANY`, the
/// default there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Any,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Any => "ANY",
        }
    }

    /// Lower case, as `--port 80/tcp` spells it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Any => "any",
        }
    }

    pub fn matches(self, proto: Protocol) -> bool {
        self == Protocol::Any || self == proto
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port item: a protocol and a port or range (`None`: every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

impl PortRule {
    pub fn matches(&self, port: u16, proto: Protocol) -> bool {
        if !self.protocol.matches(proto) {
            return false;
        }
        match self.port {
            None => true,
            Some(lo) => (lo..=self.end_port.unwrap_or(lo)).contains(&port),
        }
    }
}

impl fmt::Display for PortRule {
    /// `80/TCP`, `8000-8080/UDP`, `any/TCP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.end_port) {
            (None, _) => write!(f, "any/{}", self.protocol),
            (Some(p), Some(e)) if e != p => write!(f, "{p}-{e}/{}", self.protocol),
            (Some(p), _) => write!(f, "{p}/{}", self.protocol),
        }
    }
}

/// One rule of a direction: traffic from (or to) any of `peers` on any of
/// `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `None`: every peer (no `from`/`to`, or an empty one, in a
    /// NetworkPolicy; only `toPorts` in a Cilium rule). `Some` and empty:
    /// no peer at all (Cilium's empty rule `{}`, which only turns default
    /// deny on).
    pub peers: Option<Vec<Peer>>,
    /// Empty: every port of every protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRule>,
    /// The line of the rule in its file.
    pub line: u32,
}

/// Which list of a policy a rule is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Section {
    Ingress,
    Egress,
    IngressDeny,
    EgressDeny,
}

impl Section {
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Ingress => "ingress",
            Section::Egress => "egress",
            Section::IngressDeny => "ingressDeny",
            Section::EgressDeny => "egressDeny",
        }
    }

    pub fn allow(d: Direction) -> Self {
        match d {
            Direction::Ingress => Section::Ingress,
            Direction::Egress => Section::Egress,
        }
    }

    pub fn deny(d: Direction) -> Self {
        match d {
            Direction::Ingress => Section::IngressDeny,
            Direction::Egress => Section::EgressDeny,
        }
    }
}

/// A policy's identity in the lab: kind, namespace and name (as kubectl
/// tells objects apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyKey {
    /// `default/rule1`, the name `policy list` prints and `policy delete`
    /// takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a policy was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub file: String,
    /// The line its document starts on.
    pub line: u32,
}

/// One policy, of either kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The pods of `namespace` it applies to: a NetworkPolicy's
    /// `podSelector` (pod labels), a Cilium `endpointSelector` (identity
    /// labels, the namespace folded in).
    pub subject: Selector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Cilium only: what is denied whatever else allows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_deny: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_deny: Vec<Rule>,
    /// The directions this policy governs for the pods it selects (a
    /// NetworkPolicy's `policyTypes`; a Cilium policy's directions with
    /// rules).
    pub applies: Directions,
    /// The directions in which a selected pod becomes default-deny (as
    /// `applies`, or Cilium's `enableDefaultDeny`).
    pub default_deny: Directions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub origin: Origin,
}

impl Policy {
    pub fn key(&self) -> PolicyKey {
        PolicyKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn rules(&self, section: Section) -> &[Rule] {
        match section {
            Section::Ingress => &self.ingress,
            Section::Egress => &self.egress,
            Section::IngressDeny => &self.ingress_deny,
            Section::EgressDeny => &self.egress_deny,
        }
    }

    /// The same policy, whatever file and lines it came from (what
    /// `apply` compares to say `unchanged`).
    pub fn same_as(&self, other: &Policy) -> bool {
        let strip = |p: &Policy| {
            let mut p = p.clone();
            p.origin = Origin {
                file: String::new(),
                line: 0,
            };
            for s in [
                Section::Ingress,
                Section::Egress,
                Section::IngressDeny,
                Section::EgressDeny,
            ] {
                let rules = match s {
                    Section::Ingress => &mut p.ingress,
                    Section::Egress => &mut p.egress,
                    Section::IngressDeny => &mut p.ingress_deny,
                    Section::EgressDeny => &mut p.egress_deny,
                };
                for r in rules {
                    r.line = 0;
                }
            }
            p
        };
        strip(self) == strip(other)
    }
}
