//! The built-in lab scenarios: what each builds and what it teaches.

use std::net::Ipv4Addr;

use crate::policy::model::{DEFAULT_NAMESPACE, Protocol};

/// A pod, the node (1-based) it runs on, and what Kubernetes knows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSpec {
    /// Its name in the lab (`LAB/NAME`), a DNS label.
    pub name: &'static str,
    pub node: u8,
    /// Its Kubernetes namespace.
    pub namespace: &'static str,
    /// Its Kubernetes labels when the lab comes up (none given: `app=NAME`).
    pub labels: &'static [(&'static str, &'static str)],
    /// The ports its application serves (its containers' ports).
    pub serves: &'static [(Protocol, u16)],
}

impl PodSpec {
    /// A pod in namespace `default`, labelled `app=NAME`, serving nothing
    /// in particular.
    pub const fn new(name: &'static str, node: u8) -> Self {
        Self {
            name,
            node,
            namespace: DEFAULT_NAMESPACE,
            labels: &[],
            serves: &[],
        }
    }
}

/// How pod traffic crosses between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// Routes to each node's pod CIDR via the node's underlay address.
    Native,
    /// VXLAN tunnels between nodes (as flannel's vxlan backend / Cilium tunnel mode).
    Overlay,
}

/// The kinds of fault `labctl lab trigger` can fire: each sends its own
/// packets (see `faults::trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// UDP to a port where nothing listens.
    ClosedPort,
    /// UDP to the port the node's nft rule drops.
    Policy,
    /// UDP with a spoofed source.
    RpFilter,
    /// UDP to an address the node has no route for.
    NoRoute,
    /// UDP with Don't Fragment over the uplink's MTU.
    TooBig,
    /// A TCP SYN with a corrupt checksum.
    BadCsum,
}

impl FaultKind {
    /// The name a learner types (`labctl lab trigger NAME`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ClosedPort => "closed-port",
            FaultKind::Policy => "policy",
            FaultKind::RpFilter => "rp-filter",
            FaultKind::NoRoute => "no-route",
            FaultKind::TooBig => "too-big",
            FaultKind::BadCsum => "bad-csum",
        }
    }
}

/// A fault planted in the `drops` scenario, triggered by `labctl lab trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// The drop reason the kernel reports for it.
    pub reason: &'static str,
    /// Where the drop happens: a pod or node name.
    pub at: &'static str,
    pub summary: &'static str,
}

#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// One line for `labctl lab list`.
    pub summary: &'static str,
    /// The concept it teaches, and what to try.
    pub teaches: &'static str,
    pub nodes: u8,
    pub pods: &'static [PodSpec],
    pub routing: Routing,
    /// Nodes have a default route to the world (false: only a route to the
    /// world's server network, so other destinations have no route).
    pub default_route: bool,
    /// A NetworkPolicy-like default deny between pods with one allow rule.
    pub policy: bool,
    /// MTU of the nodes' underlay links.
    pub uplink_mtu: u32,
    /// Strict reverse-path filtering (rp_filter=1) on the nodes.
    pub rp_filter: bool,
    pub faults: &'static [Fault],
    /// ClusterIP services, with the pods behind them (those pods run the
    /// service's app: an echo server answering with the pod's name).
    pub services: &'static [ServiceDef],
}

/// A service a scenario starts with (TCP and UDP on `port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDef {
    pub name: &'static str,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    pub backends: &'static [&'static str],
}

/// Where drop faults fire from: the client pod of the `drops` scenario.
pub const FAULT_SOURCE: &str = "pod-a";

/// The deathstar's labels (both replicas), as in Cilium's demo.
const DEATHSTAR: &[(&str, &str)] = &[("org", "empire"), ("class", "deathstar")];

/// The allowed flow of the `policy` scenario.
pub const POLICY_ALLOWED_PORT: u16 = 8080;

