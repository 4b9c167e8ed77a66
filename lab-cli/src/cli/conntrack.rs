//! `labctl conntrack` arguments.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::values;
use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct ConntrackArgs {
    #[command(subcommand)]
    pub command: ConntrackCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// The table, like `conntrack -L`, with NAT spelled out.
    List(CtListArgs),
    /// NEW / UPDATE / DESTROY events as they happen, like `conntrack -E`.
    Watch(CtWatchArgs),
    /// Per-CPU counters (like `conntrack -S`) and the table size / maximum.
    Stats(CtStatsArgs),
    /// Attach labctl's eBPF connection tracker (tc) to an interface until
    /// Ctrl-C or --duration; read it with `list --source bpf`.
    Track(CtTrackArgs),
    /// A live view sorted by bytes or packets; q or Ctrl-C quits.
    Top(CtTopArgs),
}

#[derive(Debug, Args)]
pub struct CtWatchArgs {
    /// The network namespace: a lab member or a pod (pod-a, LAB/pod-a, a
    /// node's NAMESPACE/NAME), an `ip netns` name, `host`, `pid:N` or an
    /// inode number [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    #[command(flatten)]
    pub filter: CtFilterArgs,
    /// Stop after this many seconds.
    #[arg(long, value_parser = values::duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Stop after this many events.
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Receive buffer in bytes, 4K to 256M (bigger: fewer lost events in a burst).
    #[arg(long, default_value = "8M", value_parser = values::buffer_size)]
    pub buffer_size: usize,
    /// Written once subscribed (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CtStatsArgs {
    /// The network namespace: a lab member or a pod (pod-a, LAB/pod-a, a
    /// node's NAMESPACE/NAME), an `ip netns` name, `host`, `pid:N` or an
    /// inode number [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CtTrackArgs {
    /// The network namespace: a lab member or a pod (pod-a, LAB/pod-a, a
    /// node's NAMESPACE/NAME), an `ip netns` name, `host`, `pid:N` or an
    /// inode number [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    /// The interface to attach to (ingress and egress).
    #[arg(long, short)]
    pub iface: String,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = values::duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Written once attached (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Output: text for people; json: the flows at the end, one object per
    /// line as `list -o json`.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CtTopArgs {
    /// The network namespace: a lab member or a pod (pod-a, LAB/pod-a, a
    /// node's NAMESPACE/NAME), an `ip netns` name, `host`, `pid:N` or an
    /// inode number [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    /// Which table to watch.
    #[arg(long, value_enum, default_value_t = CtSource::Netfilter)]
    pub source: CtSource,
    /// What the busiest flows are sorted by.
    #[arg(long, value_enum, default_value_t = CtSort::Bytes)]
    pub sort: CtSort,
    /// Seconds between refreshes.
    #[arg(long, default_value = "1", value_parser = values::duration, allow_negative_numbers = true)]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct CtListArgs {
    /// The network namespace: a lab member or a pod (pod-a, LAB/pod-a, a
    /// node's NAMESPACE/NAME), an `ip netns` name, `host`, `pid:N` or an
    /// inode number [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    /// Which table to read.
    #[arg(long, value_enum, default_value_t = CtSource::Netfilter)]
    pub source: CtSource,
    #[command(flatten)]
    pub filter: CtFilterArgs,
    /// Turn on conntrack accounting (nf_conntrack_acct) in the namespace
    /// first, so packets and bytes are counted from now on.
    #[arg(long)]
    pub enable_acct: bool,
    /// Every column (timeout, reply tuple, mark, zone, counters, flags), as
    /// `conntrack -L -o extended`; the default fits 80 columns.
    #[arg(long)]
    pub wide: bool,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Args, Default)]
pub struct CtFilterArgs {
    /// tcp, udp, icmp, icmpv6, sctp or a protocol number.
    #[arg(long, short, value_parser = values::proto)]
    pub proto: Option<String>,
    /// Original source address or CIDR.
    #[arg(long, value_parser = values::cidr)]
    pub src: Option<String>,
    /// Original destination address or CIDR.
    #[arg(long, value_parser = values::cidr)]
    pub dst: Option<String>,
    /// Original source port.
    #[arg(long, value_parser = values::port)]
    pub sport: Option<u16>,
    /// Original destination port.
    #[arg(long, value_parser = values::port)]
    pub dport: Option<u16>,
    /// A TCP state such as ESTABLISHED.
    #[arg(long, value_parser = values::ct_state)]
    pub state: Option<String>,
    /// Only source-NATed flows (masquerade).
    #[arg(long, conflicts_with_all = ["dnat", "any_nat"])]
    pub snat: bool,
    /// Only destination-NATed flows (Services, port forwards).
    #[arg(long, conflicts_with = "any_nat")]
    pub dnat: bool,
    /// Only NATed flows of either kind.
    #[arg(long)]
    pub any_nat: bool,
    /// N or N/MASK.
    #[arg(long, value_parser = values::mark)]
    pub mark: Option<String>,
    /// Only this conntrack zone.
    #[arg(long)]
    pub zone: Option<u16>,
    /// Only flows from or to this pod: NAMESPACE/NAME (a lab's pods are LAB/POD).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows from or to the pods of this namespace.
    #[arg(long, conflicts_with = "pod")]
    pub pod_namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CtSource {
    /// The kernel's netfilter table (ctnetlink).
    Netfilter,
    /// labctl's eBPF tracker (`conntrack track`).
    Bpf,
    /// Cilium's pinned CT maps (/sys/fs/bpf/tc/globals/cilium_ct4_global, ...).
    Cilium,
    /// Netfilter and bpf joined on the tuple.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CtSort {
    Bytes,
    Packets,
}
