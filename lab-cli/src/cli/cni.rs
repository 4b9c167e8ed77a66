//! `labctl cni` arguments.

use clap::{Args, Subcommand};

use crate::output::OutputFormat;

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Without a subcommand labctl is the plugin itself, as a container runtime \
                  calls it: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS \
                  and CNI_PATH in the environment, the network config on stdin, the result \
                  or error object on stdout (exit 0 or 1). Installed as \
                  /opt/cni/bin/labctl-cni (a link or copy), it behaves the same."
)]
pub struct CniArgs {
    #[command(subcommand)]
    pub command: Option<CniCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CniCommand {
    /// Every call a runtime made to the plugin: verb, container, netns,
    /// interface, the config received, the result or error, the time taken.
    Log(CniLogArgs),
}

#[derive(Debug, Args)]
pub struct CniLogArgs {
    /// Keep printing calls as they come, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// Under each call, the config received and the result or error.
    #[arg(long, short)]
    pub details: bool,
    /// Only the last N calls (before following).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    pub last: Option<u64>,
    /// Output: text for people, json for scripts (one record per line
    /// with --follow).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
