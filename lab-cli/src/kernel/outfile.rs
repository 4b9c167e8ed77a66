//! Output files named by the user (`trace --pcap FILE`). labctl runs as
//! root and such files often sit in /tmp, so they are made through
//! `kernel::safefile`: a symlink planted at the path is refused, never
//! followed, only a regular file is replaced, and an existing one only
//! when the user said so (`--force`), by renaming a fresh file over it
//! (never writing into a file someone else may have linked there).

use std::{fs::File, path::Path};

use super::safefile::{Dir, SafeFileError};

/// Whether an existing file at the path may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Refuse,
    Replace,
}

/// A new, empty regular file at `path` for writing, mode 0644.
pub fn create(path: &Path, existing: Existing) -> Result<File, SafeFileError> {
    let (dir, name) = Dir::user_parent(path)?;
    dir.create(&name, 0o644, existing == Existing::Replace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_fifos_are_refused_files_replaced_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create(&link, Existing::Replace).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(
            create(&fifo, Existing::Replace)
                .unwrap_err()
                .to_string()
                .contains("regular")
        );

        let err = create(&target, Existing::Refuse).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        create(&target, Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }
}
