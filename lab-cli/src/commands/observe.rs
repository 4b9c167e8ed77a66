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
        netns::{NetNs, NetnsError, Selection},
        privilege,
    },
    lab::{Lab, LabError, gone, names},
    output::{
        OutputFormat,
        exit::Outcome,
        flows::{compact, item_json},
        width,
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
    // What to watch, with what each is called when it goes.
    let listed: Option<Vec<(NetNs, String)>> = match (&args.lab, args.netns.is_empty()) {
        (Some(lab), _) => Some(
            Lab::open(lab)?
                .state
                .namespaces
                .iter()
                .map(|r| Ok((NetNs::open(&r.name)?, format!("namespace `{}`", r.name))))
                .collect::<Result<_, NetnsError>>()?,
        ),
        (None, true) => None,
        (None, false) => Some(
            args.netns
                .iter()
                .map(|n| Ok((names::lookup_netns(n)?, format!("namespace `{n}`"))))
                .collect::<Result<_, LabError>>()?,
        ),
    };
    // A view of one lab (or of some namespaces) ends when it is gone; the
    // node-wide one goes on, saying what went.
    let gone = listed
        .as_deref()
        .map(|all| gone::every_netns(all, args.lab.as_deref()))
        .transpose()?;
    let namespaces = match listed {
        Some(all) => Selection::Listed(all.into_iter().map(|(ns, _)| ns).collect()),
        None => Selection::HostAndNamed,
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
        gone,
        notice: |line| eprintln!("{}", width::fill(line, "", "  ")),
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
    if let Some(why) = &stats.gone {
        eprintln!(
            "{}",
            width::fill(&format!("observe stopped: {why}"), "", "  ")
        );
    }
    Ok(Outcome::Success)
}
