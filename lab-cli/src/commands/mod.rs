//! One module per subcommand.

pub mod conntrack;
pub mod demo;
pub mod doctor;
pub mod explain;
pub mod lab;
pub mod masq;
pub mod table;
pub mod trace;

use crate::{cli::Command, exit::Outcome};

pub fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Doctor { output } => doctor::run(output),
        Command::Demo {
            count,
            counter: true,
        } => demo::counter(count.unwrap_or(1000)),
        Command::Demo { count, .. } => demo::run(count.unwrap_or(5)),
        Command::Trace(args) => trace::run(args),
        Command::Explain { reason, list } => explain::run(reason.as_deref(), list),
        Command::Lab { command } => lab::run(command),
        Command::Conntrack { command } => conntrack::run(command),
        Command::Masq {
            command: Some(crate::cli::MasqCommand::NatTable { netns, output }),
            ..
        } => masq::nat_table(netns.as_deref(), output),
        Command::Masq { args, .. } => masq::run(args),
    }
}
