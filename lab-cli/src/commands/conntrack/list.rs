//! `labctl conntrack list`.

use std::io::Write as _;

use anyhow::Context as _;

use super::{build_filter, netns, table};
use crate::{
    cli::{CtListArgs, CtSource, OutputFormat},
    conntrack::{
        entry::{CtEntry, EntryJson},
        join, sources,
    },
    exit::Outcome,
    kernel::sysctl,
    privilege,
};

pub fn run(args: CtListArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("conntrack list")?;
    let filter = build_filter(&args.filter)?;
    let ns = netns(args.netns.as_deref())?;
    if args.enable_acct {
        let write = || sysctl::write(&["net", "netfilter", "nf_conntrack_acct"], "1");
        match &ns {
            Some(ns) => ns.run(write)??,
            None => write()?,
        }
        eprintln!(
            "conntrack accounting is now on{} (net.netfilter.nf_conntrack_acct=1): packets and bytes are counted for flows created from now on",
            args.netns
                .as_deref()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default()
        );
    }
    let (entries, seen_by) = match args.source {
        CtSource::Netfilter => (sources::netfilter(ns.as_ref(), &filter)?, None),
        CtSource::Bpf => (sources::bpf(ns.as_ref())?, None),
        CtSource::Cilium => (
            sources::cilium().context("cannot read Cilium's CT maps")?,
            None,
        ),
        CtSource::All => {
            let joined = join::join(
                sources::netfilter(ns.as_ref(), &filter)?,
                sources::bpf(ns.as_ref())?,
            );
            let (entries, seen): (Vec<CtEntry>, Vec<_>) = joined.into_iter().unzip();
            (entries, Some(seen))
        }
    };
    let keep: Vec<usize> = (0..entries.len())
        .filter(|&i| filter.matches(&entries[i]))
        .collect();
    if entries.is_empty() && matches!(args.source, CtSource::Netfilter | CtSource::All) {
        eprintln!(
            "note: the table is empty. A namespace tracks connections only once something there uses conntrack (a NAT or ct rule, since Linux 4.15); lab nodes always do."
        );
    }
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            for &i in &keep {
                let mut json = EntryJson::new(&entries[i]);
                json.seen_by = seen_by.as_ref().map(|s| s[i].clone());
                writeln!(out, "{}", serde_json::to_string(&json)?)?;
            }
        }
        OutputFormat::Text => {
            let rows: Vec<(&CtEntry, Option<&[_]>)> = keep
                .iter()
                .map(|&i| (&entries[i], seen_by.as_ref().map(|s| s[i].as_slice())))
                .collect();
            writeln!(out, "{}", table::render(&rows))?;
            writeln!(
                out,
                "{} entries ({}{})",
                keep.len(),
                match args.source {
                    CtSource::Netfilter => "netfilter",
                    CtSource::Bpf => "labctl eBPF tracker",
                    CtSource::Cilium => "Cilium CT maps",
                    CtSource::All => "netfilter + labctl eBPF tracker",
                },
                args.netns
                    .as_deref()
                    .map(|n| format!(", netns {n}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(Outcome::Success)
}
