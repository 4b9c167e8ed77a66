//! What to try next in a lab that is up: commands that fit its scenario and
//! the options it was built with, with `--lab` where several labs are up.
//! (labctl runs as root: a learner types them after `sudo`, as `lab up`.)

use crate::services;

use super::{
    Lab,
    names::display,
    plan::{MasqMode, Role},
    scenario::{FaultKind, Routing},
};

/// One command per line, to be printed under the lesson.
pub fn hints(lab: &Lab, several_labs: bool) -> Vec<String> {
    let name = lab.name();
    let plan = &lab.plan;
    let sc = plan.scenario;
    let with_lab = if several_labs {
        format!(" --lab {name}")
    } else {
        String::new()
    };
    let node1 = plan
        .members()
        .find(|(_, role, _)| *role == Role::Node)
        .map_or_else(|| display(name, "node1"), |(m, _, _)| display(name, m));
    let mut out = Vec::new();
    if let Some(mode) = plan.kube_proxy() {
        let dp = services::about(mode);
        out.push(format!(
            "labctl svc list{with_lab}   # the service, read from the {}",
            dp.holder()
        ));
        out.push(format!(
            "labctl lab traffic client web --proto tcp -c 30{with_lab}   # who answers?"
        ));
        out.push(format!("labctl svc backend del web web-1{with_lab}"));
        match dp.inspect(&format!("{name}-node1")) {
            Some(command) => out.push(command),
            None if dp.loads_programs() => out.push(format!(
                "labctl lab exec client{with_lab} -- tcpdump -ni eth0 tcp   # VIP or backend on the wire?"
            )),
            None => {}
        }
        if dp.netfilter() {
            out.push(format!(
                "labctl conntrack list --netns {node1}   # the DNATs"
            ));
        }
        out.push(format!(
            "labctl lab status {name}   |   labctl lab down {name}"
        ));
        return out;
    }
    if !sc.faults.is_empty() {
        out.push("labctl trace --explain   # in one terminal; then, in another:".into());
        for f in sc.faults.iter().take(2) {
            out.push(format!("labctl lab trigger {}{with_lab}", f.name()));
        }
        if sc.faults.iter().any(|f| f.kind == FaultKind::Policy) {
            out.push(format!(
                "ip netns exec {name}-node1 nft list ruleset   # the drop rule"
            ));
        }
    } else if sc.policy {
        out.push(format!(
            "labctl lab traffic pod-a pod-b --proto tcp --port 8080{with_lab}   # allowed"
        ));
        out.push(format!(
            "labctl lab traffic pod-c pod-b{with_lab}   # denied: NETFILTER_DROP in"
        ));
        out.push(format!("labctl trace --netns {node1}"));
    } else if sc.routing == Routing::Overlay {
        let tunnel = sc.uplink_mtu - super::plan::VXLAN_OVERHEAD;
        let pod_mtu = plan.pods.first().map_or(tunnel, |p| p.mtu);
        if pod_mtu > tunnel {
            out.push(format!(
                "# pod MTU {pod_mtu} over a {tunnel}-byte tunnel: this lab reproduces the MTU pitfall"
            ));
            out.push(format!(
                "labctl lab traffic pod-a pod-b --size {}{with_lab}   # fails",
                pod_mtu - 28
            ));
            out.push(format!(
                "labctl trace --netns {node1}   # shows why: PKT_TOO_BIG"
            ));
        } else {
            out.push(format!(
                "labctl lab traffic pod-a pod-b --size {}{with_lab}   # the largest that fits",
                tunnel - 28
            ));
            // Another lab's name: this one's and an `x`, within 16 characters.
            let mut other: String = name.chars().take(15).chain(['x']).collect();
            if other == name {
                other.replace_range(15.., "y");
            }
            out.push(format!(
                "labctl lab up overlay --name {other} --mtu 1500   # the MTU pitfall"
            ));
        }
    } else {
        out.push(format!(
            "labctl lab traffic pod-a world --proto tcp{with_lab}"
        ));
    }
    match plan.options.masq {
        MasqMode::Netfilter => {
            if sc.faults.is_empty() {
                out.push(format!("labctl conntrack list --netns {node1} --snat"));
            }
        }
        MasqMode::Ebpf => {
            out.push(format!(
                "# eBPF masquerading (tc on eth0 of {node1}): no nft masquerade rule"
            ));
            out.push(format!("labctl masq nat-table --netns {node1}"));
            out.push(format!("labctl masq --netns {node1}   # per pod, live"));
        }
    }
    out.push(format!(
        "labctl lab status {name}   |   labctl lab down {name}"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{
        plan::{LabOptions, Plan},
        scenario::find,
        state::LabState,
    };

    fn lab(scenario: &str, options: LabOptions) -> Lab {
        let plan = Plan::new("lx", find(scenario).unwrap(), options.clone()).unwrap();
        Lab {
            plan,
            state: LabState {
                lab: "lx".into(),
                scenario: scenario.into(),
                options,
                complete: true,
                namespaces: Vec::new(),
                cgroups: Vec::new(),
                services: Vec::new(),
                policies: Vec::new(),
                labels: Default::default(),
                identities: None,
            },
        }
    }

    #[test]
    fn hints_fit_the_options_and_the_screen() {
        let ebpf = hints(
            &lab(
                "basic",
                LabOptions {
                    masq: MasqMode::Ebpf,
                    ..Default::default()
                },
            ),
            false,
        );
        assert!(
            ebpf.iter()
                .any(|h| h == "labctl masq nat-table --netns lx/node1")
        );
        assert!(!ebpf.iter().any(|h| h.contains("--snat")));
        let pitfall = hints(
            &lab(
                "overlay",
                LabOptions {
                    mtu: Some(1500),
                    ..Default::default()
                },
            ),
            true,
        );
        assert!(pitfall.iter().any(|h| h.contains("MTU pitfall")));
        assert!(pitfall.iter().any(|h| h.contains("--size 1472 --lab lx")));
        let fine = hints(&lab("overlay", LabOptions::default()), false);
        assert!(fine.iter().any(|h| h.contains("--size 1422")));
        for s in crate::lab::scenario::SCENARIOS {
            for h in hints(&lab(s.name, LabOptions::default()), true) {
                assert!(h.chars().count() <= 78, "{}: {h}", s.name);
            }
        }
    }
}
