//! `labctl observe` arguments, in Hubble's spelling where it fits.

use std::time::Duration;

use clap::Args;

use super::values;
use crate::{
    flows::{FlowType, Verdict},
    output::OutputFormat,
};

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// Only flows with this verdict.
    #[arg(long, value_enum, ignore_case = true)]
    pub verdict: Option<Verdict>,
    /// Only flows of this type, as Hubble's --type: policy-verdict (a
    /// policy datapath's verdict on a new connection), drop (a packet
    /// drop), trace (a connection starting or ending).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub kind: Option<FlowType>,
    /// Only flows from or to this pod: NAMESPACE/NAME (a lab's pods are LAB/POD).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows from this pod.
    #[arg(long)]
    pub from_pod: Option<String>,
    /// Only flows to this pod.
    #[arg(long)]
    pub to_pod: Option<String>,
    /// Only flows from or to a pod of this namespace (a lab's name for its pods).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6.
    #[arg(long, value_parser = values::proto)]
    pub protocol: Option<String>,
    /// Only flows from or to this port.
    #[arg(long, value_parser = values::port)]
    pub port: Option<u16>,
    /// Watch only these namespaces (repeatable): a lab member, an `ip netns`
    /// name, `host`, `pid:N` or an inode [default: the host's and every named one].
    #[arg(long)]
    pub netns: Vec<String>,
    /// Watch only this lab's namespaces.
    #[arg(long, conflicts_with = "netns")]
    pub lab: Option<String>,
    /// Stop after this many flows. Hubble's --last replays flows from its
    /// agent's buffer; labctl has no agent, so --last N is the next N.
    #[arg(long, short = 'c', visible_alias = "last", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Follow the stream until Ctrl-C (the default; accepted as in Hubble).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Stop after this many seconds.
    #[arg(long, value_parser = values::duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Write this file once every source is attached (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// The drop tracer's ring buffer: a power of two from 4096 to 256M.
    #[arg(long, default_value = "4M", value_parser = values::ring_size)]
    pub ring_size: u32,
    /// Receive buffer of each conntrack event socket (4K to 256M).
    #[arg(long, default_value = "8M", value_parser = values::buffer_size)]
    pub buffer_size: usize,
    /// Serve Hubble's Observer gRPC API on this address instead of printing
    /// flows, for `hubble observe --server ADDR` [default: 127.0.0.1:4245,
    /// Hubble's port; port 0 picks a free one, written to --ready-file].
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:4245",
        value_parser = values::listen_addr
    )]
    pub serve: Option<std::net::SocketAddr>,
    /// Let --serve listen on an address other machines can reach (the API
    /// has no authentication and no TLS: whoever connects reads every flow).
    #[arg(long, requires = "serve")]
    pub serve_non_loopback: bool,
    /// Output: Hubble's compact lines, or JSON shaped like `hubble observe -o json`.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
