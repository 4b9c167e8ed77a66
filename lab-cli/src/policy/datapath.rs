//! The policies' datapath as a trait: one implementation per
//! `--policy-mode`, chosen once by [`datapath`] (as
//! `services::datapath` chooses a `ServiceDatapath`); everything else asks
//! the trait object.
//!
//! An enforcement is two steps, as for services: [`PolicyDatapath::plan`]
//! reads what the nodes hold and says what enforcing the policies would
//! change, in the mode's own units (an `nft -f` transaction per node for
//! `netfilter`; ipcache and policy-map entries for `ebpf`);
//! [`PolicyDatapath::apply`] writes it. The plan vocabulary is
//! `kernel::datapath`'s.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::{
    Policy, PolicyMode,
    eval::{Cluster, Query, Verdict},
    identity::Identities,
    model::Direction,
};
use crate::kernel::{
    datapath::{Plan, ToolRun},
    netns::NetNs,
};

/// What one target of a policy plan writes.
#[derive(Debug)]
pub enum Write {
    /// An `nft -f` transaction in a node (`netfilter`).
    Nft(ToolRun),
    /// eBPF map entries to put or delete, and programs to attach (`ebpf`):
    /// defined by the eBPF datapath.
    Ebpf(super::bpf::Write),
}

/// A policy plan.
pub type PolicyPlan = Plan<Write>;

/// Everything a datapath enforces: the pods (with their labels and
/// namespaces), their identities, the policies, and where each pod lives.
#[derive(Debug)]
pub struct Want<'a> {
    pub cluster: &'a Cluster,
    pub identities: &'a Identities,
    pub policies: &'a [Policy],
}

/// Where a datapath works: the lab's nodes and their pods.
#[derive(Debug)]
pub struct Nodes {
    pub lab: String,
    pub nodes: Vec<Node>,
}

impl Nodes {
    /// The node that holds pod `pod`.
    pub fn holding(&self, pod: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.pods.iter().any(|p| p.name == pod))
    }
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// As output names it (`lab/node1`).
    pub name: String,
    pub ns: NetNs,
    pub pods: Vec<PodPort>,
}

/// Where one pod plugs into its node.
#[derive(Debug, Clone)]
pub struct PodPort {
    /// `LAB/POD`, as in [`Cluster`]'s pods.
    pub name: String,
    pub addr: Ipv4Addr,
    /// Its host-side veth in the node (where tc programs attach, and what
    /// netfilter's per-pod chains match on).
    pub veth: String,
}

/// Where a datapath decides one direction of a connection, for `policy
/// trace`: the object and the entry that let it through or drop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub direction: Direction,
    /// The pod whose policy it is (`LAB/POD`).
    pub pod: String,
    /// The node that holds it (`lab/node1`).
    pub node: String,
    /// The object, in the mode's words (`chain ingress-deathstar-1`).
    pub place: String,
    /// The entry that decides (`rule "default/rule1 ingress[0]"`).
    pub entry: String,
    /// Whether it lets the connection through.
    pub allows: bool,
    /// What the entry counted, read from the kernel (None: not read, or
    /// nothing counts there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Whether the kernel holds it (None: not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// The eBPF policy map entry that decides, as its key reads (None:
    /// netfilter, or no entry decided).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_entry: Option<MapEntryRef>,
}

/// A policy map entry by its key (`policy trace`, --policy-mode ebpf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapEntryRef {
    pub endpoint: u32,
    /// The peer identity it is for (0: any).
    pub identity: u32,
    pub direction: Direction,
    /// `80/TCP`, `TCP`, `ANY`, `80-81/TCP`, as `policy map` prints it.
    pub port_proto: String,
    /// The trie prefix length of the key (96: nothing wildcarded).
    pub prefix_len: u32,
    pub deny: bool,
    /// What it counted.
    pub packets: u64,
    pub bytes: u64,
}

/// What a datapath holds on one node, read back, in its own words (`lab
/// status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// `lab/node1`.
    pub node: String,
    pub lines: Vec<String>,
}

/// How a policy counter decided (`labctl metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountedVerdict {
    /// An allow rule let it through.
    Allowed,
    /// A deny rule dropped it (POLICY_DENY).
    Denied,
    /// Selected, and no rule allowed it: default deny (POLICY_DENIED).
    DefaultDenied,
}

