//! Text views at 80 columns: every text a command prints for people goes
//! through these (filled paragraphs, lines of pieces that are never cut
//! inside, cells cut with `…`), and `tests` renders each view with long
//! realistic content and checks that no line is wider.
//!
//! Widths are display columns: ANSI styles count for nothing, wide
//! characters for two (textwrap with unicode-width).

use std::io::{self, Write};

use textwrap::{Options, WordSeparator, WordSplitter};

/// The width every text view fits.
pub const COLUMNS: usize = 80;

/// A space that joins the words of one piece (see [`pieces`]); turned back
/// into a space before anything is printed.
const GLUE: char = '\u{a0}';

/// Display columns of `s` (ANSI styles skipped).
pub fn width(s: &str) -> usize {
    textwrap::core::display_width(s)
}

pub fn options<'a>(columns: usize, first: &'a str, rest: &'a str) -> Options<'a> {
    Options::new(columns)
        .initial_indent(first)
        .subsequent_indent(rest)
        .word_separator(WordSeparator::AsciiSpace)
        // Names carry hyphens (`lab-node1`): never split there.
        .word_splitter(WordSplitter::NoHyphenation)
        // A word longer than a line (a URL, a path) is cut rather than
        // left sticking out.
        .break_words(true)
}

/// `text` filled to 80 columns, at spaces: the first line starts with
/// `first`, every other with `rest`. Line breaks in `text` are kept, and a
/// line's own indentation is kept on its continuation lines.
pub fn fill(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (n, line) in text.split('\n').enumerate() {
        let body = line.trim_start_matches(' ');
        let own = &line[..line.len() - body.len()];
        let (lead, hang) = (
            format!("{}{own}", if n == 0 { first } else { rest }),
            format!("{rest}{own}"),
        );
        if n > 0 {
            out.push('\n');
        }
        if body.is_empty() {
            out.push_str(lead.trim_end());
            continue;
        }
        let lines = textwrap::wrap(body, options(COLUMNS, &lead, &hang));
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(l.trim_end_matches([' ', GLUE]));
        }
    }
    out.replace(GLUE, " ")
}

/// Writes `text` filled (see [`fill`]) and a line break.
pub fn write_fill(
    out: &mut (impl Write + ?Sized),
    text: &str,
    first: &str,
    rest: &str,
) -> io::Result<()> {
    writeln!(out, "{}", fill(text, first, rest))
}

/// Lines of `pieces`, separated by a space, broken only between pieces
/// (a piece wider than a line is cut); lines after the first are indented
/// by `indent` columns. Padding inside a piece (`{:<14}`) is kept, and
/// trailing spaces are trimmed.
pub fn pieces<S: AsRef<str>>(pieces: &[S], indent: usize) -> String {
    let glued: Vec<String> = pieces
        .iter()
        .map(|p| p.as_ref().replace(' ', "\u{a0}"))
        .filter(|p| !p.is_empty())
        .collect();
    fill(&glued.join(" "), "", &" ".repeat(indent))
}

/// `s` cut to `max` columns, ending in `…` when cut (ANSI styles must not
/// be in `s`).
pub fn elide(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = width(c.encode_utf8(&mut [0; 4]));
        if used + w + 1 > max {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Pads `s` with spaces to `columns` display columns (styles ignored).
pub fn pad(s: &str, columns: usize) -> String {
    let w = width(s);
    format!("{s}{}", " ".repeat(columns.saturating_sub(w)))
}

#[cfg(test)]
pub(crate) mod check {
    //! The test helper: [`fits`] renders a view and checks its width.

    use super::{COLUMNS, width};

    /// Renders a view with `render`, strips its styles, and fails (naming
    /// `view` and each line) when a line is wider than 80 columns. Returns
    /// the text, unstyled, for further checks.
    ///
    /// Adding a view to the width test is one call:
    /// `fits("lab list", |out| render_list(out, SCENARIOS));`
    pub(crate) fn fits(
        view: &str,
        render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> String {
        let mut buf = Vec::new();
        render(&mut buf).unwrap_or_else(|e| panic!("{view}: rendering failed: {e}"));
        let text = String::from_utf8(buf).unwrap_or_else(|e| panic!("{view}: not UTF-8: {e}"));
        let plain = anstream::adapter::strip_str(&text).to_string();
        if std::env::var_os("LABCTL_SHOW_VIEWS").is_some() {
            eprintln!("=== {view}\n{plain}");
        }
        assert!(!plain.trim().is_empty(), "{view}: rendered nothing");
        let wide: Vec<String> = plain
            .lines()
            .filter(|l| width(l) > COLUMNS)
            .map(|l| format!("  {:>3} │{l}", width(l)))
            .collect();
        assert!(
            wide.is_empty(),
            "{view}: {} line(s) wider than {COLUMNS} columns:\n{}\n--- whole view ---\n{plain}",
            wide.len(),
            wide.join("\n")
        );
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_keeps_names_whole_and_indents() {
        let text = "a b ".repeat(30) + "lab-node1-with-hyphens end";
        let filled = fill(&text, "- ", "  ");
        assert!(filled.lines().all(|l| width(l) <= COLUMNS), "{filled}");
        assert!(filled.contains("lab-node1-with-hyphens"), "{filled}");
        assert!(filled.starts_with("- a b"));
        assert!(filled.lines().skip(1).all(|l| l.starts_with("  ")));
        // Lines of the text keep their indentation under `rest`.
        assert_eq!(
            fill("left:\n  one thing\n  another", "error: ", "  "),
            "error: left:\n    one thing\n    another"
        );
        // A word longer than a line is cut, not left sticking out.
        let url = format!("at http://[{}]/metrics", "fd00:1:2:3:4:5:6:7".repeat(5));
        assert!(fill(&url, "", "").lines().all(|l| width(l) <= COLUMNS));
    }

    #[test]
    fn pieces_break_only_between_pieces() {
        let p = [
            "23:15:23.000456",
            "labtest/pod-a ",
            "10.244.1.2:40000 →",
            "10.244.2.3:8080",
            "NO_SOCKET",
            "len 60",
            "at tcp_v4_rcv+0x1a5",
        ];
        let text = pieces(&p, 16);
        assert!(text.lines().all(|l| width(l) <= COLUMNS), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("len 60") && text.contains("at tcp_v4_rcv+0x1a5"));
        assert!(text.lines().nth(1).unwrap().starts_with(&" ".repeat(16)));
        assert!(!text.contains(GLUE));
        // Padding inside a piece stays; short lines stay one line.
        assert_eq!(pieces(&["ab   ", "c"], 4), "ab    c");
    }

    #[test]
    fn elide_cuts_with_an_ellipsis() {
        assert_eq!(elide("abcdef", 6), "abcdef");
        assert_eq!(elide("abcdefg", 6), "abcde…");
        assert_eq!(width(&elide(&"→".repeat(100), 80)), 80);
        assert_eq!(
            pad("\u{1b}[1mab\u{1b}[0m", 4).len(),
            "\u{1b}[1mab\u{1b}[0m".len() + 2
        );
    }
}
