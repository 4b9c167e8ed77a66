//! `labctl conntrack track`: run the eBPF connection tracker on one
//! interface until Ctrl-C or --duration. Its table is pinned while it runs,
//! so `conntrack list --source bpf|all` in another terminal can read it; the
//! pin is removed and the program detached on exit.

use std::{
    io::Write as _,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    conntrack::tracker::CtTracker,
    kernel::{interrupt, netns, privilege, ready::ReadyFile},
    lab::names::lookup_netns_opt,
    output::{conntrack as table, exit::Outcome},
};

pub fn run(
    netns_name: Option<&str>,
    iface: &str,
    duration: Option<Duration>,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<Outcome> {
    privilege::require("conntrack track")?;
    let mut ready = ReadyFile::claim(ready_file.as_deref())?;
    let ns = lookup_netns_opt(netns_name)?;
    let mut tracker = CtTracker::attach(ns.as_ref(), iface)
        .with_context(|| format!("cannot attach the connection tracker to {iface}"))?;
    let ino = match &ns {
        Some(ns) => ns.inode()?,
        None => netns::current_inode()?,
    };
    tracker.publish(ino)?;
    ready.signal("attached")?;
    let netns_opt = netns_name
        .map(|n| format!(" --netns {n}"))
        .unwrap_or_default();
    let mut out = anstream::stdout().lock();
    writeln!(
        out,
        "tracking connections on {iface}{} (ingress and egress); in another terminal: labctl conntrack list --source all{netns_opt}; Ctrl-C to stop",
        netns_name.map(|n| format!(" in {n}")).unwrap_or_default()
    )?;
    let started = Instant::now();
    while !interrupt::requested() && duration.is_none_or(|d| started.elapsed() < d) {
        thread::sleep(Duration::from_millis(100));
    }
    let entries = tracker.entries().context("cannot read the tracker table")?;
    let rows: Vec<_> = entries.iter().map(|e| (e, None)).collect();
    writeln!(out, "{}", table::render(&rows, table::Layout::Compact))?;
    writeln!(
        out,
        "{} flows seen by the eBPF tracker on {iface}",
        entries.len()
    )?;
    drop(tracker);
    writeln!(out, "tracker detached from {iface}; table unpinned")?;
    Ok(Outcome::Success)
}
