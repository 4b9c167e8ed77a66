//! `labctl conntrack watch`: conntrack events, like `conntrack -E`, that
//! never die silently: when the kernel drops events because the receive
//! buffer overflowed (ENOBUFS), the loss is reported and the view is
//! resynchronized from a fresh dump (flows that appeared or vanished
//! meanwhile are emitted, marked `resync`).

use std::{collections::HashMap, io::Write as _, time::Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::build_filter;
use crate::{
    cli::conntrack::CtWatchArgs as WatchArgs,
    conntrack::{
        entry::{CtEntry, EntryJson, Tuple},
        netlink::{CtEvent, Ctnetlink, CtnetlinkError, EventKind},
    },
    kernel::{interrupt, privilege, ready::ReadyFile},
    lab::names::{self, lookup_netns_opt},
    output::{OutputFormat, exit::Outcome},
};

#[derive(Debug, Default, Serialize)]
struct WatchSummary {
    #[serde(rename = "type")]
    kind: &'static str,
    events: u64,
    /// Times the receive buffer overflowed (events were lost each time).
    overruns: u64,
    /// Flows found by resynchronizing after an overrun.
    resynced_new: u64,
    resynced_destroyed: u64,
}

#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: EventKind,
    resync: bool,
    #[serde(flatten)]
    entry: EntryJson<'a>,
}

type Key = (u8, Tuple);

/// After lost events: reads what is still queued, dumps the table, and
/// emits (marked `resync`) the flows that appeared or vanished unseen.
/// Returns how many of each.
fn resync(
    events: &mut Ctnetlink,
    dumper: &mut Ctnetlink,
    known: &mut HashMap<Key, CtEntry>,
    summary: &mut WatchSummary,
    emit: &mut dyn FnMut(&CtEvent, bool) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, u64)> {
    for ev in events.drain().context("reading conntrack events")? {
        remember(known, &ev);
        summary.events += 1;
        emit(&ev, false)?;
    }
    let now: HashMap<Key, CtEntry> = dumper
        .dump(None)
        .context("cannot resynchronize after lost events")?
        .into_iter()
        .map(|e| (e.key(), e))
        .collect();
    let (mut new, mut gone) = (0, 0);
    for (k, e) in &now {
        if !known.contains_key(k) {
            new += 1;
            emit(
                &CtEvent {
                    kind: EventKind::New,
                    entry: e.clone(),
                },
                true,
            )?;
        }
    }
    for (k, e) in known.iter() {
        if !now.contains_key(k) {
            gone += 1;
            emit(
                &CtEvent {
                    kind: EventKind::Destroy,
                    entry: e.clone(),
                },
                true,
            )?;
        }
    }
    summary.resynced_new += new;
    summary.resynced_destroyed += gone;
    *known = now;
    Ok((new, gone))
}

/// Keeps `known` equal to the table, event by event.
fn remember(known: &mut HashMap<Key, CtEntry>, ev: &CtEvent) {
    match ev.kind {
        EventKind::Destroy => known.remove(&ev.entry.key()),
        _ => known.insert(ev.entry.key(), ev.entry.clone()),
    };
}

