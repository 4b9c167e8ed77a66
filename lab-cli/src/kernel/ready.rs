//! `--ready-file`: the file a command writes once it is attached and
//! ready, so a script can start its traffic then (as pwru's).

use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot write the ready file {path}: {source}")]
pub struct ReadyFileError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Writes `what` and a newline to `path`, when a ready file was asked for.
pub fn write(path: Option<&Path>, what: &str) -> Result<(), ReadyFileError> {
    let Some(path) = path else {
        return Ok(());
    };
    std::fs::write(path, format!("{what}\n")).map_err(|source| ReadyFileError {
        path: path.to_owned(),
        source,
    })
}
