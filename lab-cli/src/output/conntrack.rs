//! The human table of conntrack entries, like `conntrack -L` but with NAT
//! and counters in their own columns. Columns have fixed widths (wide
//! enough for IPv4 tuples; the variable-length flags come last) so rows are
//! written as they arrive: a 100,000-entry table streams in constant
//! memory instead of being measured first.

use std::io::{self, Write};

use crate::conntrack::entry::{CtEntry, Source};

/// Writes a header, then one line per entry.
pub struct TableWriter<W: Write> {
    out: W,
    /// `--source all`: a SEEN BY column.
    joined: bool,
    /// Each row is formatted here first: padding a String is a push per
    /// fill character, padding straight into an io::Write a call per char.
    line: String,
}

impl<W: Write> TableWriter<W> {
    pub fn new(mut out: W, joined: bool) -> io::Result<Self> {
        write!(
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
        )?;
        if joined {
            write!(out, "{:<15} ", "SEEN BY")?;
        }
        writeln!(out, "FLAGS")?;
        Ok(Self {
            out,
            joined,
            line: String::with_capacity(256),
        })
    }

    pub fn row(&mut self, e: &CtEntry, seen: Option<&[Source]>) -> io::Result<()> {
        self.line.clear();
        self.format(e, seen).map_err(io::Error::other)?;
        self.out.write_all(self.line.as_bytes())
    }

    fn format(&mut self, e: &CtEntry, seen: Option<&[Source]>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let line = &mut self.line;
        // Pads what was written since `start` to `width` characters.
        fn pad(line: &mut String, start: usize, width: usize) {
            let used = line[start..].chars().count();
            for _ in used..width {
                line.push(' ');
            }
            line.push(' ');
        }
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
        e.orig.write_to(line)?;
        pad(line, start, 46);
        let start = line.len();
        e.reply.write_to(line)?;
        pad(line, start, 46);
        let start = line.len();
        match e.nat() {
            Some(n) => line.push_str(&n),
            None => line.push('-'),
        }
        pad(line, start, 28);
        write!(line, "{:<5} {:<4} ", e.mark, e.zone)?;
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
        if self.joined {
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

/// The whole table as a String (tests, small tables).
pub fn render(rows: &[(&CtEntry, Option<&[Source]>)]) -> String {
    let mut buf = Vec::new();
    let joined = rows.iter().any(|(_, s)| s.is_some());
    let result = TableWriter::new(&mut buf, joined)
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
        let text = render(&[(&e, None)]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("10.244.1.2:40000 → 1.1.1.1:53"), "{row}");
        assert!(row.contains("SNAT as 172.18.0.2:40000"), "{row}");
        assert!(
            row.ends_with("SEEN_REPLY,CONFIRMED,SRC_NAT_DONE,DST_NAT_DONE"),
            "{row}"
        );
        let joined = render(&[(&e, Some(&[Source::Netfilter][..]))]);
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
}