pub fn run(args: WatchArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("conntrack watch")?;
    let filter = build_filter(&args.filter)?;
    let mut ready = ReadyFile::claim(args.ready_file.as_deref())?;
    let ns = lookup_netns_opt(args.netns.as_deref())?;
    let mut events = Ctnetlink::open_in(ns.as_ref()).context("cannot reach ctnetlink")?;
    events
        .subscribe(args.buffer_size)
        .context("cannot subscribe to conntrack events")?;
    // What the table holds, kept current from events, to resynchronize.
    let mut dumper = Ctnetlink::open_in(ns.as_ref()).context("cannot reach ctnetlink")?;
    let mut known: HashMap<Key, CtEntry> = dumper
        .dump(None)
        .context("cannot read the conntrack table")?
        .into_iter()
        .map(|e| (e.key(), e))
        .collect();
    ready.signal("subscribed")?;
    let duration = args.duration;
    let started = Instant::now();
    let mut summary = WatchSummary {
        kind: "summary",
        ..Default::default()
    };
    let pods = std::cell::RefCell::new(names::PodAddrs::new(match &ns {
        Some(ns) => ns.inode()?,
        None => crate::kernel::netns::current_inode()?,
    }));
    let mut out = std::io::BufWriter::new(anstream::stdout().lock());
    let emit = |out: &mut dyn std::io::Write, ev: &CtEvent, resync: bool| -> anyhow::Result<()> {
        if !filter.matches(&ev.entry) {
            return Ok(());
        }
        match args.output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                serde_json::to_string(&EventJson {
                    kind: "event",
                    event: ev.kind,
                    resync,
                    entry: EntryJson::new(&ev.entry).with_pods(pods.borrow_mut().get()),
                })?
            )?,
            OutputFormat::Text => {
                let e = &ev.entry;
                let nat = e.nat().map(|n| format!("  {n}")).unwrap_or_default();
                writeln!(
                    out,
                    "{:<10} {:<6} {:<12} {}{nat}{}",
                    format!("[{:?}]", ev.kind).to_uppercase(),
                    e.proto,
                    e.state.as_deref().unwrap_or("-"),
                    crate::output::conntrack::describe_named(&e.orig, pods.borrow_mut().get()),
                    if resync { "  (found by resync)" } else { "" }
                )?
            }
        }
        Ok(())
    };
    let mut seen = 0u64;
    // At Ctrl-C or --duration, what the kernel already queued is still
    // read (without waiting), so events right before the stop are shown.
    let mut stopping = false;
    'watch: loop {
        stopping =
            stopping || interrupt::requested() || duration.is_some_and(|d| started.elapsed() >= d);
        match events.events(if stopping { 0 } else { 100 }) {
            Ok(batch) if stopping && batch.is_empty() => break,
            Ok(batch) => {
                for ev in batch {
                    remember(&mut known, &ev);
                    summary.events += 1;
                    emit(&mut out, &ev, false)?;
                    if filter.matches(&ev.entry) {
                        seen += 1;
                    }
                    if args.count.is_some_and(|n| seen >= n) {
                        break 'watch;
                    }
                }
            }
            Err(CtnetlinkError::Overrun) => {
                summary.overruns += 1;
                let (new, gone) = resync(
                    &mut events,
                    &mut dumper,
                    &mut known,
                    &mut summary,
                    &mut |ev, r| emit(&mut out, ev, r),
                )?;
                let warning = format!(
                    "events were lost: the receive buffer overflowed (overrun #{}); resynchronized from the table: {new} new, {gone} gone. A larger --buffer-size loses fewer.",
                    summary.overruns
                );
                if args.output == OutputFormat::Text {
                    writeln!(out, "!! {warning}")?;
                } else {
                    eprintln!("warning: {warning}");
                }
            }
            Err(e) => return Err(e).context("reading conntrack events"),
        }
        out.flush()?;
    }
    // After any loss, reconcile once more before the summary: losses the
    // kernel could not flag (while its queue was still marked congested)
    // or that happened as the watch ended are caught here.
    if summary.overruns > 0 {
        resync(
            &mut events,
            &mut dumper,
            &mut known,
            &mut summary,
            &mut |ev, r| emit(&mut out, ev, r),
        )?;
    }
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&summary)?)?,
        OutputFormat::Text => writeln!(
            out,
            "{} events, {} overruns (lost events, resynchronized: {} new, {} gone)",
            summary.events, summary.overruns, summary.resynced_new, summary.resynced_destroyed
        )?,
    }
    out.flush()?;
    // Ctrl-C is how a watch normally ends (as `conntrack -E`): exit 0.
    Ok(Outcome::Success)
}
