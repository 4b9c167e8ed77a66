//! A lab's network policies: its pods as policy sees them (Kubernetes
//! namespaces and labels), the policies kept in its record (`policy
//! apply|delete|list`), `lab pod label`, and traces through the
//! evaluator.
//!
//! A pod keeps the name every command prints and takes, `LAB/POD`; its
//! Kubernetes namespace is one of its attributes (as its labels are), and
//! `LAB/NAMESPACE/POD` names it too.
//!
//! A lab with a `--policy-mode` enforces its record: every change
//! (`policy apply|delete`, `lab pod label`, and `lab up` first) goes
//! through [`enforce`], which builds the mode's datapath over the lab's
//! nodes, checks it, plans what the record asks for (all of it: what is
//! not asked for goes) and writes the plan; the record is saved only once
//! the nodes hold it. `lab down` removes what the datapath wrote
//! ([`teardown`]).

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant, SystemTime},
};

use ipnet::Ipv4Net;
use serde::Serialize;

use super::{
    Lab, LabError,
    names::display,
    plan::{Plan, PodPlan},
    state::{LabLock, LabState},
};
use crate::{
    drops::{
        record::{PolicyNames, PolicyRef},
        session::{NamePolicy, PolicyNamer, PolicyQuery},
    },
    kernel::{datapath::Shown, netns::NetNs},
    policy::{
        Cluster, Evaluator, Flavor, Party, PolicyError, PolicyMode, Query, Verdict,
        datapath::{self, Nodes, PodPort, Want},
        eval::{Namespace, Node, Outcome, Pod},
        identity::{self, Identities, IdentityChange},
        model::{Kind, Labels, Policy, PolicyKey, Protocol},
        yaml,
    },
};

/// The namespaces every cluster has, whether pods run there or not.
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// The service account of every lab pod.
const SERVICE_ACCOUNT: &str = "default";

/// The labels of pod `pod` now (the record's, else the scenario's).
pub fn pod_labels(lab: &Lab, pod: &PodPlan) -> Labels {
    lab.state
        .labels
        .get(&pod.name)
        .cloned()
        .unwrap_or_else(|| pod.labels.clone())
}

/// The namespaces of the lab: the built-in ones and its pods'.
pub fn namespaces(lab: &Lab) -> Vec<String> {
    let mut set: BTreeSet<String> = BUILTIN_NAMESPACES.iter().map(|s| (*s).to_owned()).collect();
    set.extend(lab.plan.pods.iter().map(|p| p.namespace.clone()));
    set.into_iter().collect()
}

/// The lab as policy sees it: pods named `LAB/POD`.
pub fn cluster(lab: &Lab) -> Cluster {
    Cluster {
        namespaces: namespaces(lab)
            .iter()
            .map(|n| Namespace::named(n))
            .collect(),
        pods: lab
            .plan
            .pods
            .iter()
            .map(|p| Pod {
                name: display(lab.name(), &p.name),
                namespace: p.namespace.clone(),
                labels: pod_labels(lab, p),
                addr: p.addr,
                node: lab.plan.nodes[p.node].name.clone(),
                service_account: SERVICE_ACCOUNT.to_owned(),
            })
            .collect(),
        nodes: lab
            .plan
            .nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                addr: n.uplink_addr,
            })
            .collect(),
    }
}

/// How the lab's datapath reads policies (netfilter's reading without a
/// policy mode).
pub fn flavor(lab: &Lab) -> Flavor {
    lab.plan
        .options
        .policy_mode
        .map_or(Flavor::Netfilter, PolicyMode::flavor)
}

/// The lab's identities now: the recorded table, brought up to date with
/// the pods' labels.
pub fn identities(lab: &Lab, cluster: &Cluster) -> (Identities, IdentityChange) {
    cluster.identities(&lab.state.identities.clone().unwrap_or_default())
}

/// The lab policy commands act on: `name`, else the only lab up, else the
/// only one with a policy mode.
pub fn pick_lab(name: Option<&str>) -> Result<Lab, LabError> {
    if let Some(name) = name {
        return Lab::open(name);
    }
    let mut labs = Lab::all()?;
    match labs.len() {
        0 => return Err(LabError::NoLabs),
        1 => return Ok(labs.remove(0)),
        _ => {}
    }
    let names = labs
        .iter()
        .map(|l| l.name().to_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut with: Vec<Lab> = labs
        .into_iter()
        .filter(|l| l.plan.options.policy_mode.is_some())
        .collect();
    if with.len() == 1 {
        return Ok(with.remove(0));
    }
    Err(LabError::WhichLab(names))
}

/// Where a lab's policy datapath works: its nodes (as output names them,
/// their namespaces opened) with the pods each holds (address and
/// host-side veth).
pub fn nodes(plan: &Plan) -> Result<Nodes, LabError> {
    let mut nodes = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        nodes.push(datapath::Node {
            name: display(&plan.lab, &n.name),
            ns: NetNs::open(&n.netns)?,
            pods: pod_ports(plan, i),
        });
    }
    Ok(Nodes {
        lab: plan.lab.clone(),
        nodes,
    })
}

fn pod_ports(plan: &Plan, node: usize) -> Vec<PodPort> {
    plan.pods
        .iter()
        .filter(|p| p.node == node)
        .map(|p| PodPort {
            name: display(&plan.lab, &p.name),
            addr: p.addr,
            veth: p.host_veth.clone(),
        })
        .collect()
}

