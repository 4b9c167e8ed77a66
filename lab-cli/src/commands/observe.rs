//! `labctl observe`: flows in Hubble's vocabulary until Ctrl-C, printed or
//! served as Hubble's Observer API (`--serve`).

use std::io::Write as _;

use anyhow::{Context as _, bail};

use crate::{
    cli::observe::ObserveArgs,
    flows::{
        FlowFilter,
        hubble::server::Serving,
        observe::{ObserveOptions, observe},
    },
    kernel::{
        netns::{NetNs, NetnsError, Selection},
        privilege,
    },
    lab::{Lab, LabError, gone, names},
    output::{
        OutputFormat,
        exit::{Outcome, UsageError},
        flows::{compact, item_json, item_response},
        width,
    },
};

pub fn run(args: ObserveArgs) -> anyhow::Result<Outcome> {
    if let Some(addr) = args.serve
        && !args.serve_non_loopback
        && !addr.ip().to_canonical().is_loopback()
    {
        bail!(UsageError(format!(
            "--serve {addr} can be reached from other machines and Hubble's API has no authentication, so labctl refuses it: serve on 127.0.0.1 (the default) or add --serve-non-loopback to accept that anyone who connects reads every flow"
        )));
    }
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
    // Listening before the sources attach: the ready file means both.
    let serving = args
        .serve
        .map(|addr| Serving::start(addr, &node_name()))
        .transpose()
        .context("cannot serve Hubble's Observer API")?;
    if let Some(s) = &serving {
        eprintln!("{}", serving_line(s.addr()));
    }
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
            kind: args.kind,
        },
        count: args.count,
        duration: args.duration,
        ready_file: args.ready_file,
        ready_text: serving.as_ref().map(|s| s.addr().to_string()),
        ring_bytes: args.ring_size,
        ct_buffer: args.buffer_size,
        gone,
        notice: |line| eprintln!("{}", width::fill(line, "", "  ")),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let format = args.output;
    let stats = observe(opts, &mut |item| {
        if let Some(s) = &serving {
            // The same JSON as -o json, parsed strictly as Hubble's.
            match item_response(item) {
                Ok(response) => s.hub().publish(response),
                Err(e) => tracing::warn!("a flow was not sent to Hubble clients: {e}"),
            }
            return Ok(());
        }
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
    if let Some(s) = serving {
        s.stop().context("stopping the Hubble server")?;
    }
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

/// The name GetNodes gives this machine: its host name.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "labctl".to_owned())
}

/// What `observe --serve` says on standard error once it listens.
pub(crate) fn serving_line(addr: std::net::SocketAddr) -> String {
    width::fill(
        &format!(
            "serving Hubble's Observer API on {addr}: hubble observe --server {addr}; Ctrl-C to stop"
        ),
        "",
        "  ",
    )
}
