//! What each CNI operation does to the node. The plugin runs in the node's
//! network namespace (where the runtime runs it) and wires one pod as the
//! reference `ptp` plugin does:
//!
//! ```text
//!  pod netns                          node
//!  eth0 10.244.1.5/32  <-- veth -->  lcXXXXXXXXXX 10.244.1.1/32 (the gateway)
//!  10.244.1.1 dev eth0 scope link      10.244.1.5 dev lcXXXXXXXXXX scope link
//!  default via 10.244.1.1             net.ipv4.ip_forward = 1
//! ```
//!
//! Pods reach each other and the node through the node's routing table;
//! traffic leaving the node is masqueraded when the config asks for it.

use std::{net::Ipv4Addr, path::Path};

use ipnet::Ipv4Net;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    ipam::{IpamError, Store},
    spec::{
        self, AddResult, Attachment, CniError, Env, Interface, Masquerade, Network, Verb, code,
    },
};
use crate::{
    ebpf::tc::TcAttach,
    kernel::{
        netns::{self, NetNs},
        rtnl::{Rtnl, RtnlError},
        sysctl, tool,
    },
    masq,
};

/// The nft table that masquerades pods (one chain per network).
pub const NFT_TABLE: &str = "labctl-cni";

/// What one call produced: the object for stdout (None: nothing, as DEL,
/// GC, STATUS and CHECK print on success) or the error object; and the
/// version its shape follows.
pub struct Outcome {
    pub verb: Option<Verb>,
    pub version: String,
    pub result: Result<Option<Value>, CniError>,
}

impl Outcome {
    /// The text for stdout.
    pub fn stdout(&self) -> String {
        match &self.result {
            Ok(Some(v)) => format!("{v:#}\n"),
            Ok(None) => String::new(),
            Err(e) => format!("{:#}\n", e.to_json(&self.version)),
        }
    }
}

/// Runs one call: the environment a runtime set and what it wrote on stdin.
pub fn call(env: &Env, stdin: &[u8]) -> Outcome {
    let mut out = Outcome {
        verb: None,
        version: spec::CURRENT.to_owned(),
        result: Ok(None),
    };
    let verb = match env.verb() {
        Ok(v) => v,
        Err(e) => {
            if let Ok(raw) = spec::decode(stdin) {
                let v = spec::version_of(&raw);
                if spec::SUPPORTED.contains(&v.as_str()) {
                    out.version = v;
                }
            }
            out.result = Err(e);
            return out;
        }
    };
    out.verb = Some(verb);
    if verb == Verb::Version {
        let asked = spec::decode(stdin)
            .map(|raw| spec::version_of(&raw))
            .unwrap_or_default();
        out.result = Ok(Some(spec::version_info(&asked)));
        return out;
    }
    out.result = run(env, verb, stdin, &mut out.version);
    out
}

fn run(
    env: &Env,
    verb: Verb,
    stdin: &[u8],
    version: &mut String,
) -> Result<Option<Value>, CniError> {
    let raw = spec::decode(stdin)?;
    let asked = spec::version_of(&raw);
    spec::check_version(&asked)?;
    *version = asked.clone();
    if !spec::at_least(&asked, verb.since()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{verb} came with CNI {asked}, and the spec has {verb} only from {}: set \"cniVersion\" to {} or later",
                verb.since(),
                verb.since()
            ),
            format!("{verb} is not defined in CNI {asked}"),
        ));
    }
    env.validate(verb)?;
    let conf = spec::parse(&raw)?;
    let net = spec::network(&conf)?;
    match verb {
        Verb::Add => add(env, &net).map(|r| Some(r.to_json(&net.version))),
        Verb::Del => del(env, &net).map(|()| None),
        Verb::Check => check(env, &net, conf.prev_result.as_ref()).map(|()| None),
        Verb::Gc => {
            let Some(valid) = &conf.valid_attachments else {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "GC came without \"cni.dev/valid-attachments\": the runtime must list the attachments to keep",
                    "cni.dev/valid-attachments missing",
                ));
            };
            gc(&net, valid).map(|()| None)
        }
        Verb::Status => status(&net).map(|()| None),
        Verb::Version => Ok(Some(spec::version_info(&asked))),
    }
}

