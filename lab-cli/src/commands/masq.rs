//! `labctl masq`: masquerade counted per pod by an eBPF program.

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    cli::masq::{MasqArgs, MasqCommand, MasqConfigArgs, MasqNatTableArgs, MasqTopArgs},
    kernel::{
        interrupt::{Gone, Stop, Why},
        netns::NetNs,
        privilege,
        ready::ReadyFile,
    },
    lab::{
        self, Lab, gone,
        names::{self, lookup_netns_opt},
        plan::MasqMode,
    },
    masq::{
        MasqCounter, MasqRow,
        nat::{self, NatTable},
    },
    output::{
        OutputFormat,
        exit::{Outcome, UsageError},
        table, width,
    },
};

/// The per-pod table: the node address once above it when every row has
/// the same (a node masquerades as one address), so the table fits 80
/// columns; a table still too wide becomes records.
pub fn render(rows: &[MasqRow]) -> String {
    let one_node = rows
        .first()
        .map(|r| r.node)
        .filter(|n| rows.iter().all(|r| r.node == *n));
    let cells = rows.iter().map(|r| {
        let ports = match (r.port_min, r.port_max) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => "-".into(),
        };
        let mut row = vec![r.pod_name.clone().unwrap_or_else(|| r.pod.to_string())];
        if one_node.is_none() {
            row.push(r.node.to_string());
        }
        row.extend([
            r.connections.to_string(),
            format!("{} ⇄ {}", r.packets_out, r.packets_in),
            format!("{} ⇄ {}", r.bytes_out, r.bytes_in),
            ports,
        ]);
        row
    });
    let mut header = vec!["POD"];
    if one_node.is_none() {
        header.push("AS (NODE)");
    }
    header.extend(["CONNS", "PACKETS OUT ⇄ IN", "BYTES OUT ⇄ IN", "PORTS"]);
    let table = table::render_fit(&header, cells);
    match one_node {
        Some(node) => format!("masqueraded as {node}:\n{table}"),
        None => table,
    }
}

/// Where `masq nat-table`'s FLOW column starts.
const NAT_FLOW_COLUMN: usize = 29;

/// `masq nat-table` as text: a line per mapping (the translation on the
/// next line where it does not fit), then the table's fill and counters.
pub fn write_nat_table(out: &mut impl Write, table: &NatTable) -> io::Result<()> {
    // The flow is last: its width varies with the pods' names.
    let columns = |dir: &str, proto: &str, age: &str, idle: &str| {
        format!("{dir:<3} {proto:<5} {age:>8} {idle:>8}")
    };
    writeln!(out, "{}  FLOW", columns("DIR", "PROTO", "AGE", "IDLE"))?;
    for e in &table.entries {
        let mut pieces = vec![
            format!(
                "{} ",
                columns(
                    e.dir.as_str(),
                    &e.proto.to_uppercase(),
                    &format!("{}s", e.age_s),
                    &format!("{}s", e.idle_s)
                )
            ),
            format!(
                "{}:{} ->",
                e.src_pod.clone().unwrap_or_else(|| e.src.to_string()),
                e.sport
            ),
            format!(
                "{}:{}",
                e.dst_pod.clone().unwrap_or_else(|| e.dst.to_string()),
                e.dport
            ),
            format!("{} {}:{}", e.dir.xlate(), e.xlate_addr, e.xlate_port),
        ];
        if e.closing {
            pieces.push("(closing)".into());
        }
        writeln!(out, "{}", width::pieces(&pieces, NAT_FLOW_COLUMN))?;
    }
    width::write_fill(
        out,
        &format!(
            "{} mappings of {} ({:.2}% full); allocated {}, port collisions {}, dropped for lack of a free port {}, refused by a full table {}, expired and replaced {}, reclaimed by {} sweeps of the full table {}; translated {} out, {} in",
            table.used,
            table.capacity,
            table.used as f64 * 100.0 / table.capacity as f64,
            table.allocated,
            table.collisions,
            table.alloc_failed,
            table.table_full,
            table.expired,
            table.sweeps,
            table.reclaimed,
            table.xlate_out,
            table.xlate_in
        ),
        "",
        "  ",
    )?;
    if table.table_full > 0 {
        width::write_fill(
            out,
            &format!(
                "table full: {} packets of new flows were dropped (at tc egress, drop reason TC_EGRESS) while all {} mappings were live (none expired, none closed and idle): those flows were refused, no live mapping was evicted",
                table.table_full, table.capacity
            ),
            "",
            "  ",
        )?;
    }
    Ok(())
}

