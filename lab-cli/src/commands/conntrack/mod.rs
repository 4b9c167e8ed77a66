//! `labctl conntrack ...`: one module per subcommand; the work is in
//! `crate::conntrack` and `crate::conntrack::netlink`.

mod list;
mod top;
mod track;
mod watch;

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cli::conntrack::{ConntrackCommand, CtFilterArgs, CtStatsArgs, CtTopArgs},
    conntrack::{
        filter::{self, CtFilter},
        netlink::Ctnetlink,
    },
    kernel::privilege,
    lab::names::{self, lookup_netns_opt},
    output::{OutputFormat, conntrack::write_stats, exit::Outcome},
};

pub fn run(command: ConntrackCommand) -> anyhow::Result<Outcome> {
    match command {
        ConntrackCommand::List(args) => list::run(args),
        ConntrackCommand::Watch(args) => watch::run(args),
        ConntrackCommand::Stats(CtStatsArgs { netns, output }) => stats(netns.as_deref(), output),
        ConntrackCommand::Track(args) => track::run(args),
        ConntrackCommand::Top(CtTopArgs {
            netns,
            source,
            sort,
            interval,
        }) => top::run(netns.as_deref(), source, sort, interval),
    }
}

/// Turns the command-line filters into a checked filter.
pub(crate) fn build_filter(args: &CtFilterArgs) -> anyhow::Result<CtFilter> {
    Ok(CtFilter {
        proto: args.proto.as_deref().map(filter::parse_proto).transpose()?,
        src: args.src.as_deref().map(filter::parse_cidr).transpose()?,
        dst: args.dst.as_deref().map(filter::parse_cidr).transpose()?,
        sport: args.sport,
        dport: args.dport,
        state: args.state.as_deref().map(filter::parse_state).transpose()?,
        snat: args.snat,
        dnat: args.dnat,
        any_nat: args.any_nat,
        mark: args.mark.as_deref().map(filter::parse_mark).transpose()?,
        zone: args.zone,
        hosts: match (&args.pod, &args.pod_namespace) {
            (Some(pod), _) => Some(vec![names::pod_addr(pod)?.into()]),
            (None, Some(ns)) => Some(
                names::pod_addrs_of(ns)?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            ),
            (None, None) => None,
        },
    })
}

fn stats(netns_name: Option<&str>, output: OutputFormat) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("conntrack stats")?;
    let ns = lookup_netns_opt(netns_name)?;
    let mut ct = Ctnetlink::open_in(ns.as_ref()).context("cannot reach ctnetlink")?;
    let size = ct.table_size().context("cannot read the table size")?;
    let cpus = ct.cpu_stats().context("cannot read the per-CPU counters")?;
    let mut out = anstream::stdout().lock();
    if output == OutputFormat::Json {
        let json = serde_json::json!({
            "netns": netns_name,
            "entries": size.entries,
            "max": size.max,
            "cpus": cpus.iter().map(|c| {
                let mut o = serde_json::Map::new();
                o.insert("cpu".into(), c.cpu.into());
                for (k, v) in &c.counters {
                    o.insert((*k).into(), (*v).into());
                }
                serde_json::Value::Object(o)
            }).collect::<Vec<_>>(),
        });
        writeln!(out, "{json}")?;
        return Ok(Outcome::Success);
    }
    write_stats(&mut out, netns_name, &size, &cpus)?;
    Ok(Outcome::Success)
}
