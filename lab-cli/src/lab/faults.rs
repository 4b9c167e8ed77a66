//! `lab trigger`: fire one of the drops scenario's planted faults.
//!
//! Packets are hand-built (etherparse) and sent from a raw IP socket in the
//! source pod, so each fault sends exactly the packets it says: a spoofed
//! source, a corrupt TCP checksum or Don't Fragment are not possible with
//! ordinary sockets.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd as _, OwnedFd},
    thread,
    time::Duration,
};

use etherparse::PacketBuilder;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};
use serde::Serialize;
use thiserror::Error;

use super::{
    Endpoint, Lab, LabError,
    firewall::DROPPED_PORT,
    plan::{POD_BRIDGE, POD_IFNAME, WORLD_SERVER},
    scenario::{FAULT_SOURCE, Fault, FaultKind},
    traffic::{self, Proto, TrafficError, TrafficSpec},
};
use crate::kernel::netns::NetNs;

/// The spoofed source of the `rp-filter` fault (TEST-NET-2).
pub const SPOOFED_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The unrouted destination of the `no-route` fault (TEST-NET-2).
pub const UNROUTED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The UDP source port every fault packet uses.
pub const FAULT_SPORT: u16 = 40000;

#[derive(Debug, Error)]
pub enum FaultError {
    #[error(
        "lab `{lab}` (scenario {scenario}) has no planted faults; bring up the drops scenario: `labctl lab up drops`"
    )]
    NoFaults { lab: String, scenario: String },
    #[error("unknown fault `{name}`; the faults are: {known}")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error("cannot send the fault's packets from `{netns}`: {source}")]
    Send { netns: String, source: io::Error },
}

impl FaultError {
    /// Errors in what the user asked for (exit code 2).
    pub fn is_usage(&self) -> bool {
        match self {
            FaultError::NoFaults { .. } | FaultError::Unknown { .. } => true,
            FaultError::Lab(e) => e.is_usage(),
            _ => false,
        }
    }
}

/// What a trigger sent and what the tracer should see.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerReport {
    pub fault: String,
    pub sent: u32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: Proto,
    pub sport: u16,
    pub dport: u16,
    /// The drop reason the kernel reports.
    pub reason: String,
    /// Where: the lab member, its namespace and the interface.
    pub at: String,
    pub netns: String,
    pub iface: String,
}

