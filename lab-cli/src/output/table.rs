//! Aligned text tables for the commands (tabwriter: elastic tabstops,
//! streaming, fast enough for a 100,000-row conntrack table, which
//! comfy-table was not: 5x slower than `conntrack -L`).

use std::io::{self, Write};

use tabwriter::TabWriter;

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
}
