//! `labctl exercise selftest`: the protocol a room relies on, run for real
//! on one draw of an exercise's parameters: the broken lab fails (tasks
//! marked `keep_working` excepted) and trips no guard; the solution
//! passes; every alternative passes; every shortcut fails a guard; a
//! reset breaks it again with the same parameters; `stop` leaves nothing.
//! The shipped exercises' integration test runs exactly this.

use std::time::Instant;

use serde::Serialize;

use super::{
    ExerciseError, Running,
    catalog::Source,
    model::Action,
    observe::CheckReport,
    template::{self, Vars},
};
use crate::{
    kernel::{interrupt, netns::NetNs},
    lab::state::LabState,
};

/// An error and its causes in one line (each cause once).
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// One step's result.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `start`, `broken`, `solution`, `alternative: NAME`, `shortcut:
    /// NAME`, `reset`, `stop`.
    pub name: String,
    pub ok: bool,
    /// What went wrong (or, for a shortcut, the guard that caught it).
    pub detail: Vec<String>,
    pub elapsed_ms: u64,
}

/// One draw's protocol.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub exercise: String,
    /// The draw, as `name=value ...`.
    pub variant: String,
    pub lab: String,
    pub steps: Vec<Step>,
    pub passed: bool,
}

/// What is wrong with a check of the broken lab: tasks that pass
/// although not marked `keep_working`, keep-working tasks that fail, and
/// guards that fail before any fix.
fn broken_problems(report: &CheckReport) -> Vec<String> {
    let mut out = Vec::new();
    for t in &report.tasks {
        if t.keep_working && !t.passed {
            out.push(format!(
                "task `{}` is marked keep_working but fails in the broken lab: {}",
                t.id,
                t.failures.join("; ")
            ));
        }
        if !t.keep_working && t.passed {
            out.push(format!(
                "task `{}` passes in the broken lab: mark it keep_working, or check what is broken",
                t.id
            ));
        }
    }
    for g in &report.guards {
        if !g.passed {
            out.push(format!(
                "guard `{}` fails before any fix (it would accuse a participant of a shortcut): {}",
                g.title,
                g.failures.join("; ")
            ));
        }
    }
    if report.passed {
        out.push("the broken lab passes the check".into());
    }
    out
}

fn failures(report: &CheckReport) -> Vec<String> {
    report
        .tasks
        .iter()
        .chain(&report.guards)
        .filter(|t| !t.passed)
        .map(|t| format!("{}: {}", t.title, t.failures.join("; ")))
        .collect()
}

struct Run<'a> {
    steps: Vec<Step>,
    progress: &'a mut dyn FnMut(&Step),
}

impl Run<'_> {
    fn record(&mut self, name: String, started: Instant, detail: Vec<String>) -> bool {
        let step = Step {
            ok: detail.is_empty(),
            name,
            detail,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        (self.progress)(&step);
        let ok = step.ok;
        self.steps.push(step);
        ok
    }
}

/// Runs the protocol on draw `vars` in lab `lab`, telling `progress`
/// about each step as it ends. The lab is gone afterwards whatever
/// happened; Ctrl-C stops after cleaning up.
pub fn run(
    source: &Source,
    vars: Vars,
    lab: &str,
    progress: &mut dyn FnMut(&Step),
) -> Result<Report, ExerciseError> {
    let variant = template::describe(&vars);
    let mut r = Run {
        steps: Vec::new(),
        progress,
    };
    let started = Instant::now();
    let mut running = match super::start(source, Some(lab), None, Some(vars.clone())) {
        Ok(run) => {
            r.record("start".into(), started, Vec::new());
            run
        }
        Err(e) => {
            let interrupted = e.is_interrupted();
            r.record("start".into(), started, vec![chain(&e)]);
            if interrupted {
                return Err(e);
            }
            return Ok(Report {
                exercise: source.id().to_owned(),
                variant,
                lab: lab.to_owned(),
                passed: false,
                steps: r.steps,
            });
        }
    };
    let namespaces: Vec<String> = LabState::load(lab)
        .ok()
        .flatten()
        .map(|s| s.namespaces.into_iter().map(|n| n.name).collect())
        .unwrap_or_default();
    let body = protocol(&mut r, &mut running, &vars);
    // Whatever happened: stop, and prove nothing is left.
    let started = Instant::now();
    let mut left = Vec::new();
    if let Err(e) = super::stop(&running) {
        left.push(chain(&e));
    }
    if LabState::load(lab).ok().flatten().is_some() {
        left.push(format!("the record of lab {lab} is left"));
    }
    if super::attempt::Attempt::load(lab).ok().flatten().is_some() {
        left.push(format!("the attempt in lab {lab} is left"));
    }
    for ns in &namespaces {
        if NetNs::open(ns).is_ok() {
            left.push(format!("namespace {ns} is left"));
        }
    }
    r.record("stop".into(), started, left);
    body?;
    let passed = r.steps.iter().all(|s| s.ok);
    Ok(Report {
        exercise: source.id().to_owned(),
        variant,
        lab: lab.to_owned(),
        steps: r.steps,
        passed,
    })
}

