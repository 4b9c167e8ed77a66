//! Files root writes, written so that no path another user planted is ever
//! followed. Every file labctl writes goes through here: its records under
//! /run/labctl, `--ready-file`, `trace --pcap FILE`, `exercise export`.
//!
//! A directory is opened once ([`Dir`]) and every file in it is reached
//! through that descriptor (the `*at` system calls), never by path again:
//!
//! - labctl's own directories ([`Dir::private`]) are walked from `/` one
//!   component at a time with `O_NOFOLLOW`, missing ones made with
//!   `mkdirat` (0755 on the way, the mode asked for at the end), and each
//!   checked: owned by root, not writable by group or others (a sticky
//!   directory such as /tmp may be passed through, not written in);
//! - a directory the user named ([`Dir::user`]) is opened as given: the user
//!   chose that path, but anyone may plant names in it (/tmp);
//! - a file is written to a fresh temporary name (`O_CREAT|O_EXCL|
//!   O_NOFOLLOW`, which neither follows nor reuses anything), synced, given
//!   its mode, and renamed over the final name: a symlink planted there is
//!   replaced, never followed, and a reader never sees half a file.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsFd, AsRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, OFlag, openat, renameat},
    sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat},
    unistd::{UnlinkatFlags, fsync, unlinkat},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SafeFileError {
    #[error(
        "{path} {problem}: labctl runs as root and writes only in directories no other user can change; remove it (labctl recreates it) or make it root's and not writable by others"
    )]
    UnsafeDir { path: PathBuf, problem: String },
    #[error("{path} is a symbolic link; give the real path")]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file; give the name of a file")]
    NotRegular { path: PathBuf },
    #[error("{path} already exists; give another name, or --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("`{0}` is not a file name (one path component, not . or ..)")]
    BadName(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl SafeFileError {
    /// Whether the user named something unusable (exit 2), rather than the
    /// machine failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Symlink { .. } | Self::NotRegular { .. } | Self::Exists { .. } | Self::BadName(_)
        )
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SafeFileError {
    let path = path.to_owned();
    move |source| SafeFileError::Io {
        action,
        path,
        source,
    }
}

fn errno(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> SafeFileError {
    let f = io_err(action, path);
    move |e| f(e.into())
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Attempts at a free temporary name before giving up.
const TEMP_TRIES: usize = 32;

/// A directory held open: files in it are created, read, renamed and
/// removed through its descriptor.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// labctl's own directory `path` (absolute), made if missing: each
    /// component walked without following a link and made with `mkdirat`
    /// (0755, the last one `mode`); every component checked (root's, not
    /// writable by group or others, sticky ones allowed on the way), the
    /// last one narrowed to `mode` if it allows more.
    pub fn private(path: &Path, mode: u32) -> Result<Self, SafeFileError> {
        walk(path, Some(mode))?
            .ok_or_else(|| io_err("open", path)(io::Error::from(io::ErrorKind::NotFound)))
    }

    /// As [`Dir::private`], without making anything: `None` when a
    /// component is missing.
    pub fn existing_private(path: &Path) -> Result<Option<Self>, SafeFileError> {
        walk(path, None)
    }

    /// A directory the user named (`--ready-file /tmp/x` → /tmp), as given
    /// (the empty path is the current directory). Anyone may be able to
    /// plant names in it: nothing in it is followed or written over in place.
    pub fn user(path: &Path) -> Result<Self, SafeFileError> {
        let shown = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let fd = nix::fcntl::open(
            shown,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("open the directory", shown))?;
        Ok(Self {
            fd,
            path: shown.to_owned(),
        })
    }

    /// The directory holding the file `path` names, and the file's name.
    pub fn user_parent(path: &Path) -> Result<(Self, OsString), SafeFileError> {
        let name = path
            .file_name()
            .ok_or_else(|| SafeFileError::BadName(path.display().to_string()))?;
        let dir = Self::user(path.parent().unwrap_or(Path::new("")))?;
        Ok((dir, name.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `name` is, for messages.
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` as file `name` with `mode`, atomically: a fresh
    /// temporary file, synced, renamed over `name` (a link there is
    /// replaced, not followed). Returns the written file's metadata, taken
    /// after the rename.
    pub fn write(
        &self,
        name: &OsStr,
        contents: &[u8],
        mode: u32,
    ) -> Result<std::fs::Metadata, SafeFileError> {
        check_name(name)?;
        let path = self.join(name);
        let mut temp = self.temp()?;
        temp.file
            .write_all(contents)
            .map_err(io_err("write", &path))?;
        temp.file.sync_all().map_err(io_err("write", &path))?;
        fchmod(&temp.file, Mode::from_bits_truncate(mode)).map_err(errno("write", &path))?;
        let file = temp.rename_to(name)?;
        fsync(&self.fd).map_err(errno("write", &path))?;
        file.metadata().map_err(io_err("write", &path))
    }

    /// A new, empty regular file `name` with `mode`, open for writing (an
    /// output the caller streams into). An existing file is refused unless
    /// `overwrite`, and then replaced (renamed over), never written into; a
    /// symlink or anything but a regular file there is refused either way.
    pub fn create(&self, name: &OsStr, mode: u32, overwrite: bool) -> Result<File, SafeFileError> {
        check_name(name)?;
        let path = self.join(name);
        match self.stat(name)? {
            Some(st) if kind(&st) == SFlag::S_IFLNK => Err(SafeFileError::Symlink { path }),
            Some(st) if kind(&st) != SFlag::S_IFREG => Err(SafeFileError::NotRegular { path }),
            Some(_) if !overwrite => Err(SafeFileError::Exists { path }),
            Some(_) => {
                let temp = self.temp()?;
                fchmod(&temp.file, Mode::from_bits_truncate(mode))
                    .map_err(errno("create", &path))?;
                temp.rename_to(name)
            }
            None => {
                let fd = openat(
                    &self.fd,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(mode),
                )
                .map_err(|e| match e {
                    // Planted between the look and the open.
                    Errno::EEXIST => SafeFileError::Exists { path: path.clone() },
                    e => errno("create", &path)(e),
                })?;
                fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(errno("create", &path))?;
                Ok(File::from(fd))
            }
        }
    }

    /// The text of regular file `name` (`None`: there is none). A symlink
    /// is refused, not followed.
    pub fn read(&self, name: &OsStr) -> Result<Option<String>, SafeFileError> {
        check_name(name)?;
        let path = self.join(name);
        let fd = match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(SafeFileError::Symlink { path }),
            Err(e) => return Err(errno("read", &path)(e)),
        };
        let st = fstat(&fd).map_err(errno("read", &path))?;
        if kind(&st) != SFlag::S_IFREG {
            return Err(SafeFileError::NotRegular { path });
        }
        let mut text = String::new();
        File::from(fd)
            .read_to_string(&mut text)
            .map_err(io_err("read", &path))?;
        Ok(Some(text))
    }

    /// A lock file `name`: opened (made with `mode` if missing) for
    /// writing, never through a link, a regular file only.
    pub fn lock_file(&self, name: &OsStr, mode: u32) -> Result<File, SafeFileError> {
        self.open_regular(name, OFlag::empty(), mode)
    }

    /// Regular file `name` opened for appending (made with `mode` if
    /// missing), never through a link: a log that grows line by line.
    pub fn append(&self, name: &OsStr, mode: u32) -> Result<File, SafeFileError> {
        self.open_regular(name, OFlag::O_APPEND, mode)
    }

    /// Regular file `name` opened for writing with `extra` flags, made
    /// with `mode` if missing, never through a link (nor blocking on a
    /// FIFO planted in its place: refused as not regular).
    fn open_regular(&self, name: &OsStr, extra: OFlag, mode: u32) -> Result<File, SafeFileError> {
        check_name(name)?;
        let path = self.join(name);
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_WRONLY
                | extra
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| match e {
            Errno::ELOOP => SafeFileError::Symlink { path: path.clone() },
            e => errno("open", &path)(e),
        })?;
        let st = fstat(&fd).map_err(errno("open", &path))?;
        if kind(&st) != SFlag::S_IFREG {
            return Err(SafeFileError::NotRegular { path });
        }
        Ok(File::from(fd))
    }

    /// Renames `from` to `to`, both in this directory (a link at `to` is
    /// replaced, not followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> Result<(), SafeFileError> {
        check_name(from)?;
        check_name(to)?;
        renameat(&self.fd, from, &self.fd, to).map_err(errno("rename", &self.join(from)))
    }

    /// Metadata of `name` itself (a link is not followed); `None`: absent.
    pub fn stat(&self, name: &OsStr) -> Result<Option<FileStat>, SafeFileError> {
        check_name(name)?;
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(errno("inspect", &self.join(name))(e)),
        }
    }

    /// Removes `name` (a link itself, never its target); false: it was
    /// not there.
    pub fn remove(&self, name: &OsStr) -> Result<bool, SafeFileError> {
        check_name(name)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(errno("remove", &self.join(name))(e)),
        }
    }

    /// The names in the directory (this very directory, not whatever is at
    /// its path now).
    pub fn names(&self) -> Result<Vec<OsString>, SafeFileError> {
        let me = Path::new("/proc/self/fd").join(self.fd.as_raw_fd().to_string());
        let list = io_err("list", &self.path);
        let entries = std::fs::read_dir(me).map_err(list)?;
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry.map_err(io_err("list", &self.path))?.file_name());
        }
        Ok(names)
    }

    /// Removes temporary files (ours, by their name) last changed more than
    /// `age` ago: left by a process killed between writing and renaming.
    /// Returns how many were removed.
    pub fn sweep_temps(&self, age: std::time::Duration) -> Result<usize, SafeFileError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut removed = 0;
        for name in self.names()? {
            let n = name.to_string_lossy();
            if !(n.starts_with(".labctl-") && n.ends_with(".tmp")) {
                continue;
            }
            let Some(st) = self.stat(&name)? else {
                continue;
            };
            let changed = u64::try_from(st.st_mtime).unwrap_or(0);
            if kind(&st) == SFlag::S_IFREG
                && now.saturating_sub(changed) > age.as_secs()
                && self.remove(&name)?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A fresh file under a random name: `O_EXCL|O_NOFOLLOW`, mode 0600
    /// until the caller sets its own.
    fn temp(&self) -> Result<Temp<'_>, SafeFileError> {
        for _ in 0..TEMP_TRIES {
            let name = OsString::from(format!(".labctl-{:016x}.tmp", fastrand::u64(..)));
            match openat(
                &self.fd,
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => {
                    return Ok(Temp {
                        dir: self,
                        name,
                        file: File::from(fd),
                        armed: true,
                    });
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(errno("create a file in", &self.path)(e)),
            }
        }
        Err(io_err("create a file in", &self.path)(io::Error::from(
            io::ErrorKind::AlreadyExists,
        )))
    }
}

/// A temporary file, removed on drop unless renamed into place.
struct Temp<'d> {
    dir: &'d Dir,
    name: OsString,
    file: File,
    armed: bool,
}

impl Temp<'_> {
    fn rename_to(mut self, name: &OsStr) -> Result<File, SafeFileError> {
        renameat(&self.dir.fd, self.name.as_os_str(), &self.dir.fd, name)
            .map_err(errno("write", &self.dir.join(name)))?;
        self.armed = false;
        self.file
            .try_clone()
            .map_err(io_err("write", &self.dir.join(name)))
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = unlinkat(
                &self.dir.fd,
                self.name.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            )
        {
            tracing::warn!(
                "cannot remove the temporary file {}: {e}",
                self.dir.join(&self.name).display()
            );
        }
    }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// One path component: not empty, no `/`, not `.` or `..`.
fn check_name(name: &OsStr) -> Result<(), SafeFileError> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(SafeFileError::BadName(name.to_string_lossy().into_owned()));
    }
    Ok(())
}

/// Walks `path` from `/` (see [`Dir::private`]); `create`: the last
/// component's mode, when missing components are to be made.
fn walk(path: &Path, create: Option<u32>) -> Result<Option<Dir>, SafeFileError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p),
            _ => {
                return Err(SafeFileError::UnsafeDir {
                    path: path.to_owned(),
                    problem: "is not an absolute path without . or ..".into(),
                });
            }
        }
    }
    if !path.has_root() {
        return Err(SafeFileError::UnsafeDir {
            path: path.to_owned(),
            problem: "is not an absolute path".into(),
        });
    }
    let mut here = PathBuf::from("/");
    let mut fd = nix::fcntl::open(&here, DIR_FLAGS, Mode::empty()).map_err(errno("open", &here))?;
    check_dir(&fd, &here, parts.is_empty())?;
    for (i, part) in parts.iter().enumerate() {
        here.push(part);
        let last = i + 1 == parts.len();
        let mode = if last { create.unwrap_or(0o755) } else { 0o755 };
        let (next, made) = match openat(&fd, *part, DIR_FLAGS, Mode::empty()) {
            Ok(next) => (next, false),
            Err(Errno::ENOENT) if create.is_some() => {
                let made = match mkdirat(&fd, *part, Mode::from_bits_truncate(mode)) {
                    Ok(()) => true,
                    Err(Errno::EEXIST) => false,
                    Err(e) => return Err(errno("create", &here)(e)),
                };
                match openat(&fd, *part, DIR_FLAGS, Mode::empty()) {
                    Ok(next) => (next, made),
                    Err(e) => return Err(not_a_dir(&fd, part, &here, e)),
                }
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(not_a_dir(&fd, part, &here, e)),
        };
        if made {
            // mkdirat's mode went through the umask.
            fchmod(&next, Mode::from_bits_truncate(mode)).map_err(errno("create", &here))?;
        }
        check_dir(&next, &here, last)?;
        fd = next;
    }
    if let Some(mode) = create {
        let st = fstat(&fd).map_err(errno("inspect", &here))?;
        let perms = st.st_mode & 0o7777;
        if perms & !mode & 0o777 != 0 {
            fchmod(&fd, Mode::from_bits_truncate(perms & mode))
                .map_err(errno("change the mode of", &here))?;
        }
    }
    Ok(Some(Dir { fd, path: here }))
}

/// Why `part` could not be opened as a directory: a link, not a
/// directory, or the system's own error.
fn not_a_dir(parent: &OwnedFd, part: &OsStr, path: &Path, e: Errno) -> SafeFileError {
    if matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
        let problem = match fstatat(parent, part, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(&st) == SFlag::S_IFLNK => "is a symbolic link",
            _ => "is not a directory",
        };
        return SafeFileError::UnsafeDir {
            path: path.to_owned(),
            problem: problem.into(),
        };
    }
    errno("open", path)(e)
}

/// Root's (or this user's, when not root), and nobody else may change it:
/// not writable by group or others (a sticky directory may be passed
/// through: others cannot rename or remove what is ours in it).
fn check_dir(fd: &impl AsFd, path: &Path, last: bool) -> Result<(), SafeFileError> {
    let st = fstat(fd.as_fd()).map_err(errno("inspect", path))?;
    let me = nix::unistd::geteuid().as_raw();
    let perms = st.st_mode & 0o7777;
    let sticky = perms & 0o1000 != 0;
    let problem = if st.st_uid != 0 && st.st_uid != me {
        Some(format!("is owned by uid {}, not root", st.st_uid))
    } else if perms & 0o022 != 0 && (last || !sticky) {
        Some(format!("is writable by group or others (mode {:o})", perms))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SafeFileError::UnsafeDir {
            path: path.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};

    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A private test directory: tempdir() is 0700 and ours.
    fn private_tmp() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::private(&t.path().join("state"), 0o755).unwrap();
        (t, d)
    }

    #[test]
    fn a_link_planted_at_the_final_name_is_replaced_not_followed() {
        let (t, dir) = private_tmp();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        symlink(&victim, dir.join(OsStr::new("lab.json"))).unwrap();
        let meta = dir.write(OsStr::new("lab.json"), b"{}", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let written = std::fs::symlink_metadata(dir.join(OsStr::new("lab.json"))).unwrap();
        assert!(written.is_file());
        assert_eq!(written.ino(), meta.ino());
        assert_eq!(written.permissions().mode() & 0o7777, 0o644);
        assert_eq!(
            dir.read(OsStr::new("lab.json")).unwrap().as_deref(),
            Some("{}")
        );
        // Nothing else is left in the directory.
        assert_eq!(dir.names().unwrap(), vec![OsString::from("lab.json")]);
    }

    #[test]
    fn links_planted_at_the_old_fixed_temporary_name_are_never_written() {
        let (t, dir) = private_tmp();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // The fixed name the old code wrote, and a few guesses at ours.
        symlink(&victim, dir.join(OsStr::new("lab.json.tmp"))).unwrap();
        for i in 0..64 {
            symlink(
                &victim,
                dir.join(OsStr::new(&format!(".labctl-{i:016x}.tmp"))),
            )
            .unwrap();
        }
        dir.write(OsStr::new("lab.json"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(dir.join(OsStr::new("lab.json"))).unwrap(),
            "new"
        );
        let mode = std::fs::metadata(dir.join(OsStr::new("lab.json")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        // The temporary file's O_EXCL|O_NOFOLLOW: a planted link is EEXIST,
        // never opened.
        let planted = openat(
            &dir.fd,
            OsStr::new("lab.json.tmp"),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        );
        assert_eq!(planted.unwrap_err(), Errno::EEXIST);
    }

    #[test]
    fn modes_are_set_exactly_whatever_the_umask() {
        // (The umask is the process's: not changed here, as other tests run
        // meanwhile; the file is made 0600 and must end 0644 all the same.)
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::private(&t.path().join("a/b"), 0o700).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&t.path().join("a")), 0o755);
        assert_eq!(mode(&t.path().join("a/b")), 0o700);
        dir.write(OsStr::new("x"), b"1", 0o644).unwrap();
        assert_eq!(mode(&t.path().join("a/b/x")), 0o644);
        // An existing directory that allows more than asked is narrowed.
        std::fs::set_permissions(t.path().join("a/b"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        Dir::private(&t.path().join("a/b"), 0o700).unwrap();
        assert_eq!(mode(&t.path().join("a/b")), 0o700);
    }

    #[test]
    fn group_writable_linked_or_foreign_directories_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = Dir::private(&state, 0o755).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        // Also on the way to it (not sticky).
        let err = Dir::private(&state.join("labs"), 0o755)
            .unwrap_err()
            .to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        assert!(!state.join("labs").exists());
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();

        let link = t.path().join("link");
        symlink(&state, &link).unwrap();
        let err = Dir::private(&link.join("labs"), 0o755)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!state.join("labs").exists());
        assert!(Dir::existing_private(&link).is_err());
        assert!(
            Dir::existing_private(&t.path().join("none"))
                .unwrap()
                .is_none()
        );

        if root() {
            nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let err = Dir::private(&state, 0o755).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
            assert!(Dir::existing_private(&state.join("labs")).is_err());
        }
    }

    #[test]
    fn a_sticky_directory_is_passed_through_but_not_written_in() {
        let t = tempfile::tempdir().unwrap();
        let tmp = t.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(Dir::private(&tmp.join("labctl"), 0o755).is_ok());
        assert!(Dir::private(&tmp, 0o755).is_err());
    }

    #[test]
    fn outputs_refuse_links_and_other_files_and_existing_ones_without_overwrite() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::user(t.path()).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        symlink(&victim, t.path().join("link")).unwrap();
        for overwrite in [false, true] {
            let e = dir
                .create(OsStr::new("link"), 0o644, overwrite)
                .unwrap_err();
            assert!(matches!(e, SafeFileError::Symlink { .. }), "{e}");
        }
        nix::unistd::mkfifo(&t.path().join("fifo"), Mode::S_IRWXU).unwrap();
        let e = dir.create(OsStr::new("fifo"), 0o644, true).unwrap_err();
        assert!(matches!(e, SafeFileError::NotRegular { .. }), "{e}");
        let e = dir.create(OsStr::new("victim"), 0o644, false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(e.is_usage());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");

        // Overwriting replaces the file: another link to the old one keeps
        // its content.
        std::fs::hard_link(&victim, t.path().join("other")).unwrap();
        let mut f = dir.create(OsStr::new("victim"), 0o640, true).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "new");
        assert_eq!(
            std::fs::read_to_string(t.path().join("other")).unwrap(),
            "keep"
        );
        let mut f = dir.create(OsStr::new("fresh"), 0o640, false).unwrap();
        f.write_all(b"x").unwrap();
        let m = std::fs::metadata(t.path().join("fresh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert!(
            !dir.names()
                .unwrap()
                .iter()
                .any(|n| n.to_string_lossy().starts_with(".labctl-"))
        );
    }

    #[test]
    fn stale_temporary_files_are_swept_fresh_ones_and_others_kept() {
        let (t, dir) = private_tmp();
        let old = t.path().join("state/.labctl-0000000000000001.tmp");
        std::fs::write(&old, "killed").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let fresh = t.path().join("state/.labctl-0000000000000002.tmp");
        std::fs::write(&fresh, "being written").unwrap();
        let other = t.path().join("state/lab.json");
        std::fs::write(&other, "{}").unwrap();
        File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(dir.sweep_temps(minute).unwrap(), 1);
        assert!(!old.exists() && fresh.exists() && other.exists());
    }

    #[test]
    fn names_are_single_components_and_reads_do_not_follow_links() {
        let (t, dir) = private_tmp();
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(matches!(
                dir.write(OsStr::new(bad), b"", 0o644),
                Err(SafeFileError::BadName(_))
            ));
        }
        std::fs::write(t.path().join("secret"), "s").unwrap();
        symlink(t.path().join("secret"), dir.join(OsStr::new("x.json"))).unwrap();
        assert!(matches!(
            dir.read(OsStr::new("x.json")),
            Err(SafeFileError::Symlink { .. })
        ));
        assert!(dir.read(OsStr::new("none")).unwrap().is_none());
        assert!(dir.remove(OsStr::new("x.json")).unwrap());
        assert!(!dir.remove(OsStr::new("x.json")).unwrap());
        assert!(t.path().join("secret").exists());
        let lock = dir.lock_file(OsStr::new("lock"), 0o600);
        assert!(lock.is_ok());
        symlink(t.path().join("secret"), dir.join(OsStr::new("lock2"))).unwrap();
        assert!(matches!(
            dir.lock_file(OsStr::new("lock2"), 0o600),
            Err(SafeFileError::Symlink { .. })
        ));
    }
}
