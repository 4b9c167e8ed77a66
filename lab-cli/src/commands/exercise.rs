//! `labctl exercise ...`: one function per subcommand; the work is in
//! `crate::exercises`, the text views in `output::exercises`.

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cli::exercise::{
        ExAnswerArgs, ExCheckArgs, ExExportArgs, ExLintArgs, ExListArgs, ExPlainArgs, ExSchemaArgs,
        ExSelftestArgs, ExStartArgs, ExStatusArgs, ExerciseCommand,
    },
    exercises::{self, attempt::Attempt, catalog, export, lint, schema, selftest, template},
    kernel::{interrupt::Interrupted, privilege},
    output::{OutputFormat, exercises as view, exit::Outcome, width},
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
        ExerciseCommand::Lint(args) => lint(args),
        ExerciseCommand::Selftest(args) => selftest(args),
        ExerciseCommand::Schema(args) => schema(args),
    }
}

/// Whether several exercises run (then every command needs --lab).
fn several() -> bool {
    Attempt::all().map(|a| a.len() > 1).unwrap_or(false)
}

/// An exercise error as the command returns it: Ctrl-C as `Interrupted`
/// (exit 130), the rest with its context.
fn fail(e: exercises::ExerciseError, what: &str) -> anyhow::Error {
    if e.is_interrupted() {
        anyhow::Error::new(Interrupted).context(format!("{what} was interrupted"))
    } else {
        anyhow::Error::new(e).context(what.to_owned())
    }
}

fn list(args: ExListArgs) -> anyhow::Result<Outcome> {
    let sources = catalog::load(args.dir.as_deref())?;
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Json {
        for s in &sources {
            let h = &s.header;
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "id": h.id, "title": h.title, "concept": h.concept,
                    "difficulty": h.difficulty, "minutes": h.minutes, "scenario": h.scenario,
                    "file": s.file,
                })
            )?;
        }
        return Ok(Outcome::Success);
    }
    view::list(&mut out, &sources)?;
    Ok(Outcome::Success)
}

fn start(args: ExStartArgs) -> anyhow::Result<Outcome> {
    // Which exercise, and whether its file is valid, before privileges.
    let sources = catalog::load(args.dir.as_deref())?;
    let source = catalog::find(&sources, &args.id)?;
    privilege::require_netns_admin("exercise start")?;
    if !source.shipped() && source.runs_commands() {
        width::write_fill(
            &mut anstream::stderr(),
            &format!(
                "{} runs shell commands as root in the lab's namespaces (its break, solution and fixes); read it before you run it",
                source.file
            ),
            "note: ",
            "      ",
        )?;
    }
    let run = exercises::start(&source, args.lab.as_deref(), args.seed, None)
        .map_err(|e| fail(e, &format!("cannot start exercise `{}`", args.id)))?;
    let mut out = anstream::stdout().lock();
    if args.output == OutputFormat::Json {
        let ex = &run.exercise;
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "exercise": ex.id, "lab": run.attempt.lab, "title": ex.title,
                "story": ex.story.trim(),
                "tasks": ex.tasks.iter().map(|t| serde_json::json!({
                    "id": t.id, "title": t.title, "keep_working": t.keep_working,
                })).collect::<Vec<_>>(),
                "asks": ex.asks(),
                "max_answers": ex.max_answers,
            })
        )?;
        return Ok(Outcome::Success);
    }
    view::started(&mut out, &run.exercise, &run.attempt.lab, several())?;
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
                "exercise": a.exercise, "lab": a.lab, "phase": a.phase,
                "variant": template::describe(&a.vars),
                "tasks_total": ex.tasks.len(), "tasks_passed": a.passed,
                "hints_used": a.hints_used, "hints_total": ex.hints.len(),
                "solution_revealed": a.solution_revealed, "checks_run": a.checks_run,
                "answers": a.answers, "wrong_answers": a.wrong_answers(),
                "max_answers": ex.max_answers,
                "elapsed_s": a.elapsed_s(),
                "solved_after_s": a.solved_unix.map(|t| t.saturating_sub(a.started_unix)),
            })
        )?;
        return Ok(Outcome::Success);
    }
    view::status(&mut out, a, ex)?;
    Ok(Outcome::Success)
}

fn hint(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise hint")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    let h = exercises::hint(&mut run)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "hint": h.number, "of": h.total, "text": h.text.trim(),
                "last": h.number == h.total,
            })
        )?,
        OutputFormat::Text => view::hint(&mut out, &h)?,
    }
    Ok(Outcome::Success)
}

