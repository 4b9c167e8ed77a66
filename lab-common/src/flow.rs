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
    /// Padding, zero. Two fields rather than `[u8; 3]`: zeroing a 3-byte
    /// array is a call to `memset` in eBPF (a BPF-to-BPF call per key).
    pub _pad: u8,
    pub _pad2: u16,
}

impl FlowKey {
    pub const fn new(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            _pad: 0,
            _pad2: 0,
        }
    }

    /// The same flow seen from the other end.
    pub const fn reversed(&self) -> Self {
        Self::new(self.daddr, self.saddr, self.dport, self.sport, self.proto)
    }
}

// SAFETY: `FlowKey` is #[repr(C)], made of integers only, with no padding:
// any bytes are a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
