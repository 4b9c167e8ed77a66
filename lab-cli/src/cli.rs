//! Command-line definitions.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "labctl",
    version,
    about = "Hands-on eBPF and CNI networking labs: drops, conntrack, masquerade",
    propagate_version = true
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this machine can run labctl: privileges, BTF, tracefs,
    /// program types, ctnetlink.
    Doctor {
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Watch every packet the kernel drops: why, where, and what to do.
    Trace(TraceArgs),
    /// What a drop reason means, its usual causes, and commands to confirm and fix it.
    Explain {
        /// A reason name such as NO_SOCKET (any case, prefix optional).
        #[arg(required_unless_present = "list")]
        reason: Option<String>,
        /// List the reasons this kernel knows, marking those with an explanation.
        #[arg(long)]
        list: bool,
    },
    /// Connection tracking side by side: netfilter's table (ctnetlink),
    /// labctl's eBPF tracker, Cilium's CT maps.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Masquerade per pod: connections, packets, bytes and ports, counted by
    /// an eBPF program from each packet's conntrack entry (or read from the
    /// eBPF masquerading's own maps); `masq nat-table` lists its mappings.
    Masq {
        #[command(subcommand)]
        command: Option<MasqCommand>,
        #[command(flatten)]
        args: MasqArgs,
    },
    /// Build CNI-style lab topologies (nodes, pods, bridge, veth, VXLAN,
    /// masquerade) in network namespaces.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// The tour: bring up the drops lab, trace while each planted fault
    /// fires, print the summary with explanations, tear the lab down.
    Demo {
        /// Packets per fault [default: 5] (with --counter: datagrams to count [default: 1000]).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        count: Option<u32>,
        /// The minimal demo instead: one eBPF counter counting UDP datagrams
        /// sent to a closed port in a throwaway namespace, no lab.
        #[arg(long)]
        counter: bool,
    },
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Only drops in this network namespace: an `ip netns` name, `host`, or an inode number.
    #[arg(long)]
    pub netns: Option<String>,
    /// Only drops on this interface (looked up in --netns when given).
    #[arg(long, short)]
    pub iface: Option<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6 or an IP protocol number.
    #[arg(long, short)]
    pub proto: Option<String>,
    /// Only packets from or to this address.
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
    /// Only packets from or to this port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only these reasons (repeatable), e.g. --reason NO_SOCKET.
    #[arg(long = "reason", short = 'r')]
    pub reasons: Vec<String>,
    /// Hide these reasons (repeatable), e.g. --exclude-reason NOT_SPECIFIED.
    #[arg(long = "exclude-reason")]
    pub exclude_reasons: Vec<String>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// A table by reason and location, refreshed every --interval, instead of a line per drop.
    #[arg(long)]
    pub summary: bool,
    /// Seconds between --summary tables.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many drops.
    #[arg(long)]
    pub count: Option<u64>,
    /// Write this file once the tracer is attached (for scripts: start traffic after it exists).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Explain each reason the first time it is seen, and in the summary.
    #[arg(long)]
    pub explain: bool,
    /// Ring buffer size in bytes (a power of two, at least 4096).
    #[arg(long, default_value_t = 1 << 22)]
    pub ring_size: u32,
    /// Print the kernel stack of each drop (and add it to JSON as "stack").
    #[arg(long)]
    pub stack: bool,
    /// Use the classic skb:kfree_skb tracepoint even where tp_btf works.
    #[arg(long)]
    pub classic_tracepoint: bool,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// The scenarios, with the concept each one teaches.
    List {
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Build a scenario: basic, two-node, overlay, drops or policy.
    Up {
        scenario: String,
        /// Lab name, prefixing its namespaces (default: the scenario's name).
        #[arg(long)]
        name: Option<String>,
        /// Pod MTU (e.g. 1500 on the overlay to reproduce the MTU pitfall).
        #[arg(long)]
        mtu: Option<u32>,
        /// Who masquerades pods' traffic to the world.
        #[arg(long, value_enum, default_value_t = crate::lab::plan::MasqMode::Netfilter)]
        masq: crate::lab::plan::MasqMode,
        /// With --masq ebpf: idle lifetime of UDP mappings, in seconds.
        #[arg(long)]
        nat_udp_timeout: Option<u32>,
        /// With --masq ebpf: translated port range, e.g. 40000-40099.
        #[arg(long, value_parser = parse_port_range)]
        nat_ports: Option<(u16, u16)>,
    },
    /// Remove a lab and everything it created (default: every lab).
    Down {
        /// The lab to remove.
        name: Option<String>,
    },
    /// Nodes, pods, interfaces, addresses, routes and NAT rules, read from the kernel.
    Status {
        /// Only this lab.
        name: Option<String>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run a command in a member's namespace: labctl lab exec pod-a -- ip addr
    Exec {
        /// The lab (needed only when several labs have this member).
        #[arg(long)]
        lab: Option<String>,
        /// A pod, node, or `world`.
        member: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Send probes between members and report answers, round-trip times,
    /// and the source address the server saw.
    Traffic {
        /// The sending pod, node, or `world`.
        from: String,
        /// The receiving member, or an IPv4 address.
        to: String,
        #[arg(long)]
        lab: Option<String>,
        #[arg(long, short, value_enum, default_value_t = crate::lab::traffic::Proto::Icmp)]
        proto: crate::lab::traffic::Proto,
        /// UDP/TCP port (an echo server is started there on the receiving member).
        #[arg(long, default_value_t = 5001)]
        port: u16,
        /// Probes to send (echo requests, datagrams or connections).
        #[arg(long, short = 'c', default_value_t = 3)]
        count: u32,
        /// Payload bytes per probe, as `ping -s`.
        #[arg(long, short = 's', default_value_t = 56)]
        size: usize,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 1.0)]
        timeout: f64,
        /// Keep sending for this many seconds instead of --count probes
        /// (tcp-stream: how long to stream, default 3).
        #[arg(long)]
        duration: Option<f64>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Fire a planted fault of the drops scenario (see `labctl lab list`).
    Trigger {
        /// closed-port, policy, rp-filter, no-route, too-big or bad-csum.
        fault: String,
        #[arg(long)]
        lab: Option<String>,
        /// Packets to send.
        #[arg(long, short = 'c', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum MasqCommand {
    /// The eBPF masquerading NAT table of a node, like `cilium bpf nat list`,
    /// with its fill level and allocation counters.
    NatTable {
        /// The node's network namespace.
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Args)]
pub struct MasqArgs {
    /// The node's network namespace (an `ip netns` name); default: this one.
    #[arg(long)]
    pub netns: Option<String>,
    /// The node's interface to the outside, where masquerade happens.
    #[arg(long, short, default_value = "eth0")]
    pub iface: String,
    /// Count for this many seconds, then print the table (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the table every second while counting.
    #[arg(long)]
    pub watch: bool,
    /// Written once the counter is attached (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// The table, like `conntrack -L`, with NAT spelled out.
    List(CtListArgs),
    /// NEW / UPDATE / DESTROY events as they happen, like `conntrack -E`.
    Watch {
        #[arg(long)]
        netns: Option<String>,
        #[command(flatten)]
        filter: CtFilterArgs,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Receive buffer in bytes (bigger: fewer lost events in a burst).
        #[arg(long, default_value_t = 8 << 20)]
        buffer_size: usize,
        /// Written once subscribed (for scripts).
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Per-CPU counters (like `conntrack -S`) and the table size / maximum.
    Stats {
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Attach labctl's eBPF connection tracker (tc) to an interface until
    /// Ctrl-C or --duration; read it with `list --source bpf`.
    Track {
        #[arg(long)]
        netns: Option<String>,
        /// The interface to attach to (ingress and egress).
        #[arg(long, short)]
        iface: String,
        #[arg(long)]
        duration: Option<f64>,
        /// Written once attached (for scripts).
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
    },
    /// A live view sorted by bytes or packets; q or Ctrl-C quits.
    Top {
        #[arg(long)]
        netns: Option<String>,
        #[arg(long, value_enum, default_value_t = CtSource::Netfilter)]
        source: CtSource,
        #[arg(long, value_enum, default_value_t = CtSort::Bytes)]
        sort: CtSort,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

#[derive(Debug, Args)]
pub struct CtListArgs {
    /// The network namespace (an `ip netns` name); default: this one.
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
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Args, Default)]
pub struct CtFilterArgs {
    /// tcp, udp, icmp, icmpv6, sctp or a protocol number.
    #[arg(long, short)]
    pub proto: Option<String>,
    /// Original source address or CIDR.
    #[arg(long)]
    pub src: Option<String>,
    /// Original destination address or CIDR.
    #[arg(long)]
    pub dst: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub sport: Option<u16>,
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub dport: Option<u16>,
    /// A TCP state such as ESTABLISHED.
    #[arg(long)]
    pub state: Option<String>,
    /// Only source-NATed flows (masquerade).
    #[arg(long)]
    pub snat: bool,
    /// Only destination-NATed flows (Services, port forwards).
    #[arg(long)]
    pub dnat: bool,
    /// Only NATed flows of either kind.
    #[arg(long)]
    pub any_nat: bool,
    /// N or N/MASK.
    #[arg(long)]
    pub mark: Option<String>,
    #[arg(long)]
    pub zone: Option<u16>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// JSON for scripts.
    Json,
}

impl Command {
    /// The subcommand's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Doctor { .. } => "doctor",
            Command::Demo { .. } => "demo",
            Command::Trace(_) => "trace",
            Command::Explain { .. } => "explain",
            Command::Lab { .. } => "lab",
            Command::Conntrack { .. } => "conntrack",
            Command::Masq { .. } => "masq",
        }
    }
}
