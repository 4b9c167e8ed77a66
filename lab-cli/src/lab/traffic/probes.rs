//! The client side of `lab traffic`: one function per protocol, each run
//! from a socket opened inside the sending member's namespace.

use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type};
use nix::{
    errno::Errno,
    poll::PollFlags,
    sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn},
};

use super::{DEFAULT_STREAM, TrafficError, TrafficReport, TrafficSpec};
use crate::kernel::{interrupt::Stop, netns::NetNs};

/// The error of a probe cut short by Ctrl-C / SIGTERM.
fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "stopped")
}

/// Waits up to `timeout` until `fd` has one of `events`: the events it has
/// (none after the timeout). Ctrl-C / SIGTERM ends the wait with
/// [`stopped`], so a long `--timeout` never holds the command.
fn ready(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> io::Result<PollFlags> {
    let stop = Stop::new();
    let got = stop.poll(&[(fd, events)], timeout)?;
    if stop.interrupted() {
        return Err(stopped());
    }
    Ok(got.first().copied().unwrap_or(PollFlags::empty()))
}

/// [`TcpStream::connect_timeout`], cut short by Ctrl-C / SIGTERM. Made in
/// the calling thread's namespace.
fn connect(target: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(target)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    if ready(fd.as_fd(), PollFlags::POLLOUT, timeout)?.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out",
        ));
    }
    match socket::getsockopt(&fd, socket::sockopt::SocketError)? {
        0 => {}
        e => return Err(io::Error::from_raw_os_error(e)),
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

pub(super) fn socket_err(
    action: &'static str,
    ns: &NetNs,
) -> impl FnOnce(io::Error) -> TrafficError {
    let netns = ns.name().to_owned();
    move |source| TrafficError::Socket {
        action,
        netns,
        source,
    }
}

pub(super) fn payload(seq: u32, size: usize) -> Vec<u8> {
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

pub(super) fn udp_probes(
    ns: &NetNs,
    target: SocketAddrV4,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
    rtts: &mut Vec<Duration>,
) -> Result<(), TrafficError> {
    let socket = ns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, spec.source_port.unwrap_or(0))))?
        .map_err(socket_err("open a UDP socket", ns))?;
    socket
        .set_read_timeout(Some(spec.timeout))
        .map_err(socket_err("set a timeout", ns))?;
    let mut buf = vec![0u8; 65536];
    let stop = spec.stop();
    for seq in (0u32..).take_while(|&seq| TrafficSpec::more(&stop, seq)) {
        let start = Instant::now();
        report.sent += 1;
        if let Err(e) = socket.send_to(&payload(seq, spec.size), target) {
            count_error(report, &e);
            continue;
        }
        loop {
            let left = spec.timeout.saturating_sub(start.elapsed());
            match ready(socket.as_fd(), PollFlags::POLLIN, left) {
                Ok(r) if r.is_empty() => {
                    count_error(report, &io::ErrorKind::TimedOut.into());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    count_error(report, &e);
                    break;
                }
            }
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if n >= 4 && buf[..4] == seq.to_be_bytes() => {
                    report.answered += 1;
                    rtts.push(start.elapsed());
                    if let SocketAddr::V4(from) = from {
                        *report.replies_from.entry(*from.ip()).or_default() += 1;
                    }
                    let sent = payload(seq, spec.size).len();
                    if spec.named && n > sent {
                        let name = String::from_utf8_lossy(&buf[sent..n]).into_owned();
                        *report.backends.entry(name).or_default() += 1;
                    }
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

pub(super) fn tcp_probes(
    ns: &NetNs,
    target: SocketAddrV4,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
    rtts: &mut Vec<Duration>,
) -> Result<(), TrafficError> {
    let stop = spec.stop();
    for seq in (0u32..).take_while(|&seq| TrafficSpec::more(&stop, seq)) {
        report.sent += 1;
        let start = Instant::now();
        let result = ns.run(|| -> io::Result<(SocketAddr, Option<String>)> {
            let mut stream = connect(target, spec.timeout)?;
            stream.set_read_timeout(Some(spec.timeout))?;
            let name = if spec.named {
                Some(read_line(&mut stream, spec.timeout)?)
            } else {
                None
            };
            exchange(&mut stream, seq, spec.size, spec.timeout)?;
            Ok((stream.peer_addr()?, name))
        })?;
        match result {
            Ok((peer, name)) => {
                report.answered += 1;
                rtts.push(start.elapsed());
                if let SocketAddr::V4(peer) = peer {
                    *report.replies_from.entry(*peer.ip()).or_default() += 1;
                }
                if let Some(name) = name {
                    *report.backends.entry(name).or_default() += 1;
                }
            }
            Err(e) => count_error(report, &e),
        }
    }
    Ok(())
}

/// Sends probe `seq`'s payload (`size` bytes as [`payload`] makes them,
/// without holding them all) and reads the echo back at the same time: the
/// server echoes as it reads, so writing everything before reading would
/// fill both sides' socket buffers and stall for good. `timeout`: the
/// longest wait without progress either way.
fn exchange(stream: &mut TcpStream, seq: u32, size: usize, timeout: Duration) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let total = size.max(4);
    // The first chunk starts with the sequence number; the rest is filler.
    let head = payload(seq, total.min(CHUNK));
    let filler = vec![0xa5; total.min(CHUNK)];
    let expected = |at: usize| head.get(at).copied().unwrap_or(0xa5);
    let mut buf = vec![0u8; CHUNK];
    let (mut sent, mut got) = (0usize, 0usize);
    stream.set_nonblocking(true)?;
    while got < total {
        let mut flags = PollFlags::POLLIN;
        if sent < total {
            flags |= PollFlags::POLLOUT;
        }
        let ready = ready(stream.as_fd(), flags, timeout)?;
        if ready.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no progress for {:.1} s ({sent} of {total} bytes sent, {got} echoed)",
                    timeout.as_secs_f64()
                ),
            ));
        }
        if sent < total && ready.contains(PollFlags::POLLOUT) {
            let piece = if sent < head.len() {
                &head[sent..]
            } else {
                &filler[..(total - sent).min(filler.len())]
            };
            match stream.write(piece) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if ready.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let want = (total - got).min(buf.len());
            match stream.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the server closed after echoing {got} of {total} bytes"),
                    ));
                }
                Ok(n) => {
                    if buf[..n]
                        .iter()
                        .enumerate()
                        .any(|(i, b)| *b != expected(got + i))
                    {
                        return Err(io::Error::other("echo differs from what was sent"));
                    }
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The line a named server greets with (at most 64 bytes), each byte
/// within `timeout`.
fn read_line(stream: &mut TcpStream, timeout: Duration) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        if ready(stream.as_fd(), PollFlags::POLLIN, timeout)?.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// One connection writing 64 KiB chunks for the stream's duration (less
/// after Ctrl-C / SIGTERM); how long it streamed.
pub(super) fn tcp_stream(
    ns: &NetNs,
    target: SocketAddrV4,
    spec: &TrafficSpec,
    report: &mut TrafficReport,
) -> Result<Duration, TrafficError> {
    let duration = spec.duration.unwrap_or(DEFAULT_STREAM);
    report.sent = 1;
    let chunk = vec![0x5a; 64 * 1024];
    let mut streamed = Duration::ZERO;
    let result = ns.run(|| -> io::Result<()> {
        let mut stream = connect(target, spec.timeout)?;
        stream.set_nonblocking(true)?;
        let stop = Stop::new().duration(Some(duration));
        while !stop.stopped() {
            let room = stop.poll(&[(stream.as_fd(), PollFlags::POLLOUT)], spec.timeout)?;
            if stop.stopped() {
                break;
            }
            // A stalled connection (the MTU pitfall: big segments dropped,
            // no ICMP back) must end the stream, not block it forever.
            if room.first().is_none_or(|r| r.is_empty()) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "stalled: no progress for {:.1} s",
                        spec.timeout.as_secs_f64()
                    ),
                ));
            }
            // Part of a chunk is as good: the sink counts bytes.
            match stream.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        streamed = stop.elapsed();
        stream.shutdown(std::net::Shutdown::Write)?;
        // Wait for the sink to close (read returns 0): everything sent has
        // been counted. The sink never writes, so any data is a protocol error.
        if ready(stream.as_fd(), PollFlags::POLLIN, spec.timeout)?.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut rest = [0u8; 1];
        match stream.read(&mut rest)? {
            0 => Ok(()),
            _ => Err(io::Error::other("the sink sent data")),
        }
    })?;
    match result {
        Ok(()) => report.answered = 1,
        Err(e) => count_error(report, &e),
    }
    Ok(streamed)
}

/// ICMP echo from a ping socket (SOCK_DGRAM/IPPROTO_ICMP; lab namespaces
/// allow them through net.ipv4.ping_group_range), with DF set as `ping -M
/// do`, so an MTU problem shows up as missing answers instead of fragments.
/// A raw socket would work too, but the kernel would then also hand every
/// reply to ping_rcv, find no ping socket and count a NO_SOCKET drop per
/// reply, which is noise in `labctl trace`.
pub(super) fn icmp_probes(
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
    let stop = spec.stop();
    for seq in (0u32..).take_while(|&seq| TrafficSpec::more(&stop, seq)) {
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
            let left = spec.timeout.saturating_sub(start.elapsed());
            match ready(fd.as_fd(), PollFlags::POLLIN, left) {
                Ok(r) if r.is_empty() => {
                    count_error(report, &io::ErrorKind::TimedOut.into());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    count_error(report, &e);
                    break;
                }
            }
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
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
}
