//! `labctl lab` arguments.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::values;

use crate::{
    ebpf::tc::TcAttach,
    lab::{plan::MasqMode, policy::LabelChange, traffic::Proto},
    output::OutputFormat,
    policy::PolicyMode,
    services::KubeProxyMode,
};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// The scenarios, with the concept each one teaches.
    List(LabListArgs),
    /// Build a scenario: basic, two-node, overlay, drops, policy, service
    /// or starwars.
    Up(LabUpArgs),
    /// Remove a lab and everything it created (default: every lab).
    Down(LabDownArgs),
    /// Nodes, pods, interfaces, addresses, routes and NAT rules, read from the kernel.
    Status(LabStatusArgs),
    /// Run a command in a member's namespace: labctl lab exec pod-a -- ip addr
    Exec(LabExecArgs),
    /// Send probes between members and report answers, round-trip times,
    /// and the source address the server saw.
    Traffic(LabTrafficArgs),
    /// Fire a planted fault of the drops scenario (see `labctl lab list`).
    Trigger(LabTriggerArgs),
    /// A lab pod's Kubernetes side: its labels.
    Pod(LabPodArgs),
}

#[derive(Debug, Args)]
pub struct LabPodArgs {
    #[command(subcommand)]
    pub command: LabPodCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabPodCommand {
    /// Set or remove a pod's labels, as `kubectl label pod`: labctl lab pod
    /// label xwing org=empire, labctl lab pod label xwing class-
    Label(LabPodLabelArgs),
}

#[derive(Debug, Args)]
pub struct LabPodLabelArgs {
    /// The pod: POD, LAB/POD or LAB/NAMESPACE/POD.
    pub pod: String,
    /// KEY=VALUE to set a label, KEY- to remove one.
    #[arg(required = true, value_parser = values::label_change)]
    pub changes: Vec<LabelChange>,
    /// Let KEY=VALUE replace a label that has another value.
    #[arg(long)]
    pub overwrite: bool,
    /// The lab (needed only when several labs have this pod).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabListArgs {
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    /// basic, two-node, overlay, drops, policy, service or starwars (see
    /// `labctl lab list`).
    #[arg(value_parser = values::scenario)]
    pub scenario: String,
    /// Lab name, prefixing its namespaces (default: the scenario's name).
    #[arg(long, value_parser = values::lab_name)]
    pub name: Option<String>,
    /// Pod MTU, 576-9000 (e.g. 1500 on the overlay to reproduce the MTU pitfall).
    #[arg(long, value_parser = values::mtu)]
    pub mtu: Option<u32>,
    /// Who masquerades pods' traffic to the world.
    #[arg(long, value_enum, default_value_t = MasqMode::Netfilter)]
    pub masq: MasqMode,
    /// With --masq ebpf: idle lifetime of UDP mappings, 1-86400 seconds [default: 30].
    #[arg(long, value_parser = values::nat_udp_timeout)]
    pub nat_udp_timeout: Option<u32>,
    /// With --masq ebpf: translated port range, e.g. 40000-40099 [default: 32768-60999].
    #[arg(long, value_parser = values::port_range)]
    pub nat_ports: Option<(u16, u16)>,
    /// With --masq ebpf: attach its tc programs through tcx where the
    /// kernel has it (auto) or always through a clsact qdisc (netlink), as
    /// kernels before 6.6 do.
    #[arg(long, value_enum, default_value_t = TcAttach::Auto)]
    pub tc_attach: TcAttach,
    /// Scenarios with services: who implements them [default: iptables].
    #[arg(long, value_enum)]
    pub kube_proxy: Option<KubeProxyMode>,
    /// Who enforces network policies (`labctl policy apply`): netfilter
    /// chains and sets as Calico, or identities and eBPF maps as Cilium
    /// [default: none: policies are recorded and traced, not enforced].
    #[arg(long, value_enum)]
    pub policy_mode: Option<PolicyMode>,
    /// Output: text for people, json for scripts (members, addresses, hints).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// A lab named as an argument or with `--lab`, as the other lab commands
/// spell it (default: every lab).
#[derive(Debug, Args)]
pub struct LabNameArgs {
    /// The lab [default: every lab].
    #[arg(value_parser = values::lab_name)]
    name: Option<String>,
    /// The same, as the other lab commands spell it.
    #[arg(long = "lab", value_parser = values::lab_name, conflicts_with = "name")]
    lab: Option<String>,
}

impl LabNameArgs {
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref().or(self.lab.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct LabDownArgs {
    #[command(flatten)]
    pub lab: LabNameArgs,
    /// Output: text for people, json for scripts (the labs removed).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabStatusArgs {
    #[command(flatten)]
    pub lab: LabNameArgs,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabExecArgs {
    /// The lab (needed only when several labs have this member).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// A pod, node, or `world`.
    pub member: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LabTrafficArgs {
    /// The sending pod, node, or `world`.
    pub from: String,
    /// The receiving member, a service of the lab (`web`, or its VIP), or
    /// an IPv4 address.
    pub to: String,
    /// The lab (needed only when several labs have these members).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// What to send.
    #[arg(long, short, value_enum, default_value_t = Proto::Icmp)]
    pub proto: Proto,
    /// UDP/TCP port (an echo server is started there on the receiving
    /// member) [default: 5001, or the service's port when TO is a service].
    #[arg(long, value_parser = values::port)]
    pub port: Option<u16>,
    /// Probes to send (echo requests, datagrams or connections) [default: 3].
    #[arg(long, short = 'c', conflicts_with = "duration", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: Option<u32>,
    /// Payload bytes per probe, as `ping -s`: at most 65507 for icmp and
    /// udp (one IPv4 datagram), 1G for tcp (K/M/G suffixes work).
    #[arg(long, short = 's', default_value = "56", value_parser = values::traffic_size)]
    pub size: usize,
    /// Seconds to wait for each answer.
    #[arg(long, default_value = "1", value_parser = values::duration, allow_negative_numbers = true)]
    pub timeout: Duration,
    /// UDP: send every datagram from this source port (one flow).
    #[arg(long, value_parser = values::port)]
    pub source_port: Option<u16>,
    /// Where the echo server runs when TO is a Service address that the
    /// node translates to a backend: MEMBER:PORT (e.g. world:5353).
    #[arg(long, value_name = "MEMBER:PORT", value_parser = values::backend)]
    pub backend: Option<String>,
    /// Keep sending for this many seconds instead of --count probes
    /// (tcp-stream: how long to stream, default 3).
    #[arg(long, value_parser = values::duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabTriggerArgs {
    /// closed-port, policy, rp-filter, no-route, too-big or bad-csum.
    #[arg(value_parser = values::fault)]
    pub fault: String,
    /// The lab (needed only when several drops labs are up).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// Packets to send.
    #[arg(long, short = 'c', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
