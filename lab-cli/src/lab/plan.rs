//! The concrete layout of a lab: namespace names, interfaces, addresses and
//! routes, derived from the scenario alone (no system calls), so it can be
//! unit-tested and printed before anything is built.
//!
//! Addressing follows kind: the underlay is 172.18.0.0/16 (kind's docker
//! network) with the world as gateway .1 and node N at .(N+1); node N owns
//! pod CIDR 10.244.N.0/24 with the bridge gateway at .1 and pods from .2, as
//! host-local hands them out; the world's "internet" server is 203.0.113.10
//! (TEST-NET-3).

use std::net::Ipv4Addr;

use thiserror::Error;

use super::scenario::{Routing, Scenario};
use crate::{
    ebpf::tc::TcAttach,
    kernel::rtnl::VxlanSpec,
    policy::{
        PolicyMode,
        model::{Labels, Protocol},
    },
    services::KubeProxyMode,
};

pub const UNDERLAY_BRIDGE: &str = "underlay0";
pub const UNDERLAY_PREFIX: u8 = 16;
pub const WORLD_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
pub const WORLD_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const WORLD_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(203, 0, 113, 0), 24);
pub const CLUSTER_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 16);
pub const POD_PREFIX: u8 = 24;
pub const POD_BRIDGE: &str = "cni0";
/// A node's underlay interface.
pub const UPLINK: &str = "eth0";
/// A pod's interface (CNI_IFNAME).
pub const POD_IFNAME: &str = "eth0";
pub const VXLAN_DEV: &str = "vxlan0";
pub const VXLAN_VNI: u32 = 42;
/// The IANA VXLAN port (flannel uses 8472, the Linux default before IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// What every link created by a lab carries as its alias (`ip link` shows it).
pub const ALIAS_PREFIX: &str = "labctl:";
pub const WORLD: &str = "world";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "lab name `{0}` is not valid: use 1 to 16 lowercase letters, digits or dashes, starting with a letter"
    )]
    BadName(String),
    #[error("MTU {0} is out of range: use 576 to 9000")]
    BadMtu(u32),
    #[error("the NAT options need --masq ebpf")]
    NatWithoutEbpf,
    #[error("NAT port range {0}-{1} is empty or includes port 0; use e.g. 32768-60999")]
    BadPorts(u16, u16),
    #[error(
        "scenario `{0}` has no services; --kube-proxy is for scenarios with services (`labctl lab up service --kube-proxy ...`)"
    )]
    KubeProxyWithoutServices(&'static str),
    #[error(
        "scenario `policy` writes its own netfilter rules; --policy-mode is for the other scenarios (`labctl lab up starwars --policy-mode ebpf`)"
    )]
    PolicyModeOnPolicyScenario,
}

/// What a lab member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Pod,
    Node,
    /// The outside: the underlay's gateway and the "internet" server.
    World,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pod => "pod",
            Role::Node => "node",
            Role::World => "world",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who masquerades pod traffic leaving a node.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MasqMode {
    /// An nftables MASQUERADE rule (as kind's ip-masq-agent).
    #[default]
    Netfilter,
    /// tc programs with a NAT table (as Cilium's BPF masquerading).
    Ebpf,
}

