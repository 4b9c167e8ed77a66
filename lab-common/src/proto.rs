//! IP protocol numbers (IANA, as in linux/in.h) and their names: the one
//! table every part of labctl reads, on both sides of the kernel boundary.

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMPV6: u8 = 58;

pub const DCCP: u8 = 33;
pub const GRE: u8 = 47;
pub const SCTP: u8 = 132;
pub const UDPLITE: u8 = 136;

/// Number and lowercase name (`conntrack -L` spelling) of the protocols
/// labctl names; any other number is shown as a number.
pub const NAMES: [(u8, &str); 8] = [
    (ICMP, "icmp"),
    (TCP, "tcp"),
    (UDP, "udp"),
    (DCCP, "dccp"),
    (GRE, "gre"),
    (ICMPV6, "icmpv6"),
    (SCTP, "sctp"),
    (UDPLITE, "udplite"),
];

/// The lowercase name of protocol `number`, if labctl knows it.
pub fn name(number: u8) -> Option<&'static str> {
    NAMES.iter().find(|(n, _)| *n == number).map(|(_, s)| *s)
}

/// The number of a protocol named in any case (`TCP`, `udp`; `icmp6` is
/// `icmpv6`), or given as a number.
pub fn number(name: &str) -> Option<u8> {
    if name.eq_ignore_ascii_case("icmp6") {
        return Some(ICMPV6);
    }
    NAMES
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(name))
        .map(|(n, _)| *n)
        .or_else(|| name.parse().ok())
}