fn check(args: ExCheckArgs) -> anyhow::Result<Outcome> {
    // The drop checks load the tracer.
    privilege::require("exercise check")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    let report = exercises::check(&mut run).map_err(|e| fail(e, "the check"))?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        OutputFormat::Text => view::report(&mut out, &report)?,
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
    let a = &run.attempt;
    let left = run
        .exercise
        .max_answers
        .map(|m| (m as usize).saturating_sub(a.answers.len()));
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({ "answer": text, "given": a.answers.len(), "left": left })
        )?,
        OutputFormat::Text => writeln!(
            out,
            "answer recorded: {text}{}\nnow: labctl exercise check{}",
            left.map(|n| format!(" ({n} left)")).unwrap_or_default(),
            view::lab_opt(&a.lab, several())
        )?,
    }
    Ok(Outcome::Success)
}

fn solution(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise solution")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    exercises::reveal(&mut run)?;
    let lab = run.attempt.lab.clone();
    let s = &run.exercise.solution;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let commands: Vec<String> = s.actions.iter().map(|a| a.command_line(&lab)).collect();
            writeln!(
                out,
                "{}",
                serde_json::json!({"explanation": s.explanation.trim(), "commands": commands})
            )?
        }
        OutputFormat::Text => view::solution(&mut out, &run.exercise, &lab)?,
    }
    Ok(Outcome::Success)
}

fn reset(args: ExPlainArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("exercise reset")?;
    let mut run = exercises::running(args.attempt.lab.as_deref())?;
    exercises::reset(&mut run).map_err(|e| fail(e, "cannot reset the exercise"))?;
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
            view::story(&mut out, &run.exercise, &run.attempt.lab, several())?;
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
    let written = export::export(&sources, &args.out, args.hints)?;
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

fn lint(args: ExLintArgs) -> anyhow::Result<Outcome> {
    let reasons = lint::kernel_reasons();
    let results: Vec<(String, Vec<String>)> = match &args.dir {
        None => catalog::shipped()?
            .iter()
            .map(|s| (s.file.clone(), lint::lint(s, reasons.as_deref())))
            .collect(),
        Some(dir) => catalog::files_in(dir)?
            .into_iter()
            .map(|r| match r {
                Ok(s) => (s.file.clone(), lint::lint(&s, reasons.as_deref())),
                Err(e) => (
                    match &e {
                        catalog::CatalogError::Parse { file, .. }
                        | catalog::CatalogError::Invalid { file, .. }
                        | catalog::CatalogError::Read { file, .. }
                        | catalog::CatalogError::NotRegular { file }
                        | catalog::CatalogError::TooBig { file } => file.clone(),
                        _ => String::new(),
                    },
                    vec![e.to_string()],
                ),
            })
            .collect(),
    };
    let mut out = anstream::stdout().lock();
    let bad = results.iter().filter(|(_, p)| !p.is_empty()).count();
    match args.output {
        OutputFormat::Json => {
            for (file, problems) in &results {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "file": file, "valid": problems.is_empty(), "problems": problems })
                )?;
            }
        }
        OutputFormat::Text => {
            for (file, problems) in &results {
                view::lint(&mut out, file, problems)?;
            }
            if reasons.is_none() {
                writeln!(
                    out,
                    "(drop reasons were not checked: this kernel's BTF cannot be read)"
                )?;
            }
        }
    }
    Ok(if bad == 0 && !results.is_empty() {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

fn selftest(args: ExSelftestArgs) -> anyhow::Result<Outcome> {
    let sources = catalog::load(args.dir.as_deref())?;
    let chosen: Vec<catalog::Source> = if args.ids.is_empty() {
        sources.clone()
    } else {
        args.ids
            .iter()
            .map(|id| catalog::find(&sources, id))
            .collect::<Result<_, _>>()?
    };
    privilege::require("exercise selftest")?;
    let json = args.output == OutputFormat::Json;
    let mut failed = 0;
    for source in &chosen {
        let mut draws = template::variants(&source.header.params, &args.lab);
        if !args.all_draws {
            draws.truncate(1);
        }
        for vars in draws {
            if !json {
                let mut out = anstream::stdout().lock();
                view::selftest_head(&mut out, source.id(), &template::describe(&vars), &args.lab)?;
            }
            let mut progress = |step: &selftest::Step| {
                if !json {
                    let mut out = anstream::stdout().lock();
                    if let Err(e) = view::selftest_step(&mut out, step) {
                        tracing::debug!("printing a step: {e}");
                    }
                }
            };
            let report = selftest::run(source, vars, &args.lab, &mut progress)
                .map_err(|e| fail(e, "the selftest"))?;
            if !report.passed {
                failed += 1;
            }
            if json {
                let mut out = anstream::stdout().lock();
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            }
        }
    }
    if !json {
        let mut out = anstream::stdout().lock();
        if failed == 0 {
            writeln!(out, "every protocol step passed")?;
        } else {
            writeln!(out, "{failed} draw(s) failed a step")?;
        }
    }
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

fn schema(args: ExSchemaArgs) -> anyhow::Result<Outcome> {
    let mut out = anstream::stdout().lock();
    if args.markdown {
        write!(out, "{}", schema::markdown())?;
    } else {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&schema::json_schema())?
        )?;
    }
    Ok(Outcome::Success)
}
