//! Per-namespace sysctls (`/proc/sys/net/...`).
//!
//! Files under /proc/sys/net belong to the network namespace of the task
//! that opens them, so writing one from a thread that entered a namespace
//! (see `NetNs::run`) changes that namespace only, as
//! `ip netns exec NS sysctl -w ...` would.

use std::{fs, io, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot set sysctl {key} = {value}: {source}")]
pub struct SysctlError {
    pub key: String,
    pub value: String,
    pub source: io::Error,
}

/// The file behind a dotted key: `net.ipv4.ip_forward` ->
/// `/proc/sys/net/ipv4/ip_forward`. Interface names may contain dots, so
/// they are passed already split.
pub fn path(parts: &[&str]) -> PathBuf {
    let mut p = PathBuf::from("/proc/sys");
    p.extend(parts);
    p
}

/// Writes `value` to the sysctl at `parts` in the calling thread's netns.
pub fn write(parts: &[&str], value: &str) -> Result<(), SysctlError> {
    fs::write(path(parts), value).map_err(|source| SysctlError {
        key: parts.join("."),
        value: value.to_owned(),
        source,
    })
}

/// Reads the sysctl at `parts` in the calling thread's netns.
pub fn read(parts: &[&str]) -> io::Result<String> {
    fs::read_to_string(path(parts)).map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_paths() {
        assert_eq!(
            path(&["net", "ipv4", "conf", "eth0.100", "rp_filter"]),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
    }
}
