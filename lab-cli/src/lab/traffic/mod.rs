//! `lab traffic`: built-in generators (ICMP echo, UDP and TCP echo) between
//! lab members, so labs need no extra tools, with a summary that also says
//! which source address the server saw (masquerade at work).

use std::{
    collections::BTreeMap,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use serde::Serialize;
use thiserror::Error;

mod echo;
mod probes;

pub(crate) use probes::set_dont_fragment;

use echo::EchoServer;
use probes::{icmp_probes, tcp_probes, tcp_stream, udp_probes};

use super::Endpoint;
use crate::kernel::{
    interrupt::Stop,
    netns::{NetNs, NetnsError},
};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// ICMP echo (ping), with Don't Fragment set.
    Icmp,
    /// UDP datagrams to an echo server started on the target.
    Udp,
    /// TCP connections to an echo server started on the target, one per probe.
    Tcp,
    /// One TCP connection sending as fast as it can for --duration (default
    /// 3 s) to a sink on the target: throughput.
    TcpStream,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Icmp => "icmp",
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::TcpStream => "tcp-stream",
        })
    }
}

#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub proto: Proto,
    pub port: u16,
    /// Probes (echo requests, datagrams, or connections).
    pub count: u32,
    /// Payload bytes per probe (as `ping -s`).
    pub size: usize,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// Keep probing (or streaming) this long instead of `count` probes.
    pub duration: Option<Duration>,
    /// UDP: send from this source port (one flow, as a resolver pinned to a
    /// port) instead of an ephemeral one.
    pub source_port: Option<u16>,
    /// Where the echo servers run and on which port, when the destination
    /// is not a member (a Service address translated to its backends);
    /// empty: on the destination itself.
    pub servers: Vec<(Endpoint, u16)>,
    /// The servers answer with their own names (a service's backends), so
    /// the report says which backend each probe reached.
    pub named: bool,
}

impl TrafficSpec {
    /// When to stop sending probes: after `count` of them (told to
    /// [`Stop::counted`]) or `duration`, or at Ctrl-C / SIGTERM (the caller
    /// reports what was sent).
    fn stop(&self) -> Stop {
        match self.duration {
            Some(d) => Stop::new().duration(Some(d)),
            None => Stop::new().count(Some(u64::from(self.count))),
        }
    }

    /// Whether probe number `seq` (0-based) should still be sent.
    fn more(stop: &Stop, seq: u32) -> bool {
        !stop.counted(u64::from(seq)) && !stop.stopped()
    }
}

/// The largest ICMP or UDP payload (`-s`): an IPv4 datagram's 65,535
/// bytes less its 20-byte header and the 8-byte ICMP or UDP header.
pub const MAX_DATAGRAM_PAYLOAD: usize = 65_507;

/// The largest TCP payload per probe (`-s`): 1 GiB, streamed (never held
/// in memory whole).
pub const MAX_TCP_PAYLOAD: usize = 1 << 30;

/// How long `tcp-stream` runs without --duration.
pub const DEFAULT_STREAM: Duration = Duration::from_secs(3);

impl Default for TrafficSpec {
    fn default() -> Self {
        Self {
            proto: Proto::Icmp,
            port: 5001,
            count: 3,
            size: 56,
            timeout: Duration::from_secs(1),
            duration: None,
            source_port: None,
            servers: Vec::new(),
            named: false,
        }
    }
}

