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
    /// Load a real program and watch it count real drops: UDP datagrams sent
    /// to a closed port in a throwaway network namespace.
    Demo {
        /// How many datagrams to send.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        count: u32,
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
    /// Use the classic skb:kfree_skb tracepoint even where tp_btf works.
    #[arg(long)]
    pub classic_tracepoint: bool,
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
        }
    }
}
