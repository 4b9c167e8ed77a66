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
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

use super::plan::{LabOptions, PlanError, validate_name};
use crate::services::ServiceSpec;

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
    /// cgroups made for the pods (socket-LB), in creation order; inode 0:
    /// recorded before it was made.
    #[serde(default)]
    pub cgroups: Vec<CgroupRecord>,
    /// The lab's services, as `svc add|del|backend` left them.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
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
/// directory; writes are atomic (write + rename), so a crash never leaves
/// half a file.
pub struct Records {
    dir: &'static str,
}

/// The labs' records.
pub const LABS: Records = Records::new("labs");

impl Records {
    pub const fn new(dir: &'static str) -> Self {
        Self { dir }
    }

    fn dir(&self) -> PathBuf {
        Path::new(RUN_DIR).join(self.dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.json"))
    }

    /// The record `name`, if there is one.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        validate_name(name)?;
        let path = self.path(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Every record, sorted by name.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, StateError> {
        let dir = self.dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let file = entry.map_err(io_err("list", &dir))?.file_name();
            if let Some(name) = file.to_string_lossy().strip_suffix(".json")
                && validate_name(name).is_ok()
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(record) = self.load(&name)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub fn save<T: Serialize>(&self, name: &str, record: &T) -> Result<(), StateError> {
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = self.path(name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(record).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("write", &path))
    }

    /// The lock every read-modify-write of these records holds
    /// (`RUN_DIR/DIR.lock`); held for the change only, never across
    /// anything slow.
    pub fn lock(&self) -> Result<RecordLock, StateError> {
        fs::create_dir_all(RUN_DIR).map_err(io_err("create", Path::new(RUN_DIR)))?;
        let path = Path::new(RUN_DIR).join(format!("{}.lock", self.dir));
        let file = open_lock_file(&path)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|lock| RecordLock { _lock: lock })
            .map_err(|(_, e)| io_err("lock", &path)(e.into()))
    }

    /// A lock of one record for one purpose (`NAME.PURPOSE.lock` beside
    /// the records), if no one else holds it.
    pub fn try_lock_named(
        &self,
        name: &str,
        purpose: &str,
    ) -> Result<Option<RecordLock>, StateError> {
        validate_name(name)?;
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let path = dir.join(format!("{name}.{purpose}.lock"));
        match Flock::lock(open_lock_file(&path)?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(RecordLock { _lock: lock })),
            Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io_err("lock", &path)(e.into())),
        }
    }

    /// Removes a record's `PURPOSE` lock file (with the record).
    pub fn remove_lock(&self, name: &str, purpose: &str) -> Result<(), StateError> {
        validate_name(name)?;
        let path = self.dir().join(format!("{name}.{purpose}.lock"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
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

/// A lock file: created if missing (mode 0600), never through a link.
fn open_lock_file(path: &Path) -> Result<File, StateError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("open", path))
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
