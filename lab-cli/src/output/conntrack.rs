//! The human table of conntrack entries, like `conntrack -L` but with NAT
//! and counters in their own columns. Columns have fixed widths (wide
//! enough for IPv4 tuples; the variable-length flags come last) so rows are
//! written as they arrive: a 100,000-entry table streams in constant
//! memory instead of being measured first.

use std::{
    collections::HashMap,
    io::{self, Write},
    net::{IpAddr, Ipv4Addr},
};

use super::width;
use crate::{
    conntrack::{
        entry::{CtEntry, Source, Tuple},
        netlink::{CpuStats, EventKind, TableSize},
    },
    kernel::names::PodRef,
};

/// Which columns: what fits 80 columns, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// PROTO, STATE, FLOW (the original direction), NAT: 80 columns for
    /// IPv4 flows.
    Compact,
    /// Every field, as `conntrack -L -o extended` has them (`--wide`).
    Wide,
}

/// Writes a header, then one line per entry.
pub struct TableWriter<W: Write> {
    out: W,
    layout: Layout,
    /// `--source all`: a SEEN BY column.
    joined: bool,
    /// Each row is formatted here first: padding a String is a push per
    /// fill character, padding straight into an io::Write a call per char.
    line: String,
    /// Pods by address: the compact table shows `NS/NAME:PORT` for them,
    /// as `hubble observe` does (the wide table and JSON keep addresses).
    pods: HashMap<Ipv4Addr, PodRef>,
}

/// Pads what was written to `line` since `start` to `width` characters.
fn pad(line: &mut String, start: usize, width: usize) {
    let used = line[start..].chars().count();
    for _ in used..width {
        line.push(' ');
    }
    line.push(' ');
}

/// An endpoint, by its pod's name where it is a known pod's address.
fn write_endpoint(
    line: &mut String,
    addr: &IpAddr,
    port: Option<u16>,
    pods: &HashMap<Ipv4Addr, PodRef>,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    match (addr, port) {
        (IpAddr::V4(a), Some(p)) if pods.contains_key(a) => write!(line, "{}:{p}", pods[a]),
        (IpAddr::V4(a), None) if pods.contains_key(a) => write!(line, "{}", pods[a]),
        _ => Tuple::write_endpoint(line, addr, port),
    }
}

/// `src:port → dst:port`, pods by name (`default/web:80`), as the text
/// views (watch, top) show a flow.
pub fn describe_named(t: &Tuple, pods: &HashMap<Ipv4Addr, PodRef>) -> String {
    let mut line = String::new();
    // Writing into a String cannot fail.
    write_tuple(&mut line, t, false, pods).ok();
    line
}

/// A tuple's source and destination (ICMP type/code after it), named.
fn describe_parts(t: &Tuple, pods: &HashMap<Ipv4Addr, PodRef>) -> (String, String) {
    use std::fmt::Write as _;
    let (mut src, mut dst) = (String::new(), String::new());
    // Writing into a String cannot fail.
    write_endpoint(&mut src, &t.src, t.sport, pods).ok();
    write_endpoint(&mut dst, &t.dst, t.dport, pods).ok();
    if let (Some(ty), Some(code)) = (t.icmp_type, t.icmp_code) {
        write!(dst, " {ty}/{code}").ok();
    }
    (src, dst)
}

/// `src → dst` as one piece padded to `column` where it fits that column,
/// else `src →` and `dst` as two (a line break may fall between).
fn flow_pieces((src, dst): &(String, String), column: usize) -> Vec<String> {
    let flow = format!("{src} → {dst}");
    if width::width(&flow) <= column {
        vec![width::pad(&flow, column)]
    } else {
        vec![format!("{src} →"), dst.clone()]
    }
}

/// The NAT cell as pieces: `SNAT as A,` and `DNAT to B` may go on lines of
/// their own.
fn nat_pieces(e: &CtEntry) -> Vec<String> {
    let Some(nat) = e.nat() else {
        return Vec::new();
    };
    let parts: Vec<&str> = nat.split(", ").collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i < last {
                format!("{p},")
            } else {
                (*p).to_owned()
            }
        })
        .collect()
}