/// Options of `labctl lab up`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabOptions {
    /// Pod MTU override (the overlay's MTU pitfall).
    pub mtu: Option<u32>,
    #[serde(default)]
    pub masq: MasqMode,
    /// eBPF masquerading: idle lifetime of UDP mappings (default 30 s).
    #[serde(default)]
    pub nat_udp_timeout: Option<u32>,
    /// eBPF masquerading: the translated port range (default 32768-60999).
    #[serde(default)]
    pub nat_ports: Option<(u16, u16)>,
    /// eBPF masquerading: how its tc programs attach (tcx where the kernel
    /// has it, or always netlink as before 6.6).
    #[serde(default)]
    pub tc_attach: TcAttach,
    /// Who implements the scenario's services (default: kube-proxy's
    /// iptables mode); only for scenarios with services.
    #[serde(default)]
    pub kube_proxy: Option<KubeProxyMode>,
    /// Who enforces the lab's network policies (none: they are recorded
    /// and traced, not enforced, as on a CNI without policy support).
    #[serde(default)]
    pub policy_mode: Option<PolicyMode>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoutePlan {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub via: Option<Ipv4Addr>,
    pub dev: &'static str,
    /// The gateway is not on a connected subnet (`onlink`).
    pub onlink: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodePlan {
    /// `node1`, `node2`, ...
    pub name: String,
    pub netns: String,
    pub uplink_addr: Ipv4Addr,
    pub uplink_mtu: u32,
    pub pod_cidr: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub routes: Vec<RoutePlan>,
    pub vxlan: Option<VxlanSpec>,
    /// The VXLAN device's own address (10.244.N.0/32, as flannel does).
    pub vxlan_addr: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodPlan {
    pub name: String,
    pub netns: String,
    /// Index into `Plan::nodes`.
    pub node: usize,
    pub addr: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// The node-side end of the pod's veth pair (on cni0).
    pub host_veth: String,
    /// Its Kubernetes namespace.
    pub namespace: String,
    /// Its Kubernetes labels as the lab comes up (`lab pod label` changes
    /// them in the lab's record).
    pub labels: Labels,
    /// The ports its application serves.
    pub serves: Vec<(Protocol, u16)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub lab: String,
    #[serde(serialize_with = "scenario_name")]
    pub scenario: &'static Scenario,
    pub options: LabOptions,
    pub world_netns: String,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
}

fn scenario_name<S: serde::Serializer>(s: &&Scenario, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name)
}

/// Checks a lab name: it prefixes every namespace the lab creates.
pub fn validate_name(name: &str) -> Result<(), PlanError> {
    let ok = (1..=16).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(PlanError::BadName(name.to_owned()))
    }
}

impl Plan {
    pub fn new(
        lab: &str,
        scenario: &'static Scenario,
        options: LabOptions,
    ) -> Result<Self, PlanError> {
        validate_name(lab)?;
        options.validate()?;
        if options.kube_proxy.is_some() && scenario.services.is_empty() {
            return Err(PlanError::KubeProxyWithoutServices(scenario.name));
        }
        if options.policy_mode.is_some() && scenario.policy {
            return Err(PlanError::PolicyModeOnPolicyScenario);
        }
        let netns = |member: &str| format!("{lab}-{member}");
        let pod_mtu = options.mtu.unwrap_or_else(|| scenario.pod_mtu());
        let nodes: Vec<NodePlan> = (1..=scenario.nodes)
            .map(|n| NodePlan::new(scenario, n, netns(&node_name(n))))
            .collect();
        let pods = pod_plans(scenario, &nodes, pod_mtu, netns);
        Ok(Self {
            lab: lab.to_owned(),
            scenario,
            options,
            world_netns: netns(WORLD),
            nodes,
            pods,
        })
    }

