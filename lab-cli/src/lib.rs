//! labctl: hands-on eBPF and CNI networking labs.
//!
//! The binary (`src/main.rs`) only parses arguments and reports errors; all
//! behaviour lives here so integration tests can drive it directly.

pub mod cli;
pub mod commands;
pub mod conntrack;
pub mod drop_demo;
pub mod drop_reason;
pub mod ebpf;
pub mod exit;
pub mod explain;
pub mod interrupt;
pub mod kernel;
pub mod lab;
pub mod privilege;
pub mod trace;
