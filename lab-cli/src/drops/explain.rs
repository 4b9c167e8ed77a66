//! What a drop reason means, why it happens in a Kubernetes / CNI setting,
//! and how to confirm and fix it. Used by `labctl explain` and `trace --explain`.

/// One reason's explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// Reason name without the `SKB_DROP_REASON_` prefix.
    pub reason: &'static str,
    pub meaning: &'static str,
    pub causes: &'static str,
    /// Commands that confirm and fix it.
    pub commands: &'static [&'static str],
}

/// Finds the explanation of `reason` (any case, with or without prefix).
pub fn lookup(reason: &str) -> Option<&'static Explanation> {
    let r = reason.to_ascii_uppercase();
    let r = super::reasons::short_name(&r);
    EXPLANATIONS.iter().find(|e| e.reason == r)
}

pub fn all() -> &'static [Explanation] {
    EXPLANATIONS
}

const fn e(
    reason: &'static str,
    meaning: &'static str,
    causes: &'static str,
    commands: &'static [&'static str],
) -> Explanation {
    Explanation {
        reason,
        meaning,
        causes,
        commands,
    }
}

static EXPLANATIONS: &[Explanation] = &[
    e(
        "NOT_SPECIFIED",
        "The code that freed the packet gave no reason (older call sites still use plain kfree_skb).",
        "Any path not yet annotated; look at the location to see which function dropped it.",
        &[
            "labctl trace --output json   # the location field says which function",
            "labctl trace --exclude-reason NOT_SPECIFIED   # hide them",
        ],
    ),
    e(
        "NO_SOCKET",
        "The packet reached this host's transport layer but no socket listens on its destination port.",
        "A Service targetPort that does not match the container port; the pod's process not started or bound to 127.0.0.1 only; a probe hitting a closed port; UDP replies arriving after the client closed.",
        &[
            "ss -lntup   # in the pod: ip netns exec POD ss -lntup",
            "kubectl get endpoints SVC; compare targetPort with containerPort",
        ],
    ),
    e(
        "NETFILTER_DROP",
        "A netfilter rule (iptables / nftables) dropped the packet.",
        "A NetworkPolicy implemented with iptables (Calico, kube-router), a kube-proxy REJECT/DROP rule for a Service without endpoints, a host firewall, conntrack INVALID packets dropped.",
        &[
            "iptables-save -c | grep -E 'DROP|REJECT'   # counters show the rule that matches",
            "nft list ruleset",
            "conntrack -S   # invalid counters",
        ],
    ),
    e(
        "POLICY_DENIED",
        "A network policy dropped the packet: a policy selects the pod in this direction and none of its rules allows the packet (default deny). Cilium's drop reason 133; labctl reads it from the mark the policy datapath set before dropping (the kernel's own reason, NETFILTER_DROP or TC_INGRESS/TC_EGRESS, is kept beside it).",
        "A policy selecting the pod whose rules miss this peer or port: a podSelector and a namespaceSelector written as two peers instead of one, a port or protocol left out, DNS not allowed under a default-deny egress policy, a label changed on the peer.",
        &[
            "labctl policy trace --from SRC --to DST --port N   # the policies and the rule that decide",
            "labctl policy list   # what selects the pod",
            "labctl trace --reason POLICY_DENIED   # only policy drops",
        ],
    ),
    e(
        "POLICY_DENY",
        "A deny rule of a network policy (a CiliumNetworkPolicy's ingressDeny / egressDeny) matched the packet; deny rules win over every allow. Cilium's drop reason 181 (\"Policy denied by denylist\").",
        "An ingressDeny / egressDeny rule broader than meant (a whole entity or CIDR), or a deny rule still in place after the allow it was meant to narrow was changed.",
        &[
            "labctl policy trace --from SRC --to DST --port N   # names the deny rule",
            "labctl policy delete NAME   # the policy the trace names",
        ],
    ),
    e(
        "IP_RPFILTER",
        "Reverse-path filtering: the source address would not be routed back out of the interface the packet came in on.",
        "Asymmetric routing between nodes, a pod CIDR missing from a node's routes, a spoofed or SNAT-less source, multi-homed nodes with rp_filter=1.",
        &[
            "sysctl net.ipv4.conf.all.rp_filter net.ipv4.conf.IFACE.rp_filter",
            "ip route get DST from SRC iif IFACE   # fails while the filter drops it",
            "ip route get SRC   # replies must leave by IFACE: make the paths symmetric",
            "sysctl -w net.ipv4.conf.IFACE.rp_filter=2   # loose: also lets forged sources in",
        ],
    ),
    e(
        "IP_INNOROUTES",
        "No route to forward an incoming packet to its destination.",
        "A node without a route to another node's pod CIDR (native routing), a missing VXLAN/overlay route, a deleted pod whose /32 route vanished.",
        &[
            "ip route get DST",
            "ip route show; compare with the pod CIDRs of every node",
        ],
    ),
    e(
        "IP_OUTNOROUTES",
        "No route for a locally generated packet.",
        "A pod without a default route (CNI setup incomplete), a host missing the route to a Service or pod network.",
        &["ip route get DST   # inside the pod: ip netns exec POD ip route"],
    ),
    e(
        "IP_INHDR",
        "The IPv4 header is invalid (bad version, length, or TTL expired while forwarding).",
        "Routing loops between nodes (TTL reaches 0), broken encapsulation, a misbehaving middlebox.",
        &[
            "tcpdump -ni IFACE -v 'ip[8] < 2'   # TTL about to expire",
            "ip route get DST on each hop to find the loop",
        ],
    ),
    e(
        "IP_CSUM",
        "The IPv4 header checksum is wrong.",
        "A NIC or virtual device with broken checksum offload, a program that rewrote the header without fixing the checksum.",
        &[
            "ethtool -k IFACE | grep checksum",
            "ethtool -K IFACE rx off tx off   # to test",
        ],
    ),
    e(
        "TCP_CSUM",
        "The TCP checksum is wrong.",
        "Checksum offload on veth/VXLAN misconfigured, an eBPF NAT program that forgot the incremental checksum update (l4_csum_replace), corrupted packets.",
        &[
            "tcpdump -ni IFACE -vv tcp | grep -i 'incorrect'",
            "ethtool -K IFACE tx off",
        ],
    ),
    e(
        "UDP_CSUM",
        "The UDP checksum is wrong.",
        "Same as TCP_CSUM; VXLAN with zero/bad outer checksums on some setups.",
        &["tcpdump -ni IFACE -vv udp | grep -i 'bad udp cksum'"],
    ),
    e(
        "OTHERHOST",
        "The frame's destination MAC was not this host's, so the stack ignores it.",
        "A bridge or veth delivering frames for another MAC, stale ARP/neighbour entries after a pod moved, promiscuous capture.",
        &["ip neigh show", "bridge fdb show br cni0"],
    ),
    e(
        "PKT_TOO_SMALL",
        "The packet is shorter than its headers claim.",
        "Truncated packets, broken encapsulation, a buggy program shrinking the packet.",
        &["tcpdump -ni IFACE -e -v"],
    ),
    e(
        "PKT_TOO_BIG",
        "The packet exceeds the MTU and cannot be fragmented (DF set, or IPv6).",
        "The overlay MTU pitfall: pods with MTU 1500 over a VXLAN tunnel that only carries 1450; PMTU discovery blocked by a firewall dropping ICMP 'fragmentation needed'.",
        &[
            "ip link show | grep mtu   # pod eth0 vs. tunnel device",
            "labctl lab traffic POD DST --size 1472   # DF set: lower --size until it passes",
        ],
    ),
    e(
        "NEIGH_FAILED",
        "Neighbour (ARP/NDP) resolution failed, so the packet could not be sent.",
        "The next hop is down or unreachable on L2, a wrong gateway address in the pod, a bridge not forwarding ARP.",
        &[
            "ip neigh show   # FAILED / INCOMPLETE entries",
            "arping -I IFACE NEXTHOP",
        ],
    ),
    e(
        "NEIGH_QUEUEFULL",
        "Too many packets were waiting for an ARP/NDP answer.",
        "Bursts towards an unresolved next hop, a large number of peers with small unres_qlen.",
        &[
            "sysctl net.ipv4.neigh.default.unres_qlen_bytes",
            "ip -s neigh show",
        ],
    ),
    e(
        "NEIGH_DEAD",
        "The neighbour entry was being destroyed.",
        "Interfaces going down (pods deleted) while traffic is in flight.",
        &["ip monitor neigh"],
    ),
    e(
        "QDISC_DROP",
        "The queueing discipline dropped the packet (queue full or policy).",
        "Egress congestion on a node, a shaping qdisc (bandwidth plugin, tbf) limiting a pod.",
        &["tc -s qdisc show dev IFACE   # dropped counter"],
    ),
    e(
        "TC_INGRESS",
        "A tc program or filter on ingress dropped the packet (TC_ACT_SHOT).",
        "An eBPF datapath (Cilium) enforcing policy at tc ingress, a tc police/drop filter.",
        &["tc filter show dev IFACE ingress", "bpftool net show"],
    ),
    e(
        "TC_EGRESS",
        "A tc program or filter on egress dropped the packet.",
        "eBPF policy or NAT on the pod's or node's egress (Cilium, labctl's eBPF masquerading: a full NAT table or no free port, counted in `labctl masq nat-table`).",
        &["tc filter show dev IFACE egress", "bpftool net show"],
    ),
    e(
        "XDP",
        "An XDP program returned XDP_DROP (or the XDP path failed).",
        "DDoS or load-balancer programs (Cilium XDP, Katran) dropping by policy.",
        &["ip link show IFACE | grep xdp", "bpftool net show"],
    ),
    e(
        "SOCKET_FILTER",
        "A socket filter (classic or eBPF) attached to the receiving socket rejected the packet.",
        "tcpdump-style filters on the socket, SO_ATTACH_BPF programs, reuseport selection programs.",
        &["ss -0 -p   # packet sockets", "bpftool prog show"],
    ),
    e(
        "SOCKET_RCVBUFF",
        "The receiving socket's buffer was full.",
        "An application reading too slowly (UDP floods, DNS servers under load), small net.core.rmem_default.",
        &[
            "ss -uampn   # Recv-Q and skmem",
            "netstat -su | grep -i 'receive buffer errors'",
            "sysctl -w net.core.rmem_max=...",
        ],
    ),
    e(
        "SOCKET_CLOSE",
        "The socket was closed with data still queued.",
        "Applications closing connections while the peer still sends.",
        &["ss -tanp state close-wait"],
    ),
    e(
        "TCP_INVALID_SEQUENCE",
        "The TCP segment's sequence number is outside the receive window.",
        "Stale connections after NAT or conntrack state was lost (a node restart, a CT table flush), mismatched NAT on one direction only.",
        &[
            "conntrack -L -p tcp --dport PORT",
            "tcpdump -ni IFACE 'tcp port PORT' -S",
        ],
    ),
    e(
        "TCP_RESET",
        "The segment was dropped because the connection was reset.",
        "A peer or middlebox sent RST (closed port, NAT timeout), segments arriving after the reset.",
        &["tcpdump -ni IFACE 'tcp[tcpflags] & tcp-rst != 0'"],
    ),
    e(
        "TCP_LISTEN_OVERFLOW",
        "The listening socket's accept queue was full: a new connection was dropped.",
        "A server that accepts too slowly, a small somaxconn or listen() backlog under load.",
        &[
            "ss -lnt   # Recv-Q vs Send-Q (backlog)",
            "nstat -az TcpExtListenOverflows",
            "sysctl -w net.core.somaxconn=4096",
        ],
    ),
    e(
        "TCP_FLAGS",
        "The segment carried an invalid flag combination for the connection state.",
        "Port scans, middleboxes mangling flags, stale NAT sending segments to the wrong connection.",
        &["tcpdump -ni IFACE 'tcp port PORT'"],
    ),
    e(
        "TCP_OLD_DATA",
        "The segment only carried data already received (a retransmission).",
        "Retransmissions after lost ACKs: usually harmless; many of them point at loss elsewhere.",
        &["nstat -az | grep -i retrans"],
    ),
    e(
        "TCP_ZEROWINDOW",
        "Data arrived while the receive window was zero.",
        "A receiver that does not read fast enough.",
        &["ss -tmi dst PEER"],
    ),
    e(
        "IP_LOCAL_SOURCE",
        "A packet arrived from outside carrying one of this host's own addresses as source.",
        "Spoofing, a hairpin without NAT, duplicated node addresses.",
        &["ip addr show | grep SRC", "ip route get SRC"],
    ),
    e(
        "IP_INVALID_SOURCE",
        "The source address is invalid (multicast, broadcast or zero).",
        "Misconfigured clients, broken NAT.",
        &["tcpdump -ni IFACE src net 224.0.0.0/4 or src host 0.0.0.0"],
    ),
    e(
        "IP_INADDRERRORS",
        "The destination address is invalid on this host.",
        "Packets to an address that does not exist any more (a deleted pod), martian destinations.",
        &[
            "ip route get DST",
            "nstat -az IpExtInNoRoutes IpInAddrErrors",
        ],
    ),
    e(
        "UNHANDLED_PROTO",
        "No handler for the packet's protocol (ethertype or IP protocol).",
        "LLDP, IPv6 on an interface with IPv6 disabled, unusual tunnels: usually harmless noise.",
        &["labctl trace --exclude-reason UNHANDLED_PROTO"],
    ),
    e(
        "IP_NOPROTO",
        "No handler for the IP protocol number.",
        "GRE/IPIP/SCTP packets without the module loaded, probes.",
        &["lsmod | grep -E 'ip_gre|ipip|sctp'"],
    ),
    e(
        "FULL_RING",
        "A packet socket's ring was full (AF_PACKET capture could not keep up).",
        "tcpdump or an agent capturing faster than it reads.",
        &["tcpdump -B 8192 ..."],
    ),
    e(
        "CPU_BACKLOG",
        "The per-CPU input backlog was full (netdev_max_backlog).",
        "Bursts on veth/loopback processed by one CPU, RPS disabled.",
        &[
            "cat /proc/net/softnet_stat   # second column",
            "sysctl -w net.core.netdev_max_backlog=5000",
        ],
    ),
    e(
        "DEV_READY",
        "The device was not up or not ready to transmit.",
        "Interfaces down during pod teardown or while a link is being created.",
        &["ip link show IFACE"],
    ),
    e(
        "VXLAN_INVALID_HDR",
        "A VXLAN packet had an invalid header.",
        "VNI or flags mismatch between nodes, non-VXLAN traffic sent to the VXLAN port.",
        &[
            "ip -d link show type vxlan",
            "tcpdump -ni UNDERLAY udp port 8472 or udp port 4789",
        ],
    ),
    e(
        "VXLAN_VNI_NOT_FOUND",
        "A VXLAN packet arrived for a VNI no local device serves.",
        "Nodes configured with different VNIs.",
        &["ip -d link show type vxlan | grep 'vxlan id'"],
    ),
    e(
        "NOMEM",
        "Memory allocation failed while processing the packet.",
        "Memory pressure on the node.",
        &["free -m", "cat /proc/net/sockstat"],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_reasons_a_lab_meets() {
        for r in [
            "NO_SOCKET",
            "NETFILTER_DROP",
            "IP_RPFILTER",
            "IP_INNOROUTES",
            "IP_OUTNOROUTES",
            "IP_INHDR",
            "IP_CSUM",
            "TCP_CSUM",
            "UDP_CSUM",
            "OTHERHOST",
            "PKT_TOO_SMALL",
            "PKT_TOO_BIG",
            "NEIGH_FAILED",
            "NEIGH_QUEUEFULL",
            "QDISC_DROP",
            "TC_INGRESS",
            "TC_EGRESS",
            "XDP",
            "SOCKET_FILTER",
            "SOCKET_RCVBUFF",
            "TCP_INVALID_SEQUENCE",
            "TCP_RESET",
            "TCP_LISTEN_OVERFLOW",
            "IP_LOCAL_SOURCE",
            "UNHANDLED_PROTO",
            "FULL_RING",
            "POLICY_DENIED",
            "POLICY_DENY",
        ] {
            assert!(lookup(r).is_some(), "{r} has no explanation");
        }
        assert!(all().len() >= 25);
    }

    #[test]
    fn lookup_accepts_any_spelling_and_names_are_unique() {
        assert_eq!(
            lookup("skb_drop_reason_no_socket").unwrap().reason,
            "NO_SOCKET"
        );
        let mut names: Vec<_> = all().iter().map(|e| e.reason).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len());
    }

    #[test]
    fn every_explanation_is_filled_in() {
        for e in all() {
            assert!(
                !e.meaning.is_empty() && !e.causes.is_empty() && !e.commands.is_empty(),
                "{}",
                e.reason
            );
        }
    }
}
