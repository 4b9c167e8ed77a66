//! What a service is, independent of who implements it: a name, a virtual
//! IP and port, the protocols, and the pods behind it. Every datapath
//! (kube-proxy's iptables or nftables chains, the eBPF maps) is rendered
//! from the resolved [`Frontend`]s.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Kubernetes' default service CIDR (kubeadm, kind): 10.96.0.0/12.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
/// The port the scenario's app listens on in each server pod.
pub const APP_PORT: u16 = 8080;

/// Who implements services on the nodes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum KubeProxyMode {
    /// kube-proxy's iptables mode: KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*
    /// with `statistic mode random` and DNAT.
    #[default]
    Iptables,
    /// kube-proxy's nftables mode: a verdict map of service IPs, `numgen
    /// random` between endpoint chains.
    Nftables,
    /// kube-proxy's IPVS mode (needs a kernel with IPVS).
    Ipvs,
    /// Cilium-style per-packet eBPF load balancing at the pods' veths.
    Ebpf,
    /// Cilium's socket-LB: connect()/sendmsg() rewritten in cgroup programs.
    EbpfSocket,
}

impl KubeProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KubeProxyMode::Iptables => "iptables",
            KubeProxyMode::Nftables => "nftables",
            KubeProxyMode::Ipvs => "ipvs",
            KubeProxyMode::Ebpf => "ebpf",
            KubeProxyMode::EbpfSocket => "ebpf-socket",
        }
    }

    /// kube-proxy's chains (iptables, nftables): see
    /// `ServiceDatapath::netfilter`.
    pub fn is_netfilter(self) -> bool {
        super::datapath::about(self).netfilter()
    }
}

impl std::fmt::Display for KubeProxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's L4 protocol.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    /// `tcp` / `udp`, as nft and iptables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }

    /// `TCP` / `UDP`, as Kubernetes spells it.
    pub fn kube(self) -> &'static str {
        match self {
            L4::Tcp => "TCP",
            L4::Udp => "UDP",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => lab_common::proto::TCP,
            L4::Udp => lab_common::proto::UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            lab_common::proto::TCP => Some(L4::Tcp),
            lab_common::proto::UDP => Some(L4::Udp),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some(L4::Tcp),
            "udp" | "17" => Some(L4::Udp),
            _ => None,
        }
    }
}

/// A service as the lab records it (what `svc add` creates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    pub protocols: Vec<L4>,
    /// Backend pods, by name (in the service's lab).
    pub backends: Vec<String>,
}

/// One backend of a frontend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A service port with one protocol and its resolved backends: the unit
/// kube-proxy makes a KUBE-SVC chain for, and Cilium a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The Kubernetes namespace (the lab's name).
    pub namespace: String,
    pub service: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: L4,
    pub backends: Vec<Endpoint>,
}

impl Frontend {
    /// kube-proxy's ServicePortName string: `NS/NAME:PORTNAME` (ports are
    /// named after their protocol here: `tcp`, `udp`).
    pub fn port_name(&self) -> String {
        format!(
            "{}/{}:{}",
            self.namespace,
            self.service,
            self.proto.as_str()
        )
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "service name `{0}` is not valid: use 1 to 63 lowercase letters, digits or dashes, starting with a letter (a DNS label, as Kubernetes requires)"
    )]
    BadName(String),
    #[error("{0} is not in the service CIDR 10.96.0.0/12; pick an address such as 10.96.0.20")]
    VipOutsideCidr(Ipv4Addr),
    #[error("{vip} is already the address of service `{service}`; pick another --vip")]
    VipTaken { vip: Ipv4Addr, service: String },
    #[error(
        "service `{0}` already exists; change it with `labctl svc backend add|del`, or delete it first"
    )]
    Exists(String),
    #[error(
        "no service `{name}` in lab `{lab}`; the services are: {known} (see `labctl svc list`)"
    )]
    NoSuchService {
        name: String,
        lab: String,
        known: String,
    },
    #[error("`{pod}` is not a pod of lab `{lab}`; the pods are: {known}")]
    NoSuchPod {
        pod: String,
        lab: String,
        known: String,
    },
    #[error("`{pod}` is already a backend of service `{service}`")]
    AlreadyBackend { pod: String, service: String },
    #[error("`{pod}` is not a backend of service `{service}`; its backends are: {known}")]
    NotBackend {
        pod: String,
        service: String,
        known: String,
    },
    #[error(
        "{vip} is the {what} address of the service CIDR 10.96.0.0/12, which no service may use; pick an address such as 10.96.0.20"
    )]
    VipReserved { vip: Ipv4Addr, what: &'static str },
    #[error("pod `{0}` is given more than once; name each backend once")]
    DuplicateBackend(String),
    #[error(
        "`{spec}` is a pod of lab `{other}`, but the service is in lab `{lab}`; a service's backends are its own lab's pods: give POD or {lab}/POD"
    )]
    OtherLab {
        spec: String,
        other: String,
        lab: String,
    },
    #[error("the service CIDR has no free address left")]
    CidrFull,
}

/// Checks a service name (a DNS-1035 label, as Kubernetes).
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName(name.to_owned()))
    }
}

/// Whether `addr` is in the service CIDR.
pub fn in_service_cidr(addr: Ipv4Addr) -> bool {
    let (net, len) = SERVICE_CIDR;
    u32::from(addr) >> (32 - len) == u32::from(net) >> (32 - len)
}