    /// Every member of the lab as (name, role, namespace): pods, nodes, world.
    pub fn members(&self) -> impl Iterator<Item = (&str, Role, &str)> {
        let pods = self
            .pods
            .iter()
            .map(|p| (p.name.as_str(), Role::Pod, p.netns.as_str()));
        let nodes = self
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), Role::Node, n.netns.as_str()));
        pods.chain(nodes).chain(std::iter::once((
            WORLD,
            Role::World,
            self.world_netns.as_str(),
        )))
    }

    /// Every namespace of the lab, in creation order.
    pub fn namespaces(&self) -> Vec<&str> {
        std::iter::once(self.world_netns.as_str())
            .chain(self.nodes.iter().map(|n| n.netns.as_str()))
            .chain(self.pods.iter().map(|p| p.netns.as_str()))
            .collect()
    }

    /// The alias every link of this lab carries.
    pub fn alias(&self) -> String {
        format!("{ALIAS_PREFIX}{}", self.lab)
    }

    pub fn pod(&self, name: &str) -> Option<&PodPlan> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// A pod by its name, or by `NAMESPACE/NAME` with its Kubernetes
    /// namespace (`kube-system/coredns`).
    pub fn find_pod(&self, name: &str) -> Option<&PodPlan> {
        match name.split_once('/') {
            Some((ns, pod)) => self
                .pods
                .iter()
                .find(|p| p.name == pod && p.namespace == ns),
            None => self.pod(name),
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Who implements services in this lab (None: it has none).
    pub fn kube_proxy(&self) -> Option<KubeProxyMode> {
        (!self.scenario.services.is_empty()).then(|| self.options.kube_proxy.unwrap_or_default())
    }

    /// The lab's cgroup (socket-LB attaches there) and each pod's below
    /// it, relative to the cgroup2 root: `labctl-LAB`, `labctl-LAB/POD`.
    pub fn cgroup(&self, pod: Option<&str>) -> String {
        match pod {
            Some(p) => format!("labctl-{}/{p}", self.lab),
            None => format!("labctl-{}", self.lab),
        }
    }
}

impl LabOptions {
    /// Checks the options on their own (before any scenario is built).
    pub fn validate(&self) -> Result<(), PlanError> {
        if let Some(mtu) = self.mtu
            && !(576..=9000).contains(&mtu)
        {
            return Err(PlanError::BadMtu(mtu));
        }
        if self.masq != MasqMode::Ebpf
            && (self.nat_udp_timeout.is_some()
                || self.nat_ports.is_some()
                || self.tc_attach != TcAttach::Auto)
        {
            return Err(PlanError::NatWithoutEbpf);
        }
        if let Some((lo, hi)) = self.nat_ports
            && (lo == 0 || lo > hi)
        {
            return Err(PlanError::BadPorts(lo, hi));
        }
        Ok(())
    }
}

impl Scenario {
    /// The pods' MTU unless overridden: the tunnel's in an overlay, else the
    /// uplink's (at least 1500, as a CNI's default).
    fn pod_mtu(&self) -> u32 {
        match self.routing {
            Routing::Overlay => self.uplink_mtu - VXLAN_OVERHEAD,
            Routing::Native => self.uplink_mtu.max(1500),
        }
    }
}

impl NodePlan {
    /// Node `n` (1-based) of `scenario`: its addresses, routes and tunnel.
    fn new(scenario: &Scenario, n: u8, netns: String) -> Self {
        let overlay = scenario.routing == Routing::Overlay;
        let peers: Vec<u8> = (1..=scenario.nodes).filter(|&p| p != n).collect();
        let world = if scenario.default_route {
            (Ipv4Addr::UNSPECIFIED, 0)
        } else {
            WORLD_NET
        };
        let routes = std::iter::once(RoutePlan {
            dst: world.0,
            prefix: world.1,
            via: Some(WORLD_GATEWAY),
            dev: UPLINK,
            onlink: false,
        })
        .chain(peers.iter().map(|&peer| pod_route(scenario.routing, peer)))
        .collect();
        Self {
            name: node_name(n),
            netns,
            uplink_addr: node_addr(n),
            uplink_mtu: scenario.uplink_mtu,
            pod_cidr: pod_cidr(n),
            gateway: pod_addr(n, 1),
            routes,
            vxlan: overlay.then(|| VxlanSpec {
                name: VXLAN_DEV.into(),
                vni: VXLAN_VNI,
                dev: UPLINK.into(),
                local: node_addr(n),
                remotes: peers.iter().map(|&p| node_addr(p)).collect(),
                port: VXLAN_PORT,
                mtu: scenario.uplink_mtu - VXLAN_OVERHEAD,
            }),
            vxlan_addr: overlay.then(|| pod_cidr(n)),
        }
    }
}

/// The route from a node to peer node `peer`'s pod CIDR.
fn pod_route(routing: Routing, peer: u8) -> RoutePlan {
    match routing {
        Routing::Native => RoutePlan {
            dst: pod_cidr(peer),
            prefix: POD_PREFIX,
            via: Some(node_addr(peer)),
            dev: UPLINK,
            onlink: false,
        },
        // `10.244.P.0/24 via 10.244.P.0 dev vxlan0 onlink`, as flannel: the
        // peer's tunnel address answers ARP.
        Routing::Overlay => RoutePlan {
            dst: pod_cidr(peer),
            prefix: POD_PREFIX,
            via: Some(pod_cidr(peer)),
            dev: VXLAN_DEV,
            onlink: true,
        },
    }
}

/// Pods take addresses from .2 of their node's CIDR, in scenario order (as
/// host-local hands them out).
fn pod_plans(
    scenario: &Scenario,
    nodes: &[NodePlan],
    mtu: u32,
    netns: impl Fn(&str) -> String,
) -> Vec<PodPlan> {
    let mut next_host = vec![2u8; nodes.len()];
    scenario
        .pods
        .iter()
        .map(|p| {
            let node = usize::from(p.node - 1);
            let host = next_host[node];
            next_host[node] += 1;
            PodPlan {
                name: p.name.into(),
                netns: netns(p.name),
                node,
                addr: pod_addr(p.node, host),
                gateway: nodes[node].gateway,
                mtu,
                host_veth: host_veth(p.name),
                namespace: p.namespace.into(),
                labels: if p.labels.is_empty() {
                    Labels::from([("app".to_owned(), p.name.to_owned())])
                } else {
                    p.labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect()
                },
                serves: p.serves.to_vec(),
            }
        })
        .collect()
}

/// The node-side end of pod `pod`'s veth pair: `veth-POD` where that fits
/// an interface name (15 bytes), else `veth` and 11 hex digits of the
/// name's SHA-256, as Calico names its `cali` + hash devices.
pub fn host_veth(pod: &str) -> String {
    let plain = format!("veth-{pod}");
    if plain.len() <= 15 {
        return plain;
    }
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(pod.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("veth{}", &hex[..11])
}

/// `node1`, `node2`, ...
pub fn node_name(n: u8) -> String {
    format!("node{n}")
}

/// Node N's underlay address: the world's gateway + N (172.18.0.(N+1)).
pub fn node_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(WORLD_GATEWAY) + u32::from(n))
}

