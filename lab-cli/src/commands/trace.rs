//! `labctl trace`: the packet drop tracer.

use std::{io::BufWriter, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::trace::{TraceArgs, TraceScope},
    drops::{
        filter::Filters,
        session::{self, Scope, TraceOptions},
    },
    kernel::{
        node,
        outfile::{self, Existing},
        privilege,
    },
    lab::{self, Lab, gone, names, plan::Role},
    output::{
        OutputFormat,
        drops::{JsonSink, TextSink, write_pod_namespace_note},
        exit::{Outcome, UsageError},
        pcap::{PcapSink, SummaryOnly},
        width,
    },
};

pub fn run(args: TraceArgs) -> anyhow::Result<Outcome> {
    check_pcap(&args)?;
    privilege::require("trace")?;
    // Inside a node the kernel is shared with every other node and the host:
    // show this node's drops unless asked for more.
    let container = node::container();
    let narrowed = args.netns.is_some() || args.pod.is_some() || args.pod_namespace.is_some();
    let scope = match (args.scope, narrowed, &container) {
        (Some(s), _, _) => s,
        (None, false, Some(_)) => TraceScope::Node,
        _ => TraceScope::All,
    };
    if scope == TraceScope::Node && args.scope.is_none() {
        let note = format!(
            "labctl runs in a container ({}): tracing this node's namespaces only; `--scope all` shows every namespace on the machine",
            container.as_deref().unwrap_or("?")
        );
        eprintln!("{}", width::fill(&note, "", ""));
    }
    let netns = match (&args.netns, &args.pod) {
        (Some(n), _) => Some((names::lookup_netns(n)?, format!("namespace `{n}`"))),
        (None, Some(p)) => Some((names::lookup_pod(p)?, format!("pod `{p}`"))),
        (None, None) => None,
    };
    // A trace of one namespace, pod or lab ends when it goes away.
    let gone = match (&netns, &args.pod_namespace) {
        (Some((ns, what)), _) => Some(gone::netns(ns, what)?),
        (None, Some(lab)) if Lab::open(lab).is_ok() => Some(gone::lab(lab)),
        (None, _) => None,
    };
    let opts = TraceOptions {
        filters: Filters {
            netns: netns.map(|(ns, _)| ns),
            iface: args.iface,
            proto: args.proto,
            host: args.host,
            port: args.port,
            reasons: args.reasons,
            exclude_reasons: args.exclude_reasons,
        },
        summary: args.summary,
        interval: args.interval.unwrap_or(Duration::from_secs(1)),
        duration: args.duration,
        count: args.count,
        ready_file: args.ready_file,
        ring_bytes: args.ring_size,
        classic_tracepoint: args.classic_tracepoint,
        stack: args.stack,
        snaplen: if args.pcap.is_some() { args.snaplen } else { 0 },
        stop: None,
        gone,
        netns_aliases: Some(names::member_names),
        policy_names: Some(lab::policy::drop_namer()),
        scope: match (&args.pod_namespace, scope) {
            (Some(ns), _) => {
                // Fail now on an unknown namespace; later, follow its pods.
                names::pod_netns_of(ns)?;
                let ns = ns.clone();
                Some(Scope(Box::new(move || {
                    names::pod_netns_of(&ns).unwrap_or_default()
                })))
            }
            (None, TraceScope::Node) => Some(Scope(Box::new(node::scope))),
            (None, TraceScope::All) => None,
        },
    };
    // JSON goes straight to stdout: anstream's escape-stripping (for text
    // that is not on a terminal) would scan every byte of a drop storm.
    let json = || JsonSink::new(BufWriter::with_capacity(1 << 16, std::io::stdout().lock()));
    let text = || {
        let out = BufWriter::with_capacity(1 << 16, anstream::stdout().lock());
        TextSink::new(out, args.summary, args.explain)
    };
    let summary = match (&args.pcap, args.output) {
        (None, OutputFormat::Json) => session::run(&opts, &mut json()),
        (None, OutputFormat::Text) => session::run(&opts, &mut text()),
        // The pcap on standard output: the summary goes to standard error.
        (Some(path), _) if path.as_os_str() == "-" => {
            let out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let inner = SummaryOnly {
                out: anstream::stderr(),
            };
            let mut sink = PcapSink::new(inner, out, args.snaplen).context("starting the pcap")?;
            session::run(&opts, &mut sink)
        }
        (Some(path), format) => {
            let existing = if args.force {
                Existing::Replace
            } else {
                Existing::Refuse
            };
            let file = outfile::create(path, existing)?;
            let out = BufWriter::with_capacity(1 << 16, file);
            match format {
                OutputFormat::Json => {
                    let mut sink =
                        PcapSink::new(json(), out, args.snaplen).context("starting the pcap")?;
                    session::run(&opts, &mut sink)
                }
                OutputFormat::Text => {
                    let mut sink =
                        PcapSink::new(text(), out, args.snaplen).context("starting the pcap")?;
                    session::run(&opts, &mut sink)
                }
            }
        }
    }
    .context("tracing failed")?;
    if let Some(why) = &summary.gone {
        eprintln!(
            "{}",
            width::fill(&format!("the trace stopped: {why}"), "", "  ")
        );
    }
    // A lab's drops are mostly on its nodes, which are not pods: say so
    // rather than leave a bare 0.
    if let Some(ns) = &args.pod_namespace
        && summary.total() == 0
        && args.output == OutputFormat::Text
    {
        let nodes: Vec<String> = Lab::open(ns)
            .map(|lab| {
                lab.plan
                    .members()
                    .filter(|(_, role, _)| *role == Role::Node)
                    .map(|(name, _, _)| name.to_owned())
                    .collect()
            })
            .unwrap_or_default();
        write_pod_namespace_note(&mut anstream::stderr(), ns, &nodes)?;
    }
    Ok(Outcome::Success)
}

/// `--pcap -` writes binary to standard output: not onto a terminal, and
/// not mixed with JSON lines.
fn check_pcap(args: &TraceArgs) -> Result<(), UsageError> {
    let Some(path) = &args.pcap else {
        return Ok(());
    };
    if path.as_os_str() != "-" {
        return Ok(());
    }
    if args.force {
        return Err(UsageError(
            "--force replaces an existing --pcap FILE; standard output (`--pcap -`) has none"
                .into(),
        ));
    }
    if args.output == OutputFormat::Json {
        return Err(UsageError(
            "`--pcap -` and `-o json` would both write to standard output; write the pcap to a file (--pcap FILE) or drop -o json"
                .into(),
        ));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(UsageError(
            "`--pcap -` writes binary pcapng to standard output, which is a terminal; pipe it (`| wireshark -k -i -`, `| tshark -r -`) or redirect it to a file".into(),
        ));
    }
    Ok(())
}