/// A service address: in the service CIDR, and neither its network nor
/// its broadcast address.
pub fn check_vip(addr: Ipv4Addr) -> Result<(), SpecError> {
    if !in_service_cidr(addr) {
        return Err(SpecError::VipOutsideCidr(addr));
    }
    let host = u32::from(addr) & ((1u32 << (32 - SERVICE_CIDR.1)) - 1);
    let what = match host {
        0 => "network",
        h if h == (1u32 << (32 - SERVICE_CIDR.1)) - 1 => "broadcast",
        _ => return Ok(()),
    };
    Err(SpecError::VipReserved { vip: addr, what })
}

/// Backend pods as typed (`POD` or `LAB/POD`) → the pods of lab `lab`,
/// each once: a `LAB/` naming another lab, or a pod twice, is refused.
pub fn backend_pods(lab: &str, specs: &[String]) -> Result<Vec<String>, SpecError> {
    let mut pods: Vec<String> = Vec::new();
    for spec in specs {
        let pod = backend_pod(lab, spec)?;
        if pods.contains(&pod) {
            return Err(SpecError::DuplicateBackend(pod));
        }
        pods.push(pod);
    }
    Ok(pods)
}

/// One backend pod as typed (`POD` or `LAB/POD`) → a pod of lab `lab`.
pub fn backend_pod(lab: &str, spec: &str) -> Result<String, SpecError> {
    match spec.split_once('/') {
        Some((l, pod)) if l == lab => Ok(pod.to_owned()),
        Some((other, _)) => Err(SpecError::OtherLab {
            spec: spec.to_owned(),
            other: other.to_owned(),
            lab: lab.to_owned(),
        }),
        None => Ok(spec.to_owned()),
    }
}

/// The first free address from 10.96.0.10 on (10.96.0.1 is the API
/// server's and .10 kube-dns' in a real cluster; a lab has neither).
pub fn free_vip(specs: &[ServiceSpec]) -> Result<Ipv4Addr, SpecError> {
    let start = u32::from(Ipv4Addr::new(10, 96, 0, 10));
    let end = u32::from(SERVICE_CIDR.0) | ((1u32 << (32 - SERVICE_CIDR.1)) - 2);
    (start..=end)
        .map(Ipv4Addr::from)
        .find(|a| specs.iter().all(|s| s.vip != *a))
        .ok_or(SpecError::CidrFull)
}

/// base32(sha256(s)), as kube-proxy names its chains.
pub fn kube_hash(s: &str) -> String {
    use sha2::Digest as _;
    data_encoding::BASE32.encode(&sha2::Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_checked_as_kubernetes_does() {
        assert!(validate_name("web").is_ok());
        for bad in ["", "Web", "1web", "web-", "we_b", "a/b"] {
            assert_eq!(validate_name(bad), Err(SpecError::BadName(bad.into())));
        }
        assert!(in_service_cidr(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!in_service_cidr(Ipv4Addr::new(10, 112, 0, 1)));
        let taken = ServiceSpec {
            name: "web".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            target_port: 8080,
            protocols: vec![L4::Tcp],
            backends: vec![],
        };
        assert_eq!(free_vip(&[taken]).unwrap(), Ipv4Addr::new(10, 96, 0, 11));
        assert!(check_vip(Ipv4Addr::new(10, 96, 0, 1)).is_ok());
        assert!(check_vip(Ipv4Addr::new(10, 111, 255, 254)).is_ok());
        for (vip, what) in [
            ((10, 96, 0, 0), "network"),
            ((10, 111, 255, 255), "broadcast"),
        ] {
            let vip = Ipv4Addr::new(vip.0, vip.1, vip.2, vip.3);
            assert_eq!(check_vip(vip), Err(SpecError::VipReserved { vip, what }));
        }
        assert_eq!(
            check_vip(Ipv4Addr::new(10, 112, 0, 0)),
            Err(SpecError::VipOutsideCidr(Ipv4Addr::new(10, 112, 0, 0)))
        );
    }

    #[test]
    fn backends_are_this_labs_pods_each_once() {
        let s = |v: &[&str]| v.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            backend_pods("svc", &s(&["web-1", "svc/web-2"])).unwrap(),
            ["web-1", "web-2"]
        );
        assert_eq!(
            backend_pods("svc", &s(&["web-1", "web-1", "web-2"])),
            Err(SpecError::DuplicateBackend("web-1".into()))
        );
        assert_eq!(
            backend_pods("svc", &s(&["web-1", "svc/web-1"])),
            Err(SpecError::DuplicateBackend("web-1".into()))
        );
        assert!(matches!(
            backend_pods("svc", &s(&["other/web-1"])),
            Err(SpecError::OtherLab { .. })
        ));
        assert!(backend_pods("svc", &[]).unwrap().is_empty());
    }

    #[test]
    fn chain_hashes_are_kube_proxys() {
        // The names kube-proxy's own tests expect for service ns1/svc1 port
        // p80/TCP and endpoint 10.180.0.1:80 (pkg/proxy/iptables and
        // pkg/proxy/nftables proxier_test.go).
        assert_eq!(&kube_hash("ns1/svc1:p80tcp")[..16], "XPGD46QRK7WJZT7O");
        assert_eq!(
            &kube_hash("ns1/svc1:p80tcp10.180.0.1:80")[..16],
            "SXIVWICOYRO3J4NJ"
        );
        assert_eq!(&kube_hash("ns1/svc1/tcp/p80")[..8], "ULMVA6XW");
        assert_eq!(
            &kube_hash("ns1/svc1/tcp/p80__10.180.0.1/80")[..8],
            "5OJB2KTY"
        );
    }
}
