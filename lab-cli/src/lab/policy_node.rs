//! Network policy on a Kubernetes node (kind, any containerd node):
//! `labctl policy ... --node` enforces and explains identity-based policy
//! for the pods the node's container runtime runs, with no lab.
//!
//! The cluster comes from the runtime instead of a lab record: each pod's
//! name, Kubernetes namespace and labels from CRI (`ListPodSandbox`: the
//! sandbox's labels are the pod's, with kubelet's `io.kubernetes.*` ones
//! left out), its address from `PodSandboxStatus`, read through the
//! process's one resolver (`lab::names`); its host-side veth from the
//! node's routes (the CNI's /32 route to the pod, as ptp and kindnet set
//! it). The node's policies, its policy mode and the identities allocated
//! are kept in a node-scoped record (`/run/labctl/node/policy.json`,
//! through `kernel::safefile` like the labs'). The same
//! `policy::datapath` enforces it: one node, its pods.
//!
//! A node knows its own pods only (labctl does not ask the API server):
//! pods of other nodes are `world` to its policies, as are addresses
//! outside the node.
//!
//! Pods come and go without labctl: every node-scoped policy command
//! reads the runtime's pods again and enforces the record on them before
//! it does anything else, so a new pod, one gone, or one created again
//! with other labels (a new identity) is enforced at the next command.

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{
    LabError,
    names::runtime_pods_now,
    policy::{self as lab_policy, Applied, Enforced, Judged, Target, Trace},
    policy_bpf::{MapView, Seen, map_of},
    state::Records,
};
use crate::{
    kernel::{
        cri::{self, Sandbox},
        netns::NetNs,
        rtnl::Rtnl,
    },
    policy::{
        Cluster, Evaluator, Party, PolicyError, PolicyMode,
        datapath::{self, Nodes, PodPort, Want},
        eval::{Namespace, Node, Pod},
        identity::Identities,
        model::{Kind, Labels, Policy, PolicyKey, Protocol},
    },
};

/// The node's record: `/run/labctl/node/policy.json`.
const RECORDS: Records = Records::new("node");
const RECORD: &str = "policy";

/// The label prefix kubelet adds to a sandbox's labels (not the pod's).
const KUBELET_LABELS: &str = "io.kubernetes.";

/// The namespaces every cluster has.
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// A pod's service account is not in its sandbox: Cilium's label for it
/// says `default`.
const SERVICE_ACCOUNT: &str = "default";

/// What the node keeps between commands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Set by the first `policy apply --node` (`--policy-mode`, ebpf by
    /// default).
    pub policy_mode: Option<PolicyMode>,
    pub policies: Vec<Policy>,
    /// The identities as last allocated (kept so that numbers stay).
    pub identities: Option<Identities>,
}

/// The node now: its name, record, and pods as the runtime says.
pub struct NodeScope {
    pub node: String,
    pub record: NodeRecord,
    pub pods: Vec<Sandbox>,
    pub cluster: Cluster,
    ns: NetNs,
}

/// The node's name (its hostname, as kind names nodes: `kind-worker`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// A pod's Kubernetes labels: its sandbox's, kubelet's own left out.
pub fn pod_labels(s: &Sandbox) -> Labels {
    s.labels
        .iter()
        .filter(|(k, _)| !k.starts_with(KUBELET_LABELS))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ipv4(s: &Sandbox) -> Option<Ipv4Addr> {
    s.ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    })
}

/// Whether the commands act on the node when no `--lab` is given: no lab
/// is up here and the container runtime answers.
pub fn implied() -> bool {
    matches!(super::Lab::all(), Ok(labs) if labs.is_empty()) && cri::version(cri::socket()).is_ok()
}

/// Whether labctl can work on this node's pods: the runtime answers.
fn check_runtime() -> Result<(), LabError> {
    cri::version(cri::socket())
        .map(drop)
        .map_err(|e| PolicyError::NoRuntime(e.to_string()).into())
}