impl Fault {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "basic",
        summary: "one node, two pods on a bridge, pod -> world through masquerade",
        teaches: "How a CNI bridge plugin wires a pod: a veth pair with eth0 in the pod, the \
                  host end on the cni0 bridge, a /24 from the node's pod CIDR, a default route \
                  via the bridge's gateway address. Pods on one node talk over the bridge (L2); \
                  traffic to the world is routed by the node and masqueraded to the node's \
                  address, so the world server sees the node, not the pod. Try: \
                  `labctl lab traffic pod-a world --proto tcp`, `labctl conntrack list --netns \
                  basic-node1`, `ip netns exec basic-node1 nft list ruleset`.",
        nodes: 1,
        pods: &[PodSpec::new("pod-a", 1), PodSpec::new("pod-b", 1)],
        routing: Routing::Native,
        default_route: true,
        policy: false,
        uplink_mtu: 1500,
        rp_filter: false,
        services: &[],
        faults: &[],
    },
    Scenario {
        name: "two-node",
        summary: "two nodes, one pod each, native routing between pod CIDRs",
        teaches: "Each node owns a pod CIDR (10.244.N.0/24); the other nodes reach it through a \
                  route via that node's underlay address, as Calico/Cilium native routing or \
                  kube-router do. No encapsulation: the underlay sees pod addresses. Try: \
                  `labctl lab traffic pod-a pod-b`, `ip netns exec two-node-node1 ip route`.",
        nodes: 2,
        pods: &[PodSpec::new("pod-a", 1), PodSpec::new("pod-b", 2)],
        routing: Routing::Native,
        default_route: true,
        policy: false,
        uplink_mtu: 1500,
        rp_filter: false,
        services: &[],
        faults: &[],
    },
    Scenario {
        name: "overlay",
        summary: "two nodes joined by VXLAN (VNI 42, UDP 4789), pod MTU reduced by 50 bytes",
        teaches: "Pod packets between nodes are wrapped in VXLAN (outer IP + UDP 4789 + VXLAN \
                  header: 50 bytes) as flannel's vxlan backend and Cilium's tunnel mode do, so \
                  the underlay only sees node addresses. The tunnel's MTU is 1450, and so is \
                  the pods'. Bring it up with `--mtu 1500` to reproduce the MTU pitfall: full \
                  size packets from pods no longer fit the tunnel (`labctl lab traffic pod-a \
                  pod-b --size 1472` fails, `labctl trace` shows PKT_TOO_BIG on the node).",
        nodes: 2,
        pods: &[PodSpec::new("pod-a", 1), PodSpec::new("pod-b", 2)],
        routing: Routing::Overlay,
        default_route: true,
        policy: false,
        uplink_mtu: 1500,
        rp_filter: false,
        services: &[],
        faults: &[],
    },
    Scenario {
        name: "drops",
        summary: "one node with planted faults that each produce a distinct drop reason",
        teaches: "Each fault makes the kernel drop packets for a different reason. Run `sudo \
                  labctl trace --explain` in one terminal and `labctl lab trigger FAULT` in \
                  another. The node has rp_filter=1, an uplink MTU of 1280, a netfilter drop \
                  rule, and no default route (only the world's server network is routed).",
        nodes: 1,
        pods: &[PodSpec::new("pod-a", 1), PodSpec::new("pod-b", 1)],
        routing: Routing::Native,
        default_route: false,
        policy: false,
        uplink_mtu: 1280,
        rp_filter: true,
        services: &[],
        faults: &[
            Fault {
                kind: FaultKind::ClosedPort,
                reason: "NO_SOCKET",
                at: "pod-b",
                summary: "UDP from pod-a to pod-b port 9, where nothing listens",
            },
            Fault {
                kind: FaultKind::Policy,
                reason: "NETFILTER_DROP",
                at: "node1",
                summary: "UDP from pod-a to the world's port 7777, dropped by an nft rule on the node",
            },
            Fault {
                kind: FaultKind::RpFilter,
                reason: "IP_RPFILTER",
                at: "node1",
                summary: "UDP from pod-a with a spoofed source (198.51.100.7); the node's strict \
                          rp_filter would route replies elsewhere",
            },
            Fault {
                kind: FaultKind::NoRoute,
                reason: "IP_INNOROUTES",
                at: "node1",
                summary: "UDP from pod-a to 198.51.100.1, for which the node has no route",
            },
            Fault {
                kind: FaultKind::TooBig,
                reason: "PKT_TOO_BIG",
                at: "node1",
                summary: "1400-byte UDP with Don't Fragment from pod-a to the world, over the \
                          node's 1280-byte uplink",
            },
            Fault {
                kind: FaultKind::BadCsum,
                reason: "TCP_CSUM",
                at: "pod-b",
                summary: "a TCP SYN with a corrupt checksum from pod-a to pod-b port 8080",
            },
        ],
    },
    Scenario {
        name: "policy",
        summary: "default-deny between pods with one allow rule (pod-a -> pod-b TCP 8080)",
        teaches: "A NetworkPolicy-style default deny, done with netfilter on the node as \
                  iptables-based policy engines do it: bridged pod traffic passes the inet \
                  forward hook (the bridge has nf_call_iptables on, like br_netfilter in \
                  Kubernetes), established flows are accepted by conntrack, one rule allows \
                  pod-a -> pod-b on TCP 8080, everything else between pods is dropped \
                  (NETFILTER_DROP in `labctl trace`). Try: `labctl lab traffic pod-a pod-b \
                  --proto tcp --port 8080` (allowed) and `labctl lab traffic pod-c pod-b`.",
        nodes: 1,
        pods: &[
            PodSpec::new("pod-a", 1),
            PodSpec::new("pod-b", 1),
            PodSpec::new("pod-c", 1),
        ],
        routing: Routing::Native,
        default_route: true,
        policy: true,
        uplink_mtu: 1500,
        rp_filter: false,
        services: &[],
        faults: &[],
    },
    Scenario {
        name: "service",
        summary: "a ClusterIP with three backends on two nodes: kube-proxy or eBPF",
        teaches: "A Service is a virtual IP (10.96.0.10:80) that no interface has: something on \
                  the path must turn it into a backend pod's address. kube-proxy's iptables \
                  mode does it with a chain per service and per endpoint (KUBE-SERVICES -> \
                  KUBE-SVC -> KUBE-SEP, `statistic mode random`, DNAT) that every new \
                  connection walks; its nftables mode with one verdict-map lookup and \
                  `numgen random`; conntrack remembers the choice and rewrites the replies. \
                  Cilium replaces all of it with eBPF hash maps: per packet at the pod's veth \
                  (`--kube-proxy ebpf`), or once per connection in connect() itself \
                  (socket-LB, `--kube-proxy ebpf-socket`), so the wire never carries the VIP. \
                  Try: `labctl svc list`, `labctl lab traffic client web --proto tcp -c 30`, \
                  `labctl svc backend del web web-1`.",
        nodes: 2,
        pods: &[
            PodSpec::new("client", 1),
            PodSpec {
                labels: &[("app", "web")],
                ..PodSpec::new("web-1", 1)
            },
            PodSpec {
                labels: &[("app", "web")],
                ..PodSpec::new("web-2", 2)
            },
            PodSpec {
                labels: &[("app", "web")],
                ..PodSpec::new("web-3", 2)
            },
        ],
        routing: Routing::Native,
        default_route: true,
        policy: false,
        uplink_mtu: 1500,
        rp_filter: false,
        services: &[ServiceDef {
            name: "web",
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            target_port: 8080,
            backends: &["web-1", "web-2", "web-3"],
        }],
        faults: &[],
    },
    Scenario {
        name: "starwars",
        summary: "Cilium's Star Wars demo: deathstar, tiefighter, xwing and coredns for network policy",
        teaches: "Network policy as Cilium's getting-started demo teaches it. The Empire's \
                  deathstar (two replicas, org=empire,class=deathstar) serves TCP 80; a \
                  tiefighter (org=empire) and an xwing (org=alliance) want to land on it; \
                  coredns in namespace kube-system (k8s-app=kube-dns) answers DNS on 53. Until \
                  a policy selects a pod, everything reaches it; once one does, only what a \
                  policy allows. Policies select by labels, not addresses, and Cilium turns \
                  each distinct set of labels into a security identity. `--policy-mode` says \
                  who enforces: netfilter (as Calico, kube-router) or ebpf (as Cilium). Try: \
                  `labctl policy apply -f FILE` with a NetworkPolicy or CiliumNetworkPolicy, \
                  `labctl policy trace --from xwing --to deathstar-1 --port 80`, `labctl lab \
                  pod label xwing org=empire`.",
        nodes: 2,
        pods: &[
            PodSpec {
                labels: DEATHSTAR,
                serves: &[(Protocol::Tcp, 80)],
                ..PodSpec::new("deathstar-1", 1)
            },
            PodSpec {
                labels: &[("org", "empire"), ("class", "tiefighter")],
                ..PodSpec::new("tiefighter", 1)
            },
            PodSpec {
                labels: DEATHSTAR,
                serves: &[(Protocol::Tcp, 80)],
                ..PodSpec::new("deathstar-2", 2)
            },
            PodSpec {
                labels: &[("org", "alliance"), ("class", "xwing")],
                ..PodSpec::new("xwing", 2)
            },
            PodSpec {
                namespace: "kube-system",
                labels: &[("k8s-app", "kube-dns")],
                serves: &[(Protocol::Udp, 53), (Protocol::Tcp, 53)],
                ..PodSpec::new("coredns", 2)
            },
        ],
        routing: Routing::Native,
        default_route: true,
        policy: false,
        uplink_mtu: 1500,
        rp_filter: false,
        services: &[],
        faults: &[],
    },
];

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_sit_on_existing_nodes_with_valid_kubernetes_names_and_labels() {
        use crate::policy::selector::{check_dns_label, check_key, check_value};
        for s in SCENARIOS {
            for p in s.pods {
                assert!(p.node >= 1 && p.node <= s.nodes, "{}: {}", s.name, p.name);
                assert_eq!(check_dns_label(p.name), Ok(()), "{}: {}", s.name, p.name);
                assert_eq!(check_dns_label(p.namespace), Ok(()), "{}", p.name);
                for (k, v) in p.labels {
                    assert_eq!(check_key(k).and(check_value(v)), Ok(()), "{}", p.name);
                }
                assert_eq!(
                    s.pods.iter().filter(|q| q.name == p.name).count(),
                    1,
                    "{}: {}",
                    s.name,
                    p.name
                );
            }
        }
    }

    #[test]
    fn starwars_is_cilium_s_demo_on_two_nodes_and_two_namespaces() {
        let s = find("starwars").unwrap();
        assert_eq!(s.nodes, 2);
        let of = |name: &str| s.pods.iter().find(|p| p.name == name).unwrap();
        assert_eq!(of("deathstar-1").labels, of("deathstar-2").labels);
        assert_ne!(of("deathstar-1").node, of("deathstar-2").node);
        assert_eq!(
            of("xwing").labels,
            [("org", "alliance"), ("class", "xwing")]
        );
        assert_eq!(of("coredns").namespace, "kube-system");
        assert_eq!(
            of("coredns").serves,
            [(Protocol::Udp, 53), (Protocol::Tcp, 53)]
        );
        assert!(!s.policy, "its policies are the learner's");
    }

    #[test]
    fn faults_fire_from_an_existing_pod_and_land_on_a_lab_member() {
        for s in SCENARIOS.iter().filter(|s| !s.faults.is_empty()) {
            assert!(s.pods.iter().any(|p| p.name == FAULT_SOURCE));
            for f in s.faults {
                let node = f.at.strip_prefix("node").and_then(|n| n.parse::<u8>().ok());
                assert!(
                    s.pods.iter().any(|p| p.name == f.at) || node.is_some_and(|n| n <= s.nodes),
                    "{}",
                    f.name()
                );
            }
        }
    }
}
