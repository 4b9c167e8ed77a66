//! ctnetlink: netfilter's conntrack table over netlink.
//!
//! Transport is netlink-sys; requests are built with netlink-packet-core and
//! netlink-packet-netfilter. Replies and events are read in place from the
//! receive buffer (nlmsghdr and nfgenmsg here, attributes in `attrs` with
//! a walk of the attributes written out; see there why). Constants are
//! from linux/netlink.h and linux/netfilter/nfnetlink_conntrack.h.

use std::{io, os::fd::AsFd as _};

use netlink_packet_core::{
    DefaultNla, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use thiserror::Error;

mod attrs;

use super::entry::CtEntry;
use crate::kernel::netns::{NetNs, NetnsError};

const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
const IPCTNL_MSG_CT_GET_STATS: u8 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;
const CTA_MARK_MASK: u16 = 21;
/// Multicast groups of conntrack events (enum nfnetlink_groups).
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// struct nfgenmsg: family, version, res_id (big endian).
const NFGENMSG_LEN: usize = 4;
const NFNL_SUBSYS_CTNETLINK: u8 = 1;
const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_DELETE: u8 = 2;

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
    /// Writing an entry out failed (e.g. a closed pipe).
    #[error("cannot write the table: {0}")]
    Output(#[source] io::Error),
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

    /// Reads one datagram and hands each message in it to `each`, in place
    /// (no copy, no allocation per message). `each` returns false to stop
    /// at NLMSG_DONE.
    fn recv_each(
        &mut self,
        mut each: impl FnMut(RawMessage<'_>) -> Result<bool, CtnetlinkError>,
    ) -> Result<bool, CtnetlinkError> {
        let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Err(CtnetlinkError::Overrun);
            }
            Err(e) => return Err(CtnetlinkError::Socket(e)),
        };
        let mut offset = 0;
        while offset + NLMSG_HDRLEN <= n {
            let chunk = &self.buf[offset..n];
            let len = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
            if len < NLMSG_HDRLEN || len > chunk.len() {
                return Err(CtnetlinkError::Parse(format!("bad message length {len}")));
            }
            let kind = u16::from_ne_bytes([chunk[4], chunk[5]]);
            let flags = u16::from_ne_bytes([chunk[6], chunk[7]]);
            let body = &chunk[NLMSG_HDRLEN..len];
            offset += (len + 3) & !3;
            match kind {
                NLMSG_DONE => return Ok(false),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code != 0 {
                        return Err(CtnetlinkError::Kernel(code));
                    }
                }
                _ if body.len() >= NFGENMSG_LEN => {
                    let res_id = u16::from_be_bytes([body[2], body[3]]);
                    let keep_going = each(RawMessage {
                        subsys: (kind >> 8) as u8,
                        msg_type: kind as u8,
                        flags,
                        res_id,
                        attrs: &body[NFGENMSG_LEN..],
                    })?;
                    if !keep_going {
                        return Ok(false);
                    }
                }
                _ => {}
            }
        }
        Ok(true)
    }

    /// Every message of a dump until NLMSG_DONE.
    fn dump_all(
        &mut self,
        mut each: impl FnMut(RawMessage<'_>) -> Result<(), CtnetlinkError>,
    ) -> Result<(), CtnetlinkError> {
        while self.recv_each(|m| each(m).map(|()| true))? {}
        Ok(())
    }

    /// The whole table (IPv4 and IPv6). `mark` = (value, mask) filters in
    /// the kernel, as `conntrack -L --mark`.
    pub fn dump(&mut self, mark: Option<(u32, u32)>) -> Result<Vec<CtEntry>, CtnetlinkError> {
        let mut all = Vec::new();
        self.dump_each(mark, |e| {
            all.push(e);
            Ok(())
        })?;
        Ok(all)
    }

    /// The table, handed to `each` entry by entry as the kernel sends it:
    /// memory stays flat however large the table (as `conntrack -L`).
    pub fn dump_each(
        &mut self,
        mark: Option<(u32, u32)>,
        mut each: impl FnMut(CtEntry) -> io::Result<()>,
    ) -> Result<(), CtnetlinkError> {
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
        self.dump_all(|m| {
            if let Some(e) = m.entry() {
                each(e).map_err(CtnetlinkError::Output)?;
            }
            Ok(())
        })
    }

    /// The whole table dumped and read, every message discarded without
    /// decoding: how many there were. The floor `cargo xtask bench
    /// conntrack` holds `conntrack list` against (the kernel's and the
    /// socket's share of a listing).
    pub fn dump_discard(&mut self) -> Result<u64, CtnetlinkError> {
        self.send(
            ConntrackMessage::Get(Vec::new()),
            NetfilterProtoFamily::Unspec,
            NLM_F_DUMP,
        )?;
        let mut n = 0;
        self.dump_all(|_| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
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
        self.recv_each(|m| {
            attrs::each(m.attrs, |kind, value| match kind {
                CTA_STATS_GLOBAL_ENTRIES => size.entries = attrs::be_u32(value),
                CTA_STATS_GLOBAL_MAX_ENTRIES => size.max = attrs::be_u32(value),
                _ => {}
            });
            Ok(false)
        })?;
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
        self.dump_all(|m| {
            let mut counters: Vec<(&'static str, u32)> =
                CPU_STATS.iter().map(|(_, name)| (*name, 0)).collect();
            attrs::each(m.attrs, |kind, value| {
                if let Some(i) = CPU_STATS.iter().position(|(k, _)| *k == kind) {
                    counters[i].1 = attrs::be_u32(value);
                }
            });
            out.push(CpuStats {
                cpu: m.res_id,
                counters,
            });
            Ok(())
        })?;
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
        let forced = nix::sys::socket::setsockopt(
            &self.socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &rcvbuf,
        );
        if forced.is_err() {
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

    /// The socket, for waiting on several at once.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
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

        let mut out = Vec::new();
        self.recv_each(|m| {
            let kind = match (m.subsys, m.msg_type) {
                (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) if m.flags & NLM_F_CREATE != 0 => {
                    EventKind::New
                }
                (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) => EventKind::Update,
                (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) => EventKind::Destroy,
                _ => return Ok(true),
            };
            if let Some(entry) = m.entry() {
                out.push(CtEvent { kind, entry });
            }
            Ok(true)
        })?;
        Ok(out)
    }
}

/// One netfilter message as received: its header fields and the attribute
/// bytes after the nfgenmsg header, borrowed from the receive buffer.
struct RawMessage<'a> {
    subsys: u8,
    msg_type: u8,
    flags: u16,
    res_id: u16,
    attrs: &'a [u8],
}

impl RawMessage<'_> {
    /// The conntrack entry a dump reply or event carries.
    fn entry(&self) -> Option<CtEntry> {
        (self.subsys == NFNL_SUBSYS_CTNETLINK
            && matches!(self.msg_type, IPCTNL_MSG_CT_NEW | IPCTNL_MSG_CT_DELETE))
        .then(|| attrs::entry(self.attrs))
        .flatten()
    }
}