impl NodeScope {
    /// Reads the record and the runtime's pods (fresh: read after this
    /// call).
    pub fn read() -> Result<Self, LabError> {
        check_runtime()?;
        let record: NodeRecord = RECORDS.load(RECORD)?.unwrap_or_default();
        let node = hostname();
        let ns = NetNs::at(&node, Path::new("/proc/self/ns/net"));
        let mut pods = runtime_pods_now();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let node_addr = node_addr(&ns, &pods);
        let mut namespaces: BTreeSet<String> =
            BUILTIN_NAMESPACES.iter().map(|s| (*s).to_owned()).collect();
        namespaces.extend(pods.iter().map(|p| p.namespace.clone()));
        namespaces.extend(record.policies.iter().map(|p| p.namespace.clone()));
        let cluster = Cluster {
            namespaces: namespaces.iter().map(|n| Namespace::named(n)).collect(),
            pods: pods
                .iter()
                .filter_map(|s| {
                    Some(Pod {
                        name: format!("{}/{}", s.namespace, s.name),
                        namespace: s.namespace.clone(),
                        labels: pod_labels(s),
                        addr: ipv4(s)?,
                        node: node.clone(),
                        service_account: SERVICE_ACCOUNT.to_owned(),
                    })
                })
                .collect(),
            nodes: vec![Node {
                name: node.clone(),
                addr: node_addr,
            }],
        };
        Ok(Self {
            node,
            record,
            pods,
            cluster,
            ns,
        })
    }

    /// The mode the node enforces with.
    pub fn mode(&self) -> PolicyMode {
        self.record.policy_mode.unwrap_or(PolicyMode::Ebpf)
    }

    /// The identities now: the recorded table brought up to date with
    /// the pods' labels.
    pub fn identities(&self) -> Identities {
        self.cluster
            .identities(&self.record.identities.clone().unwrap_or_default())
            .0
    }

    /// ``node `kind-worker` `` for errors.
    pub fn shown(&self) -> String {
        format!("node `{}`", self.node)
    }

    /// Where the datapath works: this node, its pods with their veths
    /// (a pod whose veth is not found is left out: its traffic is not
    /// filtered, and `policy endpoints` does not list it).
    pub fn nodes(&self) -> Result<Nodes, LabError> {
        let veths = pod_veths(&self.ns)?;
        let pods = self
            .cluster
            .pods
            .iter()
            .filter_map(|p| {
                Some(PodPort {
                    name: p.name.clone(),
                    addr: p.addr,
                    veth: veths
                        .iter()
                        .find(|(a, _)| *a == p.addr)
                        .map(|(_, v)| v.clone())?,
                })
            })
            .collect();
        Ok(Nodes {
            lab: self.node.clone(),
            nodes: vec![datapath::Node {
                name: self.node.clone(),
                ns: self.ns.handle(),
                pods,
            }],
        })
    }

    /// An evaluator of the node's policies.
    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator::new(
            &self.cluster,
            self.identities(),
            &self.record.policies,
            self.mode().flavor(),
        )
    }

    /// Enforces the record on the node's pods now (`dry_run`: plans
    /// only). A record with no policy enforces nothing (and writes
    /// nothing).
    pub fn enforce(&self, dry_run: bool) -> Result<Enforced, LabError> {
        let mode = self.mode();
        let nodes = self.nodes()?;
        let recorded = Enforced {
            policy_mode: Some(mode),
            enforced: false,
            plan: None,
            nodes: 1,
            dry_run,
        };
        if self.record.policies.is_empty() {
            return Ok(recorded);
        }
        let dp = datapath::datapath(mode, nodes);
        dp.check()?;
        if !dry_run {
            dp.install()?;
        }
        let ids = self.identities();
        let planned = dp.plan(&Want {
            cluster: &self.cluster,
            identities: &ids,
            policies: &self.record.policies,
        })?;
        if !dry_run {
            dp.apply(&planned)?;
        }
        Ok(Enforced {
            enforced: true,
            plan: Some(planned.shown()),
            ..recorded
        })
    }

    /// Removes what the node's datapath wrote (pins, programs, tables).
    fn teardown(&self, mode: PolicyMode) -> Result<(), LabError> {
        let dp = datapath::datapath(mode, self.nodes()?);
        dp.teardown()?;
        Ok(())
    }

    /// Saves the record, identities as allocated now.
    fn save(&mut self) -> Result<(), LabError> {
        self.record.identities = Some(self.identities());
        RECORDS.save(RECORD, &self.record)?;
        Ok(())
    }

    /// Enforces the record as it is in memory and saves it once the node
    /// holds it; on failure the node is set back to `before`.
    fn enforce_and_save(
        &mut self,
        before: NodeRecord,
        dry_run: bool,
    ) -> Result<Enforced, LabError> {
        match self.enforce(dry_run) {
            Ok(done) => {
                if !dry_run {
                    self.save()?;
                }
                Ok(done)
            }
            Err(e) => {
                let new = std::mem::replace(&mut self.record, before);
                let restored = match self.enforce(false) {
                    Ok(_) => "nothing was recorded, and the node holds the previous policies again"
                        .to_owned(),
                    Err(e2) => format!(
                        "nothing was recorded, and setting the previous policies back failed too ({e2}): fix the cause and run the command again, or `labctl policy delete --node --all`"
                    ),
                };
                self.record = new;
                Err(LabError::NotEnforced {
                    source: Box::new(e),
                    restored,
                })
            }
        }
    }
}

