//! `labctl masq` arguments.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::values;
use crate::output::OutputFormat;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasqTopArgs {
    #[command(subcommand)]
    pub command: Option<MasqCommand>,
    #[command(flatten)]
    pub args: MasqArgs,
}

#[derive(Debug, Subcommand)]
pub enum MasqCommand {
    /// The eBPF masquerading NAT table of a node, like `cilium bpf nat list`,
    /// with its fill level and allocation counters.
    NatTable(MasqNatTableArgs),
}

#[derive(Debug, Args)]
pub struct MasqNatTableArgs {
    /// The node's network namespace.
    #[arg(long)]
    pub netns: Option<String>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
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
    #[arg(long, value_parser = values::duration)]
    pub duration: Option<Duration>,
    /// Print the table every second while counting.
    #[arg(long)]
    pub watch: bool,
    /// Written once the counter is attached (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
