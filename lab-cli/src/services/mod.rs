//! Kubernetes services, implemented four ways side by side: kube-proxy's
//! iptables and nftables modes (netfilter chains, DNAT and conntrack), and
//! Cilium-style eBPF load balancing per packet (tc) or per connection
//! (socket-LB). Each mode is a [`ServiceDatapath`] built by [`datapath`]:
//! it plans writing a list of [`Frontend`]s into the nodes (what changes,
//! in its own units), applies that plan, reads the frontends back from the
//! kernel (chains and their counters, or the maps), as `svc list` shows
//! them, and tears itself down.

pub mod cilium;
pub mod datapath;
pub mod ebpf;
pub mod iptables;
pub mod model;
pub mod nftables;

use std::net::Ipv4Addr;

use serde::Serialize;
use thiserror::Error;

use crate::{
    ebpf::{error::ProgramSetupError, lb::LbMaps},
    kernel::{cgroup::CgroupError, datapath::ApplyError, netns::NetnsError, tool::ToolError},
};
pub use datapath::{
    Cluster, LabCgroup, Node, ServiceDatapath, ServicePlan, Write, about, check_mode, datapath,
    read_netns, sync,
};
pub use model::{Endpoint, Frontend, KubeProxyMode, L4, ServiceSpec, SpecError};

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Cgroup(Box<CgroupError>),
    #[error("cannot set up or read the eBPF load balancer: {0}")]
    Ebpf(Box<ProgramSetupError>),
    #[error("cannot read nft's JSON listing of table ip kube-proxy: {0}")]
    NftJson(serde_json::Error),
    #[error(transparent)]
    Apply(Box<ApplyError>),
    #[error(
        "socket-LB's maps are found by the lab's cgroup, which was not made or was removed: bring the lab down and up again (`labctl lab down`, `labctl lab up service --kube-proxy ebpf-socket`)"
    )]
    NoLabCgroup,
    #[error(
        "no cgroup2 hierarchy is mounted, which socket-LB attaches to: mount one (`mount -t cgroup2 none /sys/fs/cgroup`) or use --kube-proxy ebpf"
    )]
    NoCgroup2,
    #[error(
        "`{0}` was not found; install it (`apt-get install iptables nftables`, or run scripts/setup.sh)"
    )]
    ToolMissing(&'static str),
    #[error(
        "this kernel has no IPVS (no /proc/net/ip_vs; `modprobe ip_vs` fails or it is not built): use --kube-proxy iptables, nftables, ebpf or ebpf-socket"
    )]
    NoIpvs,
    #[error(
        "this kernel has IPVS, but labctl does not build kube-proxy's IPVS mode yet: use --kube-proxy iptables, nftables, ebpf or ebpf-socket"
    )]
    IpvsNotBuilt,
}

impl From<ProgramSetupError> for ServiceError {
    fn from(e: ProgramSetupError) -> Self {
        ServiceError::Ebpf(Box::new(e))
    }
}

impl From<ApplyError> for ServiceError {
    fn from(e: ApplyError) -> Self {
        ServiceError::Apply(Box::new(e))
    }
}

impl From<CgroupError> for ServiceError {
    fn from(e: CgroupError) -> Self {
        ServiceError::Cgroup(Box::new(e))
    }
}

impl ServiceError {
    /// Errors in what the user asked for (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ServiceError::Spec(_) | ServiceError::NoIpvs | ServiceError::IpvsNotBuilt
        )
    }
}

/// One backend of a frontend, as read from the kernel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    /// None: the chain or slot points at no backend.
    pub addr: Option<Ipv4Addr>,
    pub port: Option<u16>,
    /// The pod with this address (`NS/NAME`), where known.
    pub pod: Option<String>,
    /// New connections it was given, on every node together (None:
    /// nothing counts them, as in Cilium's maps).
    pub connections: Option<u64>,
    /// kube-proxy iptables: the chance its jump is taken when reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Where it lives: a KUBE-SEP / endpoint chain, or `backend N` (eBPF id).
    pub object: String,
}

