//! `labctl lab`: CNI-style lab topologies in network namespaces.
//!
//! [`Lab`] is the API the commands and the integration tests share: tests use
//! it as their fixture instead of wiring namespaces by hand.

pub mod down;
pub mod exec;
pub mod faults;
pub mod firewall;
pub mod gone;
pub mod hints;
pub mod names;
pub mod plan;
pub mod policy;
pub mod policy_bpf;
pub mod policy_node;
pub mod scenario;
pub mod services;
pub mod state;
pub mod status;
pub mod traffic;
pub mod up;

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::{
    ebpf::error::ProgramSetupError,
    kernel::{
        interrupt::Interrupted,
        netns::{NetNs, NetnsError},
        rtnl::RtnlError,
        sysctl::SysctlError,
    },
};
use firewall::FirewallError;
use plan::{LabOptions, Plan, PlanError, WORLD, WORLD_SERVER};
use state::{LabLock, LabState, StateError};

#[derive(Debug, Error)]
pub enum LabError {
    #[error("unknown scenario `{name}`; the scenarios are: {known} (see `labctl lab list`)")]
    UnknownScenario { name: String, known: String },
    #[error(
        "lab `{lab}` (scenario {scenario}) is already up; use it, or run `labctl lab down {lab}` first"
    )]
    AlreadyUp { lab: String, scenario: String },
    #[error(
        "network namespace `{0}` already exists and is not part of a lab; delete it (`ip netns del {0}`) or pick another lab name with --name"
    )]
    NameClash(String),
    #[error("lab `{0}` is not up (see `labctl lab status`)")]
    NotUp(String),
    #[error("no lab is up; start one with `labctl lab up basic`")]
    NoLabs,
    #[error("`{name}` is not a member of {labs}; the members are: {members}")]
    NoSuchMember {
        name: String,
        labs: String,
        members: String,
    },
    #[error(
        "no pod `{0}`: no lab of that name has it, and the node's container runtime knows no such pod (see `labctl lab status`, or `kubectl get pods -A -o wide` for this node's pods)"
    )]
    NoSuchPod(String),
    #[error(
        "no pods in namespace `{0}`: no lab of that name is up, and the node's container runtime has no pod in it"
    )]
    NoSuchPodNamespace(String),
    #[error("`{name}` exists in several labs ({labs}); say which: `LAB/{name}`, or --lab LAB")]
    AmbiguousMember { name: String, labs: String },
    #[error("forced failure at step {0} (test hook)")]
    InjectedFailure(usize),
    #[error("stopped by Ctrl-C / SIGTERM before step {step}")]
    Interrupted {
        step: usize,
        #[source]
        source: Interrupted,
    },
    #[error("{}", rolled_back_message(source, leftovers))]
    RolledBack {
        #[source]
        source: Box<LabError>,
        leftovers: Vec<String>,
    },
    #[error("tearing down lab `{lab}` left things behind:\n  {}", errors.join("\n  "))]
    Teardown { lab: String, errors: Vec<String> },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("cannot set up eBPF masquerading: {0}")]
    Nat(Box<ProgramSetupError>),
    #[error(
        "lab `{0}` masquerades with netfilter; eBPF masquerading settings need a lab built with `--masq ebpf`"
    )]
    NotEbpf(String),
    #[error(transparent)]
    Services(Box<crate::services::ServiceError>),
    #[error("cannot read the nodes' conntrack tables: {0}")]
    Conntrack(Box<crate::conntrack::netlink::CtnetlinkError>),
    #[error(transparent)]
    Policy(Box<crate::policy::PolicyError>),
    #[error("several labs are up ({0}); say which with --lab")]
    WhichLab(String),
    /// Enforcing a change failed: the record keeps what it had, and the
    /// nodes were set back to it (or could not be: `restored` says).
    #[error("{source}; {restored}")]
    NotEnforced {
        #[source]
        source: Box<LabError>,
        restored: String,
    },
}

impl From<crate::policy::PolicyError> for LabError {
    fn from(e: crate::policy::PolicyError) -> Self {
        LabError::Policy(Box::new(e))
    }
}

impl From<ProgramSetupError> for LabError {
    fn from(e: ProgramSetupError) -> Self {
        LabError::Nat(Box::new(e))
    }
}

fn rolled_back_message(source: &LabError, leftovers: &[String]) -> String {
    let what = if matches!(source, LabError::Interrupted { .. }) {
        "`lab up` was interrupted"
    } else {
        "building the lab failed"
    };
    if leftovers.is_empty() {
        format!("{what}; everything built so far was removed again")
    } else {
        format!(
            "{what}, and the rollback left: {}; run `labctl lab down` to retry",
            leftovers.join("; ")
        )
    }
}

