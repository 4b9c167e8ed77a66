//! Value parsers shared by every subcommand, so a duration, a port or a
//! ring size is checked the same way everywhere, at parse time (exit 2),
//! before anything touches the kernel or asks for privileges.

use std::time::Duration;

/// The longest duration or interval accepted: one week.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
/// The shortest: one millisecond.
pub const MIN_SECONDS: f64 = 0.001;

/// Seconds as a positive, finite number (`10`, `0.5`), at most a week.
pub fn duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds (e.g. 10 or 0.5)"))?;
    if !secs.is_finite() || !(MIN_SECONDS..=MAX_SECONDS).contains(&secs) {
        return Err(format!(
            "`{s}` is out of range: give seconds from {MIN_SECONDS} to {MAX_SECONDS} (one week)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The smallest and largest ring buffer: a page, and 256 MiB.
pub const RING_MIN: u32 = 4096;
pub const RING_MAX: u32 = 1 << 28;

/// A ring buffer size in bytes: a power of two from 4096 to 256 MiB
/// (a `K` or `M` suffix is allowed: 4M).
pub fn ring_size(s: &str) -> Result<u32, String> {
    let bytes = bytes(s)?;
    match u32::try_from(bytes) {
        Ok(b) if b.is_power_of_two() && (RING_MIN..=RING_MAX).contains(&b) => Ok(b),
        _ => Err(format!(
            "`{s}` is not a valid ring size: give a power of two from 4096 to {RING_MAX} (256M)"
        )),
    }
}

/// `--snaplen`: packet bytes per drop, 1 to the tracer's maximum.
pub fn snaplen(s: &str) -> Result<u32, String> {
    let max = lab_common::trace::MAX_SNAPLEN;
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a valid snaplen: give a number of bytes from 1 to {max}"
        )),
    }
}

/// A socket receive buffer in bytes: 4 KiB (small enough to watch events
/// get lost) to 256 MiB (K/M suffix allowed).
pub fn buffer_size(s: &str) -> Result<usize, String> {
    let bytes = bytes(s)?;
    if !(1 << 12..=1 << 28).contains(&bytes) {
        return Err(format!("`{s}` is out of range: give 4K to 256M bytes"));
    }
    usize::try_from(bytes).map_err(|_| format!("`{s}` is too large"))
}

fn bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size in bytes (e.g. 4194304 or 4M)"))
}

/// `lab traffic -s`: payload bytes per probe, 0 to 1 GiB (TCP's bound; K/M
/// suffixes work). ICMP and UDP's own bound (65,507) needs the protocol:
/// [`traffic_size_for`].
pub fn traffic_size(s: &str) -> Result<usize, String> {
    use crate::lab::traffic::{MAX_DATAGRAM_PAYLOAD, MAX_TCP_PAYLOAD};
    let too_big = || {
        format!(
            "`{s}` is too large: give at most {MAX_TCP_PAYLOAD} bytes (1G) for tcp, {MAX_DATAGRAM_PAYLOAD} for icmp and udp"
        )
    };
    let t = s.trim();
    let (num, mult): (&str, u128) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{s}` is not a size in bytes (e.g. 1400, 64K or 16M)"
        ));
    }
    // All digits: a number too long for u128 is too large, not a typo.
    match num.parse::<u128>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(n) if n <= MAX_TCP_PAYLOAD as u128 => usize::try_from(n).map_err(|_| too_big()),
        _ => Err(too_big()),
    }
}

/// A `-s` size checked against the protocol it is sent with: one IPv4
/// datagram for ICMP and UDP.
pub fn traffic_size_for(size: usize, proto: crate::lab::traffic::Proto) -> Result<(), String> {
    use crate::lab::traffic::{MAX_DATAGRAM_PAYLOAD, Proto};
    match proto {
        Proto::Icmp | Proto::Udp if size > MAX_DATAGRAM_PAYLOAD => Err(format!(
            "-s {size} does not fit in one {proto} datagram: give at most {MAX_DATAGRAM_PAYLOAD} bytes (65,535 less the IPv4 and {proto} headers), or use -p tcp"
        )),
        _ => Ok(()),
    }
}

/// A TCP/UDP port, 1 to 65535.
pub fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{s}` is not a port: give 1 to 65535")),
    }
}

