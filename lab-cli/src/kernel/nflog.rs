//! NFLOG (nfnetlink_log): the packets an nft `log group N` statement hands
//! to user space, read from a netlink socket bound to group N in one
//! network namespace (log groups are per namespace). Messages are built
//! and parsed with netlink-packet-netfilter's `nflog` module; the socket
//! is netlink-sys's, non-blocking, waited on through `kernel::interrupt`.
//!
//! One socket may bind a group of a namespace at a time (the kernel
//! answers EBUSY to a second one): [`NflogError::Busy`] says so.

use std::{io, os::fd::AsFd as _};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nflog::{ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage, config_request},
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use thiserror::Error;

use super::netns::{NetNs, NetnsError};

/// How much of each packet is copied: the IPv4 header with options and
/// the first bytes of the transport header (ports, TCP flags).
const COPY_RANGE: u32 = 128;

#[derive(Debug, Error)]
pub enum NflogError {
    #[error("cannot open a netfilter netlink socket for NFLOG: {0}")]
    Socket(io::Error),
    #[error(
        "NFLOG group {0} is already read by another program in this namespace (another `labctl observe`?); stop it and try again"
    )]
    Busy(u16),
    #[error("the kernel refused to bind NFLOG group {group}: error {code}")]
    Kernel { group: u16, code: i32 },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The log statement's prefix.
    pub prefix: String,
    /// The packet from its IP header on (at most [`COPY_RANGE`] bytes).
    pub payload: Vec<u8>,
    /// The packet's mark.
    pub mark: u32,
}

/// A socket bound to one NFLOG group of one namespace.
pub struct Nflog {
    socket: Socket,
    group: u16,
    buf: Vec<u8>,
}

impl Nflog {
    /// Binds group `group` in `ns` (copying the packets' headers, each
    /// handed over at once: a queue threshold of one).
    pub fn open(ns: &NetNs, group: u16) -> Result<Self, NflogError> {
        let socket = ns.run(|| Socket::new(NETLINK_NETFILTER))?;
        let mut socket = socket.map_err(NflogError::Socket)?;
        socket.bind_auto().map_err(NflogError::Socket)?;
        let mut me = Self {
            socket,
            group,
            buf: vec![0; 65536],
        };
        me.configure(vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(COPY_RANGE).into(),
            ConfigNla::QThresh(1),
        ])?;
        me.socket
            .set_non_blocking(true)
            .map_err(NflogError::Socket)?;
        Ok(me)
    }

    /// Sends one configuration request and reads its acknowledgement.
    fn configure(&mut self, nlas: Vec<ConfigNla>) -> Result<(), NflogError> {
        let request = config_request(NetfilterProtoFamily::IPv4, self.group, nlas);
        let mut out = vec![0u8; request.header.length as usize];
        request.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NflogError::Socket)?;
        let n = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(NflogError::Socket)?;
        let reply = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n])
            .map_err(|e| NflogError::Socket(io::Error::other(e.to_string())))?;
        match reply.payload {
            NetlinkPayload::Error(e) => match e.code {
                None => Ok(()),
                Some(code) if code.get() == -libc::EBUSY => Err(NflogError::Busy(self.group)),
                Some(code) => Err(NflogError::Kernel {
                    group: self.group,
                    code: code.get(),
                }),
            },
            _ => Ok(()),
        }
    }

    /// The socket, to wait for it to be readable.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Every packet logged since the last call, without waiting. Packets
    /// the kernel could not queue (a full receive buffer) are lost: the
    /// count of datagrams lost so is returned beside them.
    pub fn drain(&mut self) -> Result<(Vec<Logged>, u64), NflogError> {
        let mut out = Vec::new();
        let mut lost = 0;
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost += 1;
                    continue;
                }
                Err(e) => return Err(NflogError::Socket(e)),
            };
            out.extend(parse_datagram(&self.buf[..n]));
        }
        Ok((out, lost))
    }
}

/// The logged packets of one datagram (several messages may share it;
/// what does not parse is skipped).
pub fn parse_datagram(mut bytes: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            break;
        }
        if let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..len])
            && let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = m.payload
        {
            let mut logged = Logged {
                prefix: String::new(),
                payload: Vec::new(),
                mark: 0,
            };
            for nla in nlas {
                match nla {
                    PacketNla::Prefix(p) => logged.prefix = p.to_string_lossy().into_owned(),
                    PacketNla::Payload(p) => logged.payload = p,
                    PacketNla::Mark(m) => logged.mark = m,
                    _ => {}
                }
            }
            out.push(logged);
        }
        let step = (len + 3) & !3;
        bytes = bytes.get(step..).unwrap_or_default();
    }
    out
}
