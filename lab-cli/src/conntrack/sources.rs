//! Where `conntrack list` reads entries from: netfilter (ctnetlink), the
//! eBPF tracker tables pinned by `conntrack track`, Cilium's pinned maps.

use anyhow::Context as _;

use super::{cilium, entry::CtEntry, filter::CtFilter, netlink::Ctnetlink, tracker};
use crate::kernel::netns::NetNs;

/// The netfilter table, with the mark filtered in the kernel.
pub fn netfilter(ns: Option<&NetNs>, filter: &CtFilter) -> anyhow::Result<Vec<CtEntry>> {
    let mut ct = Ctnetlink::open_in(ns).context("cannot reach ctnetlink")?;
    ct.dump(filter.mark)
        .context("cannot read the conntrack table")
}

/// Every tracker table pinned for this namespace.
pub fn bpf(ns: Option<&NetNs>) -> anyhow::Result<Vec<CtEntry>> {
    let ino = match ns {
        Some(ns) => ns.inode()?,
        None => crate::kernel::netns::current_inode()?,
    };
    let pins = tracker::running(ino)?;
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
            tracker::read_pinned(&pin)
                .with_context(|| format!("cannot read the tracker table {}", pin.display()))?,
        );
    }
    Ok(all)
}

/// Cilium's CT maps, when this node runs Cilium.
pub fn cilium() -> anyhow::Result<Vec<CtEntry>> {
    Ok(cilium::read_all()?)
}
