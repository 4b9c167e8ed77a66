//! Command-line definitions.

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Load a real program and watch it count real drops: UDP datagrams sent
    /// to a closed port in a throwaway network namespace.
    Demo {
        /// How many datagrams to send.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        count: u32,
    },
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
        }
    }
}
