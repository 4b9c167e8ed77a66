//! The plugin's call log: one JSON line per call a runtime made (verb,
//! container, netns, interface, the config received, the result or error,
//! how long it took), in `/run/labctl/cni/calls.jsonl` (or the directory
//! `LABCTL_CNI_LOG_DIR` names, checked as labctl's own: root's and
//! writable by nobody else). Past [`MAX_BYTES`] the file is renamed to
//! `calls.jsonl.1` (the one before is dropped).

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::{
    plugin::Outcome,
    spec::{self, Env},
};
use crate::kernel::{
    interrupt::Stop,
    locks,
    safefile::{Dir, SafeFileError},
};

pub const DEFAULT_DIR: &str = "/run/labctl/cni";
pub const DIR_ENV: &str = "LABCTL_CNI_LOG_DIR";
const FILE: &str = "calls.jsonl";
const OLD: &str = "calls.jsonl.1";
const LOCK: &str = "calls.lock";
/// The size past which the log is rotated.
pub const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Error)]
pub enum LogError {
    #[error(transparent)]
    File(#[from] SafeFileError),
    #[error("cannot write the CNI call log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// CNI_COMMAND as given.
    pub verb: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The config on stdin (a string when it was not JSON).
    pub config: Value,
    /// What went to stdout on success (null: nothing).
    pub result: Option<Value>,
    /// The error object, on failure.
    pub error: Option<Value>,
    pub duration_ms: f64,
    pub pid: u32,
}

impl Record {
    pub fn new(env: &Env, stdin: &[u8], outcome: &Outcome, took: Duration, at: SystemTime) -> Self {
        let config = serde_json::from_slice(stdin)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(stdin).into_owned()));
        let (result, error) = match &outcome.result {
            Ok(r) => (r.clone(), None),
            Err(e) => (None, Some(e.to_json(&outcome.version))),
        };
        Self {
            time: humantime::format_rfc3339_millis(at).to_string(),
            verb: env.command.clone(),
            container_id: env.container_id.clone(),
            netns: env.netns.clone(),
            ifname: env.ifname.clone(),
            args: spec::args_map(env),
            config,
            result,
            error,
            duration_ms: took.as_secs_f64() * 1000.0,
            pid: std::process::id(),
        }
    }

    /// The error's code, if the call failed.
    pub fn code(&self) -> Option<u64> {
        self.error.as_ref()?.get("code")?.as_u64()
    }

    /// The network's name from the config.
    pub fn network(&self) -> Option<&str> {
        self.config.get("name")?.as_str()
    }
}

/// The log's directory: `LABCTL_CNI_LOG_DIR` or the default.
pub fn dir_path() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// Appends `record` to the log in `dir` (made if missing), rotating first
/// when it is full.
pub fn append(dir: &Path, record: &Record) -> Result<(), LogError> {
    let d = Dir::private(dir, 0o755)?;
    let path = d.join(OsStr::new(FILE));
    let mut line = serde_json::to_vec(record).map_err(|e| LogError::Write {
        path: path.clone(),
        source: e.into(),
    })?;
    line.push(b'\n');
    let full = d
        .stat(OsStr::new(FILE))?
        .is_some_and(|st| u64::try_from(st.st_size).unwrap_or(0) >= MAX_BYTES);
    if full {
        // One rotation at a time; a call that cannot get the lock soon
        // appends anyway (the next one rotates).
        let lock = d.lock_file(OsStr::new(LOCK), 0o600)?;
        if let Ok(_held) = locks::exclusive_within(lock, Duration::from_millis(500)) {
            let still_full = d
                .stat(OsStr::new(FILE))?
                .is_some_and(|st| u64::try_from(st.st_size).unwrap_or(0) >= MAX_BYTES);
            if still_full {
                d.rename(OsStr::new(FILE), OsStr::new(OLD))?;
            }
        }
    }
    let mut file = d.append(OsStr::new(FILE), 0o644)?;
    file.write_all(&line)
        .map_err(|source| LogError::Write { path, source })
}

fn parse_lines(text: &str, out: &mut Vec<Record>) {
    for line in text.lines() {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(e) => tracing::debug!("skipping a line of the CNI call log: {e}"),
        }
    }
}

/// Every record in `dir`, oldest first (none if there is no log yet).
pub fn read(dir: &Path) -> Result<Vec<Record>, LogError> {
    let Some(d) = Dir::existing_private(dir)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in [OLD, FILE] {
        if let Some(text) = d.read(OsStr::new(name))? {
            parse_lines(&text, &mut out);
        }
    }
    Ok(out)
}

/// Calls `each` with every record in `dir` now, then with each new one as
/// it is appended, until `stop` (a rotation is followed).
pub fn follow(
    dir: &Path,
    stop: &Stop,
    mut each: impl FnMut(&Record) -> std::io::Result<()>,
) -> Result<(), LogError> {
    let write_err = |source| LogError::Write {
        path: dir.join(FILE),
        source,
    };
    let mut seen = 0usize;
    let mut first = true;
    loop {
        let text = match Dir::existing_private(dir)? {
            Some(d) => {
                let mut text = String::new();
                if first && let Some(old) = d.read(OsStr::new(OLD))? {
                    text.push_str(&old);
                }
                let current = d.read(OsStr::new(FILE))?.unwrap_or_default();
                if current.len() < seen {
                    // Rotated: the new file is read from its start.
                    seen = 0;
                }
                let new = current.get(seen..).unwrap_or_default();
                // Only whole lines: a writer may be half-way.
                let whole = new.rfind('\n').map_or(0, |i| i + 1);
                text.push_str(&new[..whole]);
                seen += whole;
                text
            }
            None => String::new(),
        };
        first = false;
        let mut records = Vec::new();
        parse_lines(&text, &mut records);
        for r in &records {
            each(r).map_err(write_err)?;
        }
        if stop.wait(Duration::from_millis(200)) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::cni::spec::CniError;

    #[test]
    fn records_are_appended_read_and_rotated() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let env = Env {
            command: "DEL".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
            ..Env::default()
        };
        let outcome = Outcome {
            verb: None,
            version: "1.1.0".into(),
            result: Err(CniError::new(7, "bad", "details")),
        };
        let r = Record::new(
            &env,
            b"{\"name\":\"n\"}",
            &outcome,
            Duration::from_millis(3),
            SystemTime::UNIX_EPOCH,
        );
        append(d.path(), &r).unwrap();
        append(d.path(), &r).unwrap();
        let all = read(d.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].code(), Some(7));
        assert_eq!(all[0].network(), Some("n"));
        assert_eq!(all[0].time, "1970-01-01T00:00:00.000Z");
        // Full: the next append rotates.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join(FILE))
            .unwrap();
        f.set_len(MAX_BYTES).unwrap();
        append(d.path(), &r).unwrap();
        assert!(d.path().join(OLD).exists());
        let current = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert_eq!(current.lines().count(), 1);
    }
}