/// A conntrack event as `labctl conntrack watch` prints it: `[NEW]`,
/// protocol, state, the flow (pods by name), its NAT, and whether a resync
/// found it; continued under the protocol where it does not fit 80 columns.
pub fn write_event(
    out: &mut (impl Write + ?Sized),
    kind: EventKind,
    e: &CtEntry,
    resync: bool,
    pods: &HashMap<Ipv4Addr, PodRef>,
) -> io::Result<()> {
    let mut pieces = vec![
        width::pad(&format!("[{kind:?}]").to_uppercase(), 9),
        width::pad(&e.proto, 5),
        width::pad(e.state.as_deref().unwrap_or("-"), 11),
    ];
    let (src, dst) = describe_parts(&e.orig, pods);
    let flow = format!("{src} → {dst}");
    if width::width(&flow) <= width::COLUMNS - 10 {
        pieces.push(flow);
    } else {
        pieces.extend([format!("{src} →"), dst]);
    }
    pieces.extend(nat_pieces(e));
    if resync {
        pieces.push("(found by resync)".into());
    }
    writeln!(out, "{}", width::pieces(&pieces, 10))
}

/// `labctl conntrack stats` as text: the table's fill, then each CPU's
/// counters (as `conntrack -S`), continued under the first counter.
pub fn write_stats(
    out: &mut impl Write,
    netns: Option<&str>,
    size: &TableSize,
    cpus: &[CpuStats],
) -> io::Result<()> {
    width::write_fill(
        out,
        &format!(
            "conntrack table{}: {} entries, max {}",
            netns.map(|n| format!(" in {n}")).unwrap_or_default(),
            size.entries,
            size.max
        ),
        "",
        "  ",
    )?;
    for c in cpus {
        let fields: Vec<String> = c.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        width::write_fill(
            out,
            &fields.join(" "),
            &format!("cpu={:<4} ", c.cpu),
            &" ".repeat(9),
        )?;
    }
    Ok(())
}

/// A tuple as the table shows it: ICMP's type and code kept short (`8/0`),
/// and its id only in the wide table, so they stay inside the column.
fn write_tuple(
    line: &mut String,
    t: &Tuple,
    with_id: bool,
    pods: &HashMap<Ipv4Addr, PodRef>,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    write_endpoint(line, &t.src, t.sport, pods)?;
    line.push_str(" → ");
    write_endpoint(line, &t.dst, t.dport, pods)?;
    if let (Some(ty), Some(code)) = (t.icmp_type, t.icmp_code) {
        write!(line, " {ty}/{code}")?;
    }
    if let Some(id) = t.icmp_id.filter(|_| with_id) {
        write!(line, " id {id}")?;
    }
    Ok(())
}

/// What a source cannot know (the eBPF tracker and Cilium's maps have no
/// mark, zone or netfilter flags) is left blank, not shown as 0.
fn knows_netfilter_fields(e: &CtEntry) -> bool {
    e.source == Source::Netfilter
}

impl<W: Write> TableWriter<W> {
    pub fn new(mut out: W, layout: Layout, joined: bool) -> io::Result<Self> {
        match layout {
            Layout::Compact => write!(
                out,
                "{:<5} {:<11} {:<37} ",
                "PROTO", "STATE", "FLOW (original direction)"
            )?,
            Layout::Wide => write!(
                out,
                "{:<7} {:<11} {:<7} {:<46} {:<46} {:<28} {:<5} {:<4} {:<15} {:<21} ",
                "PROTO",
                "STATE",
                "TIMEOUT",
                "ORIGINAL",
                "REPLY",
                "NAT",
                "MARK",
                "ZONE",
                "PACKETS",
                "BYTES"
            )?,
        }
        if joined {
            write!(out, "{:<15} ", "SEEN BY")?;
        }
        match layout {
            Layout::Compact => writeln!(out, "NAT")?,
            Layout::Wide => writeln!(out, "FLAGS")?,
        }
        Ok(Self {
            out,
            layout,
            joined,
            line: String::with_capacity(256),
            pods: HashMap::new(),
        })
    }

