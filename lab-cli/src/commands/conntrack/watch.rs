//! `labctl conntrack watch`: conntrack events, like `conntrack -E`, that
//! never die silently: when the kernel drops events because the receive
//! buffer overflowed (ENOBUFS), the loss is reported and the view is
//! resynchronized from a fresh dump (flows that appeared or vanished
//! meanwhile are emitted, marked `resync`).

use std::{io::Write as _, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use super::build_filter;
use crate::{
    cli::conntrack::CtWatchArgs as WatchArgs,
    conntrack::{
        entry::EntryJson,
        netlink::{CtEvent, EventKind},
        watcher::Watcher,
    },
    kernel::{
        interrupt::{Stop, Why},
        privilege,
        ready::ReadyFile,
    },
    lab::{
        gone,
        names::{self, lookup_netns_opt},
    },
    output::{OutputFormat, exit::Outcome, width},
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

pub fn run(args: WatchArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("conntrack watch")?;
    let filter = build_filter(&args.filter)?;
    let mut ready = ReadyFile::claim(args.ready_file.as_deref())?;
    let ns = lookup_netns_opt(args.netns.as_deref())?;
    let mut watcher = Watcher::open(ns.as_ref(), args.buffer_size)
        .context("cannot subscribe to conntrack events")?;
    ready.signal("subscribed")?;
    // A watch of one namespace (a lab's member, a pod) ends when it goes.
    let gone = match (&ns, &args.netns) {
        (Some(ns), Some(name)) => Some(gone::netns(ns, &format!("namespace `{name}`"))?),
        _ => None,
    };
    let stop = Stop::new()
        .duration(args.duration)
        .count(args.count)
        .gone(gone);
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
            OutputFormat::Text => crate::output::conntrack::write_event(
                out,
                ev.kind,
                &ev.entry,
                resync,
                pods.borrow_mut().get(),
            )?,
        }
        Ok(())
    };
    let mut seen = 0u64;
    // At Ctrl-C or --duration, what the kernel already queued is still
    // read (without waiting), so events right before the stop are shown.
    'watch: loop {
        let stopping = stop.stopped();
        stop.readable(&[watcher.fd()], Duration::from_millis(100))
            .context("waiting for conntrack events")?;
        let batch = watcher.next(0).context("reading conntrack events")?;
        if stopping && batch.events.is_empty() && batch.overrun.is_none() {
            break;
        }
        for s in &batch.events {
            if !s.resync {
                summary.events += 1;
            }
            emit(&mut out, &s.event, s.resync)?;
            if !s.resync && filter.matches(&s.event.entry) {
                seen += 1;
                if stop.counted(seen) {
                    break 'watch;
                }
            }
        }
        if let Some((new, gone)) = batch.overrun {
            summary.overruns += 1;
            summary.resynced_new += new;
            summary.resynced_destroyed += gone;
            let warning = format!(
                "events were lost: the receive buffer overflowed (overrun #{}); resynchronized from the table: {new} new, {gone} gone. A larger --buffer-size loses fewer.",
                summary.overruns
            );
            if args.output == OutputFormat::Text {
                width::write_fill(&mut out, &warning, "!! ", "   ")?;
            } else {
                eprintln!("{}", width::fill(&warning, "warning: ", "  "));
            }
        }
        out.flush()?;
    }
    // After any loss, reconcile once more before the summary: losses the
    // kernel could not flag (while its queue was still marked congested)
    // or that happened as the watch ended are caught here.
    let last = watcher
        .reconcile()
        .context("cannot resynchronize after lost events")?;
    for s in &last.events {
        if !s.resync {
            summary.events += 1;
        }
        emit(&mut out, &s.event, s.resync)?;
    }
    if let Some((new, gone)) = last.overrun {
        summary.resynced_new += new;
        summary.resynced_destroyed += gone;
    }
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&summary)?)?,
        OutputFormat::Text => width::write_fill(
            &mut out,
            &format!(
                "{} events, {} overruns (lost events, resynchronized: {} new, {} gone)",
                summary.events, summary.overruns, summary.resynced_new, summary.resynced_destroyed
            ),
            "",
            "  ",
        )?,
    }
    out.flush()?;
    if let Some(Why::Gone(why)) = stop.why() {
        eprintln!(
            "{}",
            width::fill(&format!("the watch stopped: {why}"), "", "  ")
        );
    }
    // Ctrl-C is how a watch normally ends (as `conntrack -E`): exit 0.
    Ok(Outcome::Success)
}
