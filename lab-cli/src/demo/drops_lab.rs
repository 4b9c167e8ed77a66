//! The README's demo: bring up the `drops` lab, trace while each planted
//! fault fires, and report which faults produced their drop reason, then
//! tear the lab down. Progress is handed to a callback and each drop to a
//! trace [`Sink`], so the command prints and a test can collect.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{
    drops::session::{self, Sink, Summary, TraceOptions},
    kernel::interrupt,
    lab::{self, Lab, LabError, faults, scenario::Fault, state::LabState},
};

/// The demo's lab name (not the scenario's, so a learner's own `drops` lab
/// is never touched).
pub const DEMO_LAB: &str = "labctl-demo";

/// What the demo is doing, as it happens.
#[derive(Debug)]
pub enum Step<'a> {
    /// Bringing the lab up.
    LabUp,
    /// The tracer is being attached.
    Tracing,
    /// This fault is about to fire.
    Fault(&'a Fault),
    /// Every fault fired and the tracer stopped.
    Traced,
    /// The lab is gone (or could not be removed).
    LabDown(Result<(), &'a LabError>),
}

/// One fault: how many packets it sent and how many drops with its reason
/// the kernel counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultResult {
    pub fault: &'static Fault,
    pub sent: u32,
    pub seen: u64,
}

impl FaultResult {
    /// Every packet sent was counted (more: other drops with that reason
    /// elsewhere on the machine).
    pub fn passed(&self) -> bool {
        self.seen >= u64::from(self.sent)
    }
}

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub faults: Vec<FaultResult>,
    pub summary: Summary,
    pub elapsed: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.faults.iter().all(FaultResult::passed)
    }
}

/// Tears the demo lab down however the demo ends (error, Ctrl-C, panic).
struct LabGuard<F: FnMut(Step<'_>)> {
    lab: Option<Lab>,
    on_step: F,
}

impl<F: FnMut(Step<'_>)> LabGuard<F> {
    fn down(&mut self) {
        if let Some(lab) = self.lab.take() {
            let result = lab.down();
            (self.on_step)(Step::LabDown(result.as_ref().map(|_| ())));
        }
    }
}

impl<F: FnMut(Step<'_>)> Drop for LabGuard<F> {
    fn drop(&mut self) {
        self.down();
    }
}

/// Runs the demo with `per_fault` packets per fault; each drop goes to
/// `sink` (on the tracer's thread), each step to `on_step`.
pub fn run(
    per_fault: u32,
    sink: impl Sink + Send + 'static,
    mut on_step: impl FnMut(Step<'_>),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    // A demo interrupted hard (kill -9) leaves its lab; it is ours, remove it.
    if LabState::load(DEMO_LAB)?.is_some() {
        lab::down(Some(DEMO_LAB)).context("removing the lab of an earlier demo")?;
    }
    on_step(Step::LabUp);
    let lab = Lab::up(Some(DEMO_LAB), "drops", Default::default())
        .context("cannot bring up the drops lab")?;
    let mut guard = LabGuard {
        lab: Some(lab),
        on_step,
    };
    let (faults, summary) = match guard.lab.as_ref() {
        Some(lab) => trace_faults(lab, per_fault, sink, &mut guard.on_step)?,
        None => unreachable!("the guard was just filled"),
    };
    guard.down();
    Ok(Report {
        faults,
        summary,
        elapsed: started.elapsed(),
    })
}

/// Traces while each fault of the lab fires; the faults with their counts.
fn trace_faults(
    lab: &Lab,
    per_fault: u32,
    sink: impl Sink + Send + 'static,
    on_step: &mut impl FnMut(Step<'_>),
) -> anyhow::Result<(Vec<FaultResult>, Summary)> {
    on_step(Step::Tracing);
    let opts = TraceOptions {
        // A backstop: the demo stops the tracer itself once the faults fired.
        duration: Some(Duration::from_secs(50)),
        netns_aliases: Some(lab::names::member_names),
        ..TraceOptions::default()
    };
    let tracer = session::start(opts, sink)?;
    let mut sent = Vec::new();
    for fault in lab.plan.scenario.faults {
        if tracer.is_finished() || interrupt::requested() {
            break;
        }
        on_step(Step::Fault(fault));
        let report = faults::trigger(lab, fault, per_fault)
            .with_context(|| format!("cannot trigger fault `{}`", fault.name()))?;
        sent.push((fault, report.sent));
        // Let the tracer print this fault's drops before the next header.
        interrupt::wait(Duration::from_millis(300));
    }
    let summary = tracer.stop()?;
    interrupt::check()?;
    on_step(Step::Traced);
    let results = sent
        .into_iter()
        .map(|(fault, sent)| FaultResult {
            fault,
            sent,
            seen: summary.by_reason.get(fault.reason).copied().unwrap_or(0),
        })
        .collect();
    Ok((results, summary))
}
