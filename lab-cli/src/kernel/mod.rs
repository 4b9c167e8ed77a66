//! Facts about, and operations on, the running kernel.

pub mod bpffs;
pub mod btf;
pub mod clock;
pub mod ctnetlink;
pub mod netns;
pub mod rtnl;
pub mod sysctl;
pub mod tracefs;
