//! One module per subcommand.

pub mod demo;
pub mod doctor;

use crate::{cli::Command, exit::Outcome};

pub fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Doctor { output } => doctor::run(output),
        Command::Demo { count } => demo::run(count),
    }
}
