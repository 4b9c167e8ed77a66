//! The BPF filesystem, where pinned maps live.

use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use thiserror::Error;

pub const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, Error)]
#[error(
    "cannot mount the BPF filesystem at {BPFFS}: {0}; mount it with `mount -t bpf bpf {BPFFS}`"
)]
pub struct BpffsError(nix::Error);

/// Mounts bpffs at /sys/fs/bpf unless it is already there (a fresh boot
/// without systemd may not have it), mode 0700 as systemd mounts it: only
/// root can create pins.
pub fn ensure_mounted() -> Result<(), BpffsError> {
    if statfs(BPFFS).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    if !Path::new(BPFFS).exists() {
        std::fs::create_dir_all(BPFFS)
            .map_err(|e| BpffsError(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
    }
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(BpffsError)
}
