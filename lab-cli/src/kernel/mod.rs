//! Facts about, and operations on, the running kernel.

pub mod btf;
pub mod ctnetlink;
pub mod link;
pub mod netns;
pub mod tracefs;
