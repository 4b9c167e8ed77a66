//! Output files named by the user (`trace --pcap FILE`). labctl runs as
//! root and such files often sit in /tmp, so a symlink planted at the path
//! is refused, never followed (O_NOFOLLOW), and only a regular file is
//! written over.

use std::{
    fs::File,
    io,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot write {path}: {source}")]
pub struct OutputFileError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Creates (or truncates) the regular file at `path` for writing, mode 0644.
pub fn create(path: &Path) -> Result<File, OutputFileError> {
    let fail = |source| OutputFileError {
        path: path.to_owned(),
        source,
    };
    let not_regular = || {
        fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file; give a file name (or - for standard output)",
        ))
    };
    // Refuse devices and FIFOs before opening them (opening can block or
    // act); the check after opening catches a swap in between.
    if let Ok(m) = std::fs::symlink_metadata(path)
        && !m.is_file()
        && !m.file_type().is_symlink()
    {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link; give the real path",
            )),
            _ => fail(e),
        })?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    // Truncate only once it is known to be a regular file of our choosing.
    file.set_len(0).map_err(fail)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_fifos_are_refused_files_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(create(&fifo).unwrap_err().to_string().contains("regular"));

        create(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }
}
