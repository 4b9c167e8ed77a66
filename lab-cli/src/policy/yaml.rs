//! Reading policies from the YAML a user would `kubectl apply`:
//! `networking.k8s.io/v1` NetworkPolicy and `cilium.io/v2`
//! CiliumNetworkPolicy (L3/L4), several per file (`---`).
//!
//! Every field is either understood or refused: a field labctl does not
//! implement (L7 `rules`, named ports, `toFQDNs`, `toServices`, ...) is an
//! error naming the field and its line, never skipped. The checks the API
//! server makes (selectors, label keys, CIDRs, ports, names) are made here
//! too, so a file labctl takes is one a cluster would take.
//!
//! The YAML is read with saphyr's [`MarkedYaml`], whose nodes (keys
//! included) carry the line they start on.

use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use ipnet::IpNet;
use saphyr::{LoadableYamlNode as _, MarkedYaml, Scalar, YamlData};
use thiserror::Error;

use super::{
    identity::{self, NAMESPACE_LABEL},
    model::{
        DEFAULT_NAMESPACE, Directions, Entity, Kind, Labels, Namespaces, Operator, Origin, Peer,
        Policy, PortRule, Protocol, Requirement, Rule, Selector,
    },
    selector::{check_dns_label, check_key, check_subdomain, check_value},
};

/// The largest policy file read (a cluster's whole policy set fits).
pub const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Something at a line of the file.
    #[error("{file}:{line}: {message}")]
    At {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file} holds no policy (it is empty or only comments)")]
    Empty { file: String },
    #[error("cannot read {file}: {reason}")]
    Read { file: String, reason: String },
}

impl ParseError {
    /// The line the error is at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::At { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Reads a policy file: a regular file (not a FIFO a read would block on,
/// not a device) of at most [`MAX_FILE`] bytes, or standard input for `-`.
pub fn read_file(path: &Path) -> Result<String, ParseError> {
    let file = path.display().to_string();
    let err = |e: std::io::Error| ParseError::Read {
        file: file.clone(),
        reason: e.to_string(),
    };
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(err)?;
    } else {
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(err)?;
        let meta = f.metadata().map_err(err)?;
        if !meta.file_type().is_file() {
            return Err(ParseError::Read {
                file,
                reason: "not a regular file".into(),
            });
        }
        f.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(err)?;
    }
    if text.len() as u64 > MAX_FILE {
        return Err(ParseError::Read {
            file,
            reason: format!("larger than {MAX_FILE} bytes"),
        });
    }
    Ok(text)
}

/// Every policy of `text` (read from `file`, the name errors and traces
/// give it), in file order; the first problem found is the error.
pub fn parse(file: &str, text: &str) -> Result<Vec<Policy>, ParseError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| ParseError::At {
        file: file.to_owned(),
        line: e.marker().line().max(1),
        message: format!("this is not valid YAML: {}", e.info()),
    })?;
    let mut out: Vec<Policy> = Vec::new();
    for doc in &docs {
        if matches!(doc.data, YamlData::Value(Scalar::Null)) {
            continue;
        }
        let reader = Reader { file };
        let policy = reader.policy(&Node {
            y: doc,
            path: String::new(),
        })?;
        if let Some(first) = out.iter().find(|p| p.key() == policy.key()) {
            return Err(reader.at(
                policy.origin.line as usize,
                format!(
                    "{} {} is defined twice in this file (first at line {})",
                    policy.kind,
                    policy.key(),
                    first.origin.line
                ),
            ));
        }
        out.push(policy);
    }
    if out.is_empty() {
        return Err(ParseError::Empty {
            file: file.to_owned(),
        });
    }
    Ok(out)
}

/// A node and the path that leads to it (`spec.ingress[0].from`).
struct Node<'a, 'y> {
    y: &'a MarkedYaml<'y>,
    path: String,
}

impl<'a, 'y> Node<'a, 'y> {
    fn line(&self) -> usize {
        self.y.span.start.line().max(1)
    }

    fn child(&self, y: &'a MarkedYaml<'y>, name: &str) -> Node<'a, 'y> {
        Node {
            y,
            path: if self.path.is_empty() {
                name.to_owned()
            } else {
                format!("{}.{name}", self.path)
            },
        }
    }

    fn item(&self, y: &'a MarkedYaml<'y>, i: usize) -> Node<'a, 'y> {
        Node {
            y,
            path: format!("{}[{i}]", self.path),
        }
    }