#[derive(Debug, Error)]
pub enum TrafficError {
    #[error("`{0}` is not in a lab namespace; traffic can only start from a lab member")]
    OutsideSource(String),
    #[error("cannot {action} in network namespace `{netns}`: {source}")]
    Socket {
        action: &'static str,
        netns: String,
        source: io::Error,
    },
    #[error(
        "port {port}/{proto} in network namespace `{netns}` is taken{}: stop it, or send to another --port",
        by.as_ref().map(|h| format!(" by {h}")).unwrap_or_default()
    )]
    PortTaken {
        port: u16,
        proto: &'static str,
        netns: String,
        by: Option<crate::kernel::sockets::Holder>,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    pub from: String,
    pub to: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: Proto,
    /// None for ICMP.
    pub port: Option<u16>,
    pub sent: u32,
    pub answered: u32,
    pub rtt_min_us: Option<u64>,
    pub rtt_avg_us: Option<u64>,
    pub rtt_max_us: Option<u64>,
    /// Source addresses the echo server saw, with counts (UDP/TCP to a lab member).
    pub server_saw: BTreeMap<Ipv4Addr, u64>,
    /// Which backend answered, by the name it gave, with counts (traffic to
    /// a service).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, u64>,
    /// The addresses answers came from, as the client's socket reports
    /// them (UDP: recvfrom; TCP: getpeername), with counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub replies_from: BTreeMap<Ipv4Addr, u64>,
    /// Probes that failed, by error (e.g. "connection refused", "timed out").
    pub errors: BTreeMap<String, u32>,
    /// Payload bytes the sink received (`tcp-stream`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Sink throughput in Mbit/s (`tcp-stream`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbit_per_s: Option<f64>,
}

impl TrafficReport {
    pub fn all_answered(&self) -> bool {
        self.sent > 0 && self.answered == self.sent
    }

    /// One line for humans.
    pub fn text(&self) -> String {
        let port = self.port.map(|p| format!("/{p}")).unwrap_or_default();
        let mut line = format!(
            "{} ({}) -> {} ({}) {}{port}: {}/{} answered",
            self.from, self.src, self.to, self.dst, self.proto, self.answered, self.sent
        );
        if let (Some(min), Some(avg), Some(max)) =
            (self.rtt_min_us, self.rtt_avg_us, self.rtt_max_us)
        {
            let ms = |us: u64| us as f64 / 1000.0;
            line.push_str(&format!(
                ", rtt min/avg/max {:.3}/{:.3}/{:.3} ms",
                ms(min),
                ms(avg),
                ms(max)
            ));
        }
        if !self.server_saw.is_empty() {
            let seen: Vec<_> = self
                .server_saw
                .iter()
                .map(|(a, n)| format!("{a} ×{n}"))
                .collect();
            line.push_str(&format!("; the server saw source {}", seen.join(", ")));
            if self.server_saw.keys().any(|a| *a != self.src) {
                line.push_str(" (source NAT)");
            }
        }
        if !self.backends.is_empty() {
            let seen: Vec<_> = self
                .backends
                .iter()
                .map(|(b, n)| format!("{b} ×{n}"))
                .collect();
            line.push_str(&format!("; answered by {}", seen.join(", ")));
        }
        if !self.replies_from.is_empty() && self.replies_from.keys().any(|a| *a != self.dst) {
            let from: Vec<_> = self
                .replies_from
                .iter()
                .map(|(a, n)| format!("{a} ×{n}"))
                .collect();
            line.push_str(&format!("; answers came from {}", from.join(", ")));
        }
        if let (Some(bytes), Some(rate)) = (self.bytes, self.mbit_per_s) {
            line.push_str(&format!(", {bytes} bytes at {rate:.1} Mbit/s"));
        }
        for (e, n) in &self.errors {
            line.push_str(&format!("; {n}× {e}"));
        }
        line
    }
}

