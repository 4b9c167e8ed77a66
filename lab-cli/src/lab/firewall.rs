//! Netfilter rules of a lab node: masquerade, the policy scenario's default
//! deny, the drops scenario's planted drop rule.
//!
//! These go through the `nft` binary rather than netlink: no well-kept Rust
//! crate builds nftables rules (expressions, sets, NAT) over netlink, and
//! `nft -f` loads the whole table atomically, in the same syntax learners see
//! with `nft list ruleset` (Debian's `iptables` is iptables-nft, so `iptables
//! -t nat -L -v` shows the same kernel objects). The table lives in the
//! node's namespace and disappears with it.

use std::net::Ipv4Addr;

use thiserror::Error;

use super::{
    plan::{CLUSTER_CIDR, MasqMode, POD_PREFIX, Plan, UPLINK},
    scenario::{FAULT_SOURCE, FaultKind, POLICY_ALLOWED_PORT},
};
use crate::kernel::{
    netns::NetNs,
    tool::{self, ToolError},
};

/// The table every lab node gets.
pub const TABLE: &str = "labctl";
/// The UDP port the drops scenario's `policy` fault is dropped on.
pub const DROPPED_PORT: u16 = 7777;

#[derive(Debug, Error)]
pub enum FirewallError {
    #[error("the `nft` command was not found; install nftables (`apt-get install nftables`)")]
    NftMissing,
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Netns(#[from] crate::kernel::netns::NetnsError),
}

/// Fails early, with the fix, when nft is not installed.
pub fn check_nft() -> Result<(), FirewallError> {
    which::which("nft")
        .map(|_| ())
        .map_err(|_| FirewallError::NftMissing)
}

/// The ruleset of node `node` (index into `plan.nodes`).
pub fn node_ruleset(plan: &Plan, node: usize) -> String {
    let n = &plan.nodes[node];
    let (cluster, cluster_len) = CLUSTER_CIDR;
    let mut rules = format!("table ip {TABLE} {{\n");
    // With eBPF masquerading the node has no NAT rule at all.
    if plan.options.masq == MasqMode::Netfilter {
        rules.push_str(&format!(
            "\tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {cluster}/{cluster_len} ip daddr != {cluster}/{cluster_len} oifname \"{UPLINK}\" counter masquerade comment \"pods to the world: SNAT to the node address\"\n\
             \t}}\n"
        ));
    }
    let pods: Vec<_> = plan.pods.iter().filter(|p| p.node == node).collect();
    let mut forward = Vec::new();
    if plan.scenario.policy {
        let cidr = format!("{}/{POD_PREFIX}", n.pod_cidr);
        forward.push("ct state established,related accept".to_owned());
        if let (Some(a), Some(b)) = (
            pods.iter().find(|p| p.name == "pod-a"),
            pods.iter().find(|p| p.name == "pod-b"),
        ) {
            forward.push(format!(
                "ip saddr {} ip daddr {} tcp dport {POLICY_ALLOWED_PORT} counter accept comment \"allow pod-a -> pod-b:{POLICY_ALLOWED_PORT}\"",
                a.addr, b.addr
            ));
        }
        forward.push(format!(
            "ip saddr {cidr} ip daddr {cidr} counter drop comment \"default deny between pods\""
        ));
    }
    if plan
        .scenario
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::Policy)
        && let Some(src) = pods.iter().find(|p| p.name == FAULT_SOURCE)
    {
        forward.push(format!(
            "ip saddr {} udp dport {DROPPED_PORT} counter drop comment \"planted fault: policy\"",
            src.addr
        ));
    }
    if !forward.is_empty() {
        rules.push_str(
            "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n",
        );
        for rule in forward {
            rules.push_str(&format!("\t\t{rule}\n"));
        }
        rules.push_str("\t}\n");
    }
    rules.push_str("}\n");
    rules
}

/// Loads `ruleset` into `ns` with `nft -f -`.
pub fn apply(ns: &NetNs, ruleset: &str) -> Result<(), FirewallError> {
    Ok(tool::run(ns, "nft", &["-f", "-"], Some(ruleset)).map(drop)?)
}

/// `nft list ruleset` inside `ns` (with counters), for `lab status`.
pub fn list(ns: &NetNs) -> Result<String, FirewallError> {
    Ok(tool::run(ns, "nft", &["list", "ruleset"], None)?)
}

/// The masquerade rule's packet counter in `ruleset` (from `nft list`).
pub fn masquerade_packets(ruleset: &str) -> Option<u64> {
    let line = ruleset.lines().find(|l| l.contains("masquerade"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

/// Whether an address is in the cluster's pod range.
pub fn is_pod_address(addr: Ipv4Addr) -> bool {
    let (net, len) = CLUSTER_CIDR;
    u32::from(addr) >> (32 - len) == u32::from(net) >> (32 - len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{plan::LabOptions, scenario::find};

    fn ruleset(scenario: &str) -> String {
        let plan = Plan::new("t", find(scenario).unwrap(), LabOptions::default()).unwrap();
        node_ruleset(&plan, 0)
    }

    #[test]
    fn basic_only_masquerades_pod_traffic_leaving_the_cluster() {
        let r = ruleset("basic");
        assert!(r.contains(
            "ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname \"eth0\" counter masquerade"
        ));
        assert!(!r.contains("chain forward"));
    }

    #[test]
    fn ebpf_masquerading_leaves_no_nat_rule() {
        let plan = Plan::new(
            "t",
            find("basic").unwrap(),
            LabOptions {
                masq: MasqMode::Ebpf,
                ..Default::default()
            },
        )
        .unwrap();
        let r = node_ruleset(&plan, 0);
        assert!(!r.contains("masquerade") && !r.contains("nat"), "{r}");
    }

    #[test]
    fn policy_allows_one_flow_and_denies_the_rest_between_pods() {
        let r = ruleset("policy");
        let allow = r.find("ip saddr 10.244.1.2 ip daddr 10.244.1.3 tcp dport 8080 counter accept");
        let deny = r.find("ip saddr 10.244.1.0/24 ip daddr 10.244.1.0/24 counter drop");
        assert!(allow.is_some() && deny.is_some());
        assert!(allow < deny, "the allow rule must come first:\n{r}");
    }

    #[test]
    fn drops_plants_the_policy_fault() {
        assert!(ruleset("drops").contains("ip saddr 10.244.1.2 udp dport 7777 counter drop"));
    }

    #[test]
    fn masquerade_counter_is_read_from_nft_list() {
        let listed = "\t\tip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname \"eth0\" counter packets 12 bytes 1008 masquerade comment \"x\"";
        assert_eq!(masquerade_packets(listed), Some(12));
        assert!(is_pod_address(Ipv4Addr::new(10, 244, 3, 4)));
        assert!(!is_pod_address(Ipv4Addr::new(172, 18, 0, 2)));
    }
}