/// The node-side veth of an attachment: `lc` and 10 hex digits of
/// SHA-256(`CONTAINERID/IFNAME`), the same on every call.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("lc{hex}")
}

fn kernel_err(e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::KERNEL,
        "the kernel refused a change the plugin needs (see details); run `labctl cni log -d` for the call",
        e,
    )
}

fn ipam_err(e: IpamError) -> CniError {
    CniError::from(&e)
}

/// The namespace the plugin runs in: the node's.
fn node() -> NetNs {
    NetNs::at("node", Path::new("/proc/self/ns/net"))
}

fn container_netns(env: &Env) -> Result<NetNs, CniError> {
    netns::lookup(&env.netns).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "the container's network namespace {} cannot be opened: the runtime passes the path of a live one in CNI_NETNS",
                env.netns
            ),
            e,
        )
    })
}

fn add(env: &Env, net: &Network) -> Result<AddResult, CniError> {
    // Looked at before anything is allocated.
    let ns = container_netns(env)?;
    let store = Store::open(net).map_err(ipam_err)?;
    let ip = {
        let _lock = store.lock().map_err(ipam_err)?;
        let ip = store
            .allocate(&env.container_id, &env.ifname)
            .map_err(ipam_err)?;
        // Under the lock: the first pod sets masquerading up, the last
        // one's DEL removes it.
        if let Err(e) = masquerade_on(net, &store) {
            undo_allocation(net, &store, env);
            return Err(e);
        }
        ip
    };
    let veth = host_veth(&env.container_id, &env.ifname);
    match wire(env, net, &ns, &veth, ip) {
        Ok(result) => Ok(result),
        Err(e) => {
            // Nothing left behind: the veth (its peer goes with it), the
            // address, masquerading if this was the only pod.
            if let Err(undo) = Rtnl::current().and_then(|r| r.delete_link(&veth)) {
                tracing::warn!("rolling back ADD: {undo}");
            }
            match store.lock() {
                Ok(_lock) => undo_allocation(net, &store, env),
                Err(undo) => tracing::warn!("rolling back ADD: {undo}"),
            }
            Err(e)
        }
    }
}

/// Releases a failed ADD's address (the caller holds the lock), and
/// masquerading when no pod is left.
fn undo_allocation(net: &Network, store: &Store, env: &Env) {
    if let Err(undo) = store.release(&env.container_id, &env.ifname) {
        tracing::warn!("rolling back ADD: {undo}");
    }
    if store.list().is_ok_and(|l| l.is_empty())
        && let Err(undo) = masquerade_off(net, store)
    {
        tracing::warn!("rolling back ADD: {undo}");
    }
}

