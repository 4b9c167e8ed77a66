//! `lab status`: what a lab's namespaces contain, read back from the kernel
//! (not from the plan), so it shows what is really there.

use serde::Serialize;

use super::{Lab, LabError, firewall, plan::Role};
use crate::kernel::{
    netns::NetNs,
    rtnl::{LinkInfoSummary, RouteSummary, Rtnl},
};

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub role: Role,
    /// How labctl's other commands name it: `LAB/MEMBER` (a pod's identity).
    pub display: String,
    /// Pods only: `LAB/POD`, as `trace` and `conntrack` name it.
    pub pod: Option<String>,
    /// Pods only: the Kubernetes namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pods only: the Kubernetes labels now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<crate::policy::model::Labels>,
    pub netns: String,
    pub links: Vec<LinkInfoSummary>,
    pub routes: Vec<RouteSummary>,
    /// `nft list ruleset` of a node (NAT and filter rules, with counters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
    /// A node with eBPF masquerading: its NAT table's fill and counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebpf_nat: Option<crate::masq::nat::NatSummary>,
}

#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub lab: String,
    pub scenario: String,
    pub complete: bool,
    pub members: Vec<MemberStatus>,
    /// Who implements the lab's services, and the services as recorded
    /// (`labctl svc list` reads them from the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_proxy: Option<crate::services::KubeProxyMode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::services::ServiceSpec>,
    /// The exercise that hides the service mode while it runs (the mode
    /// is its answer); `kube_proxy` is left out then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode_hidden_by: Option<String>,
    /// Who enforces the lab's network policies (none: recorded only).
    pub policy_mode: Option<crate::policy::PolicyMode>,
    /// The policies recorded (`labctl policy list` has them in full).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<crate::policy::PolicyKey>,
}

pub fn status(lab: &Lab) -> Result<LabStatus, LabError> {
    let mut members = Vec::new();
    let plan = &lab.plan;
    for (name, role, netns) in plan.members() {
        let ns = NetNs::open(netns)?;
        let rt = Rtnl::open(&ns)?;
        let links = rt
            .links()?
            .into_iter()
            .filter(|l| l.name != "lo" || l.addresses.iter().any(|a| !a.starts_with("127.")))
            .collect();
        let routes = rt.routes()?;
        let ruleset = if role == Role::Node {
            Some(firewall::list(&ns)?)
        } else {
            None
        };
        let ino = ns.inode()?;
        let ebpf_nat = if role == Role::Node && crate::masq::nat::present(ino) {
            Some(crate::masq::nat::table(ino)?.summary())
        } else {
            None
        };
        let pod = plan.pod(name).filter(|_| role == Role::Pod);
        members.push(MemberStatus {
            name: name.to_owned(),
            role,
            display: super::names::display(lab.name(), name),
            pod: (role == Role::Pod).then(|| super::names::display(lab.name(), name)),
            namespace: pod.map(|p| p.namespace.clone()),
            labels: pod.map(|p| super::policy::pod_labels(lab, p)),
            netns: netns.to_owned(),
            links,
            routes,
            ruleset,
            ebpf_nat,
        });
    }
    Ok(LabStatus {
        lab: lab.name().to_owned(),
        scenario: plan.scenario.name.to_owned(),
        complete: lab.state.complete,
        members,
        kube_proxy: plan.kube_proxy(),
        services: lab.state.services.clone(),
        mode_hidden_by: None,
        policy_mode: plan.options.policy_mode,
        policies: lab.state.policies.iter().map(|p| p.key()).collect(),
    })
}
