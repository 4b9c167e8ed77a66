//! `labctl exercise`: break-fix workshop exercises with automatic checks.
//!
//! An exercise (a TOML file, see `model`; placeholders in `template`;
//! checked without a lab by `lint`) builds a lab, breaks it, tells a story
//! of symptoms, and checks from the live system whether the participant
//! fixed it (`observe`). An attempt (`attempt`) remembers the exercise's
//! text, the randomized parameters, hints, answers and results, one per
//! lab. `selftest` runs the whole protocol an instructor relies on;
//! `export` writes the handouts and instructor notes; `schema` the JSON
//! Schema and the format's documentation.

pub mod attempt;
pub mod catalog;
pub mod export;
pub mod lint;
pub mod model;
pub mod observe;
pub mod schema;
pub mod selftest;
pub mod template;

use thiserror::Error;

use attempt::{AnswerRecord, Attempt, AttemptError, Phase, now_unix};
use catalog::{CatalogError, Source};
use model::{Action, Exercise};
use observe::{CheckReport, Judgement, ObserveError};
use template::Vars;

use crate::{
    kernel::interrupt,
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
    #[error("{0}")]
    Unjudgeable(String),
    #[error(transparent)]
    Interrupted(#[from] interrupt::Interrupted),
}

impl ExerciseError {
    pub fn is_usage(&self) -> bool {
        match self {
            ExerciseError::Catalog(e) => e.is_usage(),
            ExerciseError::Attempt(e) => e.is_usage(),
            ExerciseError::Lab(e) => e.is_usage(),
            ExerciseError::Unjudgeable(_) => true,
            _ => false,
        }
    }

    /// Ctrl-C or SIGTERM ended it (exit 130), wherever it came: between
    /// steps, while `lab up` built, while waiting for a lock.
    pub fn is_interrupted(&self) -> bool {
        // Transparent variants: the chain does not show them.
        if matches!(
            self,
            ExerciseError::Interrupted(_) | ExerciseError::Attempt(AttemptError::Interrupted(_))
        ) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if e.is::<interrupt::Interrupted>() {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// An attempt and its exercise, instantiated with the attempt's parameters.
pub struct Running {
    pub attempt: Attempt,
    pub exercise: Exercise,
}

impl Running {
    fn of(attempt: Attempt) -> Result<Self, ExerciseError> {
        let source = Source::parse(&attempt.file, &attempt.text)?;
        let exercise = catalog::instantiate(&source, &attempt.vars)?;
        Ok(Self { attempt, exercise })
    }

    /// The record again (another command may have changed it).
    fn reload(&mut self) -> Result<(), ExerciseError> {
        self.attempt = Attempt::find(Some(&self.attempt.lab))?;
        Ok(())
    }
}

/// The attempt in `lab` (or the only one), with its exercise: from the
/// record alone, never from the catalog.
pub fn running(lab: Option<&str>) -> Result<Running, ExerciseError> {
    Running::of(Attempt::find(lab)?)
}

/// Builds the lab and breaks it, and takes the snapshots `unchanged`
/// compares with. On failure the lab is taken down again.
fn build(
    exercise: &Exercise,
    lab_name: &str,
) -> Result<Vec<(String, attempt::Snapshot)>, ExerciseError> {
    let lab = Lab::up(Some(lab_name), &exercise.scenario, exercise.lab_options())?;
    let broken = (|| -> Result<_, ExerciseError> {
        for a in &exercise.breaks {
            interrupt::check()?;
            observe::apply(&lab, a)?;
        }
        interrupt::check()?;
        let mut snaps = Vec::new();
        for (m, t) in observe::watched(exercise) {
            let s = observe::snapshot(&lab, &m, t.as_deref())?;
            snaps.push((observe::snapshot_key(&m, t.as_deref()), s));
        }
        Ok(snaps)
    })();
    match broken {
        Ok(snapshots) => Ok(snapshots),
        Err(e) => {
            if let Err(down) = lab::down(Some(lab_name)) {
                tracing::warn!("removing the half-built exercise lab: {down}");
            }
            Err(e)
        }
    }
}

/// `exercise start`: records the attempt (phase `starting`), builds the
/// lab, plants the fault, then marks it ready. `vars` fixes the draw
/// (selftest); otherwise `seed` picks it (random by default).
pub fn start(
    source: &Source,
    lab_name: Option<&str>,
    seed: Option<u64>,
    vars: Option<Vars>,
) -> Result<Running, ExerciseError> {
    let lab_name = lab_name.unwrap_or(DEFAULT_LAB);
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    let mut vars = vars.unwrap_or_else(|| catalog::choose(source, lab_name, seed));
    vars.insert(
        template::LAB.to_owned(),
        model::Value::Str(lab_name.to_owned()),
    );
    let exercise = catalog::instantiate(source, &vars)?;
    let attempt = Attempt::new(
        source.id(),
        lab_name,
        seed,
        vars,
        &source.file,
        &source.text,
    );
    // First the record: a start killed at any moment leaves an attempt
    // that `stop` and `reset` know about.
    attempt.create()?;
    let built = build(&exercise, lab_name).and_then(|snapshots| {
        Ok(Attempt::update(lab_name, |a| {
            a.snapshots = snapshots.into_iter().collect();
            a.phase = Phase::Ready;
            Ok(())
        })?)
    });
    match built {
        Ok((attempt, ())) => Ok(Running { attempt, exercise }),
        Err(e) => {
            if let Err(rm) = attempt.remove() {
                tracing::warn!("removing the attempt's record: {rm}");
            }
            if matches!(e, ExerciseError::Attempt(_))
                && let Err(down) = lab::down(Some(lab_name))
            {
                tracing::warn!("removing the exercise lab: {down}");
            }
            Err(e)
        }
    }
}

fn open_lab(attempt: &Attempt) -> Result<Lab, ExerciseError> {
    Lab::open(&attempt.lab).map_err(|e| match e {
        LabError::NotUp(name) => ExerciseError::LabGone(name),
        e => e.into(),
    })
}

/// `exercise check`: every task and guard, observed; remembered in the
/// attempt. One check of a lab at a time; Ctrl-C records nothing.
pub fn check(run: &mut Running) -> Result<CheckReport, ExerciseError> {
    run.attempt.ready()?;
    let _one = run.attempt.check_lock()?;
    run.reload()?;
    run.attempt.ready()?;
    let lab = open_lab(&run.attempt)?;
    let report = observe::check(&lab, &run.attempt, &run.exercise)?;
    let passed: Vec<String> = report
        .tasks
        .iter()
        .filter(|t| t.passed)
        .map(|t| t.id.clone())
        .collect();
    let (attempt, ()) = Attempt::update(&run.attempt.lab, |a| {
        a.checks_run += 1;
        a.passed = passed;
        if report.passed && a.solved_unix.is_none() {
            a.solved_unix = Some(now_unix());
        }
        Ok(())
    })?;
    run.attempt = attempt;
    Ok(report)
}

/// A hint, as `exercise hint` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// 1-based.
    pub number: usize,
    pub total: usize,
    pub text: String,
    /// Asked again after the last one.
    pub repeated: bool,
}

/// `exercise hint`: the next hint; the last one again once all were shown.
pub fn hint(run: &mut Running) -> Result<Hint, ExerciseError> {
    let total = run.exercise.hints.len();
    let (attempt, repeated) = Attempt::update(&run.attempt.lab, |a| {
        let repeated = a.hints_used >= total;
        a.hints_used = (a.hints_used + 1).min(total);
        Ok(repeated)
    })?;
    run.attempt = attempt;
    let number = run.attempt.hints_used;
    let text = run
        .exercise
        .hints
        .get(number.saturating_sub(1))
        .cloned()
        .unwrap_or_default();
    Ok(Hint {
        number,
        total,
        text,
        repeated,
    })
}

/// `exercise solution`: marks it revealed.
pub fn reveal(run: &mut Running) -> Result<(), ExerciseError> {
    let (attempt, ()) = Attempt::update(&run.attempt.lab, |a| {
        a.solution_revealed = true;
        Ok(())
    })?;
    run.attempt = attempt;
    Ok(())
}

/// `exercise answer TEXT`: judged and recorded (capped by the exercise's
/// `max_answers`); an answer of a kind the exercise cannot judge is refused
/// with the kinds it can, and not counted. Returns whether it was right.
pub fn answer(run: &mut Running, text: &str) -> Result<bool, ExerciseError> {
    let text = text.trim().to_owned();
    let lab = open_lab(&run.attempt)?;
    let correct = match observe::judge(&lab, &run.exercise, &text) {
        Judgement::Right => true,
        Judgement::Wrong => false,
        Judgement::Unjudgeable(possible) => {
            return Err(ExerciseError::Unjudgeable(format!(
                "`{text}` is not an answer this exercise can judge: {possible}"
            )));
        }
    };
    let max = run.exercise.max_answers;
    let (attempt, ()) = Attempt::update(&run.attempt.lab, |a| {
        if let Some(max) = max
            && a.answers.len() >= max as usize
        {
            return Err(AttemptError::NoAnswersLeft {
                used: a.answers.len(),
                max,
            });
        }
        a.answers.push(AnswerRecord {
            text: text.clone(),
            unix: now_unix(),
            correct,
        });
        a.answer = Some(text.clone());
        Ok(())
    })?;
    run.attempt = attempt;
    Ok(correct)
}

/// Applies actions to the attempt's lab; an `answer` action sets the
/// answer without counting it (instructors' dry runs, selftest).
pub fn apply_actions(run: &mut Running, actions: &[Action]) -> Result<(), ExerciseError> {
    let lab = open_lab(&run.attempt)?;
    for a in actions {
        interrupt::check()?;
        match a {
            Action::Answer { text } => {
                let text = text.trim().to_owned();
                let (attempt, ()) = Attempt::update(&run.attempt.lab, |at| {
                    at.answer = Some(text);
                    Ok(())
                })?;
                run.attempt = attempt;
            }
            other => observe::apply(&lab, other)?,
        }
    }
    Ok(())
}

/// `exercise reset`: the lab rebuilt and broken again, same parameters.
/// Works from any phase (it is the way out of a killed start or reset).
pub fn reset(run: &mut Running) -> Result<(), ExerciseError> {
    let lab_name = run.attempt.lab.clone();
    let (attempt, ()) = Attempt::update(&lab_name, |a| {
        a.phase = Phase::Resetting;
        Ok(())
    })?;
    run.attempt = attempt;
    match lab::down(Some(&lab_name)) {
        Ok(_) | Err(LabError::NotUp(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let snapshots = build(&run.exercise, &lab_name)?;
    let (attempt, ()) = Attempt::update(&lab_name, |a| {
        a.snapshots = snapshots.into_iter().collect();
        a.passed.clear();
        a.answer = None;
        a.phase = Phase::Ready;
        Ok(())
    })?;
    run.attempt = attempt;
    Ok(())
}

/// `exercise stop`: the lab torn down, the attempt forgotten (from any
/// phase).
pub fn stop(run: &Running) -> Result<(), ExerciseError> {
    match lab::down(Some(&run.attempt.lab)) {
        Ok(_) | Err(LabError::NotUp(_)) => {}
        Err(e) => return Err(e.into()),
    }
    run.attempt.remove()?;
    Ok(())
}

/// The exercise running in `lab` when it hides the lab's service mode
/// (its answer): `lab status` leaves the mode out then.
pub fn conceals_mode(lab: &str) -> Option<String> {
    let run = Attempt::load(lab).ok().flatten().map(Running::of)?.ok()?;
    run.exercise.conceal_mode.then(|| run.exercise.id.clone())
}

/// Applies the reference solution (tests, and instructors' dry runs).
pub fn apply_solution(run: &mut Running) -> Result<(), ExerciseError> {
    let actions = run.exercise.solution.actions.clone();
    apply_actions(run, &actions)
}
