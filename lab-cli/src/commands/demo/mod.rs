//! `labctl demo`: the drops lab traced live, or (`--counter`) a bare eBPF
//! counter counting real drops.

mod drops_lab;

pub use drops_lab::run;

use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use anyhow::Context as _;

use crate::{
    drop_demo::{self, CLOSED_PORT},
    exit::Outcome,
    interrupt,
    kernel::netns,
    privilege,
};

/// `labctl demo --counter`: the minimal version, one eBPF counter and no lab.
pub fn counter(count: u32) -> anyhow::Result<Outcome> {
    privilege::require("demo")?;
    let name = netns::unique_name("labctl-demo");
    let mut out = anstream::stdout().lock();
    writeln!(
        out,
        "demo: attaching the drop counter (tracepoint skb:kfree_skb) to new netns {name}, \
         sending {count} UDP datagrams to 127.0.0.1:{CLOSED_PORT} where nothing listens"
    )?;
    let outcome = drop_demo::run(&name, count).context("the drop demo failed")?;
    interrupt::check()?;
    let bold = Style::new().bold();
    let green = Style::new().fg_color(Some(AnsiColor::Green.into())).bold();
    writeln!(
        out,
        "drops counted in netns {name} (inode {}):",
        outcome.netns_ino
    )?;
    for (reason, n) in &outcome.by_reason {
        writeln!(out, "  {bold}{reason:<24}{bold:#} {n}")?;
    }
    let no_socket = outcome.count("NO_SOCKET");
    let verdict = if no_socket == u64::from(count) {
        format!(
            "{green}✓{green:#} {no_socket} of {count} datagrams dropped with NO_SOCKET, as expected"
        )
    } else {
        format!("✗ expected {count} NO_SOCKET drops, counted {no_socket}")
    };
    writeln!(out, "{verdict}")?;
    writeln!(out, "namespace {name} deleted; program detached")?;
    Ok(Outcome::Success)
}
