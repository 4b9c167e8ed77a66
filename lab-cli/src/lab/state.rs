//! What labctl remembers about the labs it built, and the lock that
//! serializes `up` and `down`.
//!
//! One JSON file per lab under /run/labctl/labs (tmpfs, cleared at boot like
//! /run/netns itself). Each namespace is recorded with its inode right after
//! it is created, so `down` finds everything even after a crash in the middle
//! of `up`, and never deletes a namespace that was replaced by someone else's
//! with the same name.

use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

use super::plan::{LabOptions, PlanError, validate_name};
use crate::{
    kernel::{
        interrupt::Interrupted,
        locks::{self, LockWait},
        safefile::{Dir, SafeFileError},
        sockets::Holder,
    },
    policy::{Policy, identity::Identities, model::Labels},
    services::ServiceSpec,
};

pub const RUN_DIR: &str = "/run/labctl";

/// A temporary record file older than this was left by a killed command
/// (a save takes microseconds between creating and renaming it).
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum StateError {
    /// A lab name a user typed that `lab up --name` would refuse.
    #[error(transparent)]
    Name(#[from] PlanError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    File(#[from] SafeFileError),
    #[error(
        "the lab record {path} is corrupt ({source}); delete it after checking `ip netns list`"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "interrupted while waiting for {what}{}; nothing was changed",
        holder.as_ref().map(|h| format!(", which {h} holds")).unwrap_or_default()
    )]
    Interrupted {
        what: &'static str,
        holder: Option<Holder>,
        source: Interrupted,
    },
}

/// Takes the exclusive lock of `file` (`what` in messages), saying so
/// while another command holds it; Ctrl-C / SIGTERM ends the wait.
fn lock_waiting(
    file: File,
    path: &Path,
    what: &'static str,
    waiting: impl FnOnce(Option<&Holder>),
) -> Result<Flock<File>, StateError> {
    locks::exclusive(file, waiting).map_err(|e| match e {
        LockWait::Interrupted(holder, source) => StateError::Interrupted {
            what,
            holder,
            source,
        },
        LockWait::Failed(e) => io_err("lock", path)(e.into()),
        // `exclusive` waits until a signal: it never times out.
        LockWait::TimedOut(_) => io_err("lock", path)(io::ErrorKind::TimedOut.into()),
    })
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub name: String,
    pub inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub lab: String,
    pub scenario: String,
    pub options: LabOptions,
    /// False while `up` is still building (or if it crashed).
    pub complete: bool,
    pub namespaces: Vec<NamespaceRecord>,
    /// cgroups made for the pods (socket-LB), in creation order; inode 0:
    /// recorded before it was made.
    #[serde(default)]
    pub cgroups: Vec<CgroupRecord>,
    /// The lab's services, as `svc add|del|backend` left them.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// The lab's network policies, as `policy apply|delete` left them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    /// The Kubernetes labels of each pod `lab pod label` changed (the
    /// others have the scenario's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Labels>,
    /// The pods' security identities as last allocated (unset: allocated
    /// afresh from the pods, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identities: Option<Identities>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// Relative to the cgroup2 root.
    pub path: String,
    pub inode: u64,
}

/// JSON records, one file per lab name (`NAME.json`), in a directory
/// under /run/labctl: the labs themselves, the exercise attempts. Names are
/// checked as `lab up --name` checks them, so a path never leads out of the
/// directory; the directory is checked (root's, nobody else can write in
/// it) and made without following links, and writes go through
/// `kernel::safefile` (a fresh temporary file renamed into place), so a
/// crash never leaves half a file and a planted link is never followed.
pub struct Records {
    dir: &'static str,
    dir_mode: u32,
    file_mode: u32,
}

/// The labs' records.
pub const LABS: Records = Records::new("labs");

impl Records {
    /// Records anyone may read (directory 0755, files 0644).
    pub const fn new(dir: &'static str) -> Self {
        Self {
            dir,
            dir_mode: 0o755,
            file_mode: 0o644,
        }
    }

    /// Records only root may read (directory 0700, files 0600): they hold
    /// something a learner must not see, such as an exercise's answer.
    pub const fn private(dir: &'static str) -> Self {
        Self {
            dir,
            dir_mode: 0o700,
            file_mode: 0o600,
        }
    }

    fn dir(&self) -> PathBuf {
        Path::new(RUN_DIR).join(self.dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.json"))
    }

    fn file(name: &str) -> OsString {
        OsString::from(format!("{name}.json"))
    }

    /// The record `name`, if there is one.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        validate_name(name)?;
        match Dir::existing_private(&self.dir())? {
            Some(dir) => Self::load_in(&dir, name),
            None => Ok(None),
        }
    }

