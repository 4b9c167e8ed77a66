//! The services' datapath as a trait: one implementation per
//! `--kube-proxy` mode, chosen once by [`datapath`] (the only place that
//! chooses by mode, as netavark builds one firewall driver from its
//! configuration); everything else asks the trait object.
//!
//! A sync is two steps: [`ServiceDatapath::plan`] reads what the nodes
//! hold and says what writing the frontends would change, in the mode's
//! own units (an `nft -f` transaction, iptables rules, eBPF map entries);
//! [`ServiceDatapath::apply`] writes that plan. `svc --dry-run` stops after
//! the first. The plan vocabulary (`Plan`, `ApplyError`, `ToolRun`) is
//! `kernel::datapath`'s, shared with any other datapath axis.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use clap::ValueEnum as _;

use super::{
    Flow, FrontendView, ServiceError, ebpf, iptables,
    model::{Frontend, KubeProxyMode, L4},
    nftables,
};
use crate::{
    ebpf::lb::LbMaps,
    kernel::{
        datapath::{Plan, ToolRun},
        netns::NetNs,
    },
};

/// A services plan: what the applier writes is a [`Write`] per target.
pub type ServicePlan = Plan<Write>;

/// One `--kube-proxy` mode: where its services live, and how they are
/// planned, written, read back and removed.
pub trait ServiceDatapath {
    /// The mode it implements (what `svc list` calls its source).
    fn mode(&self) -> KubeProxyMode;

    /// The nodes (and cgroup) it works on.
    fn cluster(&self) -> &Cluster;

    /// Whether it can run here (its tools, the kernel's features), checked
    /// before anything is built.
    fn check(&self) -> Result<(), ServiceError>;

    /// What its changes are, counted: `nft rules and map elements`.
    fn unit(&self) -> &'static str;

