//! cgroup v2 directories labctl makes for lab pods (socket-LB attaches to
//! them), and moving a process into one.
//!
//! A directory is created without following links (`mkdir` never does) and
//! its inode is returned, so the caller can record it and later remove only
//! the directory it created.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error(
        "no cgroup2 hierarchy is mounted (socket-LB attaches to a cgroup v2 directory); mount one: `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroup2,
    #[error("cannot {action} cgroup {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is not the cgroup labctl created (inode {found}, expected {expected}); left it alone"
    )]
    NotOurs {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io {
        action,
        path,
        source,
    }
}

/// Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup on unified
/// systems, /sys/fs/cgroup/unified on hybrid ones such as this kind's nodes).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// `name` (a relative path of plain components) under the cgroup2 root.
pub fn path(name: &str) -> Result<PathBuf, CgroupError> {
    Ok(cgroup2_root().ok_or(CgroupError::NoCgroup2)?.join(name))
}

/// Creates the cgroup `path` (its parent must exist); returns its inode.
pub fn create(path: &Path) -> Result<u64, CgroupError> {
    fs::create_dir(path).map_err(io_err("create", path))?;
    Ok(fs::symlink_metadata(path)
        .map_err(io_err("inspect", path))?
        .ino())
}

/// The inode of cgroup `path`, if it is there (a real directory).
pub fn inode(path: &Path) -> Result<Option<u64>, CgroupError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(Some(m.ino())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("inspect", path)(e)),
    }
}

/// Removes cgroup `path` if it is the one with inode `expected` (0: not
/// recorded, removed only when empty, which `rmdir` checks). Gone already
/// is not an error.
pub fn remove(path: &Path, expected: u64) -> Result<(), CgroupError> {
    let Some(found) = inode(path)? else {
        return Ok(());
    };
    if expected != 0 && found != expected {
        return Err(CgroupError::NotOurs {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Moves this process (every thread) into cgroup `path`: the sockets it
/// creates from now on belong to that cgroup.
pub fn join(path: &Path) -> Result<(), CgroupError> {
    let procs = path.join("cgroup.procs");
    fs::write(&procs, "0\n").map_err(io_err("join", path))
}

/// `cgroup.procs` of `path`, opened for writing: a child writes "0" to it
/// between fork and exec to join the cgroup (see `lab::exec`).
pub fn procs_file(path: &Path) -> Result<fs::File, CgroupError> {
    let procs = path.join("cgroup.procs");
    fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(io_err("open", path))
}

/// This process in another cgroup until dropped, then back where it was:
/// for a check that acts as a pod for a moment (the sockets it creates
/// meanwhile stay the pod's).
#[derive(Debug)]
pub struct Joined {
    previous: PathBuf,
}

impl Joined {
    pub fn enter(path: &Path) -> Result<Self, CgroupError> {
        let me = fs::read_to_string("/proc/self/cgroup")
            .map_err(io_err("read", Path::new("/proc/self/cgroup")))?;
        let rel = me
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned();
        let previous = cgroup2_root().ok_or(CgroupError::NoCgroup2)?.join(rel);
        join(path)?;
        Ok(Self { previous })
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Err(e) = join(&self.previous) {
            tracing::warn!("cannot return to cgroup {}: {e}", self.previous.display());
        }
    }
}
