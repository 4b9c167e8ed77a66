//! `labctl exercise`: break-fix workshop exercises with automatic checks.
//!
//! An exercise (a TOML file, see `model`) builds a lab, breaks it, tells a
//! story of symptoms, and checks from the live system whether the learner
//! fixed it (`observe`). An attempt (`attempt`) remembers the randomized
//! parameters, hints used and results, one per lab.

pub mod attempt;
pub mod catalog;
pub mod model;
pub mod observe;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use thiserror::Error;

use attempt::{Attempt, AttemptError, now_unix};
use catalog::{CatalogError, Source};
use model::Exercise;
use observe::{CheckReport, ObserveError};

use crate::{
    kernel::safefile::{Dir, SafeFileError},
    lab::{self, Lab, LabError},
};

/// The lab an exercise runs in unless `--lab` names another.
pub const DEFAULT_LAB: &str = "ex";

#[derive(Debug, Error)]
pub enum ExerciseError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Attempt(#[from] AttemptError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("cannot prepare the exercise")]
    Break(#[from] ObserveError),
    #[error(
        "the exercise's lab `{0}` is gone (was it taken down with `lab down`?); `labctl exercise reset` rebuilds it, `labctl exercise stop` ends the attempt"
    )]
    LabGone(String),
}

impl ExerciseError {
    pub fn is_usage(&self) -> bool {
        match self {
            ExerciseError::Catalog(e) => e.is_usage(),
            ExerciseError::Attempt(e) => e.is_usage(),
            ExerciseError::Lab(e) => e.is_usage(),
            _ => false,
        }
    }
}

/// An attempt and its exercise, instantiated with the attempt's parameters.
pub struct Running {
    pub attempt: Attempt,
    pub exercise: Exercise,
}

fn source_of(attempt: &Attempt) -> Result<Source, ExerciseError> {
    let sources = catalog::load(attempt.dir.as_deref())?;
    Ok(catalog::find(&sources, &attempt.exercise)?)
}

/// The attempt in `lab` (or the only one), with its exercise.
pub fn running(lab: Option<&str>) -> Result<Running, ExerciseError> {
    let attempt = Attempt::find(lab)?;
    let exercise = catalog::instantiate(&source_of(&attempt)?, &attempt.vars)?;
    Ok(Running { attempt, exercise })
}

/// Builds the lab and breaks it. On failure the lab is taken down again.
fn build(
    exercise: &Exercise,
    lab_name: &str,
) -> Result<(Lab, Vec<(String, attempt::Snapshot)>), ExerciseError> {
    let options = exercise
        .lab_options()
        .map_err(|problem| CatalogError::Invalid {
            id: exercise.id.clone(),
            problem,
        })?;
    let lab = Lab::up(Some(lab_name), &exercise.scenario, options)?;
    let broken = observe::apply(&lab, &exercise.breaks).and_then(|()| {
        observe::watched_members(exercise)
            .into_iter()
            .map(|m| observe::snapshot(&lab, &m).map(|s| (m, s)))
            .collect::<Result<Vec<_>, _>>()
    });
    match broken {
        Ok(snapshots) => Ok((lab, snapshots)),
        Err(e) => {
            if let Err(down) = lab::down(Some(lab_name)) {
                tracing::warn!("removing the half-built exercise lab: {down}");
            }
            Err(e.into())
        }
    }
}

/// `exercise start`: builds the lab, plants the fault, records the attempt.
/// `seed` fixes the randomized parameters (tests); by default it is random.
pub fn start(
    id: &str,
    lab_name: Option<&str>,
    dir: Option<&Path>,
    seed: Option<u64>,
) -> Result<Running, ExerciseError> {
    let lab_name = lab_name.unwrap_or(DEFAULT_LAB);
    if let Some(existing) = Attempt::load(lab_name)? {
        return Err(AttemptError::Busy {
            lab: lab_name.to_owned(),
            id: existing.exercise,
        }
        .into());
    }
    let sources = catalog::load(dir)?;
    let source = catalog::find(&sources, id)?;
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    let vars = catalog::choose(&source.exercise, lab_name, seed);
    let exercise = catalog::instantiate(&source, &vars)?;
    let (_lab, snapshots) = build(&exercise, lab_name)?;
    let mut attempt = Attempt::new(id, lab_name, seed, vars, dir.map(Path::to_path_buf));
    attempt.snapshots = snapshots.into_iter().collect();
    if let Err(e) = attempt.save() {
        if let Err(down) = lab::down(Some(lab_name)) {
            tracing::warn!("removing the exercise lab: {down}");
        }
        return Err(e.into());
    }
    Ok(Running { attempt, exercise })
}

fn open_lab(attempt: &Attempt) -> Result<Lab, ExerciseError> {
    Lab::open(&attempt.lab).map_err(|e| match e {
        LabError::NotUp(name) => ExerciseError::LabGone(name),
        e => e.into(),
    })
}

