//! Kubernetes services, implemented four ways side by side: kube-proxy's
//! iptables and nftables modes (netfilter chains, DNAT and conntrack), and
//! Cilium-style eBPF load balancing per packet (tc) or per connection
//! (socket-LB). Whatever the mode, [`sync`] writes a list of [`Frontend`]s
//! into the nodes and [`read`] reads them back from the kernel (chains and
//! their counters, or the maps), as `svc list` shows them.

pub mod cilium;
pub mod ebpf;
pub mod iptables;
pub mod model;
pub mod nftables;

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::{
    ebpf::{error::ProgramSetupError, lb::LbMaps, pins},
    kernel::{
        cgroup::CgroupError,
        netns::{NetNs, NetnsError},
        tool::{self, ToolError},
    },
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

/// Checks that `mode` can run here before anything is built.
pub fn check_mode(mode: KubeProxyMode) -> Result<(), ServiceError> {
    match mode {
        KubeProxyMode::Iptables => ["iptables-restore", "iptables-save"]
            .into_iter()
            .try_for_each(|t| {
                which::which(t)
                    .map(drop)
                    .map_err(|_| ServiceError::ToolMissing(t))
            }),
        KubeProxyMode::Nftables => which::which("nft")
            .map(drop)
            .map_err(|_| ServiceError::ToolMissing("nft")),
        KubeProxyMode::Ipvs => Err(if std::path::Path::new("/proc/net/ip_vs").exists() {
            ServiceError::IpvsNotBuilt
        } else {
            ServiceError::NoIpvs
        }),
        KubeProxyMode::Ebpf | KubeProxyMode::EbpfSocket => Ok(()),
    }
}

/// Where a mode's services live.
pub struct Datapath {
    pub mode: KubeProxyMode,
    /// The nodes' namespaces (netfilter chains, tc maps are per node).
    pub nodes: Vec<NetNs>,
    /// Socket-LB's pin directory (one per lab).
    pub socket_pins: Option<PathBuf>,
    /// The pod CIDR: traffic from outside it is masqueraded (kube-proxy's
    /// --cluster-cidr).
    pub cluster_cidr: String,
}

/// What a sync changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Rules and map elements (netfilter) or map entries (eBPF) written or
    /// deleted, on every node together.
    pub changes: usize,
    pub nodes: usize,
}

impl Datapath {
    fn lb_dirs(&self) -> Result<Vec<PathBuf>, ServiceError> {
        Ok(match (&self.mode, &self.socket_pins) {
            (KubeProxyMode::EbpfSocket, Some(dir)) => vec![dir.clone()],
            _ => self
                .nodes
                .iter()
                .map(|ns| Ok(pins::lb(ns.inode()?)))
                .collect::<Result<_, ServiceError>>()?,
        })
    }

    /// What each change is, in words (`svc` prints it).
    pub fn change_unit(&self) -> &'static str {
        match self.mode {
            KubeProxyMode::Iptables => "changed iptables rules (in a whole-table rewrite)",
            KubeProxyMode::Nftables => "nft rules and map elements",
            _ => "eBPF map entries",
        }
    }
}

/// Writes `frontends` into every node of `dp` (replacing what was there).
pub fn sync(dp: &Datapath, frontends: &[Frontend]) -> Result<SyncReport, ServiceError> {
    let mut changes = 0;
    match dp.mode {
        KubeProxyMode::Iptables => {
            for ns in &dp.nodes {
                let mut save = tool::run(ns, "iptables-save", &["-c", "-t", "nat"], None)?;
                save.push_str(&tool::run(ns, "iptables-save", &["-t", "filter"], None)?);
                let (input, n) = iptables::sync_input(frontends, &dp.cluster_cidr, &save);
                tool::run(ns, "iptables-restore", &["--counters"], Some(&input))?;
                changes += n;
            }
        }
        KubeProxyMode::Nftables => {
            for ns in &dp.nodes {
                let existing = nft_listing(ns)?;
                let (input, n) =
                    nftables::sync_input(frontends, &dp.cluster_cidr, existing.as_ref());
                tool::run(ns, "nft", &["-f", "-"], Some(&input))?;
                changes += n;
            }
        }
        KubeProxyMode::Ipvs => return Err(ServiceError::IpvsNotBuilt),
        KubeProxyMode::Ebpf | KubeProxyMode::EbpfSocket => {
            for dir in dp.lb_dirs()? {
                let mut maps = LbMaps::open(&dir)?;
                changes += ebpf::sync(&mut maps, frontends)?;
            }
        }
    }
    Ok(SyncReport {
        changes,
        nodes: dp.nodes.len(),
    })
}