/// One frontend (VIP, port, protocol) and its backends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontendView {
    /// `NS/NAME` of the service, where known.
    pub service: Option<String>,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// None: any protocol (Cilium 1.16's maps).
    pub proto: Option<L4>,
    /// iptables, nftables, ebpf, ebpf-socket, or cilium.
    pub source: String,
    /// The KUBE-SVC / service chain, or `rev-nat N`.
    pub object: String,
    pub backends: Vec<BackendView>,
}

impl FrontendView {
    /// The frontend as a learner types it: `10.96.0.10:80/TCP`.
    pub fn address(&self) -> String {
        let proto = self.proto.map_or("ANY", L4::kube);
        format!("{}:{}/{proto}", self.vip, self.port)
    }
}

/// A frontend read from kube-proxy's chains (iptables or nftables): each
/// backend as (endpoint, connections, probability, its chain).
fn chain_view(
    source: &str,
    service: Option<String>,
    (vip, port, proto): (Ipv4Addr, u16, L4),
    chain: String,
    backends: impl Iterator<Item = (Option<Endpoint>, u64, Option<f64>, String)>,
) -> FrontendView {
    FrontendView {
        service,
        vip,
        port,
        proto: Some(proto),
        source: source.to_owned(),
        object: chain,
        backends: backends
            .map(|(e, connections, probability, object)| BackendView {
                addr: e.as_ref().map(|e| e.addr),
                port: e.as_ref().map(|e| e.port),
                pod: None,
                connections: Some(connections),
                probability,
                object,
            })
            .collect(),
    }
}

/// Frontends from eBPF maps (ours or Cilium's) as views.
pub fn map_views(frontends: Vec<ebpf::MapFrontend>, source: &str) -> Vec<FrontendView> {
    frontends
        .into_iter()
        .map(|f| FrontendView {
            service: None,
            vip: f.vip,
            port: f.port,
            proto: f.proto,
            source: source.to_owned(),
            object: format!("rev-nat {}", f.rev_nat_index),
            backends: f
                .backends
                .into_iter()
                .map(|(id, e, conns)| BackendView {
                    addr: e.as_ref().map(|e| e.addr),
                    port: e.as_ref().map(|e| e.port),
                    pod: None,
                    connections: conns,
                    probability: None,
                    object: format!("backend {id}"),
                })
                .collect(),
        })
        .collect()
}

/// One translated connection: the client's flow to a frontend, and the
/// backend it was given, from whichever table holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow {
    /// `conntrack` (netfilter's DNAT), `LB4_CT` (the tc load balancer) or
    /// `LB4_REVERSE_SK` (socket-LB: a socket, no client port).
    pub table: &'static str,
    /// The node whose table it is (None: socket-LB's one table).
    pub node: Option<String>,
    pub proto: Option<L4>,
    pub client: Option<Ipv4Addr>,
    pub client_port: Option<u16>,
    pub client_pod: Option<String>,
    /// Socket-LB: the socket's cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<u64>,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub backend: Ipv4Addr,
    pub backend_port: u16,
    pub backend_pod: Option<String>,
}

/// The eBPF load balancer's translated connections in `maps` (tc:
/// `LB4_CT`; socket-LB: `LB4_REVERSE_SK`).
pub fn ebpf_flows(maps: &LbMaps, node: Option<&str>) -> Result<Vec<Flow>, ServiceError> {
    let addr = |be: u32| Ipv4Addr::from(be.to_ne_bytes());
    let mut out = Vec::new();
    for (k, e) in maps.connections_table()? {
        out.push(Flow {
            table: "LB4_CT",
            node: node.map(str::to_owned),
            proto: L4::from_number(k.proto),
            client: Some(addr(k.saddr)),
            client_port: Some(u16::from_be(k.sport)),
            client_pod: None,
            socket: None,
            vip: addr(k.daddr),
            port: u16::from_be(k.dport),
            backend: addr(e.backend_addr),
            backend_port: u16::from_be(e.backend_port),
            backend_pod: None,
        });
    }
    for (k, e) in maps.socket_table()? {
        out.push(Flow {
            table: "LB4_REVERSE_SK",
            node: None,
            proto: None,
            client: None,
            client_port: None,
            client_pod: None,
            socket: Some(k.cookie),
            vip: addr(e.address),
            port: u16::from_be(e.port),
            backend: addr(k.address),
            backend_port: u16::from_be(k.port),
            backend_pod: None,
        });
    }
    Ok(out)
}
