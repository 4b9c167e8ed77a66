//! A minimal ctnetlink query: the global conntrack table size.
//!
//! Used by `labctl doctor` to prove ctnetlink is reachable. Framing comes from
//! netlink-packet-core / netlink-packet-netfilter; the crate has no typed
//! IPCTNL_MSG_CT_GET_STATS message, so its two attributes are read here.

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::ConntrackMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use thiserror::Error;

/// IPCTNL_MSG_CT_GET_STATS from linux/netfilter/nfnetlink_conntrack.h.
const IPCTNL_MSG_CT_GET_STATS: u8 = 5;
const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

#[derive(Debug, Error)]
pub enum CtnetlinkError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("ctnetlink answered with error {0}; is nf_conntrack loaded? (modprobe nf_conntrack)")]
    Kernel(i32),
    #[error("ctnetlink sent a message labctl cannot parse: {0}")]
    Parse(String),
}

/// Entries in the conntrack table of the current netns, and its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    pub entries: u32,
    pub max: u32,
}

pub fn table_size() -> Result<TableSize, CtnetlinkError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(CtnetlinkError::Socket)?;
    socket
        .bind_auto()
        .and_then(|_| socket.connect(&SocketAddr::new(0, 0)))
        .map_err(CtnetlinkError::Socket)?;

    let request = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
        ConntrackMessage::Other {
            message_type: IPCTNL_MSG_CT_GET_STATS,
            attributes: vec![],
        },
    );
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf, 0).map_err(CtnetlinkError::Socket)?;

    let mut reply = vec![0u8; 8192];
    let n = socket
        .recv(&mut &mut reply[..], 0)
        .map_err(CtnetlinkError::Socket)?;
    let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(&reply[..n])
        .map_err(|e| CtnetlinkError::Parse(e.to_string()))?;
    match parsed.payload {
        NetlinkPayload::Error(e) => Err(CtnetlinkError::Kernel(e.raw_code())),
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Other { attributes, .. }),
            ..
        }) => {
            let mut size = TableSize { entries: 0, max: 0 };
            for nla in attributes {
                use netlink_packet_core::Nla as _;
                let mut value = [0u8; 4];
                if nla.value_len() == 4 {
                    nla.emit_value(&mut value);
                }
                match nla.kind() {
                    CTA_STATS_GLOBAL_ENTRIES => size.entries = u32::from_be_bytes(value),
                    CTA_STATS_GLOBAL_MAX_ENTRIES => size.max = u32::from_be_bytes(value),
                    _ => {}
                }
            }
            Ok(size)
        }
        other => Err(CtnetlinkError::Parse(format!("{other:?}"))),
    }
}