/// An address to listen on: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`
/// (127.0.0.1: never looked up, so a hosts file cannot move it); port 0
/// is any free port. Other host names are refused: an address printed is
/// the one served.
pub fn listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let t = s.trim();
    if let Ok(addr) = t.parse() {
        return Ok(addr);
    }
    let wrong = || {
        format!(
            "`{s}` is not an address to listen on: give IP:PORT (127.0.0.1:9477, [::1]:9477, 0.0.0.0:9477) or localhost:PORT"
        )
    };
    let (host, port) = t.rsplit_once(':').ok_or_else(wrong)?;
    if !host.eq_ignore_ascii_case("localhost") {
        return Err(wrong());
    }
    let port = port.parse::<u16>().map_err(|_| wrong())?;
    Ok((std::net::Ipv4Addr::LOCALHOST, port).into())
}

/// A port range `LO-HI` with 1 <= LO <= HI.
pub fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a port range such as 40000-40099"))?;
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!(
            "`{s}` is empty: the first port must not exceed the second"
        ));
    }
    Ok((lo, hi))
}

/// A service's virtual IP: in the service CIDR 10.96.0.0/12, neither its
/// network nor its broadcast address.
pub fn service_vip(s: &str) -> Result<std::net::Ipv4Addr, String> {
    let vip = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address (e.g. 10.96.0.20)"))?;
    crate::services::model::check_vip(vip).map_err(|e| e.to_string())?;
    Ok(vip)
}

/// A lab name, checked as `lab up --name` checks it.
pub fn lab_name(s: &str) -> Result<String, String> {
    crate::lab::plan::validate_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A built-in scenario's name.
pub fn scenario(s: &str) -> Result<String, String> {
    if crate::lab::scenario::find(s).is_some() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown scenario `{s}`; the scenarios are: {} (see `labctl lab list`)",
            crate::lab::scenario::names().join(", ")
        ))
    }
}

/// A protocol name or number (tcp, udp, icmp, icmpv6, sctp, 17, ...).
pub fn proto(s: &str) -> Result<String, String> {
    lab_common::proto::number(s)
        .map(|_| s.to_owned())
        .ok_or_else(|| {
            format!("unknown protocol `{s}`: use tcp, udp, icmp, icmpv6, sctp or a number")
        })
}

/// An address or CIDR (`10.244.0.0/16`).
pub fn cidr(s: &str) -> Result<String, String> {
    crate::conntrack::filter::parse_cidr(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A TCP conntrack state (ESTABLISHED, ...), any case.
pub fn ct_state(s: &str) -> Result<String, String> {
    crate::conntrack::filter::parse_state(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A conntrack mark: N or N/MASK (decimal or 0x hex).
pub fn mark(s: &str) -> Result<String, String> {
    crate::conntrack::filter::parse_mark(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// MEMBER:PORT (where `lab traffic --backend` starts its echo server).
pub fn backend(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some((member, p)) if !member.is_empty() => port(p).map(|_| s.to_owned()),
        _ => Err(format!("`{s}` is not MEMBER:PORT, e.g. world:5353")),
    }
}

/// A planted fault's name (`labctl lab list` shows them).
pub fn fault(s: &str) -> Result<String, String> {
    let known: Vec<&str> = crate::lab::scenario::SCENARIOS
        .iter()
        .flat_map(|sc| sc.faults.iter().map(|f| f.name()))
        .collect();
    if known.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown fault `{s}`; the faults are: {}",
            known.join(", ")
        ))
    }
}

/// A pod MTU, 576 to 9000.
pub fn mtu(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(m) if (576..=9000).contains(&m) => Ok(m),
        _ => Err(format!("`{s}` is not a usable MTU: give 576 to 9000")),
    }
}

/// The idle lifetime of UDP NAT mappings: 1 s to one day.
pub fn nat_udp_timeout(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(t) if (1..=86_400).contains(&t) => Ok(t),
        _ => Err(format!(
            "`{s}` is not a usable timeout: give 1 to 86400 seconds (0 would expire every mapping at once)"
        )),
    }
}

/// A port and its protocol for `policy trace`: `80`, `80/tcp`, `53/udp`,
/// `2905/sctp` (TCP when none is given).
pub fn port_proto(s: &str) -> Result<(u16, crate::policy::model::Protocol), String> {
    use crate::policy::model::Protocol;
    let (p, proto) = match s.trim().split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (s.trim(), "tcp"),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => {
            return Err(format!(
                "`{s}` is not PORT[/tcp|udp|sctp]: the protocol is tcp, udp or sctp"
            ));
        }
    };
    Ok((port(p)?, proto))
}

