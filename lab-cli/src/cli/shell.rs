//! `labctl completions` and `labctl man` arguments.

use clap::Args;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The page: `labctl` or a subcommand's, such as `labctl-trace` or
    /// `labctl-conntrack-list` (see --list) [default: labctl].
    #[arg(conflicts_with = "list")]
    pub page: Option<String>,
    /// List the pages.
    #[arg(long)]
    pub list: bool,
    /// Print the whole command reference as one Markdown document instead
    /// (what `cargo xtask docs` writes to docs/commands.md).
    #[arg(long, conflicts_with_all = ["page", "list"])]
    pub markdown: bool,
}
