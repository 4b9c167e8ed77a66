//! ctnetlink: the netfilter conntrack table over netlink.
//!
//! Transport (netlink-sys) and message framing (netlink-packet-core,
//! netlink-packet-netfilter) come from the rust-netlink crates; they type the
//! tuples, status, TCP state, timeout and mark. What they leave as raw
//! attributes is decoded here: counters, zone, id, ICMP id/type/code, and the
//! statistics messages (IPCTNL_MSG_CT_GET_STATS[_CPU]). Constants are from
//! linux/netfilter/nfnetlink_conntrack.h.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use netlink_packet_core::{
    DefaultNla, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use thiserror::Error;

mod attrs;

use attrs::{be_u32, entry_of, kind, raw_attributes};

use super::netns::{NetNs, NetnsError};
use crate::conntrack::entry::CtEntry;

const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
const IPCTNL_MSG_CT_GET_STATS: u8 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_MARK_MASK: u16 = 21;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
/// Multicast groups of conntrack events (enum nfnetlink_groups).
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_DONE: u16 = 3;

/// The per-CPU statistics attributes, in `conntrack -S` order and naming.
pub const CPU_STATS: [(u16, &str); 11] = [
    (2, "found"),
    (4, "invalid"),
    (8, "insert"),
    (9, "insert_failed"),
    (10, "drop"),
    (11, "early_drop"),
    (12, "error"),
    (13, "search_restart"),
    (14, "clash_resolve"),
    (15, "chaintoolong"),
    (6, "delete"),
];

#[derive(Debug, Error)]
pub enum CtnetlinkError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(io::Error),
    #[error(
        "ctnetlink answered with error {0}; is connection tracking available (CONFIG_NF_CT_NETLINK, `modprobe nf_conntrack_netlink`)?"
    )]
    Kernel(i32),
    #[error("ctnetlink sent a message labctl cannot parse: {0}")]
    Parse(String),
    /// The socket's receive buffer overflowed: events were lost (ENOBUFS).
    #[error("the kernel dropped conntrack events: the receive buffer overflowed (ENOBUFS)")]
    Overrun,
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Entries in the conntrack table of the current netns, and its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TableSize {
    pub entries: u32,
    pub max: u32,
}

/// One CPU's conntrack statistics, as `conntrack -S` prints them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuStats {
    pub cpu: u16,
    pub counters: Vec<(&'static str, u32)>,
}

/// What a conntrack event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    New,
    Update,
    Destroy,
}

#[derive(Debug, Clone)]
pub struct CtEvent {
    pub kind: EventKind,
    pub entry: CtEntry,
}

/// A ctnetlink socket in one network namespace.
pub struct Ctnetlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Ctnetlink {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<Self, CtnetlinkError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(CtnetlinkError::Socket)?;
        socket
            .bind_auto()
            .and_then(|_| socket.connect(&SocketAddr::new(0, 0)))
            .map_err(CtnetlinkError::Socket)?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// A socket in `ns` (it stays bound to that namespace).
    pub fn open_in(ns: Option<&NetNs>) -> Result<Self, CtnetlinkError> {
        match ns {
            Some(ns) => ns.run(Self::open)?,
            None => Self::open(),
        }
    }

    fn send(
        &mut self,
        message: ConntrackMessage,
        family: NetfilterProtoFamily,
        flags: u16,
    ) -> Result<u32, CtnetlinkError> {
        self.seq += 1;
        let request = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
        message.finalize();
        let mut buf = vec![0u8; message.buffer_len()];
        message.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(CtnetlinkError::Socket)?;
        Ok(self.seq)
    }

