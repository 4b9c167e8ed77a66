//! Our eBPF programs: embedded objects, loading, and one module per program.

pub mod ct_tracker;
pub mod drop_counter;
pub mod drop_tracer;
pub mod error;
pub mod loader;
pub mod masq_counter;
pub mod nat;
pub mod objects;
pub mod offsets;
