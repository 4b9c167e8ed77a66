//! `labctl observe`: flows in Hubble's vocabulary until Ctrl-C.

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cli::observe::ObserveArgs,
    flows::{
        FlowFilter,
        observe::{ObserveOptions, observe},
    },
    kernel::{
        netns::{NetNs, Selection},
        privilege,
    },
    lab::{Lab, names},
    output::{
        OutputFormat,
        exit::Outcome,
        flows::{compact, item_json},
    },
};

pub fn run(args: ObserveArgs) -> anyhow::Result<Outcome> {
    privilege::require("observe")?;
    for pod in [&args.pod, &args.from_pod, &args.to_pod]
        .into_iter()
        .flatten()
    {
        names::lookup_pod(pod)?;
    }
    if let Some(ns) = &args.namespace {
        // As trace --pod-namespace: a lab's name or a namespace with pods.
        names::pod_netns_of(ns)?;
    }
    let namespaces = match (&args.lab, args.netns.is_empty()) {
        (Some(lab), _) => {
            let lab = Lab::open(lab)?;
            Selection::Listed(
                lab.state
                    .namespaces
                    .iter()
                    .map(|r| NetNs::open(&r.name))
                    .collect::<Result<_, _>>()?,
            )
        }
        (None, true) => Selection::HostAndNamed,
        (None, false) => Selection::Listed(
            args.netns
                .iter()
                .map(|n| names::lookup_netns(n))
                .collect::<Result<_, _>>()?,
        ),
    };
    let opts = ObserveOptions {
        namespaces,
        filter: FlowFilter {
            verdict: args.verdict,
            pod: args.pod,
            from_pod: args.from_pod,
            to_pod: args.to_pod,
            namespace: args.namespace,
            protocol: args.protocol,
            port: args.port,
        },
        count: args.count,
        duration: args.duration,
        ready_file: args.ready_file,
        ring_bytes: args.ring_size,
        ct_buffer: args.buffer_size,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let format = args.output;
    let stats = observe(opts, &mut |item| {
        match format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut out, &item_json(item))?;
                out.write_all(b"\n")?;
            }
            OutputFormat::Text => writeln!(out, "{}", compact(item))?,
        }
        out.flush()
    })
    .context("observing failed")?;
    if format == OutputFormat::Text {
        eprintln!("{} flows, {} events lost", stats.flows, stats.lost);
    }
    Ok(Outcome::Success)
}
