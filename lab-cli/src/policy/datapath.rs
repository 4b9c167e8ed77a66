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

use super::{Policy, PolicyMode, eval::Cluster, identity::Identities};
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
}

/// The datapath of `mode` on `nodes`: the one place that chooses by mode.
pub fn datapath(mode: PolicyMode, nodes: Nodes) -> Box<dyn PolicyDatapath> {
    match mode {
        PolicyMode::Netfilter => Box::new(super::nft::Netfilter::new(nodes)),
        PolicyMode::Ebpf => Box::new(super::bpf::Ebpf::new(nodes)),
    }
}
