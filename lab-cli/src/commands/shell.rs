//! `labctl completions` and `labctl man`: generated from the clap
//! definitions, so they always match the command line.

use std::io::Write as _;

use anyhow::bail;
use clap::CommandFactory as _;

use crate::{
    cli::{
        Cli,
        shell::{CompletionsArgs, ManArgs},
    },
    output::exit::{Outcome, UsageError},
};

pub fn completions(args: CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "labctl", &mut std::io::stdout());
    Ok(Outcome::Success)
}

/// Every page as (name, command): `labctl`, `labctl-trace`, ...
fn pages() -> Vec<(String, clap::Command)> {
    fn walk(cmd: &clap::Command, name: &str, out: &mut Vec<(String, clap::Command)>) {
        out.push((name.to_owned(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, &format!("{name}-{}", sub.get_name()), out);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, "labctl", &mut out);
    out
}

pub fn man(args: ManArgs) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let pages = pages();
    if args.list {
        for (name, _) in &pages {
            writeln!(out, "{name}")?;
        }
        return Ok(Outcome::Success);
    }
    let want = args.page.as_deref().unwrap_or("labctl");
    let Some((_, cmd)) = pages.into_iter().find(|(name, _)| name == want) else {
        bail!(UsageError(format!(
            "there is no man page `{want}`; `labctl man --list` shows them"
        )));
    };
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(Outcome::Success)
}