    fn name(&self) -> &str {
        if self.path.is_empty() {
            "the document"
        } else {
            &self.path
        }
    }
}

/// A mapping whose keys were all checked.
struct Fields<'a, 'y> {
    entries: Vec<(String, Node<'a, 'y>)>,
}

impl<'a, 'y> Fields<'a, 'y> {
    /// The value of `key`; a null value (`key:` alone) counts as absent.
    fn get(&self, key: &str) -> Option<&Node<'a, 'y>> {
        self.entries
            .iter()
            .find(|(k, n)| k == key && !matches!(n.y.data, YamlData::Value(Scalar::Null)))
            .map(|(_, n)| n)
    }
}

/// Why a field is refused: it exists in the API, labctl does not do it.
const L7: &str = "labctl enforces L3/L4 policy only, not L7 (HTTP, DNS, Kafka) rules; remove it";
const TLS: &str = "TLS inspection needs Cilium's proxy, which labctl does not run; remove it";
const FQDN: &str = "DNS-based policy needs Cilium's DNS proxy, which labctl does not run; use toCIDR/toCIDRSet with the addresses";
const SERVICES: &str =
    "service-based peers are not implemented; select the service's pods with toEndpoints";
const GROUPS: &str = "cloud provider groups are not implemented; use toCIDRSet";
const NODES: &str = "node selectors are not implemented; use the entities host and remote-node";
const REQUIRES: &str = "fromRequires/toRequires are deprecated in Cilium and not implemented";
const ICMP: &str = "ICMP rules are not implemented (L3 rules without toPorts allow ICMP too)";
const AUTH: &str = "mutual authentication is not implemented; remove it";
const CIDR_GROUPS: &str = "CiliumCIDRGroups are not implemented; write the CIDRs here";

struct Reader<'f> {
    file: &'f str,
}

