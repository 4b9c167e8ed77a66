//! `labctl exercise ...`: one function per subcommand; the work is in
//! `crate::exercises`.

use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use anyhow::Context as _;

use crate::{
    cli::exercise::{
        ExAnswerArgs, ExCheckArgs, ExExportArgs, ExListArgs, ExPlainArgs, ExStartArgs,
        ExStatusArgs, ExerciseCommand,
    },
    exercises::{self, DEFAULT_LAB, Running, attempt::Attempt, catalog, observe::CheckReport},
    kernel::privilege,
    output::{OutputFormat, exit::Outcome, table},
};

pub fn run(command: ExerciseCommand) -> anyhow::Result<Outcome> {
    match command {
        ExerciseCommand::List(args) => list(args),
        ExerciseCommand::Start(args) => start(args),
        ExerciseCommand::Status(args) => status(args),
        ExerciseCommand::Hint(args) => hint(args),
        ExerciseCommand::Check(args) => check(args),
        ExerciseCommand::Answer(args) => answer(args),
        ExerciseCommand::Solution(args) => solution(args),
        ExerciseCommand::Reset(args) => reset(args),
        ExerciseCommand::Stop(args) => stop(args),
        ExerciseCommand::Export(args) => export(args),
    }
}

fn green() -> Style {
    Style::new().fg_color(Some(AnsiColor::Green.into())).bold()
}

fn red() -> Style {
    Style::new().fg_color(Some(AnsiColor::Red.into())).bold()
}

/// ` --lab LAB` when the learner must say which lab (not the default one,
/// or several exercises running).
fn lab_opt(lab: &str) -> String {
    let several = Attempt::all().map(|a| a.len() > 1).unwrap_or(false);
    if lab != DEFAULT_LAB || several {
        format!(" --lab {lab}")
    } else {
        String::new()
    }
}

fn list(args: ExListArgs) -> anyhow::Result<Outcome> {
    let sources = catalog::load(args.dir.as_deref())?;
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Json {
        for s in &sources {
            let e = &s.exercise;
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "id": e.id, "title": e.title, "concept": e.concept,
                    "difficulty": e.difficulty, "minutes": e.minutes, "scenario": e.scenario,
                })
            )?;
        }
        return Ok(Outcome::Success);
    }
    let rows = sources.iter().map(|s| {
        let e = &s.exercise;
        let concept: String = if e.concept.chars().count() > 48 {
            e.concept.chars().take(47).chain(['…']).collect()
        } else {
            e.concept.clone()
        };
        vec![
            e.id.clone(),
            format!("{:?}", e.difficulty).to_lowercase(),
            e.minutes.to_string(),
            concept,
        ]
    });
    table::write(&mut out, &["ID", "LEVEL", "MIN", "CONCEPT"], rows)?;
    writeln!(out, "\nStart one: sudo labctl exercise start ID")?;
    Ok(Outcome::Success)
}

fn print_story(out: &mut impl std::io::Write, run: &Running) -> std::io::Result<()> {
    let ex = &run.exercise;
    let lab = &run.attempt.lab;
    writeln!(out, "\n{}\n", textwrap::fill(ex.story.trim(), 78))?;
    writeln!(out, "Tasks:")?;
    for (i, t) in ex.tasks.iter().enumerate() {
        writeln!(out, "  {}. {}", i + 1, t.title)?;
    }
    let opt = lab_opt(lab);
    writeln!(
        out,
        "\nCheck your fix:  labctl exercise check{opt}\nStuck?           labctl exercise hint{opt}\nStart over:      labctl exercise reset{opt}   |   end: labctl exercise stop{opt}"
    )
}

fn start(args: ExStartArgs) -> anyhow::Result<Outcome> {
    // Which exercise, before privileges: a typo is a typo.
    let sources = catalog::load(args.dir.as_deref())?;
    catalog::find(&sources, &args.id)?;
    privilege::require_netns_admin("exercise start")?;
    let run = exercises::start(
        &args.id,
        args.lab.as_deref(),
        args.dir.as_deref(),
        args.seed,
    )
    .with_context(|| format!("cannot start exercise `{}`", args.id))?;
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Json {
        let ex = &run.exercise;
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "exercise": ex.id, "lab": run.attempt.lab, "title": ex.title,
                "story": ex.story.trim(),
                "tasks": ex.tasks.iter().map(|t| &t.title).collect::<Vec<_>>(),
            })
        )?;
        return Ok(Outcome::Success);
    }
    let green = green();
    writeln!(
        out,
        "{green}▶{green:#} exercise `{}` is running in lab `{}`: {}",
        run.exercise.id, run.attempt.lab, run.exercise.title
    )?;
    print_story(&mut out, &run)?;
    Ok(Outcome::Success)
}

