//! `labctl demo`: the drops lab traced live (`drops_lab`), or a bare eBPF
//! counter counting real drops (`counter`). Both return what they saw; the
//! command prints it.

pub mod counter;
pub mod drops_lab;