/// `exercise check`: every task and guard, observed; remembered in the attempt.
pub fn check(run: &mut Running) -> Result<CheckReport, ExerciseError> {
    let lab = open_lab(&run.attempt)?;
    let report = observe::check(&lab, &run.attempt, &run.exercise);
    let a = &mut run.attempt;
    a.checks_run += 1;
    a.passed = report
        .tasks
        .iter()
        .filter(|t| t.passed)
        .map(|t| t.id.clone())
        .collect();
    if report.passed && a.solved_unix.is_none() {
        a.solved_unix = Some(now_unix());
    }
    a.save()?;
    Ok(report)
}

/// `exercise hint`: the next hint (1-based number, total, text); the last
/// one again once all were shown.
pub fn hint(run: &mut Running) -> Result<(usize, usize, String), ExerciseError> {
    let total = run.exercise.hints.len();
    let n = (run.attempt.hints_used + 1).min(total);
    run.attempt.hints_used = n;
    run.attempt.save()?;
    let text = run.exercise.hints.get(n - 1).cloned().unwrap_or_default();
    Ok((n, total, text))
}

/// `exercise solution`: marks it revealed.
pub fn reveal(run: &mut Running) -> Result<(), ExerciseError> {
    run.attempt.solution_revealed = true;
    run.attempt.save()?;
    Ok(())
}

/// `exercise answer TEXT`.
pub fn answer(run: &mut Running, text: &str) -> Result<(), ExerciseError> {
    run.attempt.answer = Some(text.trim().to_owned());
    run.attempt.save()?;
    Ok(())
}

/// `exercise reset`: the lab rebuilt and broken again, same parameters.
pub fn reset(run: &mut Running) -> Result<(), ExerciseError> {
    match lab::down(Some(&run.attempt.lab)) {
        Ok(_) | Err(LabError::NotUp(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let (_lab, snapshots) = build(&run.exercise, &run.attempt.lab)?;
    let a = &mut run.attempt;
    a.snapshots = snapshots.into_iter().collect();
    a.passed.clear();
    a.answer = None;
    a.save()?;
    Ok(())
}

/// `exercise stop`: the lab torn down, the attempt forgotten.
pub fn stop(run: &Running) -> Result<(), ExerciseError> {
    match lab::down(Some(&run.attempt.lab)) {
        Ok(_) | Err(LabError::NotUp(_)) => {}
        Err(e) => return Err(e.into()),
    }
    run.attempt.remove()?;
    Ok(())
}

/// Applies the reference solution (tests, and instructors' dry runs).
pub fn apply_solution(run: &Running) -> Result<(), ExerciseError> {
    let lab = open_lab(&run.attempt)?;
    observe::apply(&lab, &run.exercise.solution.commands)?;
    Ok(())
}

/// Applies the exercise's shortcut (tests: a guard must catch it).
pub fn apply_shortcut(run: &Running) -> Result<(), ExerciseError> {
    let lab = open_lab(&run.attempt)?;
    observe::apply(&lab, &run.exercise.shortcut)?;
    Ok(())
}

/// One handout per exercise, in Markdown: the story with a sample
/// attempt's parameters, the tasks, the hints and the solution.
pub fn markdown(source: &Source) -> Result<String, ExerciseError> {
    let ex = catalog::instantiate(source, &catalog::choose(&source.exercise, DEFAULT_LAB, 0))?;
    let mut md = format!(
        "# {} (`{}`)\n\n*{}* · {:?} · about {} minutes · lab scenario `{}`\n\n\
         Start: `sudo labctl exercise start {}`\n\n## Story\n\n{}\n\n## Tasks\n\n",
        ex.title,
        ex.id,
        ex.concept,
        ex.difficulty,
        ex.minutes,
        ex.scenario,
        ex.id,
        ex.story.trim()
    );
    for t in &ex.tasks {
        md.push_str(&format!("- {}\n", t.title));
    }
    if !ex.guards.is_empty() {
        md.push_str("\nThe check also makes sure that:\n\n");
        for g in &ex.guards {
            md.push_str(&format!("- {}\n", g.title));
        }
    }
    md.push_str("\nCheck with `sudo labctl exercise check`.\n\n## Hints\n\n");
    for (i, h) in ex.hints.iter().enumerate() {
        md.push_str(&format!("{}. {}\n", i + 1, h.trim()));
    }
    md.push_str(&format!(
        "\n## Solution (for instructors)\n\n{}\n\n```sh\n",
        ex.solution.explanation.trim()
    ));
    for a in &ex.solution.commands {
        md.push_str(&a.command_line(DEFAULT_LAB));
        md.push('\n');
    }
    md.push_str("```\n");
    Ok(md)
}

/// Writes `ID.md` for every exercise into `dir` (through
/// `kernel::safefile`: a temporary file renamed into place, so a planted
/// link is replaced, not followed).
pub fn export_markdown(sources: &[Source], dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let out = Dir::user(dir)?;
    let mut written = Vec::new();
    for s in sources {
        let text = markdown(s).map_err(|e| ExportError::Render(Box::new(e)))?;
        let name = OsString::from(format!("{}.md", s.exercise.id));
        out.write(&name, text.as_bytes(), 0o644)?;
        written.push(dir.join(name));
    }
    Ok(written)
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error(transparent)]
    Write(#[from] SafeFileError),
    #[error(transparent)]
    Render(Box<ExerciseError>),
}
