//! `labctl conntrack track`: run the eBPF connection tracker on one
//! interface until Ctrl-C or --duration. Its table is pinned while it runs,
//! so `conntrack list --source bpf|all` in another terminal can read it; the
//! pin is removed and the program detached on exit.

use std::{io::Write as _, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::conntrack::CtTrackArgs,
    conntrack::entry::EntryJson,
    conntrack::tracker::CtTracker,
    kernel::{
        interrupt::{Stop, Why},
        netns, privilege,
        ready::ReadyFile,
    },
    lab::{
        gone,
        names::{self, lookup_netns_opt},
    },
    output::{OutputFormat, conntrack as table, exit::Outcome, width},
};

pub fn run(args: CtTrackArgs) -> anyhow::Result<Outcome> {
    privilege::require("conntrack track")?;
    let CtTrackArgs {
        netns: netns_name,
        iface,
        duration,
        ready_file,
        output,
    } = args;
    let mut ready = ReadyFile::claim(ready_file.as_deref())?;
    let ns = lookup_netns_opt(netns_name.as_deref())?;
    let mut tracker = CtTracker::attach(ns.as_ref(), &iface)
        .with_context(|| format!("cannot attach the connection tracker to {iface}"))?;
    let ino = match &ns {
        Some(ns) => ns.inode()?,
        None => netns::current_inode()?,
    };
    tracker.publish(ino)?;
    let pods = names::pods_by_addr(ino);
    ready.signal("attached")?;
    let netns_opt = netns_name
        .as_deref()
        .map(|n| format!(" --netns {n}"))
        .unwrap_or_default();
    let started_line = format!(
        "tracking connections on {iface}{} (ingress and egress); in another terminal: labctl conntrack list --source all{netns_opt}; Ctrl-C to stop",
        netns_name
            .as_deref()
            .map(|n| format!(" in {n}"))
            .unwrap_or_default()
    );
    let mut out = anstream::stdout().lock();
    match output {
        // JSON on stdout is only the entries; the rest goes to stderr.
        OutputFormat::Json => eprintln!("{}", width::fill(&started_line, "", "")),
        OutputFormat::Text => width::write_fill(&mut out, &started_line, "", "")?,
    }
    // Tracking in one namespace (a lab's node) ends when it goes.
    let gone = match (&ns, &netns_name) {
        (Some(ns), Some(name)) => Some(gone::netns(ns, &format!("namespace `{name}`"))?),
        _ => None,
    };
    let stop = Stop::new().duration(duration).gone(gone);
    while !stop.wait(Duration::from_secs(3600)) {}
    let say_why = || {
        if let Some(Why::Gone(why)) = stop.why() {
            eprintln!(
                "{}",
                width::fill(&format!("the tracker stopped: {why}"), "", "  ")
            );
        }
    };
    let entries = tracker.entries().context("cannot read the tracker table")?;
    if output == OutputFormat::Json {
        for e in &entries {
            let json = EntryJson::new(e).with_pods(&pods);
            writeln!(out, "{}", serde_json::to_string(&json)?)?;
        }
        drop(tracker);
        say_why();
        return Ok(Outcome::Success);
    }
    let rows: Vec<_> = entries.iter().map(|e| (e, None)).collect();
    writeln!(out, "{}", table::render(&rows, table::Layout::Compact))?;
    writeln!(
        out,
        "{} flows seen by the eBPF tracker on {iface}",
        entries.len()
    )?;
    drop(tracker);
    writeln!(out, "tracker detached from {iface}; table unpinned")?;
    say_why();
    Ok(Outcome::Success)
}
