//! labctl's IPAM: the node's pod range handed out one address at a time,
//! laid out on disk as host-local lays it out. In `DATADIR/NETWORK/`:
//!
//! - one file per allocated address, named by the address, holding
//!   `CONTAINERID\nIFNAME`;
//! - `last_reserved_ip.0`, where the next search starts (so a released
//!   address is not handed out again at once);
//! - `lock`, flocked around every change (waited for a bounded time:
//!   a runtime is waiting for the plugin).
//!
//! Every file is written through `kernel::safefile` in a directory checked
//! to be root's and writable by nobody else.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    time::Duration,
};

use nix::fcntl::Flock;
use thiserror::Error;

use super::spec::{Attachment, CniError, Network, Range, code};
use crate::kernel::{
    locks::{self, LockWait},
    safefile::{Dir, SafeFileError},
};

/// How long an allocation waits for another plugin call's lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

const LAST: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";

#[derive(Debug, Error)]
pub enum IpamError {
    #[error("the address store {dir} cannot be used: {source}")]
    Store { dir: PathBuf, source: SafeFileError },
    #[error("the address store {dir} is busy: another call holds its lock{holder}")]
    Busy { dir: PathBuf, holder: String },
    #[error("cannot lock the address store {dir}: {source}")]
    Lock { dir: PathBuf, source: nix::Error },
    #[error("every address of range {range} is taken")]
    Exhausted { range: Range },
}

impl From<&IpamError> for CniError {
    fn from(e: &IpamError) -> Self {
        match e {
            IpamError::Store { dir, .. } | IpamError::Lock { dir, .. } => CniError::new(
                code::IO,
                format!(
                    "labctl cannot use its address store {}: it must be a directory of root's that no other user can write (remove it and labctl makes it again)",
                    dir.display()
                ),
                e,
            ),
            IpamError::Busy { .. } => CniError::new(
                code::TRY_AGAIN,
                "another call of the plugin holds the address store's lock: try again in a moment",
                e,
            ),
            IpamError::Exhausted { range } => CniError::new(
                code::EXHAUSTED,
                format!(
                    "no pod address is left: every address of range {range} is taken; delete pods (or their stale attachments with GC) or widen the range"
                ),
                e,
            ),
        }
    }
}

/// One network's allocations.
pub struct Store {
    dir: Dir,
    range: Range,
}

impl Store {
    /// The store of `net`, made if missing.
    pub fn open(net: &Network) -> Result<Self, IpamError> {
        let path = net.data_dir.join(&net.name);
        let dir = Dir::private(&path, 0o755).map_err(|source| IpamError::Store {
            dir: path.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            range: net.range,
        })
    }

    /// The store of `net` if it exists (DEL, GC and CHECK make nothing).
    pub fn existing(net: &Network) -> Result<Option<Self>, IpamError> {
        let path = net.data_dir.join(&net.name);
        let dir = Dir::existing_private(&path).map_err(|source| IpamError::Store {
            dir: path.clone(),
            source,
        })?;
        Ok(dir.map(|dir| Self {
            dir,
            range: net.range,
        }))
    }

    fn store_err(&self) -> impl FnOnce(SafeFileError) -> IpamError {
        let dir = self.dir.path().to_owned();
        move |source| IpamError::Store { dir, source }
    }

    /// The store's lock, waited for up to [`LOCK_WAIT`].
    pub fn lock(&self) -> Result<Flock<File>, IpamError> {
        let file = self
            .dir
            .lock_file(OsStr::new(LOCK), 0o600)
            .map_err(self.store_err())?;
        locks::exclusive_within(file, LOCK_WAIT).map_err(|e| match e {
            LockWait::Interrupted(holder, _) | LockWait::TimedOut(holder) => IpamError::Busy {
                dir: self.dir.path().to_owned(),
                holder: holder
                    .map(|h| format!(" (PID {}: {})", h.pid, h.command))
                    .unwrap_or_default(),
            },
            LockWait::Failed(source) => IpamError::Lock {
                dir: self.dir.path().to_owned(),
                source,
            },
        })
    }

