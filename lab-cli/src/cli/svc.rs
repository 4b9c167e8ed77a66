//! `labctl svc` arguments.

use std::net::Ipv4Addr;

use clap::{Args, Subcommand};

use super::values;
use crate::{output::OutputFormat, services::L4};

#[derive(Debug, Args)]
pub struct SvcArgs {
    #[command(subcommand)]
    pub command: SvcCommand,
}

#[derive(Debug, Subcommand)]
pub enum SvcCommand {
    /// Each service frontend with its backends and their connection
    /// counts, read from the kernel: kube-proxy's chains or the eBPF maps.
    List(SvcListArgs),
    /// The translated connections: each client flow, the service it went
    /// to and the backend it was given (conntrack's DNAT entries, or the
    /// eBPF load balancer's own tables).
    Flows(SvcFlowsArgs),
    /// Add a ClusterIP service to a lab (written at once, in the lab's mode).
    Add(SvcAddArgs),
    /// Delete a service from a lab.
    Del(SvcDelArgs),
    /// Add or remove one backend pod of a service.
    Backend(SvcBackendArgs),
}

#[derive(Debug, Args)]
pub struct SvcListArgs {
    /// One lab [default: every lab with services; with no lab, this
    /// namespace's kube-proxy chains and Cilium's maps].
    #[arg(long, value_parser = values::lab_name, conflicts_with = "netns")]
    pub lab: Option<String>,
    /// Read kube-proxy's chains (iptables and nftables) in this network
    /// namespace instead: a name from `ip netns`, NS/NAME of a pod, or a
    /// namespace file such as /proc/PID/ns/net.
    #[arg(long)]
    pub netns: Option<String>,
    /// Only frontends with a backend at this pod (POD, LAB/POD or NS/NAME).
    #[arg(long)]
    pub pod: Option<String>,
    /// Output: text for people, json for scripts (one frontend per line).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SvcFlowsArgs {
    /// The lab [default: every lab with services].
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Output: text for people, json for scripts (one flow per line).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SvcAddArgs {
    /// The service's name (a DNS label, e.g. `api`).
    pub name: String,
    /// The lab (needed only when several labs have services).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Its virtual IP, in 10.96.0.0/12 (not its network or broadcast
    /// address) [default: the first free from 10.96.0.10].
    #[arg(long, value_parser = values::service_vip)]
    pub vip: Option<Ipv4Addr>,
    /// The service port.
    #[arg(long, default_value = "80", value_parser = values::port)]
    pub port: u16,
    /// The port the backends listen on (the lab's app listens on 8080).
    #[arg(long, default_value = "8080", value_parser = values::port)]
    pub target_port: u16,
    /// Protocols (repeat for both) [default: tcp and udp].
    #[arg(long = "proto", short = 'p', value_enum)]
    pub protocols: Vec<L4>,
    /// A backend pod, POD or LAB/POD of this lab (repeat for several, each
    /// pod once; none: a service without endpoints).
    #[arg(long = "backend", short = 'b')]
    pub backends: Vec<String>,
    /// Output: text for people, json for scripts (with the plan).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, Args)]
pub struct SvcDelArgs {
    /// The service's name.
    pub name: String,
    /// The lab (needed only when several labs have services).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Output: text for people, json for scripts (with the plan).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, Args)]
pub struct SvcBackendArgs {
    #[command(subcommand)]
    pub command: SvcBackendCommand,
}

#[derive(Debug, Subcommand)]
pub enum SvcBackendCommand {
    /// Make a pod a backend of a service: labctl svc backend add web web-1
    Add(SvcBackendChangeArgs),
    /// Stop sending new connections to a pod: labctl svc backend del web web-1
    Del(SvcBackendChangeArgs),
    /// Make these pods (and no others) a service's backends:
    /// labctl svc backend set web web-1 web-2 (no pods: no endpoints)
    Set(SvcBackendSetArgs),
}

#[derive(Debug, Args)]
pub struct SvcBackendSetArgs {
    /// The service's name.
    pub service: String,
    /// The pods (POD or LAB/POD of this lab), each once; none: the service
    /// has no endpoints.
    pub pods: Vec<String>,
    /// The lab (needed only when several labs have services).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Output: text for people, json for scripts (with the plan).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub plan: PlanArgs,
}

#[derive(Debug, Args)]
pub struct SvcBackendChangeArgs {
    /// The service's name.
    pub service: String,
    /// The pod (POD or LAB/POD).
    pub pod: String,
    /// The lab (needed only when several labs have services).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Output: text for people, json for scripts (with the plan).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub plan: PlanArgs,
}

/// What a change prints of its plan, and whether it writes it.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PlanArgs {
    /// Print every change in the mode's own units (nft lines, iptables
    /// rules, eBPF map entries), not only how many.
    #[arg(long)]
    pub show_plan: bool,
    /// Print what would change, and change nothing (neither the kernel nor
    /// the lab's record).
    #[arg(long)]
    pub dry_run: bool,
}
