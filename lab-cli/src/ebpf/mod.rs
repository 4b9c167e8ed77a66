//! Our eBPF programs: embedded objects, loading, attaching, pinning, and one
//! module per program that reads its maps as raw rows. Nothing here knows
//! how a row is named or printed: that is the domain modules' work.

pub mod ct_tracker;
pub mod drop_counter;
pub mod drop_tracer;
pub mod error;
pub mod floor;
pub mod lb;
pub mod loader;
pub mod maps;
pub mod masq_counter;
pub mod nat;
pub mod objects;
pub mod offsets;
pub mod pins;
pub mod policy;
pub mod program_types;
pub mod tc;
