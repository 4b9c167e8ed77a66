//! `labctl lab` arguments.

use clap::{Args, Subcommand};

use crate::{
    ebpf::tc::TcAttach,
    lab::{plan::MasqMode, traffic::Proto},
    output::OutputFormat,
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
    /// Build a scenario: basic, two-node, overlay, drops or policy.
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
}

#[derive(Debug, Args)]
pub struct LabListArgs {
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    pub scenario: String,
    /// Lab name, prefixing its namespaces (default: the scenario's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Pod MTU (e.g. 1500 on the overlay to reproduce the MTU pitfall).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Who masquerades pods' traffic to the world.
    #[arg(long, value_enum, default_value_t = MasqMode::Netfilter)]
    pub masq: MasqMode,
    /// With --masq ebpf: idle lifetime of UDP mappings, in seconds.
    #[arg(long)]
    pub nat_udp_timeout: Option<u32>,
    /// With --masq ebpf: translated port range, e.g. 40000-40099.
    #[arg(long, value_parser = parse_port_range)]
    pub nat_ports: Option<(u16, u16)>,
    /// With --masq ebpf: attach its tc programs through tcx where the
    /// kernel has it (auto) or always through a clsact qdisc (netlink), as
    /// kernels before 6.6 do.
    #[arg(long, value_enum, default_value_t = TcAttach::Auto)]
    pub tc_attach: TcAttach,
}

#[derive(Debug, Args)]
pub struct LabDownArgs {
    /// The lab to remove.
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LabStatusArgs {
    /// Only this lab.
    pub name: Option<String>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabExecArgs {
    /// The lab (needed only when several labs have this member).
    #[arg(long)]
    pub lab: Option<String>,
    /// A pod, node, or `world`.
    pub member: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LabTrafficArgs {
    /// The sending pod, node, or `world`.
    pub from: String,
    /// The receiving member, or an IPv4 address.
    pub to: String,
    #[arg(long)]
    pub lab: Option<String>,
    #[arg(long, short, value_enum, default_value_t = Proto::Icmp)]
    pub proto: Proto,
    /// UDP/TCP port (an echo server is started there on the receiving member).
    #[arg(long, default_value_t = 5001)]
    pub port: u16,
    /// Probes to send (echo requests, datagrams or connections).
    #[arg(long, short = 'c', default_value_t = 3)]
    pub count: u32,
    /// Payload bytes per probe, as `ping -s`.
    #[arg(long, short = 's', default_value_t = 56)]
    pub size: usize,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 1.0)]
    pub timeout: f64,
    /// Keep sending for this many seconds instead of --count probes
    /// (tcp-stream: how long to stream, default 3).
    #[arg(long)]
    pub duration: Option<f64>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LabTriggerArgs {
    /// closed-port, policy, rp-filter, no-route, too-big or bad-csum.
    pub fault: String,
    #[arg(long)]
    pub lab: Option<String>,
    /// Packets to send.
    #[arg(long, short = 'c', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a port range such as 40000-40099"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port (1-65535)"))
    };
    Ok((port(lo)?, port(hi)?))
}
