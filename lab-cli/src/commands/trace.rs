//! `labctl trace`: the packet drop tracer.

use std::time::Duration;

use anyhow::Context as _;

use crate::{
    cli::trace::TraceArgs,
    drops::{
        filter::Filters,
        session::{self, TraceOptions},
    },
    kernel::privilege,
    lab::names,
    output::{
        OutputFormat,
        drops::{JsonSink, TextSink},
        exit::Outcome,
    },
};

pub fn run(args: TraceArgs) -> anyhow::Result<Outcome> {
    privilege::require("trace")?;
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