/// Rows with their pods' names, when the node is a lab's.
fn name_pods(mut rows: Vec<MasqRow>, node_ino: u64) -> Vec<MasqRow> {
    let pods = names::pods_by_addr(node_ino);
    for r in &mut rows {
        r.pod_name = pods.get(&r.pod).map(ToString::to_string);
    }
    rows
}

/// The node named by --netns, or this process's own namespace.
fn open_netns(name: Option<&str>) -> anyhow::Result<NetNs> {
    Ok(match lookup_netns_opt(name)? {
        Some(ns) => ns,
        None => NetNs::at("this namespace", std::path::Path::new("/proc/self/ns/net")),
    })
}

/// Where the rows come from: the counter we attach, or the eBPF
/// masquerading's own counters when the node uses it (then netfilter has no
/// NAT, and conntrack, which the counter reads, knows nothing of it).
enum Rows {
    Counter(MasqCounter),
    Nat(u64),
}

impl Rows {
    fn read(&self) -> anyhow::Result<Vec<MasqRow>> {
        Ok(match self {
            Rows::Counter(c) => c.rows()?,
            Rows::Nat(ino) => nat::pod_rows(*ino)?,
        })
    }
}

pub fn run(top: MasqTopArgs) -> anyhow::Result<Outcome> {
    match top.command {
        Some(MasqCommand::NatTable(MasqNatTableArgs { netns, output })) => {
            nat_table(netns.as_deref(), output)
        }
        Some(MasqCommand::Config(args)) => config(args),
        None => count(top.args),
    }
}

/// `labctl masq`: count until Ctrl-C or --duration.
fn count(args: MasqArgs) -> anyhow::Result<Outcome> {
    privilege::require("masq")?;
    let mut ready = ReadyFile::claim(args.ready_file.as_deref())?;
    let ns = open_netns(args.netns.as_deref())?;
    let ino = ns.inode()?;
    let counter =
        if nat::present(ino) {
            Rows::Nat(ino)
        } else {
            Rows::Counter(MasqCounter::attach(&ns, &args.iface).with_context(|| {
                format!("cannot attach the masquerade counter for {}", args.iface)
            })?)
        };
    ready.signal("attached")?;
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Text {
        let started = format!(
            "counting masquerade through {}{} ({}); Ctrl-C to stop",
            args.iface,
            args.netns
                .as_deref()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default(),
            match counter {
                Rows::Counter(_) => "tp_btf/net_dev_start_xmit reading conntrack",
                Rows::Nat(_) => "eBPF masquerading: its own counters since the lab came up",
            }
        );
        width::write_fill(&mut out, &started, "", "")?;
    }
    // Counting in one namespace (a lab's node) ends when it goes.
    let gone = args
        .netns
        .as_deref()
        .map(|n| gone::netns(&ns, &format!("namespace `{n}`")))
        .transpose()?;
    let stop = Stop::new().duration(args.duration).gone(gone.clone());
    // The counters, or why they are no more: they went with the namespace
    // (`lab down` removes eBPF masquerading's pins, then the namespace).
    let mut went: Option<String> = None;
    let mut read = || -> anyhow::Result<Option<Vec<MasqRow>>> {
        let e = match counter.read() {
            Ok(rows) => return Ok(Some(name_pods(rows, ino))),
            Err(e) => e,
        };
        if matches!(counter, Rows::Nat(_)) && !nat::present(ino) {
            // Unpinned: the namespace goes next (a second at most).
            let settle = Stop::new().duration(Some(Duration::from_secs(1)));
            let mut why = gone.as_ref().and_then(Gone::check);
            while why.is_none() && gone.is_some() && !settle.wait(Duration::from_millis(20)) {
                why = gone.as_ref().and_then(Gone::check);
            }
            went = Some(why.unwrap_or_else(|| {
                format!(
                    "eBPF masquerading was removed from {}",
                    args.netns.as_deref().unwrap_or("this namespace")
                )
            }));
            return Ok(None);
        }
        if let Some(why) = gone.as_ref().and_then(Gone::check) {
            went = Some(why);
            return Ok(None);
        }
        Err(e)
    };
    let interval = args.interval.unwrap_or(Duration::from_secs(1));
    let mut next = stop.started() + interval;
    loop {
        // Without --watch there is nothing to do until the stop.
        let wait = match args.watch {
            true => next.saturating_duration_since(Instant::now()),
            false => Duration::from_secs(3600),
        };
        if stop.wait(wait) {
            break;
        }
        if args.watch && Instant::now() >= next {
            let Some(rows) = read()? else {
                break;
            };
            match args.output {
                OutputFormat::Text => writeln!(
                    out,
                    "── after {:.0}s ──\n{}",
                    stop.elapsed().as_secs_f64(),
                    render(&rows)
                )?,
                OutputFormat::Json => {
                    for r in &rows {
                        writeln!(out, "{}", serde_json::to_string(r)?)?;
                    }
                }
            }
            next = Instant::now() + interval;
        }
    }
    match (read()?, args.output) {
        (Some(rows), OutputFormat::Text) => writeln!(out, "{}", render(&rows))?,
        (Some(rows), OutputFormat::Json) => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        (None, _) => {}
    }
    out.flush()?;
    let why = match stop.why() {
        Some(Why::Gone(why)) => Some(why),
        _ => went,
    };
    if let Some(why) = why {
        eprintln!(
            "{}",
            width::fill(&format!("the count stopped: {why}"), "", "  ")
        );
    }
    Ok(Outcome::Success)
}

