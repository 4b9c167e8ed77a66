//! The CNI contract as data: the versions labctl speaks, the environment a
//! runtime sets, the network configuration it writes on stdin, the result
//! and error objects the plugin writes back (CNI spec 1.1.0, and the
//! shapes of 1.0.0, 0.4.0, 0.3.1 and 0.3.0).

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Every version labctl answers, oldest first (what VERSION lists).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version: what VERSION says when the runtime named none.
pub const CURRENT: &str = "1.1.0";

/// Error codes from the spec (and labctl's own, 100 and up).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited
    /// connectivity.
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// labctl: the kernel refused a change (netlink, nft).
    pub const KERNEL: u32 = 100;
    /// labctl: CHECK found the attachment different from what ADD made.
    pub const CHECK_MISMATCH: u32 = 101;
    /// labctl: ADD found no free address in the range.
    pub const EXHAUSTED: u32 = 102;
}

/// A CNI error object: `code`, a sentence (`msg`) and the technical part
/// (`details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl fmt::Display) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.to_string(),
        }
    }

    /// The object written on stdout, with the version asked for.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// A version string compared as numbers (`0.3.1` < `0.4.0` < `1.0.0`).
fn parts(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

/// Whether `version` is at least `min` (both known versions).
pub fn at_least(version: &str, min: &str) -> bool {
    matches!((parts(version), parts(min)), (Some(a), Some(b)) if a >= b)
}

/// `version` if labctl speaks it, else error 1.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!(
            "labctl's CNI plugin speaks CNI {}, not {version:?}: set \"cniVersion\" in the network configuration to one of them",
            SUPPORTED.join(", ")
        ),
        format!("cniVersion {version:?} is not supported"),
    ))
}

/// The operations of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Verb {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Gc => "GC",
            Self::Status => "STATUS",
            Self::Version => "VERSION",
        }
    }

    /// The first spec version that has this verb.
    pub fn since(self) -> &'static str {
        match self {
            Self::Check => "0.4.0",
            Self::Gc | Self::Status => "1.1.0",
            _ => "0.3.0",
        }
    }

    /// Whether the verb is about one attachment (needs a container id and
    /// an interface name).
    pub fn per_attachment(self) -> bool {
        matches!(self, Self::Add | Self::Del | Self::Check)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime passed in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    /// Empty: not given (DEL may come without it).
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: String,
}

impl Env {
    /// Reads `CNI_*` through `get` (the process environment, or a map in tests).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Self {
        let v = |k: &str| get(k).unwrap_or_default();
        let args = v("CNI_ARGS")
            .split(';')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.to_owned(), String::new()),
            })
            .collect();
        Self {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args,
            path: v("CNI_PATH"),
        }
    }

    /// The verb, or error 4 naming what was given.
    pub fn verb(&self) -> Result<Verb, CniError> {
        if self.command.is_empty() {
            return Err(env_error(
                "CNI_COMMAND is not set: a runtime sets it to ADD, DEL, CHECK, GC, STATUS or VERSION (run `labctl cni log` to see what runtimes send)",
                "CNI_COMMAND missing",
            ));
        }
        Verb::parse(&self.command).ok_or_else(|| {
            env_error(
                format!(
                    "CNI_COMMAND={} is not a CNI operation: use ADD, DEL, CHECK, GC, STATUS or VERSION",
                    self.command
                ),
                "unknown CNI_COMMAND",
            )
        })
    }

    /// The checks the spec asks of the variables `verb` needs.
    pub fn validate(&self, verb: Verb) -> Result<(), CniError> {
        for (k, v) in &self.args {
            if k.is_empty() || v.is_empty() {
                return Err(env_error(
                    format!(
                        "CNI_ARGS must be KEY=VALUE pairs separated by `;`, and `{k}={v}` is not one"
                    ),
                    "malformed CNI_ARGS",
                ));
            }
        }
        if !verb.per_attachment() {
            return Ok(());
        }
        if self.container_id.is_empty() {
            return Err(env_error(
                format!("CNI_CONTAINERID is not set: {verb} needs the container's id"),
                "CNI_CONTAINERID missing",
            ));
        }
        if !valid_container_id(&self.container_id) {
            return Err(env_error(
                format!(
                    "CNI_CONTAINERID={} is not a container id: letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                    self.container_id
                ),
                "invalid CNI_CONTAINERID",
            ));
        }
        if self.ifname.is_empty() {
            return Err(env_error(
                format!(
                    "CNI_IFNAME is not set: {verb} needs the interface name inside the container (such as eth0)"
                ),
                "CNI_IFNAME missing",
            ));
        }
        if let Err(why) = valid_ifname(&self.ifname) {
            return Err(env_error(
                format!("CNI_IFNAME={} is not an interface name: {why}", self.ifname),
                "invalid CNI_IFNAME",
            ));
        }
        if !self.netns.is_empty() && !self.netns.starts_with('/') {
            return Err(env_error(
                format!(
                    "CNI_NETNS={} is not a path: give the path of the container's network namespace (such as /var/run/netns/NAME or /proc/PID/ns/net)",
                    self.netns
                ),
                "CNI_NETNS not absolute",
            ));
        }
        if matches!(verb, Verb::Add | Verb::Check) && self.netns.is_empty() {
            return Err(env_error(
                format!(
                    "CNI_NETNS is not set: {verb} needs the path of the container's network namespace (such as /var/run/netns/NAME)"
                ),
                "CNI_NETNS missing",
            ));
        }
        Ok(())
    }
}

