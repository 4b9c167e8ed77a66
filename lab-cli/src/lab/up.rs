//! `lab up`: build a lab from its plan, or roll back everything built so far.
//!
//! Every link, address, route, bridge, VXLAN device and nftables table of a
//! lab lives inside namespaces the lab created (the node-to-world veths are
//! created with their far end directly inside the node), so the host's own
//! network is never touched and deleting the lab's namespaces removes all of
//! it. Each namespace is recorded (name + inode) the moment it exists.

use std::net::IpAddr;

use super::{
    LabError,
    down::teardown,
    firewall,
    plan::{
        CLUSTER_CIDR, MasqMode, POD_BRIDGE, POD_IFNAME, POD_PREFIX, Plan, UNDERLAY_BRIDGE,
        UNDERLAY_PREFIX, UPLINK, VXLAN_DEV, WORLD_GATEWAY, WORLD_SERVER,
    },
    state::{LabState, NamespaceRecord},
};
use crate::{
    kernel::{
        netns::{NETNS_RUN_DIR, NetNs},
        rtnl::Rtnl,
        sysctl,
    },
    masq::nat::{self, NatParams},
};

/// Builds the lab. On failure, everything built so far is removed again and
/// the error says whether that rollback was complete.
pub fn up(plan: &Plan, fail_at_step: Option<usize>) -> Result<LabState, LabError> {
    if let Some(existing) = LabState::load(&plan.lab)? {
        return Err(LabError::AlreadyUp {
            lab: existing.lab,
            scenario: existing.scenario,
        });
    }
    firewall::check_nft()?;
    // Refuse before building anything if a name is taken by someone else.
    for name in plan.namespaces() {
        if std::path::Path::new(NETNS_RUN_DIR).join(name).exists() {
            return Err(LabError::NameClash(name.to_owned()));
        }
    }
    let mut state = LabState {
        lab: plan.lab.clone(),
        scenario: plan.scenario.name.to_owned(),
        options: plan.options.clone(),
        complete: false,
        namespaces: Vec::new(),
    };
    state.save()?;
    let mut steps = Steps {
        done: 0,
        fail_at_step,
    };
    match build(plan, &mut state, &mut steps) {
        Ok(()) => {
            state.complete = true;
            state.save()?;
            Ok(state)
        }
        Err(err) => {
            let leftovers = teardown(&state);
            if leftovers.is_empty()
                && let Err(e) = state.remove()
            {
                tracing::warn!("{e}");
            }
            Err(LabError::RolledBack {
                source: Box::new(err),
                leftovers: leftovers.iter().map(ToString::to_string).collect(),
            })
        }
    }
}

/// Counts build steps, so tests can force a failure in the middle of `up`.
struct Steps {
    done: usize,
    fail_at_step: Option<usize>,
}

impl Steps {
    fn next(&mut self, what: &str) -> Result<(), LabError> {
        self.done += 1;
        tracing::info!("step {}: {what}", self.done);
        if self.fail_at_step == Some(self.done) {
            return Err(LabError::InjectedFailure(self.done));
        }
        Ok(())
    }
}

