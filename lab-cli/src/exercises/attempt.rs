//! A learner's attempt at an exercise, remembered across commands: one
//! JSON file per lab under /run/labctl/exercises (one exercise per lab).

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lab::{
    plan::{PlanError, validate_name},
    state::RUN_DIR,
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
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the attempt record {path} is corrupt ({source}); stop the exercise and start again")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Name(#[from] PlanError),
}

impl AttemptError {
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AttemptError::NoneRunning(_)
                | AttemptError::NoneAtAll
                | AttemptError::Several(_)
                | AttemptError::Busy { .. }
                | AttemptError::Name(_)
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

fn dir() -> PathBuf {
    Path::new(RUN_DIR).join("exercises")
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AttemptError {
    let path = path.to_owned();
    move |source| AttemptError::Io {
        action,
        path,
        source,
    }
}

impl Attempt {
    pub fn path(lab: &str) -> PathBuf {
        dir().join(format!("{lab}.json"))
    }

    /// The attempt in lab `lab`, if any.
    pub fn load(lab: &str) -> Result<Option<Self>, AttemptError> {
        validate_name(lab)?;
        let path = Self::path(lab);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| AttemptError::Corrupt { path, source })
    }

    /// Every running attempt.
    pub fn all() -> Result<Vec<Self>, AttemptError> {
        let dir = dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let name = entry
                .map_err(io_err("list", &dir))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if let Some(lab) = name.strip_suffix(".json")
                && validate_name(lab).is_ok()
                && let Some(a) = Self::load(lab)?
            {
                all.push(a);
            }
        }
        all.sort_by(|a, b| a.lab.cmp(&b.lab));
        Ok(all)
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

    /// Written atomically (write + rename).
    pub fn save(&self) -> Result<(), AttemptError> {
        let dir = dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = Self::path(&self.lab);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| AttemptError::Corrupt {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("write", &path))
    }

    pub fn remove(&self) -> Result<(), AttemptError> {
        let path = Self::path(&self.lab);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// An attempt with nothing in it, for running traffic while breaking a
    /// lab (before the real attempt exists).
    pub fn placeholder(lab: &str) -> Self {
        Self {
            exercise: String::new(),
            lab: lab.to_owned(),
            seed: 0,
            vars: BTreeMap::new(),
            dir: None,
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

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> u64 {
        now_unix().saturating_sub(self.started_unix)
    }
}
