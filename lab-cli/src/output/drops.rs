//! How `labctl trace` prints: a line per drop (coloured on a terminal,
//! with explanations on request) or NDJSON, the summary table, and the
//! explanation of a reason (also `labctl explain`).

use std::{collections::BTreeSet, io::Write, time::Duration};

use crate::{
    drops::{
        explain,
        record::DropRecord,
        session::{Sink, Summary},
    },
    ebpf::drop_tracer::Hook,
};

/// Lines for people: one per drop, then a table.
pub struct TextSink<W: Write> {
    out: W,
    /// `--summary`: only tables, every `--interval`.
    summary_mode: bool,
    /// `--explain`: each reason explained the first time it is seen.
    explain: bool,
    explained: BTreeSet<String>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, summary_mode: bool, explain: bool) -> Self {
        Self {
            out,
            summary_mode,
            explain,
            explained: BTreeSet::new(),
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn started(&mut self, hook: Hook) -> std::io::Result<()> {
        if !self.summary_mode {
            writeln!(
                self.out,
                "tracing packet drops ({}); Ctrl-C to stop",
                hook.describe()
            )?;
        }
        Ok(())
    }

    fn drop_seen(&mut self, record: &DropRecord) -> std::io::Result<()> {
        writeln!(self.out, "{}", record.colored_line())?;
        for frame in record.stack.iter().flatten() {
            writeln!(self.out, "      {frame}")?;
        }
        if self.explain && self.explained.insert(record.reason.clone()) {
            write_explanation(&mut self.out, &record.reason, "    ")?;
        }
        Ok(())
    }

    fn batch_done(&mut self) -> std::io::Result<()> {
        // `out` may be buffered (one write per batch instead of per line):
        // show each batch as it comes.
        self.out.flush()
    }

    fn progress(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        write_table(&mut self.out, summary, elapsed, false)
    }

    fn finished(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        write_table(&mut self.out, summary, elapsed, true)?;
        if self.explain {
            for reason in summary.by_reason.keys() {
                if self.explained.insert(reason.clone()) {
                    writeln!(self.out, "{reason}:")?;
                    write_explanation(&mut self.out, reason, "  ")?;
                }
            }
        }
        self.out.flush()
    }
}

/// NDJSON: an object per drop, then the summary object.
pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer, back (e.g. the bytes a test collected).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn started(&mut self, _: Hook) -> std::io::Result<()> {
        Ok(())
    }

    fn drop_seen(&mut self, record: &DropRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    fn batch_done(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn progress(&mut self, _: &Summary, _: Duration) -> std::io::Result<()> {
        Ok(())
    }

    fn finished(&mut self, summary: &Summary, _: Duration) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, summary)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

fn write_table(
    out: &mut impl Write,
    s: &Summary,
    elapsed: Duration,
    last: bool,
) -> std::io::Result<()> {
    let title = if last { "summary" } else { "so far" };
    writeln!(
        out,
        "── {title} after {:.1}s: {} drops, {} events delivered, {} lost ──",
        elapsed.as_secs_f64(),
        s.total(),
        s.events,
        s.lost
    )?;
    let mut by_reason: Vec<_> = s.by_reason.iter().collect();
    by_reason.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    writeln!(out, "{:>10}  REASON", "COUNT")?;
    for (reason, n) in by_reason {
        writeln!(out, "{n:>10}  {reason}")?;
    }
    let mut by_loc: Vec<_> = s.by_location.iter().collect();
    by_loc.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if !by_loc.is_empty() {
        writeln!(out, "{:>10}  LOCATION", "COUNT")?;
        for (loc, n) in by_loc.into_iter().take(10) {
            writeln!(out, "{n:>10}  {loc}")?;
        }
    }
    Ok(())
}

/// Writes the explanation of `reason`, or says there is none.
pub fn write_explanation(out: &mut impl Write, reason: &str, indent: &str) -> std::io::Result<()> {
    match explain::lookup(reason) {
        Some(e) => {
            writeln!(out, "{indent}what: {}", e.meaning)?;
            writeln!(out, "{indent}why:  {}", e.causes)?;
            for c in e.commands {
                writeln!(out, "{indent}try:  {c}")?;
            }
        }
        None => writeln!(
            out,
            "{indent}(no explanation for {reason} yet; the name comes from this kernel's BTF)"
        )?,
    }
    Ok(())
}