    fn load_in<T: DeserializeOwned>(dir: &Dir, name: &str) -> Result<Option<T>, StateError> {
        let file = Self::file(name);
        let Some(text) = dir.read(&file)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt {
                path: dir.join(&file),
                source,
            })
    }

    /// Every record, sorted by name.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, StateError> {
        let Some(dir) = Dir::existing_private(&self.dir())? else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for file in dir.names()? {
            if let Some(name) = file.to_string_lossy().strip_suffix(".json")
                && validate_name(name).is_ok()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(record) = Self::load_in(&dir, &name)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub fn save<T: Serialize>(&self, name: &str, record: &T) -> Result<(), StateError> {
        validate_name(name)?;
        let text = serde_json::to_string_pretty(record).map_err(|source| StateError::Corrupt {
            path: self.path(name),
            source,
        })?;
        let dir = Dir::private(&self.dir(), self.dir_mode)?;
        dir.write(&Self::file(name), text.as_bytes(), self.file_mode)?;
        // What a command killed in the middle of a save left (the record
        // itself is saved: a failure here is only worth a warning).
        if let Err(e) = dir.sweep_temps(STALE_TEMP) {
            tracing::warn!("{e}");
        }
        Ok(())
    }

    /// The lock every read-modify-write of these records holds
    /// (`RUN_DIR/DIR.lock`); held for the change only, never across
    /// anything slow.
    pub fn lock(&self) -> Result<RecordLock, StateError> {
        let run = Dir::private(Path::new(RUN_DIR), 0o755)?;
        let name = OsString::from(format!("{}.lock", self.dir));
        let path = run.join(&name);
        let what = "the records' lock";
        lock_waiting(run.lock_file(&name, 0o600)?, &path, what, |holder| {
            tracing::info!(
                "waiting for {}, held by {}",
                path.display(),
                holder.map_or("?".into(), ToString::to_string)
            );
        })
        .map(|lock| RecordLock { _lock: lock })
    }

    /// A lock of one record for one purpose (`NAME.PURPOSE.lock` beside
    /// the records), if no one else holds it.
    pub fn try_lock_named(
        &self,
        name: &str,
        purpose: &str,
    ) -> Result<Option<RecordLock>, StateError> {
        validate_name(name)?;
        let dir = Dir::private(&self.dir(), self.dir_mode)?;
        let file = OsString::from(format!("{name}.{purpose}.lock"));
        let path = dir.join(&file);
        match Flock::lock(
            dir.lock_file(&file, self.file_mode)?,
            FlockArg::LockExclusiveNonblock,
        ) {
            Ok(lock) => Ok(Some(RecordLock { _lock: lock })),
            Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io_err("lock", &path)(e.into())),
        }
    }

    /// Removes a record's `PURPOSE` lock file (with the record).
    pub fn remove_lock(&self, name: &str, purpose: &str) -> Result<(), StateError> {
        validate_name(name)?;
        if let Some(dir) = Dir::existing_private(&self.dir())? {
            dir.remove(&OsString::from(format!("{name}.{purpose}.lock")))?;
        }
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        validate_name(name)?;
        if let Some(dir) = Dir::existing_private(&self.dir())? {
            dir.remove(&Self::file(name))?;
        }
        Ok(())
    }
}

impl LabState {
    pub fn path(lab: &str) -> PathBuf {
        LABS.path(lab)
    }

    /// The record of `lab`, if it is up (or half up).
    pub fn load(lab: &str) -> Result<Option<Self>, StateError> {
        LABS.load(lab)
    }

    /// Every recorded lab, sorted by name.
    pub fn all() -> Result<Vec<Self>, StateError> {
        LABS.all()
    }

    pub fn save(&self) -> Result<(), StateError> {
        LABS.save(&self.lab, self)
    }

    pub fn remove(&self) -> Result<(), StateError> {
        LABS.remove(&self.lab)
    }
}

/// Held while records are changed (see [`Records::lock`]).
pub struct RecordLock {
    _lock: Flock<File>,
}

/// Held while a lab is being built or torn down.
pub struct LabLock {
    _lock: Flock<File>,
}

impl LabLock {
    /// Takes the lock, waiting (and saying so, with who holds it) while
    /// another command holds it; Ctrl-C / SIGTERM ends the wait
    /// ([`StateError::Interrupted`], exit 130).
    pub fn acquire() -> Result<Self, StateError> {
        let dir = Dir::private(Path::new(RUN_DIR), 0o755)?;
        let path = dir.join(OsStr::new("lock"));
        let file = dir.lock_file(OsStr::new("lock"), 0o644)?;
        let lock = lock_waiting(file, &path, "the lab lock", |holder| {
            eprintln!("waiting for another `labctl lab` command to finish (Ctrl-C to give up)...");
            if let Some(h) = holder {
                // One row of 80 columns, however long its command line.
                let line = format!("  held by pid {}: {}", h.pid, h.command);
                let mut row: String = line.chars().take(79).collect();
                if row.len() < line.len() {
                    row.push('…');
                }
                eprintln!("{row}");
            }
        })?;
        Ok(Self { _lock: lock })
    }
}
