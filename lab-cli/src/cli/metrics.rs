//! `labctl metrics` arguments.

use clap::Args;

use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address to serve GET /metrics on: IP:PORT or localhost:PORT (port 0:
    /// any free port, printed). The endpoint has no authentication: any
    /// other address is warned about.
    #[arg(long, default_value = "127.0.0.1:9477", value_parser = crate::cli::values::listen_addr)]
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
