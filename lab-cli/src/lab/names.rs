//! Lab members and pods as namespace names: what a learner reads and types.
//!
//! Output names a lab's namespace `LAB/MEMBER` (`drops/pod-b`): stable
//! whichever other labs come and go. `--netns` accepts that, a bare member
//! (`pod-b`) when only one lab has it, and everything
//! [`netns::lookup`](crate::kernel::netns::lookup) accepts.
//!
//! On a Kubernetes node the pods the node's container runtime runs (kind's
//! `cni-UUID` namespaces) are named the same way, `NAMESPACE/NAME`, through
//! [`cri`]: a lab pod and a cluster pod read alike, and `--pod`,
//! `--pod-namespace` and `--netns` accept both. A lab wins where a lab and
//! a Kubernetes namespace share a name.

use std::collections::HashMap;

use super::{
    Lab, LabError,
    plan::{Role, validate_name},
};
use crate::kernel::{
    cri::{self, Sandbox},
    names::{Identity, PodRef},
    netns::{self, NetNs, NetnsError},
    node, podcgroup,
};

/// The ready pods of the node's container runtime that have their own
/// namespace; none where there is no runtime (a plain host). Without the
/// runtime's CRI, kubelet's cgroups and log directories still name them.
fn runtime_pods() -> Vec<Sandbox> {
    match cri::sandboxes(cri::socket()) {
        Ok(pods) => pods
            .into_iter()
            .filter(|s| s.ready && s.netns_ino.is_some())
            .collect(),
        Err(e) => {
            tracing::debug!("no pod names from the container runtime: {e}");
            let mut inodes = node::scope();
            // A host-network pod's processes live in the node's namespace,
            // which is not that pod's.
            if let Ok(host) = netns::host().inode() {
                inodes.remove(&host);
            }
            podcgroup::pods(&inodes, std::path::Path::new(podcgroup::POD_LOG_DIR))
                .into_iter()
                .map(|p| Sandbox {
                    id: String::new(),
                    name: p.name,
                    namespace: p.namespace,
                    uid: p.uid,
                    ready: true,
                    netns_ino: Some(p.netns_ino),
                    netns_path: Some(p.netns_path),
                    ips: Vec::new(),
                })
                .collect()
        }
    }
}

fn runtime_pod_ref(s: &Sandbox) -> PodRef {
    PodRef {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        uid: Some(s.uid.clone()).filter(|u| !u.is_empty()),
    }
}

fn runtime_ipv4(s: &Sandbox) -> Option<std::net::Ipv4Addr> {
    s.ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    })
}

/// Where a pod named `NS/NAME` lives.
enum PodHome {
    Lab(Lab, usize),
    Runtime(Sandbox),
}

