//! `lab traffic`: built-in generators (ICMP echo, UDP and TCP echo) between
//! lab members, so labs need no extra tools, with a summary that also says
//! which source address the server saw (masquerade at work).

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};
use serde::Serialize;
use thiserror::Error;

use super::Endpoint;
use crate::kernel::netns::{NetNs, NetnsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
}

impl TrafficSpec {
    /// Whether probe number `seq` (0-based) should still be sent.
    fn more(&self, seq: u32, started: Instant) -> bool {
        match self.duration {
            Some(d) => started.elapsed() < d,
            None => seq < self.count,
        }
    }
}

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
        errors: BTreeMap::new(),
        bytes: None,
        mbit_per_s: None,
    };
    let server = match (&to_ns, spec.proto) {
        (Some(ns), Proto::Udp | Proto::Tcp | Proto::TcpStream) => {
            Some(EchoServer::start(ns, to.addr, spec)?)
        }
        _ => None,
    };
    let mut rtts = Vec::new();
    let target = SocketAddrV4::new(to.addr, spec.port);
    match spec.proto {
        Proto::Udp => udp_probes(&from_ns, target, spec, &mut report, &mut rtts)?,
        Proto::Tcp => tcp_probes(&from_ns, target, spec, &mut report, &mut rtts)?,
        Proto::Icmp => icmp_probes(&from_ns, to.addr, spec, &mut report, &mut rtts)?,
        Proto::TcpStream => tcp_stream(&from_ns, target, spec, &mut report)?,
    }
    if let Some(server) = server {
        let (seen, received) = server.stop();
        report.server_saw = seen;
        if spec.proto == Proto::TcpStream {
            let secs = spec.duration.unwrap_or(DEFAULT_STREAM).as_secs_f64();
            report.bytes = Some(received);
            report.mbit_per_s = Some(received as f64 * 8.0 / secs / 1e6);
        }
    }
    if !rtts.is_empty() {
        let us: Vec<u64> = rtts.iter().map(|d| d.as_micros() as u64).collect();
        report.rtt_min_us = us.iter().copied().min();
        report.rtt_max_us = us.iter().copied().max();
        report.rtt_avg_us = Some(us.iter().sum::<u64>() / us.len() as u64);
    }
    Ok(report)
}

fn socket_err(action: &'static str, ns: &NetNs) -> impl FnOnce(io::Error) -> TrafficError {
    let netns = ns.name().to_owned();
    move |source| TrafficError::Socket {
        action,
        netns,
        source,
    }
}

fn payload(seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0xa5; size.max(4)];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn count_error(report: &mut TrafficReport, e: &io::Error) {
    let what = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".to_owned(),
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => e.to_string(),
    };
    *report.errors.entry(what).or_default() += 1;
}

fn udp_probes(
    ns: &NetNs,
    target: SocketAddrV4,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
    rtts: &mut Vec<Duration>,
) -> Result<(), TrafficError> {
    let socket = ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?
        .map_err(socket_err("open a UDP socket", ns))?;
    socket
        .set_read_timeout(Some(spec.timeout))
        .map_err(socket_err("set a timeout", ns))?;
    let mut buf = vec![0u8; 65536];
    let started = Instant::now();
    for seq in (0u32..).take_while(|&seq| spec.more(seq, started)) {
        let start = Instant::now();
        report.sent += 1;
        if let Err(e) = socket.send_to(&payload(seq, spec.size), target) {
            count_error(report, &e);
            continue;
        }
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if n >= 4 && buf[..4] == seq.to_be_bytes() => {
                    report.answered += 1;
                    rtts.push(start.elapsed());
                    break;
                }
                // A late answer to an earlier probe.
                Ok(_) if start.elapsed() < spec.timeout => continue,
                Ok(_) => {
                    count_error(report, &io::ErrorKind::TimedOut.into());
                    break;
                }
                Err(e) => {
                    count_error(report, &e);
                    break;
                }
            }
        }
    }
    Ok(())
}

