//! labctl: hands-on eBPF and CNI networking labs.
//!
//! The binary (`src/main.rs`) only parses arguments and reports errors; all
//! behaviour lives here so integration tests can drive it directly.
//!
//! Layers, each depending only on those before it (CONTRIBUTING.md; the
//! `layers` test keeps it true):
//!
//! 1. `kernel`: namespaces, netlink, BTF, tracefs, bpffs, signals.
//! 2. `ebpf`: our programs: load, attach, pin, raw map rows.
//! 3. domain: `drops`, `conntrack`, `masq`, `policy`, `services`; then `lab` and `cni`; then `demo`,
//!    `exercises`, `metrics` and `flows` (which name things through labs).
//! 4. `output`: formats, tables, printers, exit codes.
//! 5. `cli`: the command line's arguments.
//! 6. `commands`: one module per subcommand, printing only.

pub mod kernel;

pub mod ebpf;

pub mod conntrack;
pub mod drops;
pub mod masq;
pub mod policy;
pub mod services;

pub mod cni;
pub mod lab;

pub mod demo;
pub mod exercises;
pub mod flows;
pub mod metrics;

pub mod output;

pub mod cli;

pub mod commands;

#[cfg(test)]
mod layers;
#[cfg(test)]
mod views;
