//! The BPF filesystem, where pinned maps live.

use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::statfs,
};
use thiserror::Error;

pub const BPFFS: &str = "/sys/fs/bpf";
/// BPF_FS_MAGIC from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Error)]
#[error(
    "cannot mount the BPF filesystem at {BPFFS}: {0}; mount it with `mount -t bpf bpf {BPFFS}`"
)]
pub struct BpffsError(nix::Error);

/// Mounts bpffs at /sys/fs/bpf unless it is already there (a fresh boot
/// without systemd may not have it).
pub fn ensure_mounted() -> Result<(), BpffsError> {
    if statfs(BPFFS).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC) {
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
        None::<&str>,
    )
    .map_err(BpffsError)
}
