//! `labctl explain` arguments.

use clap::Args;

use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A reason name such as NO_SOCKET (any case, prefix optional).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub reason: Option<String>,
    /// List the reasons this kernel knows, marking those with an explanation.
    #[arg(long)]
    pub list: bool,
    /// Output: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
