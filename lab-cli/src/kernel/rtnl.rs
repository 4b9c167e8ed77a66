//! Synchronous rtnetlink (via the `rtnetlink` crate) bound to one network
//! namespace.
//!
//! The netlink socket is opened by a thread that has entered the namespace,
//! and stays bound to it afterwards, so one process can configure many
//! namespaces without forking. Each [`Rtnl`] owns a small current-thread
//! runtime: labctl's commands are synchronous and only need netlink in short
//! request/response bursts.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd as _,
};

use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    address::AddressAttribute,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, State},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
};
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
    packet_route::link::InfoData,
};
use thiserror::Error;

use super::netns::{NetNs, NetnsError};

#[derive(Debug, Error)]
pub enum RtnlError {
    #[error("cannot start a netlink runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("interface `{name}` does not exist in network namespace `{netns}`")]
    NoSuchLink { name: String, netns: String },
    #[error("{what} in network namespace `{netns}` failed: {source}")]
    Netlink {
        what: String,
        netns: String,
        source: rtnetlink::Error,
    },
}

/// One interface as `ip -d link` / `ip addr` would show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkInfoSummary {
    pub name: String,
    pub index: u32,
    pub kind: Option<String>,
    pub mtu: u32,
    pub up: bool,
    /// The bridge this interface is attached to.
    pub master: Option<String>,
    pub alias: Option<String>,
    pub mac: Option<String>,
    /// Addresses as `ADDR/PREFIX`.
    pub addresses: Vec<String>,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteSummary {
    /// `default` or `NET/PREFIX`.
    pub dst: String,
    pub via: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub scope_link: bool,
}

/// An rtnetlink connection into one namespace.
pub struct Rtnl {
    netns: String,
    handle: Handle,
    rt: tokio::runtime::Runtime,
}