/// `LAB/MEMBER` for every recorded lab namespace, by inode; a lab's pods
/// are pods `LAB/POD` (the lab is their namespace, as in a cluster).
pub fn member_names() -> HashMap<u64, Identity> {
    let mut out = HashMap::new();
    for pod in runtime_pods() {
        if let Some(ino) = pod.netns_ino {
            let pod = runtime_pod_ref(&pod);
            out.insert(
                ino,
                Identity {
                    name: pod.to_string(),
                    pod: Some(pod),
                },
            );
        }
    }
    let Ok(labs) = Lab::all() else {
        return out;
    };
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

/// The lab `ns`, if one of that name is up; a name that is not a lab
/// name at all (a Kubernetes namespace may be spelled differently) is not
/// an error here.
fn open_lab(ns: &str) -> Result<Option<Lab>, LabError> {
    if validate_name(ns).is_err() {
        return Ok(None);
    }
    match Lab::open(ns) {
        Ok(lab) => Ok(Some(lab)),
        Err(LabError::NotUp(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The namespaces of every pod of namespace `ns` (`--pod-namespace NS`): a
/// lab's pods, or the runtime's pods in Kubernetes namespace `ns`.
pub fn pod_netns_of(ns: &str) -> Result<std::collections::BTreeSet<u64>, LabError> {
    if let Some(lab) = open_lab(ns)? {
        return Ok(lab
            .state
            .namespaces
            .iter()
            .filter(|r| lab.plan.pods.iter().any(|p| p.netns == r.name))
            .map(|r| r.inode)
            .collect());
    }
    let set: std::collections::BTreeSet<u64> = runtime_pods()
        .iter()
        .filter(|s| s.namespace == ns)
        .filter_map(|s| s.netns_ino)
        .collect();
    if set.is_empty() {
        return Err(LabError::NoSuchPodNamespace(ns.to_owned()));
    }
    Ok(set)
}

/// Pod `NS/NAME`: a lab pod (`LAB/POD`: nodes and the world are not pods)
/// or one of the node's container runtime.
fn find_pod(spec: &str) -> Result<PodHome, LabError> {
    let (ns, pod) = spec
        .split_once('/')
        .ok_or_else(|| NetnsError::NotFound(spec.to_owned()))?;
    let Some(l) = open_lab(ns)? else {
        return runtime_pods()
            .into_iter()
            .find(|s| s.namespace == ns && s.name == pod)
            .map(PodHome::Runtime)
            .ok_or_else(|| LabError::NoSuchPod(spec.to_owned()));
    };
    match l.plan.pods.iter().position(|p| p.name == pod) {
        Some(i) => Ok(PodHome::Lab(l, i)),
        None => Err(LabError::NoSuchMember {
            name: pod.to_owned(),
            labs: format!("lab `{ns}` (as a pod)"),
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
    match find_pod(spec)? {
        PodHome::Lab(lab, i) => lab.netns(&lab.plan.pods[i].name),
        PodHome::Runtime(s) => match &s.netns_path {
            Some(path) => Ok(NetNs::at(spec, path)),
            None => Err(LabError::NoSuchPod(spec.to_owned())),
        },
    }
}

/// How output names member `member` of lab `lab`.
pub fn display(lab: &str, member: &str) -> String {
    format!("{lab}/{member}")
}

/// The namespace a user named with `--netns`: `LAB/MEMBER`, an `ip netns`
/// name, `host`, `pid:N`, an inode number, or a member of the one lab that
/// has it (`pod-a`).
pub fn lookup_netns(spec: &str) -> Result<NetNs, LabError> {
    // A path to a namespace file (/proc/PID/ns/net).
    if spec.starts_with('/') {
        return Ok(netns::lookup(spec)?);
    }
    if let Some((lab, member)) = spec.split_once('/') {
        return match open_lab(lab)? {
            Some(lab) => lab.netns(member),
            None => lookup_pod(spec).map_err(|e| match e {
                LabError::NoSuchPod(_) if validate_name(lab).is_ok() => {
                    LabError::NotUp(lab.to_owned())
                }
                e => e,
            }),
        };
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
/// On a node, the runtime's pods are named too (their addresses are
/// unique in the cluster).
pub fn pods_by_addr(netns_ino: u64) -> HashMap<std::net::Ipv4Addr, PodRef> {
    let mut out: HashMap<_, _> = runtime_pods()
        .iter()
        .filter_map(|s| Some((runtime_ipv4(s)?, runtime_pod_ref(s))))
        .collect();
    let Ok(labs) = Lab::all() else {
        return out;
    };
    if let Some(l) = labs
        .iter()
        .find(|l| l.state.namespaces.iter().any(|r| r.inode == netns_ino))
    {
        out.extend(
            l.plan
                .pods
                .iter()
                .map(|p| (p.addr, pod_ref(l.name(), &p.name))),
        );
    }
    out
}

/// The address of pod `NS/NAME` (a lab pod: `LAB/POD`).
pub fn pod_addr(spec: &str) -> Result<std::net::Ipv4Addr, LabError> {
    match find_pod(spec)? {
        PodHome::Lab(lab, i) => Ok(lab.plan.pods[i].addr),
        PodHome::Runtime(s) => runtime_ipv4(&s).ok_or_else(|| LabError::NoSuchPod(spec.to_owned())),
    }
}

/// The addresses of every pod of namespace `ns` (a lab, or a Kubernetes
/// namespace of the node's runtime).
pub fn pod_addrs_of(ns: &str) -> Result<Vec<std::net::Ipv4Addr>, LabError> {
    if let Some(lab) = open_lab(ns)? {
        return Ok(lab.plan.pods.iter().map(|p| p.addr).collect());
    }
    let addrs: Vec<_> = runtime_pods()
        .iter()
        .filter(|s| s.namespace == ns)
        .filter_map(runtime_ipv4)
        .collect();
    if addrs.is_empty() {
        return Err(LabError::NoSuchPodNamespace(ns.to_owned()));
    }
    Ok(addrs)
}

/// [`pods_by_addr`] for a long-running view: re-read when older than a
/// couple of seconds, so pods that come and go are named and unnamed.
#[derive(Debug)]
pub struct PodAddrs {
    netns_ino: u64,
    map: HashMap<std::net::Ipv4Addr, PodRef>,
    at: std::time::Instant,
}

impl PodAddrs {
    const TTL: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(netns_ino: u64) -> Self {
        Self {
            netns_ino,
            map: pods_by_addr(netns_ino),
            at: std::time::Instant::now(),
        }
    }

    pub fn get(&mut self) -> &HashMap<std::net::Ipv4Addr, PodRef> {
        if self.at.elapsed() > Self::TTL {
            self.map = pods_by_addr(self.netns_ino);
            self.at = std::time::Instant::now();
        }
        &self.map
    }
}
