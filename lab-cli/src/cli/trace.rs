//! `labctl trace` arguments.

use std::time::Duration;

use clap::Args;

use super::values;
use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Only drops in this network namespace: a lab member (pod-a,
    /// LAB/pod-a), an `ip netns` name, `host`, `pid:N` or an inode number
    /// [default: every namespace].
    #[arg(long)]
    pub netns: Option<String>,
    /// Only drops in this pod's namespace: NAMESPACE/NAME (a lab's pods are LAB/POD).
    #[arg(long, conflicts_with = "netns")]
    pub pod: Option<String>,
    /// Only drops in the pods of this namespace (a lab's name for its pods).
    #[arg(long, conflicts_with_all = ["netns", "pod", "scope"])]
    pub pod_namespace: Option<String>,
    /// Only drops on this interface (looked up in --netns when given).
    #[arg(long, short)]
    pub iface: Option<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6 or an IP protocol number.
    #[arg(long, short, value_parser = values::proto)]
    pub proto: Option<String>,
    /// Only packets from or to this address.
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
    /// Only packets from or to this port.
    #[arg(long, value_parser = values::port)]
    pub port: Option<u16>,
    /// Only these reasons (repeatable), e.g. --reason NO_SOCKET.
    #[arg(long = "reason", short = 'r')]
    pub reasons: Vec<String>,
    /// Hide these reasons (repeatable), e.g. --exclude-reason NOT_SPECIFIED.
    #[arg(long = "exclude-reason")]
    pub exclude_reasons: Vec<String>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// A table by reason and location, refreshed every --interval, instead of a line per drop.
    #[arg(long, conflicts_with = "stack")]
    pub summary: bool,
    /// Seconds between --summary tables [default: 1].
    #[arg(long, requires = "summary", value_parser = values::duration, allow_negative_numbers = true)]
    pub interval: Option<Duration>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = values::duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Stop after showing this many drops (the summary still counts all).
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Write this file once the tracer is attached (for scripts: start traffic after it exists).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Explain each reason the first time it is seen, and in the summary.
    #[arg(long)]
    pub explain: bool,
    /// Ring buffer size in bytes: a power of two from 4096 to 256M (K/M suffixes work).
    #[arg(long, default_value = "4M", value_parser = values::ring_size)]
    pub ring_size: u32,
    /// Print the kernel stack of each drop (and add it to JSON as "stack").
    #[arg(long)]
    pub stack: bool,
    /// Also write each drop's packet to this pcapng file (`-`: standard
    /// output, e.g. `| wireshark -k -i -`), with the reason as the packet's comment.
    /// An existing FILE is refused unless --force.
    #[arg(long, value_name = "FILE", conflicts_with = "summary")]
    pub pcap: Option<std::path::PathBuf>,
    /// Replace an existing --pcap FILE.
    #[arg(long, requires = "pcap")]
    pub force: bool,
    /// Bytes of each packet to keep in the pcap, from its IP header (1 to 2048).
    #[arg(long, default_value_t = 128, requires = "pcap", value_parser = values::snaplen)]
    pub snaplen: u32,
    /// Use the classic skb:kfree_skb tracepoint even where tp_btf works.
    #[arg(long)]
    pub classic_tracepoint: bool,
    /// Which namespaces: `node` (this node's own and its pods', followed as
    /// pods come and go) or `all` (every namespace on the machine) [default:
    /// node inside a container such as a kind node, all elsewhere].
    #[arg(long, value_enum, conflicts_with = "netns")]
    pub scope: Option<TraceScope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceScope {
    /// This node: its own namespace and every named one (its pods').
    Node,
    /// Every namespace on the machine (every node of a kind cluster, the host).
    All,
}
