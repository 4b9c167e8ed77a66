//! Types shared by the kernel side (`lab-ebpf`) and the user side (`lab-cli`).
//!
//! Every type is `#[repr(C)]` and padding-free, so the byte layout is the same
//! on both sides and can be read from maps without transmuting garbage bytes.
#![no_std]

pub mod ct;
pub mod drop_count;
pub mod flow;
pub mod lb;
pub mod masq;
pub mod nat;
pub mod offsets;
pub mod policy;
pub mod proto;

pub use drop_count::{DropCountKey, DropCounterConfig};
pub use offsets::NetnsOffsets;
pub mod trace;
pub mod verdict;
