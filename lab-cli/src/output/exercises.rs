//! The exercise commands' text views, each ≤ 80 columns: written to any
//! `Write` from data, so the width test renders them without a lab.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};

use crate::exercises::{
    DEFAULT_LAB, Hint,
    attempt::Attempt,
    catalog::Source,
    model::{Action, Exercise},
    observe::CheckReport,
    selftest,
};

/// The width every view keeps to.
pub const WIDTH: usize = 80;

fn green() -> Style {
    Style::new().fg_color(Some(AnsiColor::Green.into())).bold()
}

fn red() -> Style {
    Style::new().fg_color(Some(AnsiColor::Red.into())).bold()
}

/// `text` wrapped to the width, each line indented by `indent`: the
/// file's own line breaks inside a paragraph are undone (a filled-in
/// placeholder changes a line's length), blank lines between paragraphs
/// kept.
fn para(out: &mut impl Write, text: &str, indent: &str) -> io::Result<()> {
    let opts = super::width::options(WIDTH - 2, "", "")
        .initial_indent(indent)
        .subsequent_indent(indent);
    let paragraphs: Vec<String> = text
        .trim()
        .split("\n\n")
        .map(|p| textwrap::fill(&p.split_whitespace().collect::<Vec<_>>().join(" "), &opts))
        .collect();
    writeln!(out, "{}", paragraphs.join("\n\n"))
}

/// A first line and its continuation, indented under it.
fn hanging(out: &mut impl Write, first: &str, rest: &str, text: &str) -> io::Result<()> {
    let opts = super::width::options(WIDTH - 2, "", "")
        .initial_indent(first)
        .subsequent_indent(rest);
    writeln!(out, "{}", textwrap::fill(text.trim(), opts))
}

/// ` --lab LAB` when a participant must say which lab.
pub fn lab_opt(lab: &str, several: bool) -> String {
    if lab != DEFAULT_LAB || several {
        format!(" --lab {lab}")
    } else {
        String::new()
    }
}

/// `exercise list`.
pub fn list(out: &mut impl Write, sources: &[Source]) -> io::Result<()> {
    let id_w = sources
        .iter()
        .map(|s| s.id().len())
        .max()
        .unwrap_or(2)
        .max(2);
    // ID  LEVEL   MIN  CONCEPT
    let concept_w = WIDTH.saturating_sub(id_w + 2 + 6 + 2 + 3 + 2).max(20);
    writeln!(out, "{:id_w$}  {:6}  {:>3}  CONCEPT", "ID", "LEVEL", "MIN")?;
    for s in sources {
        let h = &s.header;
        let concept: String = if h.concept.chars().count() > concept_w {
            h.concept.chars().take(concept_w - 1).chain(['…']).collect()
        } else {
            h.concept.clone()
        };
        writeln!(
            out,
            "{:id_w$}  {:6}  {:>3}  {concept}",
            h.id,
            format!("{:?}", h.difficulty).to_lowercase(),
            h.minutes
        )?;
    }
    writeln!(out, "\nStart one: sudo labctl exercise start ID")
}

/// The story, the tasks, and what to type next (`start`, `reset`).
pub fn story(out: &mut impl Write, ex: &Exercise, lab: &str, several: bool) -> io::Result<()> {
    writeln!(out)?;
    para(out, &ex.story, "")?;
    writeln!(out, "\nTasks:")?;
    for (i, t) in ex.tasks.iter().enumerate() {
        let first = format!("  {}. ", i + 1);
        let keep = if t.keep_working {
            " (keep it working)"
        } else {
            ""
        };
        hanging(out, &first, "     ", &format!("{}{keep}", t.title))?;
    }
    let opt = lab_opt(lab, several);
    writeln!(out)?;
    if ex.asks() {
        writeln!(out, "Answer:      labctl exercise answer{opt} WORDS...")?;
        writeln!(out, "Then:        labctl exercise check{opt}")?;
    } else {
        writeln!(out, "Check a fix: labctl exercise check{opt}")?;
    }
    writeln!(out, "Stuck?       labctl exercise hint{opt}")?;
    writeln!(out, "Start over:  labctl exercise reset{opt}")?;
    writeln!(out, "End:         labctl exercise stop{opt}")
}