impl Rtnl {
    /// Connects to the namespace the calling thread runs in.
    pub fn current() -> Result<Self, RtnlError> {
        let rt = runtime()?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(RtnlError::Connect)?
        };
        rt.spawn(conn);
        Ok(Self {
            netns: "host".into(),
            handle,
            rt,
        })
    }

    /// Connects to `ns`.
    pub fn open(ns: &NetNs) -> Result<Self, RtnlError> {
        let rt = runtime()?;
        let (conn, handle, _) = ns.run(|| {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(RtnlError::Connect)
        })??;
        rt.spawn(conn);
        Ok(Self {
            netns: ns.name().to_owned(),
            handle,
            rt,
        })
    }

    fn fail(&self, what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RtnlError {
        let what = what.into();
        let netns = self.netns.clone();
        move |source| RtnlError::Netlink {
            what,
            netns,
            source,
        }
    }

    /// The index of interface `name`.
    pub fn index(&self, name: &str) -> Result<u32, RtnlError> {
        let missing = || RtnlError::NoSuchLink {
            name: name.to_owned(),
            netns: self.netns.clone(),
        };
        let found = self.rt.block_on(async {
            self.handle
                .link()
                .get()
                .match_name(name.to_owned())
                .execute()
                .try_next()
                .await
        });
        match found {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(missing()),
            Err(rtnetlink::Error::NetlinkError(ref m)) if m.raw_code() == -libc::ENODEV => {
                Err(missing())
            }
            Err(e) => Err(self.fail(format!("looking up `{name}`"))(e)),
        }
    }

    fn add(&self, what: String, msg: LinkMessage) -> Result<(), RtnlError> {
        let fail = self.fail(what);
        self.rt
            .block_on(self.handle.link().add(msg).execute())
            .map_err(fail)
    }

    fn set(&self, what: String, msg: LinkMessage) -> Result<(), RtnlError> {
        let fail = self.fail(what);
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .map_err(fail)
    }

    /// Creates a veth pair `name` <-> `peer` with the given MTU; the peer is
    /// created directly inside `peer_ns` (as `ip link add NAME type veth peer
    /// name PEER netns NS` does), so its name only has to be free there.
    pub fn add_veth(
        &self,
        name: &str,
        peer: &str,
        mtu: u32,
        peer_ns: &NetNs,
    ) -> Result<(), RtnlError> {
        let ns_file = open_ns(peer_ns)?;
        let mut msg = LinkVeth::new(name, peer).mtu(mtu).build();
        // The peer's MTU and namespace go inside the nested peer message.
        for attr in &mut msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = attr {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Veth(
                        rtnetlink::packet_route::link::InfoVeth::Peer(peer_msg),
                    )) = info
                    {
                        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
                        peer_msg
                            .attributes
                            .push(LinkAttribute::NetNsFd(ns_file.as_raw_fd()));
                    }
                }
            }
        }
        self.add(
            format!(
                "creating veth pair {name} <-> {peer} (in {})",
                peer_ns.name()
            ),
            msg,
        )
    }

    /// Creates a bridge. `nf_call_iptables` makes bridged IPv4 traffic go
    /// through the inet hooks (what br_netfilter's bridge-nf-call-iptables
    /// does, but for this bridge only), so pod-to-pod rules apply.
    pub fn add_bridge(
        &self,
        name: &str,
        mtu: u32,
        nf_call_iptables: bool,
    ) -> Result<(), RtnlError> {
        // Without multicast snooping the bridge does not join 224.0.0.106
        // and send IGMP reports that every port would drop as NOT_SPECIFIED
        // (noise in `labctl trace`); labs carry no multicast.
        let msg = LinkBridge::new(name)
            .mtu(mtu)
            .nf_call_iptables(nf_call_iptables)
            .mcast_snooping(false)
            .build();
        self.add(format!("creating bridge {name}"), msg)
    }

    /// Creates a VXLAN device over `dev` from `local`, with one all-zeros
    /// forwarding entry per remote (`bridge fdb append 00:00:00:00:00:00 dev
    /// NAME dst REMOTE`, as flannel and Cilium's tunnel do): unknown and
    /// broadcast frames go to every peer, so any number of nodes can join.
    pub fn add_vxlan(&self, vx: &VxlanSpec) -> Result<(), RtnlError> {
        let dev = self.index(&vx.dev)?;
        let msg = LinkVxlan::new(&vx.name, vx.vni)
            .dev(dev)
            .local(vx.local)
            .port(vx.port)
            .mtu(vx.mtu)
            .build();
        self.add(format!("creating VXLAN device {}", vx.name), msg)?;
        let index = self.index(&vx.name)?;
        for remote in &vx.remotes {
            self.fdb_append_flood(index, *remote)
                .map_err(self.fail(format!("adding {remote} to {}'s forwarding table", vx.name)))?;
        }
        Ok(())
    }

    /// `bridge fdb append 00:00:00:00:00:00 dev INDEX dst REMOTE self
    /// permanent`. rtnetlink's request sends NLM_F_EXCL, which refuses a
    /// second all-zeros entry, so the message is sent here with NLM_F_APPEND.
    fn fdb_append_flood(&self, index: u32, remote: Ipv4Addr) -> Result<(), rtnetlink::Error> {
        use futures_util::StreamExt as _;
        use netlink_packet_core::{
            NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
        };
        use netlink_packet_route::{
            AddressFamily, RouteNetlinkMessage,
            neighbour::{
                NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
                NeighbourState,
            },
        };
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![0; 6]),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(remote)),
        ];
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.handle.clone();
        self.rt.block_on(async move {
            let mut response = handle.request(req)?;
            while let Some(message) = response.next().await {
                if let NetlinkPayload::Error(err) = message.payload {
                    return Err(rtnetlink::Error::NetlinkError(err));
                }
            }
            Ok(())
        })
    }

    pub fn set_up(&self, name: &str) -> Result<(), RtnlError> {
        let index = self.index(name)?;
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set(format!("setting {name} up"), msg)
    }

    /// Renames interface `from` to `to` (it must be down).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), RtnlError> {
        let index = self.index(from)?;
        let msg = LinkUnspec::new_with_index(index)
            .name(to.to_owned())
            .build();
        self.set(format!("renaming {from} to {to}"), msg)
    }

    pub fn set_alias(&self, name: &str, alias: &str) -> Result<(), RtnlError> {
        let index = self.index(name)?;
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.set(format!("tagging {name}"), msg)
    }

    pub fn set_master(&self, name: &str, bridge: &str) -> Result<(), RtnlError> {
        let index = self.index(name)?;
        let master = self.index(bridge)?;
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.set(format!("attaching {name} to {bridge}"), msg)
    }

    /// Moves interface `name` into namespace `to`.
    pub fn move_to(&self, name: &str, to: &NetNs) -> Result<(), RtnlError> {
        let index = self.index(name)?;
        let file = open_ns(to)?;
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(file.as_raw_fd())
            .build();
        self.set(format!("moving {name} into {}", to.name()), msg)
    }

    /// Deletes interface `name` (a veth takes its peer with it); false: it
    /// was not there.
    pub fn delete_link(&self, name: &str) -> Result<bool, RtnlError> {
        let index = match self.index(name) {
            Ok(i) => i,
            Err(RtnlError::NoSuchLink { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let fail = self.fail(format!("deleting {name}"));
        match self.rt.block_on(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(ref m)) if m.raw_code() == -libc::ENODEV => {
                Ok(false)
            }
            Err(e) => Err(fail(e)),
        }
    }

    pub fn add_address(&self, name: &str, addr: IpAddr, prefix: u8) -> Result<(), RtnlError> {
        let index = self.index(name)?;
        let fail = self.fail(format!("adding {addr}/{prefix} to {name}"));
        self.rt
            .block_on(self.handle.address().add(index, addr, prefix).execute())
            .map_err(fail)
    }

    /// Adds an IPv4 route: `dst/prefix via gateway dev name [onlink]` (no
    /// gateway: a link-scope route).
    pub fn add_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dev: &str,
        onlink: bool,
    ) -> Result<(), RtnlError> {
        let index = self.index(dev)?;
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(index);
        builder = match gateway {
            Some(gw) => builder.gateway(gw),
            None => builder.scope(RouteScope::Link),
        };
        if onlink {
            builder = builder.onlink();
        }
        let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let fail = self.fail(format!("adding route {dst}/{prefix}{via} dev {dev}"));
        self.rt
            .block_on(self.handle.route().add(builder.build()).execute())
            .map_err(fail)
    }

    /// Whether packets on `name` start with an Ethernet header (Ethernet
    /// and loopback devices) rather than directly with IP (tun, wireguard).
    pub fn has_ethernet_header(&self, name: &str) -> Result<bool, RtnlError> {
        use netlink_packet_route::link::LinkLayerType;
        let index = self.index(name)?;
        let link = self
            .rt
            .block_on(
                self.handle
                    .link()
                    .get()
                    .match_index(index)
                    .execute()
                    .try_next(),
            )
            .map_err(self.fail(format!("looking up `{name}`")))?;
        Ok(link.is_some_and(|l| {
            matches!(
                l.header.link_layer_type,
                LinkLayerType::Ether | LinkLayerType::Loopback
            )
        }))
    }

    /// Every interface with its addresses.
    pub fn links(&self) -> Result<Vec<LinkInfoSummary>, RtnlError> {
        let links: Vec<LinkMessage> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(self.fail("listing interfaces"))?;
        let addrs: Vec<_> = self
            .rt
            .block_on(self.handle.address().get().execute().try_collect())
            .map_err(self.fail("listing addresses"))?;
        let name_of = |index: u32| {
            links
                .iter()
                .find(|l| l.header.index == index)
                .and_then(link_name)
        };
        let mut out = Vec::new();
        for link in &links {
            let mut summary = LinkInfoSummary {
                name: link_name(link).unwrap_or_default(),
                index: link.header.index,
                kind: None,
                mtu: 0,
                up: false,
                master: None,
                alias: None,
                mac: None,
                addresses: Vec::new(),
            };
            for attr in &link.attributes {
                match attr {
                    LinkAttribute::Mtu(m) => summary.mtu = *m,
                    LinkAttribute::OperState(s) => {
                        summary.up = matches!(s, State::Up | State::Unknown)
                    }
                    LinkAttribute::Controller(i) => summary.master = name_of(*i),
                    LinkAttribute::IfAlias(a) => summary.alias = Some(a.clone()),
                    LinkAttribute::Address(mac) if mac.len() == 6 => {
                        summary.mac = Some(
                            mac.iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<Vec<_>>()
                                .join(":"),
                        )
                    }
                    LinkAttribute::LinkInfo(infos) => {
                        for info in infos {
                            if let LinkInfo::Kind(kind) = info {
                                summary.kind = Some(kind_name(kind));
                            }
                        }
                    }
                    _ => {}
                }
            }
            for addr in addrs.iter().filter(|a| a.header.index == link.header.index) {
                for attr in &addr.attributes {
                    if let AddressAttribute::Address(ip) = attr {
                        summary
                            .addresses
                            .push(format!("{ip}/{}", addr.header.prefix_len));
                    }
                }
            }
            out.push(summary);
        }
        Ok(out)
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&self) -> Result<Vec<RouteSummary>, RtnlError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<RouteMessage> = self
            .rt
            .block_on(self.handle.route().get(query).execute().try_collect())
            .map_err(self.fail("listing routes"))?;
        let links = self.links()?;
        let mut out = Vec::new();
        for route in routes.iter().filter(|r| r.header.table == 254) {
            let mut summary = RouteSummary {
                dst: "default".into(),
                via: None,
                dev: None,
                scope_link: route.header.scope == RouteScope::Link,
            };
            for attr in &route.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                        summary.dst = format!("{a}/{}", route.header.destination_prefix_length)
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => summary.via = Some(*a),
                    RouteAttribute::Oif(i) => {
                        summary.dev = links.iter().find(|l| l.index == *i).map(|l| l.name.clone())
                    }
                    _ => {}
                }
            }
            out.push(summary);
        }
        Ok(out)
    }
}

/// A VXLAN tunnel endpoint and the peers it floods to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub dev: String,
    pub local: Ipv4Addr,
    pub remotes: Vec<Ipv4Addr>,
    pub port: u16,
    pub mtu: u32,
}

fn open_ns(ns: &NetNs) -> Result<std::fs::File, RtnlError> {
    std::fs::File::open(ns.path()).map_err(|source| {
        RtnlError::Netns(NetnsError::Io {
            action: "open",
            name: ns.name().to_owned(),
            source,
        })
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, RtnlError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RtnlError::Runtime)
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(s) => s.clone(),
        k => format!("{k:?}").to_lowercase(),
    }
}
