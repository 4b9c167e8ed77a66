//! Service load balancing (`labctl lab up service --kube-proxy ebpf` and
//! `ebpf-socket`): the maps are shaped like Cilium's v1.16 `cilium_lb4_*`
//! maps, so a learner who reads `labctl svc list` can read `cilium bpf lb
//! list` next.
//!
//! ```text
//! LB4_SERVICES  (hash)  Lb4Key{vip, port, slot, proto}  -> Lb4Service
//!                       slot 0: the frontend ("master") entry, whose
//!                       `count` is the number of backend slots;
//!                       slot 1..=count: `backend_id` of each backend
//! LB4_BACKENDS  (hash)  backend id (u32)                -> Lb4Backend{addr, port}
//! LB4_REVERSE_NAT (hash) rev-NAT index (u16, network order) -> Lb4ReverseNat{vip, port}
//! ```
//!
//! Addresses, ports and the rev-NAT index are in network byte order, as in
//! Cilium. Differences from Cilium v1.16: `proto` is filled in (6 TCP, 17
//! UDP; Cilium 1.16 leaves it 0 = any), and `Lb4ReverseNat` has two bytes
//! of explicit padding (Cilium's struct is packed, 6 bytes).
//!
//! The per-packet translation (tc) keeps its own connection table: the
//! client's flow towards the VIP -> the backend it was given
//! (`LB4_CT`), and the backend's replies -> the VIP to put back
//! (`LB4_CT_REV`). Socket-LB keeps the reverse mapping per socket
//! (`LB4_REVERSE_SK`, as Cilium's `cilium_lb4_reverse_sk`).

/// The key of `LB4_SERVICES` (Cilium's `struct lb4_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Lb4Key {
    /// The service's virtual IP (network order).
    pub address: u32,
    /// The service port (network order).
    pub dport: u16,
    /// 0: the frontend entry; 1..=count: one backend slot.
    pub backend_slot: u16,
    pub proto: u8,
    /// Cilium's LB_LOOKUP_SCOPE_* (0: external, the only one used here).
    pub scope: u8,
    pub _pad: u16,
}

impl Lb4Key {
    pub const fn new(address: u32, dport: u16, proto: u8, backend_slot: u16) -> Self {
        Self {
            address,
            dport,
            backend_slot,
            proto,
            scope: 0,
            _pad: 0,
        }
    }
}

/// The value of `LB4_SERVICES` (Cilium's `struct lb4_service`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Lb4Service {
    /// A backend slot: the backend's id in `LB4_BACKENDS` (0 in the frontend entry).
    pub backend_id: u32,
    /// The frontend entry: how many backend slots follow (0: no endpoints).
    pub count: u16,
    /// Network order; the key of `LB4_REVERSE_NAT`.
    pub rev_nat_index: u16,
    pub flags: u8,
    pub flags2: u8,
    /// Slots in quarantine (unused here, kept for the layout).
    pub qcount: u16,
}

/// The value of `LB4_BACKENDS` (Cilium's `struct lb4_backend`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Lb4Backend {
    /// Network order.
    pub address: u32,
    /// Network order.
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
    pub cluster_id: u16,
    pub zone: u8,
    pub _pad: u8,
}

/// The value of `LB4_REVERSE_NAT`: what replies' source becomes again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Lb4ReverseNat {
    pub address: u32,
    pub port: u16,
    pub _pad: u16,
}

/// A connection the tc load balancer translated (value of `LB4_CT`, keyed
/// by the client's flow to the VIP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct LbCtEntry {
    pub backend_id: u32,
    /// The backend, cached: the flow keeps it even after the backend is
    /// removed from the service (as conntrack keeps a DNAT).
    pub backend_addr: u32,
    pub backend_port: u16,
    pub rev_nat_index: u16,
}

/// The key of `LB4_REVERSE_SK` (Cilium's `struct ipv4_revnat_tuple`): a
/// socket and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RevSkKey {
    pub cookie: u64,
    pub address: u32,
    pub port: u16,
    pub _pad: u16,
}

/// The value of `LB4_REVERSE_SK` (Cilium's `struct ipv4_revnat_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RevSkEntry {
    pub address: u32,
    pub port: u16,
    pub rev_nat_index: u16,
}

/// Frontends (VIP, port, protocol) per lab, and backend slots in all.
pub const SERVICES_CAPACITY: u32 = 65536;
pub const BACKENDS_CAPACITY: u32 = 65536;
/// Translated connections (tc) and sockets (socket-LB) remembered.
pub const CT_CAPACITY: u32 = 65536;

// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Lb4Key {}
// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Lb4Service {}
// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Lb4Backend {}
// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Lb4ReverseNat {}
// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for LbCtEntry {}
// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RevSkKey {}
// SAFETY: #[repr(C)], integers only, no implicit padding (every gap is
// an explicit field): any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RevSkEntry {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_ciliums_sizes() {
        // lb4_key 12, lb4_service 12, lb4_backend 12, ipv4_revnat_tuple 16,
        // ipv4_revnat_entry 8 (Cilium v1.16, bpf/lib/common.h).
        assert_eq!(size_of::<Lb4Key>(), 12);
        assert_eq!(size_of::<Lb4Service>(), 12);
        assert_eq!(size_of::<Lb4Backend>(), 12);
        assert_eq!(size_of::<RevSkKey>(), 16);
        assert_eq!(size_of::<RevSkEntry>(), 8);
        assert_eq!(size_of::<Lb4ReverseNat>(), 8);
        assert_eq!(size_of::<LbCtEntry>(), 12);
    }
}
