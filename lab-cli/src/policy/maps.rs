//! What Cilium's datapath would hold for the policies, as pure data: the
//! ipcache of each node (address block → identity) and each endpoint's
//! policy map (peer identity, direction, protocol, port → allow or deny),
//! and what changes between two states of the cluster. The eBPF datapath
//! writes these; the demonstrations compare them ("a new pod with known
//! labels: one ipcache entry, no policy entry").

use std::collections::{BTreeMap, BTreeSet};

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

use super::{
    eval::Evaluator,
    identity::{self, IdentityLabels},
    model::{Direction, Directions, Namespaces, Peer, Protocol, Rule, Section},
};

/// The first identity Cilium gives a CIDR (a node-local identity,
/// `1 << 24` and up).
pub const FIRST_CIDR_IDENTITY: u32 = 1 << 24;

/// One policy map entry. `identity` 0 is Cilium's wildcard (any peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MapEntry {
    pub direction: Direction,
    pub identity: u32,
    pub protocol: Protocol,
    /// `None`: every port.
    pub port: Option<u16>,
    pub end_port: Option<u16>,
    pub deny: bool,
}

/// An endpoint's policy: whether each direction is enforced, and its map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    pub enforced: Directions,
    pub entries: BTreeSet<MapEntry>,
}

/// Cilium's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct View {
    /// Workload identities in use and the CIDR identities of the
    /// policies' blocks.
    pub identities: BTreeMap<u32, IdentityLabels>,
    /// Per node: block → identity.
    pub ipcache: BTreeMap<String, BTreeMap<Ipv4Net, u32>>,
    /// Per pod (by name).
    pub endpoints: BTreeMap<String, EndpointPolicy>,
}

/// `cidr` without the blocks of `except`, as the fewest prefixes.
pub fn subtract(cidr: Ipv4Net, except: &[Ipv4Net]) -> Vec<Ipv4Net> {
    if except.iter().any(|x| x.contains(&cidr)) {
        return Vec::new();
    }
    if !except.iter().any(|x| cidr.contains(&x.network())) {
        return vec![cidr];
    }
    match cidr.subnets(cidr.prefix_len() + 1) {
        Ok(halves) => halves.flat_map(|h| subtract(h, except)).collect(),
        Err(_) => Vec::new(),
    }
}

/// The IPv4 blocks a CIDR peer stands for.
fn blocks(peer: &Peer) -> Vec<Ipv4Net> {
    let Peer::Cidr {
        cidr: IpNet::V4(cidr),
        except,
    } = peer
    else {
        return Vec::new();
    };
    let except: Vec<Ipv4Net> = except
        .iter()
        .filter_map(|x| match x {
            IpNet::V4(x) => Some(*x),
            IpNet::V6(_) => None,
        })
        .collect();
    subtract(*cidr, &except)
}

