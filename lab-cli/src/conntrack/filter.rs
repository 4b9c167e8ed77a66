//! `conntrack list` filters, with the meaning `conntrack -L` gives them:
//! addresses and ports match the original direction; NAT is judged from the
//! tuples. The mark is filtered in the kernel (CTA_MARK + CTA_MARK_MASK);
//! the rest here, since ctnetlink's tuple filter (CTA_FILTER, 5.8+) does not
//! take CIDRs.

use ipnet::IpNet;
use thiserror::Error;

use super::entry::{CtEntry, TCP_STATES};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CtFilterError {
    #[error("`{0}` is not an address or CIDR (e.g. 10.244.1.2 or 10.244.0.0/16)")]
    BadCidr(String),
    #[error("`{0}` is not a protocol: use tcp, udp, icmp, icmpv6, sctp or a number")]
    BadProto(String),
    #[error("`{0}` is not a TCP state; the states are: {states}", states = TCP_STATES.join(", "))]
    BadState(String),
    #[error("`{0}` is not a mark: use N or N/MASK (decimal or 0x hex)")]
    BadMark(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtFilter {
    pub proto: Option<u8>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub state: Option<String>,
    pub snat: bool,
    pub dnat: bool,
    pub any_nat: bool,
    /// (value, mask).
    pub mark: Option<(u32, u32)>,
    pub zone: Option<u16>,
    /// Either original address in this set (`--pod`, `--pod-namespace`).
    pub hosts: Option<Vec<std::net::IpAddr>>,
}

pub fn parse_cidr(s: &str) -> Result<IpNet, CtFilterError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| CtFilterError::BadCidr(s.to_owned()))
}

pub fn parse_proto(s: &str) -> Result<u8, CtFilterError> {
    lab_common::proto::number(s).ok_or_else(|| CtFilterError::BadProto(s.to_owned()))
}

pub fn parse_state(s: &str) -> Result<String, CtFilterError> {
    let upper = s.to_ascii_uppercase();
    if TCP_STATES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(CtFilterError::BadState(s.to_owned()))
    }
}

pub fn parse_mark(s: &str) -> Result<(u32, u32), CtFilterError> {
    let num = |t: &str| match t.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    };
    let bad = || CtFilterError::BadMark(s.to_owned());
    match s.split_once('/') {
        Some((v, m)) => Ok((num(v).ok_or_else(bad)?, num(m).ok_or_else(bad)?)),
        None => Ok((num(s).ok_or_else(bad)?, u32::MAX)),
    }
}

impl CtFilter {
    pub fn matches(&self, e: &CtEntry) -> bool {
        self.proto.is_none_or(|p| p == e.proto_num)
            && self.src.is_none_or(|n| n.contains(&e.orig.src))
            && self.dst.is_none_or(|n| n.contains(&e.orig.dst))
            && self.sport.is_none_or(|p| e.orig.sport == Some(p))
            && self.dport.is_none_or(|p| e.orig.dport == Some(p))
            && self
                .state
                .as_deref()
                .is_none_or(|s| e.state.as_deref() == Some(s))
            && (!self.snat || e.is_snat())
            && (!self.dnat || e.is_dnat())
            && (!self.any_nat || e.is_snat() || e.is_dnat())
            && self.mark.is_none_or(|(v, m)| e.mark & m == v)
            && self.zone.is_none_or(|z| e.zone == z)
            && self
                .hosts
                .as_ref()
                .is_none_or(|h| h.contains(&e.orig.src) || h.contains(&e.orig.dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::entry::tests::udp_snat;

    #[test]
    fn each_filter_keeps_and_excludes() {
        let e = udp_snat();
        let yes = |f: CtFilter| assert!(f.matches(&e), "{f:?} should keep");
        let no = |f: CtFilter| assert!(!f.matches(&e), "{f:?} should exclude");
        yes(CtFilter::default());
        yes(CtFilter {
            proto: Some(17),
            ..Default::default()
        });
        no(CtFilter {
            proto: Some(6),
            ..Default::default()
        });
        yes(CtFilter {
            src: Some(parse_cidr("10.244.0.0/16").unwrap()),
            ..Default::default()
        });
        no(CtFilter {
            src: Some(parse_cidr("10.245.0.0/16").unwrap()),
            ..Default::default()
        });
        yes(CtFilter {
            dst: Some(parse_cidr("1.1.1.1").unwrap()),
            ..Default::default()
        });
        no(CtFilter {
            dst: Some(parse_cidr("1.1.1.2").unwrap()),
            ..Default::default()
        });
        yes(CtFilter {
            sport: Some(40000),
            dport: Some(53),
            ..Default::default()
        });
        no(CtFilter {
            dport: Some(54),
            ..Default::default()
        });
        yes(CtFilter {
            snat: true,
            any_nat: true,
            ..Default::default()
        });
        no(CtFilter {
            dnat: true,
            ..Default::default()
        });
        no(CtFilter {
            state: Some("ESTABLISHED".into()),
            ..Default::default()
        });
        yes(CtFilter {
            mark: Some((0, u32::MAX)),
            zone: Some(0),
            ..Default::default()
        });
        no(CtFilter {
            mark: Some((7, u32::MAX)),
            ..Default::default()
        });
        no(CtFilter {
            zone: Some(3),
            ..Default::default()
        });
    }

    #[test]
    fn bad_input_is_refused_with_the_fix() {
        assert_eq!(
            parse_cidr("10.0.0.0/33"),
            Err(CtFilterError::BadCidr("10.0.0.0/33".into()))
        );
        assert_eq!(
            parse_proto("tcpp"),
            Err(CtFilterError::BadProto("tcpp".into()))
        );
        assert!(parse_state("established").is_ok());
        assert!(
            parse_state("OPEN")
                .unwrap_err()
                .to_string()
                .contains("SYN_SENT")
        );
        assert_eq!(parse_mark("0x10/0xff"), Ok((16, 255)));
        assert_eq!(parse_mark("7"), Ok((7, u32::MAX)));
        assert!(parse_mark("x").is_err());
    }
}
