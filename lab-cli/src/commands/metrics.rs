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
    if !args.listen.ip().to_canonical().is_loopback() {
        eprintln!("{}", no_auth_warning(args.listen));
    }
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

/// What `metrics` says on stderr when it listens beyond this machine.
pub(crate) fn no_auth_warning(listen: std::net::SocketAddr) -> String {
    width::fill(
        &format!(
            "{listen} can be reached from other machines and the endpoint has no authentication: anyone who can connect reads the names and counters of every namespace and pod. Serve on 127.0.0.1 (the default) or keep the port behind a firewall."
        ),
        "warning: ",
        "  ",
    )
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