    /// Names these pods' addresses in the compact table.
    pub fn with_pods(mut self, pods: HashMap<Ipv4Addr, PodRef>) -> Self {
        self.pods = pods;
        self
    }

    pub fn row(&mut self, e: &CtEntry, seen: Option<&[Source]>) -> io::Result<()> {
        self.line.clear();
        let written = match self.layout {
            Layout::Compact => self.compact(e, seen),
            Layout::Wide => self.wide(e, seen),
        };
        written.map_err(io::Error::other)?;
        self.out.write_all(self.line.as_bytes())
    }

    fn compact(&mut self, e: &CtEntry, seen: Option<&[Source]>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let joined = self.joined;
        let line = &mut self.line;
        write!(
            line,
            "{:<5} {:<11} ",
            e.proto,
            e.state.as_deref().unwrap_or("")
        )?;
        let start = line.len();
        write_tuple(line, &e.orig, false, &self.pods)?;
        pad(line, start, 37);
        if joined {
            seen_by(line, seen)?;
        }
        if let Some(n) = e.nat() {
            line.push_str(&n);
        }
        while line.ends_with(' ') {
            line.pop();
        }
        // Bytes bound columns from above: most rows need no measuring.
        if line.len() > width::COLUMNS && width::width(line) > width::COLUMNS {
            let wrapped = self.compact_wrapped(e, seen);
            self.line = wrapped;
        }
        self.line.push('\n');
        Ok(())
    }

    /// A compact row wider than 80 columns (IPv6, long pod names, NAT and
    /// SEEN BY together): continued on lines indented under FLOW.
    fn compact_wrapped(&self, e: &CtEntry, seen: Option<&[Source]>) -> String {
        let mut pieces = vec![format!(
            "{:<5} {:<11}",
            e.proto,
            e.state.as_deref().unwrap_or("")
        )];
        pieces.extend(flow_pieces(&describe_parts(&e.orig, &self.pods), 37));
        if self.joined {
            let mut cell = String::new();
            // Writing into a String cannot fail.
            seen_by(&mut cell, seen).ok();
            pieces.push(cell);
        }
        pieces.extend(nat_pieces(e));
        width::pieces(&pieces, 18)
    }

    fn wide(&mut self, e: &CtEntry, seen: Option<&[Source]>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let joined = self.joined;
        let line = &mut self.line;
        let known = knows_netfilter_fields(e);
        write!(
            line,
            "{:<7} {:<11} ",
            e.proto,
            e.state.as_deref().unwrap_or("-")
        )?;
        let start = line.len();
        match e.timeout {
            Some(t) => write!(line, "{t}")?,
            None => line.push('-'),
        }
        pad(line, start, 7);
        let start = line.len();
        let none = HashMap::new();
        write_tuple(line, &e.orig, true, &none)?;
        pad(line, start, 46);
        let start = line.len();
        write_tuple(line, &e.reply, true, &none)?;
        pad(line, start, 46);
        let start = line.len();
        match e.nat() {
            Some(n) => line.push_str(&n),
            None => line.push('-'),
        }
        pad(line, start, 28);
        if known {
            write!(line, "{:<5} {:<4} ", e.mark, e.zone)?;
        } else {
            write!(line, "{:<5} {:<4} ", "", "")?;
        }
        let start = line.len();
        match (e.orig_counters, e.reply_counters) {
            (Some(o), Some(r)) => write!(line, "{} ⇄ {}", o.packets, r.packets)?,
            _ => line.push('-'),
        }
        pad(line, start, 15);
        let start = line.len();
        match (e.orig_counters, e.reply_counters) {
            (Some(o), Some(r)) => write!(line, "{} ⇄ {}", o.bytes, r.bytes)?,
            _ => line.push('-'),
        }
        pad(line, start, 21);
        if joined {
            seen_by(line, seen)?;
        }
        if e.flags.is_empty() {
            line.push('-');
        } else {
            for (i, f) in e.flags.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(f);
            }
        }
        line.push('\n');
        Ok(())
    }
}