impl LabError {
    /// Errors in what the user asked for (exit code 2), not in the system.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            LabError::UnknownScenario { .. }
                | LabError::AlreadyUp { .. }
                | LabError::NameClash(_)
                | LabError::NotUp(_)
                | LabError::NoLabs
                | LabError::NoSuchMember { .. }
                | LabError::NoSuchPod(_)
                | LabError::NoSuchPodNamespace(_)
                | LabError::AmbiguousMember { .. }
                | LabError::Plan(_)
                | LabError::NotEbpf(_)
                | LabError::WhichLab(_)
                | LabError::State(StateError::Name(_))
                | LabError::Netns(
                    NetnsError::BadName(_) | NetnsError::NotFound(_) | NetnsError::NotANetns(_)
                )
        ) || matches!(self, LabError::Services(e) if e.is_usage())
            || matches!(self, LabError::Policy(e) if e.is_usage())
    }
}

/// A place traffic can come from or go to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub name: String,
    /// The namespace it lives in (None: an outside address).
    pub netns: Option<String>,
    pub addr: Ipv4Addr,
}

impl Endpoint {
    pub fn open_netns(&self) -> Result<Option<NetNs>, LabError> {
        Ok(match &self.netns {
            Some(name) => Some(NetNs::open(name)?),
            None => None,
        })
    }
}

/// A lab that is up.
#[derive(Debug, Clone)]
pub struct Lab {
    pub plan: Plan,
    pub state: LabState,
}

impl Lab {
    /// Builds scenario `scenario` as lab `name` (default: the scenario's name).
    pub fn up(name: Option<&str>, scenario: &str, options: LabOptions) -> Result<Self, LabError> {
        Self::up_inner(name, scenario, options, None)
    }

    /// As [`Lab::up`], failing on purpose at build step `step` (tests of the rollback).
    #[doc(hidden)]
    pub fn up_failing_at(
        name: Option<&str>,
        scenario: &str,
        step: usize,
    ) -> Result<Self, LabError> {
        Self::up_inner(name, scenario, LabOptions::default(), Some(step))
    }

    fn up_inner(
        name: Option<&str>,
        scenario: &str,
        options: LabOptions,
        fail_at: Option<usize>,
    ) -> Result<Self, LabError> {
        let sc = scenario::find(scenario).ok_or_else(|| LabError::UnknownScenario {
            name: scenario.to_owned(),
            known: scenario::names().join(", "),
        })?;
        let plan = Plan::new(name.unwrap_or(sc.name), sc, options)?;
        let _lock = LabLock::acquire()?;
        let state = up::up(&plan, fail_at)?;
        Ok(Self { plan, state })
    }

    /// The lab `name`, from its record.
    pub fn open(name: &str) -> Result<Self, LabError> {
        let state = LabState::load(name)?.ok_or_else(|| LabError::NotUp(name.to_owned()))?;
        Self::from_state(state)
    }

    fn from_state(state: LabState) -> Result<Self, LabError> {
        let sc = scenario::find(&state.scenario).ok_or_else(|| LabError::UnknownScenario {
            name: state.scenario.clone(),
            known: scenario::names().join(", "),
        })?;
        let plan = Plan::new(&state.lab, sc, state.options.clone())?;
        Ok(Self { plan, state })
    }

    /// Every lab that is up (or half up).
    pub fn all() -> Result<Vec<Self>, LabError> {
        LabState::all()?.into_iter().map(Self::from_state).collect()
    }

    pub fn name(&self) -> &str {
        &self.plan.lab
    }

    /// Tears the lab down; reports everything that could not be removed.
    pub fn down(self) -> Result<(), LabError> {
        let _lock = LabLock::acquire()?;
        down_locked(&self.state)
    }