/// `exercise start`.
pub fn started(out: &mut impl Write, ex: &Exercise, lab: &str, several: bool) -> io::Result<()> {
    let g = green();
    let text = format!(
        "exercise `{}` is running in lab `{lab}`: {}",
        ex.id, ex.title
    );
    let opts = super::width::options(WIDTH - 2, "", "").subsequent_indent("  ");
    let wrapped = textwrap::fill(&text, opts);
    writeln!(out, "{g}▶{g:#} {wrapped}")?;
    story(out, ex, lab, several)
}

/// `exercise check`.
pub fn report(out: &mut impl Write, report: &CheckReport) -> io::Result<()> {
    let (g, r) = (green(), red());
    for t in report.tasks.iter().chain(&report.guards) {
        let label = if t.id.starts_with("guard-") {
            "guard: "
        } else {
            ""
        };
        let keep = if t.keep_working {
            " (keep it working)"
        } else {
            ""
        };
        let title = format!("{label}{}{keep}", t.title);
        let wrapped = textwrap::fill(
            &title,
            super::width::options(WIDTH - 2, "", "").subsequent_indent("  "),
        );
        if t.passed {
            writeln!(out, "{g}✓{g:#} {wrapped}")?;
        } else if t.skipped {
            writeln!(out, "· {wrapped}")?;
            for f in &t.failures {
                para(out, f, "    ")?;
            }
        } else {
            writeln!(out, "{r}✗{r:#} {wrapped}")?;
            for f in &t.failures {
                hanging(out, "    FAIL: ", "          ", f)?;
            }
            if let Some(why) = &t.why {
                hanging(out, "    why: ", "         ", why)?;
            }
        }
    }
    if report.passed {
        writeln!(
            out,
            "{g}solved{g:#}: every task passes ({:.1} s)",
            report.elapsed_ms as f64 / 1000.0
        )
    } else {
        let passed = report.tasks.iter().filter(|t| t.passed).count();
        // Only a failed guard accuses a shortcut; a task that fails says
        // its own why.
        let shortcut =
            report.guard_failed() && report.tasks.iter().all(|t| t.passed || t.why.is_some());
        writeln!(
            out,
            "not yet: {passed} of {} tasks pass{}",
            report.tasks.len(),
            if shortcut {
                "; a guard failed: the fix took a shortcut"
            } else if report.guard_failed() {
                "; a guard failed"
            } else {
                ""
            }
        )
    }
}

