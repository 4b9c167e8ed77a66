//! Named network namespaces, compatible with `ip netns`.
//!
//! A named netns is a file under /run/netns on which the namespace is
//! bind-mounted, exactly as iproute2 does it, so learners can use
//! `ip netns exec NAME ...` on anything labctl creates. There is no netlink
//! message for this (it is a mount), hence the direct nix calls. We do not use
//! rtnetlink's `NetworkNamespace::add`: it forks the whole process, which is
//! unsafe in a multi-threaded tokio program.

use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    thread,
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};
use thiserror::Error;

use super::safefile::{Dir, SafeFileError};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error(
        "network namespace `{0}` already exists; pick another name or delete it with `ip netns del {0}`"
    )]
    Exists(String),
    #[error(
        "network namespace `{0}` does not exist (see `ip netns list` and `labctl lab status`; a lab member such as pod-a, `host`, `pid:N` or an inode number also work)"
    )]
    NotFound(String),
    #[error("`{0}` is not a namespace name: give one name without `/`")]
    BadName(String),
    #[error(
        "{0} is not a network namespace file; give one such as /proc/PID/ns/net or /run/netns/NAME"
    )]
    NotANetns(String),
    #[error("cannot {action} network namespace `{name}`: {source}")]
    Io {
        action: &'static str,
        name: String,
        source: io::Error,
    },
    #[error("cannot {action} network namespace `{name}`: {source}")]
    Sys {
        action: &'static str,
        name: String,
        source: nix::Error,
    },
    #[error("the thread running inside network namespace `{0}` panicked")]
    ThreadPanicked(String),
    #[error(transparent)]
    File(#[from] SafeFileError),
}

/// A named network namespace. One created by [`NetNs::create`] is deleted
/// when dropped (or explicitly with [`NetNs::delete`], which reports errors).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
    owned: bool,
}

impl NetNs {
    /// Creates `/run/netns/NAME` holding a fresh network namespace.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        Self::create_then(name, |_| Ok::<(), NetnsError>(()))
    }

    /// As [`NetNs::create`], calling `record(inode)` after the namespace
    /// exists and before it gets its name: whoever records the inode there
    /// can later prove the namespace is theirs, whenever the process dies.
    /// (A kill before the mount leaves only an empty file: [`Entry::Leftover`].)
    pub fn create_then<E: From<NetnsError> + Send>(
        name: &str,
        record: impl FnOnce(u64) -> Result<(), E> + Send,
    ) -> Result<Self, E> {
        let io_err = |action, source| NetnsError::Io {
            action,
            name: name.to_owned(),
            source,
        };
        check_name(name)?;
        // /run/netns checked (root's, nobody else may write in it: the
        // bind mount below goes onto a path) and made as iproute2 makes it.
        let dir = Dir::private(Path::new(NETNS_RUN_DIR), 0o755).map_err(NetnsError::from)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match dir.create(std::ffi::OsStr::new(name), 0o644, false) {
            Ok(_) => {}
            Err(SafeFileError::Exists { .. }) => {
                return Err(NetnsError::Exists(name.to_owned()).into());
            }
            Err(e) => return Err(NetnsError::from(e).into()),
        }
        // From here on, dropping `ns` removes the file (and mount, if any).
        let ns = Self {
            name: name.to_owned(),
            path: path.clone(),
            owned: true,
        };
        // unshare() moves the calling thread only, so do it in a throwaway
        // thread and pin the new namespace with a bind mount of its ns file.
        let sys = |action, source| NetnsError::Sys {
            action,
            name: name.to_owned(),
            source,
        };
        thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(), E> {
                    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| sys("unshare", e))?;
                    let inode = fs::metadata(THREAD_NETNS)
                        .map_err(|e| io_err("inspect", e))?
                        .ino();
                    record(inode)?;
                    mount(
                        Some(THREAD_NETNS),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| sys("bind-mount", e))?;
                    Ok(())
                })
                .join()
                .map_err(|_| NetnsError::ThreadPanicked(name.to_owned()))?
        })?;
        Ok(ns)
    }

    /// Opens an existing named namespace (not deleted on drop).
    pub fn open(name: &str) -> Result<Self, NetnsError> {
        check_name(name).map_err(|_| NetnsError::NotFound(name.to_owned()))?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if !path.exists() {
            return Err(NetnsError::NotFound(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            path,
            owned: false,
        })
    }

    /// A namespace reachable through any ns file (e.g. /proc/PID/ns/net).
    pub fn at(name: &str, path: &Path) -> Self {
        Self {
            name: name.to_owned(),
            path: path.to_owned(),
            owned: false,
        }
    }

    /// Another handle on the same namespace, which never deletes it.
    pub fn handle(&self) -> Self {
        Self::at(&self.name, &self.path)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: what the kernel calls `net->ns.inum`.
    pub fn inode(&self) -> Result<u64, NetnsError> {
        fs::metadata(&self.path)
            .map(|m| m.ino())
            .map_err(|source| NetnsError::Io {
                action: "stat",
                name: self.name.clone(),
                source,
            })
    }

    /// Runs `f` on a new thread that has entered this namespace. Sockets and
    /// netlink connections made by `f` stay bound to the namespace after it
    /// returns, so they can be used from any thread.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetnsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(&self.path).map_err(|source| NetnsError::Io {
            action: "open",
            name: self.name.clone(),
            source,
        })?;
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Sys {
                            action: "enter",
                            name: self.name.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .join()
                .map_err(|_| NetnsError::ThreadPanicked(self.name.clone()))?
        })
    }

    /// Runs `program ARGS` inside this namespace (a child forked from a
    /// thread in the namespace starts in it), feeding it `stdin`, and
    /// returns its output: how labctl drives nft, iptables-restore and
    /// iptables-save for a namespace.
    pub fn output(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<io::Result<std::process::Output>, NetnsError> {
        use std::{
            io::Write as _,
            process::{Command, Stdio},
        };
        self.run(|| -> io::Result<_> {
            let mut child = Command::new(program)
                .args(args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        })
    }

    /// Keeps a namespace this process created: it is no longer deleted on
    /// drop (a lab's namespaces outlive the command that built them).
    pub fn keep(mut self) -> Self {
        self.owned = false;
        self
    }

    /// Deletes a namespace this process created, reporting any error.
    pub fn delete(mut self) -> Result<(), NetnsError> {
        self.owned = false;
        remove(&self.name, &self.path)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = remove(&self.name, &self.path)
        {
            tracing::warn!("{e}");
        }
    }
}

/// Unmounts and removes `/run/netns/NAME`, as `ip netns del` does.
pub fn remove(name: &str, path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a half-created namespace).
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                action: "unmount",
                name: name.to_owned(),
                source,
            });
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            action: "remove",
            name: name.to_owned(),
            source,
        }),
    }
}