    /// Every allocation: address and attachment, by address.
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, Attachment)>, IpamError> {
        let mut out = Vec::new();
        for name in self.dir.names().map_err(self.store_err())? {
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let Some(text) = self.dir.read(&name).map_err(self.store_err())? else {
                continue;
            };
            if let Some(att) = parse_owner(&text) {
                out.push((ip, att));
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// The address held by `id`/`ifname`, if any.
    pub fn find(&self, id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|(_, a)| a.container_id == id && a.ifname == ifname)
            .map(|(ip, _)| ip))
    }

    /// An address for `id`/`ifname` (the one it holds already, if any),
    /// searched from the one after the last handed out. Call with the lock.
    pub fn allocate(&self, id: &str, ifname: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.find(id, ifname)? {
            return Ok(ip);
        }
        let (start, end) = (u32::from(self.range.start), u32::from(self.range.end));
        let last = self
            .dir
            .read(OsStr::new(LAST))
            .map_err(self.store_err())?
            .and_then(|t| t.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|l| (start..=end).contains(l));
        let first = match last {
            Some(l) if l < end => l + 1,
            _ => start,
        };
        let n = end - start + 1;
        for i in 0..n {
            let ip = Ipv4Addr::from(start + (first - start + i) % n);
            if ip == self.range.gateway {
                continue;
            }
            let name = OsString::from(ip.to_string());
            if self.dir.stat(&name).map_err(self.store_err())?.is_some() {
                continue;
            }
            self.dir
                .write(&name, format!("{id}\n{ifname}").as_bytes(), 0o644)
                .map_err(self.store_err())?;
            self.dir
                .write(OsStr::new(LAST), ip.to_string().as_bytes(), 0o644)
                .map_err(self.store_err())?;
            return Ok(ip);
        }
        Err(IpamError::Exhausted { range: self.range })
    }

    /// Releases what `id`/`ifname` holds; the address, if it held one.
    /// Call with the lock.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.find(id, ifname)? else {
            return Ok(None);
        };
        self.dir
            .remove(&OsString::from(ip.to_string()))
            .map_err(self.store_err())?;
        Ok(Some(ip))
    }

    /// How many addresses are free.
    pub fn free(&self) -> Result<u32, IpamError> {
        let taken = self
            .list()?
            .iter()
            .filter(|(ip, _)| {
                (self.range.start..=self.range.end).contains(ip) && *ip != self.range.gateway
            })
            .count();
        Ok(self
            .range
            .size()
            .saturating_sub(u32::try_from(taken).unwrap_or(u32::MAX)))
    }

    /// Whether the store can be written now (STATUS): a probe file made
    /// and removed.
    pub fn writable(&self) -> Result<(), IpamError> {
        let probe = OsStr::new(".status-probe");
        self.dir
            .write(probe, b"", 0o600)
            .map_err(self.store_err())?;
        self.dir.remove(probe).map_err(self.store_err())?;
        Ok(())
    }

    /// A note the plugin keeps next to the allocations (what it set up
    /// on the node, to undo it later); None: there is none.
    pub fn note(&self, name: &str) -> Result<Option<String>, IpamError> {
        self.dir.read(OsStr::new(name)).map_err(self.store_err())
    }

    pub fn set_note(&self, name: &str, text: &str) -> Result<(), IpamError> {
        self.dir
            .write(OsStr::new(name), text.as_bytes(), 0o644)
            .map(drop)
            .map_err(self.store_err())
    }

    pub fn remove_note(&self, name: &str) -> Result<(), IpamError> {
        self.dir
            .remove(OsStr::new(name))
            .map(drop)
            .map_err(self.store_err())
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// `CONTAINERID\nIFNAME` (host-local also writes `\r\n`).
fn parse_owner(text: &str) -> Option<Attachment> {
    let mut lines = text.lines().map(str::trim);
    let id = lines.next().filter(|l| !l.is_empty())?;
    let ifname = lines.next().filter(|l| !l.is_empty())?;
    Some(Attachment {
        container_id: id.to_owned(),
        ifname: ifname.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::cni::spec::Masquerade;

    fn net(dir: &std::path::Path, start: [u8; 4], end: [u8; 4]) -> Network {
        Network {
            version: "1.1.0".into(),
            name: "c28unit".into(),
            mtu: 1500,
            range: Range {
                subnet: "10.9.0.0/24".parse().unwrap(),
                start: start.into(),
                end: end.into(),
                gateway: [10, 9, 0, 1].into(),
            },
            data_dir: dir.to_owned(),
            masquerade: Masquerade::None,
            cluster: "10.9.0.0/24".parse().unwrap(),
            uplink: None,
        }
    }

    fn private_tempdir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn addresses_are_handed_out_in_turn_released_and_exhausted() {
        if !nix::unistd::Uid::effective().is_root() {
            // Dir::private wants root's directories.
            return;
        }
        let d = private_tempdir();
        let store = Store::open(&net(d.path(), [10, 9, 0, 1], [10, 9, 0, 3])).unwrap();
        let _lock = store.lock().unwrap();
        let a = store.allocate("a", "eth0").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2), "the gateway is skipped");
        assert_eq!(
            store.allocate("a", "eth0").unwrap(),
            a,
            "the same attachment"
        );
        let b = store.allocate("b", "eth0").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        let err = store.allocate("c", "eth0").unwrap_err();
        assert!(
            err.to_string().contains("10.9.0.0/24 (10.9.0.1-10.9.0.3)"),
            "{err}"
        );
        assert_eq!(CniError::from(&err).code, code::EXHAUSTED);
        assert_eq!(store.free().unwrap(), 0);
        assert_eq!(store.release("a", "eth0").unwrap(), Some(a));
        assert_eq!(store.release("a", "eth0").unwrap(), None);
        assert_eq!(store.allocate("c", "eth0").unwrap(), a);
        let text = std::fs::read_to_string(d.path().join("c28unit/10.9.0.2")).unwrap();
        assert_eq!(text, "c\neth0");
    }

    #[test]
    fn owners_are_read_in_both_line_ends() {
        let a = parse_owner("abc\r\neth0\r\n").unwrap();
        assert_eq!(
            (a.container_id.as_str(), a.ifname.as_str()),
            ("abc", "eth0")
        );
        assert!(parse_owner("abc").is_none());
    }
}
