//! Helpers shared by labctl's eBPF programs.
//!
//! The programs themselves are binaries under `src/bin/`, one object per
//! feature. Everything here only exists for the BPF target; on the host this
//! library is empty (the crate is not a default workspace member).
#![no_std]

#[cfg(target_arch = "bpf")]
pub mod config;
#[cfg(target_arch = "bpf")]
pub mod kernel;
#[cfg(target_arch = "bpf")]
pub mod lb;
#[cfg(target_arch = "bpf")]
pub mod license;
#[cfg(target_arch = "bpf")]
pub mod packet;
#[cfg(target_arch = "bpf")]
pub mod tc;
