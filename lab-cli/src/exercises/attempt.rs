//! A learner's attempt at an exercise, remembered across commands: one
//! JSON file per lab under /run/labctl/exercises (one exercise per lab).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lab::state::{Records, StateError};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub exercise: String,
    pub lab: String,
    pub seed: u64,
    /// The placeholders of this attempt (randomized parameters).
    pub vars: BTreeMap<String, String>,
    /// Where the exercise was loaded from (None: the shipped ones).
    pub dir: Option<PathBuf>,
    pub started_unix: u64,
    pub hints_used: usize,
    pub solution_revealed: bool,
    pub answer: Option<String>,
    /// Tasks that passed at the last check.
    pub passed: Vec<String>,
    pub checks_run: u32,
    /// Unix time of the first check that passed everything.
    pub solved_unix: Option<u64>,
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

impl Attempt {
    /// A fresh attempt at exercise `exercise` in lab `lab`.
    pub fn new(
        exercise: &str,
        lab: &str,
        seed: u64,
        vars: BTreeMap<String, String>,
        dir: Option<PathBuf>,
    ) -> Self {
        Self {
            exercise: exercise.to_owned(),
            lab: lab.to_owned(),
            seed,
            vars,
            dir,
            started_unix: now_unix(),
            hints_used: 0,
            solution_revealed: false,
            answer: None,
            passed: Vec::new(),
            checks_run: 0,
            solved_unix: None,
            snapshots: BTreeMap::new(),
        }
    }

    pub fn path(lab: &str) -> PathBuf {
        ATTEMPTS.path(lab)
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

    pub fn save(&self) -> Result<(), AttemptError> {
        Ok(ATTEMPTS.save(&self.lab, self)?)
    }

    pub fn remove(&self) -> Result<(), AttemptError> {
        Ok(ATTEMPTS.remove(&self.lab)?)
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> u64 {
        now_unix().saturating_sub(self.started_unix)
    }
}
