//! `labctl conntrack`: netfilter's connection table (ctnetlink), labctl's
//! eBPF connection tracker, and Cilium's CT maps, side by side.

pub mod cilium;
pub mod entry;
pub mod filter;
pub mod join;
pub mod sources;
