//! `labctl conntrack top`: a live view of the flows sorted by bytes or
//! packets (ratatui), refreshed in place; q, Esc or Ctrl-C quits and the
//! terminal is restored (also on error or panic, by ratatui's hooks).

use std::{
    collections::HashMap,
    io::IsTerminal as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Row, Table},
};

use crate::{
    cli::conntrack::{CtSort, CtSource},
    conntrack::{
        acct::AcctGuard,
        entry::{CtEntry, Tuple},
        filter::CtFilter,
        join, sources,
    },
    kernel::{interrupt::Stop, names::PodRef, netns::NetNs, privilege},
    lab::names::{self, lookup_netns_opt},
    output::{conntrack::describe_named, exit::Outcome},
};

fn read(ns: Option<&NetNs>, source: CtSource) -> anyhow::Result<Vec<CtEntry>> {
    Ok(match source {
        CtSource::Netfilter => sources::netfilter(ns, &CtFilter::default())?,
        CtSource::Bpf => sources::bpf(ns)?,
        CtSource::Cilium => sources::cilium()?,
        CtSource::All => join::join(
            sources::netfilter(ns, &CtFilter::default())?,
            sources::bpf(ns)?,
        )
        .into_iter()
        .map(|(e, _)| e)
        .collect(),
    })
}

/// Sorts flows for display, biggest first.
pub fn sort(entries: &mut [CtEntry], by: CtSort) {
    entries.sort_by_key(|e| {
        let (packets, bytes) = e.totals();
        std::cmp::Reverse(match by {
            CtSort::Bytes => (bytes, packets),
            CtSort::Packets => (packets, bytes),
        })
    });
}

/// One flow on screen: its totals and its rates since the last refresh.
#[derive(Debug, Clone)]
pub struct FlowRow {
    pub entry: CtEntry,
    pub packets_per_s: f64,
    pub bytes_per_s: f64,
}

/// Turns successive reads into rates per flow.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<(u8, Tuple), (u64, u64)>,
    at: Option<Instant>,
}

impl Rates {
    /// Rows for `entries` read at `now`: a flow seen for the first time
    /// has a rate of 0 until the next refresh.
    pub fn rows(&mut self, entries: Vec<CtEntry>, now: Instant) -> Vec<FlowRow> {
        let secs = self
            .at
            .map_or(0.0, |at| now.duration_since(at).as_secs_f64());
        let mut last = HashMap::with_capacity(entries.len());
        let rows = entries
            .into_iter()
            .map(|entry| {
                let (packets, bytes) = entry.totals();
                let key = entry.key();
                let (packets_per_s, bytes_per_s) = match self.last.get(&key) {
                    Some(&(p, b)) if secs > 0.0 => (
                        packets.saturating_sub(p) as f64 / secs,
                        bytes.saturating_sub(b) as f64 / secs,
                    ),
                    _ => (0.0, 0.0),
                };
                last.insert(key, (packets, bytes));
                FlowRow {
                    entry,
                    packets_per_s,
                    bytes_per_s,
                }
            })
            .collect();
        self.last = last;
        self.at = Some(now);
        rows
    }
}

/// `1.2 kB`, `3.4 MB`: one decimal, so a cell keeps its width.
fn human(bytes: f64) -> String {
    let format = humansize::FormatSizeOptions::from(humansize::DECIMAL).decimal_places(1);
    // Rates are fractional; a byte more or less does not show.
    humansize::format_size(bytes.round() as u64, format)
}

/// The keys, shown under the table when asked for with `?`.
const HELP: &str = "keys: b sort by bytes · p sort by packets · ? help · q / Esc / Ctrl-C quit";

/// Draws one screen: a title, the table, and a key line (with `note`
/// after it, unless the keys are shown). The rate and total columns are in
/// the unit the view is sorted by. Fits 80 columns; wider terminals also
/// get the NAT column.
pub fn draw(
    frame: &mut Frame,
    (title, note): (&str, &str),
    rows: &[FlowRow],
    by: CtSort,
    help: bool,
    pods: &HashMap<Ipv4Addr, PodRef>,
) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Line::from(title.to_owned()), head);
    let with_nat = frame.area().width >= 110;
    let cells = rows.iter().map(|r| {
        let e = &r.entry;
        let (packets, bytes) = e.totals();
        let mut cells = vec![
            e.proto.clone(),
            e.state.clone().unwrap_or_default(),
            describe_named(&e.orig, pods),
        ];
        if with_nat {
            cells.push(e.nat().unwrap_or_default());
        }
        match by {
            CtSort::Bytes => {
                cells.extend([format!("{}/s", human(r.bytes_per_s)), human(bytes as f64)]);
            }
            CtSort::Packets => {
                cells.extend([format!("{:.0}/s", r.packets_per_s), packets.to_string()]);
            }
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Min(37),
    ];
    let mut header = vec!["PROTO", "STATE", "FLOW"];
    if with_nat {
        widths.push(Constraint::Min(24));
        header.push("NAT");
    }
    widths.extend([Constraint::Length(10), Constraint::Length(9)]);
    header.extend(match by {
        CtSort::Bytes => ["BYTES/S", "BYTES"],
        CtSort::Packets => ["PKTS/S", "PACKETS"],
    });
    let table = Table::new(cells, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)));
    frame.render_widget(table, body);
    let foot_text = if help {
        HELP.to_owned()
    } else {
        format!("? for keys{note}")
    };
    frame.render_widget(
        Line::from(foot_text).style(Style::new().add_modifier(Modifier::DIM)),
        foot,
    );
}

