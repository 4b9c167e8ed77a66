//! Packet drops: the kernel's reasons and what they mean, the filters, and
//! the tracing session behind `labctl trace`. A drop is born in
//! `lab-ebpf/src/bin/drop_tracer.rs`, read raw by `ebpf::drop_tracer`,
//! named here (`record`), and printed by `output::drops`.

pub mod counter;
pub mod explain;
pub mod filter;
pub mod reasons;
pub mod record;
pub mod session;
