//! `--ready-file`: the file a command writes once it is attached and
//! ready, so a script can start its traffic then (as pwru's).
//!
//! labctl runs as root and the file often sits in a world-writable directory
//! (/tmp), so it is written through `kernel::safefile`: the directory is
//! opened once, the content goes to a fresh temporary file in it
//! (O_CREAT|O_EXCL|O_NOFOLLOW) that is then renamed over the name. A
//! symlink planted at the path is replaced, never followed. A stale file is
//! removed at start, and ours again at exit (only if it is still the one we
//! wrote).

use std::{
    ffi::OsString,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::safefile::{Dir, SafeFileError};

#[derive(Debug, Error)]
#[error("cannot use the ready file: {source}")]
pub struct ReadyFileError {
    pub path: PathBuf,
    pub source: SafeFileError,
}

type Identity = (u64, u64, i64, i64);

fn identity(m: &std::fs::Metadata) -> Identity {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

fn stat_identity(st: &nix::sys::stat::FileStat) -> Identity {
    (st.st_dev, st.st_ino, st.st_ctime, st.st_ctime_nsec)
}

/// The ready file of one command run (or none when not asked for).
#[derive(Debug, Default)]
pub struct ReadyFile {
    /// Its directory, its name, and the path as given (for messages).
    at: Option<(Dir, OsString, PathBuf)>,
    /// Identity of the file we wrote: device, inode and change time (inode
    /// numbers are reused at once on tmpfs, so they alone prove nothing).
    written: Option<Identity>,
}

impl ReadyFile {
    /// Claims `path`: removes a stale file (or a link) there, so a script
    /// never mistakes an old one for this run's.
    pub fn claim(path: Option<&Path>) -> Result<Self, ReadyFileError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let fail = |source| ReadyFileError {
            path: path.to_owned(),
            source,
        };
        let (dir, name) = Dir::user_parent(path).map_err(fail)?;
        match dir.stat(&name).map_err(fail)? {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(fail(SafeFileError::NotRegular {
                    path: path.to_owned(),
                }));
            }
            // Unlinks a symlink itself, never its target.
            Some(_) => {
                dir.remove(&name).map_err(fail)?;
            }
            None => {}
        }
        Ok(Self {
            at: Some((dir, name, path.to_owned())),
            written: None,
        })
    }

    /// Writes `what` and a newline: the command is ready.
    pub fn signal(&mut self, what: &str) -> Result<(), ReadyFileError> {
        let Some((dir, name, path)) = &self.at else {
            return Ok(());
        };
        // Readable by the (unprivileged) script waiting for it.
        let meta = dir
            .write(name, format!("{what}\n").as_bytes(), 0o644)
            .map_err(|source| ReadyFileError {
                path: path.clone(),
                source,
            })?;
        self.written = Some(identity(&meta));
        Ok(())
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let (Some((dir, name, path)), Some(written)) = (&self.at, self.written) else {
            return;
        };
        let ours = matches!(dir.stat(name), Ok(Some(st)) if stat_identity(&st) == written);
        if ours && let Err(e) = dir.remove(name) {
            tracing::warn!("cannot remove the ready file {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("ready");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut ready = ReadyFile::claim(Some(&path)).unwrap();
        // The planted link is gone; plant another after the claim.
        assert!(!path.exists());
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        ready.signal("attached").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "attached\n");
        drop(ready);
        assert!(!path.exists(), "ours is removed at exit");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn a_stale_file_is_removed_and_a_foreign_one_left_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        std::fs::write(&path, "old run\n").unwrap();
        let mut ready = ReadyFile::claim(Some(&path)).unwrap();
        assert!(!path.exists());
        ready.signal("subscribed").unwrap();
        // Someone replaced it meanwhile: not ours, so it stays.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "theirs").unwrap();
        drop(ready);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs");
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".labctl")
        }));
        assert!(ReadyFile::claim(Some(dir.path())).is_err());
    }
}