/// `nft -j list table ip kube-proxy` in `ns`; None when there is no table.
fn nft_listing(ns: &NetNs) -> Result<Option<serde_json::Value>, ServiceError> {
    match tool::run(
        ns,
        "nft",
        &["-j", "list", "table", "ip", nftables::TABLE],
        None,
    ) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).map_err(ServiceError::NftJson)?,
        )),
        Err(ToolError::Refused { stderr, .. }) if stderr.contains("No such file") => Ok(None),
        Err(e) => Err(e.into()),
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

/// Adds `b`'s connection counts into `into` (the same frontend seen on
/// another node), matching backends by address and port.
fn merge(into: &mut FrontendView, b: &FrontendView) {
    for nb in &b.backends {
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

/// Reads every frontend of `dp` back from the kernel, connection counts
/// added up over the nodes.
pub fn read(dp: &Datapath) -> Result<Vec<FrontendView>, ServiceError> {
    let mut per_node: Vec<Vec<FrontendView>> = Vec::new();
    match dp.mode {
        KubeProxyMode::Iptables => {
            for ns in &dp.nodes {
                let save = tool::run(ns, "iptables-save", &["-c", "-t", "nat"], None)?;
                per_node.push(
                    iptables::parse(&save)
                        .into_iter()
                        .map(|f| {
                            let service = f.name.rsplit_once(':').map(|(n, _)| n.to_owned());
                            chain_view(dp.mode, service, (f.vip, f.port, f.proto), f.chain, {
                                f.endpoints.into_iter().map(|e| {
                                    let p = Some(e.probability.unwrap_or(1.0));
                                    (e.endpoint, e.connections, p, e.chain)
                                })
                            })
                        })
                        .collect(),
                );
            }
        }
        KubeProxyMode::Nftables => {
            for ns in &dp.nodes {
                let Some(listing) = nft_listing(ns)? else {
                    per_node.push(Vec::new());
                    continue;
                };
                per_node.push(
                    nftables::parse(&listing)
                        .into_iter()
                        .map(|f| {
                            let service = nftables::service_of(&f.chain);
                            chain_view(dp.mode, service, (f.vip, f.port, f.proto), f.chain, {
                                f.endpoints
                                    .into_iter()
                                    .map(|e| (e.endpoint, e.connections, None, e.chain))
                            })
                        })
                        .collect(),
                );
            }
        }
        KubeProxyMode::Ipvs => return Err(ServiceError::IpvsNotBuilt),
        KubeProxyMode::Ebpf | KubeProxyMode::EbpfSocket => {
            for dir in dp.lb_dirs()? {
                let maps = LbMaps::open(&dir)?;
                per_node.push(map_views(ebpf::read(&maps)?, dp.mode.as_str()));
            }
        }
    }
    let mut merged: BTreeMap<(Ipv4Addr, u16, Option<L4>), FrontendView> = BTreeMap::new();
    for f in per_node.into_iter().flatten() {
        match merged.get_mut(&(f.vip, f.port, f.proto)) {
            Some(m) => merge(m, &f),
            None => {
                merged.insert((f.vip, f.port, f.proto), f);
            }
        }
    }
    Ok(merged.into_values().collect())
}

/// kube-proxy's services in any namespace (a kind node's own, for
/// instance): its iptables chains and its nftables table, whichever exist
/// (a missing tool reads as nothing there).
pub fn read_netns(ns: &NetNs) -> Result<Vec<FrontendView>, ServiceError> {
    let mut out = Vec::new();
    for (mode, tool) in [
        (KubeProxyMode::Iptables, "iptables-save"),
        (KubeProxyMode::Nftables, "nft"),
    ] {
        if which::which(tool).is_err() {
            continue;
        }
        let dp = Datapath {
            mode,
            nodes: vec![NetNs::at(ns.name(), ns.path())],
            socket_pins: None,
            cluster_cidr: String::new(),
        };
        out.extend(read(&dp)?);
    }
    Ok(out)
}

/// A frontend read from kube-proxy's chains (iptables or nftables): each
/// backend as (endpoint, connections, probability, its chain).
fn chain_view(
    mode: KubeProxyMode,
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
        source: mode.to_string(),
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

/// The tables of `dp`'s eBPF load balancers, with the node each is on.
pub fn ebpf_tables(dp: &Datapath, nodes: &[String]) -> Result<Vec<Flow>, ServiceError> {
    let mut out = Vec::new();
    match dp.mode {
        KubeProxyMode::EbpfSocket => {
            for dir in dp.lb_dirs()? {
                out.extend(ebpf_flows(&LbMaps::open(&dir)?, None)?);
            }
        }
        KubeProxyMode::Ebpf => {
            for (dir, node) in dp.lb_dirs()?.iter().zip(nodes) {
                out.extend(ebpf_flows(&LbMaps::open(dir)?, Some(node))?);
            }
        }
        _ => {}
    }
    Ok(out)
}
