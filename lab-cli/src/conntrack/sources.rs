//! Where `conntrack list` reads entries from: netfilter (ctnetlink), the
//! eBPF tracker tables pinned by `conntrack track`, Cilium's pinned maps.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{cilium, entry::CtEntry, filter::CtFilter};
use crate::{
    ebpf::ct_tracker,
    kernel::{ctnetlink::Ctnetlink, netns::NetNs},
};

/// Where `conntrack track` pins its tables: `ct-<netns inode>-<iface>`.
pub const PIN_DIR: &str = "/sys/fs/bpf/labctl";

/// The pin path of a tracker on `iface` in the netns with inode `netns_ino`.
pub fn pin_path(netns_ino: u64, iface: &str) -> PathBuf {
    Path::new(PIN_DIR).join(format!("ct-{netns_ino}-{iface}"))
}

fn netns_inode(ns: Option<&NetNs>) -> anyhow::Result<u64> {
    Ok(match ns {
        Some(ns) => ns.inode()?,
        None => crate::kernel::netns::current_inode()?,
    })
}

/// The netfilter table, with the mark filtered in the kernel.
pub fn netfilter(ns: Option<&NetNs>, filter: &CtFilter) -> anyhow::Result<Vec<CtEntry>> {
    let mut ct = Ctnetlink::open_in(ns).context("cannot reach ctnetlink")?;
    ct.dump(filter.mark)
        .context("cannot read the conntrack table")
}

/// Every tracker table pinned for this namespace.
pub fn bpf(ns: Option<&NetNs>) -> anyhow::Result<Vec<CtEntry>> {
    let prefix = format!("ct-{}-", netns_inode(ns)?);
    let pins: Vec<PathBuf> = match fs::read_dir(PIN_DIR) {
        Ok(dir) => dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    if pins.is_empty() {
        anyhow::bail!(
            "no eBPF connection tracker is running in this namespace; start one with `sudo labctl conntrack track --iface IF{}` and list again while it runs",
            ns.map(|n| format!(" --netns {}", n.name()))
                .unwrap_or_default()
        );
    }
    let mut all = Vec::new();
    for pin in pins {
        all.extend(
            ct_tracker::read_pinned(&pin)
                .with_context(|| format!("cannot read the tracker table {}", pin.display()))?,
        );
    }
    Ok(all)
}

/// Cilium's CT maps, when this node runs Cilium.
pub fn cilium() -> anyhow::Result<Vec<CtEntry>> {
    Ok(cilium::read_all()?)
}
