//! `labctl demo` arguments.

use clap::Args;

use crate::output::OutputFormat;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Packets per fault [default: 5] (with --counter: datagrams to count [default: 1000]).
    #[arg(long, short = 'c', value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: Option<u32>,
    /// The minimal demo instead: one eBPF counter counting UDP datagrams
    /// sent to a closed port in a throwaway namespace, no lab.
    #[arg(long)]
    pub counter: bool,
    /// Output: text for people; json: the drops as NDJSON (as `trace -o
    /// json`), then one `{"type":"demo",...}` line with the verdict per fault.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text, conflicts_with = "counter")]
    pub output: OutputFormat,
}
