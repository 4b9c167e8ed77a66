//! A participant's attempt at an exercise, remembered across commands: one
//! JSON file per lab under /run/labctl/exercises (one exercise per lab).
//!
//! The record carries the exercise's own text, so `check`, `reset` and
//! `stop` never need the catalog (nor the `--dir` it came from). Every
//! change is a read-modify-write under one lock ([`Attempt::update`]), so
//! a `hint` given while a `check` runs is not lost. The phase says whether
//! the lab is in a known state: a `start` or `reset` that was killed
//! leaves `starting`/`resetting`, and `check` then asks for a reset
//! instead of judging a half-built lab.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::template::Vars;
use crate::{
    kernel::interrupt::{self, Stop},
    lab::state::{RecordLock, Records, StateError},
};

#[derive(Debug, Error)]
pub enum AttemptError {
    #[error(
        "no exercise is running in lab `{0}`; start one with `labctl exercise start ID` (see `labctl exercise list`)"
    )]
    NoneRunning(String),
    #[error("no exercise is running; start one with `labctl exercise start ID`")]
    NoneAtAll,
    #[error("exercises are running in several labs ({0}); say which with --lab")]
    Several(String),
    #[error(
        "lab `{lab}` already runs exercise `{id}`; stop it (`labctl exercise stop --lab {lab}`) or use another --lab"
    )]
    Busy { lab: String, id: String },
    #[error(
        "the lab of exercise `{id}` is not in a known state (an exercise {phase} was interrupted); run `labctl exercise reset{opt}` to rebuild it, or `labctl exercise stop{opt}`"
    )]
    NotReady {
        id: String,
        phase: &'static str,
        opt: String,
    },
    #[error(
        "no answers left: {used} of {max} given (see them with `labctl exercise status`); the instructor can show the solution"
    )]
    NoAnswersLeft { used: usize, max: u32 },
    #[error(
        "another `exercise check` of lab `{0}` has been running for {1} s; wait for it or stop it"
    )]
    CheckBusy(String, u64),
    #[error(transparent)]
    Interrupted(#[from] interrupt::Interrupted),
    #[error(transparent)]
    Record(#[from] StateError),
}

impl AttemptError {
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AttemptError::NoneRunning(_)
                | AttemptError::NoneAtAll
                | AttemptError::Several(_)
                | AttemptError::Busy { .. }
                | AttemptError::NotReady { .. }
                | AttemptError::NoAnswersLeft { .. }
                | AttemptError::Record(StateError::Name(_))
        )
    }
}

/// What a member looked like right after the break (for `unchanged`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub nft: String,
    pub routes: String,
}

/// Where the lab stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `start` is building and breaking the lab.
    Starting,
    /// Broken as the exercise wants it (and maybe fixed since).
    #[default]
    Ready,
    /// `reset` is rebuilding it.
    Resetting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "start",
            Phase::Ready => "ready",
            Phase::Resetting => "reset",
        }
    }
}

