//! `labctl trace`: the packet drop tracer.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{
    cli::{OutputFormat, TraceArgs},
    exit::Outcome,
    privilege,
    trace::{
        filter::Filters,
        session::{self, TraceOptions},
    },
};

pub fn run(args: TraceArgs) -> anyhow::Result<Outcome> {
    privilege::require("trace")?;
    let seconds = |what: &str, s: f64| -> anyhow::Result<Duration> {
        if !(s.is_finite() && s > 0.0) {
            bail!("--{what} must be a positive number of seconds, got {s}");
        }
        Ok(Duration::from_secs_f64(s))
    };
    let opts = TraceOptions {
        filters: Filters {
            netns: args.netns,
            iface: args.iface,
            proto: args.proto,
            host: args.host,
            port: args.port,
            reasons: args.reasons,
            exclude_reasons: args.exclude_reasons,
        },
        output: args.output,
        summary: args.summary,
        interval: seconds("interval", args.interval)?,
        duration: args.duration.map(|d| seconds("duration", d)).transpose()?,
        count: args.count,
        ready_file: args.ready_file,
        explain: args.explain,
        ring_bytes: args.ring_size,
        classic_tracepoint: args.classic_tracepoint,
        stack: args.stack,
        stop: None,
    };
    // JSON goes straight to stdout: anstream's escape-stripping (for text
    // that is not on a terminal) would scan every byte of a drop storm.
    let stdout: Box<dyn std::io::Write> = match opts.output {
        OutputFormat::Json => Box::new(std::io::stdout().lock()),
        OutputFormat::Text => Box::new(anstream::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    session::run(&opts, &mut out).context("tracing failed")?;
    Ok(Outcome::Success)
}