/// Node N's pod CIDR: the Nth /24 of the cluster CIDR (10.244.N.0/24).
pub fn pod_cidr(n: u8) -> Ipv4Addr {
    pod_addr(n, 0)
}

/// Host `host` of node N's pod CIDR.
pub fn pod_addr(n: u8, host: u8) -> Ipv4Addr {
    let shift = 32 - u32::from(POD_PREFIX);
    Ipv4Addr::from(u32::from(CLUSTER_CIDR.0) | (u32::from(n) << shift) | u32::from(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::scenario::find;

    fn plan(scenario: &str) -> Plan {
        Plan::new(scenario, find(scenario).unwrap(), LabOptions::default()).unwrap()
    }

    #[test]
    fn basic_is_addressed_like_kind_with_host_local() {
        let p = plan("basic");
        assert_eq!(
            p.namespaces(),
            ["basic-world", "basic-node1", "basic-pod-a", "basic-pod-b"]
        );
        let node = &p.nodes[0];
        assert_eq!(node.uplink_addr, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(node.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(
            node.routes,
            [RoutePlan {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                via: Some(WORLD_GATEWAY),
                dev: UPLINK,
                onlink: false,
            }]
        );
        let addrs: Vec<_> = p.pods.iter().map(|p| p.addr).collect();
        assert_eq!(
            addrs,
            [Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3)]
        );
        assert!(
            p.pods
                .iter()
                .all(|p| p.mtu == 1500 && p.host_veth.len() <= 15)
        );
        assert_eq!(p.pods[0].host_veth, "veth-pod-a");
        assert_eq!(p.pods[0].namespace, "default");
        assert_eq!(p.pods[0].labels["app"], "pod-a");
    }

    #[test]
    fn long_pod_names_get_a_hashed_veth_that_fits_and_differs() {
        let p = plan("starwars");
        let veths: Vec<&str> = p.pods.iter().map(|p| p.host_veth.as_str()).collect();
        assert!(veths.iter().all(|v| v.len() <= 15 && v.starts_with("veth")));
        assert_eq!(veths[1], "veth-tiefighter");
        assert_ne!(veths[0], veths[2]);
        assert_eq!(host_veth("deathstar-1"), host_veth("deathstar-1"));
        assert_eq!(host_veth("deathstar-1").len(), 15);
        assert_eq!(p.pods[4].namespace, "kube-system");
        assert_eq!(p.pods[4].addr, Ipv4Addr::new(10, 244, 2, 4));
        assert_eq!(p.pods[0].labels["class"], "deathstar");
    }

    #[test]
    fn a_policy_mode_is_refused_on_the_hand_written_policy_scenario() {
        let opts = LabOptions {
            policy_mode: Some(PolicyMode::Ebpf),
            ..Default::default()
        };
        assert_eq!(
            Plan::new("p", find("policy").unwrap(), opts.clone()).unwrap_err(),
            PlanError::PolicyModeOnPolicyScenario
        );
        assert!(Plan::new("s", find("starwars").unwrap(), opts).is_ok());
    }

    #[test]
    fn two_node_routes_each_pod_cidr_via_the_peer_node() {
        let p = plan("two-node");
        assert_eq!(
            p.nodes[0].routes[1],
            RoutePlan {
                dst: Ipv4Addr::new(10, 244, 2, 0),
                prefix: 24,
                via: Some(Ipv4Addr::new(172, 18, 0, 3)),
                dev: UPLINK,
                onlink: false,
            }
        );
        assert_eq!(p.pods[1].addr, Ipv4Addr::new(10, 244, 2, 2));
        assert!(p.nodes.iter().all(|n| n.vxlan.is_none()));
    }

    #[test]
    fn overlay_tunnels_point_at_each_other_and_shrink_the_pod_mtu() {
        let p = plan("overlay");
        let (a, b) = (
            p.nodes[0].vxlan.as_ref().unwrap(),
            p.nodes[1].vxlan.as_ref().unwrap(),
        );
        assert_eq!((a.local, &a.remotes[..]), (b.remotes[0], &[b.local][..]));
        assert_eq!(a.mtu, 1450);
        assert!(p.pods.iter().all(|p| p.mtu == 1450));
        assert_eq!(p.nodes[0].routes[1].dev, VXLAN_DEV);
        let pitfall = Plan::new(
            "overlay",
            find("overlay").unwrap(),
            LabOptions {
                mtu: Some(1500),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(pitfall.pods.iter().all(|p| p.mtu == 1500));
    }

    #[test]
    fn addressing_follows_the_cidr_constants_for_any_node_count() {
        assert_eq!(pod_cidr(7), Ipv4Addr::new(10, 244, 7, 0));
        assert_eq!(pod_addr(3, 9), Ipv4Addr::new(10, 244, 3, 9));
        assert_eq!(node_addr(3), Ipv4Addr::new(172, 18, 0, 4));
        static THREE: Scenario = Scenario {
            name: "three",
            summary: "",
            teaches: "",
            nodes: 3,
            pods: &[],
            routing: Routing::Overlay,
            default_route: true,
            policy: false,
            uplink_mtu: 1500,
            rp_filter: false,
            services: &[],
            faults: &[],
        };
        let p = Plan::new("three", &THREE, LabOptions::default()).unwrap();
        let vx = p.nodes[1].vxlan.as_ref().unwrap();
        assert_eq!(vx.local, node_addr(2));
        assert_eq!(vx.remotes, [node_addr(1), node_addr(3)]);
        let dsts: Vec<_> = p.nodes[1].routes.iter().map(|r| r.dst).collect();
        assert_eq!(dsts, [Ipv4Addr::UNSPECIFIED, pod_cidr(1), pod_cidr(3)]);
    }

    #[test]
    fn drops_has_no_default_route() {
        let p = plan("drops");
        assert_eq!(p.nodes[0].routes.len(), 1);
        assert_eq!(p.nodes[0].routes[0].dst, WORLD_NET.0);
        assert_eq!(p.nodes[0].uplink_mtu, 1280);
        assert_eq!(p.pods[0].mtu, 1500);
    }

    #[test]
    fn bad_names_and_mtus_are_refused() {
        let s = find("basic").unwrap();
        for bad in ["", "Basic", "1lab", "lab_1", "a-very-long-lab-name"] {
            assert_eq!(
                Plan::new(bad, s, LabOptions::default()).unwrap_err(),
                PlanError::BadName(bad.into())
            );
        }
        assert_eq!(
            Plan::new(
                "x",
                s,
                LabOptions {
                    mtu: Some(100),
                    ..Default::default()
                }
            )
            .unwrap_err(),
            PlanError::BadMtu(100)
        );
        let nat = |masq, ports| LabOptions {
            masq,
            nat_ports: Some(ports),
            ..Default::default()
        };
        assert_eq!(
            Plan::new("x", s, nat(MasqMode::Netfilter, (1, 2))).unwrap_err(),
            PlanError::NatWithoutEbpf
        );
        assert_eq!(
            Plan::new("x", s, nat(MasqMode::Ebpf, (9, 2))).unwrap_err(),
            PlanError::BadPorts(9, 2)
        );
    }
}