/// The calling thread's own namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A name is one path component: never a way out of /run/netns.
fn check_name(name: &str) -> Result<(), NetnsError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(NetnsError::BadName(name.to_owned()));
    }
    Ok(())
}

/// What a path under /run/netns holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    /// A mounted namespace, with its inode.
    Namespace(u64),
    /// A plain file with no namespace mounted on it: what an interrupted
    /// create (file made, mount not yet) or delete (unmounted, not yet
    /// unlinked) leaves. Nothing uses it; it only blocks the name.
    Leftover,
    /// Anything else (a directory, a link): never ours to touch.
    Other,
}

/// Looks at `path` without following a link at it.
pub fn entry(path: &Path) -> io::Result<Entry> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(Entry::Other);
    }
    let fs = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC {
        // stat (not lstat) sees the mounted namespace's own inode.
        Ok(Entry::Namespace(fs::metadata(path)?.ino()))
    } else {
        Ok(Entry::Leftover)
    }
}

/// Removes `/run/netns/NAME` if it is a [`Entry::Leftover`]; true if it was.
pub fn remove_leftover(name: &str) -> Result<bool, NetnsError> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let io_err = |source| NetnsError::Io {
        action: "inspect",
        name: name.to_owned(),
        source,
    };
    if entry(&path).map_err(io_err)? != Entry::Leftover {
        return Ok(false);
    }
    tracing::warn!(
        "removing {}: an empty mount point left by an interrupted create or delete",
        path.display()
    );
    fs::remove_file(&path).map_err(|source| NetnsError::Io {
        action: "remove the leftover mount point of",
        name: name.to_owned(),
        source,
    })?;
    Ok(true)
}

/// What `host` means in `--netns host`: the namespace of PID 1, or
/// labctl's own where PID 1's cannot be read (a container's PID namespace).
pub fn host() -> NetNs {
    const PID1: &str = "/proc/1/ns/net";
    let path = if fs::metadata(PID1).is_ok() {
        PID1
    } else {
        "/proc/self/ns/net"
    };
    NetNs::at("host", Path::new(path))
}

