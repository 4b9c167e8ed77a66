//! `labctl metrics`: a Prometheus endpoint until Ctrl-C.

use anyhow::Context as _;

use crate::{
    cli::metrics::MetricsArgs,
    kernel::netns::Selection,
    kernel::{privilege, ready::ReadyFile},
    lab::names,
    metrics::{Exporter, serve::Listener},
    output::{OutputFormat, exit::Outcome, width},
};

pub fn run(args: MetricsArgs) -> anyhow::Result<Outcome> {
    privilege::require("metrics")?;
    let namespaces = if args.netns.is_empty() {
        Selection::HostAndNamed
    } else {
        Selection::Listed(
            args.netns
                .iter()
                .map(|n| names::lookup_netns(n))
                .collect::<Result<_, _>>()?,
        )
    };
    let mut ready = ReadyFile::claim(args.ready_file.as_deref())?;
    let listener = Listener::bind(args.listen)?;
    let exporter = Exporter::start(namespaces).context("cannot start the exporter")?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    match args.output {
        OutputFormat::Text => {
            println!("{}", serving_line(&url));
        }
        OutputFormat::Json => println!("{}", serde_json::json!({"type": "listening", "url": url})),
    }
    ready.signal(&url)?;
    listener.serve(exporter).context("serving metrics")?;
    Ok(Outcome::Success)
}

/// The line `metrics` starts with, filled to 80 columns (an IPv6 address
/// makes a long URL).
pub(crate) fn serving_line(url: &str) -> String {
    width::fill(
        &format!("serving Prometheus metrics at {url}; Ctrl-C to stop"),
        "",
        "  ",
    )
}