fn wire(
    env: &Env,
    net: &Network,
    ns: &NetNs,
    veth: &str,
    ip: Ipv4Addr,
) -> Result<AddResult, CniError> {
    let gw = net.range.gateway;
    let host = Rtnl::current().map_err(kernel_err)?;
    // A veth left by an ADD killed half-way (same id, same name).
    host.delete_link(veth).map_err(kernel_err)?;
    host.add_veth(veth, &env.ifname, net.mtu, ns)
        .map_err(|e| match e {
            RtnlError::Netlink { ref source, .. } if is_exists(source) => CniError::new(
                code::KERNEL,
                format!(
                    "the container already has an interface named {}: give another CNI_IFNAME or DEL the old attachment first",
                    env.ifname
                ),
                e,
            ),
            e => kernel_err(e),
        })?;
    host.add_address(veth, gw.into(), 32).map_err(kernel_err)?;
    host.set_up(veth).map_err(kernel_err)?;
    host.add_route(ip, 32, None, veth, false)
        .map_err(kernel_err)?;
    let pod = Rtnl::open(ns).map_err(kernel_err)?;
    pod.set_up(&env.ifname).map_err(kernel_err)?;
    pod.add_address(&env.ifname, ip.into(), 32)
        .map_err(kernel_err)?;
    pod.add_route(gw, 32, None, &env.ifname, false)
        .map_err(kernel_err)?;
    pod.add_route(Ipv4Addr::UNSPECIFIED, 0, Some(gw), &env.ifname, false)
        .map_err(kernel_err)?;
    if !forwarding() {
        sysctl::write(&["net", "ipv4", "ip_forward"], "1").map_err(kernel_err)?;
    }
    let mac = |r: &Rtnl, name: &str| -> Result<String, CniError> {
        Ok(r.links()
            .map_err(kernel_err)?
            .into_iter()
            .find(|l| l.name == name)
            .and_then(|l| l.mac)
            .unwrap_or_default())
    };
    Ok(AddResult {
        interfaces: vec![
            Interface {
                name: veth.to_owned(),
                mac: mac(&host, veth)?,
                mtu: Some(net.mtu),
                sandbox: None,
            },
            Interface {
                name: env.ifname.clone(),
                mac: mac(&pod, &env.ifname)?,
                mtu: Some(net.mtu),
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: vec![(Ipv4Net::from(ip), gw, 1)],
        routes: vec![(Ipv4Net::default(), gw)],
    })
}

/// Whether the node forwards IPv4.
fn forwarding() -> bool {
    sysctl::read(&["net", "ipv4", "ip_forward"]).is_ok_and(|v| v == "1")
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// Removes one attachment's node side; its address is released by the caller.
fn unwire(id: &str, ifname: &str) -> Result<(), CniError> {
    let host = Rtnl::current().map_err(kernel_err)?;
    host.delete_link(&host_veth(id, ifname))
        .map_err(kernel_err)?;
    Ok(())
}

fn del(env: &Env, net: &Network) -> Result<(), CniError> {
    // Best effort: the node side first (it goes even when the store is
    // unusable), then the address.
    let unwired = unwire(&env.container_id, &env.ifname);
    if let Some(store) = Store::existing(net).map_err(ipam_err)? {
        let _lock = store.lock().map_err(ipam_err)?;
        store
            .release(&env.container_id, &env.ifname)
            .map_err(ipam_err)?;
        if store.list().map_err(ipam_err)?.is_empty() {
            masquerade_off(net, &store)?;
        }
    }
    unwired
}

fn mismatch(msg: String, details: impl std::fmt::Display) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg, details)
}

fn check(env: &Env, net: &Network, prev: Option<&Value>) -> Result<(), CniError> {
    let (id, ifname) = (&env.container_id, &env.ifname);
    let unknown = || {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "labctl has no attachment of container {id} ({ifname}) on network {}: ADD it first",
                net.name
            ),
            "no address allocated",
        )
    };
    let store = Store::existing(net)
        .map_err(ipam_err)?
        .ok_or_else(unknown)?;
    let ip = store
        .find(id, ifname)
        .map_err(ipam_err)?
        .ok_or_else(unknown)?;
    if let Some(prev) = prev {
        let listed = AddResult::prev_addresses(prev);
        if !listed.iter().any(|a| a.addr() == ip) {
            return Err(mismatch(
                format!(
                    "the runtime's prevResult does not list {ip}, the address labctl gave {ifname}: the attachment was changed since ADD"
                ),
                format!("prevResult ips: {listed:?}"),
            ));
        }
    }
    let ns = container_netns(env)?;
    let pod = Rtnl::open(&ns).map_err(kernel_err)?;
    let links = pod.links().map_err(kernel_err)?;
    let Some(link) = links.iter().find(|l| &l.name == ifname) else {
        return Err(mismatch(
            format!(
                "the container has no interface {ifname} any more: DEL and ADD the attachment again"
            ),
            format!("no {ifname} in {}", env.netns),
        ));
    };
    let want = format!("{ip}/32");
    if !link.addresses.contains(&want) {
        return Err(mismatch(
            format!(
                "{ifname} in the container lost its address {want}: restore it (`ip addr add {want} dev {ifname}`) or DEL and ADD again"
            ),
            format!("{ifname} has {:?}", link.addresses),
        ));
    }
    let gw = net.range.gateway;
    let routes = pod.routes().map_err(kernel_err)?;
    let has = |dst: &str, via: Option<Ipv4Addr>| {
        routes
            .iter()
            .any(|r| r.dst == dst && r.via == via && r.dev.as_deref() == Some(ifname))
    };
    if !has(&format!("{gw}/32"), None) {
        return Err(mismatch(
            format!(
                "the container lost its route to the gateway {gw}: restore it (`ip route add {gw} dev {ifname} scope link`) or DEL and ADD again"
            ),
            format!("routes: {routes:?}"),
        ));
    }
    if !has("default", Some(gw)) {
        return Err(mismatch(
            format!(
                "the container lost its default route via {gw}: restore it (`ip route add default via {gw} dev {ifname}`) or DEL and ADD again"
            ),
            format!("routes: {routes:?}"),
        ));
    }
    let veth = host_veth(id, ifname);
    let host = Rtnl::current().map_err(kernel_err)?;
    if host.index(&veth).is_err() {
        return Err(mismatch(
            format!(
                "the node-side veth {veth} of {ifname} is gone: DEL and ADD the attachment again"
            ),
            format!("no {veth} on the node"),
        ));
    }
    let host_routes = host.routes().map_err(kernel_err)?;
    let pod_route = format!("{ip}/32");
    if !host_routes
        .iter()
        .any(|r| r.dst == pod_route && r.dev.as_deref() == Some(veth.as_str()))
    {
        return Err(mismatch(
            format!(
                "the node lost its route to the pod {ip}: restore it (`ip route add {ip} dev {veth} scope link`) or DEL and ADD again"
            ),
            format!("no {pod_route} dev {veth} on the node"),
        ));
    }
    if !forwarding() {
        return Err(mismatch(
            "the node no longer forwards IPv4 (net.ipv4.ip_forward is 0): pods cannot reach each other; set it to 1".into(),
            "ip_forward=0",
        ));
    }
    if !masquerade_present(net, &store)? {
        return Err(mismatch(
            format!(
                "the node lost the {} masquerading of network {}: DEL and ADD a pod again to restore it",
                net.masquerade.as_str(),
                net.name
            ),
            "masquerading missing",
        ));
    }
    Ok(())
}