    /// Attaches its programs (tc on the pods' veths, or the lab's cgroup);
    /// the netfilter modes have nothing to attach.
    fn install(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    /// What writing `frontends` (all of them: what is not there goes)
    /// would change on each node, from what the kernel holds now. Only
    /// reads the kernel.
    fn plan(&self, frontends: &[Frontend]) -> Result<ServicePlan, ServiceError>;

    /// Writes a plan this datapath made, target by target.
    fn apply(&self, plan: &ServicePlan) -> Result<(), ServiceError> {
        Ok(plan.apply(Write::write)?)
    }

    /// Every frontend as the kernel holds it, connection counts added up
    /// over the nodes.
    fn read(&self) -> Result<Vec<FrontendView>, ServiceError>;

    /// The translated connections in its own tables (the eBPF modes');
    /// netfilter's are conntrack's DNAT entries, for the caller to read
    /// (see [`ServiceDatapath::netfilter`]).
    fn flows(&self) -> Result<Vec<Flow>, ServiceError> {
        Ok(Vec::new())
    }

    /// Removes everything it wrote or attached (chains, tables, pinned
    /// programs and maps); what is already gone is not an error.
    fn teardown(&self) -> Result<(), ServiceError>;

    /// Netfilter (kube-proxy's chains): connections are translated by
    /// conntrack's DNAT, and bridged traffic must pass the inet hooks.
    fn netfilter(&self) -> bool {
        false
    }

    /// Whether it loads eBPF programs (setting it up needs CAP_BPF and
    /// CAP_SYS_ADMIN, not only CAP_NET_ADMIN).
    fn loads_programs(&self) -> bool {
        false
    }

    /// Whether the pods' processes run in cgroups of their own, which the
    /// lab makes before [`ServiceDatapath::install`] (socket-LB).
    fn pod_cgroups(&self) -> bool {
        false
    }

    /// What `svc list` reads it from, in words: `iptables chains`.
    fn holder(&self) -> &'static str;

    /// The peer tool's command that shows it in network namespace `netns`
    /// (None: only labctl reads it).
    fn inspect(&self, _netns: &str) -> Option<String> {
        None
    }
}

/// Where a datapath's services live.
#[derive(Debug, Default)]
pub struct Cluster {
    /// The nodes (netfilter chains, tc programs and maps are per node).
    pub nodes: Vec<Node>,
    /// The lab's cgroup, where socket-LB attaches (None: none, or not made).
    pub cgroup: Option<LabCgroup>,
    /// The pod CIDR: traffic from outside it is masqueraded (kube-proxy's
    /// --cluster-cidr).
    pub cluster_cidr: String,
}

impl Cluster {
    /// No nodes: a datapath built on it tells what its mode is (its
    /// properties, names, checks), and writes nothing.
    pub fn none() -> Self {
        Self::default()
    }
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// As output names it (`lab/node1`).
    pub name: String,
    pub ns: NetNs,
    /// The host-side veths of its pods (where tc programs attach).
    pub veths: Vec<String>,
}

/// A cgroup made for the lab's pods.
#[derive(Debug, Clone)]
pub struct LabCgroup {
    /// Relative to the cgroup2 root (`labctl-LAB`).
    pub name: String,
    pub inode: u64,
}

/// What the applier writes on one target.
#[derive(Debug)]
pub enum Write {
    /// A netfilter tool's input, one transaction in a node's namespace.
    Tool(ToolRun),
    /// Map operations on one load balancer's pinned maps, in order.
    Maps { dir: PathBuf, ops: Vec<ebpf::MapOp> },
}

impl Write {
    pub fn write(&self) -> Result<(), ServiceError> {
        match self {
            Write::Tool(run) => Ok(run.write()?),
            Write::Maps { dir, ops } => {
                let mut maps = LbMaps::open(dir)?;
                Ok(ebpf::apply(&mut maps, ops)?)
            }
        }
    }
}

/// The datapath of `mode` over `cluster`: the one place that chooses by
/// mode.
pub fn datapath(mode: KubeProxyMode, cluster: Cluster) -> Box<dyn ServiceDatapath> {
    match mode {
        KubeProxyMode::Iptables => Box::new(iptables::Iptables::new(mode, cluster)),
        KubeProxyMode::Nftables => Box::new(nftables::Nftables::new(mode, cluster)),
        KubeProxyMode::Ipvs => Box::new(Ipvs { mode, cluster }),
        KubeProxyMode::Ebpf => Box::new(ebpf::Ebpf::per_packet(mode, cluster)),
        KubeProxyMode::EbpfSocket => Box::new(ebpf::Ebpf::socket(mode, cluster)),
    }
}

/// `mode`'s datapath over no nodes: to ask what it is, not to write.
pub fn about(mode: KubeProxyMode) -> Box<dyn ServiceDatapath> {
    datapath(mode, Cluster::none())
}

/// Checks that `mode` can run here before anything is built.
pub fn check_mode(mode: KubeProxyMode) -> Result<(), ServiceError> {
    about(mode).check()
}

/// Writes `frontends` (replacing what was there): the plan, then writing
/// it. Returns the plan written.
pub fn sync(dp: &dyn ServiceDatapath, frontends: &[Frontend]) -> Result<ServicePlan, ServiceError> {
    let plan = dp.plan(frontends)?;
    dp.apply(&plan)?;
    Ok(plan)
}

/// kube-proxy's services in any namespace (a kind node's own, for
/// instance): the chains of every netfilter mode whose tools are here.
pub fn read_netns(ns: &NetNs) -> Result<Vec<FrontendView>, ServiceError> {
    let mut out = Vec::new();
    for mode in KubeProxyMode::value_variants() {
        let dp = datapath(
            *mode,
            Cluster {
                nodes: vec![Node {
                    name: ns.name().to_owned(),
                    ns: ns.handle(),
                    veths: Vec::new(),
                }],
                ..Cluster::none()
            },
        );
        // A missing tool reads as nothing there.
        if dp.netfilter() && dp.check().is_ok() {
            out.extend(dp.read()?);
        }
    }
    Ok(out)
}

/// Frontends read node by node, as one list: the same frontend's backends'
/// connection counts added up (backends matched by address and port).
pub(super) fn merged(per_node: Vec<Vec<FrontendView>>) -> Vec<FrontendView> {
    let mut merged: BTreeMap<(Ipv4Addr, u16, Option<L4>), FrontendView> = BTreeMap::new();
    for f in per_node.into_iter().flatten() {
        match merged.get_mut(&(f.vip, f.port, f.proto)) {
            Some(into) => {
                for nb in &f.backends {
                    if let Some(mine) = into
                        .backends
                        .iter_mut()
                        .find(|m| (m.addr, m.port) == (nb.addr, nb.port))
                    {
                        mine.connections = match (mine.connections, nb.connections) {
                            (Some(x), Some(y)) => Some(x + y),
                            (x, y) => x.or(y),
                        };
                    }
                }
            }
            None => {
                merged.insert((f.vip, f.port, f.proto), f);
            }
        }
    }
    merged.into_values().collect()
}

/// kube-proxy's IPVS mode: detected, not faked (this kernel has none, and
/// labctl does not build it).
struct Ipvs {
    mode: KubeProxyMode,
    cluster: Cluster,
}

impl ServiceDatapath for Ipvs {
    fn mode(&self) -> KubeProxyMode {
        self.mode
    }

    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn check(&self) -> Result<(), ServiceError> {
        Err(if std::path::Path::new("/proc/net/ip_vs").exists() {
            ServiceError::IpvsNotBuilt
        } else {
            ServiceError::NoIpvs
        })
    }

    fn unit(&self) -> &'static str {
        "IPVS virtual servers and real servers"
    }

    fn plan(&self, _: &[Frontend]) -> Result<ServicePlan, ServiceError> {
        Err(ServiceError::IpvsNotBuilt)
    }

    fn read(&self) -> Result<Vec<FrontendView>, ServiceError> {
        Err(ServiceError::IpvsNotBuilt)
    }

    fn teardown(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    fn holder(&self) -> &'static str {
        "IPVS table"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_is_one_datapath_that_knows_what_it_is() {
        for mode in KubeProxyMode::value_variants() {
            let dp = about(*mode);
            assert_eq!(dp.mode(), *mode);
            assert_eq!(dp.netfilter(), mode.is_netfilter());
            assert!(!dp.holder().is_empty() && !dp.unit().is_empty());
            // Over no nodes, a plan changes nothing (IPVS: refused;
            // socket-LB: no cgroup to find its maps by).
            match dp.plan(&[]) {
                Ok(plan) => assert!(plan.is_empty() && plan.parts().is_empty(), "{mode}"),
                Err(e) => assert!(
                    matches!(e, ServiceError::IpvsNotBuilt | ServiceError::NoLabCgroup),
                    "{mode}: {e}"
                ),
            }
        }
        assert!(about(KubeProxyMode::EbpfSocket).pod_cgroups());
        assert!(about(KubeProxyMode::Ebpf).loads_programs());
        assert!(!about(KubeProxyMode::Nftables).loads_programs());
        assert!(
            about(KubeProxyMode::Nftables)
                .inspect("lab-node1")
                .is_some_and(|c| c.contains("nft list table ip kube-proxy"))
        );
    }
}
