//! `labctl doctor` arguments.

use clap::Args;

use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