impl CountedVerdict {
    /// `allowed` or `denied`, the metric's `verdict` label.
    pub fn verdict(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied | Self::DefaultDenied => "denied",
        }
    }

    /// The drop reason (empty when allowed), the metric's `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Allowed => "",
            Self::Denied => "POLICY_DENY",
            Self::DefaultDenied => "POLICY_DENIED",
        }
    }
}

/// What one node's datapath counted for one policy, direction and
/// verdict, summed over the node's pods and the policy's rules.
///
/// Units differ by mode, as the datapaths do: netfilter's rules meet a
/// connection's first packet only (the rest pass as established), the
/// eBPF program judges every packet of a connection's original direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictCount {
    /// `lab/node1`.
    pub node: String,
    /// `default/rule1`; policies that share a map entry, comma-separated;
    /// for default deny, the policies that turned it on; `allow-localhost`
    /// for the eBPF entry that lets the node reach its pods.
    pub policy: String,
    pub direction: Direction,
    pub verdict: CountedVerdict,
    pub packets: u64,
    pub bytes: u64,
}

/// Packets and bytes by (node, policy, direction, verdict).
pub type VerdictCounts =
    std::collections::BTreeMap<(String, String, Direction, CountedVerdict), (u64, u64)>;

/// Adds `packets` and `bytes` to the count of (`node`, `policy`,
/// `direction`, `verdict`) in `out`.
pub fn add_count(
    out: &mut VerdictCounts,
    key: (String, String, Direction, CountedVerdict),
    packets: u64,
    bytes: u64,
) {
    let c = out.entry(key).or_default();
    c.0 += packets;
    c.1 += bytes;
}

/// The counts of `add_count`'s map, as rows.
pub fn count_rows(counts: VerdictCounts) -> Vec<VerdictCount> {
    counts
        .into_iter()
        .map(
            |((node, policy, direction, verdict), (packets, bytes))| VerdictCount {
                node,
                policy,
                direction,
                verdict,
                packets,
                bytes,
            },
        )
        .collect()
}

/// One `--policy-mode`: where its state lives, and how it is planned,
/// written, read back and removed.
pub trait PolicyDatapath {
    fn mode(&self) -> PolicyMode;

    /// Whether it can run here, checked before anything is built.
    fn check(&self) -> Result<(), super::PolicyError>;

    /// What its changes are, counted: `nft rules and set elements`,
    /// `ipcache and policy map entries`.
    fn unit(&self) -> &'static str;

    /// Attaches its programs (tc on the pods' veths); netfilter has none.
    fn install(&self) -> Result<(), super::PolicyError> {
        Ok(())
    }

    /// What enforcing `want` (all of it: what is not there goes) would
    /// change on each node. Only reads the kernel.
    fn plan(&self, want: &Want<'_>) -> Result<PolicyPlan, super::PolicyError>;

    /// Writes a plan this datapath made, target by target.
    fn apply(&self, plan: &PolicyPlan) -> Result<(), super::PolicyError>;

    /// Removes everything it wrote or attached; what is already gone is
    /// not an error.
    fn teardown(&self) -> Result<(), super::PolicyError>;

    /// Whether it loads eBPF programs (CAP_BPF and CAP_SYS_ADMIN).
    fn loads_programs(&self) -> bool {
        false
    }

    /// Where it decides each direction of `verdict` (the evaluator's, read
    /// as this mode reads policies) on a pod of its nodes, with what the
    /// kernel counted there when it can be read (`policy trace`).
    fn explain(&self, _want: &Want<'_>, _query: &Query, _verdict: &Verdict) -> Vec<Decision> {
        Vec::new()
    }

    /// What each node holds, read back (`lab status`).
    fn held(&self) -> Result<Vec<Held>, super::PolicyError> {
        Ok(Vec::new())
    }

    /// What its rules or map entries counted on each node, by policy,
    /// direction and verdict, read from the kernel (`labctl metrics`).
    fn counters(&self, _want: &Want<'_>) -> Result<Vec<VerdictCount>, super::PolicyError> {
        Ok(Vec::new())
    }
}

/// The datapath of `mode` on `nodes`: the one place that chooses by mode.
pub fn datapath(mode: PolicyMode, nodes: Nodes) -> Box<dyn PolicyDatapath> {
    match mode {
        PolicyMode::Netfilter => Box::new(super::nft::Netfilter::new(nodes)),
        PolicyMode::Ebpf => Box::new(super::bpf::Ebpf::new(nodes)),
    }
}