fn tcp_probes(
    ns: &NetNs,
    target: SocketAddrV4,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
    rtts: &mut Vec<Duration>,
) -> Result<(), TrafficError> {
    let started = Instant::now();
    for seq in (0u32..).take_while(|&seq| spec.more(seq, started)) {
        report.sent += 1;
        let start = Instant::now();
        let data = payload(seq, spec.size);
        let result = ns.run(|| -> io::Result<()> {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(target), spec.timeout)?;
            stream.set_read_timeout(Some(spec.timeout))?;
            stream.write_all(&data)?;
            let mut back = vec![0u8; data.len()];
            stream.read_exact(&mut back)?;
            if back != data {
                return Err(io::Error::other("echo differs from what was sent"));
            }
            Ok(())
        })?;
        match result {
            Ok(()) => {
                report.answered += 1;
                rtts.push(start.elapsed());
            }
            Err(e) => count_error(report, &e),
        }
    }
    Ok(())
}

/// One connection writing 64 KiB chunks for the stream's duration.
fn tcp_stream(
    ns: &NetNs,
    target: SocketAddrV4,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
) -> Result<(), TrafficError> {
    let duration = spec.duration.unwrap_or(DEFAULT_STREAM);
    report.sent = 1;
    let chunk = vec![0x5a; 64 * 1024];
    let result = ns.run(|| -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(target), spec.timeout)?;
        let started = Instant::now();
        while started.elapsed() < duration {
            stream.write_all(&chunk)?;
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        // Wait for the sink to close (read returns 0): everything sent has
        // been counted. The sink never writes, so any data is a protocol error.
        let mut rest = [0u8; 1];
        stream.set_read_timeout(Some(spec.timeout))?;
        match stream.read(&mut rest)? {
            0 => Ok(()),
            _ => Err(io::Error::other("the sink sent data")),
        }
    })?;
    match result {
        Ok(()) => report.answered = 1,
        Err(e) => count_error(report, &e),
    }
    Ok(())
}

