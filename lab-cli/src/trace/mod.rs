//! `labctl trace`: the packet drop tracer's user side.

pub mod filter;
pub mod kallsyms;
pub mod names;
pub mod record;
pub mod session;