fn gc(net: &Network, valid: &[Attachment]) -> Result<(), CniError> {
    let Some(store) = Store::existing(net).map_err(ipam_err)? else {
        return Ok(());
    };
    let _lock = store.lock().map_err(ipam_err)?;
    let mut failed = None;
    for (ip, att) in store.list().map_err(ipam_err)? {
        if valid.contains(&att) {
            continue;
        }
        tracing::info!(
            "GC: {} {} holds {ip}, not valid any more",
            att.container_id,
            att.ifname
        );
        if let Err(e) = unwire(&att.container_id, &att.ifname) {
            failed.get_or_insert(e);
        }
        store
            .release(&att.container_id, &att.ifname)
            .map_err(ipam_err)?;
    }
    if store.list().map_err(ipam_err)?.is_empty() {
        masquerade_off(net, &store)?;
    }
    failed.map_or(Ok(()), Err)
}

fn status(net: &Network) -> Result<(), CniError> {
    let not_available =
        |msg: String, e: &dyn std::fmt::Display| CniError::new(code::NOT_AVAILABLE, msg, e);
    let store = Store::open(net).map_err(|e| {
        not_available(
            format!(
                "the address store cannot be used, so no pod can be added: {}",
                CniError::from(&e).msg
            ),
            &e,
        )
    })?;
    store.writable().map_err(|e| {
        not_available(
            format!(
                "the address store {} cannot be written, so no pod can be added",
                store.path().display()
            ),
            &e,
        )
    })?;
    let free = store.free().map_err(ipam_err)?;
    if free == 0 {
        return Err(not_available(
            format!(
                "no pod address is left in range {}: no pod can be added until one is deleted",
                net.range
            ),
            &"range exhausted",
        ));
    }
    let attached = !store.list().map_err(ipam_err)?.is_empty();
    if attached && !forwarding() {
        return Err(CniError::new(
            code::NOT_AVAILABLE_LIMITED,
            "the node no longer forwards IPv4 (net.ipv4.ip_forward is 0): the pods it has cannot reach each other; set it to 1",
            "ip_forward=0",
        ));
    }
    if attached && !masquerade_present(net, &store)? {
        return Err(CniError::new(
            code::NOT_AVAILABLE_LIMITED,
            format!(
                "the {} masquerading of network {} is gone: its pods cannot reach outside the node",
                net.masquerade.as_str(),
                net.name
            ),
            "masquerading missing",
        ));
    }
    Ok(())
}

