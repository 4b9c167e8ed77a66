//! Cilium's security identities as a pure function: which labels count,
//! how numbers are handed out, and what changes when pods come or change
//! their labels.
//!
//! Cilium gives every distinct set of *security-relevant* labels one
//! number, shared by every pod with that set: two replicas of a deployment
//! share an identity, a pod relabelled into a new set gets a new one. The
//! datapath keys policy on these numbers: the ipcache maps an address to
//! its identity, each endpoint's policy map holds the identities it
//! allows. So a new pod with an existing label set costs one ipcache entry
//! and no policy entry; a new label set costs an identity and entries in
//! the maps of every endpoint whose policy selects it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::model::{Entity, Labels};

pub const HOST: u32 = 1;
pub const WORLD: u32 = 2;
pub const UNMANAGED: u32 = 3;
pub const HEALTH: u32 = 4;
pub const INIT: u32 = 5;
pub const REMOTE_NODE: u32 = 6;
pub const KUBE_APISERVER: u32 = 7;
pub const INGRESS: u32 = 8;
/// The first identity of a workload (below: reserved).
pub const FIRST_WORKLOAD: u32 = 256;

/// The reserved identities and their names (`reserved:NAME`).
pub const RESERVED: [(u32, &str); 8] = [
    (HOST, "host"),
    (WORLD, "world"),
    (UNMANAGED, "unmanaged"),
    (HEALTH, "health"),
    (INIT, "init"),
    (REMOTE_NODE, "remote-node"),
    (KUBE_APISERVER, "kube-apiserver"),
    (INGRESS, "ingress"),
];

/// The cluster name in identities (`io.cilium.k8s.policy.cluster`), as a
/// Cilium installed without `cluster.name`.
pub const CLUSTER_NAME: &str = "default";
/// The pod's namespace, the one Kubernetes label Cilium adds to every
/// identity (`k8s:io.kubernetes.pod.namespace`).
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Prefix of a namespace's labels in an identity.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";

/// An identity's labels: `source:key` to value (`k8s:org` → `empire`,
/// `reserved:world` → ``).
pub type IdentityLabels = BTreeMap<String, String>;

/// Cilium's default label filter (`--label-prefix-file` unset): Kubernetes
/// label keys that never make an identity, because they differ per pod or
/// per rollout and would give every pod its own identity.
const IGNORED_PREFIXES: &[&str] = &[
    "io.kubernetes",
    "kubernetes.io",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "batch.kubernetes.io/controller-uid",
    "k8s.io",
    "pod-template-generation",
    "pod-template-hash",
    "controller-revision-hash",
    "annotation.",
    "etcd_node",
];

/// Whether a pod's Kubernetes label counts for its identity.
pub fn relevant(key: &str) -> bool {
    !(IGNORED_PREFIXES.iter().any(|p| key.starts_with(p))
        || key.contains("beta.kubernetes.io")
        // Cilium's own labels cannot be set on a pod.
        || key.starts_with("io.cilium.k8s"))
}

/// The identity labels of a pod in namespace `namespace` (whose labels are
/// `namespace_labels`): its relevant labels, its namespace, the
/// namespace's labels, its service account and the cluster, each with
/// source `k8s`.
pub fn of_pod(
    labels: &Labels,
    namespace: &str,
    namespace_labels: &Labels,
    service_account: &str,
) -> IdentityLabels {
    let mut out: IdentityLabels = labels
        .iter()
        .filter(|(k, _)| relevant(k))
        .map(|(k, v)| (format!("k8s:{k}"), v.clone()))
        .collect();
    out.insert(format!("k8s:{NAMESPACE_LABEL}"), namespace.to_owned());
    for (k, v) in namespace_labels {
        out.insert(format!("k8s:{NAMESPACE_LABELS_PREFIX}{k}"), v.clone());
    }
    out.insert(
        format!("k8s:{SERVICE_ACCOUNT_LABEL}"),
        service_account.to_owned(),
    );
    out.insert(format!("k8s:{CLUSTER_LABEL}"), CLUSTER_NAME.to_owned());
    out
}

/// The labels of reserved identity `id` (`reserved:host`), if it is one.
pub fn reserved(id: u32) -> Option<IdentityLabels> {
    RESERVED
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| IdentityLabels::from([(format!("reserved:{name}"), String::new())]))
}

/// The name of reserved identity `id`.
pub fn reserved_name(id: u32) -> Option<&'static str> {
    RESERVED
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| *name)
}

/// A label of `labels` by a selector's key: `source:key` matches that
/// source only, `any:key` and a bare `key` any source.
pub fn lookup<'a>(labels: &'a IdentityLabels, key: &str) -> Option<&'a str> {
    let (source, key) = match key.split_once(':') {
        Some((s, k)) => (s, k),
        None => ("any", key),
    };
    if source == "any" {
        labels
            .iter()
            .find(|(k, _)| k.split_once(':').is_some_and(|(_, k)| k == key))
            .map(|(_, v)| v.as_str())
    } else {
        labels.get(&format!("{source}:{key}")).map(String::as_str)
    }
}

