//! `labctl metrics` arguments.

use clap::Args;

use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address to serve GET /metrics on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:9477")]
    pub listen: std::net::SocketAddr,
    /// Conntrack and NAT metrics from these namespaces only (repeatable):
    /// a lab member, an `ip netns` name, `host`, `pid:N` or an inode
    /// [default: the host's and every named namespace].
    #[arg(long)]
    pub netns: Vec<String>,
    /// Write this file once the endpoint is up; it holds the URL (for scripts).
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// Output: text for people, json for scripts (the address served).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