fn status(args: ExStatusArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise status")?;
    let run = exercises::running(args.attempt.lab.as_deref())?;
    let (a, ex) = (&run.attempt, &run.exercise);
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "exercise": a.exercise, "lab": a.lab,
                "tasks_total": ex.tasks.len(), "tasks_passed": a.passed,
                "hints_used": a.hints_used, "hints_total": ex.hints.len(),
                "solution_revealed": a.solution_revealed, "checks_run": a.checks_run,
                "elapsed_s": a.elapsed_s(),
                "solved_after_s": a.solved_unix.map(|t| t.saturating_sub(a.started_unix)),
            })
        )?;
        return Ok(Outcome::Success);
    }
    let secs = a.elapsed_s();
    writeln!(
        out,
        "exercise `{}` in lab `{}`: {}\n  tasks passed at the last check: {} of {}\n  hints used: {} of {}\n  checks run: {}\n  time: {}m{:02}s{}{}",
        a.exercise,
        a.lab,
        ex.title,
        a.passed.len(),
        ex.tasks.len(),
        a.hints_used,
        ex.hints.len(),
        a.checks_run,
        secs / 60,
        secs % 60,
        a.solved_unix.map_or(String::new(), |t| format!(
            "\n  solved after {}m{:02}s",
            t.saturating_sub(a.started_unix) / 60,
            t.saturating_sub(a.started_unix) % 60
        )),
        if a.solution_revealed {
            "\n  the solution was shown"
        } else {
            ""
        }
    )?;
    Ok(Outcome::Success)
}

fn hint(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise hint")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    let (n, total, text) = exercises::hint(&mut run)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"hint": n, "of": total, "text": text.trim()})
        )?,
        OutputFormat::Text => writeln!(
            out,
            "hint {n} of {total}:\n{}",
            textwrap::indent(&textwrap::fill(text.trim(), 76), "  ")
        )?,
    }
    Ok(Outcome::Success)
}

fn print_report(out: &mut impl std::io::Write, report: &CheckReport) -> std::io::Result<()> {
    let (green, red) = (green(), red());
    for t in report.tasks.iter().chain(&report.guards) {
        let is_guard = t.id.starts_with("guard-");
        let label = if is_guard { "guard: " } else { "" };
        if t.passed {
            writeln!(out, "{green}✓{green:#} {label}{}", t.title)?;
        } else if t.skipped {
            writeln!(out, "· {label}{} ({})", t.title, t.failures.join("; "))?;
        } else {
            writeln!(out, "{red}✗{red:#} {label}{}", t.title)?;
            for f in &t.failures {
                writeln!(
                    out,
                    "{}",
                    textwrap::indent(&textwrap::fill(&format!("FAIL: {f}"), 74), "    ")
                )?;
            }
        }
    }
    if report.passed {
        writeln!(
            out,
            "{green}solved{green:#}: every task passes ({:.1} s)",
            report.elapsed_ms as f64 / 1000.0
        )
    } else {
        writeln!(
            out,
            "not yet: {} of {} tasks pass{}",
            report.tasks.iter().filter(|t| t.passed).count(),
            report.tasks.len(),
            if report.guards.iter().any(|g| !g.passed) {
                "; a guard failed: the fix took a shortcut"
            } else {
                ""
            }
        )
    }
}

fn check(args: ExCheckArgs) -> anyhow::Result<Outcome> {
    // The drop checks load the tracer.
    privilege::require("exercise check")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    let report = exercises::check(&mut run)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        OutputFormat::Text => print_report(&mut out, &report)?,
    }
    Ok(if report.passed {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

fn answer(args: ExAnswerArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise answer")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    let text = args.words.join(" ");
    exercises::answer(&mut run, &text)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::json!({ "answer": text }))?,
        OutputFormat::Text => writeln!(
            out,
            "answer recorded: {text}\nnow: labctl exercise check{}",
            lab_opt(&run.attempt.lab)
        )?,
    }
    Ok(Outcome::Success)
}

fn solution(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise solution")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    exercises::reveal(&mut run)?;
    let lab = &run.attempt.lab;
    let s = &run.exercise.solution;
    let commands: Vec<String> = s.commands.iter().map(|a| a.command_line(lab)).collect();
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"explanation": s.explanation.trim(), "commands": commands})
        )?,
        OutputFormat::Text => {
            writeln!(out, "{}\n", textwrap::fill(s.explanation.trim(), 78))?;
            for c in commands {
                writeln!(out, "  {c}")?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn reset(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise reset")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    exercises::reset(&mut run).context("cannot reset the exercise")?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"reset": run.attempt.exercise, "lab": run.attempt.lab})
        )?,
        OutputFormat::Text => {
            writeln!(
                out,
                "lab `{}` rebuilt in its broken state (same exercise, same parameters)",
                run.attempt.lab
            )?;
            print_story(&mut out, &run)?;
        }
    }
    Ok(Outcome::Success)
}

fn stop(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise stop")?;
    let run = exercises::running(args.attempt.lab.as_deref())?;
    exercises::stop(&run).context("cannot stop the exercise")?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"stopped": run.attempt.exercise, "lab": run.attempt.lab})
        )?,
        OutputFormat::Text => writeln!(
            out,
            "exercise `{}` stopped; lab `{}` removed",
            run.attempt.exercise, run.attempt.lab
        )?,
    }
    Ok(Outcome::Success)
}

fn export(args: ExExportArgs) -> anyhow::Result<Outcome> {
    let sources = catalog::load(args.dir.as_deref())?;
    let written = exercises::export_markdown(&sources, &args.markdown)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::json!({ "written": written }))?,
        OutputFormat::Text => {
            for p in &written {
                writeln!(out, "wrote {}", p.display())?;
            }
        }
    }
    Ok(Outcome::Success)
}