/// Which namespaces a long-running view reads (`metrics`, `observe`).
pub enum Selection {
    /// These, given with `--netns`.
    Listed(Vec<NetNs>),
    /// The host's and every named one (`ip netns`: a lab's members, a
    /// node's pods), read again each time.
    HostAndNamed,
}

impl Selection {
    /// The namespaces now.
    pub fn resolve(&self) -> Vec<NetNs> {
        match self {
            Selection::Listed(list) => list
                .iter()
                .map(|ns| NetNs::at(ns.name(), ns.path()))
                .collect(),
            Selection::HostAndNamed => host_and_named(),
        }
    }
}

/// The host's namespace and every `ip netns` one (a lab's members, a
/// node's pods), host first, then by name.
pub fn host_and_named() -> Vec<NetNs> {
    let mut named: Vec<NetNs> = fs::read_dir(NETNS_RUN_DIR)
        .map(|dir| {
            dir.flatten()
                .map(|e| NetNs::at(&e.file_name().to_string_lossy(), &e.path()))
                .collect()
        })
        .unwrap_or_default();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    let mut all = vec![host()];
    all.extend(named);
    all
}

/// Every network namespace this process can name, by inode: those of
/// processes (`pid:N`), the host's (`host`), and `ip netns` names, later
/// ones winning. The names are the ones [`lookup`] accepts back.
pub fn known() -> HashMap<u64, NetNs> {
    let mut known = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = entry.path().join("ns/net");
            if let Ok(m) = fs::metadata(&path) {
                known
                    .entry(m.ino())
                    .or_insert_with(|| NetNs::at(&format!("pid:{pid}"), &path));
            }
        }
    }
    let host = host();
    if let Ok(ino) = host.inode() {
        known.insert(ino, host);
    }
    if let Ok(dir) = fs::read_dir(NETNS_RUN_DIR) {
        for entry in dir.flatten() {
            if let Ok(m) = fs::metadata(entry.path()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                known.insert(m.ino(), NetNs::at(&name, &entry.path()));
            }
        }
    }
    known
}

/// The namespace a user named with `--netns`: an `ip netns` name, `host`,
/// `pid:N` (a process's) or an inode number (any namespace labctl can
/// find: see [`known`]). These are the names labctl prints.
pub fn lookup(spec: &str) -> Result<NetNs, NetnsError> {
    if spec == "host" {
        return Ok(host());
    }
    if spec.starts_with('/') {
        return at_path(spec);
    }
    if let Some(pid) = spec.strip_prefix("pid:") {
        let path = Path::new("/proc").join(pid).join("ns/net");
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || !path.exists() {
            return Err(NetnsError::NotFound(spec.to_owned()));
        }
        return Ok(NetNs::at(spec, &path));
    }
    if let Ok(ino) = spec.parse::<u64>() {
        return known()
            .remove(&ino)
            .ok_or_else(|| NetnsError::NotFound(spec.to_owned()));
    }
    NetNs::open(spec)
}

/// A namespace file named by its path (/proc/PID/ns/net, /run/netns/NAME,
/// a container runtime's): it must be a network namespace, so nothing
/// else is ever opened or entered as one.
fn at_path(spec: &str) -> Result<NetNs, NetnsError> {
    let path = Path::new(spec);
    // Looked at before it is opened: opening a device or a FIFO can act or block.
    match nix::sys::statfs::statfs(path) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC => {}
        Ok(_) => return Err(NetnsError::NotANetns(spec.to_owned())),
        Err(_) => return Err(NetnsError::NotFound(spec.to_owned())),
    }
    let file = File::open(path).map_err(|source| NetnsError::Io {
        action: "open",
        name: spec.to_owned(),
        source,
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open
    // nsfs file's type.
    let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::NotANetns(spec.to_owned()));
    }
    Ok(NetNs::at(spec, path))
}

/// `--netns` given (that namespace) or not (the caller's own: None).
pub fn lookup_opt(spec: Option<&str>) -> Result<Option<NetNs>, NetnsError> {
    spec.map(lookup).transpose()
}

/// The inode of the network namespace this process runs in.
pub fn current_inode() -> io::Result<u64> {
    fs::metadata("/proc/self/ns/net").map(|m| m.ino())
}

/// A unique namespace name for throwaway use: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
