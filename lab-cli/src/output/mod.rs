//! Presentation shared by the commands: output formats, tables, the
//! printers of each domain's results, and exit codes with error reports.

pub mod conntrack;
pub mod drops;
pub mod exit;
pub mod flows;
pub mod pcap;
pub mod services;
pub mod table;
pub mod width;

/// `--output`: text for people, JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// JSON for scripts.
    Json,
}
