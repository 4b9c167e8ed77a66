//! `labctl masq`: masquerade counted per pod by an eBPF program.

use std::{
    io::Write as _,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use comfy_table::{Table, presets::NOTHING};

use crate::{
    cli::{MasqArgs, OutputFormat},
    ebpf::masq_counter::{MasqCounter, MasqRow},
    exit::Outcome,
    interrupt,
    kernel::netns::NetNs,
    privilege,
};

pub fn render(rows: &[MasqRow]) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(vec![
        "POD",
        "AS (NODE)",
        "CONNS",
        "PACKETS OUT ⇄ IN",
        "BYTES OUT ⇄ IN",
        "PORTS",
    ]);
    for r in rows {
        let ports = match (r.port_min, r.port_max) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => "-".into(),
        };
        table.add_row(vec![
            r.pod.to_string(),
            r.node.to_string(),
            r.connections.to_string(),
            format!("{} ⇄ {}", r.packets_out, r.packets_in),
            format!("{} ⇄ {}", r.bytes_out, r.bytes_in),
            ports,
        ]);
    }
    table.to_string()
}

pub fn run(args: MasqArgs) -> anyhow::Result<Outcome> {
    privilege::require("masq")?;
    let ns = match &args.netns {
        Some(name) => NetNs::open(name)?,
        None => NetNs::at("this namespace", std::path::Path::new("/proc/self/ns/net")),
    };
    let counter = MasqCounter::attach(&ns, &args.iface)
        .with_context(|| format!("cannot attach the masquerade counter for {}", args.iface))?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, "attached\n")
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Text {
        writeln!(
            out,
            "counting masquerade through {}{} (tp_btf/net_dev_start_xmit); Ctrl-C to stop",
            args.iface,
            args.netns
                .as_deref()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default()
        )?;
    }
    let duration = args.duration.map(Duration::from_secs_f64);
    let started = Instant::now();
    let mut last = Instant::now();
    while !interrupt::requested() && duration.is_none_or(|d| started.elapsed() < d) {
        thread::sleep(Duration::from_millis(100));
        if args.watch && last.elapsed() >= Duration::from_secs(1) {
            let rows = counter.rows()?;
            match args.output {
                OutputFormat::Text => writeln!(
                    out,
                    "── after {:.0}s ──\n{}",
                    started.elapsed().as_secs_f64(),
                    render(&rows)
                )?,
                OutputFormat::Json => {
                    for r in &rows {
                        writeln!(out, "{}", serde_json::to_string(r)?)?;
                    }
                }
            }
            last = Instant::now();
        }
    }
    let rows = counter.rows()?;
    match args.output {
        OutputFormat::Text => writeln!(out, "{}", render(&rows))?,
        OutputFormat::Json => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
    }
    Ok(Outcome::Success)
}