fn build(plan: &Plan, state: &mut LabState, steps: &mut Steps) -> Result<(), LabError> {
    for name in plan.namespaces() {
        steps.next(&format!("create namespace {name}"))?;
        // Record the name before creating it (inode 0: not known yet), so a
        // crash right after the create still leaves it to `down`.
        state.namespaces.push(NamespaceRecord {
            name: name.to_owned(),
            inode: 0,
        });
        state.save()?;
        let ns = match NetNs::create(name) {
            Ok(ns) => ns.keep(),
            Err(e) => {
                state.namespaces.pop();
                state.save()?;
                return Err(e.into());
            }
        };
        if let Some(record) = state.namespaces.last_mut() {
            record.inode = ns.inode()?;
        }
        state.save()?;
        // Labs are IPv4-only: without IPv6, new links send no router
        // solicitations or MLD reports, which keeps `labctl trace` quiet.
        ns.run(|| {
            sysctl::write(&["net", "ipv6", "conf", "all", "disable_ipv6"], "1")?;
            sysctl::write(&["net", "ipv6", "conf", "default", "disable_ipv6"], "1")?;
            // ICMP ping sockets for everyone, as Docker and systemd set it:
            // `lab traffic` pings without raw sockets (see traffic.rs).
            sysctl::write(&["net", "ipv4", "ping_group_range"], "0 2147483647")
        })??;
        Rtnl::open(&ns)?.set_up("lo")?;
    }
    let alias = plan.alias();

    steps.next("wire the world")?;
    let world_ns = NetNs::open(&plan.world_netns)?;
    let world = Rtnl::open(&world_ns)?;
    world.add_address("lo", IpAddr::V4(WORLD_SERVER), 32)?;
    world.add_bridge(UNDERLAY_BRIDGE, 1500, false)?;
    world.set_alias(UNDERLAY_BRIDGE, &alias)?;
    world.add_address(UNDERLAY_BRIDGE, IpAddr::V4(WORLD_GATEWAY), UNDERLAY_PREFIX)?;
    world.set_up(UNDERLAY_BRIDGE)?;

    for node in &plan.nodes {
        steps.next(&format!("wire {}", node.name))?;
        let node_ns = NetNs::open(&node.netns)?;
        world.add_veth(&node.name, UPLINK, node.uplink_mtu, &node_ns)?;
        world.set_alias(&node.name, &alias)?;
        world.set_master(&node.name, UNDERLAY_BRIDGE)?;
        world.set_up(&node.name)?;

        let rt = Rtnl::open(&node_ns)?;
        rt.set_alias(UPLINK, &alias)?;
        rt.add_address(UPLINK, IpAddr::V4(node.uplink_addr), UNDERLAY_PREFIX)?;
        rt.set_up(UPLINK)?;
        let pod_mtu = plan
            .pods
            .iter()
            .map(|p| p.mtu)
            .next()
            .unwrap_or(node.uplink_mtu);
        rt.add_bridge(POD_BRIDGE, pod_mtu, plan.scenario.policy)?;
        rt.set_alias(POD_BRIDGE, &alias)?;
        rt.add_address(POD_BRIDGE, IpAddr::V4(node.gateway), POD_PREFIX)?;
        rt.set_up(POD_BRIDGE)?;
        if let (Some(vx), Some(addr)) = (&node.vxlan, node.vxlan_addr) {
            rt.add_vxlan(vx)?;
            rt.set_alias(VXLAN_DEV, &alias)?;
            rt.add_address(VXLAN_DEV, IpAddr::V4(addr), 32)?;
            rt.set_up(VXLAN_DEV)?;
        }
        for r in &node.routes {
            rt.add_route(r.dst, r.prefix, r.via, r.dev, r.onlink)?;
        }
        let rp_filter = if plan.scenario.rp_filter { "1" } else { "0" };
        node_ns.run(|| {
            sysctl::write(&["net", "ipv4", "ip_forward"], "1")?;
            // The effective rp_filter of an interface is max(all, iface).
            sysctl::write(&["net", "ipv4", "conf", "all", "rp_filter"], rp_filter)?;
            sysctl::write(&["net", "ipv4", "conf", POD_BRIDGE, "rp_filter"], rp_filter)
        })??;
        let index = plan
            .nodes
            .iter()
            .position(|n| n.name == node.name)
            .unwrap_or_default();
        firewall::apply(&node_ns, &firewall::node_ruleset(plan, index))?;
        if plan.options.masq == MasqMode::Ebpf {
            nat::attach(
                &node_ns,
                UPLINK,
                &NatParams {
                    node_addr: node.uplink_addr,
                    cluster: CLUSTER_CIDR,
                    ports: plan.options.nat_ports,
                    udp_timeout_s: plan.options.nat_udp_timeout,
                    tc_attach: plan.options.tc_attach,
                },
            )?;
        }
    }

    for pod in &plan.pods {
        steps.next(&format!("wire {}", pod.name))?;
        let node = &plan.nodes[pod.node];
        let node_ns = NetNs::open(&node.netns)?;
        let pod_ns = NetNs::open(&pod.netns)?;
        // As the CNI bridge plugin: veth pair, host end on cni0, eth0 in the pod.
        let rt = Rtnl::open(&node_ns)?;
        rt.add_veth(&pod.host_veth, POD_IFNAME, pod.mtu, &pod_ns)?;
        rt.set_alias(&pod.host_veth, &alias)?;
        rt.set_master(&pod.host_veth, POD_BRIDGE)?;
        rt.set_up(&pod.host_veth)?;
        let prt = Rtnl::open(&pod_ns)?;
        prt.set_alias(POD_IFNAME, &alias)?;
        prt.add_address(POD_IFNAME, IpAddr::V4(pod.addr), POD_PREFIX)?;
        prt.set_up(POD_IFNAME)?;
        prt.add_route(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
            Some(pod.gateway),
            POD_IFNAME,
            false,
        )?;
    }
    Ok(())
}
