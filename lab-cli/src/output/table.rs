//! Aligned text tables for the commands (tabwriter: elastic tabstops,
//! streaming, fast enough for a 100,000-row conntrack table, which
//! comfy-table was not: 5x slower than `conntrack -L`).

use std::io::{self, Write};

use tabwriter::TabWriter;

use super::width;

/// Writes `header` and `rows` as columns separated by two spaces.
pub fn write<W: Write>(
    out: W,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> io::Result<()> {
    let mut tw = TabWriter::new(out).padding(2);
    writeln!(tw, "{}", header.join("\t"))?;
    for row in rows {
        writeln!(tw, "{}", row.join("\t"))?;
    }
    tw.flush()
}

/// The same, into a String (for tests and small tables).
pub fn render(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail.
    if write(&mut buf, header, rows).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The same, fitted to 80 columns: where the table is wider, each row
/// becomes a record instead: its first cell on a line, then `HEADER value`
/// for the others, filled and indented.
pub fn render_fit(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let table = render(header, rows.iter().cloned());
    if table.lines().all(|l| width::width(l) <= width::COLUMNS) {
        return table;
    }
    let mut out = String::new();
    for row in &rows {
        let mut cells = row.iter();
        let first = cells.next().map_or("", String::as_str);
        out.push_str(&width::fill(first, "", "  "));
        out.push('\n');
        let rest: Vec<String> = header
            .iter()
            .skip(1)
            .zip(cells)
            .map(|(h, c)| format!("{h} {c}"))
            .collect();
        if !rest.is_empty() {
            out.push_str(&width::fill(&rest.join(", "), "  ", "    "));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let text = render(
            &["A", "LONGER"],
            [vec!["xx".into(), "1".into()], vec!["y".into(), "22".into()]],
        );
        assert_eq!(text, "A   LONGER\nxx  1\ny   22\n");
    }

    #[test]
    fn a_table_too_wide_becomes_records() {
        let narrow = render_fit(&["A", "B"], [vec!["x".into(), "1".into()]]);
        assert_eq!(narrow, "A   B\nx   1\n");
        let wide = render_fit(&["NAME", "WHAT"], [vec!["n".into(), "w".repeat(90)]]);
        assert!(wide.starts_with("n\n  WHAT"), "{wide}");
        assert!(
            wide.lines().all(|l| width::width(l) <= width::COLUMNS),
            "{wide}"
        );
    }
}
