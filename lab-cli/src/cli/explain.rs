//! `labctl explain` arguments.

use clap::Args;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A reason name such as NO_SOCKET (any case, prefix optional).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub reason: Option<String>,
    /// List the reasons this kernel knows, marking those with an explanation.
    #[arg(long)]
    pub list: bool,
}