/// Sends `spec.count` probes from `from` to `to` and reports the answers.
pub fn run(
    from: &Endpoint,
    to: &Endpoint,
    spec: &TrafficSpec,
) -> Result<TrafficReport, TrafficError> {
    let from_ns = NetNs::open(
        from.netns
            .as_deref()
            .ok_or_else(|| TrafficError::OutsideSource(from.name.clone()))?,
    )?;
    let to_ns = to.netns.as_deref().map(NetNs::open).transpose()?;
    let mut report = TrafficReport {
        from: from.name.clone(),
        to: to.name.clone(),
        src: from.addr,
        dst: to.addr,
        proto: spec.proto,
        port: (spec.proto != Proto::Icmp).then_some(spec.port),
        sent: 0,
        answered: 0,
        rtt_min_us: None,
        rtt_avg_us: None,
        rtt_max_us: None,
        server_saw: BTreeMap::new(),
        backends: BTreeMap::new(),
        replies_from: BTreeMap::new(),
        errors: BTreeMap::new(),
        bytes: None,
        mbit_per_s: None,
    };
    let mut places = Vec::new();
    if spec.servers.is_empty() {
        if let Some(ns) = to_ns {
            places.push((ns, to.addr, spec.clone(), to.name.clone()));
        }
    } else {
        for (ep, port) in &spec.servers {
            if let Some(ns) = ep.netns.as_deref().map(NetNs::open).transpose()? {
                let spec = TrafficSpec {
                    port: *port,
                    ..spec.clone()
                };
                places.push((ns, ep.addr, spec, ep.name.clone()));
            }
        }
    }
    let mut servers = Vec::new();
    if matches!(spec.proto, Proto::Udp | Proto::Tcp | Proto::TcpStream) {
        for (ns, addr, server_spec, name) in &places {
            let name = spec.named.then_some(name.as_str());
            servers.push(EchoServer::start(ns, *addr, server_spec, name)?);
        }
    }
    let mut rtts = Vec::new();
    let mut streamed = None;
    let target = SocketAddrV4::new(to.addr, spec.port);
    match spec.proto {
        Proto::Udp => udp_probes(&from_ns, target, spec, &mut report, &mut rtts)?,
        Proto::Tcp => tcp_probes(&from_ns, target, spec, &mut report, &mut rtts)?,
        Proto::Icmp => icmp_probes(&from_ns, to.addr, spec, &mut report, &mut rtts)?,
        Proto::TcpStream => streamed = Some(tcp_stream(&from_ns, target, spec, &mut report)?),
    }
    let mut received = 0;
    for server in servers {
        let (seen, bytes) = server.stop();
        for (addr, n) in seen {
            *report.server_saw.entry(addr).or_default() += n;
        }
        received += bytes;
    }
    if let Some(streamed) = streamed {
        // As long as it streamed: less than --duration after Ctrl-C.
        let secs = streamed.as_secs_f64().max(1e-3);
        report.bytes = Some(received);
        report.mbit_per_s = Some(received as f64 * 8.0 / secs / 1e6);
    }
    if !rtts.is_empty() {
        let us: Vec<u64> = rtts.iter().map(|d| d.as_micros() as u64).collect();
        report.rtt_min_us = us.iter().copied().min();
        report.rtt_max_us = us.iter().copied().max();
        report.rtt_avg_us = Some(us.iter().sum::<u64>() / us.len() as u64);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_points_out_source_nat() {
        let mut r = TrafficReport {
            from: "pod-a".into(),
            to: "world".into(),
            src: Ipv4Addr::new(10, 244, 1, 2),
            dst: Ipv4Addr::new(203, 0, 113, 10),
            proto: Proto::Udp,
            port: Some(5001),
            sent: 3,
            answered: 3,
            rtt_min_us: Some(50),
            rtt_avg_us: Some(70),
            rtt_max_us: Some(100),
            server_saw: BTreeMap::from([(Ipv4Addr::new(172, 18, 0, 2), 3)]),
            backends: BTreeMap::new(),
            replies_from: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes: None,
            mbit_per_s: None,
        };
        assert_eq!(
            r.text(),
            "pod-a (10.244.1.2) -> world (203.0.113.10) udp/5001: 3/3 answered, rtt min/avg/max \
             0.050/0.070/0.100 ms; the server saw source 172.18.0.2 ×3 (source NAT)"
        );
        r.answered = 0;
        assert!(!r.all_answered());
    }
}