fn chain(net: &Network) -> String {
    format!("masq-{}", net.name)
}

/// The note (in the network's store) that eBPF masquerading is this
/// network's, holding the uplink it is attached to.
const EBPF_NOTE: &str = "masq-ebpf";

/// Sets masquerading up for `net` (idempotent); the caller holds the lock.
fn masquerade_on(net: &Network, store: &Store) -> Result<(), CniError> {
    match net.masquerade {
        Masquerade::None => Ok(()),
        Masquerade::Netfilter => nft_on(net),
        Masquerade::Ebpf => ebpf_on(net, store),
    }
}

/// Removes what [`masquerade_on`] set up (eBPF masquerading by its note,
/// whatever the config says now); the caller holds the lock.
fn masquerade_off(net: &Network, store: &Store) -> Result<(), CniError> {
    ebpf_off(store)?;
    if net.masquerade == Masquerade::Netfilter {
        nft_off(net)?;
    }
    Ok(())
}

/// Whether the masquerading `net` asks for is in place.
fn masquerade_present(net: &Network, store: &Store) -> Result<bool, CniError> {
    match net.masquerade {
        Masquerade::None => Ok(true),
        Masquerade::Netfilter => Ok(nft_present(net)),
        Masquerade::Ebpf => {
            let ino = node().inode().map_err(kernel_err)?;
            Ok(store.note(EBPF_NOTE).map_err(ipam_err)?.is_some() && masq::nat::present(ino))
        }
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, CniError> {
    tool::run(&node(), "nft", args, stdin).map_err(kernel_err)
}

/// The masquerade chain of `net`, made (or made again) idempotently: the
/// pods' traffic leaving by a non-pod interface for outside the cluster.
fn nft_on(net: &Network) -> Result<(), CniError> {
    let chain = chain(net);
    let (subnet, cluster) = (net.range.subnet, net.cluster);
    let script = format!(
        "add table ip {NFT_TABLE}\n\
         add chain ip {NFT_TABLE} {chain} {{ type nat hook postrouting priority srcnat; }}\n\
         flush chain ip {NFT_TABLE} {chain}\n\
         add rule ip {NFT_TABLE} {chain} ip saddr {subnet} ip daddr != {cluster} oifname != \"lc*\" counter masquerade comment \"pods of {name} leaving the node\"\n",
        name = net.name
    );
    nft(&["-f", "-"], Some(&script)).map(drop)
}

fn nft_present(net: &Network) -> bool {
    tool::run(
        &node(),
        "nft",
        &["list", "chain", "ip", NFT_TABLE, &chain(net)],
        None,
    )
    .is_ok()
}

/// Removes the chain of `net`, and the table once no network has one.
fn nft_off(net: &Network) -> Result<(), CniError> {
    if nft_present(net) {
        nft(&["delete", "chain", "ip", NFT_TABLE, &chain(net)], None)?;
    }
    let Ok(listing) = tool::run(
        &node(),
        "nft",
        &["-j", "list", "table", "ip", NFT_TABLE],
        None,
    ) else {
        return Ok(());
    };
    let chains = serde_json::from_str::<Value>(&listing)
        .ok()
        .and_then(|v| {
            v.get("nftables")?
                .as_array()
                .map(|a| a.iter().filter(|o| o.get("chain").is_some()).count())
        })
        .unwrap_or(1);
    if chains == 0 {
        nft(&["delete", "table", "ip", NFT_TABLE], None)?;
    }
    Ok(())
}

/// labctl's eBPF masquerading (the `nat` programs of `labctl lab up
/// --masq ebpf`) on the node's uplink, pinned so it outlives the call.
fn ebpf_on(net: &Network, store: &Store) -> Result<(), CniError> {
    let node = node();
    let ino = node.inode().map_err(kernel_err)?;
    if masq::nat::present(ino) {
        if store.note(EBPF_NOTE).map_err(ipam_err)?.is_some() {
            return Ok(());
        }
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "eBPF masquerading already runs on this node, set up by something other than network {} (a lab, or another network): use \"masquerade\": \"netfilter\" for this one",
                net.name
            ),
            format!("pins in {}", masq::nat::pin_dir(ino).display()),
        ));
    }
    let config_err = |msg: String, details: &str| CniError::new(code::INVALID_CONFIG, msg, details);
    let host = Rtnl::current().map_err(kernel_err)?;
    let uplink = match &net.uplink {
        Some(u) => u.clone(),
        None => host
            .routes()
            .map_err(kernel_err)?
            .into_iter()
            .find(|r| r.dst == "default")
            .and_then(|r| r.dev)
            .ok_or_else(|| {
                config_err(
                    "the node has no default route, so labctl cannot tell its uplink for eBPF masquerading: set \"labctl\": {\"uplink\": \"NAME\"}".into(),
                    "no default route",
                )
            })?,
    };
    let link = host
        .links()
        .map_err(kernel_err)?
        .into_iter()
        .find(|l| l.name == uplink)
        .ok_or_else(|| {
            config_err(
                format!("the node has no interface {uplink} to masquerade on: set \"labctl\": {{\"uplink\": \"NAME\"}} to its uplink"),
                "no such uplink",
            )
        })?;
    let addr = link
        .addresses
        .iter()
        .find_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| {
            config_err(
                format!("the uplink {uplink} has no IPv4 address to masquerade the pods to"),
                "no IPv4 address on the uplink",
            )
        })?;
    let params = masq::nat::NatParams {
        node_addr: addr,
        cluster: (net.cluster.network(), net.cluster.prefix_len()),
        ports: None,
        udp_timeout_s: None,
        tc_attach: TcAttach::Auto,
    };
    if let Err(e) = masq::nat::attach(&node, &uplink, &params) {
        if let Err(undo) = masq::nat::detach(&node, ino, &uplink) {
            tracing::warn!("undoing a failed attach: {undo}");
        }
        return Err(kernel_err(e));
    }
    store.set_note(EBPF_NOTE, &uplink).map_err(ipam_err)
}

