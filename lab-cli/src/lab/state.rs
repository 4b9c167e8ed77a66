//! What labctl remembers about the labs it built, and the lock that
//! serializes `up` and `down`.
//!
//! One JSON file per lab under /run/labctl/labs (tmpfs, cleared at boot like
//! /run/netns itself). Each namespace is recorded with its inode right after
//! it is created, so `down` finds everything even after a crash in the middle
//! of `up`, and never deletes a namespace that was replaced by someone else's
//! with the same name.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::plan::{LabOptions, PlanError, validate_name};

pub const RUN_DIR: &str = "/run/labctl";

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
    #[error(
        "the lab record {path} is corrupt ({source}); delete it after checking `ip netns list`"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
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
}

fn labs_dir() -> PathBuf {
    Path::new(RUN_DIR).join("labs")
}

impl LabState {
    pub fn path(lab: &str) -> PathBuf {
        labs_dir().join(format!("{lab}.json"))
    }

    /// The record of `lab`, if it is up (or half up). The name is checked
    /// as `lab up --name` checks it, so it never leads out of the labs
    /// directory.
    pub fn load(lab: &str) -> Result<Option<Self>, StateError> {
        validate_name(lab)?;
        let path = Self::path(lab);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Every recorded lab, sorted by name.
    pub fn all() -> Result<Vec<Self>, StateError> {
        let dir = labs_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut labs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(lab) = name.strip_suffix(".json")
                && validate_name(lab).is_ok()
                && let Some(state) = Self::load(lab)?
            {
                labs.push(state);
            }
        }
        labs.sort_by(|a, b| a.lab.cmp(&b.lab));
        Ok(labs)
    }

    /// Writes the record atomically (write + rename), so a crash never
    /// leaves half a file.
    pub fn save(&self) -> Result<(), StateError> {
        let dir = labs_dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = Self::path(&self.lab);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("write", &path))
    }

    pub fn remove(&self) -> Result<(), StateError> {
        let path = Self::path(&self.lab);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }
}

/// Held while a lab is being built or torn down.
pub struct LabLock {
    _lock: Flock<File>,
}

impl LabLock {
    /// Takes the lock, waiting (and saying so) while another command holds it.
    pub fn acquire() -> Result<Self, StateError> {
        fs::create_dir_all(RUN_DIR).map_err(io_err("create", Path::new(RUN_DIR)))?;
        let path = Path::new(RUN_DIR).join("lock");
        let open = || {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))
        };
        let lock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::Error::EWOULDBLOCK)) => {
                eprintln!("waiting for another `labctl lab` command to finish...");
                Flock::lock(open()?, FlockArg::LockExclusive)
                    .map_err(|(_, e)| io_err("lock", &path)(e.into()))?
            }
            Err((_, e)) => return Err(io_err("lock", &path)(e.into())),
        };
        Ok(Self { _lock: lock })
    }
}