fn env_error(msg: impl Into<String>, details: &str) -> CniError {
    CniError::new(code::INVALID_ENV, msg, details)
}

/// The spec's container id: `[a-zA-Z0-9][a-zA-Z0-9_.\-]*`.
pub fn valid_container_id(id: &str) -> bool {
    id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The spec's network name: the same characters as a container id.
pub fn valid_network_name(name: &str) -> bool {
    valid_container_id(name)
}

/// The kernel's interface names: 1 to 15 bytes, no `/`, `:` or blank,
/// not `.` or `..`.
pub fn valid_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("1 to 15 characters");
    }
    if name == "." || name == ".." {
        return Err("not `.` or `..`");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("no `/`, `:` or blanks");
    }
    Ok(())
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin (one plugin's entry of a conflist,
/// with `cniVersion` and `name` put in by the runtime).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    pub ipam: Option<IpamConf>,
    #[serde(default)]
    pub labctl: DatapathConf,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// `"ipam"`: host-local's keys (`subnet`, `rangeStart`, `rangeEnd`,
/// `gateway`, `dataDir`, or one `ranges` entry); others are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(flatten)]
    pub range: Option<RangeConf>,
    pub ranges: Option<Vec<Vec<RangeConf>>>,
    #[serde(rename = "dataDir")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RangeConf {
    pub subnet: Option<String>,
    #[serde(rename = "rangeStart")]
    pub range_start: Option<String>,
    #[serde(rename = "rangeEnd")]
    pub range_end: Option<String>,
    pub gateway: Option<String>,
}

/// `"labctl"`: the datapath's options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DatapathConf {
    #[serde(default)]
    pub masquerade: Masquerade,
    /// The node's interface to the world, where eBPF masquerading attaches
    /// (default: the one of the node's default route).
    pub uplink: Option<String>,
    /// Every node's pods (traffic to them is never masqueraded; default:
    /// this node's subnet).
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
}

/// Who masquerades the pods' traffic leaving the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Masquerade {
    #[default]
    None,
    Netfilter,
    Ebpf,
}

impl Masquerade {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Netfilter => "netfilter",
            Self::Ebpf => "ebpf",
        }
    }
}

/// The default MTU of the veth pair.
pub const DEFAULT_MTU: u32 = 1500;

/// Where allocations live when the config names no `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/labctl";

/// The pod range, checked: addresses handed out are `start..=end`, never
/// the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    pub subnet: Ipv4Net,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Range {
    /// How many addresses can be handed out.
    pub fn size(&self) -> u32 {
        let (s, e, g) = (
            u32::from(self.start),
            u32::from(self.end),
            u32::from(self.gateway),
        );
        let n = e - s + 1;
        if (s..=e).contains(&g) { n - 1 } else { n }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}-{})", self.subnet, self.start, self.end)
    }
}

/// A config checked: what ADD, DEL, CHECK, GC and STATUS work from.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub version: String,
    pub name: String,
    pub mtu: u32,
    pub range: Range,
    pub data_dir: PathBuf,
    pub masquerade: Masquerade,
    /// Destinations never masqueraded (the cluster's pods).
    pub cluster: Ipv4Net,
    pub uplink: Option<String>,
}

