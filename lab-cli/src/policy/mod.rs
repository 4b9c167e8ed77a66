//! Network policy, the domain: Kubernetes NetworkPolicy and Cilium's
//! CiliumNetworkPolicy read from YAML ([`yaml`]) into one model
//! ([`model`]), label selectors ([`selector`]), Cilium's security
//! identities ([`identity`]), a pure evaluator that judges a
//! connection as the policies say ([`eval`]), and what Cilium's datapath
//! would hold for them ([`maps`]: ipcaches, policy maps, their changes).
//!
//! Nothing here touches the kernel: the lab layer resolves its pods into
//! an [`eval::Cluster`] and keeps the policies in its record; the
//! datapaths (netfilter chains and sets, Cilium-style eBPF maps) are
//! built from the same model, and their verdicts are compared with the
//! evaluator's.

pub mod bpf;
pub mod cilium;
pub mod datapath;
pub mod eval;
pub mod identity;
pub mod maps;
pub mod model;
pub mod nft;
pub mod selector;
pub mod yaml;

use thiserror::Error;

use crate::kernel::{datapath::ApplyError, tool::ToolError};

pub use eval::{Cluster, Evaluator, Flavor, Party, Query, Verdict};
pub use model::{Kind, Policy, PolicyKey};
pub use yaml::ParseError;

/// Who enforces a lab's policies (`lab up --policy-mode`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// NetworkPolicy as netfilter rules: per-pod chains and nft sets of
    /// peer addresses, as Calico and kube-router do.
    Netfilter,
    /// Cilium's identity-based policy: identities from labels, an
    /// ipcache, a policy map per endpoint, tc programs.
    Ebpf,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Netfilter => "netfilter",
            PolicyMode::Ebpf => "ebpf",
        }
    }

    /// How this datapath reads the policies.
    pub fn flavor(self) -> Flavor {
        match self {
            PolicyMode::Netfilter => Flavor::Netfilter,
            PolicyMode::Ebpf => Flavor::Cilium,
        }
    }
}

impl std::fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy command the user got wrong (exit 2; nothing is changed).
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("{0}; nothing was changed")]
    Parse(#[from] ParseError),
    #[error(
        "--policy-mode {0} does not enforce policies yet: they are recorded and judged by `labctl policy trace`"
    )]
    NotEnforced(&'static str),
    #[error("no policy `{name}` in {lab}; its policies are: {known} (see `labctl policy list`)")]
    NoSuchPolicy {
        name: String,
        lab: String,
        known: String,
    },
    #[error("`{name}` names several policies of {lab} ({matches}); say which, as NAMESPACE/NAME")]
    Ambiguous {
        name: String,
        lab: String,
        matches: String,
    },
    #[error(
        "{file}:{line}: namespace `{namespace}` does not exist in lab `{lab}` (its namespaces: {known}); nothing was changed"
    )]
    NoSuchNamespace {
        file: String,
        line: u32,
        namespace: String,
        lab: String,
        known: String,
    },
    #[error(
        "{file}:{line}: lab `{lab}` enforces policy with netfilter (as Calico and kube-router), which knows no CiliumNetworkPolicy; write a NetworkPolicy, or bring the lab up with --policy-mode ebpf (nothing was changed)"
    )]
    CiliumWithoutCilium {
        file: String,
        line: u32,
        lab: String,
    },
    #[error("`{0}` is neither KEY=VALUE (set a label) nor KEY- (remove one)")]
    BadLabelArgument(String),
    #[error("{0}")]
    BadLabel(String),
    #[error("pod `{pod}` has no label `{key}` to remove (its labels: {labels})")]
    NoSuchLabel {
        pod: String,
        key: String,
        labels: String,
    },
    #[error("`{0}` is not a pod, an IPv4 address or an IPv4 CIDR")]
    BadParty(String),
    #[error(
        "`policy trace` takes one --port for one connection; give several only with --all (the matrix of every pod to every pod)"
    )]
    OnePort,
    #[error("neither `{from}` nor `{to}` is a pod: a trace needs a pod on at least one side")]
    NoPod { from: String, to: String },
    #[error("the `nft` command was not found; install nftables (`apt-get install nftables`)")]
    NftMissing,
    #[error(
        "--policy-mode netfilter needs br_netfilter (pods of one node talk across a bridge, which netfilter sees only through it), and /proc/sys/net/bridge is missing: load it with `modprobe br_netfilter`"
    )]
    NoBrNetfilter,
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Apply(Box<ApplyError>),
    #[error("a plan made by the {0} datapath cannot be written by another one")]
    ForeignPlan(&'static str),
    #[error(transparent)]
    Program(#[from] crate::ebpf::error::ProgramSetupError),
    #[error(
        "pod veth `{veth}` is missing on {node} ({reason}): the lab is damaged; `labctl lab down` and up again"
    )]
    NoVeth {
        veth: String,
        node: String,
        reason: String,
    },
    #[error(
        "lab `{0}` holds no eBPF policy maps: they come with `labctl lab up SCENARIO --policy-mode ebpf` (`labctl policy trace` judges policies in every mode)"
    )]
    NoEbpfMaps(String),
    #[error(
        "pod `{0}` is no endpoint of any node's policy maps yet: apply a policy (`labctl policy apply -f FILE`) or check `labctl policy endpoints`"
    )]
    NoEndpoint(String),
    #[error(
        "`--node` works on the pods of this node's container runtime, which cannot be asked: {0}"
    )]
    NoRuntime(String),
    #[error(
        "node `{node}` enforces its policies with --policy-mode {mode}; delete them first (`labctl policy delete --node --all`), then apply with the other mode"
    )]
    NodeModeSet { node: String, mode: PolicyMode },
    #[error(
        "a lab's --policy-mode is chosen at `labctl lab up SCENARIO --policy-mode MODE`; `policy apply --policy-mode` is for a Kubernetes node (--node)"
    )]
    ModeOfLab,
    #[error(
        "`policy delete --all` is for a Kubernetes node (--node); name a lab's policies, or give the file they came from with -f"
    )]
    AllOnNode,
    #[error(
        "`policy sync` follows a Kubernetes node's pods (--node) and no container runtime answers here; a lab's policies are enforced at every change (`labctl policy apply`)"
    )]
    SyncOnNode,
    #[error(
        "node `{0}` holds no eBPF policy maps: they come with its first policy (`labctl policy apply -f FILE`, --policy-mode ebpf being the default on a node)"
    )]
    NoNodeEbpfMaps(String),
    #[error(
        "no Cilium policy maps are pinned in {0} (Cilium pins cilium_ipcache and cilium_policy_v2_<EPID> there on a node it runs on)"
    )]
    NoCiliumMaps(String),
    #[error("Cilium has no policy map for endpoint `{0}` (its endpoints: {1})")]
    NoCiliumEndpoint(String, String),
    /// What a teardown could not remove, one sentence per object.
    #[error("{}", .0.join("; "))]
    Teardown(Vec<String>),
}

impl From<ApplyError> for PolicyError {
    fn from(e: ApplyError) -> Self {
        PolicyError::Apply(Box::new(e))
    }
}

impl PolicyError {
    /// Whether it is the user's to fix (exit 2), not the system's.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            PolicyError::NftMissing
                | PolicyError::NoBrNetfilter
                | PolicyError::Tool(_)
                | PolicyError::Apply(_)
                | PolicyError::ForeignPlan(_)
                | PolicyError::Teardown(_)
                | PolicyError::Program(_)
                | PolicyError::NoVeth { .. }
                | PolicyError::NoRuntime(_)
        )
    }
}