/// One answer the participant gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub text: String,
    pub unix: u64,
    /// Whether it was right, as judged when it was given.
    pub correct: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub exercise: String,
    pub lab: String,
    pub seed: u64,
    /// The placeholders of this attempt (randomized parameters).
    pub vars: Vars,
    /// Where the exercise came from (`exercises/ID.toml` or a path).
    pub file: String,
    /// The exercise file's text, as it was at the start.
    pub text: String,
    #[serde(default)]
    pub phase: Phase,
    pub started_unix: u64,
    pub hints_used: usize,
    pub solution_revealed: bool,
    /// The answer the checks judge (the last one given).
    pub answer: Option<String>,
    /// Every answer given, in order (kept across resets).
    #[serde(default)]
    pub answers: Vec<AnswerRecord>,
    /// Tasks that passed at the last check.
    pub passed: Vec<String>,
    pub checks_run: u32,
    /// Unix time of the first check that passed everything.
    pub solved_unix: Option<u64>,
    /// By `MEMBER` or `MEMBER FAMILY TABLE`.
    pub snapshots: BTreeMap<String, Snapshot>,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The attempts' records: one per lab, root's only (each holds the
/// exercise's answer).
const ATTEMPTS: Records = Records::private("exercises");

/// How long a check waits for another check of the same lab.
const CHECK_WAIT: Duration = Duration::from_secs(300);

/// Held while a check of one lab runs: two checks of one lab would send
/// their probes to the same servers and ports.
pub struct CheckLock(#[allow(dead_code, reason = "held for its Drop")] RecordLock);

impl Attempt {
    /// A fresh attempt, in phase `starting`.
    pub fn new(exercise: &str, lab: &str, seed: u64, vars: Vars, file: &str, text: &str) -> Self {
        Self {
            exercise: exercise.to_owned(),
            lab: lab.to_owned(),
            seed,
            vars,
            file: file.to_owned(),
            text: text.to_owned(),
            phase: Phase::Starting,
            started_unix: now_unix(),
            hints_used: 0,
            solution_revealed: false,
            answer: None,
            answers: Vec::new(),
            passed: Vec::new(),
            checks_run: 0,
            solved_unix: None,
            snapshots: BTreeMap::new(),
        }
    }

    /// The attempt in lab `lab`, if any.
    pub fn load(lab: &str) -> Result<Option<Self>, AttemptError> {
        Ok(ATTEMPTS.load(lab)?)
    }

    /// Every running attempt, by lab.
    pub fn all() -> Result<Vec<Self>, AttemptError> {
        Ok(ATTEMPTS.all()?)
    }

    /// The attempt in `lab`, or the only one running.
    pub fn find(lab: Option<&str>) -> Result<Self, AttemptError> {
        if let Some(lab) = lab {
            return Self::load(lab)?.ok_or_else(|| AttemptError::NoneRunning(lab.to_owned()));
        }
        let mut all = Self::all()?;
        match all.len() {
            0 => Err(AttemptError::NoneAtAll),
            1 => Ok(all.remove(0)),
            _ => Err(AttemptError::Several(
                all.iter()
                    .map(|a| a.lab.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// Records a new attempt; refused when the lab already has one.
    pub fn create(&self) -> Result<(), AttemptError> {
        let _lock = ATTEMPTS.lock()?;
        if let Some(existing) = ATTEMPTS.load::<Self>(&self.lab)? {
            return Err(AttemptError::Busy {
                lab: self.lab.clone(),
                id: existing.exercise,
            });
        }
        Ok(ATTEMPTS.save(&self.lab, self)?)
    }

    /// Changes the record of lab `lab` under the lock (read, change,
    /// write), and returns the record as written.
    pub fn update<T>(
        lab: &str,
        change: impl FnOnce(&mut Self) -> Result<T, AttemptError>,
    ) -> Result<(Self, T), AttemptError> {
        let _lock = ATTEMPTS.lock()?;
        let mut a: Self = ATTEMPTS
            .load(lab)?
            .ok_or_else(|| AttemptError::NoneRunning(lab.to_owned()))?;
        let out = change(&mut a)?;
        ATTEMPTS.save(lab, &a)?;
        Ok((a, out))
    }

    pub fn remove(&self) -> Result<(), AttemptError> {
        let _lock = ATTEMPTS.lock()?;
        ATTEMPTS.remove(&self.lab)?;
        ATTEMPTS.remove_lock(&self.lab, "check")?;
        Ok(())
    }

    /// Refuses unless the lab is in the state the exercise left it in.
    pub fn ready(&self) -> Result<(), AttemptError> {
        if self.phase == Phase::Ready {
            return Ok(());
        }
        Err(AttemptError::NotReady {
            id: self.exercise.clone(),
            phase: self.phase.as_str(),
            opt: format!(" --lab {}", self.lab),
        })
    }

    /// Waits (interruptibly, at most five minutes) until no other check of
    /// this lab runs.
    pub fn check_lock(&self) -> Result<CheckLock, AttemptError> {
        let stop = Stop::new().duration(Some(CHECK_WAIT));
        let mut said = false;
        loop {
            if let Some(lock) = ATTEMPTS.try_lock_named(&self.lab, "check")? {
                return Ok(CheckLock(lock));
            }
            stop.check()?;
            if stop.stopped() {
                return Err(AttemptError::CheckBusy(
                    self.lab.clone(),
                    stop.elapsed().as_secs(),
                ));
            }
            if !said {
                eprintln!(
                    "waiting for another check of lab `{}` to finish...",
                    self.lab
                );
                said = true;
            }
            stop.wait(Duration::from_millis(100));
        }
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> u64 {
        now_unix().saturating_sub(self.started_unix)
    }

    /// Answers given that were wrong.
    pub fn wrong_answers(&self) -> usize {
        self.answers.iter().filter(|a| !a.correct).count()
    }
}