fn config_error(msg: impl Into<String>, details: impl fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg, details)
}

/// The raw JSON on stdin: error 6 if it is not JSON.
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "the network configuration on stdin is not JSON: a runtime writes the network's config there (a conflist's plugin entry with cniVersion and name)",
            e,
        )
    })
}

/// The version the config asks for (`""` when it names none).
pub fn version_of(raw: &Value) -> String {
    raw.get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The config as labctl's types: error 7 when a key has the wrong shape.
pub fn parse(raw: &Value) -> Result<NetConf, CniError> {
    NetConf::deserialize(raw).map_err(|e| {
        config_error(
            "the network configuration is missing a key or has one of the wrong type: it needs cniVersion, name, type and an ipam section with a subnet",
            e,
        )
    })
}

/// Checks the network's name, MTU, range and datapath options.
pub fn network(conf: &NetConf) -> Result<Network, CniError> {
    if !valid_network_name(&conf.name) {
        return Err(config_error(
            format!(
                "the network name {:?} is not valid: letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                conf.name
            ),
            "invalid network name",
        ));
    }
    let mtu = conf.mtu.unwrap_or(DEFAULT_MTU);
    if !(68..=65535).contains(&mtu) {
        return Err(config_error(
            format!("mtu {mtu} is out of range: give one from 68 (IPv4's minimum) to 65535"),
            "invalid mtu",
        ));
    }
    let Some(ipam) = &conf.ipam else {
        return Err(config_error(
            "the network configuration has no \"ipam\" section: add \"ipam\": {\"type\": \"labctl\", \"subnet\": \"10.244.1.0/24\"} with this node's pod range",
            "ipam missing",
        ));
    };
    if let Some(kind) = &ipam.kind
        && kind != "labctl"
        && kind != "host-local"
    {
        return Err(config_error(
            format!(
                "ipam type {kind:?} is not labctl's: labctl hands out addresses itself, so set \"type\": \"labctl\" (host-local's keys are understood)"
            ),
            "delegated IPAM is not supported",
        ));
    }
    let range = match (&ipam.range, &ipam.ranges) {
        (_, Some(sets)) if !sets.is_empty() => {
            let all: Vec<&RangeConf> = sets.iter().flatten().collect();
            if all.len() != 1 {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "labctl's IPAM takes one IPv4 range per node: give \"ranges\" a single entry (or just \"subnet\")",
                    format!("{} ranges given", all.len()),
                ));
            }
            all[0]
        }
        (Some(r), _) => r,
        _ => {
            return Err(config_error(
                "the ipam section names no subnet: add \"subnet\": \"CIDR\" with this node's pod range",
                "ipam.subnet missing",
            ));
        }
    };
    let range = check_range(range)?;
    let cluster = match &conf.labctl.cluster_cidr {
        None => range.subnet,
        Some(c) => {
            let net: Ipv4Net = c.parse().map_err(|e| {
                config_error(
                    format!("labctl clusterCIDR {c:?} is not an IPv4 CIDR such as 10.244.0.0/16"),
                    e,
                )
            })?;
            let net = net.trunc();
            if !net.contains(&range.subnet) {
                return Err(config_error(
                    format!(
                        "labctl clusterCIDR {net} does not contain this node's subnet {}: give the range of every node's pods",
                        range.subnet
                    ),
                    "subnet outside clusterCIDR",
                ));
            }
            net
        }
    };
    if let Some(uplink) = &conf.labctl.uplink
        && let Err(why) = valid_ifname(uplink)
    {
        return Err(config_error(
            format!("labctl uplink {uplink:?} is not an interface name: {why}"),
            "invalid uplink",
        ));
    }
    let data_dir = ipam
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if !data_dir.is_absolute() {
        return Err(config_error(
            format!(
                "ipam dataDir {} is not an absolute path: give one such as {DEFAULT_DATA_DIR}",
                data_dir.display()
            ),
            "relative dataDir",
        ));
    }
    Ok(Network {
        version: conf.cni_version.clone(),
        name: conf.name.clone(),
        mtu,
        range,
        data_dir,
        masquerade: conf.labctl.masquerade,
        cluster,
        uplink: conf.labctl.uplink.clone(),
    })
}