pub fn run(
    netns_name: Option<&str>,
    source: CtSource,
    by: CtSort,
    interval: Duration,
) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("conntrack top")?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "labctl conntrack top needs a terminal; in scripts use `labctl conntrack list --output json`"
        );
    }
    let ns = lookup_netns_opt(netns_name)?;
    // Fail before taking over the terminal if the source cannot be read.
    read(ns.as_ref(), source)?;
    // Netfilter counts nothing per flow without accounting: on for the view,
    // back off at the end (if it was off).
    let acct = match source {
        CtSource::Netfilter | CtSource::All => Some(AcctGuard::enable(ns.as_ref())?),
        _ => None,
    };
    let acct_note = if acct.as_ref().is_some_and(AcctGuard::turned_on) {
        " · accounting is on for this view: older flows count from now"
    } else {
        ""
    };
    let mut by = by;
    let mut help = false;
    let mut rates = Rates::default();
    let mut pods = names::PodAddrs::new(match &ns {
        Some(ns) => ns.inode()?,
        None => crate::kernel::netns::current_inode()?,
    });
    let stop = Stop::new();
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            let mut entries = read(ns.as_ref(), source)?;
            sort(&mut entries, by);
            let rows = rates.rows(entries, Instant::now());
            let title = format!(
                "conntrack top: {} flows{}, by {}, every {:.1}s",
                rows.len(),
                netns_name.map(|n| format!(" in {n}")).unwrap_or_default(),
                match by {
                    CtSort::Bytes => "bytes",
                    CtSort::Packets => "packets",
                },
                interval.as_secs_f64(),
            );
            let pods = pods.get();
            terminal.draw(|f| draw(f, (&title, acct_note), &rows, by, help, pods))?;
            // The terminal's keys come through crossterm's own poll: look
            // at the stop (SIGTERM; Ctrl-C is a key in raw mode) every
            // 100 ms between them.
            let deadline = Instant::now() + interval;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if stop.stopped() {
                    return Ok(());
                }
                if !event::poll(left.min(Duration::from_millis(100)))? {
                    continue;
                }
                let Event::Key(k) = event::read()? else {
                    continue;
                };
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(());
                    }
                    KeyCode::Char('b') => by = CtSort::Bytes,
                    KeyCode::Char('p') => by = CtSort::Packets,
                    KeyCode::Char('?' | 'h') => help = !help,
                    _ => continue,
                }
                break;
            }
        }
    })();
    ratatui::restore();
    drop(acct);
    result?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::conntrack::entry::{Counters, tests::udp_snat};

    fn screen(width: u16, rows: &[FlowRow], by: CtSort, help: bool) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, 6)).unwrap();
        terminal
            .draw(|f| draw(f, ("title", ""), rows, by, help, &HashMap::new()))
            .unwrap();
        terminal
            .backend()
            .buffer()
            .content()
            .chunks(usize::from(width))
            .map(|row| row.iter().map(|c| c.symbol()).collect())
            .collect()
    }

    #[test]
    fn biggest_flows_come_first_with_rates_in_human_units_at_80_columns() {
        let mut small = udp_snat();
        small.orig_counters = Some(Counters {
            packets: 9,
            bytes: 100,
        });
        let mut big = udp_snat();
        big.orig.sport = Some(40001);
        big.orig_counters = Some(Counters {
            packets: 2,
            bytes: 5000,
        });
        let mut entries = vec![small, big];
        sort(&mut entries, CtSort::Bytes);
        assert_eq!(entries[0].orig.sport, Some(40001));
        let mut rates = Rates::default();
        let t0 = Instant::now();
        rates.rows(entries.clone(), t0);
        // One second later the big flow moved 2,000,000 more bytes.
        entries[0].orig_counters = Some(Counters {
            packets: 1002,
            bytes: 2_005_000,
        });
        let rows = rates.rows(entries.clone(), t0 + Duration::from_secs(1));
        assert_eq!(rows[0].bytes_per_s, 2_000_000.0);
        assert_eq!(rows[0].packets_per_s, 1000.0);
        let s = screen(80, &rows, CtSort::Bytes, false);
        assert!(s[1].contains("PROTO") && s[1].contains("BYTES/S"), "{s:#?}");
        assert!(s[2].contains("10.244.1.2:40001 → 1.1.1.1:53"), "{s:#?}");
        assert!(s[2].contains("2 MB/s") && s[2].contains("2 MB"), "{s:#?}");
        let p = screen(80, &rows, CtSort::Packets, false);
        assert!(p[1].contains("PKTS/S") && p[2].contains("1000/s"), "{p:#?}");
        assert!(!s[1].contains("NAT"), "no room for NAT at 80 columns");
        assert!(s[5].contains("? for keys"), "{s:#?}");
        let wide = screen(140, &rows, CtSort::Bytes, true);
        assert!(
            wide[1].contains("NAT") && wide[2].contains("SNAT as"),
            "{wide:#?}"
        );
        assert!(wide[5].contains("q / Esc"), "{wide:#?}");
        sort(&mut entries, CtSort::Packets);
        assert_eq!(entries[0].orig.sport, Some(40001));
    }
}
