//! `lab up`: build a lab from its plan, or roll back everything built so far.
//!
//! Every link, address, route, bridge, VXLAN device and nftables table of a
//! lab lives inside namespaces the lab created (the node-to-world veths are
//! created with their far end directly inside the node), so the host's own
//! network is never touched and deleting the lab's namespaces removes all of
//! it. Each namespace is recorded (name + inode) the moment it exists.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use super::{
    LabError,
    down::teardown,
    firewall,
    plan::{
        CLUSTER_CIDR, MasqMode, NodePlan, POD_BRIDGE, POD_IFNAME, POD_PREFIX, Plan, PodPlan,
        UNDERLAY_BRIDGE, UNDERLAY_PREFIX, UPLINK, VXLAN_DEV, WORLD_GATEWAY, WORLD_SERVER,
    },
    services as svc,
    state::{LabState, NamespaceRecord},
};
use crate::{
    kernel::{
        interrupt,
        netns::{self, Entry, NETNS_RUN_DIR, NetNs, NetnsError},
        rtnl::Rtnl,
        sysctl,
    },
    masq::nat::{self, NatParams},
    services,
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
    if let Some(mode) = plan.kube_proxy() {
        services::check_mode(mode)?;
    }
    if let Some(mode) = plan.options.policy_mode {
        super::policy::check_mode(&plan.lab, mode)?;
    }
    // Refuse before building anything if a name is taken by someone else.
    for name in plan.namespaces() {
        // An empty mount point left by a killed create or delete only
        // blocks the name: clear it. A real namespace is someone else's.
        netns::remove_leftover(name)?;
        if netns::entry(&Path::new(NETNS_RUN_DIR).join(name)).map_err(|source| NetnsError::Io {
            action: "inspect",
            name: name.to_owned(),
            source,
        })? != Entry::Missing
        {
            return Err(LabError::NameClash(name.to_owned()));
        }
    }
    let mut state = LabState {
        lab: plan.lab.clone(),
        scenario: plan.scenario.name.to_owned(),
        options: plan.options.clone(),
        complete: false,
        namespaces: Vec::new(),
        cgroups: Vec::new(),
        services: Vec::new(),
        policies: Vec::new(),
        labels: Default::default(),
        identities: None,
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

/// Milliseconds to wait before each build step (tests of interrupts only).
pub const STEP_DELAY_ENV: &str = "LABCTL_TEST_STEP_DELAY_MS";

/// Counts build steps, so tests can force a failure in the middle of `up`.
struct Steps {
    done: usize,
    fail_at_step: Option<usize>,
}

impl Steps {
    /// Starts the next step, unless Ctrl-C / SIGTERM came or a test asked
    /// this step to fail: then `up` rolls back.
    fn next(&mut self, what: &str) -> Result<(), LabError> {
        self.done += 1;
        // Test hook: slow each step so a test can interrupt `up` half-way.
        interrupt::test_delay(STEP_DELAY_ENV);
        interrupt::check().map_err(|source| LabError::Interrupted {
            step: self.done,
            source,
        })?;
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
        create_namespace(state, name)?;
    }
    let alias = plan.alias();
    steps.next("wire the world")?;
    let world_ns = NetNs::open(&plan.world_netns)?;
    let world = Rtnl::open(&world_ns)?;
    wire_world(&world, &alias)?;
    for (index, node) in plan.nodes.iter().enumerate() {
        steps.next(&format!("wire {}", node.name))?;
        wire_node(plan, node, &world, &alias)?;
        load_node_datapath(plan, index)?;
    }
    for pod in &plan.pods {
        steps.next(&format!("wire {}", pod.name))?;
        wire_pod(pod, &plan.nodes[pod.node], &alias)?;
    }
    if let Some(mode) = plan.kube_proxy() {
        steps.next(&format!("services ({mode})"))?;
        svc::build(plan, state)?;
    }
    if let Some(mode) = plan.options.policy_mode {
        steps.next(&format!("network policy ({mode})"))?;
        super::policy::build(plan, state)?;
    }
    Ok(())
}

/// Creates namespace `name`, recorded first by name (so a kill at any
/// moment leaves it to `down`: an empty mount point is recognised as a
/// leftover) and then with its inode before it gets its name (so `down` can
/// always tell it from someone else's).
fn create_namespace(state: &mut LabState, name: &str) -> Result<(), LabError> {
    state.namespaces.push(NamespaceRecord {
        name: name.to_owned(),
        inode: 0,
    });
    state.save()?;
    let created = NetNs::create_then(name, |inode| -> Result<(), LabError> {
        if let Some(record) = state.namespaces.last_mut() {
            record.inode = inode;
        }
        state.save()?;
        Ok(())
    });
    let ns = match created {
        Ok(ns) => ns.keep(),
        Err(e) => {
            // Nothing was created (or it was removed again): forget it.
            state.namespaces.pop();
            state.save()?;
            return Err(e);
        }
    };
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
    Ok(())
}

/// The world: the "internet" server on lo and the underlay bridge.
fn wire_world(world: &Rtnl, alias: &str) -> Result<(), LabError> {
    world.add_address("lo", IpAddr::V4(WORLD_SERVER), 32)?;
    world.add_bridge(UNDERLAY_BRIDGE, 1500, false)?;
    world.set_alias(UNDERLAY_BRIDGE, alias)?;
    world.add_address(UNDERLAY_BRIDGE, IpAddr::V4(WORLD_GATEWAY), UNDERLAY_PREFIX)?;
    world.set_up(UNDERLAY_BRIDGE)?;
    Ok(())
}

/// A node: its uplink on the underlay, the pod bridge, the tunnel, routes
/// and sysctls.
fn wire_node(plan: &Plan, node: &NodePlan, world: &Rtnl, alias: &str) -> Result<(), LabError> {
    let node_ns = NetNs::open(&node.netns)?;
    world.add_veth(&node.name, UPLINK, node.uplink_mtu, &node_ns)?;
    world.set_alias(&node.name, alias)?;
    world.set_master(&node.name, UNDERLAY_BRIDGE)?;
    world.set_up(&node.name)?;

    let rt = Rtnl::open(&node_ns)?;
    rt.set_alias(UPLINK, alias)?;
    rt.add_address(UPLINK, IpAddr::V4(node.uplink_addr), UNDERLAY_PREFIX)?;
    rt.set_up(UPLINK)?;
    let pod_mtu = plan
        .pods
        .iter()
        .map(|p| p.mtu)
        .next()
        .unwrap_or(node.uplink_mtu);
    // kube-proxy needs bridged traffic to pass netfilter too (what
    // br_netfilter does on a real node): a backend's reply to a client on
    // the same bridge must meet conntrack to be translated back.
    // So do netfilter's policy rules, to judge pods of one node.
    let nf_bridge = plan.scenario.policy
        || plan.kube_proxy().is_some_and(|m| m.is_netfilter())
        || plan.options.policy_mode == Some(crate::policy::PolicyMode::Netfilter);
    rt.add_bridge(POD_BRIDGE, pod_mtu, nf_bridge)?;
    rt.set_alias(POD_BRIDGE, alias)?;
    rt.add_address(POD_BRIDGE, IpAddr::V4(node.gateway), POD_PREFIX)?;
    rt.set_up(POD_BRIDGE)?;
    if let (Some(vx), Some(addr)) = (&node.vxlan, node.vxlan_addr) {
        rt.add_vxlan(vx)?;
        rt.set_alias(VXLAN_DEV, alias)?;
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
    Ok(())
}

/// A node's nftables ruleset, and its eBPF masquerading when asked for.
fn load_node_datapath(plan: &Plan, index: usize) -> Result<(), LabError> {
    let node = &plan.nodes[index];
    let node_ns = NetNs::open(&node.netns)?;
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
    Ok(())
}

/// A pod, as the CNI bridge plugin wires it: a veth pair with the host end
/// on cni0, eth0 in the pod, a default route via the node's gateway.
fn wire_pod(pod: &PodPlan, node: &NodePlan, alias: &str) -> Result<(), LabError> {
    let node_ns = NetNs::open(&node.netns)?;
    let pod_ns = NetNs::open(&pod.netns)?;
    let rt = Rtnl::open(&node_ns)?;
    rt.add_veth(&pod.host_veth, POD_IFNAME, pod.mtu, &pod_ns)?;
    rt.set_alias(&pod.host_veth, alias)?;
    rt.set_master(&pod.host_veth, POD_BRIDGE)?;
    rt.set_up(&pod.host_veth)?;
    let prt = Rtnl::open(&pod_ns)?;
    prt.set_alias(POD_IFNAME, alias)?;
    prt.add_address(POD_IFNAME, IpAddr::V4(pod.addr), POD_PREFIX)?;
    prt.set_up(POD_IFNAME)?;
    prt.add_route(
        Ipv4Addr::UNSPECIFIED,
        0,
        Some(pod.gateway),
        POD_IFNAME,
        false,
    )?;
    Ok(())
}
