//! Where labctl pins maps and links in the BPF filesystem: the layout, in
//! one place.
//!
//! ```text
//! /sys/fs/bpf/labctl/                  0700, root's
//!   ct-<netns inode>-<iface>/          `conntrack track`: table, counters
//!   nat-<netns inode>/                 eBPF masquerading: egress, ingress
//!                                      (tcx links), out, in, stats, pods
//!   lb-<netns inode>/                  a node's tc service load balancer:
//!                                      services, backends, revnat, ct,
//!                                      ct_rev, conns, from-<veth>, to-<veth>
//!   socklb-<cgroup inode>/             a lab's socket-LB: the same maps,
//!                                      connect4, sendmsg4, recvmsg4,
//!                                      getpeername4 (cgroup links)
//!   policy-<netns inode>/              a node's network policy (--policy-mode
//!                                      ebpf): ipcache, endpoints, policy, ct,
//!                                      metrics, stats, events, prog-from,
//!                                      prog-to, from-<veth>, to-<veth>
//! ```

use std::{
    fs::{DirBuilder, File},
    io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use super::error::ProgramSetupError;
use crate::kernel::bpffs;

/// labctl's directory in bpffs.
pub fn root() -> PathBuf {
    Path::new(bpffs::BPFFS).join("labctl")
}

/// Mounts bpffs if needed and creates labctl's directory (mode 0700,
/// root's). bpffs is often mounted world-writable (mode 1777), so anyone
/// could have made the directory first: one that is not a real directory
/// owned by root and closed to others is refused, never used.
pub fn ensure_root() -> Result<PathBuf, ProgramSetupError> {
    bpffs::ensure_mounted()?;
    let root = root();
    match DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(ProgramSetupError::Io {
                path: root.clone(),
                source,
            });
        }
    }
    check_root(&root)?;
    Ok(root)
}

/// labctl's directory if it exists and is safe to read (see [`ensure_root`]).
pub fn existing_root() -> Result<Option<PathBuf>, ProgramSetupError> {
    let root = root();
    if std::fs::symlink_metadata(&root).is_err() {
        return Ok(None);
    }
    check_root(&root)?;
    Ok(Some(root))
}

fn check_root(root: &Path) -> Result<(), ProgramSetupError> {
    let meta = std::fs::symlink_metadata(root).map_err(|source| ProgramSetupError::Io {
        path: root.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    let problem = if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_owned())
    } else if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != 0 {
        Some(format!("is owned by uid {}, not root", meta.uid()))
    } else if mode & 0o022 != 0 {
        Some(format!("is writable by others (mode {mode:o})"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ProgramSetupError::UnsafePinDir {
            path: root.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// An exclusive lock on a pin directory, held by the process whose objects
/// are pinned there: a directory nobody holds was left by a killed run.
#[derive(Debug)]
pub struct PinLock {
    _lock: Flock<File>,
}

/// Locks `dir` (flock on the directory itself); `None` when another
/// process holds it.
pub fn lock(dir: &Path) -> Result<Option<PinLock>, ProgramSetupError> {
    let file = File::open(dir).map_err(|source| ProgramSetupError::Io {
        path: dir.to_owned(),
        source,
    })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(PinLock { _lock: lock })),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(ProgramSetupError::Io {
            path: dir.to_owned(),
            source: e.into(),
        }),
    }
}

/// Whether a live process holds `dir`'s lock.
pub fn is_held(dir: &Path) -> bool {
    let Ok(file) = File::open(dir) else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, nix::Error::EWOULDBLOCK))
    )
}

/// A tracker's pins: `ct-<netns inode>-<iface>`.
pub fn tracker(netns_ino: u64, iface: &str) -> PathBuf {
    root().join(format!("ct-{netns_ino}-{iface}"))
}

/// Every tracker pinned for the namespace with inode `netns_ino`.
pub fn trackers(netns_ino: u64) -> Result<Vec<PathBuf>, ProgramSetupError> {
    let Some(root) = existing_root()? else {
        return Ok(Vec::new());
    };
    let prefix = format!("ct-{netns_ino}-");
    Ok(match std::fs::read_dir(root) {
        Ok(dir) => dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    })
}

/// A node's eBPF masquerading: `nat-<netns inode>`.
pub fn nat(netns_ino: u64) -> PathBuf {
    root().join(format!("nat-{netns_ino}"))
}

/// A node's tc service load balancer: `lb-<netns inode>`.
pub fn lb(netns_ino: u64) -> PathBuf {
    root().join(format!("lb-{netns_ino}"))
}

/// A lab's socket-LB, attached to the cgroup with this inode: `socklb-<inode>`.
pub fn socklb(cgroup_ino: u64) -> PathBuf {
    root().join(format!("socklb-{cgroup_ino}"))
}

/// A node's network policy (`--policy-mode ebpf`): `policy-<netns inode>`.
pub fn policy(netns_ino: u64) -> PathBuf {
    root().join(format!("policy-{netns_ino}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_root_anyone_else_could_change_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("labctl");
        DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let root_owned = nix::unistd::geteuid().is_root();
        assert_eq!(check_root(&dir).is_ok(), root_owned);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_root(&dir).unwrap_err().to_string();
        assert!(
            err.contains(if root_owned {
                "writable by others"
            } else {
                "owned by uid"
            }),
            "{err}"
        );
        let link = tmp.path().join("planted");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(
            check_root(&link)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        if root_owned {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            assert!(
                check_root(&dir)
                    .unwrap_err()
                    .to_string()
                    .contains("owned by uid 65534")
            );
        }
    }

    #[test]
    fn a_pin_directory_lock_tells_live_from_stale() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!is_held(tmp.path()));
        let held = lock(tmp.path()).unwrap().expect("free");
        assert!(is_held(tmp.path()));
        assert!(lock(tmp.path()).unwrap().is_none());
        drop(held);
        assert!(!is_held(tmp.path()));
    }
}
