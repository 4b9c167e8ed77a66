//! The IPv4 5-tuple key of the connection tracker's and the NAT's tables.

/// Addresses and ports in network byte order, as in the packet; for ICMP
/// echo both ports hold the echo id, so a reply's reversed key is the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The same flow seen from the other end.
    pub const fn reversed(&self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

// SAFETY: `FlowKey` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
