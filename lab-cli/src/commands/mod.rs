//! One module per subcommand, each with `run(Args)`: it calls the domain
//! modules and prints (through `crate::output`); nothing else lives here.

pub mod cni;
pub mod conntrack;
pub mod demo;
pub mod doctor;
pub mod exercise;
pub mod explain;
pub mod lab;
pub mod masq;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod policy_maps;
pub mod shell;
pub mod svc;
pub mod trace;

use crate::{cli::Command, output::exit::Outcome};

pub fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Doctor(args) => doctor::run(args.output),
        Command::Demo(args) if args.counter => demo::counter(args.count.unwrap_or(1000)),
        Command::Demo(args) => demo::run(args.count.unwrap_or(5), args.output),
        Command::Trace(args) => trace::run(args),
        Command::Explain(args) => explain::run(args.reason.as_deref(), args.list, args.output),
        Command::Lab(args) => lab::run(args.command),
        Command::Cni(args) => cni::run(args),
        Command::Conntrack(args) => conntrack::run(args.command),
        Command::Masq(args) => masq::run(args),
        Command::Svc(args) => svc::run(args.command),
        Command::Metrics(args) => metrics::run(args),
        Command::Observe(args) => observe::run(args),
        Command::Policy(args) => policy::run(args.command),
        Command::Exercise(args) => exercise::run(args.command),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    }
}