/// The node's address: the first IPv4 address of a link that is no pod's
/// host-side veth (nor loopback).
fn node_addr(ns: &NetNs, pods: &[Sandbox]) -> Ipv4Addr {
    let veths: Vec<String> = pod_veths(ns)
        .map(|v| {
            v.into_iter()
                .filter(|(a, _)| pods.iter().any(|p| ipv4(p) == Some(*a)))
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    Rtnl::open(ns)
        .and_then(|r| r.links())
        .map(|links| {
            links
                .iter()
                .filter(|l| l.name != "lo" && !veths.contains(&l.name))
                .flat_map(|l| &l.addresses)
                .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
                .find(|a| !a.is_loopback())
        })
        .ok()
        .flatten()
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// Each /32 route's address and device in the node: where the CNI plugged
/// a pod in (ptp, kindnet: `10.244.1.5 dev vethXXXX scope host`).
fn pod_veths(ns: &NetNs) -> Result<Vec<(Ipv4Addr, String)>, LabError> {
    let routes = Rtnl::open(ns)
        .and_then(|r| r.routes())
        .map_err(LabError::from)?;
    Ok(routes
        .into_iter()
        .filter_map(|r| {
            let net: Ipv4Net = r.dst.parse().ok()?;
            (net.prefix_len() == 32).then_some((net.addr(), r.dev?))
        })
        .collect())
}

/// `policy apply --node`: records `policies` for the node and enforces
/// them on its pods (`mode`: the first apply's choice; another one
/// later is refused while policies are recorded).
pub fn apply(
    policies: Vec<Policy>,
    mode: Option<PolicyMode>,
    dry_run: bool,
) -> Result<(String, Vec<Applied>, Enforced), LabError> {
    let _lock = RECORDS.lock()?;
    let mut scope = NodeScope::read()?;
    match (scope.record.policy_mode, mode) {
        (Some(had), Some(want)) if had != want && !scope.record.policies.is_empty() => {
            return Err(PolicyError::NodeModeSet {
                node: scope.node.clone(),
                mode: had,
            }
            .into());
        }
        (_, Some(want)) => scope.record.policy_mode = Some(want),
        (None, None) => scope.record.policy_mode = Some(PolicyMode::Ebpf),
        (Some(_), None) => {}
    }
    for p in &policies {
        if p.kind == Kind::CiliumNetworkPolicy && scope.mode() == PolicyMode::Netfilter {
            return Err(PolicyError::CiliumWithoutCilium {
                file: p.origin.file.clone(),
                line: p.origin.line,
                lab: scope.node.clone(),
            }
            .into());
        }
    }
    let before = scope.record.clone();
    let actions = lab_policy::merge(&mut scope.record.policies, policies);
    let enforced = scope.enforce_and_save(before, dry_run)?;
    let eval = scope.evaluator();
    let applied = lab_policy::applied(&eval, &scope.cluster, &scope.record.policies, actions);
    Ok((scope.node.clone(), applied, enforced))
}

/// `policy delete --node`: removes the named policies (`all`: every one)
/// and enforces the rest; once none is left, the datapath is torn down
/// and the record removed: nothing of labctl's stays on the node.
pub fn delete(
    targets: &[Target],
    all: bool,
) -> Result<(String, Vec<PolicyKey>, Enforced), LabError> {
    let _lock = RECORDS.lock()?;
    let mut scope = NodeScope::read()?;
    let before = scope.record.clone();
    let mut keys = Vec::new();
    if all {
        keys = scope.record.policies.iter().map(Policy::key).collect();
    }
    for t in targets {
        let key = lab_policy::resolve(&scope.shown(), &scope.record.policies, t)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    scope.record.policies.retain(|p| !keys.contains(&p.key()));
    if scope.record.policies.is_empty() {
        let mode = scope.mode();
        scope.teardown(mode)?;
        RECORDS.remove(RECORD)?;
        return Ok((
            scope.node.clone(),
            keys,
            Enforced {
                policy_mode: Some(mode),
                enforced: false,
                plan: None,
                nodes: 1,
                dry_run: false,
            },
        ));
    }
    let enforced = scope.enforce_and_save(before, false)?;
    Ok((scope.node.clone(), keys, enforced))
}

/// The node as every read-only command sees it: pods read again, and the
/// record enforced on them first (pods that came, went or were created
/// again with other labels), saved when that changed anything.
pub fn synced() -> Result<NodeScope, LabError> {
    let _lock = RECORDS.lock()?;
    let mut scope = NodeScope::read()?;
    if !scope.record.policies.is_empty() {
        let done = scope.enforce(false)?;
        if done.plan.as_ref().is_some_and(|p| p.changes > 0)
            || scope.record.identities.as_ref() != Some(&scope.identities())
        {
            scope.save()?;
        }
    }
    Ok(scope)
}

/// What the pods are, for a watch to see that they changed: each pod's
/// name, sandbox and labels.
pub fn fingerprint(scope: &NodeScope) -> BTreeSet<(String, String, Labels)> {
    scope
        .pods
        .iter()
        .map(|s| {
            (
                format!("{}/{}", s.namespace, s.name),
                s.id.clone(),
                pod_labels(s),
            )
        })
        .collect()
}

/// A trace's end on the node: a pod (`NAMESPACE/NAME`, or `NAME` when
/// one pod has it), an IPv4 address or a CIDR.
fn party(scope: &NodeScope, name: &str) -> Result<(Party, String), LabError> {
    let cluster = &scope.cluster;
    if let Some(i) = cluster.pod_by_name(name) {
        return Ok((Party::Pod(i), cluster.pods[i].name.clone()));
    }
    let bare: Vec<usize> = (0..cluster.pods.len())
        .filter(|i| {
            cluster.pods[*i]
                .name
                .split_once('/')
                .is_some_and(|(_, n)| n == name)
        })
        .collect();
    if let [i] = bare.as_slice() {
        return Ok((Party::Pod(*i), cluster.pods[*i].name.clone()));
    }
    if let Ok(addr) = name.parse::<Ipv4Addr>() {
        let party = cluster.party(Ipv4Net::from(addr));
        return Ok((party, shown_party(cluster, party)));
    }
    if let Ok(net) = name.parse::<Ipv4Net>() {
        let party = cluster.party(net);
        return Ok((party, shown_party(cluster, party)));
    }
    if name.contains('/') || !bare.is_empty() {
        return Err(LabError::NoSuchPod(name.to_owned()));
    }
    Err(PolicyError::BadParty(name.to_owned()).into())
}

fn shown_party(cluster: &Cluster, party: Party) -> String {
    match party {
        Party::Pod(i) => cluster.pods[i].name.clone(),
        Party::Net(net) if net.prefix_len() == 32 => net.addr().to_string(),
        Party::Net(net) => net.to_string(),
    }
}

/// `policy trace --node`.
pub fn trace(
    scope: &NodeScope,
    from: &str,
    to: &str,
    port: u16,
    protocol: Protocol,
) -> Result<Trace, LabError> {
    let src = party(scope, from)?;
    let dst = party(scope, to)?;
    let mode = scope.mode();
    let judged = Judged {
        lab: None,
        node: Some(scope.node.clone()),
        mode: Some(mode),
        flavor: mode.flavor(),
        cluster: &scope.cluster,
        identities: scope.identities(),
        policies: &scope.record.policies,
        nodes: scope.nodes().ok(),
    };
    lab_policy::judge(judged, (from, src), (to, dst), port, protocol)
}

impl NodeScope {
    /// Where `policy identities|endpoints|map --node` read.
    pub fn seen(&self) -> Result<Seen, LabError> {
        Ok(Seen {
            name: self.node.clone(),
            node: true,
            mode: Some(self.mode()),
            nodes: self.nodes()?,
            cluster: self.cluster.clone(),
            identities: self.identities(),
        })
    }

    /// `policy map POD --node`: pod `NAMESPACE/NAME` (or `NAME`, when
    /// one pod has it).
    pub fn map(&self, pod: &str) -> Result<MapView, LabError> {
        match party(self, pod)? {
            (Party::Pod(i), name) => map_of(&self.seen()?, &name, self.cluster.pods[i].addr),
            _ => Err(LabError::NoSuchPod(pod.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_own_labels_are_not_the_pods() {
        let s = Sandbox {
            id: "1".into(),
            name: "xwing".into(),
            namespace: "default".into(),
            uid: "u".into(),
            ready: true,
            netns_path: None,
            netns_ino: None,
            ips: vec!["10.244.1.5".parse().unwrap()],
            labels: [
                ("io.kubernetes.pod.name", "xwing"),
                ("io.kubernetes.pod.namespace", "default"),
                ("io.kubernetes.pod.uid", "u"),
                ("org", "alliance"),
                ("class", "xwing"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        assert_eq!(
            pod_labels(&s),
            Labels::from([
                ("class".to_owned(), "xwing".to_owned()),
                ("org".to_owned(), "alliance".to_owned())
            ])
        );
        assert_eq!(ipv4(&s), Some(Ipv4Addr::new(10, 244, 1, 5)));
    }
}