fn check(running: &mut Running) -> Result<Result<CheckReport, String>, ExerciseError> {
    match super::check(running) {
        Ok(report) => Ok(Ok(report)),
        Err(e) if e.is_interrupted() => Err(e),
        Err(e) => Ok(Err(chain(&e))),
    }
}

/// Resets, applies `actions`, checks.
fn try_fix(
    running: &mut Running,
    actions: &[Action],
) -> Result<Result<CheckReport, String>, ExerciseError> {
    if let Err(e) = super::reset(running) {
        if e.is_interrupted() {
            return Err(e);
        }
        return Ok(Err(format!("reset: {}", chain(&e))));
    }
    if let Err(e) = super::apply_actions(running, actions) {
        if e.is_interrupted() {
            return Err(e);
        }
        return Ok(Err(format!("applying it: {}", chain(&e))));
    }
    check(running)
}

fn protocol(r: &mut Run<'_>, running: &mut Running, vars: &Vars) -> Result<(), ExerciseError> {
    let ex = running.exercise.clone();
    // Broken: what is broken fails, what must keep working works, no
    // guard accuses anyone yet.
    let started = Instant::now();
    let detail = match check(running)? {
        Ok(report) => broken_problems(&report),
        Err(e) => vec![e],
    };
    r.record("broken".into(), started, detail);
    interrupt::check()?;
    // The reference solution passes.
    let started = Instant::now();
    let detail = match super::apply_solution(running) {
        Ok(()) => match check(running)? {
            Ok(report) => failures(&report),
            Err(e) => vec![e],
        },
        Err(e) if e.is_interrupted() => return Err(e),
        Err(e) => vec![format!("applying it: {}", chain(&e))],
    };
    r.record("solution".into(), started, detail);
    for alt in &ex.alternatives {
        interrupt::check()?;
        let started = Instant::now();
        let detail = match try_fix(running, &alt.actions)? {
            Ok(report) => failures(&report),
            Err(e) => vec![e],
        };
        r.record(format!("alternative: {}", alt.name), started, detail);
    }
    for sc in &ex.shortcuts {
        interrupt::check()?;
        let started = Instant::now();
        let detail = match try_fix(running, &sc.actions)? {
            Ok(report) if report.caught() => Vec::new(),
            Ok(report) if report.passed => vec!["it passes the check: no guard catches it".into()],
            Ok(_) => vec![
                "it fails a task, but no guard (nor a task with a `why`) catches it: a participant would not be told why"
                    .into(),
            ],
            Err(e) => vec![e],
        };
        r.record(format!("shortcut: {}", sc.name), started, detail);
    }
    // Reset: broken again, same draw.
    interrupt::check()?;
    let started = Instant::now();
    let mut detail = Vec::new();
    match super::reset(running) {
        Ok(()) => {
            let same = running
                .attempt
                .vars
                .iter()
                .all(|(k, v)| k == template::LAB || vars.get(k) == Some(v));
            if !same {
                detail.push("the parameters changed".into());
            }
            match check(running)? {
                Ok(report) => detail.extend(broken_problems(&report)),
                Err(e) => detail.push(e),
            }
        }
        Err(e) if e.is_interrupted() => return Err(e),
        Err(e) => detail.push(chain(&e)),
    }
    r.record("reset".into(), started, detail);
    Ok(())
}
