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
    let narrowed = args.netns.is_some() || args.pod.is_some() || args.pod_namespace.is_some();
    let scope = match (args.scope, narrowed, &container) {
        (Some(s), _, _) => s,
        (None, false, Some(_)) => TraceScope::Node,
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
            netns: match (&args.netns, &args.pod) {
                (Some(n), _) => Some(names::lookup_netns(n)?),
                (None, Some(p)) => Some(names::lookup_pod(p)?),
                (None, None) => None,
            },
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
