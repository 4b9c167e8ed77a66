//! `labctl conntrack list`.

use std::{collections::HashMap, io::Write, net::Ipv4Addr};

use anyhow::Context as _;

use super::build_filter;
use crate::{
    cli::conntrack::{CtListArgs, CtSource},
    conntrack::{
        acct,
        entry::{CtEntry, EntryJson, Source},
        join,
        netlink::Ctnetlink,
        sources,
    },
    kernel::names::PodRef,
    kernel::privilege,
    lab::names::{self, lookup_netns_opt},
    output::{
        OutputFormat,
        conntrack::{self as table, Layout},
        exit::Outcome,
        width,
    },
};

/// One entry at a time, as JSON lines (pods named by address) or table rows.
enum Writer<W: Write> {
    Json(W, HashMap<Ipv4Addr, PodRef>),
    Table(table::TableWriter<W>),
}

impl<W: Write> Writer<W> {
    fn new(
        out: W,
        format: OutputFormat,
        layout: Layout,
        joined: bool,
        pods: HashMap<Ipv4Addr, PodRef>,
    ) -> std::io::Result<Self> {
        Ok(match format {
            OutputFormat::Json => Writer::Json(out, pods),
            OutputFormat::Text => {
                Writer::Table(table::TableWriter::new(out, layout, joined)?.with_pods(pods))
            }
        })
    }

    fn entry(&mut self, e: &CtEntry, seen: Option<&[Source]>) -> std::io::Result<()> {
        match self {
            Writer::Json(out, pods) => {
                let mut json = EntryJson::new(e).with_pods(pods);
                json.seen_by = seen.map(<[Source]>::to_vec);
                serde_json::to_writer(&mut *out, &json)?;
                out.write_all(b"\n")
            }
            Writer::Table(t) => t.row(e, seen),
        }
    }
}

pub fn run(args: CtListArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("conntrack list")?;
    let filter = build_filter(&args.filter)?;
    let ns = lookup_netns_opt(args.netns.as_deref())?;
    if args.enable_acct {
        acct::set(ns.as_ref(), true)?;
        let note = format!(
            "conntrack accounting is now on{} (net.netfilter.nf_conntrack_acct=1): packets and bytes are counted for flows created from now on",
            args.netns
                .as_deref()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default()
        );
        eprintln!("{}", width::fill(&note, "", ""));
    }
    let ino = match &ns {
        Some(ns) => ns.inode()?,
        None => crate::kernel::netns::current_inode()?,
    };
    let pods = names::pods_by_addr(ino);
    let layout = if args.wide {
        Layout::Wide
    } else {
        Layout::Compact
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut total = 0u64;
    let shown = match args.source {
        // The big one: streamed entry by entry, in constant memory.
        CtSource::Netfilter => {
            let mut ct = Ctnetlink::open_in(ns.as_ref()).context("cannot reach ctnetlink")?;
            let mut writer = Writer::new(&mut out, args.output, layout, false, pods.clone())?;
            let mut shown = 0u64;
            ct.dump_each(filter.mark, |e| {
                total += 1;
                if filter.matches(&e) {
                    shown += 1;
                    writer.entry(&e, None)?;
                }
                Ok(())
            })
            .context("cannot read the conntrack table")?;
            shown
        }
        source => {
            let joined: Vec<(CtEntry, Option<Vec<Source>>)> = match source {
                CtSource::Bpf => sources::bpf(ns.as_ref())?
                    .into_iter()
                    .map(|e| (e, None))
                    .collect(),
                CtSource::Cilium => sources::cilium()
                    .context("cannot read Cilium's CT maps")?
                    .into_iter()
                    .map(|e| (e, None))
                    .collect(),
                _ => join::join(
                    sources::netfilter(ns.as_ref(), &filter)?,
                    sources::bpf(ns.as_ref())?,
                )
                .into_iter()
                .map(|(e, s)| (e, Some(s)))
                .collect(),
            };
            total = joined.len() as u64;
            let mut writer = Writer::new(
                &mut out,
                args.output,
                layout,
                source == CtSource::All,
                pods.clone(),
            )?;
            let mut shown = 0u64;
            for (e, seen) in joined.iter().filter(|(e, _)| filter.matches(e)) {
                shown += 1;
                writer.entry(e, seen.as_deref())?;
            }
            shown
        }
    };
    if total == 0 && matches!(args.source, CtSource::Netfilter | CtSource::All) {
        eprintln!(
            "{}",
            width::fill(
                "note: the table is empty. A namespace tracks connections only once something there uses conntrack (a NAT or ct rule, since Linux 4.15); lab nodes always do.",
                "",
                "      "
            )
        );
    }
    if args.output == OutputFormat::Text && shown == 0 && total > 0 {
        width::write_fill(
            &mut out,
            &format!(
                "no entry matches the filters ({total} entries in the table; drop filters to see them)"
            ),
            "",
            "",
        )?;
    } else if args.output == OutputFormat::Text {
        let footer = format!(
            "{shown} entries ({}{})",
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
        );
        width::write_fill(&mut out, &footer, "", "")?;
    }
    out.flush()?;
    Ok(Outcome::Success)
}
