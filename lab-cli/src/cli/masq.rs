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
    /// Change a running lab's eBPF masquerading (port range, UDP timeout):
    /// its NAT programs are reloaded with the new settings and the table
    /// starts empty.
    Config(MasqConfigArgs),
}

#[derive(Debug, Args)]
pub struct MasqConfigArgs {
    /// The lab (needed only when several labs masquerade with eBPF).
    #[arg(long, value_parser = values::lab_name)]
    pub lab: Option<String>,
    /// The translated port range, e.g. 32768-60999.
    #[arg(long, value_parser = values::port_range, required_unless_present = "nat_udp_timeout")]
    pub nat_ports: Option<(u16, u16)>,
    /// Idle lifetime of UDP mappings, 1-86400 seconds.
    #[arg(long, value_parser = values::nat_udp_timeout)]
    pub nat_udp_timeout: Option<u32>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct MasqNatTableArgs {
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
pub struct MasqArgs {
    /// The network namespace: a lab member or a pod (pod-a, LAB/pod-a, a
    /// node's NAMESPACE/NAME), an `ip netns` name, `host`, `pid:N` or an
    /// inode number [default: this one].
    #[arg(long)]
    pub netns: Option<String>,
    /// The node's interface to the outside, where masquerade happens.
    #[arg(long, short, default_value = "eth0")]
    pub iface: String,
    /// Count for this many seconds, then print the table (default: until Ctrl-C).
    #[arg(long, value_parser = values::duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Print the table every --interval while counting.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between --watch tables [default: 1].
    #[arg(long, requires = "watch", value_parser = values::duration, allow_negative_numbers = true)]
    pub interval: Option<Duration>,
    /// Written once the counter is attached (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
