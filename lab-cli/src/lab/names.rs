//! Lab members as namespace names: what a learner reads and types.
//!
//! Output names a lab's namespace `LAB/MEMBER` (`drops/pod-b`): stable
//! whichever other labs come and go. `--netns` accepts that, a bare member
//! (`pod-b`) when only one lab has it, and everything
//! [`netns::lookup`](crate::kernel::netns::lookup) accepts.

use std::collections::HashMap;

use super::{
    Lab, LabError,
    plan::{Role, validate_name},
};
use crate::kernel::{
    names::{Identity, PodRef},
    netns::{self, NetNs, NetnsError},
};

/// `LAB/MEMBER` for every recorded lab namespace, by inode; a lab's pods
/// are pods `LAB/POD` (the lab is their namespace, as in a cluster).
pub fn member_names() -> HashMap<u64, Identity> {
    let Ok(labs) = Lab::all() else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for lab in &labs {
        for record in &lab.state.namespaces {
            let Some((member, role, _)) = lab
                .plan
                .members()
                .find(|(_, _, netns)| *netns == record.name)
            else {
                continue;
            };
            if record.inode == 0 {
                continue;
            }
            out.insert(
                record.inode,
                Identity {
                    name: display(lab.name(), member),
                    pod: (role == Role::Pod).then(|| pod_ref(lab.name(), member)),
                },
            );
        }
    }
    out
}

/// The pod identity of lab pod `pod` of lab `lab`.
pub fn pod_ref(lab: &str, pod: &str) -> PodRef {
    PodRef {
        namespace: lab.to_owned(),
        name: pod.to_owned(),
        uid: None,
    }
}

/// The namespaces of every pod of lab `lab` (`--pod-namespace LAB`).
pub fn pod_netns_of(lab: &str) -> Result<std::collections::BTreeSet<u64>, LabError> {
    let lab = Lab::open(lab)?;
    Ok(lab
        .state
        .namespaces
        .iter()
        .filter(|r| lab.plan.pods.iter().any(|p| p.netns == r.name))
        .map(|r| r.inode)
        .collect())
}

/// The lab and the index of pod `NS/NAME` (a lab pod: `LAB/POD`) in its
/// plan; nodes and the world are not pods.
fn find_pod(spec: &str) -> Result<(Lab, usize), LabError> {
    let (lab, pod) = spec
        .split_once('/')
        .ok_or_else(|| NetnsError::NotFound(spec.to_owned()))?;
    validate_name(lab)?;
    let l = Lab::open(lab)?;
    match l.plan.pods.iter().position(|p| p.name == pod) {
        Some(i) => Ok((l, i)),
        None => Err(LabError::NoSuchMember {
            name: pod.to_owned(),
            labs: format!("lab `{lab}` (as a pod)"),
            members: l
                .plan
                .pods
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The namespace of pod `NS/NAME` (`--pod`).
pub fn lookup_pod(spec: &str) -> Result<NetNs, LabError> {
    let (lab, i) = find_pod(spec)?;
    lab.netns(&lab.plan.pods[i].name)
}

/// How output names member `member` of lab `lab`.
pub fn display(lab: &str, member: &str) -> String {
    format!("{lab}/{member}")
}

/// The namespace a user named with `--netns`: `LAB/MEMBER`, an `ip netns`
/// name, `host`, `pid:N`, an inode number, or a member of the one lab that
/// has it (`pod-a`).
pub fn lookup_netns(spec: &str) -> Result<NetNs, LabError> {
    if let Some((lab, member)) = spec.split_once('/') {
        validate_name(lab)?;
        return Lab::open(lab)?.netns(member);
    }
    match netns::lookup(spec) {
        Err(NetnsError::NotFound(_)) => {}
        found => return Ok(found?),
    }
    match Lab::find_member(None, spec) {
        Ok(lab) => lab.netns(spec),
        Err(e @ LabError::AmbiguousMember { .. }) => Err(e),
        Err(_) => Err(NetnsError::NotFound(spec.to_owned()).into()),
    }
}

/// `--netns` given (that namespace) or not (the caller's own: None).
pub fn lookup_netns_opt(spec: Option<&str>) -> Result<Option<NetNs>, LabError> {
    spec.map(lookup_netns).transpose()
}

/// The pods of the lab that namespace `netns_ino` belongs to, by address
/// (pod addresses repeat across labs, so only that lab's are named).
pub fn pods_by_addr(netns_ino: u64) -> HashMap<std::net::Ipv4Addr, PodRef> {
    let Ok(labs) = Lab::all() else {
        return HashMap::new();
    };
    labs.iter()
        .find(|l| l.state.namespaces.iter().any(|r| r.inode == netns_ino))
        .map(|l| {
            l.plan
                .pods
                .iter()
                .map(|p| (p.addr, pod_ref(l.name(), &p.name)))
                .collect()
        })
        .unwrap_or_default()
}

/// The address of pod `NS/NAME` (a lab pod: `LAB/POD`).
pub fn pod_addr(spec: &str) -> Result<std::net::Ipv4Addr, LabError> {
    let (lab, i) = find_pod(spec)?;
    Ok(lab.plan.pods[i].addr)
}

/// The addresses of every pod of namespace (lab) `ns`.
pub fn pod_addrs_of(ns: &str) -> Result<Vec<std::net::Ipv4Addr>, LabError> {
    validate_name(ns)?;
    Ok(Lab::open(ns)?.plan.pods.iter().map(|p| p.addr).collect())
}
