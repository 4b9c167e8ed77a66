//! Presentation shared by the commands: output formats, tables, the
//! printers of each domain's results, exit codes with error reports, and
//! `width`: every text view fits 80 columns (checked by `src/views.rs`).

pub mod conntrack;
pub mod drops;
pub mod drops_json;
pub mod exercises;
pub mod exit;
pub mod flows;
pub mod pcap;
pub mod plan;
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
