//! `--ready-file`: the file a command writes once it is attached and
//! ready, so a script can start its traffic then (as pwru's).
//!
//! labctl runs as root and the file often sits in a world-writable directory
//! (/tmp), so it is never opened by name: the content goes to a fresh
//! temporary file in the same directory (O_CREAT|O_EXCL, which follows no
//! link) that is then renamed over the path. A symlink planted at the path is
//! replaced, never followed. A stale file is removed at start, and ours again
//! at exit (only if it is still the one we wrote).

use std::{
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot write the ready file {path}: {source}")]
pub struct ReadyFileError {
    pub path: PathBuf,
    pub source: io::Error,
}

type Identity = (u64, u64, i64, i64);

fn identity(m: &std::fs::Metadata) -> Identity {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

/// The ready file of one command run (or none when not asked for).
#[derive(Debug, Default)]
pub struct ReadyFile {
    path: Option<PathBuf>,
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
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "it is a directory; give a file name",
                )));
            }
            // remove_file unlinks a symlink itself, never its target.
            Ok(_) => std::fs::remove_file(path).map_err(fail)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        Ok(Self {
            path: Some(path.to_owned()),
            written: None,
        })
    }

    /// Writes `what` and a newline: the command is ready.
    pub fn signal(&mut self, what: &str) -> Result<(), ReadyFileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fail = |source| ReadyFileError {
            path: path.clone(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".labctl-ready-")
            .tempfile_in(dir)
            .map_err(fail)?;
        // Readable by the (unprivileged) script waiting for it.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
        tmp.write_all(format!("{what}\n").as_bytes())
            .map_err(fail)?;
        tmp.persist(path).map_err(|e| fail(e.error))?;
        // After the rename, which changes the file's ctime.
        let meta = std::fs::symlink_metadata(path).map_err(fail)?;
        self.written = Some(identity(&meta));
        Ok(())
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let (Some(path), Some(written)) = (&self.path, self.written) else {
            return;
        };
        let ours = std::fs::symlink_metadata(path).is_ok_and(|m| identity(&m) == written);
        if ours && let Err(e) = std::fs::remove_file(path) {
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
