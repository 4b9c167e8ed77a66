//! The server side of `lab traffic`: a UDP or TCP echo (or, for streams,
//! a sink) in the receiving member's namespace, recording who it saw.

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use super::{Proto, TrafficError, TrafficSpec, probes::socket_err};
use crate::kernel::netns::NetNs;

/// A UDP or TCP echo server running in a lab namespace for one `run`.
pub(super) struct EchoServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<Ipv4Addr, u64>>>,
    /// Bytes received over TCP.
    received: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl EchoServer {
    /// `name`: answer with it (a service backend telling the client who
    /// it is): after each UDP echo's payload, and as a first line on each
    /// TCP connection.
    pub(super) fn start(
        ns: &NetNs,
        local: Ipv4Addr,
        spec: &TrafficSpec,
        name: Option<&str>,
    ) -> Result<Self, TrafficError> {
        let name: Vec<u8> = name.map(|n| n.as_bytes().to_vec()).unwrap_or_default();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        // Bound to the member's own address, so UDP answers leave from the
        // address the probe was sent to (an unbound socket would pick the
        // outgoing interface's address, which NAT on the way back would not
        // recognise).
        let addr = SocketAddrV4::new(local, spec.port);
        let tick = Duration::from_millis(50);
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let received = Arc::new(AtomicU64::new(0));
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
                    .run(|| UdpSocket::bind(addr).map_err(|e| taken(e, addr.port(), false)))?
                    .map_err(|e| e.into_error("start a UDP echo server", ns))?;
                socket
                    .set_read_timeout(Some(tick))
                    .map_err(socket_err("set a timeout", ns))?;
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop2.load(Ordering::Relaxed) {
                        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                            record(peer);
                            let mut reply = buf[..n].to_vec();
                            // The name only where it fits in a datagram.
                            if n + name.len() <= super::MAX_DATAGRAM_PAYLOAD {
                                reply.extend_from_slice(&name);
                            }
                            if let Err(e) = socket.send_to(&reply, peer) {
                                tracing::debug!("echo to {peer}: {e}");
                            }
                        }
                    }
                })
            }
            _ => {
                let listener = ns
                    .run(|| TcpListener::bind(addr).map_err(|e| taken(e, addr.port(), true)))?
                    .map_err(|e| e.into_error("start a TCP echo server", ns))?;
                thread::spawn(move || {
                    while !stop2.load(Ordering::Relaxed) {
                        if !readable(&listener, tick) {
                            continue;
                        }
                        match listener.accept() {
                            Ok((mut stream, peer)) => {
                                record(peer);
                                if !name.is_empty() {
                                    let mut line = name.clone();
                                    line.push(b'\n');
                                    if let Err(e) = stream.write_all(&line) {
                                        tracing::debug!("greeting {peer}: {e}");
                                        continue;
                                    }
                                }
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
    pub(super) fn stop(self) -> (BTreeMap<Ipv4Addr, u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::warn!("the echo server thread panicked");
        }
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        (seen, self.received.load(Ordering::Relaxed))
    }
}

/// A failed bind, with who holds the port when it is taken (looked up in
/// the server's namespace, while the thread is in it).
enum BindError {
    Taken {
        port: u16,
        tcp: bool,
        by: Option<crate::kernel::sockets::Holder>,
    },
    Other(io::Error),
}

fn taken(e: io::Error, port: u16, tcp: bool) -> BindError {
    if e.kind() == io::ErrorKind::AddrInUse {
        BindError::Taken {
            port,
            tcp,
            by: crate::kernel::sockets::holder(port, tcp),
        }
    } else {
        BindError::Other(e)
    }
}

impl BindError {
    fn into_error(self, action: &'static str, ns: &NetNs) -> TrafficError {
        match self {
            BindError::Taken { port, tcp, by } => TrafficError::PortTaken {
                port,
                proto: if tcp { "tcp" } else { "udp" },
                netns: ns.name().to_owned(),
                by,
            },
            BindError::Other(e) => socket_err(action, ns)(e),
        }
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
    received: &AtomicU64,
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
