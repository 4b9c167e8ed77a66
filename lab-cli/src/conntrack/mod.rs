//! Connection tracking side by side: netfilter's table (over ctnetlink, in
//! `netlink`), labctl's eBPF connection tracker (`tracker`), and Cilium's
//! CT maps (`cilium`), all as [`entry::CtEntry`].

pub mod acct;
pub mod cilium;
pub mod entry;
pub mod filter;
pub mod join;
pub mod netlink;
pub mod sources;
pub mod tracker;
pub mod watcher;