fn check_range(r: &RangeConf) -> Result<Range, CniError> {
    let Some(subnet) = &r.subnet else {
        return Err(config_error(
            "the ipam section names no subnet: add \"subnet\": \"CIDR\" with this node's pod range",
            "ipam.subnet missing",
        ));
    };
    let subnet: Ipv4Net = subnet.parse().map_err(|e| {
        config_error(
            format!("ipam subnet {subnet:?} is not an IPv4 CIDR such as 10.244.1.0/24"),
            e,
        )
    })?;
    if subnet.prefix_len() > 30 {
        return Err(config_error(
            format!(
                "ipam subnet {subnet} is too small: it needs a gateway and at least one pod address, so /30 or larger"
            ),
            "prefix longer than 30",
        ));
    }
    let subnet = subnet.trunc();
    let first = u32::from(subnet.network()) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    let addr = |what: &str, v: &Option<String>| -> Result<Option<Ipv4Addr>, CniError> {
        let Some(v) = v else { return Ok(None) };
        let a: Ipv4Addr = v
            .parse()
            .map_err(|e| config_error(format!("ipam {what} {v:?} is not an IPv4 address"), e))?;
        if !(first..=last).contains(&u32::from(a)) {
            return Err(config_error(
                format!(
                    "ipam {what} {a} is not a host address of subnet {subnet}: give one from {} to {}",
                    Ipv4Addr::from(first),
                    Ipv4Addr::from(last)
                ),
                "address outside the subnet",
            ));
        }
        Ok(Some(a))
    };
    let gateway = addr("gateway", &r.gateway)?.unwrap_or(Ipv4Addr::from(first));
    let start = addr("rangeStart", &r.range_start)?.unwrap_or(Ipv4Addr::from(first));
    let end = addr("rangeEnd", &r.range_end)?.unwrap_or(Ipv4Addr::from(last));
    if start > end {
        return Err(config_error(
            format!("ipam rangeStart {start} comes after rangeEnd {end}: swap them"),
            "empty range",
        ));
    }
    let range = Range {
        subnet,
        start,
        end,
        gateway,
    };
    if range.size() == 0 {
        return Err(config_error(
            format!("ipam range {range} holds only the gateway {gateway}: widen it"),
            "empty range",
        ));
    }
    Ok(range)
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// The result of ADD (and the prevResult CHECK gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    /// The pod's address (with the subnet's prefix), its gateway, and the
    /// index in `interfaces` of the interface that has it.
    pub ips: Vec<(Ipv4Net, Ipv4Addr, usize)>,
    /// Routes in the container: destination, gateway.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

impl AddResult {
    /// The result as `version` shapes it: `ips[].version` ("4") up to
    /// 0.4.0, gone from 1.0.0; interfaces' `mtu` from 1.1.0.
    pub fn to_json(&self, version: &str) -> Value {
        let old = !at_least(version, "1.0.0");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if !at_least(version, "1.1.0") {
                    i.mtu = None;
                }
                serde_json::to_value(i).unwrap_or(Value::Null)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|(addr, gw, iface)| {
                let mut v = json!({"address": addr.to_string(), "gateway": gw.to_string(), "interface": iface});
                if old {
                    v["version"] = json!("4");
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|(dst, gw)| json!({"dst": dst.to_string(), "gw": gw.to_string()}))
            .collect();
        json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }

    /// The addresses a prevResult lists (any version's shape).
    pub fn prev_addresses(prev: &Value) -> Vec<Ipv4Net> {
        prev.get("ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.get("address")?.as_str()?.parse().ok())
            .collect()
    }
}

/// VERSION's answer.
pub fn version_info(asked: &str) -> Value {
    let version = if SUPPORTED.contains(&asked) {
        asked
    } else {
        CURRENT
    };
    json!({"cniVersion": version, "supportedVersions": SUPPORTED})
}

/// CNI_ARGS as a map, for the log.
pub fn args_map(env: &Env) -> BTreeMap<String, String> {
    env.args.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(ipam: Value) -> Result<Network, CniError> {
        let raw =
            json!({"cniVersion": "1.1.0", "name": "c28net", "type": "labctl-cni", "ipam": ipam});
        network(&parse(&raw)?)
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("bogus", "0.3.0"));
        assert_eq!(check_version("0.2.0").unwrap_err().code, 1);
        assert!(check_version("1.1.0").is_ok());
    }

    #[test]
    fn the_range_defaults_to_the_subnet_without_the_gateway() {
        let n = conf(json!({"type": "labctl", "subnet": "10.9.0.0/24", "unknown": 1})).unwrap();
        assert_eq!(n.range.gateway, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(n.range.start, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(n.range.end, Ipv4Addr::new(10, 9, 0, 254));
        assert_eq!(n.range.size(), 253);
        assert_eq!(n.mtu, 1500);
        let n = conf(json!({"ranges": [[{"subnet": "10.9.0.0/30"}]]})).unwrap();
        assert_eq!(n.range.size(), 1);
        let n = conf(
            json!({"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10", "rangeEnd": "10.9.0.11"}),
        )
        .unwrap();
        assert_eq!(n.range.size(), 2);
        assert_eq!(n.cluster, n.range.subnet);
    }

    #[test]
    fn bad_configs_get_code_7_or_2() {
        assert_eq!(conf(json!({})).unwrap_err().code, 7);
        assert_eq!(conf(json!({"subnet": "10.9.0.0/31"})).unwrap_err().code, 7);
        assert_eq!(conf(json!({"subnet": "nope"})).unwrap_err().code, 7);
        assert_eq!(
            conf(json!({"type": "dhcp", "subnet": "10.9.0.0/24"}))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            conf(json!({"subnet": "10.9.0.0/24", "gateway": "10.8.0.1"}))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            conf(json!({"ranges": [[{"subnet": "10.9.0.0/24"}, {"subnet": "10.9.1.0/24"}]]}))
                .unwrap_err()
                .code,
            2
        );
        assert_eq!(decode(b"{nope").unwrap_err().code, 6);
        let raw = json!({"cniVersion": "1.1.0", "name": "n", "type": "labctl-cni",
            "ipam": {"subnet": "10.9.0.0/24"}, "labctl": {"clusterCIDR": "10.8.0.0/16"}});
        assert_eq!(network(&parse(&raw).unwrap()).unwrap_err().code, 7);
    }

    #[test]
    fn results_have_each_versions_shape() {
        let r = AddResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1500),
                sandbox: Some("/run/netns/x".into()),
            }],
            ips: vec![(
                "10.9.0.2/24".parse().unwrap(),
                Ipv4Addr::new(10, 9, 0, 1),
                0,
            )],
            routes: vec![("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 9, 0, 1))],
        };
        let old = r.to_json("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = r.to_json("1.1.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][0]["mtu"], 1500);
        assert_eq!(new["cniVersion"], "1.1.0");
        assert_eq!(
            AddResult::prev_addresses(&new),
            vec!["10.9.0.2/24".parse().unwrap()]
        );
    }

    #[test]
    fn the_environment_is_checked_per_verb() {
        let env = |pairs: &[(&str, &str)]| {
            let map: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Env::read(|k| map.get(k).cloned())
        };
        assert_eq!(env(&[]).verb().unwrap_err().code, 4);
        assert_eq!(env(&[("CNI_COMMAND", "NOPE")]).verb().unwrap_err().code, 4);
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert_eq!(e.validate(Verb::Add).unwrap_err().code, 4, "no netns");
        assert!(e.validate(Verb::Del).is_ok(), "DEL without a netns");
        let e = env(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "host"),
        ]);
        assert_eq!(
            e.validate(Verb::Add).unwrap_err().code,
            4,
            "a name, not a path"
        );
        let e = env(&[("CNI_CONTAINERID", "../x"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(e.validate(Verb::Del).unwrap_err().code, 4);
        let e = env(&[("CNI_CONTAINERID", "a"), ("CNI_IFNAME", "a/b")]);
        assert_eq!(e.validate(Verb::Del).unwrap_err().code, 4);
        let e = env(&[("CNI_ARGS", "K8S_POD_NAME=x;IgnoreUnknown=1")]);
        assert_eq!(e.args.len(), 2);
        assert!(e.validate(Verb::Status).is_ok());
        assert_eq!(
            env(&[("CNI_ARGS", "bad")])
                .validate(Verb::Gc)
                .unwrap_err()
                .code,
            4
        );
    }
}
