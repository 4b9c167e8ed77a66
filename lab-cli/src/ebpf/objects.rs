//! The eBPF objects built from `lab-ebpf` by build.rs, embedded in the binary.

use aya::include_bytes_aligned;

/// Trivial programs of every type, used by `labctl doctor`.
pub static PROBES: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes"));

/// The `skb:kfree_skb` drop counter.
pub static DROP_COUNTER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drop-counter"));

/// The packet drop tracer behind `labctl trace`.
pub static DROP_TRACER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drop-tracer"));

/// The eBPF connection tracker behind `labctl conntrack track`.
pub static CT_TRACKER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ct-tracker"));

/// The masquerade counter behind `labctl masq`.
pub static MASQ_COUNTER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/masq-counter"));

/// eBPF masquerading (`labctl lab up basic --masq ebpf`).
pub static NAT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nat"));

/// Service load balancing: tc per packet and socket-LB (`labctl lab up
/// service --kube-proxy ebpf|ebpf-socket`).
pub static LB: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

/// Network policy as Cilium enforces it (`labctl lab up starwars
/// --policy-mode ebpf`).
pub static POLICY: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/policy"));