    /// The members (pods, nodes, world), as endpoints.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let pods = self.plan.pods.iter().map(|p| Endpoint {
            name: p.name.clone(),
            netns: Some(p.netns.clone()),
            addr: p.addr,
        });
        let nodes = self.plan.nodes.iter().map(|n| Endpoint {
            name: n.name.clone(),
            netns: Some(n.netns.clone()),
            addr: n.uplink_addr,
        });
        let world = std::iter::once(Endpoint {
            name: WORLD.into(),
            netns: Some(self.plan.world_netns.clone()),
            addr: WORLD_SERVER,
        });
        pods.chain(nodes).chain(world).collect()
    }

    /// Member `name`; a pod also as `NAMESPACE/POD` (its Kubernetes
    /// namespace), so `LAB/NAMESPACE/POD` names it too.
    pub fn endpoint(&self, name: &str) -> Option<Endpoint> {
        let name = self.plan.find_pod(name).map_or(name, |p| p.name.as_str());
        self.endpoints().into_iter().find(|e| e.name == name)
    }

    /// The namespace of member `name`.
    pub fn netns(&self, name: &str) -> Result<NetNs, LabError> {
        let endpoint = self
            .endpoint(name)
            .ok_or_else(|| self.no_such_member(name))?;
        Ok(NetNs::open(
            endpoint
                .netns
                .as_deref()
                .ok_or_else(|| self.no_such_member(name))?,
        )?)
    }

    fn no_such_member(&self, name: &str) -> LabError {
        LabError::NoSuchMember {
            name: name.to_owned(),
            labs: format!("lab `{}`", self.name()),
            members: self
                .endpoints()
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// `LAB/MEMBER`, as output names a lab's members, split into the lab
    /// and the member (with `--lab LAB` given, only a matching prefix is
    /// split); other names as given.
    pub fn split_member<'a>(lab: Option<&'a str>, member: &'a str) -> (Option<&'a str>, &'a str) {
        match (lab, member.split_once('/')) {
            (None, Some((l, m))) => (Some(l), m),
            (Some(l), Some((p, m))) if p == l => (Some(l), m),
            _ => (lab, member),
        }
    }

    /// Member `name` of this lab, with or without the `LAB/` prefix.
    pub fn local_name<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(self.name())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(name)
    }

    /// The lab holding member `member`: lab `lab` if given, else the only
    /// lab that has such a member.
    pub fn find_member(lab: Option<&str>, member: &str) -> Result<Self, LabError> {
        if let Some(lab) = lab {
            let lab = Self::open(lab)?;
            return match lab.endpoint(member) {
                Some(_) => Ok(lab),
                None => Err(lab.no_such_member(member)),
            };
        }
        let labs = Self::all()?;
        if labs.is_empty() {
            return Err(LabError::NoLabs);
        }
        let (mut with, without): (Vec<_>, Vec<_>) =
            labs.into_iter().partition(|l| l.endpoint(member).is_some());
        match with.len() {
            1 => Ok(with.remove(0)),
            0 => Err(LabError::NoSuchMember {
                name: member.to_owned(),
                labs: without
                    .iter()
                    .map(|l| format!("lab `{}`", l.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
                members: without
                    .first()
                    .map(|l| {
                        l.endpoints()
                            .iter()
                            .map(|e| e.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            }),
            _ => Err(LabError::AmbiguousMember {
                name: member.to_owned(),
                labs: with
                    .iter()
                    .map(|l| l.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// Changes eBPF masquerading's port range and/or UDP timeout on every node
/// of a running lab: the NAT programs are reloaded with the new settings
/// (the mapping table starts empty again) and the lab's record is updated.
pub fn reconfigure_nat(
    lab: &str,
    ports: Option<(u16, u16)>,
    udp_timeout_s: Option<u32>,
) -> Result<LabOptions, LabError> {
    let _lock = LabLock::acquire()?;
    let mut state = LabState::load(lab)?.ok_or_else(|| LabError::NotUp(lab.to_owned()))?;
    if state.options.masq != plan::MasqMode::Ebpf {
        return Err(LabError::NotEbpf(lab.to_owned()));
    }
    let mut options = state.options.clone();
    if ports.is_some() {
        options.nat_ports = ports;
    }
    if udp_timeout_s.is_some() {
        options.nat_udp_timeout = udp_timeout_s;
    }
    let sc = scenario::find(&state.scenario).ok_or_else(|| LabError::UnknownScenario {
        name: state.scenario.clone(),
        known: scenario::names().join(", "),
    })?;
    let plan = Plan::new(lab, sc, options.clone())?;
    for node in &plan.nodes {
        let ns = NetNs::open(&node.netns)?;
        crate::masq::nat::detach(&ns, ns.inode()?, plan::UPLINK)?;
        crate::masq::nat::attach(
            &ns,
            plan::UPLINK,
            &crate::masq::nat::NatParams {
                node_addr: node.uplink_addr,
                cluster: plan::CLUSTER_CIDR,
                ports: options.nat_ports,
                udp_timeout_s: options.nat_udp_timeout,
                tc_attach: options.tc_attach,
            },
        )?;
    }
    state.options = options.clone();
    state.save()?;
    Ok(options)
}

/// Tears down one recorded lab; the caller holds the lock.
fn down_locked(state: &LabState) -> Result<(), LabError> {
    let errors = down::teardown(state);
    if errors.is_empty() {
        state.remove()?;
        Ok(())
    } else {
        Err(LabError::Teardown {
            lab: state.lab.clone(),
            errors: errors.iter().map(ToString::to_string).collect(),
        })
    }
}

/// Tears down lab `name`, or every lab when `None`. Returns the names torn
/// down; every lab is attempted even when one fails.
pub fn down(name: Option<&str>) -> Result<Vec<String>, LabError> {
    let _lock = LabLock::acquire()?;
    let states = match name {
        Some(n) => vec![LabState::load(n)?.ok_or_else(|| LabError::NotUp(n.to_owned()))?],
        None => LabState::all()?,
    };
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut errors = Vec::new();
    for state in &states {
        // One lab's leftovers as they are; several labs' each named.
        let named = |e: String| match states.len() {
            1 => e,
            _ => format!("lab `{}`: {e}", state.lab),
        };
        match down_locked(state) {
            Ok(()) => done.push(state.lab.clone()),
            Err(LabError::Teardown { errors: e, .. }) => {
                failed.push(state.lab.as_str());
                errors.extend(e.into_iter().map(named));
            }
            Err(e) => {
                failed.push(state.lab.as_str());
                errors.push(named(e.to_string()));
            }
        }
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(LabError::Teardown {
            lab: failed.join(", "),
            errors,
        })
    }
}
