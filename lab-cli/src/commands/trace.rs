//! `labctl trace`: the packet drop tracer.

use std::time::Duration;

use anyhow::Context as _;

use crate::{
    cli::trace::{TraceArgs, TraceScope},
    drops::{
        filter::Filters,
        session::{self, Scope, TraceOptions},
    },
    kernel::{node, privilege},
    lab::names,
    output::{
        OutputFormat,
        drops::{JsonSink, TextSink},
        exit::Outcome,
    },
};

pub fn run(args: TraceArgs) -> anyhow::Result<Outcome> {
    privilege::require("trace")?;
    // Inside a node the kernel is shared with every other node and the host:
    // show this node's drops unless asked for more.
    let container = node::container();
    let scope = match (args.scope, &args.netns, &container) {
        (Some(s), _, _) => s,
        (None, None, Some(_)) => TraceScope::Node,
        _ => TraceScope::All,
    };
    if scope == TraceScope::Node && args.scope.is_none() {
        eprintln!(
            "labctl runs in a container ({}): tracing this node's namespaces only; `--scope all` shows every namespace on the machine",
            container.as_deref().unwrap_or("?")
        );
    }
    let opts = TraceOptions {
        filters: Filters {
            netns: args.netns.as_deref().map(names::lookup_netns).transpose()?,
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
        stop: None,
        netns_aliases: Some(names::member_names),
        scope: match scope {
            TraceScope::Node => Some(Scope(Box::new(node::scope))),
            TraceScope::All => None,
        },
    };
    // JSON goes straight to stdout: anstream's escape-stripping (for text
    // that is not on a terminal) would scan every byte of a drop storm.
    match args.output {
        OutputFormat::Json => {
            let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            session::run(&opts, &mut JsonSink::new(out))
        }
        OutputFormat::Text => {
            let out = std::io::BufWriter::with_capacity(1 << 16, anstream::stdout().lock());
            session::run(&opts, &mut TextSink::new(out, args.summary, args.explain))
        }
    }
    .context("tracing failed")?;
    Ok(Outcome::Success)
}