/// Looks up fault `name` in the lab's scenario.
pub fn find(lab: &Lab, name: &str) -> Result<&'static Fault, FaultError> {
    let faults = lab.plan.scenario.faults;
    if faults.is_empty() {
        return Err(FaultError::NoFaults {
            lab: lab.name().to_owned(),
            scenario: lab.plan.scenario.name.to_owned(),
        });
    }
    faults
        .iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| FaultError::Unknown {
            name: name.to_owned(),
            known: faults
                .iter()
                .map(Fault::name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Sends `count` UDP datagrams from member `from` with the forged source
/// `src` to `dst` (port 5001): what reverse-path filtering is for.
pub fn send_spoofed(
    lab: &Lab,
    from: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    count: u32,
) -> Result<TriggerReport, FaultError> {
    let missing = || FaultError::Unknown {
        name: from.to_owned(),
        known: String::new(),
    };
    let endpoint = lab.endpoint(from).ok_or_else(missing)?;
    let netns = endpoint.netns.clone().ok_or_else(missing)?;
    // Resolve the first hop's MAC (the answer does not matter).
    traffic::run(
        &endpoint,
        &Endpoint {
            name: dst.to_string(),
            netns: None,
            addr: dst,
        },
        &TrafficSpec {
            proto: Proto::Icmp,
            count: 1,
            timeout: Duration::from_millis(200),
            ..TrafficSpec::default()
        },
    )?;
    let shot = Shot {
        report: TriggerReport {
            fault: "spoofed".into(),
            sent: 0,
            src,
            dst,
            proto: Proto::Udp,
            sport: FAULT_SPORT,
            dport: 5001,
            reason: "IP_RPFILTER".into(),
            at: from.into(),
            netns: netns.clone(),
            iface: POD_IFNAME.into(),
        },
        payload: 32,
        dont_fragment: false,
    };
    send(&netns, endpoint.addr, shot, count)
}

/// The packets of one fault, before they are sent.
struct Shot {
    report: TriggerReport,
    payload: usize,
    dont_fragment: bool,
}

/// Sends `count` packets that hit `fault`.
pub fn trigger(lab: &Lab, fault: &Fault, count: u32) -> Result<TriggerReport, FaultError> {
    let missing = |name: &str| FaultError::Unknown {
        name: name.to_owned(),
        known: String::new(),
    };
    let source = lab
        .plan
        .pod(FAULT_SOURCE)
        .ok_or_else(|| missing(FAULT_SOURCE))?;
    let at = lab.endpoint(fault.at).ok_or_else(|| missing(fault.at))?;
    let on_node = lab.plan.node(fault.at).is_some();
    let shot = aim(lab, fault, source.addr, &at, on_node);
    resolve_first_hop(lab, source.node, &at, on_node)?;
    send(&source.netns, source.addr, shot, count)
}

/// What `fault` sends: addresses, ports, size, flags.
fn aim(lab: &Lab, fault: &Fault, src: Ipv4Addr, at: &Endpoint, on_node: bool) -> Shot {
    let pod_b = lab
        .plan
        .pods
        .iter()
        .find(|p| p.name != FAULT_SOURCE)
        .map_or(WORLD_SERVER, |p| p.addr);
    let mut shot = Shot {
        report: TriggerReport {
            fault: fault.name().into(),
            sent: 0,
            src,
            dst: WORLD_SERVER,
            proto: Proto::Udp,
            sport: FAULT_SPORT,
            dport: 5001,
            reason: fault.reason.into(),
            at: fault.at.into(),
            netns: at.netns.clone().unwrap_or_default(),
            iface: if on_node { POD_BRIDGE } else { POD_IFNAME }.into(),
        },
        payload: 32,
        dont_fragment: false,
    };
    let r = &mut shot.report;
    match fault.kind {
        FaultKind::ClosedPort => {
            r.dst = pod_b;
            r.dport = 9;
        }
        FaultKind::Policy => r.dport = DROPPED_PORT,
        FaultKind::RpFilter => r.src = SPOOFED_SOURCE,
        FaultKind::NoRoute => r.dst = UNROUTED,
        FaultKind::TooBig => {
            shot.dont_fragment = true;
            // 20 (IP) + 8 (UDP) + 1372 = 1400 bytes, over the 1280 uplink.
            shot.payload = 1372;
        }
        FaultKind::BadCsum => {
            r.dst = pod_b;
            r.proto = Proto::Tcp;
            r.dport = 8080;
        }
    }
    shot
}

/// Resolves the first hop's MAC, so no fault packet waits in (or overflows)
/// the ARP queue: pings the peer pod on the bridge, or the node's gateway.
fn resolve_first_hop(
    lab: &Lab,
    node: usize,
    at: &Endpoint,
    on_node: bool,
) -> Result<(), FaultError> {
    let node = &lab.plan.nodes[node];
    let first_hop = if on_node {
        Endpoint {
            name: "gateway".into(),
            netns: Some(node.netns.clone()),
            addr: node.gateway,
        }
    } else {
        at.clone()
    };
    let from = lab
        .endpoint(FAULT_SOURCE)
        .ok_or_else(|| FaultError::Unknown {
            name: FAULT_SOURCE.into(),
            known: String::new(),
        })?;
    traffic::run(
        &from,
        &first_hop,
        &TrafficSpec {
            proto: Proto::Icmp,
            count: 1,
            ..TrafficSpec::default()
        },
    )?;
    Ok(())
}

/// Sends the shot `count` times from a raw socket in namespace `netns`.
fn send(
    netns: &str,
    own_addr: Ipv4Addr,
    shot: Shot,
    count: u32,
) -> Result<TriggerReport, FaultError> {
    let Shot {
        mut report,
        payload,
        dont_fragment,
    } = shot;
    let ns = NetNs::open(netns).map_err(LabError::from)?;
    let send_err = |source| FaultError::Send {
        netns: ns.name().to_owned(),
        source,
    };
    let fd: OwnedFd = ns
        .run(|| {
            socket::socket(
                AddressFamily::Inet,
                SockType::Raw,
                SockFlag::empty(),
                SockProtocol::Raw,
            )
        })
        .map_err(LabError::from)?
        .map_err(|e| send_err(e.into()))?;
    // ICMP errors the faults provoke (port/host unreachable, fragmentation
    // needed) come back to pod-a's UDP port 40000. With no socket there they
    // would be dropped as NO_SOCKET in pod-a, adding drops the fault did not
    // ask for; a bound socket absorbs them as socket errors.
    let _absorber = if report.src == own_addr && report.proto == Proto::Udp {
        Some(
            ns.run(|| std::net::UdpSocket::bind(SocketAddrV4::new(own_addr, FAULT_SPORT)))
                .map_err(LabError::from)?
                .map_err(send_err)?,
        )
    } else {
        None
    };
    // Send at the interface MTU whatever the path MTU cache learned from
    // earlier frag-needed errors (the too-big fault must reach the node).
    traffic::set_dont_fragment(&fd).map_err(send_err)?;
    let packet = build(&report, payload, dont_fragment).map_err(send_err)?;
    let to = SockaddrIn::from(SocketAddrV4::new(report.dst, 0));
    for i in 0..count {
        socket::sendto(fd.as_raw_fd(), &packet, &to, socket::MsgFlags::empty())
            .map_err(|e| send_err(e.into()))?;
        report.sent += 1;
        // Stay far below the per-CPU backlog (net.core.netdev_max_backlog,
        // 1000), or the receiver adds CPU_BACKLOG drops of its own.
        if i % 64 == 63 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    // Let the last ICMP errors reach the absorbing socket before it closes.
    thread::sleep(Duration::from_millis(50));
    Ok(report)
}

/// The fault's packet: IPv4 + UDP (or a TCP SYN with a corrupt checksum).
fn build(r: &TriggerReport, payload: usize, dont_fragment: bool) -> io::Result<Vec<u8>> {
    let data = vec![0x5a; if r.proto == Proto::Tcp { 0 } else { payload }];
    let ip = PacketBuilder::ipv4(r.src.octets(), r.dst.octets(), 64);
    let mut out = Vec::new();
    if r.proto == Proto::Tcp {
        ip.tcp(r.sport, r.dport, 1, 64240)
            .syn()
            .write(&mut out, &data)
            .map_err(io::Error::other)?;
        // TCP checksum: bytes 16..18 of the TCP header, after the 20-byte IP header.
        out[20 + 16] ^= 0xff;
    } else {
        ip.udp(r.sport, r.dport)
            .write(&mut out, &data)
            .map_err(io::Error::other)?;
    }
    if dont_fragment {
        // Flags/fragment offset are bytes 6..8 of the IP header; DF is 0x4000.
        // The kernel recomputes the IP header checksum for IP_HDRINCL sockets.
        out[6] |= 0x40;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    fn report(proto: Proto) -> TriggerReport {
        TriggerReport {
            fault: "t".into(),
            sent: 0,
            src: Ipv4Addr::new(10, 244, 1, 2),
            dst: Ipv4Addr::new(10, 244, 1, 3),
            proto,
            sport: FAULT_SPORT,
            dport: 8080,
            reason: String::new(),
            at: String::new(),
            netns: String::new(),
            iface: String::new(),
        }
    }

    #[test]
    fn bad_csum_packet_is_a_syn_with_a_wrong_checksum() {
        let r = report(Proto::Tcp);
        let bytes = build(&r, 0, false).unwrap();
        let packet = SlicedPacket::from_ip(&bytes).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = packet.transport else {
            panic!("not TCP");
        };
        assert!(tcp.syn() && !tcp.ack());
        let good = tcp
            .to_header()
            .calc_checksum_ipv4_raw(r.src.octets(), r.dst.octets(), &[])
            .unwrap();
        assert_ne!(tcp.checksum(), good);
    }

    #[test]
    fn too_big_packet_is_1400_bytes_with_dont_fragment() {
        let bytes = build(&report(Proto::Udp), 1372, true).unwrap();
        assert_eq!(bytes.len(), 1400);
        let packet = SlicedPacket::from_ip(&bytes).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = packet.net else {
            panic!("not IPv4");
        };
        assert!(ip.header().dont_fragment());
    }
}