/// ICMP echo from a ping socket (SOCK_DGRAM/IPPROTO_ICMP; lab namespaces
/// allow them through net.ipv4.ping_group_range), with DF set as `ping -M
/// do`, so an MTU problem shows up as missing answers instead of fragments.
/// A raw socket would work too, but the kernel would then also hand every
/// reply to ping_rcv, find no ping socket and count a NO_SOCKET drop per
/// reply, which is noise in `labctl trace`.
fn icmp_probes(
    ns: &NetNs,
    dst: Ipv4Addr,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
    rtts: &mut Vec<Duration>,
) -> Result<(), TrafficError> {
    let fd: OwnedFd = ns
        .run(|| {
            socket::socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::empty(),
                SockProtocol::Icmp,
            )
        })?
        .map_err(|e| socket_err("open an ICMP ping socket", ns)(e.into()))?;
    set_dont_fragment(&fd).map_err(socket_err("set Don't Fragment", ns))?;
    socket::setsockopt(
        &fd,
        socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(
            spec.timeout.as_secs() as _,
            spec.timeout.subsec_micros() as _,
        ),
    )
    .map_err(|e| socket_err("set a timeout", ns)(e.into()))?;
    let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    let mut buf = vec![0u8; 65536];
    let started = Instant::now();
    for seq in (0u32..).take_while(|&seq| spec.more(seq, started)) {
        report.sent += 1;
        // The kernel replaces the id with the socket's own identifier.
        let echo = IcmpEchoHeader {
            id: 0,
            seq: seq as u16,
        };
        let data = payload(seq, spec.size);
        let header = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), &data);
        let mut packet = header.to_bytes().to_vec();
        packet.extend_from_slice(&data);
        let start = Instant::now();
        if let Err(e) = socket::sendto(fd.as_raw_fd(), &packet, &to, socket::MsgFlags::empty()) {
            count_error(report, &e.into());
            continue;
        }
        loop {
            match socket::recvfrom::<SockaddrIn>(fd.as_raw_fd(), &mut buf) {
                Ok((n, from)) => {
                    let from = from.map(|a| a.ip());
                    if from == Some(dst) && is_echo_reply(&buf[..n], seq as u16) {
                        report.answered += 1;
                        rtts.push(start.elapsed());
                        break;
                    }
                    if start.elapsed() >= spec.timeout {
                        count_error(report, &io::ErrorKind::TimedOut.into());
                        break;
                    }
                }
                Err(e) => {
                    count_error(report, &e.into());
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Whether a ping-socket read (ICMP header + data) answers probe `seq`.
fn is_echo_reply(message: &[u8], seq: u16) -> bool {
    let Ok((icmp, _)) = Icmpv4Header::from_slice(message) else {
        return false;
    };
    matches!(icmp.icmp_type, Icmpv4Type::EchoReply(e) if e.seq == seq)
}

/// IP_MTU_DISCOVER = IP_PMTUDISC_PROBE: set DF and ignore the path MTU cache
/// (nix has no wrapper for this option).
pub(crate) fn set_dont_fragment(fd: &OwnedFd) -> io::Result<()> {
    let value: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: a valid socket fd and a pointer to an int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A UDP or TCP echo server running in a lab namespace for one `run`.
struct EchoServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<Ipv4Addr, u64>>>,
    /// Bytes received over TCP.
    received: Arc<std::sync::atomic::AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl EchoServer {
    fn start(ns: &NetNs, local: Ipv4Addr, spec: &TrafficSpec) -> Result<Self, TrafficError> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        // Bound to the member's own address, so UDP answers leave from the
        // address the probe was sent to (an unbound socket would pick the
        // outgoing interface's address, which NAT on the way back would not
        // recognise).
        let addr = SocketAddrV4::new(local, spec.port);
        let tick = Duration::from_millis(50);
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let received2 = received.clone();
        // A stream's sink only counts; the other modes echo.
        let echo = spec.proto != Proto::TcpStream;
        let record = move |peer: SocketAddr| {
            if let IpAddr::V4(a) = peer.ip()
                && let Ok(mut seen) = seen2.lock()
            {
                *seen.entry(a).or_default() += 1;
            }
        };
        let thread = match spec.proto {
            Proto::Udp => {
                let socket = ns
                    .run(|| UdpSocket::bind(addr))?
                    .map_err(socket_err("start a UDP echo server", ns))?;
                socket
                    .set_read_timeout(Some(tick))
                    .map_err(socket_err("set a timeout", ns))?;
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                            record(peer);
                            if let Err(e) = socket.send_to(&buf[..n], peer) {
                                tracing::debug!("echo to {peer}: {e}");
                            }
                        }
                    }
                })
            }
            _ => {
                let listener = ns
                    .run(|| TcpListener::bind(addr))?
                    .map_err(socket_err("start a TCP echo server", ns))?;
                thread::spawn(move || {
                    while !stop2.load(Ordering::Relaxed) {
                        if !readable(&listener, tick) {
                            continue;
                        }
                        match listener.accept() {
                            Ok((stream, peer)) => {
                                record(peer);
                                if let Err(e) = echo_stream(stream, tick * 20, echo, &received2) {
                                    tracing::debug!("echo to {peer}: {e}");
                                }
                            }
                            Err(e) => tracing::debug!("accept: {e}"),
                        }
                    }
                })
            }
        };
        Ok(Self {
            stop,
            seen,
            received,
            thread,
        })
    }

    /// Stops the server: the sources it saw, and the TCP bytes it received.
    fn stop(self) -> (BTreeMap<Ipv4Addr, u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::warn!("the echo server thread panicked");
        }
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        (seen, self.received.load(Ordering::Relaxed))
    }
}

/// Waits up to `timeout` for a connection to accept.
fn readable(listener: &TcpListener, timeout: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(listener),
        PollFlags::POLLIN,
    )];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}

/// Echoes (or just counts) one connection until the client closes it.
fn echo_stream(
    mut stream: TcpStream,
    timeout: Duration,
    echo: bool,
    received: &std::sync::atomic::AtomicU64,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
        if echo {
            stream.write_all(&buf[..n])?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_replies_are_matched_on_sequence() {
        let data = payload(3, 8);
        let reply = |seq| {
            let echo = IcmpEchoHeader { id: 7, seq };
            let mut m = Icmpv4Header::with_checksum(Icmpv4Type::EchoReply(echo), &data)
                .to_bytes()
                .to_vec();
            m.extend_from_slice(&data);
            m
        };
        assert!(is_echo_reply(&reply(3), 3));
        assert!(!is_echo_reply(&reply(4), 3));
        let request = Icmpv4Header::with_checksum(
            Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 7, seq: 3 }),
            &data,
        );
        assert!(!is_echo_reply(&request.to_bytes(), 3));
    }

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