    /// Reads one datagram and splits it into messages.
    fn recv_batch(&mut self) -> Result<Vec<(u16, NetfilterMessage)>, CtnetlinkError> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Err(CtnetlinkError::Overrun);
            }
            Err(e) => return Err(CtnetlinkError::Socket(e)),
        };
        let mut out = Vec::new();
        let mut offset = 0;
        while offset + 16 <= n {
            let len = u32::from_ne_bytes(
                self.buf[offset..offset + 4]
                    .try_into()
                    .map_err(|_| CtnetlinkError::Parse("short header".into()))?,
            ) as usize;
            if len < 16 || offset + len > n {
                return Err(CtnetlinkError::Parse(format!("bad message length {len}")));
            }
            let chunk = &self.buf[offset..offset + len];
            offset += (len + 3) & !3;
            let flags = u16::from_ne_bytes([chunk[6], chunk[7]]);
            let kind = u16::from_ne_bytes([chunk[4], chunk[5]]);
            if kind == NLMSG_DONE {
                out.push((NLMSG_DONE, empty_message()));
                continue;
            }
            let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(chunk)
                .map_err(|e| CtnetlinkError::Parse(e.to_string()))?;
            match parsed.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(CtnetlinkError::Kernel(e.raw_code()));
                }
                NetlinkPayload::InnerMessage(m) => out.push((flags, m)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Every message of a dump, until NLMSG_DONE.
    fn dump_messages(&mut self) -> Result<Vec<(u16, NetfilterMessage)>, CtnetlinkError> {
        let mut all = Vec::new();
        loop {
            for (flags, m) in self.recv_batch()? {
                if flags == NLMSG_DONE {
                    return Ok(all);
                }
                all.push((flags, m));
            }
        }
    }

    /// The whole table (IPv4 and IPv6). `mark` = (value, mask) filters in
    /// the kernel, as `conntrack -L --mark`.
    pub fn dump(&mut self, mark: Option<(u32, u32)>) -> Result<Vec<CtEntry>, CtnetlinkError> {
        let attributes = match mark {
            Some((value, mask)) => vec![
                ConntrackAttribute::CtaMark(value),
                ConntrackAttribute::Other(DefaultNla::new(
                    CTA_MARK_MASK,
                    mask.to_be_bytes().to_vec(),
                )),
            ],
            None => Vec::new(),
        };
        self.send(
            ConntrackMessage::Get(attributes),
            NetfilterProtoFamily::Unspec,
            NLM_F_DUMP,
        )?;
        Ok(self
            .dump_messages()?
            .into_iter()
            .filter_map(|(_, m)| entry_of(&m))
            .collect())
    }

    /// Table size and maximum (IPCTNL_MSG_CT_GET_STATS).
    pub fn table_size(&mut self) -> Result<TableSize, CtnetlinkError> {
        self.send(
            ConntrackMessage::Other {
                message_type: IPCTNL_MSG_CT_GET_STATS,
                attributes: vec![],
            },
            NetfilterProtoFamily::Unspec,
            0,
        )?;
        let mut size = TableSize { entries: 0, max: 0 };
        for (_, m) in self.recv_batch()? {
            for nla in raw_attributes(&m) {
                match kind(&nla) {
                    CTA_STATS_GLOBAL_ENTRIES => size.entries = be_u32(&nla),
                    CTA_STATS_GLOBAL_MAX_ENTRIES => size.max = be_u32(&nla),
                    _ => {}
                }
            }
        }
        Ok(size)
    }

    /// Per-CPU counters (IPCTNL_MSG_CT_GET_STATS_CPU), as `conntrack -S`.
    pub fn cpu_stats(&mut self) -> Result<Vec<CpuStats>, CtnetlinkError> {
        self.send(
            ConntrackMessage::Other {
                message_type: IPCTNL_MSG_CT_GET_STATS_CPU,
                attributes: vec![],
            },
            NetfilterProtoFamily::Unspec,
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for (_, m) in self.dump_messages()? {
            let attrs = raw_attributes(&m);
            let counters = CPU_STATS
                .iter()
                .map(|(kind, name)| {
                    let v = attrs
                        .iter()
                        .find(|a| self::kind(a) == *kind)
                        .map_or(0, be_u32);
                    (*name, v)
                })
                .collect();
            out.push(CpuStats {
                cpu: m.header.res_id,
                counters,
            });
        }
        Ok(out)
    }

    /// Joins the NEW, UPDATE and DESTROY event groups, with a receive
    /// buffer of `rcvbuf` bytes (SO_RCVBUFFORCE when root, so a burst of
    /// events fits; the kernel doubles the value).
    pub fn subscribe(&mut self, rcvbuf: usize) -> Result<(), CtnetlinkError> {
        for group in [
            NFNLGRP_CONNTRACK_NEW,
            NFNLGRP_CONNTRACK_UPDATE,
            NFNLGRP_CONNTRACK_DESTROY,
        ] {
            self.socket
                .add_membership(group)
                .map_err(CtnetlinkError::Socket)?;
        }
        let size = rcvbuf as libc::c_int;
        // SAFETY: a valid socket and a pointer to an int of the given size.
        let forced = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            self.socket
                .set_rx_buf_sz(rcvbuf)
                .map_err(CtnetlinkError::Socket)?;
        }
        Ok(())
    }

    /// Reads every event already queued, without waiting. After an
    /// overrun this must come before resynchronizing: the kernel flags the
    /// next overrun (ENOBUFS) only once the queue has been emptied, so
    /// events lost while it is still full would otherwise go unreported.
    pub fn drain(&mut self) -> Result<Vec<CtEvent>, CtnetlinkError> {
        let mut all = Vec::new();
        loop {
            match self.events(0) {
                Ok(batch) if batch.is_empty() => return Ok(all),
                Ok(batch) => all.extend(batch),
                // Lost again while draining: the resync that follows covers it.
                Err(CtnetlinkError::Overrun) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `timeout_ms` for events; an empty list on timeout.
    pub fn events(&mut self, timeout_ms: u16) -> Result<Vec<CtEvent>, CtnetlinkError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(timeout_ms)) {
            Ok(0) | Err(nix::Error::EINTR) => return Ok(Vec::new()),
            Ok(_) => {}
            Err(e) => return Err(CtnetlinkError::Socket(e.into())),
        }

        Ok(self
            .recv_batch()?
            .into_iter()
            .filter_map(|(flags, m)| {
                let kind = match &m.inner {
                    NetfilterMessageInner::Conntrack(ConntrackMessage::New(_))
                        if flags & NLM_F_CREATE != 0 =>
                    {
                        EventKind::New
                    }
                    NetfilterMessageInner::Conntrack(ConntrackMessage::New(_)) => EventKind::Update,
                    NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(_)) => {
                        EventKind::Destroy
                    }
                    _ => return None,
                };
                entry_of(&m).map(|entry| CtEvent { kind, entry })
            })
            .collect())
    }
}

fn empty_message() -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
        ConntrackMessage::Other {
            message_type: 0,
            attributes: vec![],
        },
    )
}