/// Whether identity `id` (with `labels`) is one of `entity`'s.
pub fn in_entity(entity: Entity, id: u32, labels: &IdentityLabels) -> bool {
    match entity {
        Entity::All => true,
        Entity::World => id == WORLD,
        Entity::Host => id == HOST,
        Entity::RemoteNode => id == REMOTE_NODE,
        Entity::Init => id == INIT,
        Entity::Health => id == HEALTH,
        Entity::Unmanaged => id == UNMANAGED,
        Entity::KubeApiserver => id == KUBE_APISERVER,
        Entity::Ingress => id == INGRESS,
        // Every identity of this cluster, and the reserved ones that live
        // in it (everything but the world).
        Entity::Cluster => {
            (id != WORLD && id < FIRST_WORKLOAD)
                || labels
                    .get(&format!("k8s:{CLUSTER_LABEL}"))
                    .map(String::as_str)
                    == Some(CLUSTER_NAME)
        }
    }
}

/// `k8s:org=empire` etc., as Cilium prints them.
pub fn display(labels: &IdentityLabels) -> Vec<String> {
    labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect()
}

/// The workload identities of a cluster: each label set in use and its
/// number. Numbers are handed out from [`FIRST_WORKLOAD`] in the order
/// label sets first appear, and never handed out twice (a released number
/// stays unused, so a stale ipcache entry can never name someone else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identities {
    pub by_id: BTreeMap<u32, IdentityLabels>,
    /// The next number to hand out.
    pub next: u32,
}

impl Default for Identities {
    fn default() -> Self {
        Self {
            by_id: BTreeMap::new(),
            next: FIRST_WORKLOAD,
        }
    }
}

/// What an allocation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityChange {
    /// New label sets, with their new numbers.
    pub allocated: Vec<u32>,
    /// Numbers whose last user went.
    pub released: Vec<u32>,
}

impl Identities {
    /// The number of a label set, if it has one.
    pub fn id_of(&self, labels: &IdentityLabels) -> Option<u32> {
        self.by_id
            .iter()
            .find(|(_, l)| *l == labels)
            .map(|(id, _)| *id)
    }

    /// The labels of a workload or reserved identity.
    pub fn labels(&self, id: u32) -> Option<IdentityLabels> {
        self.by_id.get(&id).cloned().or_else(|| reserved(id))
    }

