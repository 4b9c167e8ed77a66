//! `labctl policy` arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{svc::PlanArgs, values};
use crate::{output::OutputFormat, policy::model::Protocol};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Apply NetworkPolicy (networking.k8s.io/v1) and CiliumNetworkPolicy
    /// (cilium.io/v2) YAML, as kubectl apply -f: every document of the
    /// file, or none.
    Apply(PolicyApplyArgs),
    /// Delete policies by name (NAME, NAMESPACE/NAME, netpol/... or
    /// cnp/...) or those of a file.
    Delete(PolicyDeleteArgs),
    /// A lab's policies, with the pods each selects.
    List(PolicyListArgs),
    /// What the policies decide for a new connection: both identities,
    /// the policies selecting each side, the rule that decides, the
    /// verdict.
    Trace(PolicyTraceArgs),
    /// The security identities in use (--policy-mode ebpf): each with its
    /// labels and the pods the nodes' ipcaches give it.
    Identities(PolicyViewArgs),
    /// The endpoints of every node (--policy-mode ebpf) and the ipcache,
    /// read from the pinned maps.
    Endpoints(PolicyViewArgs),
    /// One pod's policy map with its counters (--policy-mode ebpf), as
    /// `cilium bpf policy get`.
    Map(PolicyMapArgs),
    /// On a Kubernetes node: enforce the node's policies on its pods as
    /// they are now; with --watch, again whenever the container runtime's
    /// pods change (as Cilium's agent follows its pods).
    Sync(PolicySyncArgs),
}

#[derive(Debug, Args)]
pub struct PolicySyncArgs {
    /// The node (the only scope sync has; taken when not given).
    #[arg(long)]
    pub node: bool,
    /// Keep following the runtime's pods (checked every second) until
    /// Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Written once the first enforcement is done (for scripts).
    #[arg(long, requires = "watch")]
    pub ready_file: Option<PathBuf>,
    /// Output: text for people, json for scripts (one line per change).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PolicyViewArgs {
    /// The lab [default: the only lab up, or the only one with a policy mode].
    #[arg(long, value_parser = values::lab_name, conflicts_with = "cilium")]
    pub lab: Option<String>,
    /// This Kubernetes node's maps (`policy apply --node`) [default when
    /// no lab is up and the container runtime answers].
    #[arg(long, conflicts_with_all = ["lab", "cilium"])]
    pub node: bool,
    /// Read Cilium's own pinned maps (/sys/fs/bpf/tc/globals/cilium_ipcache,
    /// cilium_policy_v2_<EPID>) instead of a lab's.
    #[arg(long)]
    pub cilium: bool,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PolicyMapArgs {
    /// The pod: POD, LAB/POD or LAB/NAMESPACE/POD (with --cilium: an
    /// endpoint id).
    pub pod: String,
    /// The lab (needed only when several labs have this pod).
    #[arg(long, value_parser = values::lab_name, conflicts_with = "cilium")]
    pub lab: Option<String>,
    /// This Kubernetes node's maps (`policy apply --node`) [default when
    /// no lab is up and the container runtime answers].
    #[arg(long, conflicts_with_all = ["lab", "cilium"])]
    pub node: bool,
    /// Read Cilium's pinned policy map of endpoint POD
    /// (/sys/fs/bpf/tc/globals/cilium_policy_v2_<EPID>).
    #[arg(long)]
    pub cilium: bool,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PolicyApplyArgs {
    /// The YAML file (`-`: standard input); documents separated by `---`.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// The lab [default: the only lab up, or the only one with a policy mode].
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// This Kubernetes node's pods (kind, containerd), named
    /// NAMESPACE/NAME with labels from the container runtime [default
    /// when no lab is up and the runtime answers].
    #[arg(long, conflicts_with = "lab")]
    pub node: bool,
    /// With --node: the datapath that enforces the node's policies
    /// (chosen by the first apply) [default: ebpf]. A lab's is chosen at
    /// `lab up`.
    #[arg(long, value_enum)]
    pub policy_mode: Option<crate::policy::PolicyMode>,
    /// Output: text for people, json for scripts (with the plan).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, Args)]
pub struct PolicyDeleteArgs {
    /// Policies: NAME, NAMESPACE/NAME, or either after netpol/ or cnp/.
    #[arg(required_unless_present_any = ["file", "all"], conflicts_with = "file")]
    pub names: Vec<String>,
    /// Delete the policies this YAML file defines.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// With --node: every policy of the node (its datapath is then
    /// removed: nothing of labctl's stays on the node).
    #[arg(long, conflicts_with_all = ["file", "names"])]
    pub all: bool,
    /// The lab [default: the only lab up, or the only one with a policy mode].
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// This Kubernetes node's pods (kind, containerd), named
    /// NAMESPACE/NAME with labels from the container runtime [default
    /// when no lab is up and the runtime answers].
    #[arg(long, conflicts_with = "lab")]
    pub node: bool,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PolicyListArgs {
    /// The lab [default: every lab].
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// This Kubernetes node's pods (kind, containerd), named
    /// NAMESPACE/NAME with labels from the container runtime [default
    /// when no lab is up and the runtime answers].
    #[arg(long, conflicts_with = "lab")]
    pub node: bool,
    /// Output: text for people, json for scripts (one policy per line).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct PolicyTraceArgs {
    /// The source: a pod (POD, LAB/POD, LAB/NAMESPACE/POD), another lab
    /// member, an IPv4 address or a CIDR.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub from: Option<String>,
    /// The destination, as --from.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    pub to: Option<String>,
    /// The destination port and protocol: 80, 80/tcp, 53/udp (with
    /// --all, once per port of the matrix).
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = values::port_proto, required = true)]
    pub port: Vec<(u16, Protocol)>,
    /// Every pod of the lab to every other pod on each --port, in one
    /// call: the allow/deny matrix, each cell as a trace decides it.
    #[arg(long, conflicts_with = "node")]
    pub all: bool,
    /// The lab (needed only when several labs have these pods).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// This Kubernetes node's pods (kind, containerd), named
    /// NAMESPACE/NAME with labels from the container runtime [default
    /// when no lab is up and the runtime answers].
    #[arg(long, conflicts_with = "lab")]
    pub node: bool,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