/// `exercise status`.
pub fn status(out: &mut impl Write, a: &Attempt, ex: &Exercise) -> io::Result<()> {
    let secs = a.elapsed_s();
    hanging(
        out,
        "",
        "  ",
        &format!("exercise `{}` in lab `{}`: {}", a.exercise, a.lab, ex.title),
    )?;
    if a.phase != crate::exercises::attempt::Phase::Ready {
        writeln!(
            out,
            "  the lab is not in a known state (a {} was interrupted): run reset",
            a.phase.as_str()
        )?;
    }
    writeln!(
        out,
        "  tasks passed at the last check: {} of {}",
        a.passed.len(),
        ex.tasks.len()
    )?;
    writeln!(out, "  hints used: {} of {}", a.hints_used, ex.hints.len())?;
    writeln!(out, "  checks run: {}", a.checks_run)?;
    if ex.asks() || !a.answers.is_empty() {
        let cap = ex
            .max_answers
            .map(|m| format!(" (at most {m})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  answers given: {}, {} wrong{cap}",
            a.answers.len(),
            a.wrong_answers()
        )?;
        for ans in &a.answers {
            let mark = if ans.correct { "right" } else { "wrong" };
            hanging(out, "    ", "      ", &format!("{mark}: {}", ans.text))?;
        }
    }
    writeln!(out, "  time: {}m{:02}s", secs / 60, secs % 60)?;
    if let Some(t) = a.solved_unix {
        let s = t.saturating_sub(a.started_unix);
        writeln!(out, "  solved after {}m{:02}s", s / 60, s % 60)?;
    }
    if a.solution_revealed {
        writeln!(out, "  the solution was shown")?;
    }
    Ok(())
}

/// `exercise hint`.
pub fn hint(out: &mut impl Write, h: &Hint) -> io::Result<()> {
    if h.repeated {
        writeln!(
            out,
            "hint {} of {} again (no more hints; `labctl exercise solution` next):",
            h.number, h.total
        )?;
    } else if h.number == h.total {
        writeln!(out, "hint {} of {} (the last one):", h.number, h.total)?;
    } else {
        writeln!(out, "hint {} of {}:", h.number, h.total)?;
    }
    para(out, &h.text, "  ")
}

/// Splits a shell command into lines of at most `width` columns at spaces
/// outside quotes, each continued with ` \`; a word longer than a line
/// stays whole.
pub fn shell_lines(cmd: &str, width: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in cmd.chars() {
        match (quote, c) {
            (None, ' ') => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for w in words {
        let extra = if line.is_empty() { 0 } else { 1 };
        // Room for the ` \` a continued line ends with.
        if !line.is_empty() && line.chars().count() + extra + w.chars().count() + 2 > width {
            lines.push(line);
            line = format!("  {w}");
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&w);
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    let n = lines.len();
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| if i + 1 < n { format!("{l} \\") } else { l })
        .collect()
}

/// One action as a participant types it, ≤ 80 columns: a command run in
/// a member is shown as the shell line to type there.
pub fn action(out: &mut impl Write, a: &Action, lab: &str) -> io::Result<()> {
    match a {
        Action::Run { member, command } => {
            writeln!(
                out,
                "  in {member} (sudo labctl lab exec --lab {lab} {member} -- sh):"
            )?;
            for l in shell_lines(command, WIDTH - 4) {
                writeln!(out, "    {l}")?;
            }
        }
        Action::Policy { yaml } => {
            writeln!(out, "  sudo labctl policy apply --lab {lab} -f - <<'EOF'")?;
            for l in yaml.trim_end().lines() {
                writeln!(out, "  {l}")?;
            }
            writeln!(out, "  EOF")?;
        }
        other => {
            for l in shell_lines(&other.command_line(lab), WIDTH - 2) {
                writeln!(out, "  {l}")?;
            }
        }
    }
    Ok(())
}

/// `exercise solution`.
pub fn solution(out: &mut impl Write, ex: &Exercise, lab: &str) -> io::Result<()> {
    para(out, &ex.solution.explanation, "")?;
    writeln!(out)?;
    for a in &ex.solution.actions {
        action(out, a, lab)?;
    }
    Ok(())
}

/// One step of `exercise selftest`.
pub fn selftest_step(out: &mut impl Write, step: &selftest::Step) -> io::Result<()> {
    let (g, r) = (green(), red());
    let head = format!("{} ({:.1} s)", step.name, step.elapsed_ms as f64 / 1000.0);
    if step.ok {
        hanging(out, &format!("  {g}✓{g:#} "), "      ", &head)?;
    } else {
        hanging(out, &format!("  {r}✗{r:#} "), "      ", &head)?;
        for d in &step.detail {
            hanging(out, "      ", "        ", d)?;
        }
    }
    Ok(())
}

/// The head of one draw in `exercise selftest`.
pub fn selftest_head(out: &mut impl Write, id: &str, variant: &str, lab: &str) -> io::Result<()> {
    hanging(out, "", "  ", &format!("{id} [{variant}] in lab {lab}"))
}

/// `exercise lint`: one file's verdict.
pub fn lint(out: &mut impl Write, file: &str, problems: &[String]) -> io::Result<()> {
    let (g, r) = (green(), red());
    if problems.is_empty() {
        return hanging(out, &format!("{g}✓{g:#} "), "  ", file);
    }
    hanging(out, &format!("{r}✗{r:#} "), "  ", file)?;
    for p in problems {
        hanging(out, "    - ", "      ", p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_shell_lines_are_split_outside_quotes() {
        let cmd = "nft add table ip hardening && nft add chain ip hardening out '{ type filter hook output priority 0; }' && nft add rule ip hardening out icmp type destination-unreachable icmp code frag-needed drop";
        let lines = shell_lines(cmd, 76);
        assert!(lines.len() > 1);
        for l in &lines {
            assert!(l.chars().count() <= 76, "{l}");
        }
        // Joined back, the shell sees the same words.
        let joined = lines
            .iter()
            .map(|l| l.trim_end_matches(" \\").trim())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(joined, cmd);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("'{ type filter hook output priority 0; }'"))
        );
    }
}