/// A label change of `lab pod label`: `KEY=VALUE` or `KEY-`.
pub fn label_change(s: &str) -> Result<crate::lab::policy::LabelChange, String> {
    crate::lab::policy::LabelChange::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_with_protocols_and_label_changes() {
        use crate::{lab::policy::LabelChange, policy::model::Protocol};
        assert_eq!(port_proto("80"), Ok((80, Protocol::Tcp)));
        assert_eq!(port_proto("53/UDP"), Ok((53, Protocol::Udp)));
        assert_eq!(port_proto("2905/sctp"), Ok((2905, Protocol::Sctp)));
        for bad in ["0/tcp", "80/icmp", "x/udp", "", "70000"] {
            assert!(port_proto(bad).is_err(), "{bad}");
        }
        assert_eq!(
            label_change("org=empire"),
            Ok(LabelChange::Set("org".into(), "empire".into()))
        );
        assert_eq!(
            label_change("org="),
            Ok(LabelChange::Set("org".into(), String::new()))
        );
        assert_eq!(label_change("org-"), Ok(LabelChange::Remove("org".into())));
        for bad in ["org", "-x=1", "a b=c", "org=not ok", "-"] {
            assert!(label_change(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_are_ips_or_localhost() {
        assert_eq!(
            listen_addr("127.0.0.1:9477"),
            Ok(([127, 0, 0, 1], 9477).into())
        );
        assert_eq!(
            listen_addr("[::1]:0"),
            Ok((std::net::Ipv6Addr::LOCALHOST, 0).into())
        );
        assert_eq!(
            listen_addr("localhost:9477"),
            Ok(([127, 0, 0, 1], 9477).into())
        );
        assert_eq!(listen_addr("LocalHost:0"), Ok(([127, 0, 0, 1], 0).into()));
        for bad in [
            "localhost",
            "localhost:",
            "localhost:65536",
            "example.org:80",
            ":9477",
            "9477",
        ] {
            let e = listen_addr(bad).unwrap_err();
            assert!(e.contains("localhost:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_are_finite_positive_and_bounded() {
        assert_eq!(duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("10"), Ok(Duration::from_secs(10)));
        for bad in ["1e30", "-1", "inf", "NaN", "0", "", "abc", "604801"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ring_sizes_are_bounded_powers_of_two() {
        assert_eq!(ring_size("4096"), Ok(4096));
        assert_eq!(ring_size("4M"), Ok(4 << 20));
        for bad in ["1073741824", "5000", "2048", "0", "-4", "1G"] {
            assert!(ring_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn traffic_sizes_are_bounded_by_what_the_protocol_carries() {
        use crate::lab::traffic::Proto;
        assert_eq!(traffic_size("0"), Ok(0));
        assert_eq!(traffic_size("64K"), Ok(65_536));
        assert_eq!(traffic_size("1G"), Ok(1 << 30));
        for bad in ["1073741825", "2G", "99999999999999", &"9".repeat(60)] {
            assert!(
                traffic_size(bad).unwrap_err().contains("too large"),
                "{bad}"
            );
        }
        for bad in ["", "-1", "1.5", "K", "12Q"] {
            assert!(
                traffic_size(bad).unwrap_err().contains("not a size"),
                "{bad}"
            );
        }
        assert!(traffic_size_for(65_507, Proto::Udp).is_ok());
        assert!(traffic_size_for(65_508, Proto::Udp).is_err());
        assert!(traffic_size_for(65_508, Proto::Icmp).is_err());
        assert!(traffic_size_for(1 << 30, Proto::Tcp).is_ok());
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(port("53"), Ok(53));
        assert!(port("0").is_err() && port("65536").is_err());
        assert_eq!(port_range("40000-40099"), Ok((40000, 40099)));
        assert!(port_range("9-2").is_err() && port_range("0-5").is_err());
    }

    #[test]
    fn zero_timeouts_and_odd_mtus_are_refused() {
        assert!(nat_udp_timeout("0").is_err());
        assert_eq!(nat_udp_timeout("30"), Ok(30));
        assert!(mtu("100").is_err());
        assert!(buffer_size("0").is_err());
        assert_eq!(buffer_size("8M"), Ok(8 << 20));
        assert!(lab_name("../../tmp/x").is_err());
        assert!(scenario("no-such-scenario").is_err());
    }
}