/// Whether `mode` can enforce here (before `lab up` builds anything): a
/// mode still being built is no obstacle (it records only).
pub fn check_mode(lab: &str, mode: PolicyMode) -> Result<(), LabError> {
    let dp = datapath::datapath(
        mode,
        Nodes {
            lab: lab.to_owned(),
            nodes: Vec::new(),
        },
    );
    match dp.check() {
        Ok(()) | Err(PolicyError::NotEnforced(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What an enforcement did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Enforced {
    pub policy_mode: Option<PolicyMode>,
    /// Whether the mode's datapath enforces the record (false: no policy
    /// mode, or a mode that only records for now).
    pub enforced: bool,
    /// What was written (or would be), in the mode's own units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Shown>,
    /// The lab's nodes.
    pub nodes: usize,
    /// True: nothing was written (neither the kernel nor the record).
    pub dry_run: bool,
}

/// Enforces lab `lab`'s record as it is in memory (policies, labels,
/// identities) on its nodes with its `--policy-mode`: checks the
/// datapath, plans, and writes the plan unless `dry_run`.
pub fn enforce(lab: &Lab, dry_run: bool) -> Result<Enforced, LabError> {
    let mode = lab.plan.options.policy_mode;
    let recorded = Enforced {
        policy_mode: mode,
        enforced: false,
        plan: None,
        nodes: lab.plan.nodes.len(),
        dry_run,
    };
    let Some(mode) = mode else {
        return Ok(recorded);
    };
    let dp = datapath::datapath(mode, nodes(&lab.plan)?);
    match dp.check() {
        Ok(()) => {}
        Err(PolicyError::NotEnforced(_)) => return Ok(recorded),
        Err(e) => return Err(e.into()),
    }
    let cluster = cluster(lab);
    let (ids, _) = identities(lab, &cluster);
    let planned = dp.plan(&Want {
        cluster: &cluster,
        identities: &ids,
        policies: &lab.state.policies,
    })?;
    if !dry_run {
        dp.apply(&planned)?;
    }
    Ok(Enforced {
        enforced: true,
        plan: Some(planned.shown()),
        ..recorded
    })
}

/// What lab `lab`'s policy datapath counted, by node, policy, direction
/// and verdict, read from its nodes (`labctl metrics`): nft rule counters
/// in netfilter mode, policy map entries and per-endpoint metrics in ebpf
/// mode. Empty for a lab without `--policy-mode`.
pub fn verdict_counts(lab: &Lab) -> Result<Vec<datapath::VerdictCount>, LabError> {
    let Some(mode) = lab.plan.options.policy_mode else {
        return Ok(Vec::new());
    };
    let dp = datapath::datapath(mode, nodes(&lab.plan)?);
    let cluster = cluster(lab);
    let (ids, _) = identities(lab, &cluster);
    Ok(dp.counters(&Want {
        cluster: &cluster,
        identities: &ids,
        policies: &lab.state.policies,
    })?)
}

/// Every policy lab's counts ([`verdict_counts`]), by lab name, and the
/// labs that could not be read (each said at debug level).
pub fn all_verdict_counts() -> (Vec<(String, Vec<datapath::VerdictCount>)>, u64) {
    let labs = match Lab::all() {
        Ok(labs) => labs,
        Err(e) => {
            tracing::debug!("cannot read the labs: {e}");
            return (Vec::new(), 1);
        }
    };
    let mut out = Vec::new();
    let mut failed = 0;
    for lab in labs.iter().filter(|l| l.plan.options.policy_mode.is_some()) {
        match verdict_counts(lab) {
            Ok(counts) => out.push((lab.name().to_owned(), counts)),
            Err(e) => {
                tracing::debug!("policy counters of lab {}: {e}", lab.name());
                failed += 1;
            }
        }
    }
    (out, failed)
}

/// Enforces `lab` (its record changed in memory) and saves the record
/// once the nodes hold it. When writing fails, the record is not saved
/// and the nodes are set back to `before` (what the record still says);
/// the error says whether that worked.
fn enforce_and_save(lab: &mut Lab, before: LabState, dry_run: bool) -> Result<Enforced, LabError> {
    match enforce(lab, dry_run) {
        Ok(done) => {
            if !dry_run {
                lab.state.save()?;
            }
            Ok(done)
        }
        Err(e) => {
            let old = Lab {
                plan: lab.plan.clone(),
                state: before,
            };
            let restored = match enforce(&old, false) {
                Ok(_) => "nothing was recorded, and the nodes hold the previous policies again"
                    .to_owned(),
                Err(e2) => format!(
                    "nothing was recorded, and setting the previous policies back failed too ({e2}): the nodes may hold part of the change; fix the cause and run the command again, or `labctl lab down {}`",
                    lab.name()
                ),
            };
            Err(LabError::NotEnforced {
                source: Box::new(e),
                restored,
            })
        }
    }
}

/// `lab up`: installs the lab's policy datapath and enforces the record
/// (no policies yet: the datapath's skeleton). A mode still being built
/// records only.
pub(super) fn build(plan: &Plan, state: &LabState) -> Result<(), LabError> {
    let Some(mode) = plan.options.policy_mode else {
        return Ok(());
    };
    let dp = datapath::datapath(mode, nodes(plan)?);
    match dp.check() {
        Ok(()) => {}
        Err(PolicyError::NotEnforced(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    dp.install()?;
    let lab = Lab {
        plan: plan.clone(),
        state: state.clone(),
    };
    enforce(&lab, false).map(drop)
}

/// `lab down`: removes what the policy datapath wrote in the lab's nodes
/// that are still its own (`ours`: namespaces whose inode is the recorded
/// one): what could not be, one sentence each. Works from the record
/// alone, whatever state a killed command left.
pub(super) fn teardown(state: &LabState, ours: &[NetNs]) -> Vec<String> {
    let Some(mode) = state.options.policy_mode else {
        return Vec::new();
    };
    let plan = super::scenario::find(&state.scenario)
        .and_then(|sc| Plan::new(&state.lab, sc, state.options.clone()).ok());
    let nodes = ours
        .iter()
        .filter_map(|ns| match &plan {
            Some(p) => p
                .nodes
                .iter()
                .position(|n| n.netns == ns.name())
                .map(|i| datapath::Node {
                    name: display(&p.lab, &p.nodes[i].name),
                    ns: ns.handle(),
                    pods: pod_ports(p, i),
                }),
            None => Some(datapath::Node {
                name: ns.name().to_owned(),
                ns: ns.handle(),
                pods: Vec::new(),
            }),
        })
        .collect();
    let dp = datapath::datapath(
        mode,
        Nodes {
            lab: state.lab.clone(),
            nodes,
        },
    );
    match dp.teardown() {
        Ok(()) => Vec::new(),
        Err(PolicyError::Teardown(each)) => each
            .into_iter()
            .map(|e| format!("cannot remove the {mode} policy datapath: {e}"))
            .collect(),
        Err(e) => vec![format!("cannot remove the {mode} policy datapath: {e}")],
    }
}

/// What `apply` did to one policy, as kubectl says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub policy: PolicyKey,
    pub action: Action,
    /// The pods it selects now.
    pub selects: Vec<String>,
}

/// Records `policies` in lab `lab` (each replacing one of the same kind,
/// namespace and name) and enforces the result: all of them, or none when
/// one is refused (`dry_run`: only plans, changes nothing).
pub fn apply(
    lab: &str,
    policies: Vec<Policy>,
    dry_run: bool,
) -> Result<(Vec<Applied>, Enforced), LabError> {
    let _lock = LabLock::acquire()?;
    let mut lab = Lab::open(lab)?;
    let before = lab.state.clone();
    let known = namespaces(&lab);
    for p in &policies {
        if !known.contains(&p.namespace) {
            return Err(PolicyError::NoSuchNamespace {
                file: p.origin.file.clone(),
                line: p.origin.line,
                namespace: p.namespace.clone(),
                lab: lab.name().to_owned(),
                known: known.join(", "),
            }
            .into());
        }
        if p.kind == Kind::CiliumNetworkPolicy
            && lab.plan.options.policy_mode == Some(PolicyMode::Netfilter)
        {
            return Err(PolicyError::CiliumWithoutCilium {
                file: p.origin.file.clone(),
                line: p.origin.line,
                lab: lab.name().to_owned(),
            }
            .into());
        }
    }
    let actions = merge(&mut lab.state.policies, policies);
    let enforced = enforce_and_save(&mut lab, before, dry_run)?;
    let cluster = cluster(&lab);
    let eval = Evaluator::new(
        &cluster,
        identities(&lab, &cluster).0,
        &lab.state.policies,
        flavor(&lab),
    );
    Ok((
        applied(&eval, &cluster, &lab.state.policies, actions),
        enforced,
    ))
}

/// Puts `new` into `policies`, each replacing one of the same kind,
/// namespace and name: what happened to each.
pub(super) fn merge(policies: &mut Vec<Policy>, new: Vec<Policy>) -> Vec<(PolicyKey, Action)> {
    let mut actions = Vec::new();
    for p in new {
        let key = p.key();
        let action = match policies.iter().position(|q| q.key() == key) {
            Some(i) if policies[i].same_as(&p) => Action::Unchanged,
            Some(i) => {
                policies[i] = p;
                Action::Configured
            }
            None => {
                policies.push(p);
                Action::Created
            }
        };
        actions.push((key, action));
    }
    actions
}

/// What `policy apply` says of each policy: what happened, what it
/// selects.
pub(super) fn applied(
    eval: &Evaluator<'_>,
    cluster: &Cluster,
    policies: &[Policy],
    actions: Vec<(PolicyKey, Action)>,
) -> Vec<Applied> {
    actions
        .into_iter()
        .map(|(key, action)| {
            let selects = policies
                .iter()
                .find(|p| p.key() == key)
                .map(|p| {
                    eval.selected(p)
                        .into_iter()
                        .map(|i| cluster.pods[i].name.clone())
                        .collect()
                })
                .unwrap_or_default();
            Applied {
                policy: key,
                action,
                selects,
            }
        })
        .collect()
}

/// A policy named on the command line: `NAME`, `NAMESPACE/NAME`, either
/// after `netpol/` or `cnp/`; or one read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Key(PolicyKey),
}

/// The policies of `state` that `target` names.
/// `scope` names where they are in errors (``lab `starwars` ``, ``node
/// `kind-worker` ``).
pub(super) fn resolve(
    scope: &str,
    policies: &[Policy],
    target: &Target,
) -> Result<PolicyKey, LabError> {
    let lab = scope;
    let all: Vec<PolicyKey> = policies.iter().map(Policy::key).collect();
    let known = || {
        if all.is_empty() {
            "(none)".to_owned()
        } else {
            all.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let (shown, matches): (String, Vec<&PolicyKey>) = match target {
        Target::Key(key) => (key.to_string(), all.iter().filter(|k| *k == key).collect()),
        Target::Name(name) => {
            let (kind, rest) = match name.split_once('/') {
                Some(("netpol", rest)) => (Some(Kind::NetworkPolicy), rest),
                Some(("cnp", rest)) => (Some(Kind::CiliumNetworkPolicy), rest),
                _ => (None, name.as_str()),
            };
            let (ns, n) = match rest.split_once('/') {
                Some((ns, n)) => (Some(ns), n),
                None => (None, rest),
            };
            let found = all
                .iter()
                .filter(|k| {
                    kind.is_none_or(|kind| k.kind == kind)
                        && ns.is_none_or(|ns| k.namespace == ns)
                        && k.name == n
                })
                .collect();
            (name.clone(), found)
        }
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(PolicyError::NoSuchPolicy {
            name: shown,
            lab: lab.to_owned(),
            known: known(),
        }
        .into()),
        several => Err(PolicyError::Ambiguous {
            name: shown,
            lab: lab.to_owned(),
            matches: several
                .iter()
                .map(|k| format!("{}/{k}", k.kind.short()))
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into()),
    }
}

/// Removes the named policies from lab `lab` and enforces the rest: all
/// of them, or none when one is not there.
pub fn delete(lab: &str, targets: &[Target]) -> Result<(Vec<PolicyKey>, Enforced), LabError> {
    let _lock = LabLock::acquire()?;
    let mut lab = Lab::open(lab)?;
    let before = lab.state.clone();
    let mut keys = Vec::new();
    for t in targets {
        let key = resolve(&format!("lab `{}`", lab.name()), &lab.state.policies, t)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    lab.state.policies.retain(|p| !keys.contains(&p.key()));
    let enforced = enforce_and_save(&mut lab, before, false)?;
    Ok((keys, enforced))
}

/// One change of `lab pod label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// `KEY=VALUE`.
    Set(String, String),
    /// `KEY-`.
    Remove(String),
}

impl LabelChange {
    /// `KEY=VALUE` or `KEY-`, checked as the API server checks labels.
    pub fn parse(arg: &str) -> Result<Self, PolicyError> {
        if let Some((k, v)) = arg.split_once('=') {
            yaml::check_label(k, v).map_err(PolicyError::BadLabel)?;
            return Ok(LabelChange::Set(k.to_owned(), v.to_owned()));
        }
        if let Some(k) = arg.strip_suffix('-') {
            yaml::check_label(k, "").map_err(PolicyError::BadLabel)?;
            return Ok(LabelChange::Remove(k.to_owned()));
        }
        Err(PolicyError::BadLabelArgument(arg.to_owned()))
    }
}

/// What `lab pod label` changed.
#[derive(Debug, Clone, Serialize)]
pub struct Relabelled {
    pub lab: String,
    pub pod: String,
    pub namespace: String,
    pub before: Labels,
    pub after: Labels,
    /// Its security identity before and after.
    pub identity_before: u32,
    pub identity_after: u32,
    /// Identities allocated and released by the change.
    pub change: IdentityChange,
    /// The policies selecting it before and after.
    pub selected_before: Vec<PolicyKey>,
    pub selected_after: Vec<PolicyKey>,
    /// What the lab's policy datapath wrote for it.
    pub enforced: Enforced,
}

/// The key of a policy-selected-by list of pod `pod`.
fn selecting(eval: &Evaluator<'_>, pod: usize) -> Vec<PolicyKey> {
    let mut out: Vec<PolicyKey> = [
        crate::policy::model::Direction::Ingress,
        crate::policy::model::Direction::Egress,
    ]
    .into_iter()
    .flat_map(|d| eval.selecting(pod, d))
    .map(Policy::key)
    .collect();
    out.sort();
    out.dedup();
    out
}

/// Changes pod `pod`'s labels in lab `lab`'s record (`overwrite`: a key
/// that has a value may get another, as `kubectl label --overwrite`).
pub fn relabel(
    lab: &str,
    pod: &str,
    changes: &[LabelChange],
    overwrite: bool,
) -> Result<Relabelled, LabError> {
    let _lock = LabLock::acquire()?;
    let mut lab = Lab::open(lab)?;
    let before_state = lab.state.clone();
    let plan = lab
        .plan
        .find_pod(pod)
        .cloned()
        .ok_or_else(|| not_a_pod(&lab, pod))?;
    let before_cluster = cluster(&lab);
    let (before_ids, _) = identities(&lab, &before_cluster);
    let index = before_cluster
        .pod_by_name(&display(lab.name(), &plan.name))
        .unwrap_or_default();
    let before = pod_labels(&lab, &plan);
    let mut after = before.clone();
    for c in changes {
        match c {
            LabelChange::Set(k, v) => {
                if let Some(old) = after.get(k)
                    && old != v
                    && !overwrite
                {
                    return Err(PolicyError::BadLabel(format!(
                        "`{k}` already has a value ({old}) and --overwrite was not given; nothing was changed"
                    ))
                    .into());
                }
                after.insert(k.clone(), v.clone());
            }
            LabelChange::Remove(k) => {
                if after.remove(k).is_none() {
                    return Err(PolicyError::NoSuchLabel {
                        pod: display(lab.name(), &plan.name),
                        key: k.clone(),
                        labels: yaml::labels_text(&before),
                    }
                    .into());
                }
            }
        }
    }
    let selected_before = {
        let eval = Evaluator::new(
            &before_cluster,
            before_ids.clone(),
            &lab.state.policies,
            flavor(&lab),
        );
        selecting(&eval, index)
    };
    let identity_before = before_ids
        .id_of(&before_cluster.identity_labels(index))
        .unwrap_or(identity::INIT);
    if after == plan.labels {
        lab.state.labels.remove(&plan.name);
    } else {
        lab.state.labels.insert(plan.name.clone(), after.clone());
    }
    let after_cluster = cluster(&lab);
    let (after_ids, change) = after_cluster.identities(&before_ids);
    let identity_after = after_ids
        .id_of(&after_cluster.identity_labels(index))
        .unwrap_or(identity::INIT);
    let selected_after = {
        let eval = Evaluator::new(
            &after_cluster,
            after_ids.clone(),
            &lab.state.policies,
            flavor(&lab),
        );
        selecting(&eval, index)
    };
    lab.state.identities = Some(after_ids);
    let enforced = enforce_and_save(&mut lab, before_state, false)?;
    Ok(Relabelled {
        lab: lab.name().to_owned(),
        pod: display(lab.name(), &plan.name),
        namespace: plan.namespace.clone(),
        before,
        after,
        identity_before,
        identity_after,
        change,
        selected_before,
        selected_after,
        enforced,
    })
}

fn not_a_pod(lab: &Lab, name: &str) -> LabError {
    LabError::NoSuchMember {
        name: name.to_owned(),
        labs: format!("lab `{}` (as a pod)", lab.name()),
        members: lab
            .plan
            .pods
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One side of a trace, as it is printed.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// `LAB/POD`, a member's name, or the CIDR given.
    pub name: String,
    /// A pod's Kubernetes namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub addr: Ipv4Net,
    /// Its security identity (as the other side's node sees it).
    pub identity: u32,
    /// A reserved identity's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved: Option<&'static str>,
    /// Its identity's labels.
    pub labels: Vec<String>,
    /// A pod's Kubernetes labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<Labels>,
}

/// `policy trace`: both sides and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The lab traced in (None: a Kubernetes node, `node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    /// The Kubernetes node traced on (`policy trace --node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub policy_mode: Option<PolicyMode>,
    pub flavor: Flavor,
    pub from: Side,
    pub to: Side,
    pub port: u16,
    pub protocol: Protocol,
    pub verdict: Verdict,
    /// How many policies the lab has.
    pub policies: usize,
    /// Where the lab's datapath decides each direction, with what the
    /// kernel counted there (empty: no policy mode, or one that cannot
    /// say yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datapath: Vec<datapath::Decision>,
}

/// A trace's end: a pod (`POD`, `LAB/POD`, `LAB/NAMESPACE/POD`), another
/// member (its address), an IPv4 address or a CIDR.
fn party(lab: &Lab, cluster: &Cluster, name: &str) -> Result<(Party, String), LabError> {
    let local = lab.local_name(name);
    if let Some(p) = lab.plan.find_pod(local) {
        let shown = display(lab.name(), &p.name);
        if let Some(i) = cluster.pod_by_name(&shown) {
            return Ok((Party::Pod(i), shown));
        }
    }
    if let Some(e) = lab.endpoint(local) {
        return Ok((
            cluster.party(Ipv4Net::from(e.addr)),
            display(lab.name(), &e.name),
        ));
    }
    if let Ok(addr) = name.parse::<Ipv4Addr>() {
        let party = cluster.party(Ipv4Net::from(addr));
        return Ok((party, shown_party(cluster, party, name)));
    }
    if let Ok(net) = name.parse::<Ipv4Net>() {
        let party = cluster.party(net);
        return Ok((party, shown_party(cluster, party, name)));
    }
    Err(PolicyError::BadParty(name.to_owned()).into())
}

fn shown_party(cluster: &Cluster, party: Party, given: &str) -> String {
    match party {
        Party::Pod(i) => cluster.pods[i].name.clone(),
        Party::Net(net) => {
            if net.prefix_len() == 32 {
                net.addr().to_string()
            } else if given.contains('/') {
                net.to_string()
            } else {
                given.to_owned()
            }
        }
    }
}

/// The lab a trace between `from` and `to` is in: `lab`, else the one
/// lab with whichever of them is a member.
pub fn trace_lab(lab: Option<&str>, from: &str, to: &str) -> Result<Lab, LabError> {
    let member = |s: &str| s.parse::<Ipv4Addr>().is_err() && s.parse::<Ipv4Net>().is_err();
    let name = if member(from) { from } else { to };
    if !member(name) {
        return pick_lab(lab);
    }
    let (lab, m) = Lab::split_member(lab, name);
    Lab::find_member(lab, m)
}

/// Judges a new connection from `from` to `to` on `port`/`protocol` with
/// the lab's policies.
pub fn trace(
    lab: &Lab,
    from: &str,
    to: &str,
    port: u16,
    protocol: Protocol,
) -> Result<Trace, LabError> {
    let cluster = cluster(lab);
    let (ids, _) = identities(lab, &cluster);
    let src = party(lab, &cluster, from)?;
    let dst = party(lab, &cluster, to)?;
    let judged = Judged {
        lab: Some(lab.name().to_owned()),
        node: None,
        mode: lab.plan.options.policy_mode,
        flavor: flavor(lab),
        cluster: &cluster,
        identities: ids,
        policies: &lab.state.policies,
        nodes: nodes(&lab.plan).ok(),
    };
    judge(judged, (from, src), (to, dst), port, protocol)
}

/// One cell of `policy trace --all`: a new connection from one pod to
/// another on one port, as a trace decides it.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub verdict: Verdict,
    /// Where the datapath decides each direction, read from the kernel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datapath: Vec<datapath::Decision>,
}

impl MatrixCell {
    /// Whether the datapath, as read from the kernel, lets it through
    /// (None: nothing read).
    pub fn datapath_allows(&self) -> Option<bool> {
        (!self.datapath.is_empty()).then(|| self.datapath.iter().all(|d| d.allows))
    }
}

/// A port of `policy trace --all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MatrixPort {
    pub port: u16,
    pub protocol: Protocol,
}

/// `policy trace --all`: every pod of a lab to every other pod on each
/// port.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub lab: String,
    pub policy_mode: Option<PolicyMode>,
    pub flavor: Flavor,
    /// The pods, in the lab's order (rows and columns).
    pub pods: Vec<String>,
    /// The ports, in the order given.
    pub ports: Vec<MatrixPort>,
    pub policies: usize,
    /// Row by row: each source, each port, each destination.
    pub cells: Vec<MatrixCell>,
}

/// Judges every connection between two pods of `lab` on each of `ports`,
/// each as `policy trace` does (the evaluator's verdict and, with a
/// policy mode, where the datapath decides it, read from the kernel),
/// with the lab read once.
pub fn trace_all(lab: &Lab, ports: &[(u16, Protocol)]) -> Result<Matrix, LabError> {
    let cluster = cluster(lab);
    let (ids, _) = identities(lab, &cluster);
    let eval = Evaluator::new(&cluster, ids, &lab.state.policies, flavor(lab));
    let path = match (lab.plan.options.policy_mode, nodes(&lab.plan).ok()) {
        (Some(mode), Some(n)) => Some(datapath::datapath(mode, n)),
        _ => None,
    };
    let want = Want {
        cluster: &cluster,
        identities: &eval.identities,
        policies: &lab.state.policies,
    };
    let pods: Vec<usize> = lab
        .plan
        .pods
        .iter()
        .filter_map(|p| cluster.pod_by_name(&display(lab.name(), &p.name)))
        .collect();
    let mut cells = Vec::new();
    for &from in &pods {
        for &(port, protocol) in ports {
            for &to in &pods {
                if to == from {
                    continue;
                }
                let query = Query {
                    from: Party::Pod(from),
                    to: Party::Pod(to),
                    port,
                    protocol,
                };
                let verdict = eval.evaluate(&query);
                let datapath = path
                    .as_ref()
                    .map(|p| p.explain(&want, &query, &verdict))
                    .unwrap_or_default();
                cells.push(MatrixCell {
                    from: cluster.pods[from].name.clone(),
                    to: cluster.pods[to].name.clone(),
                    port,
                    protocol,
                    verdict,
                    datapath,
                });
            }
        }
    }
    Ok(Matrix {
        lab: lab.name().to_owned(),
        policy_mode: lab.plan.options.policy_mode,
        flavor: flavor(lab),
        pods: pods.iter().map(|&i| cluster.pods[i].name.clone()).collect(),
        ports: ports
            .iter()
            .map(|&(port, protocol)| MatrixPort { port, protocol })
            .collect(),
        policies: lab.state.policies.len(),
        cells,
    })
}

/// What a trace judges with: a lab's or a node's pods and policies.
pub(super) struct Judged<'a> {
    pub lab: Option<String>,
    pub node: Option<String>,
    pub mode: Option<PolicyMode>,
    pub flavor: Flavor,
    pub cluster: &'a Cluster,
    pub identities: Identities,
    pub policies: &'a [Policy],
    /// Where the datapath works (None: nothing to read there).
    pub nodes: Option<Nodes>,
}

/// The trace of a new connection between two parties (each as given, and
/// as found with the name output gives it).
pub(super) fn judge(
    j: Judged<'_>,
    (from, (src, src_name)): (&str, (Party, String)),
    (to, (dst, dst_name)): (&str, (Party, String)),
    port: u16,
    protocol: Protocol,
) -> Result<Trace, LabError> {
    let cluster = j.cluster;
    if !matches!((src, dst), (Party::Pod(_), _) | (_, Party::Pod(_))) {
        return Err(PolicyError::NoPod {
            from: from.to_owned(),
            to: to.to_owned(),
        }
        .into());
    }
    let eval = Evaluator::new(cluster, j.identities, j.policies, j.flavor);
    let pod_of = |p: Party| match p {
        Party::Pod(i) => Some(i),
        Party::Net(_) => None,
    };
    let side = |party: Party, name: String, other: Party| {
        let seen_from = pod_of(other);
        let id = eval.identity(party, seen_from);
        let (namespace, addr, pod_labels) = match party {
            Party::Pod(i) => {
                let p = &cluster.pods[i];
                (
                    Some(p.namespace.clone()),
                    Ipv4Net::from(p.addr),
                    Some(p.labels.clone()),
                )
            }
            Party::Net(n) => (None, n, None),
        };
        Side {
            name,
            namespace,
            addr,
            identity: id,
            reserved: identity::reserved_name(id),
            labels: identity::display(&eval.labels(party, seen_from)),
            pod_labels,
        }
    };
    let query = Query {
        from: src,
        to: dst,
        port,
        protocol,
    };
    let verdict = eval.evaluate(&query);
    let decisions = match (j.mode, j.nodes) {
        (Some(mode), Some(n)) => datapath::datapath(mode, n).explain(
            &Want {
                cluster,
                identities: &eval.identities,
                policies: j.policies,
            },
            &query,
            &verdict,
        ),
        _ => Vec::new(),
    };
    Ok(Trace {
        lab: j.lab,
        node: j.node,
        policy_mode: j.mode,
        flavor: j.flavor,
        from: side(src, src_name, dst),
        to: side(dst, dst_name, src),
        port,
        protocol,
        verdict,
        policies: j.policies.len(),
        datapath: decisions,
    })
}

/// Names the policy behind each policy drop the tracer sees (`trace`,
/// `observe`): finds the lab of the namespace the packet was dropped in
/// and judges its tuple with that lab's policies, as `policy trace` does.
/// Labs are read once and again only when their record changes (checked
/// at most every [`RECHECK`]); judgements are kept per tuple, so a storm
/// of drops costs a hash lookup each.
#[derive(Default)]
pub struct DropPolicies {
    /// The lab of every lab namespace, and when it was last listed.
    labs_by_netns: HashMap<u64, String>,
    listed: Option<Instant>,
    labs: HashMap<String, DropLab>,
}

/// How often a lab's record is looked at again (for new policies, labels,
/// labs).
const RECHECK: Duration = Duration::from_secs(1);

/// One lab's policies as last read, and the judgements made with them.
struct DropLab {
    lab: Lab,
    cluster: Cluster,
    identities: Identities,
    modified: Option<SystemTime>,
    checked: Instant,
    verdicts: HashMap<PolicyQuery, Option<PolicyNames>>,
}

fn record_modified(lab: &str) -> Option<SystemTime> {
    std::fs::metadata(LabState::path(lab))
        .and_then(|m| m.modified())
        .ok()
}

impl DropLab {
    fn read(name: &str) -> Option<Self> {
        let modified = record_modified(name);
        let lab = Lab::open(name).ok()?;
        let cluster = cluster(&lab);
        let (identities, _) = identities(&lab, &cluster);
        Some(Self {
            lab,
            cluster,
            identities,
            modified,
            checked: Instant::now(),
            verdicts: HashMap::new(),
        })
    }

    /// The lab's policies' verdict on the tuple of `q` (IPv4 only), with
    /// the evaluator that gave it and the two parties it judged.
    fn evaluate(&self, q: &PolicyQuery) -> Option<(Evaluator<'_>, [Party; 2], Verdict)> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (q.src, q.dst) else {
            return None;
        };
        let eval = Evaluator::new(
            &self.cluster,
            self.identities.clone(),
            &self.lab.state.policies,
            flavor(&self.lab),
        );
        let from = self.cluster.party(Ipv4Net::from(src));
        let to = self.cluster.party(Ipv4Net::from(dst));
        let verdict = eval.evaluate(&Query {
            from,
            to,
            port: q.dport,
            protocol: protocol_of(q.l4proto),
        });
        Some((eval, [from, to], verdict))
    }

    fn judge(&self, q: &PolicyQuery) -> Option<PolicyNames> {
        let (eval, [from, to], verdict) = self.evaluate(q)?;
        let hop = if q.egress {
            &verdict.egress
        } else {
            &verdict.ingress
        };
        let pod_of = |p: Party| match p {
            Party::Pod(i) => Some(i),
            Party::Net(_) => None,
        };
        let name_of = |p: Party| match p {
            Party::Pod(i) => self.cluster.pods[i].name.clone(),
            Party::Net(n) => n.addr().to_string(),
        };
        let (policies, rule, note) = match &hop.outcome {
            Outcome::Denied { rule } => {
                (vec![policy_ref(&rule.policy)], Some(rule.to_string()), None)
            }
            Outcome::DefaultDenied => {
                let enforcing: Vec<PolicyRef> = eval
                    .policies()
                    .iter()
                    .filter(|p| hop.selected_by.contains(&p.key()))
                    .filter(|p| p.default_deny.get(hop.direction))
                    .map(|p| policy_ref(&p.key()))
                    .collect();
                (enforcing, None, None)
            }
            other => (
                Vec::new(),
                None,
                Some(format!(
                    "the lab's policies do not deny this {} ({}): the drop is not theirs",
                    hop.direction,
                    outcome_words(other)
                )),
            ),
        };
        Some(PolicyNames {
            lab: self.lab.name().to_owned(),
            from: name_of(from),
            to: name_of(to),
            pod: hop.pod.clone(),
            policies,
            rule,
            src_identity: eval.identity(from, pod_of(to)),
            dst_identity: eval.identity(to, pod_of(from)),
            note,
        })
    }
}

/// What the lab's policies say about a policy verdict that a datapath
/// reported for a new connection (`observe`'s policy-verdict flows): the
/// policies behind it, as Hubble 1.17+ lists them in
/// `ingress_allowed_by` / `egress_denied_by`, and both ends' identities
/// and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictNames {
    pub lab: String,
    /// The pod whose policy decided (`LAB/POD`).
    pub pod: Option<String>,
    /// The policies that allowed it (the allowing rule's), or denied it
    /// (the deny rule's, else those that turn default deny on).
    pub policies: Vec<PolicyRef>,
    /// The rule that decided (`default/rule1 ingress[0] (p.yaml:9)`);
    /// none for a default deny.
    pub rule: Option<String>,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// The identities' labels (`k8s:org=empire`, `reserved:world`).
    pub src_labels: Vec<String>,
    pub dst_labels: Vec<String>,
}

impl DropLab {
    /// The names of a verdict the datapath gave (`allowed` or not) on the
    /// tuple of `q`, judged again with the lab's policies.
    fn verdict_names(&self, q: &PolicyQuery, allowed: bool) -> Option<VerdictNames> {
        let (eval, [from, to], verdict) = self.evaluate(q)?;
        let hop = if q.egress {
            &verdict.egress
        } else {
            &verdict.ingress
        };
        let (policies, rule) = match (&hop.outcome, allowed) {
            (Outcome::Allowed { rule }, true) | (Outcome::Denied { rule }, false) => {
                (vec![policy_ref(&rule.policy)], Some(rule.to_string()))
            }
            (Outcome::DefaultDenied, false) => (
                eval.policies()
                    .iter()
                    .filter(|p| hop.selected_by.contains(&p.key()))
                    .filter(|p| p.default_deny.get(hop.direction))
                    .map(|p| policy_ref(&p.key()))
                    .collect(),
                None,
            ),
            // The datapath and the lab's policies disagree, or nothing
            // of theirs decided (the pod's own node): no names.
            _ => (Vec::new(), None),
        };
        let pod_of = |p: Party| match p {
            Party::Pod(i) => Some(i),
            Party::Net(_) => None,
        };
        Some(VerdictNames {
            lab: self.lab.name().to_owned(),
            pod: hop.pod.clone(),
            policies,
            rule,
            src_identity: eval.identity(from, pod_of(to)),
            dst_identity: eval.identity(to, pod_of(from)),
            src_labels: identity::display(&eval.labels(from, pod_of(to))),
            dst_labels: identity::display(&eval.labels(to, pod_of(from))),
        })
    }
}

/// A policy's key as the names of a flow carry it.
fn policy_ref(key: &PolicyKey) -> PolicyRef {
    PolicyRef {
        kind: key.kind.as_str(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

fn protocol_of(l4proto: u8) -> Protocol {
    match l4proto {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        132 => Protocol::Sctp,
        _ => Protocol::Any,
    }
}

/// What a direction that allowed a packet decided, in a few words.
fn outcome_words(o: &Outcome) -> &'static str {
    match o {
        Outcome::NoEndpoint => "not a pod",
        Outcome::NotSelected => "no policy selects the pod",
        Outcome::NotEnforced => "no policy turns default deny on",
        Outcome::Allowed { .. } => "a rule allows it",
        Outcome::AllowedHost => "from the pod's own node",
        Outcome::DefaultDenied | Outcome::Denied { .. } => "denied",
    }
}

impl DropPolicies {
    pub fn new() -> Self {
        Self::default()
    }

    /// The lab whose namespace has inode `ino` (listing the labs again,
    /// at most every RECHECK, when it is not known).
    fn lab_of(&mut self, ino: u64) -> Option<String> {
        if let Some(lab) = self.labs_by_netns.get(&ino) {
            return Some(lab.clone());
        }
        if self.listed.is_some_and(|t| t.elapsed() < RECHECK) {
            return None;
        }
        self.labs_by_netns = super::gone::labs_by_netns();
        self.listed = Some(Instant::now());
        self.labs_by_netns.get(&ino).cloned()
    }

    /// The lab's policies, read again when its record changed.
    fn judged(&mut self, lab: &str) -> Option<&mut DropLab> {
        let stale = match self.labs.get_mut(lab) {
            None => true,
            Some(j) if j.checked.elapsed() >= RECHECK => {
                j.checked = Instant::now();
                record_modified(lab) != j.modified
            }
            Some(_) => false,
        };
        if stale {
            match DropLab::read(lab) {
                Some(j) => {
                    self.labs.insert(lab.to_owned(), j);
                }
                None => {
                    // Taken down: forget its namespaces too.
                    self.labs.remove(lab);
                    self.labs_by_netns.retain(|_, l| l != lab);
                    return None;
                }
            }
        }
        self.labs.get_mut(lab)
    }
}

impl DropPolicies {
    /// The names of a policy verdict a datapath reported in the namespace
    /// of `q` (a lab's node): None when it is no lab's.
    pub fn verdict(&mut self, q: &PolicyQuery, allowed: bool) -> Option<VerdictNames> {
        let lab = self.lab_of(q.netns_ino)?;
        self.judged(&lab)?.verdict_names(q, allowed)
    }
}

impl NamePolicy for DropPolicies {
    fn name(&mut self, query: &PolicyQuery) -> Option<PolicyNames> {
        let lab = self.lab_of(query.netns_ino)?;
        let judged = self.judged(&lab)?;
        if let Some(known) = judged.verdicts.get(query) {
            return known.clone();
        }
        let names = judged.judge(query);
        // Bounded: a lab has few tuples; a scan of many is forgotten.
        if judged.verdicts.len() >= 4096 {
            judged.verdicts.clear();
        }
        judged.verdicts.insert(*query, names.clone());
        names
    }
}

/// A [`DropPolicies`] for a tracing session.
pub fn drop_namer() -> PolicyNamer {
    PolicyNamer::new(DropPolicies::new())
}

/// One side of [`would_allow`]: a member of the lab, or a pod that does not exist
/// yet (a new replica, a newcomer) with its namespace and labels.
#[derive(Debug, Clone)]
pub enum Who {
    Member(String),
    New { namespace: String, labels: Labels },
}

/// Would a new connection from `from` to `to` on `port`/`protocol` be
/// allowed by the lab's policies? Either side may be a pod that does not
/// exist yet: it is judged as the next replica would be, by its labels,
/// with an address no pod has (so policies written by address do not
/// cover it). Judged by the evaluator, which both datapaths agree with.
pub fn would_allow(
    lab: &Lab,
    from: &Who,
    to: &Who,
    port: u16,
    protocol: Protocol,
) -> Result<Verdict, LabError> {
    let mut cluster = cluster(lab);
    let known = namespaces(lab);
    let mut add = |namespace: &str, labels: &Labels, n: u8| -> Result<Party, LabError> {
        if !known.iter().any(|k| k == namespace) {
            return Err(PolicyError::NoSuchNamespace {
                file: "exercise".into(),
                line: 0,
                namespace: namespace.to_owned(),
                lab: lab.name().to_owned(),
                known: known.join(", "),
            }
            .into());
        }
        // The last node's pod range, at an address no pod of the plan has.
        let node = lab.plan.nodes.last().ok_or_else(|| {
            LabError::from(PolicyError::BadParty(
                "a new pod in a lab without nodes".into(),
            ))
        })?;
        let [a, b, c, _] = node.pod_cidr.octets();
        cluster.pods.push(Pod {
            name: display(lab.name(), &format!("new-pod-{n}")),
            namespace: namespace.to_owned(),
            labels: labels.clone(),
            addr: Ipv4Addr::new(a, b, c, 250 - n),
            node: node.name.clone(),
            service_account: SERVICE_ACCOUNT.to_owned(),
        });
        Ok(Party::Pod(cluster.pods.len() - 1))
    };
    // New pods first (they change the cluster), then the members.
    let mut new = [None, None];
    for (n, who) in [from, to].into_iter().enumerate() {
        if let Who::New { namespace, labels } = who {
            new[n] = Some(add(namespace, labels, n as u8)?);
        }
    }
    let mut sides = [None, None];
    for (n, who) in [from, to].into_iter().enumerate() {
        sides[n] = Some(match (who, new[n]) {
            (Who::Member(name), _) => party(lab, &cluster, name)?.0,
            (Who::New { .. }, Some(p)) => p,
            (Who::New { .. }, None) => continue,
        });
    }
    let [Some(src), Some(dst)] = sides else {
        return Err(PolicyError::BadParty("a new pod that could not be added".into()).into());
    };
    let (ids, _) = identities(lab, &cluster);
    let eval = Evaluator::new(&cluster, ids, &lab.state.policies, flavor(lab));
    Ok(eval.evaluate(&Query {
        from: src,
        to: dst,
        port,
        protocol,
    }))
}

/// The policy mode of the lab whose node has the namespace with inode
/// `ino` (None: no lab's node, or a lab without a policy mode): where
/// `observe` reads policy verdicts from.
pub fn node_policy_mode(ino: u64) -> Option<PolicyMode> {
    let labs = Lab::all().ok()?;
    labs.iter().find_map(|lab| {
        let record = lab.state.namespaces.iter().find(|r| r.inode == ino)?;
        lab.plan
            .nodes
            .iter()
            .any(|n| n.netns == record.name)
            .then_some(lab.plan.options.policy_mode)
            .flatten()
    })
}