/// `labctl masq nat-table`.
fn nat_table(netns: Option<&str>, output: OutputFormat) -> anyhow::Result<Outcome> {
    privilege::require("masq nat-table")?;
    let ns = open_netns(netns)?;
    let ino = ns.inode()?;
    if !nat::present(ino) {
        anyhow::bail!(
            "no eBPF masquerading in {}; bring a lab up with it: `sudo labctl lab up basic --masq ebpf`",
            netns.unwrap_or("this namespace")
        );
    }
    let mut table = nat::table(ino)?;
    let pods = names::pods_by_addr(ino);
    for e in &mut table.entries {
        e.src_pod = pods.get(&e.src).map(ToString::to_string);
        e.dst_pod = pods.get(&e.dst).map(ToString::to_string);
    }
    let mut out = anstream::stdout().lock();
    if output == OutputFormat::Json {
        writeln!(out, "{}", serde_json::to_string(&table)?)?;
        return Ok(Outcome::Success);
    }
    write_nat_table(&mut out, &table)?;
    Ok(Outcome::Success)
}

/// `labctl masq config`: new eBPF masquerading settings for a running lab.
fn config(args: MasqConfigArgs) -> anyhow::Result<Outcome> {
    privilege::require("masq config")?;
    let lab = match args.lab {
        Some(lab) => lab,
        None => {
            let ebpf: Vec<_> = Lab::all()?
                .into_iter()
                .filter(|l| l.plan.options.masq == MasqMode::Ebpf)
                .map(|l| l.name().to_owned())
                .collect();
            match ebpf.as_slice() {
                [one] => one.clone(),
                [] => anyhow::bail!(UsageError(
                    "no lab masquerades with eBPF; build one with `labctl lab up basic --masq ebpf`"
                        .into()
                )),
                several => anyhow::bail!(UsageError(format!(
                    "several labs masquerade with eBPF ({}); say which with --lab",
                    several.join(", ")
                ))),
            }
        }
    };
    let options = lab::reconfigure_nat(&lab, args.nat_ports, args.nat_udp_timeout)
        .with_context(|| format!("cannot change eBPF masquerading in lab `{lab}`"))?;
    let (lo, hi) = options
        .nat_ports
        .unwrap_or((lab_common::nat::PORT_MIN, lab_common::nat::PORT_MAX));
    let timeout = options
        .nat_udp_timeout
        .unwrap_or(lab_common::nat::UDP_TIMEOUT_S);
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"lab": lab, "nat_ports": [lo, hi], "nat_udp_timeout": timeout})
        )?,
        OutputFormat::Text => width::write_fill(
            &mut out,
            &format!(
                "lab `{lab}`: eBPF masquerading reloaded with ports {lo}-{hi} and a {timeout} s UDP timeout (the NAT table starts empty)"
            ),
            "",
            "",
        )?,
    }
    Ok(Outcome::Success)
}
