//! `labctl conntrack top`: a live view of the flows sorted by bytes or
//! packets (ratatui), refreshed in place; q, Esc or Ctrl-C quits and the
//! terminal is restored (also on error or panic, by ratatui's hooks).

use std::{
    io::IsTerminal as _,
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
    conntrack::{entry::CtEntry, filter::CtFilter, join, sources},
    kernel::{netns::NetNs, privilege},
    lab::names::lookup_netns_opt,
    output::exit::Outcome,
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

/// Draws one screen: a title line and the table.
pub fn draw(frame: &mut Frame, title: &str, entries: &[CtEntry]) {
    let [head, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(frame.area());
    frame.render_widget(Line::from(title.to_owned()), head);
    let rows = entries.iter().map(|e| {
        let (packets, bytes) = e.totals();
        Row::new(vec![
            e.proto.clone(),
            e.state.clone().unwrap_or_else(|| "-".into()),
            e.orig.describe(),
            e.nat().unwrap_or_default(),
            packets.to_string(),
            bytes.to_string(),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Min(30),
            Constraint::Min(20),
            Constraint::Length(10),
            Constraint::Length(14),
        ],
    )
    .header(
        Row::new(vec!["PROTO", "STATE", "FLOW", "NAT", "PACKETS", "BYTES"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    );
    frame.render_widget(table, body);
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
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            let mut entries = read(ns.as_ref(), source)?;
            sort(&mut entries, by);
            let title = format!(
                "labctl conntrack top — {} flows, sorted by {:?}, every {:.1}s{} — q quits",
                entries.len(),
                by,
                interval.as_secs_f64(),
                netns_name
                    .map(|n| format!(", netns {n}"))
                    .unwrap_or_default()
            )
            .to_lowercase();
            terminal.draw(|f| draw(f, &title, &entries))?;
            let deadline = Instant::now() + interval;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if !event::poll(left)? {
                    break;
                }
                if let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                    && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                        || k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL))
                {
                    return Ok(());
                }
            }
        }
    })();
    ratatui::restore();
    result?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::conntrack::entry::{Counters, tests::udp_snat};

    #[test]
    fn biggest_flows_come_first_on_screen() {
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
        let mut terminal = Terminal::new(TestBackend::new(120, 6)).unwrap();
        terminal.draw(|f| draw(f, "title", &entries)).unwrap();
        let screen: Vec<String> = terminal
            .backend()
            .buffer()
            .content()
            .chunks(120)
            .map(|row| row.iter().map(|c| c.symbol()).collect())
            .collect();
        assert!(screen[1].contains("PROTO"), "{screen:#?}");
        assert!(screen[2].contains("10.244.1.2:40001"), "{screen:#?}");
        assert!(screen[2].contains("5000"), "{screen:#?}");
        sort(&mut entries, CtSort::Packets);
        assert_eq!(entries[0].orig.sport, Some(40000));
    }
}
