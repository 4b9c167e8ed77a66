//! Masquerade (SNAT of pod traffic to the node's address): counted per pod
//! by the masquerade counter, or done by eBPF masquerading (`nat`), whose
//! programs keep the same per-pod counts.

pub mod nat;

use std::net::Ipv4Addr;

use lab_common::masq::{MasqKey, MasqStats};
use serde::Serialize;

use crate::{
    ebpf::{error::ProgramSetupError, masq_counter::MasqCounterProgram},
    kernel::{btf::KernelBtf, netns::NetNs},
};

/// One pod's masquerade, as `labctl masq` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasqRow {
    pub pod: Ipv4Addr,
    /// The address the pod's flows were translated to.
    pub node: Ipv4Addr,
    pub connections: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Lowest and highest translated source port (None: only ICMP).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    /// The pod (`NAMESPACE/NAME`) with this address, where known.
    pub pod_name: Option<String>,
}

/// Rows from per-pod totals (the counter's or the NAT's), sorted by pod
/// address.
pub fn rows(raw: Vec<(MasqKey, MasqStats)>) -> Vec<MasqRow> {
    let mut rows: Vec<MasqRow> = raw
        .into_iter()
        .map(|(k, s)| MasqRow {
            pod: Ipv4Addr::from(k.pod.to_ne_bytes()),
            node: Ipv4Addr::from(k.node.to_ne_bytes()),
            connections: s.connections,
            packets_out: s.packets[0],
            packets_in: s.packets[1],
            bytes_out: s.bytes[0],
            bytes_in: s.bytes[1],
            port_min: (s.port_max != 0).then_some(s.port_min),
            port_max: (s.port_max != 0).then_some(s.port_max),
            pod_name: None,
        })
        .collect();
    rows.sort_by_key(|r| (r.pod, r.node));
    rows
}

/// The masquerade counter on a node, attached until dropped.
pub struct MasqCounter {
    program: MasqCounterProgram,
}

impl MasqCounter {
    /// Counts masquerade in `ns` (a node) leaving through `uplink`.
    pub fn attach(ns: &NetNs, uplink: &str) -> Result<Self, ProgramSetupError> {
        let btf = KernelBtf::from_sys()?;
        Ok(Self {
            program: MasqCounterProgram::attach(&btf, ns, uplink)?,
        })
    }

    /// One row per (pod, node address), sorted by pod address.
    pub fn rows(&self) -> Result<Vec<MasqRow>, ProgramSetupError> {
        Ok(rows(self.program.rows()?))
    }
}