/// Detaches and unpins the eBPF masquerading this network attached.
fn ebpf_off(store: &Store) -> Result<(), CniError> {
    let Some(uplink) = store.note(EBPF_NOTE).map_err(ipam_err)? else {
        return Ok(());
    };
    let node = node();
    let ino = node.inode().map_err(kernel_err)?;
    masq::nat::detach(&node, ino, uplink.trim()).map_err(kernel_err)?;
    store.remove_note(EBPF_NOTE).map_err(ipam_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_and_stable() {
        let a = host_veth("0123456789abcdef", "eth0");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("lc"));
        assert_eq!(a, host_veth("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth("0123456789abcdef", "eth1"));
    }

    #[test]
    fn version_and_old_versions_asking_for_new_verbs() {
        let env = |cmd: &str| Env {
            command: cmd.into(),
            ..Env::default()
        };
        let out = call(&env("VERSION"), br#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(
            out.result.unwrap().unwrap()["supportedVersions"][4],
            "1.1.0"
        );
        let out = call(
            &env("STATUS"),
            br#"{"cniVersion":"1.0.0","name":"n","type":"labctl-cni"}"#,
        );
        assert_eq!(out.result.unwrap_err().code, 1);
        let out = call(
            &env("CHECK"),
            br#"{"cniVersion":"0.3.1","name":"n","type":"labctl-cni"}"#,
        );
        let text = out.stdout();
        let e = out.result.unwrap_err();
        assert_eq!(e.code, 1);
        assert!(text.contains("\"cniVersion\": \"0.3.1\""), "{e}");
        let out = call(&env("ADD"), b"not json");
        assert_eq!(out.result.unwrap_err().code, 6);
    }
}