impl Evaluator<'_> {
    /// Every CIDR block of the policies and its identity (`0.0.0.0/0` is
    /// the world), in address order.
    fn cidr_identities(&self) -> BTreeMap<Ipv4Net, u32> {
        let mut all: BTreeSet<Ipv4Net> = BTreeSet::new();
        for p in self.policies() {
            for s in [
                Section::Ingress,
                Section::Egress,
                Section::IngressDeny,
                Section::EgressDeny,
            ] {
                for r in p.rules(s) {
                    for peer in r.peers.iter().flatten() {
                        all.extend(blocks(peer));
                    }
                }
            }
        }
        let mut next = FIRST_CIDR_IDENTITY;
        all.into_iter()
            .map(|b| {
                if b.prefix_len() == 0 {
                    (b, identity::WORLD)
                } else {
                    next += 1;
                    (b, next)
                }
            })
            .collect()
    }

    /// The identities a peer selects, Cilium's way.
    fn peer_identities(
        &self,
        peer: &Peer,
        candidates: &[(u32, IdentityLabels)],
        cidrs: &BTreeMap<Ipv4Net, u32>,
    ) -> BTreeSet<u32> {
        match peer {
            Peer::Cidr { .. } => blocks(peer)
                .iter()
                .filter_map(|b| cidrs.get(b).copied())
                .collect(),
            Peer::Entity { entity } => candidates
                .iter()
                .filter(|(id, l)| identity::in_entity(*entity, *id, l))
                .map(|(id, _)| *id)
                .collect(),
            Peer::Endpoints { selector } => candidates
                .iter()
                .filter(|(_, l)| selector.matches_by(|k| identity::lookup(l, k)))
                .map(|(id, _)| *id)
                .collect(),
            Peer::Pods { namespaces, pods } => candidates
                .iter()
                .filter(|(_, l)| {
                    let ns = identity::lookup(l, &format!("k8s:{}", identity::NAMESPACE_LABEL));
                    let in_ns = match namespaces {
                        Namespaces::Own(own) => ns == Some(own.as_str()),
                        Namespaces::Matching(sel) => {
                            ns.is_some()
                                && sel.matches_by(|k| {
                                    identity::lookup(
                                        l,
                                        &format!("k8s:{}{k}", identity::NAMESPACE_LABELS_PREFIX),
                                    )
                                })
                        }
                    };
                    in_ns && pods.matches_by(|k| identity::lookup(l, &format!("k8s:{k}")))
                })
                .map(|(id, _)| *id)
                .collect(),
        }
    }

    fn rule_entries(
        &self,
        rule: &Rule,
        direction: Direction,
        deny: bool,
        candidates: &[(u32, IdentityLabels)],
        cidrs: &BTreeMap<Ipv4Net, u32>,
        out: &mut BTreeSet<MapEntry>,
    ) {
        let ids: BTreeSet<u32> = match &rule.peers {
            None => BTreeSet::from([0]),
            Some(peers) => peers
                .iter()
                .flat_map(|p| self.peer_identities(p, candidates, cidrs))
                .collect(),
        };
        let ports: Vec<(Protocol, Option<u16>, Option<u16>)> = if rule.ports.is_empty() {
            vec![(Protocol::Any, None, None)]
        } else {
            rule.ports
                .iter()
                .map(|p| (p.protocol, p.port, p.end_port))
                .collect()
        };
        for id in ids {
            for (protocol, port, end_port) in &ports {
                out.insert(MapEntry {
                    direction,
                    identity: id,
                    protocol: *protocol,
                    port: *port,
                    end_port: *end_port,
                    deny,
                });
            }
        }
    }

    /// Every identity a peer may select: the reserved ones, then the
    /// workloads'.
    fn candidates(&self) -> Vec<(u32, IdentityLabels)> {
        let mut candidates: Vec<(u32, IdentityLabels)> = identity::RESERVED
            .iter()
            .filter_map(|(id, _)| Some((*id, identity::reserved(*id)?)))
            .collect();
        candidates.extend(self.identities.by_id.iter().map(|(id, l)| (*id, l.clone())));
        candidates
    }

    /// Which policies put each entry of pod `pod`'s policy map (as
    /// `policy::eval`'s keys, `default/rule1`; several when policies
    /// overlap). The allow-localhost entry is no policy's: it is absent.
    pub fn entry_policies(&self, pod: usize) -> BTreeMap<MapEntry, BTreeSet<String>> {
        let cidrs = self.cidr_identities();
        let candidates = self.candidates();
        let mut out: BTreeMap<MapEntry, BTreeSet<String>> = BTreeMap::new();
        for d in [Direction::Ingress, Direction::Egress] {
            for p in self.selecting(pod, d) {
                let mut entries = BTreeSet::new();
                for (section, deny) in [(Section::allow(d), false), (Section::deny(d), true)] {
                    for r in p.rules(section) {
                        self.rule_entries(r, d, deny, &candidates, &cidrs, &mut entries);
                    }
                }
                for e in entries {
                    out.entry(e).or_default().insert(p.key().to_string());
                }
            }
        }
        out
    }

    /// Cilium's view: ipcaches and policy maps (read Cilium's way whatever
    /// the evaluator's flavor).
    pub fn view(&self) -> View {
        let cidrs = self.cidr_identities();
        let candidates = self.candidates();
        let mut identities: BTreeMap<u32, IdentityLabels> = self.identities.by_id.clone();
        for (b, id) in &cidrs {
            if *id != identity::WORLD {
                identities.insert(
                    *id,
                    IdentityLabels::from([(format!("cidr:{b}"), String::new())]),
                );
            }
        }
        let mut ipcache = BTreeMap::new();
        for node in &self.cluster.nodes {
            let mut cache: BTreeMap<Ipv4Net, u32> = cidrs.clone();
            cache.insert(Ipv4Net::default(), identity::WORLD);
            for n in &self.cluster.nodes {
                let id = if n.name == node.name {
                    identity::HOST
                } else {
                    identity::REMOTE_NODE
                };
                cache.insert(Ipv4Net::from(n.addr), id);
            }
            for (i, p) in self.cluster.pods.iter().enumerate() {
                cache.insert(
                    Ipv4Net::from(p.addr),
                    self.identity(super::eval::Party::Pod(i), None),
                );
            }
            ipcache.insert(node.name.clone(), cache);
        }
        let mut endpoints = BTreeMap::new();
        for (i, pod) in self.cluster.pods.iter().enumerate() {
            let mut ep = EndpointPolicy::default();
            for d in [Direction::Ingress, Direction::Egress] {
                let selecting = self.selecting(i, d);
                let enforced = selecting.iter().any(|p| p.default_deny.get(d));
                match d {
                    Direction::Ingress => ep.enforced.ingress = enforced,
                    Direction::Egress => ep.enforced.egress = enforced,
                }
                for p in &selecting {
                    for (section, deny) in [(Section::allow(d), false), (Section::deny(d), true)] {
                        for r in p.rules(section) {
                            self.rule_entries(r, d, deny, &candidates, &cidrs, &mut ep.entries);
                        }
                    }
                }
                if d == Direction::Ingress && enforced {
                    // allow-localhost: the node reaches its pods.
                    ep.entries.insert(MapEntry {
                        direction: d,
                        identity: identity::HOST,
                        protocol: Protocol::Any,
                        port: None,
                        end_port: None,
                        deny: false,
                    });
                }
            }
            endpoints.insert(pod.name.clone(), ep);
        }
        View {
            identities,
            ipcache,
            endpoints,
        }
    }
}