impl Reader<'_> {
    fn at(&self, line: usize, message: String) -> ParseError {
        ParseError::At {
            file: self.file.to_owned(),
            line,
            message,
        }
    }

    fn err(&self, node: &Node<'_, '_>, message: impl std::fmt::Display) -> ParseError {
        self.at(node.line(), format!("{} {message}", node.name()))
    }

    /// The mapping at `node`, every key of it known: `known` are read,
    /// `refused` exist in the API and are refused with their reason,
    /// anything else is not a field of `what`.
    fn fields<'a, 'y>(
        &self,
        node: &Node<'a, 'y>,
        what: &str,
        known: &[&str],
        refused: &[(&str, &str)],
    ) -> Result<Fields<'a, 'y>, ParseError> {
        let map = match &node.y.data {
            YamlData::Mapping(m) => m,
            _ => return Err(self.err(node, format!("must be a mapping ({what})"))),
        };
        let mut entries = Vec::new();
        for (k, v) in map {
            let key = match &k.data {
                YamlData::Value(Scalar::String(s)) => s.to_string(),
                _ => {
                    return Err(self.at(
                        k.span.start.line().max(1),
                        format!("{}: a key must be a string", node.name()),
                    ));
                }
            };
            let child = node.child(v, &key);
            let line = k.span.start.line().max(1);
            if let Some((_, why)) = refused.iter().find(|(r, _)| *r == key) {
                return Err(self.at(line, format!("{} is not supported: {why}", child.path)));
            }
            if !known.contains(&key.as_str()) {
                let shown: String = key.chars().take(40).collect();
                let hint = suggestion(&key, known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                let place = if node.path.is_empty() {
                    String::new()
                } else {
                    format!("{}.", node.path)
                };
                return Err(self.at(
                    line,
                    format!("`{place}{shown}` is not a field of {what}{hint}"),
                ));
            }
            self.plain(&child)?;
            entries.push((key, child));
        }
        Ok(Fields { entries })
    }

    /// Refuses what saphyr represents but labctl does not read: tags,
    /// aliases, unparsable scalars.
    fn plain(&self, node: &Node<'_, '_>) -> Result<(), ParseError> {
        match &node.y.data {
            YamlData::Tagged(..) => Err(self.err(
                node,
                "has a YAML tag (`!...`), which labctl does not read; remove it",
            )),
            YamlData::Alias(_) => Err(self.err(
                node,
                "is a YAML alias (`*name`), which labctl does not read; write the value out",
            )),
            YamlData::BadValue => Err(self.err(node, "is not a valid YAML value")),
            _ => Ok(()),
        }
    }

    fn string<'n>(&self, node: &'n Node<'_, '_>) -> Result<&'n str, ParseError> {
        match &node.y.data {
            YamlData::Value(Scalar::String(s)) => Ok(s),
            YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_) | Scalar::Boolean(_)) => {
                Err(self.err(node, "must be a string: quote it"))
            }
            _ => Err(self.err(node, "must be a string")),
        }
    }

    fn bool(&self, node: &Node<'_, '_>) -> Result<bool, ParseError> {
        match &node.y.data {
            YamlData::Value(Scalar::Boolean(b)) => Ok(*b),
            _ => Err(self.err(node, "must be true or false")),
        }
    }

    fn seq<'a, 'y>(&self, node: &Node<'a, 'y>) -> Result<Vec<Node<'a, 'y>>, ParseError> {
        match &node.y.data {
            YamlData::Sequence(items) => {
                let items: Vec<Node<'a, 'y>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, y)| node.item(y, i))
                    .collect();
                for i in &items {
                    self.plain(i)?;
                }
                Ok(items)
            }
            _ => Err(self.err(node, "must be a list (items starting with `-`)")),
        }
    }

    fn strings(&self, node: &Node<'_, '_>) -> Result<Vec<String>, ParseError> {
        self.seq(node)?
            .iter()
            .map(|n| self.string(n).map(str::to_owned))
            .collect()
    }

    /// A mapping of strings to strings (labels, annotations).
    fn string_map(&self, node: &Node<'_, '_>) -> Result<Vec<(String, String, usize)>, ParseError> {
        let YamlData::Mapping(map) = &node.y.data else {
            return Err(self.err(node, "must be a mapping of keys to values"));
        };
        let mut out = Vec::new();
        for (k, v) in map {
            let line = k.span.start.line().max(1);
            let key = match &k.data {
                YamlData::Value(Scalar::String(s)) => s.to_string(),
                _ => return Err(self.at(line, format!("{}: a key must be a string", node.name()))),
            };
            let child = node.child(v, &key);
            self.plain(&child)?;
            let value = match &v.data {
                YamlData::Value(Scalar::String(s)) => s.to_string(),
                YamlData::Value(Scalar::Null) => String::new(),
                _ => return Err(self.err(&child, "must be a string: quote it (\"true\", \"1\")")),
            };
            out.push((key, value, line));
        }
        Ok(out)
    }

    /// A whole document.
    fn policy(&self, doc: &Node<'_, '_>) -> Result<Policy, ParseError> {
        let YamlData::Mapping(map) = &doc.y.data else {
            return Err(self.err(
                doc,
                "is not a mapping: a policy starts with `apiVersion:` and `kind:`",
            ));
        };
        let get = |key: &str| {
            map.iter()
                .find(|(k, _)| matches!(&k.data, YamlData::Value(Scalar::String(s)) if s == key))
                .map(|(_, v)| doc.child(v, key))
        };
        let kind_node = get("kind").ok_or_else(|| {
            self.err(doc, "has no `kind`: labctl applies kind NetworkPolicy (networking.k8s.io/v1) and CiliumNetworkPolicy (cilium.io/v2)")
        })?;
        let kind_str = self.string(&kind_node)?;
        let kind = match kind_str {
            "NetworkPolicy" => Kind::NetworkPolicy,
            "CiliumNetworkPolicy" => Kind::CiliumNetworkPolicy,
            "CiliumClusterwideNetworkPolicy" => {
                return Err(self.err(&kind_node, "CiliumClusterwideNetworkPolicy is not supported: cluster-wide policies are not implemented; use a CiliumNetworkPolicy in each namespace"));
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(self.err(&kind_node, format!("`{shown}` is not a policy kind labctl applies: use NetworkPolicy (networking.k8s.io/v1) or CiliumNetworkPolicy (cilium.io/v2)")));
            }
        };
        let fields = match kind {
            Kind::NetworkPolicy => self.fields(
                doc,
                "a NetworkPolicy",
                &["apiVersion", "kind", "metadata", "spec"],
                &[],
            )?,
            Kind::CiliumNetworkPolicy => self.fields(
                doc,
                "a CiliumNetworkPolicy",
                &["apiVersion", "kind", "metadata", "spec", "status"],
                &[("specs", "a list of rules in one policy is not implemented; write one CiliumNetworkPolicy per rule, with `spec`")],
            )?,
        };
        let api = fields.get("apiVersion").ok_or_else(|| {
            self.err(
                doc,
                format!("has no `apiVersion`: use {}", kind.api_version()),
            )
        })?;
        if self.string(api)? != kind.api_version() {
            return Err(self.err(
                api,
                format!("must be {} for kind {kind}", kind.api_version()),
            ));
        }
        let meta = fields
            .get("metadata")
            .ok_or_else(|| self.err(doc, "has no `metadata` (with its `name`)"))?;
        let (name, namespace) = self.metadata(meta)?;
        let spec = fields
            .get("spec")
            .ok_or_else(|| self.err(doc, "has no `spec`"))?;
        let origin = Origin {
            file: self.file.to_owned(),
            line: doc.line() as u32,
        };
        match kind {
            Kind::NetworkPolicy => self.network_policy(spec, name, namespace, origin),
            Kind::CiliumNetworkPolicy => self.cilium_policy(spec, name, namespace, origin),
        }
    }

    fn metadata(&self, node: &Node<'_, '_>) -> Result<(String, String), ParseError> {
        // What `kubectl get -o yaml` adds is accepted and dropped: it says
        // nothing about what the policy does.
        let f = self.fields(
            node,
            "metadata",
            &[
                "name",
                "namespace",
                "labels",
                "annotations",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
            ],
            &[(
                "generateName",
                "a generated name cannot be deleted by name later; give the policy a `name`",
            )],
        )?;
        let name_node = f
            .get("name")
            .ok_or_else(|| self.err(node, "has no `name`"))?;
        let name = self.string(name_node)?;
        check_subdomain(name).map_err(|e| self.err(name_node, format!("`{name}` {e}")))?;
        let namespace = match f.get("namespace") {
            Some(n) => {
                let ns = self.string(n)?;
                check_dns_label(ns).map_err(|e| self.err(n, format!("`{ns}` {e}")))?;
                ns.to_owned()
            }
            None => DEFAULT_NAMESPACE.to_owned(),
        };
        for key in ["labels", "annotations"] {
            if let Some(n) = f.get(key) {
                self.string_map(n)?;
            }
        }
        Ok((name.to_owned(), namespace))
    }

    /// A label selector; `cilium`: keys may carry a source (`k8s:app`)
    /// and are stored with one (`any:` when none).
    fn selector(&self, node: &Node<'_, '_>, cilium: bool) -> Result<Selector, ParseError> {
        let f = self.fields(
            node,
            "a label selector",
            &["matchLabels", "matchExpressions"],
            &[],
        )?;
        let mut sel = Selector::default();
        if let Some(n) = f.get("matchLabels") {
            for (key, value, line) in self.string_map(n)? {
                let key = self.label_key(&key, cilium, line, &n.path)?;
                check_value(&value).map_err(|e| {
                    self.at(
                        line,
                        format!("{}: `{value}` is not a valid label value: {e}", n.path),
                    )
                })?;
                sel.match_labels.insert(key, value);
            }
        }
        if let Some(n) = f.get("matchExpressions") {
            for item in self.seq(n)? {
                let e = self.fields(
                    &item,
                    "a selector requirement",
                    &["key", "operator", "values"],
                    &[],
                )?;
                let key_node = e
                    .get("key")
                    .ok_or_else(|| self.err(&item, "has no `key`"))?;
                let key = self.label_key(
                    self.string(key_node)?,
                    cilium,
                    key_node.line(),
                    &key_node.path,
                )?;
                let op_node = e.get("operator").ok_or_else(|| {
                    self.err(&item, "has no `operator` (In, NotIn, Exists, DoesNotExist)")
                })?;
                let operator = match self.string(op_node)? {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    _ => {
                        return Err(self.err(op_node, "must be In, NotIn, Exists or DoesNotExist"));
                    }
                };
                let values = match e.get("values") {
                    Some(v) => self.strings(v)?,
                    None => Vec::new(),
                };
                match operator {
                    Operator::In | Operator::NotIn if values.is_empty() => {
                        return Err(self.err(
                            &item,
                            format!(
                                "uses {} and needs at least one of `values`",
                                operator.as_str()
                            ),
                        ));
                    }
                    Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                        return Err(self.err(
                            &item,
                            format!("uses {} and must have no `values`", operator.as_str()),
                        ));
                    }
                    _ => {}
                }
                for v in &values {
                    check_value(v).map_err(|err| {
                        self.err(&item, format!(": `{v}` is not a valid label value: {err}"))
                    })?;
                }
                sel.match_expressions.push(Requirement {
                    key,
                    operator,
                    values,
                });
            }
        }
        Ok(sel)
    }

    fn label_key(
        &self,
        key: &str,
        cilium: bool,
        line: usize,
        path: &str,
    ) -> Result<String, ParseError> {
        let bad = |e: String| {
            let shown: String = key.chars().take(60).collect();
            self.at(
                line,
                format!("{path}: `{shown}` is not a valid label key: {e}"),
            )
        };
        if !cilium {
            check_key(key).map_err(bad)?;
            return Ok(key.to_owned());
        }
        let (source, bare) = match key.split_once(':') {
            Some((s, k)) => (s, k),
            None => ("any", key),
        };
        match source {
            "k8s" | "any" => check_key(bare).map_err(bad)?,
            "reserved" => {
                if !identity::RESERVED.iter().any(|(_, n)| *n == bare) {
                    return Err(bad(format!(
                        "reserved labels are {}",
                        identity::RESERVED
                            .iter()
                            .map(|(_, n)| format!("reserved:{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            _ => {
                return Err(bad(format!(
                    "label source `{source}` is not implemented (use k8s:, any: or reserved:)"
                )));
            }
        }
        Ok(format!("{source}:{bare}"))
    }

    fn cidr(&self, node: &Node<'_, '_>, bare_ip: bool) -> Result<IpNet, ParseError> {
        let text = self.string(node)?;
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(net.trunc());
        }
        if bare_ip && let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(IpNet::from(ip));
        }
        let shown: String = text.chars().take(50).collect();
        Err(self.err(
            node,
            format!("`{shown}` is not a CIDR (such as 10.0.0.0/8 or 203.0.113.10/32)"),
        ))
    }

    fn excepts(&self, cidr: IpNet, node: Option<&Node<'_, '_>>) -> Result<Vec<IpNet>, ParseError> {
        let Some(node) = node else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self.seq(node)? {
            let x = self.cidr(&item, false)?;
            if !(cidr.contains(&x) && x.prefix_len() > cidr.prefix_len()) {
                return Err(self.err(&item, format!("{x} must lie inside {cidr} and be smaller")));
            }
            out.push(x);
        }
        Ok(out)
    }

    /// A port number: 1-65535 (`zero`: 0 too, Cilium's "every port").
    fn port_number(&self, node: &Node<'_, '_>, cilium: bool) -> Result<Option<u16>, ParseError> {
        let n: i64 = match &node.y.data {
            YamlData::Value(Scalar::Integer(n)) => *n,
            YamlData::Value(Scalar::String(s))
                if cilium && s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() =>
            {
                s.parse().unwrap_or(i64::MAX)
            }
            YamlData::Value(Scalar::String(s))
                if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() =>
            {
                return Err(self.err(node, format!("is the string \"{s}\", which Kubernetes reads as a port name: write the number without quotes")));
            }
            YamlData::Value(Scalar::String(s)) => {
                let shown: String = s.chars().take(30).collect();
                return Err(self.err(node, format!("`{shown}` is a named port, which labctl does not implement: use the port number")));
            }
            _ => return Err(self.err(node, "must be a port number")),
        };
        match n {
            0 if cilium => Ok(None),
            1..=65535 => Ok(u16::try_from(n).ok()),
            _ => Err(self.err(node, format!("{n} is not a port: use 1 to 65535"))),
        }
    }

    fn ports(&self, node: &Node<'_, '_>, cilium: bool) -> Result<Vec<PortRule>, ParseError> {
        let mut out = Vec::new();
        for item in self.seq(node)? {
            let f = self.fields(&item, "a port", &["port", "protocol", "endPort"], &[])?;
            let protocol = match f.get("protocol") {
                None if cilium => Protocol::Any,
                None => Protocol::Tcp,
                Some(p) => match (self.string(p)?, cilium) {
                    ("TCP", _) => Protocol::Tcp,
                    ("UDP", _) => Protocol::Udp,
                    ("SCTP", _) => Protocol::Sctp,
                    ("ANY", true) => Protocol::Any,
                    (_, true) => return Err(self.err(p, "must be TCP, UDP, SCTP or ANY")),
                    (_, false) => return Err(self.err(p, "must be TCP, UDP or SCTP (upper case)")),
                },
            };
            let port = match f.get("port") {
                Some(p) => self.port_number(p, cilium)?,
                None => None,
            };
            let end_port = match f.get("endPort") {
                None => None,
                Some(e) => {
                    let end = self.port_number(e, false)?;
                    let Some(start) = port else {
                        return Err(self.err(e, "needs a numeric `port` to start the range"));
                    };
                    if end.is_some_and(|end| end < start) {
                        return Err(self.err(e, format!("must not be below port {start}")));
                    }
                    end
                }
            };
            out.push(PortRule {
                protocol,
                port,
                end_port,
            });
        }
        Ok(out)
    }

    fn network_policy(
        &self,
        spec: &Node<'_, '_>,
        name: String,
        namespace: String,
        origin: Origin,
    ) -> Result<Policy, ParseError> {
        let f = self.fields(
            spec,
            "a NetworkPolicy's spec",
            &["podSelector", "policyTypes", "ingress", "egress"],
            &[],
        )?;
        let subject = self.selector(
            f.get("podSelector").ok_or_else(|| {
                self.err(
                    spec,
                    "has no `podSelector` (`podSelector: {}` selects every pod of the namespace)",
                )
            })?,
            false,
        )?;
        let mut ingress = Vec::new();
        if let Some(n) = f.get("ingress") {
            for item in self.seq(n)? {
                ingress.push(self.k8s_rule(&item, "from", &namespace)?);
            }
        }
        let mut egress = Vec::new();
        if let Some(n) = f.get("egress") {
            for item in self.seq(n)? {
                egress.push(self.k8s_rule(&item, "to", &namespace)?);
            }
        }
        let types = match f.get("policyTypes") {
            Some(n) => {
                let mut t = Directions::default();
                for item in self.seq(n)? {
                    match self.string(&item)? {
                        "Ingress" => t.ingress = true,
                        "Egress" => t.egress = true,
                        _ => return Err(self.err(&item, "must be Ingress or Egress")),
                    }
                }
                t
            }
            // The API server's default: Ingress, and Egress if there are
            // egress rules.
            None => Directions {
                ingress: true,
                egress: !egress.is_empty(),
            },
        };
        for (rules, listed, key, word) in [
            (&ingress, types.ingress, "ingress", "Ingress"),
            (&egress, types.egress, "egress", "Egress"),
        ] {
            if !rules.is_empty()
                && !listed
                && let Some(n) = f.get(key)
            {
                return Err(self.err(n, format!("has rules, but policyTypes does not list {word}: Kubernetes would ignore them; add {word} to policyTypes or remove them")));
            }
        }
        Ok(Policy {
            kind: Kind::NetworkPolicy,
            namespace,
            name,
            subject,
            ingress,
            egress,
            ingress_deny: Vec::new(),
            egress_deny: Vec::new(),
            applies: types,
            default_deny: types,
            description: None,
            origin,
        })
    }

    /// A NetworkPolicy ingress (`from`) or egress (`to`) rule.
    fn k8s_rule(
        &self,
        node: &Node<'_, '_>,
        peers_key: &str,
        namespace: &str,
    ) -> Result<Rule, ParseError> {
        let f = self.fields(node, "a NetworkPolicy rule", &[peers_key, "ports"], &[])?;
        let peers = match f.get(peers_key) {
            None => None,
            Some(n) => {
                let items = self.seq(n)?;
                let mut peers = Vec::new();
                for item in &items {
                    peers.push(self.k8s_peer(item, namespace)?);
                }
                // `from: []` is every source, as no `from` at all.
                (!peers.is_empty()).then_some(peers)
            }
        };
        let ports = match f.get("ports") {
            Some(n) => self.ports(n, false)?,
            None => Vec::new(),
        };
        Ok(Rule {
            peers,
            ports,
            line: node.line() as u32,
        })
    }

    fn k8s_peer(&self, node: &Node<'_, '_>, namespace: &str) -> Result<Peer, ParseError> {
        let f = self.fields(
            node,
            "a NetworkPolicy peer",
            &["podSelector", "namespaceSelector", "ipBlock"],
            &[],
        )?;
        let pods = f.get("podSelector");
        let namespaces = f.get("namespaceSelector");
        if let Some(block) = f.get("ipBlock") {
            if pods.is_some() || namespaces.is_some() {
                return Err(self.err(node, "combines ipBlock with a selector in one peer, which Kubernetes refuses: make them two peers (two `-` items)"));
            }
            let b = self.fields(block, "an ipBlock", &["cidr", "except"], &[])?;
            let cidr_node = b
                .get("cidr")
                .ok_or_else(|| self.err(block, "has no `cidr`"))?;
            let cidr = self.cidr(cidr_node, false)?;
            let except = self.excepts(cidr, b.get("except"))?;
            return Ok(Peer::Cidr { cidr, except });
        }
        if pods.is_none() && namespaces.is_none() {
            return Err(self.err(
                node,
                "is empty: a peer needs podSelector, namespaceSelector or ipBlock",
            ));
        }
        Ok(Peer::Pods {
            namespaces: match namespaces {
                Some(n) => Namespaces::Matching(self.selector(n, false)?),
                None => Namespaces::Own(namespace.to_owned()),
            },
            pods: match pods {
                Some(n) => self.selector(n, false)?,
                None => Selector::default(),
            },
        })
    }

    fn cilium_policy(
        &self,
        spec: &Node<'_, '_>,
        name: String,
        namespace: String,
        origin: Origin,
    ) -> Result<Policy, ParseError> {
        let f = self.fields(
            spec,
            "a CiliumNetworkPolicy's spec",
            &[
                "endpointSelector",
                "ingress",
                "egress",
                "ingressDeny",
                "egressDeny",
                "description",
                "enableDefaultDeny",
            ],
            &[
                (
                    "nodeSelector",
                    "host policies are not implemented; select pods with endpointSelector",
                ),
                (
                    "labels",
                    "rule labels are not implemented; put labels in metadata.labels",
                ),
            ],
        )?;
        let sel_node = f.get("endpointSelector").ok_or_else(|| {
            self.err(spec, "has no `endpointSelector` (`endpointSelector: {}` selects every pod of the namespace)")
        })?;
        let mut subject = self.selector(sel_node, true)?;
        restrict_to(&mut subject, &namespace);
        let mut sections: [Vec<Rule>; 4] = Default::default();
        for (i, (key, ingress, deny)) in [
            ("ingress", true, false),
            ("egress", false, false),
            ("ingressDeny", true, true),
            ("egressDeny", false, true),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(n) = f.get(key) {
                for item in self.seq(n)? {
                    sections[i].push(self.cilium_rule(&item, ingress, deny, &namespace)?);
                }
            }
        }
        let [ingress, egress, ingress_deny, egress_deny] = sections;
        let mut enable = (None, None);
        if let Some(n) = f.get("enableDefaultDeny") {
            let e = self.fields(n, "enableDefaultDeny", &["ingress", "egress"], &[])?;
            if let Some(v) = e.get("ingress") {
                enable.0 = Some(self.bool(v)?);
            }
            if let Some(v) = e.get("egress") {
                enable.1 = Some(self.bool(v)?);
            }
        }
        let has = Directions {
            ingress: !ingress.is_empty() || !ingress_deny.is_empty(),
            egress: !egress.is_empty() || !egress_deny.is_empty(),
        };
        let applies = Directions {
            ingress: has.ingress || enable.0 == Some(true),
            egress: has.egress || enable.1 == Some(true),
        };
        let description = match f.get("description") {
            Some(d) => Some(self.string(d)?.to_owned()),
            None => None,
        };
        Ok(Policy {
            kind: Kind::CiliumNetworkPolicy,
            namespace,
            name,
            subject,
            ingress,
            egress,
            ingress_deny,
            egress_deny,
            applies,
            default_deny: Directions {
                ingress: enable.0.unwrap_or(has.ingress),
                egress: enable.1.unwrap_or(has.egress),
            },
            description,
            origin,
        })
    }

    fn cilium_rule(
        &self,
        node: &Node<'_, '_>,
        ingress: bool,
        deny: bool,
        namespace: &str,
    ) -> Result<Rule, ParseError> {
        let (endpoints, cidr, cidr_set, entities) = if ingress {
            ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities")
        } else {
            ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities")
        };
        let refused: &[(&str, &str)] = if ingress {
            &[
                ("fromRequires", REQUIRES),
                ("fromGroups", GROUPS),
                ("fromNodes", NODES),
                ("icmps", ICMP),
                ("authentication", AUTH),
            ]
        } else {
            &[
                ("toRequires", REQUIRES),
                ("toFQDNs", FQDN),
                ("toServices", SERVICES),
                ("toGroups", GROUPS),
                ("toNodes", NODES),
                ("icmps", ICMP),
                ("authentication", AUTH),
            ]
        };
        let what = match (ingress, deny) {
            (true, false) => "a Cilium ingress rule",
            (false, false) => "a Cilium egress rule",
            (true, true) => "a Cilium ingressDeny rule",
            (false, true) => "a Cilium egressDeny rule",
        };
        let f = self.fields(
            node,
            what,
            &[endpoints, cidr, cidr_set, entities, "toPorts"],
            refused,
        )?;
        let mut peers = Vec::new();
        let mut l3 = false;
        if let Some(n) = f.get(endpoints) {
            l3 = true;
            for item in self.seq(n)? {
                let mut selector = self.selector(&item, true)?;
                // In a namespaced policy a selector stays in the policy's
                // namespace unless it names one (or a reserved identity).
                if !selector.mentions(|k| {
                    k.ends_with(&format!(":{NAMESPACE_LABEL}")) || k.starts_with("reserved:")
                }) {
                    restrict_to(&mut selector, namespace);
                }
                peers.push(Peer::Endpoints { selector });
            }
        }
        if let Some(n) = f.get(cidr) {
            l3 = true;
            for item in self.seq(n)? {
                peers.push(Peer::Cidr {
                    cidr: self.cidr(&item, true)?,
                    except: Vec::new(),
                });
            }
        }
        if let Some(n) = f.get(cidr_set) {
            l3 = true;
            for item in self.seq(n)? {
                let s = self.fields(
                    &item,
                    "a CIDR set",
                    &["cidr", "except"],
                    &[
                        ("cidrGroupRef", CIDR_GROUPS),
                        ("cidrGroupSelector", CIDR_GROUPS),
                    ],
                )?;
                let cidr_node = s
                    .get("cidr")
                    .ok_or_else(|| self.err(&item, "has no `cidr`"))?;
                let c = self.cidr(cidr_node, true)?;
                let except = self.excepts(c, s.get("except"))?;
                peers.push(Peer::Cidr { cidr: c, except });
            }
        }
        if let Some(n) = f.get(entities) {
            l3 = true;
            for item in self.seq(n)? {
                let name = self.string(&item)?;
                let entity = Entity::parse(name).ok_or_else(|| {
                    let shown: String = name.chars().take(30).collect();
                    self.err(
                        &item,
                        format!(
                            "`{shown}` is not an entity: use one of {}",
                            Entity::ALL.map(Entity::as_str).join(", ")
                        ),
                    )
                })?;
                peers.push(Peer::Entity { entity });
            }
        }
        let mut ports = Vec::new();
        let mut l4 = false;
        if let Some(n) = f.get("toPorts") {
            for item in self.seq(n)? {
                let p = self.fields(
                    &item,
                    "a toPorts item",
                    &["ports"],
                    &[
                        ("rules", L7),
                        ("terminatingTLS", TLS),
                        ("originatingTLS", TLS),
                        ("serverNames", TLS),
                        ("listener", L7),
                    ],
                )?;
                if let Some(list) = p.get("ports") {
                    l4 = true;
                    ports.extend(self.ports(list, true)?);
                }
            }
        }
        // Only ports: every peer on them. Nothing at all (`- {}`): no peer,
        // the rule only turns default deny on.
        let peers = if l3 || !l4 { Some(peers) } else { None };
        Ok(Rule {
            peers,
            ports,
            line: node.line() as u32,
        })
    }
}

/// Restricts a Cilium selector to namespace `ns` (AND).
fn restrict_to(sel: &mut Selector, ns: &str) {
    let key = format!("k8s:{NAMESPACE_LABEL}");
    match sel.match_labels.get(&key) {
        None => {
            sel.match_labels.insert(key, ns.to_owned());
        }
        Some(v) if v == ns => {}
        Some(_) => sel.match_expressions.push(Requirement {
            key,
            operator: Operator::In,
            values: vec![ns.to_owned()],
        }),
    }
}

/// The known field closest to a mistyped one (at most 2 edits away).
fn suggestion<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&key.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Labels typed on the command line (`KEY=VALUE`), checked as the API
/// server would.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    check_key(key).map_err(|e| format!("`{key}` is not a valid label key: {e}"))?;
    check_value(value).map_err(|e| format!("`{value}` is not a valid label value: {e}"))
}

/// The labels a selector needs, for messages.
pub fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