/// `--source all`'s SEEN BY cell: `netfilter+bpf`, `bpf only`, ...
fn seen_by(line: &mut String, seen: Option<&[Source]>) -> std::fmt::Result {
    use std::fmt::Write as _;
    let start = line.len();
    let names: Vec<String> = seen
        .unwrap_or_default()
        .iter()
        .map(|s| format!("{s:?}").to_lowercase())
        .collect();
    if names.len() == 1 {
        write!(line, "{} only", names[0])?;
    } else {
        line.push_str(&names.join("+"));
    }
    pad(line, start, 15);
    Ok(())
}

/// The whole table as a String (tests, small tables).
pub fn render(rows: &[(&CtEntry, Option<&[Source]>)], layout: Layout) -> String {
    let mut buf = Vec::new();
    let joined = rows.iter().any(|(_, s)| s.is_some());
    let result = TableWriter::new(&mut buf, layout, joined)
        .and_then(|mut t| rows.iter().try_for_each(|(e, s)| t.row(e, *s)));
    match result {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::entry::tests::udp_snat;

    #[test]
    fn rows_spell_out_nat_and_missing_counters() {
        let e = udp_snat();
        let text = render(&[(&e, None)], Layout::Wide);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("10.244.1.2:40000 → 1.1.1.1:53"), "{row}");
        assert!(row.contains("SNAT as 172.18.0.2:40000"), "{row}");
        assert!(
            row.ends_with("SEEN_REPLY,CONFIRMED,SRC_NAT_DONE,DST_NAT_DONE"),
            "{row}"
        );
        let joined = render(&[(&e, Some(&[Source::Netfilter][..]))], Layout::Wide);
        assert!(
            joined.lines().nth(1).unwrap().contains("netfilter only"),
            "{joined}"
        );
        // Columns line up: the REPLY column starts at the same offset.
        let header = text.lines().next().unwrap();
        let col = |l: &str, pat: &str| l.chars().take_while(|_| true).collect::<String>().find(pat);
        assert_eq!(
            col(header, "REPLY").map(|i| header[..i].chars().count()),
            col(row, "1.1.1.1:53 →").map(|i| row[..i].chars().count())
        );
    }

    #[test]
    fn the_default_table_fits_80_columns_and_blanks_what_a_source_cannot_know() {
        let mut e = udp_snat();
        let text = render(&[(&e, None)], Layout::Compact);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("10.244.1.2:40000 → 1.1.1.1:53"), "{row}");
        assert!(row.ends_with("SNAT as 172.18.0.2:40000"), "{row}");
        // ICMP stays in its column.
        e.proto = "icmp".into();
        e.orig.sport = None;
        e.orig.dport = None;
        e.orig.dst = "203.0.113.10".parse().unwrap();
        e.reply.src = e.orig.dst;
        e.reply.sport = None;
        e.orig.icmp_type = Some(8);
        e.orig.icmp_code = Some(0);
        e.orig.icmp_id = Some(65535);
        let text = render(&[(&e, None)], Layout::Compact);
        let row = text.lines().nth(1).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(
            header.find("NAT").map(|i| header[..i].chars().count()),
            row.find("SNAT").map(|i| row[..i].chars().count()),
            "{text}"
        );
        // A row too wide for one line goes on under FLOW.
        e.reply.src = "1.1.1.1".parse().unwrap();
        e.reply.sport = Some(53);
        let text = render(&[(&e, None)], Layout::Compact);
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "icmp              10.244.1.2 → 203.0.113.10 8/0",
                "                  SNAT as 172.18.0.2:40000, DNAT to 1.1.1.1:53"
            ],
            "{text}"
        );
        // The eBPF tracker knows no mark or zone: blank, not 0.
        let mut e = udp_snat();
        e.source = Source::Bpf;
        let wide = render(&[(&e, None)], Layout::Wide);
        let row = wide.lines().nth(1).unwrap();
        let header = wide.lines().next().unwrap();
        let mark = header.find("MARK").unwrap();
        let at = |l: &str, i: usize| l.chars().skip(i).take(10).collect::<String>();
        let col = header[..mark].chars().count();
        assert_eq!(at(row, col).trim(), "", "{wide}");
    }
}