/// One ipcache change on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpcacheChange {
    pub node: String,
    pub block: Ipv4Net,
    pub before: Option<u32>,
    pub after: Option<u32>,
}

/// What changed between two views.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ViewChange {
    pub allocated: Vec<u32>,
    pub released: Vec<u32>,
    pub ipcache: Vec<IpcacheChange>,
    /// Endpoints that came or went (their maps are made or removed whole).
    pub endpoints_added: Vec<String>,
    pub endpoints_removed: Vec<String>,
    /// Entries added to and removed from the maps of endpoints in both.
    pub entries_added: Vec<(String, MapEntry)>,
    pub entries_removed: Vec<(String, MapEntry)>,
}

impl View {
    pub fn diff(&self, after: &View) -> ViewChange {
        let mut c = ViewChange {
            allocated: after
                .identities
                .keys()
                .filter(|id| !self.identities.contains_key(id))
                .copied()
                .collect(),
            released: self
                .identities
                .keys()
                .filter(|id| !after.identities.contains_key(id))
                .copied()
                .collect(),
            ..ViewChange::default()
        };
        let nodes: BTreeSet<&String> = self.ipcache.keys().chain(after.ipcache.keys()).collect();
        let empty = BTreeMap::new();
        for node in nodes {
            let (b, a) = (
                self.ipcache.get(node).unwrap_or(&empty),
                after.ipcache.get(node).unwrap_or(&empty),
            );
            let blocks: BTreeSet<&Ipv4Net> = b.keys().chain(a.keys()).collect();
            for block in blocks {
                let (before, now) = (b.get(block).copied(), a.get(block).copied());
                if before != now {
                    c.ipcache.push(IpcacheChange {
                        node: node.clone(),
                        block: *block,
                        before,
                        after: now,
                    });
                }
            }
        }
        for (name, ep) in &after.endpoints {
            match self.endpoints.get(name) {
                None => c.endpoints_added.push(name.clone()),
                Some(old) => {
                    c.entries_added.extend(
                        ep.entries
                            .difference(&old.entries)
                            .map(|e| (name.clone(), *e)),
                    );
                    c.entries_removed.extend(
                        old.entries
                            .difference(&ep.entries)
                            .map(|e| (name.clone(), *e)),
                    );
                }
            }
        }
        c.endpoints_removed = self
            .endpoints
            .keys()
            .filter(|n| !after.endpoints.contains_key(*n))
            .cloned()
            .collect();
        c
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::policy::{
        eval::{Cluster, Flavor, Namespace, Node, Pod},
        identity::Identities,
        model::{Labels, Policy},
        yaml::parse,
    };

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pod(name: &str, l: &[(&str, &str)], node: &str, addr: [u8; 4]) -> Pod {
        Pod {
            name: name.into(),
            namespace: "default".into(),
            labels: labels(l),
            addr: Ipv4Addr::from(addr),
            node: node.into(),
            service_account: "default".into(),
        }
    }

    const DS: &[(&str, &str)] = &[("org", "empire"), ("class", "deathstar")];

    fn starwars() -> Cluster {
        Cluster {
            namespaces: vec![Namespace::named("default")],
            pods: vec![
                pod("ds1", DS, "node1", [10, 244, 1, 2]),
                pod("ds2", DS, "node2", [10, 244, 2, 2]),
                pod(
                    "tf",
                    &[("org", "empire"), ("class", "tiefighter")],
                    "node1",
                    [10, 244, 1, 3],
                ),
                pod(
                    "xw",
                    &[("org", "alliance"), ("class", "xwing")],
                    "node2",
                    [10, 244, 2, 3],
                ),
            ],
            nodes: vec![
                Node {
                    name: "node1".into(),
                    addr: Ipv4Addr::new(172, 18, 0, 2),
                },
                Node {
                    name: "node2".into(),
                    addr: Ipv4Addr::new(172, 18, 0, 3),
                },
            ],
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
  - fromCIDRSet:
    - {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}
";

    fn view(cluster: &Cluster, previous: &Identities, policies: &[Policy]) -> (View, Identities) {
        let (ids, _) = cluster.identities(previous);
        let v = Evaluator::new(cluster, ids.clone(), policies, Flavor::Cilium).view();
        (v, ids)
    }

    fn entry(identity: u32, protocol: Protocol, port: Option<u16>) -> MapEntry {
        MapEntry {
            direction: Direction::Ingress,
            identity,
            protocol,
            port,
            end_port: None,
            deny: false,
        }
    }

    #[test]
    fn rule1_puts_the_empire_s_identities_in_the_deathstars_maps() {
        let cluster = starwars();
        let policies = parse("t.yaml", RULE1).unwrap();
        let (v, _) = view(&cluster, &Identities::default(), &policies);
        let cidr = FIRST_CIDR_IDENTITY + 1;
        let want = BTreeSet::from([
            entry(256, Protocol::Tcp, Some(80)),
            entry(257, Protocol::Tcp, Some(80)),
            entry(cidr, Protocol::Any, None),
            entry(identity::HOST, Protocol::Any, None),
        ]);
        assert_eq!(v.endpoints["ds1"].entries, want);
        assert_eq!(v.endpoints["ds2"].entries, want);
        assert!(v.endpoints["ds1"].enforced.ingress && !v.endpoints["ds1"].enforced.egress);
        assert_eq!(v.endpoints["xw"], EndpointPolicy::default());
        let node1 = &v.ipcache["node1"];
        let at = |s: &str| node1[&s.parse::<Ipv4Net>().unwrap()];
        assert_eq!(
            [
                at("0.0.0.0/0"),
                at("172.18.0.2/32"),
                at("172.18.0.3/32"),
                at("10.244.1.2/32"),
                at("10.244.2.2/32"),
                at("10.244.2.3/32"),
                at("203.0.113.0/25"),
            ],
            [2, 1, 6, 256, 256, 258, cidr]
        );
        assert_eq!(v.ipcache["node2"][&"172.18.0.2/32".parse().unwrap()], 6);
        assert_eq!(display_cidr(&v, cidr), ["cidr:203.0.113.0/25".to_owned()]);
    }

    fn display_cidr(v: &View, id: u32) -> Vec<String> {
        identity::display(&v.identities[&id])
    }

    #[test]
    fn a_pod_with_known_labels_is_one_ipcache_entry_and_no_policy_entry() {
        let policies = parse("t.yaml", RULE1).unwrap();
        let before = starwars();
        let (v0, ids) = view(&before, &Identities::default(), &policies);
        let mut after = before.clone();
        after.pods.push(pod("ds3", DS, "node1", [10, 244, 1, 4]));
        let (v1, _) = view(&after, &ids, &policies);
        let c = v0.diff(&v1);
        assert_eq!((c.allocated.clone(), c.released.clone()), (vec![], vec![]));
        assert_eq!(
            c.ipcache,
            ["node1", "node2"].map(|n| IpcacheChange {
                node: n.into(),
                block: "10.244.1.4/32".parse().unwrap(),
                before: None,
                after: Some(256),
            })
        );
        assert_eq!(c.endpoints_added, ["ds3"]);
        assert!(
            c.entries_added.is_empty() && c.entries_removed.is_empty(),
            "{c:?}"
        );
    }

    #[test]
    fn a_relabel_into_a_new_set_allocates_and_adds_entries_where_selected() {
        let policies = parse("t.yaml", RULE1).unwrap();
        let before = starwars();
        let (v0, ids) = view(&before, &Identities::default(), &policies);
        let mut after = before.clone();
        after.pods[3].labels.insert("org".into(), "empire".into());
        let (v1, _) = view(&after, &ids, &policies);
        let c = v0.diff(&v1);
        assert_eq!(
            (c.allocated.clone(), c.released.clone()),
            (vec![259], vec![258])
        );
        assert_eq!(
            c.ipcache
                .iter()
                .map(|i| (i.before, i.after))
                .collect::<Vec<_>>(),
            [(Some(258), Some(259)), (Some(258), Some(259))]
        );
        assert_eq!(
            c.entries_added,
            [
                ("ds1".to_owned(), entry(259, Protocol::Tcp, Some(80))),
                ("ds2".to_owned(), entry(259, Protocol::Tcp, Some(80))),
            ]
        );
        assert!(c.entries_removed.is_empty() && c.endpoints_added.is_empty());
    }

    #[test]
    fn a_block_minus_its_holes_is_the_fewest_prefixes() {
        let n = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(
            subtract(n("10.0.0.0/8"), &[n("10.96.0.0/12")]),
            [
                n("10.0.0.0/10"),
                n("10.64.0.0/11"),
                n("10.112.0.0/12"),
                n("10.128.0.0/9")
            ]
        );
        assert_eq!(subtract(n("10.0.0.0/8"), &[n("0.0.0.0/0")]), []);
        assert_eq!(
            subtract(n("10.0.0.0/8"), &[n("192.168.0.0/16")]),
            [n("10.0.0.0/8")]
        );
    }
}