    /// The identities for the label sets in use now (`in_use`, one item
    /// per pod, in pod order): those already known keep their numbers,
    /// new ones get the next, unused ones are released.
    pub fn allocate<'a>(
        &self,
        in_use: impl IntoIterator<Item = &'a IdentityLabels>,
    ) -> (Identities, IdentityChange) {
        let mut next = Identities {
            by_id: BTreeMap::new(),
            next: self.next.max(FIRST_WORKLOAD),
        };
        let mut change = IdentityChange::default();
        for labels in in_use {
            if next.id_of(labels).is_some() {
                continue;
            }
            let id = match self.id_of(labels) {
                Some(id) => id,
                None => {
                    let id = next.next;
                    next.next += 1;
                    change.allocated.push(id);
                    id
                }
            };
            next.by_id.insert(id, labels.clone());
        }
        let kept: BTreeSet<u32> = next.by_id.keys().copied().collect();
        change.released = self
            .by_id
            .keys()
            .filter(|id| !kept.contains(id))
            .copied()
            .collect();
        (next, change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ns(name: &str) -> Labels {
        labels(&[("kubernetes.io/metadata.name", name)])
    }

    fn pod(pairs: &[(&str, &str)], namespace: &str) -> IdentityLabels {
        of_pod(&labels(pairs), namespace, &ns(namespace), "default")
    }

    #[test]
    fn identity_labels_are_the_relevant_pod_labels_the_namespace_and_its_labels() {
        let l = pod(
            &[
                ("org", "empire"),
                ("class", "deathstar"),
                ("pod-template-hash", "6fb5694d4c"),
                ("statefulset.kubernetes.io/pod-name", "db-0"),
                ("app.kubernetes.io/name", "deathstar"),
                ("failure-domain.beta.kubernetes.io/zone", "a"),
            ],
            "default",
        );
        assert_eq!(
            display(&l),
            [
                "k8s:app.kubernetes.io/name=deathstar",
                "k8s:class=deathstar",
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=default",
                "k8s:io.kubernetes.pod.namespace=default",
                "k8s:org=empire",
            ]
        );
        assert_eq!(lookup(&l, "org"), Some("empire"));
        assert_eq!(lookup(&l, "any:org"), Some("empire"));
        assert_eq!(lookup(&l, "k8s:org"), Some("empire"));
        assert_eq!(lookup(&l, "reserved:org"), None);
        assert_eq!(
            lookup(&l, "k8s:io.kubernetes.pod.namespace"),
            Some("default")
        );
        assert_eq!(lookup(&l, "pod-template-hash"), None);
    }

    #[test]
    fn reserved_identities_are_numbered_as_cilium_numbers_them() {
        let names: Vec<(u32, &str)> = RESERVED.to_vec();
        assert_eq!(
            names,
            [
                (1, "host"),
                (2, "world"),
                (3, "unmanaged"),
                (4, "health"),
                (5, "init"),
                (6, "remote-node"),
                (7, "kube-apiserver"),
                (8, "ingress"),
            ]
        );
        assert_eq!(
            display(&reserved(WORLD).unwrap()),
            ["reserved:world".to_owned()]
        );
        assert_eq!(reserved(9), None);
        assert_eq!(Identities::default().labels(HOST), reserved(HOST));
    }

    #[test]
    fn one_identity_per_label_set_from_256_in_order_of_appearance() {
        let ds = pod(&[("org", "empire"), ("class", "deathstar")], "default");
        let tf = pod(&[("org", "empire"), ("class", "tiefighter")], "default");
        let xw = pod(&[("org", "alliance"), ("class", "xwing")], "default");
        // The same pod labels in another namespace: another identity.
        let xw_other = pod(&[("org", "alliance"), ("class", "xwing")], "kube-system");
        // Only a per-pod label differs: the same identity.
        let ds2 = pod(
            &[
                ("org", "empire"),
                ("class", "deathstar"),
                ("pod-template-hash", "abc"),
            ],
            "default",
        );
        let (ids, change) = Identities::default().allocate([&ds, &ds2, &tf, &xw, &xw_other]);
        assert_eq!(change.allocated, [256, 257, 258, 259]);
        assert!(change.released.is_empty());
        assert_eq!(
            [&ds, &ds2, &tf, &xw, &xw_other].map(|l| ids.id_of(l)),
            [Some(256), Some(256), Some(257), Some(258), Some(259)]
        );
        assert_eq!(ids.next, 260);
    }

    #[test]
    fn a_pod_added_with_known_labels_allocates_nothing_a_relabel_allocates_and_releases() {
        let ds = pod(&[("org", "empire"), ("class", "deathstar")], "default");
        let tf = pod(&[("org", "empire"), ("class", "tiefighter")], "default");
        let xw = pod(&[("org", "alliance"), ("class", "xwing")], "default");
        let (ids, _) = Identities::default().allocate([&ds, &tf, &xw]);

        // A third deathstar: no new identity (only an ipcache entry).
        let (added, change) = ids.allocate([&ds, &tf, &xw, &ds]);
        assert_eq!(change, IdentityChange::default());
        assert_eq!(added, ids);

        // The tiefighter defects: org=alliance, class=tiefighter is new
        // (259); its old set has no user left and is released; numbers
        // are never reused.
        let defector = pod(&[("org", "alliance"), ("class", "tiefighter")], "default");
        let (after, change) = ids.allocate([&ds, &defector, &xw]);
        assert_eq!(
            change,
            IdentityChange {
                allocated: vec![259],
                released: vec![257],
            }
        );
        assert_eq!(after.id_of(&defector), Some(259));
        assert_eq!(after.id_of(&ds), Some(256));
        assert_eq!(after.id_of(&xw), Some(258));
        // Back to the old labels: a fresh number, not 257.
        let (back, change) = after.allocate([&ds, &tf, &xw]);
        assert_eq!(change.allocated, [260]);
        assert_eq!(change.released, [259]);
        assert_eq!(back.id_of(&tf), Some(260));

        // Relabelling into a set another pod has: reuse, release the old.
        let (merged, change) = ids.allocate([&ds, &xw, &xw]);
        assert_eq!(change.allocated, Vec::<u32>::new());
        assert_eq!(change.released, [257]);
        assert_eq!(merged.by_id.len(), 2);
    }

    #[test]
    fn entities_cover_the_reserved_and_cluster_identities() {
        let ds = pod(&[("org", "empire")], "default");
        assert!(in_entity(Entity::Cluster, 256, &ds));
        assert!(in_entity(Entity::Cluster, HOST, &reserved(HOST).unwrap()));
        assert!(in_entity(
            Entity::Cluster,
            REMOTE_NODE,
            &reserved(REMOTE_NODE).unwrap()
        ));
        assert!(!in_entity(
            Entity::Cluster,
            WORLD,
            &reserved(WORLD).unwrap()
        ));
        assert!(in_entity(Entity::World, WORLD, &reserved(WORLD).unwrap()));
        assert!(!in_entity(Entity::World, 256, &ds));
        assert!(in_entity(Entity::All, WORLD, &reserved(WORLD).unwrap()));
        assert!(!in_entity(
            Entity::Host,
            REMOTE_NODE,
            &reserved(REMOTE_NODE).unwrap()
        ));
    }
}
