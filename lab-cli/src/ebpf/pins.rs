//! Where labctl pins maps and links in the BPF filesystem: the layout, in
//! one place.
//!
//! ```text
//! /sys/fs/bpf/labctl/                  0700, root's
//!   ct-<netns inode>-<iface>/          `conntrack track`: table, counters
//!   nat-<netns inode>/                 eBPF masquerading: egress, ingress
//!                                      (tcx links), out, in, stats, pods
//! ```

use std::{
    fs::DirBuilder,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use super::error::ProgramSetupError;
use crate::kernel::bpffs;

/// labctl's directory in bpffs.
pub fn root() -> PathBuf {
    Path::new(bpffs::BPFFS).join("labctl")
}

/// Mounts bpffs if needed and creates labctl's directory (mode 0700).
pub fn ensure_root() -> Result<PathBuf, ProgramSetupError> {
    bpffs::ensure_mounted()?;
    let root = root();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .map_err(|source| ProgramSetupError::Io {
            path: root.clone(),
            source,
        })?;
    Ok(root)
}

/// A tracker's pins: `ct-<netns inode>-<iface>`.
pub fn tracker(netns_ino: u64, iface: &str) -> PathBuf {
    root().join(format!("ct-{netns_ino}-{iface}"))
}

/// Every tracker pinned for the namespace with inode `netns_ino`.
pub fn trackers(netns_ino: u64) -> Vec<PathBuf> {
    let prefix = format!("ct-{netns_ino}-");
    match std::fs::read_dir(root()) {
        Ok(dir) => dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A node's eBPF masquerading: `nat-<netns inode>`.
pub fn nat(netns_ino: u64) -> PathBuf {
    root().join(format!("nat-{netns_ino}"))
}
