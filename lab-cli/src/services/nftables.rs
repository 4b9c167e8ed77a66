//! kube-proxy's nftables mode (Kubernetes 1.31+), with its table, map and
//! chain names, so `nft list table ip kube-proxy` in a lab node reads like
//! a real node's:
//!
//! ```text
//! table ip kube-proxy
//!   chain nat-prerouting / nat-output   (dstnat hooks) -> jump services
//!   chain services    ip daddr . meta l4proto . th dport vmap @service-ips
//!   map service-ips   VIP . tcp . 80 : goto service-<hash8>-NS/NAME/tcp/PORT
//!   chain service-…   numgen random mod N vmap { 0 : goto endpoint-…, … }
//!   chain endpoint-…  ip saddr BACKEND jump mark-for-masquerade
//!                     meta l4proto tcp counter dnat to BACKEND:PORT
//!   map no-endpoint-services  VIP . tcp . 80 : goto reject-chain (no endpoints)
//! ```
//!
//! One lookup in a verdict map finds the service whatever the number of
//! services (iptables walks KUBE-SERVICES rule by rule). Names follow
//! kube-proxy: `service-` + the first 8 characters of
//! base32(sha256("NS/NAME/tcp/PORT")) + `-NS/NAME/tcp/PORT`, and
//! `endpoint-` likewise over `…__ADDR/PORT`. One difference: the DNAT rule
//! has a `counter` (kube-proxy's has none), whose packets are the backend's
//! connections. A sync is one `nft -f` transaction that writes only what
//! changed (see [`sync_input`]): its plan is that transaction, line by
//! line.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    FrontendView, ServiceError, chain_view,
    datapath::{Cluster, Node, ServiceDatapath, ServicePlan, Write, merged},
    model::{Endpoint, Frontend, KubeProxyMode, L4, kube_hash},
};
use crate::kernel::{
    datapath::{Part, Plan, ToolRun},
    netns::NetNs,
    tool::{self, ToolError},
};

pub const TABLE: &str = "kube-proxy";

/// What a change is counted as.
pub const UNIT: &str = "nft rules and map elements";

fn base(f: &Frontend) -> String {
    // NS/NAME/PROTOCOL/PORTNAME (the port is named after its protocol).
    format!(
        "{}/{}/{}/{}",
        f.namespace,
        f.service,
        f.proto.as_str(),
        f.proto.as_str()
    )
}

fn hash_and_truncate(name: &str) -> String {
    // nft's chain names are at most 256 characters; ours are far shorter.
    format!("{}-{name}", &kube_hash(name)[..8])
}

pub fn service_chain(f: &Frontend) -> String {
    format!("service-{}", hash_and_truncate(&base(f)))
}

pub fn endpoint_chain(f: &Frontend, e: &Endpoint) -> String {
    format!(
        "endpoint-{}",
        hash_and_truncate(&format!("{}__{}/{}", base(f), e.addr, e.port))
    )
}

/// Whether `chain` is a per-service or per-endpoint chain (`PREFIX` + an
/// 8-character base32 hash + `-`), not one of the table's fixed chains
/// such as `service-endpoints-check`.
fn generated(chain: &str, prefix: &str) -> bool {
    chain.strip_prefix(prefix).is_some_and(|rest| {
        let b = rest.as_bytes();
        b.len() > 9
            && b[8] == b'-'
            && b[..8]
                .iter()
                .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c))
    })
}

/// The table's fixed part, created on the first sync.
fn base_table() -> String {
    format!(
        "table ip {TABLE} {{\n\
         \tcomment \"rules for kube-proxy\"\n\
         \tchain mark-for-masquerade {{\n\t\tmeta mark set meta mark or 0x4000\n\t}}\n\
         \tchain masquerading {{\n\
         \t\tmeta mark & 0x4000 == 0 return\n\
         \t\tmeta mark set meta mark xor 0x4000\n\
         \t\tmasquerade fully-random\n\t}}\n\
         \tmap service-ips {{\n\
         \t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\
         \t\tcomment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"\n\t}}\n\
         \tchain services {{\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}}\n\
         \tmap no-endpoint-services {{\n\
         \t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\
         \t\tcomment \"vmap to drop or reject packets to services with no endpoints\"\n\t}}\n\
         \tchain reject-chain {{\n\t\tcomment \"helper for @no-endpoint-services\"\n\t\treject\n\t}}\n\
         \tchain service-endpoints-check {{\n\
         \t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}}\n\
         \tchain filter-forward {{\n\
         \t\ttype filter hook forward priority -110; policy accept;\n\
         \t\tct state new jump service-endpoints-check\n\t}}\n\
         \tchain filter-output {{\n\
         \t\ttype filter hook output priority -110; policy accept;\n\
         \t\tct state new jump service-endpoints-check\n\t}}\n\
         \tchain nat-prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump services\n\t}}\n\
         \tchain nat-output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tjump services\n\t}}\n\
         \tchain nat-postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tjump masquerading\n\t}}\n\
         }}\n"
    )
}

/// The `nft -f` transaction that brings a node from what `nft -j list
/// table` showed (`existing`; None: no table yet) to `frontends`, and how
/// many rules and map elements it writes. Only what changed is written, as
/// kube-proxy's nftables mode does: a service whose endpoints are the same
/// keeps its chain and its map element; endpoint chains that stay keep
/// their counters.
pub fn sync_input(
    frontends: &[Frontend],
    cluster_cidr: &str,
    existing: Option<&Value>,
) -> (String, usize) {
    let mut out = match existing {
        None => base_table(),
        Some(_) => String::new(),
    };
    let (old_chains, before) = match existing {
        Some(l) => (chains(l), parse(l)),
        None => (BTreeSet::new(), Vec::new()),
    };
    let before_at: std::collections::HashMap<(std::net::Ipv4Addr, u16, L4), &ListedFrontend> =
        before
            .iter()
            .map(|b| ((b.vip, b.port, b.proto), b))
            .collect();
    let wanted_at: std::collections::HashSet<(std::net::Ipv4Addr, u16, L4)> =
        frontends.iter().map(|f| (f.vip, f.port, f.proto)).collect();
    let t = format!("ip {TABLE}");
    let mut changes = 0;
    // Services without endpoints are few: that map is rewritten each time.
    out.push_str(&format!("flush map {t} no-endpoint-services\n"));
    let mut rejects = Vec::new();
    let mut wanted = BTreeSet::new();
    let mut elements = Vec::new();
    let mut gone_elements = Vec::new();
    for f in frontends {
        let svc = service_chain(f);
        wanted.insert(svc.clone());
        let p = f.proto.as_str();
        let eps: Vec<String> = f.backends.iter().map(|e| endpoint_chain(f, e)).collect();
        let old = before_at.get(&(f.vip, f.port, f.proto)).copied();
        let same_chain = old
            .is_some_and(|o| o.chain == svc && o.endpoints.iter().map(|e| &e.chain).eq(eps.iter()));
        if f.backends.is_empty() {
            rejects.push(format!("{} . {p} . {} : goto reject-chain", f.vip, f.port));
        }
        for (e, ep) in f.backends.iter().zip(&eps) {
            if wanted.insert(ep.clone()) && !old_chains.contains(ep) {
                out.push_str(&format!(
                    "add chain {t} {ep}\n\
                     add rule {t} {ep} ip saddr {} jump mark-for-masquerade\n\
                     add rule {t} {ep} meta l4proto {p} counter dnat to {e}\n",
                    e.addr
                ));
                changes += 2;
            }
        }
        if same_chain {
            continue;
        }
        out.push_str(&format!("add chain {t} {svc}\nflush chain {t} {svc}\n"));
        out.push_str(&format!(
            "add rule {t} {svc} ip daddr {} {p} dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade\n",
            f.vip, f.port
        ));
        changes += 1;
        if !eps.is_empty() {
            let arms: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(i, ep)| format!("{i} : goto {ep}"))
                .collect();
            out.push_str(&format!(
                "add rule {t} {svc} numgen random mod {} vmap {{ {} }}\n",
                arms.len(),
                arms.join(", ")
            ));
            changes += 1;
        }
        if old.is_some_and(|o| o.chain != svc) {
            gone_elements.push(format!("{} . {p} . {}", f.vip, f.port));
        }
        if old.is_none_or(|o| o.chain != svc) {
            elements.push(format!("{} . {p} . {} : goto {svc}", f.vip, f.port));
        }
    }
    for b in &before {
        if !wanted_at.contains(&(b.vip, b.port, b.proto)) {
            gone_elements.push(format!("{} . {} . {}", b.vip, b.proto.as_str(), b.port));
        }
    }
    // Large sets go in slices: one huge line is slow for nft to parse.
    for chunk in gone_elements.chunks(1000) {
        out.push_str(&format!(
            "delete element {t} service-ips {{ {} }}\n",
            chunk.join(", ")
        ));
    }
    for chunk in elements.chunks(1000) {
        out.push_str(&format!(
            "add element {t} service-ips {{ {} }}\n",
            chunk.join(", ")
        ));
    }
    changes += elements.len() + gone_elements.len();
    if !rejects.is_empty() {
        out.push_str(&format!(
            "add element {t} no-endpoint-services {{ {} }}\n",
            rejects.join(", ")
        ));
        changes += rejects.len();
    }
    let stale: Vec<&String> = old_chains
        .iter()
        .filter(|c| (generated(c, "service-") || generated(c, "endpoint-")) && !wanted.contains(*c))
        .collect();
    // Service chains first (they jump to endpoint chains), flushed, then deleted.
    for c in stale.iter().filter(|c| c.starts_with("service-")) {
        out.push_str(&format!("flush chain {t} {c}\n"));
    }
    for c in stale.iter().filter(|c| c.starts_with("service-")) {
        out.push_str(&format!("delete chain {t} {c}\n"));
    }
    for c in stale.iter().filter(|c| c.starts_with("endpoint-")) {
        out.push_str(&format!("flush chain {t} {c}\ndelete chain {t} {c}\n"));
    }
    (out, changes + stale.len())
}

/// `NS/NAME` from a service chain's name (`service-HASH8-NS/NAME/PROTO/PORT`).
pub fn service_of(chain: &str) -> Option<String> {
    let rest = chain.strip_prefix("service-")?.get(9..)?;
    let mut parts = rest.splitn(3, '/');
    Some(format!("{}/{}", parts.next()?, parts.next()?))
}

/// One service port read back from `nft -j list table ip kube-proxy`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedFrontend {
    pub vip: std::net::Ipv4Addr,
    pub port: u16,
    pub proto: L4,
    pub chain: String,
    pub endpoints: Vec<ListedEndpoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListedEndpoint {
    pub chain: String,
    pub endpoint: Option<Endpoint>,
    pub connections: u64,
}

/// Every chain of the table, from `nft -j list table`.
pub fn chains(listing: &Value) -> BTreeSet<String> {
    items(listing)
        .filter_map(|i| i.get("chain"))
        .filter_map(|c| c.get("name")?.as_str())
        .map(str::to_owned)
        .collect()
}

fn items(listing: &Value) -> impl Iterator<Item = &Value> {
    listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Every `goto` target under `v`, in order.
fn gotos(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(t) = m
                .get("goto")
                .and_then(|g| g.get("target"))
                .and_then(Value::as_str)
            {
                out.push(t.to_owned());
            }
            for x in m.values() {
                gotos(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| gotos(x, out)),
        _ => {}
    }
}

/// The first object under `v` with key `key`.
fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key).or_else(|| m.values().find_map(|x| find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

/// Reads kube-proxy's table back from `nft -j list table ip kube-proxy`.
pub fn parse(listing: &Value) -> Vec<ListedFrontend> {
    // Rules by chain: a table with 10,000 services has 50,000 rules.
    let mut rules: std::collections::HashMap<&str, Vec<&Value>> = std::collections::HashMap::new();
    for r in items(listing).filter_map(|i| i.get("rule")) {
        if let Some(chain) = r.get("chain").and_then(Value::as_str) {
            rules.entry(chain).or_default().push(r);
        }
    }
    let rules_of = |chain: &str| rules.get(chain).map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::new();
    let Some(map) = items(listing)
        .filter_map(|i| i.get("map"))
        .find(|m| m.get("name").and_then(Value::as_str) == Some("service-ips"))
    else {
        return out;
    };
    for elem in map
        .get("elem")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(pair) = elem.as_array() else {
            continue;
        };
        let (Some(key), Some(verdict)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let Some(parts) = key.get("concat").and_then(Value::as_array) else {
            continue;
        };
        let vip = parts
            .first()
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok());
        let proto = parts.get(1).and_then(Value::as_str).and_then(L4::parse);
        let port = parts
            .get(2)
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let mut targets = Vec::new();
        gotos(verdict, &mut targets);
        let (Some(vip), Some(proto), Some(port), Some(chain)) =
            (vip, proto, port, targets.into_iter().next())
        else {
            continue;
        };
        let mut endpoint_chains = Vec::new();
        for r in rules_of(&chain) {
            gotos(r, &mut endpoint_chains);
        }
        let endpoints = endpoint_chains
            .into_iter()
            .map(|ep| {
                let mut endpoint = None;
                let mut connections = 0;
                for r in rules_of(&ep) {
                    if let Some(d) = find(r, "dnat") {
                        endpoint = (|| {
                            Some(Endpoint {
                                addr: d.get("addr")?.as_str()?.parse().ok()?,
                                port: u16::try_from(d.get("port")?.as_u64()?).ok()?,
                            })
                        })();
                        connections = find(r, "counter")
                            .and_then(|c| c.get("packets"))
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                    }
                }
                ListedEndpoint {
                    chain: ep,
                    endpoint,
                    connections,
                }
            })
            .collect();
        out.push(ListedFrontend {
            vip,
            port,
            proto,
            chain,
            endpoints,
        });
    }
    out.sort_by_key(|f| (f.vip, f.port, f.proto));
    out
}

/// kube-proxy's nftables mode on a cluster's nodes.
pub struct Nftables {
    mode: KubeProxyMode,
    cluster: Cluster,
}

impl Nftables {
    pub fn new(mode: KubeProxyMode, cluster: Cluster) -> Self {
        Self { mode, cluster }
    }
}

/// `nft -j list table ip kube-proxy` in `ns`; None when there is no table.
fn listing(ns: &NetNs) -> Result<Option<Value>, ServiceError> {
    match tool::run(ns, "nft", &["-j", "list", "table", "ip", TABLE], None) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).map_err(ServiceError::NftJson)?,
        )),
        Err(ToolError::Refused { stderr, .. }) if stderr.contains("No such file") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One node's part of a plan, from its table as listed (None: none yet):
/// the `nft -f` transaction, line by line.
fn node_part(
    node: &Node,
    frontends: &[Frontend],
    cluster_cidr: &str,
    existing: Option<&Value>,
) -> Part<Write> {
    let (input, changes) = sync_input(frontends, cluster_cidr, existing);
    Part {
        target: node.name.clone(),
        // The table's first creation is indented with tabs.
        lines: input.lines().map(|l| l.replace('\t', "  ")).collect(),
        changes,
        write: Write::Tool(ToolRun {
            ns: node.ns.handle(),
            program: "nft",
            args: &["-f", "-"],
            input,
        }),
    }
}

impl ServiceDatapath for Nftables {
    fn mode(&self) -> KubeProxyMode {
        self.mode
    }

    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn check(&self) -> Result<(), ServiceError> {
        which::which("nft")
            .map(drop)
            .map_err(|_| ServiceError::ToolMissing("nft"))
    }

    fn unit(&self) -> &'static str {
        UNIT
    }

    fn plan(&self, frontends: &[Frontend]) -> Result<ServicePlan, ServiceError> {
        let mut plan = Plan::new(UNIT);
        for node in &self.cluster.nodes {
            let existing = listing(&node.ns)?;
            let cidr = &self.cluster.cluster_cidr;
            plan.push(node_part(node, frontends, cidr, existing.as_ref()));
        }
        Ok(plan)
    }

    fn read(&self) -> Result<Vec<FrontendView>, ServiceError> {
        let mut per_node = Vec::new();
        for node in &self.cluster.nodes {
            let Some(listing) = listing(&node.ns)? else {
                continue;
            };
            per_node.push(
                parse(&listing)
                    .into_iter()
                    .map(|f| {
                        let service = service_of(&f.chain);
                        let source = self.mode.as_str();
                        chain_view(source, service, (f.vip, f.port, f.proto), f.chain, {
                            f.endpoints
                                .into_iter()
                                .map(|e| (e.endpoint, e.connections, None, e.chain))
                        })
                    })
                    .collect(),
            );
        }
        Ok(merged(per_node))
    }

    fn teardown(&self) -> Result<(), ServiceError> {
        for node in &self.cluster.nodes {
            match tool::run(&node.ns, "nft", &["delete", "table", "ip", TABLE], None) {
                Err(ToolError::Refused { stderr, .. }) if stderr.contains("No such file") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    fn netfilter(&self) -> bool {
        true
    }

    fn holder(&self) -> &'static str {
        "nft table"
    }

    fn inspect(&self, netns: &str) -> Option<String> {
        Some(format!("ip netns exec {netns} nft list table ip {TABLE}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn names_are_kube_proxys() {
        let f = Frontend {
            namespace: "ns1".into(),
            service: "svc1".into(),
            vip: Ipv4Addr::new(172, 30, 0, 41),
            port: 80,
            proto: L4::Tcp,
            backends: vec![],
        };
        // kube-proxy names the port; ours are named after the protocol.
        assert_eq!(
            service_chain(&f),
            format!(
                "service-{}-ns1/svc1/tcp/tcp",
                &kube_hash("ns1/svc1/tcp/tcp")[..8]
            )
        );
        let e = Endpoint {
            addr: Ipv4Addr::new(10, 180, 0, 1),
            port: 80,
        };
        assert!(endpoint_chain(&f, &e).ends_with("-ns1/svc1/tcp/tcp__10.180.0.1/80"));
        assert!(generated(&service_chain(&f), "service-"));
        assert!(generated(&endpoint_chain(&f, &e), "endpoint-"));
        assert!(!generated("service-endpoints-check", "service-"));
    }

    #[test]
    fn a_sync_writes_only_what_changed() {
        let f = Frontend {
            namespace: "ns1".into(),
            service: "svc1".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: L4::Tcp,
            backends: vec![
                Endpoint {
                    addr: Ipv4Addr::new(10, 244, 1, 3),
                    port: 8080,
                },
                Endpoint {
                    addr: Ipv4Addr::new(10, 244, 2, 2),
                    port: 8080,
                },
            ],
        };
        let (first, n) = sync_input(std::slice::from_ref(&f), "10.244.0.0/16", None);
        assert!(first.starts_with("table ip kube-proxy {"), "{first}");
        // 2 endpoint chains × 2 rules, the mark rule, the numgen rule, the element.
        assert_eq!(n, 7);
        // The table as nft lists it after that transaction.
        let svc = service_chain(&f);
        let [a, b] = [&f.backends[0], &f.backends[1]].map(|e| endpoint_chain(&f, e));
        let listing: Value = serde_json::json!({"nftables": [
            {"chain": {"name": svc}}, {"chain": {"name": a}}, {"chain": {"name": b}},
            {"chain": {"name": "service-endpoints-check"}},
            {"map": {"name": "service-ips", "elem": [[{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": svc}}]]}},
            {"rule": {"chain": svc, "expr": [{"vmap": {"data": {"set": [[0, {"goto": {"target": a}}], [1, {"goto": {"target": b}}]]}}}]}},
            {"rule": {"chain": a, "expr": [{"counter": {"packets": 3}}, {"dnat": {"addr": "10.244.1.3", "port": 8080}}]}},
            {"rule": {"chain": b, "expr": [{"counter": {"packets": 4}}, {"dnat": {"addr": "10.244.2.2", "port": 8080}}]}},
        ]});
        let (same, n) = sync_input(std::slice::from_ref(&f), "10.244.0.0/16", Some(&listing));
        assert_eq!(n, 0, "{same}");
        assert!(
            !same.contains("add ") && !same.contains("delete "),
            "{same}"
        );
        // One backend less: the service chain is rewritten, one endpoint
        // chain deleted, the other (and its counter) left alone, the map
        // element kept.
        let mut g = f.clone();
        g.backends.pop();
        let (less, _) = sync_input(std::slice::from_ref(&g), "10.244.0.0/16", Some(&listing));
        assert!(
            less.contains(&format!("flush chain ip kube-proxy {svc}")),
            "{less}"
        );
        assert!(
            less.contains(&format!("delete chain ip kube-proxy {b}")),
            "{less}"
        );
        assert!(
            !less.contains(&format!("chain ip kube-proxy {a}\n")),
            "{less}"
        );
        assert!(!less.contains("service-ips"), "{less}");
        assert!(!less.contains("service-endpoints-check"), "{less}");
    }

    #[test]
    fn a_listing_reads_back_to_frontends_with_counters() {
        let listing: Value = serde_json::from_str(
            r#"{"nftables":[
            {"map":{"family":"ip","name":"service-ips","table":"kube-proxy","type":["ipv4_addr","inet_proto","inet_service"],"map":"verdict",
              "elem":[[{"concat":["10.96.0.10","tcp",80]},{"goto":{"target":"service-X"}}]]}},
            {"rule":{"chain":"service-X","expr":[{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},
              "data":{"set":[[0,{"goto":{"target":"endpoint-A"}}],[1,{"goto":{"target":"endpoint-B"}}]]}}}]}},
            {"rule":{"chain":"endpoint-A","expr":[{"counter":{"packets":5,"bytes":300}},{"dnat":{"addr":"10.244.1.3","port":8080}}]}},
            {"rule":{"chain":"endpoint-B","expr":[{"counter":{"packets":7,"bytes":420}},{"dnat":{"addr":"10.244.2.2","port":8080}}]}}
            ]}"#,
        )
        .unwrap();
        let got = parse(&listing);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].vip, got[0].port, got[0].proto),
            (Ipv4Addr::new(10, 96, 0, 10), 80, L4::Tcp)
        );
        let eps: Vec<_> = got[0]
            .endpoints
            .iter()
            .map(|e| (e.endpoint.clone().unwrap().to_string(), e.connections))
            .collect();
        assert_eq!(
            eps,
            [("10.244.1.3:8080".into(), 5), ("10.244.2.2:8080".into(), 7)]
        );
    }

    /// `nft -j list table ip kube-proxy` after `f` was written.
    fn listed(f: &Frontend) -> Value {
        let svc = service_chain(f);
        let eps: Vec<String> = f.backends.iter().map(|e| endpoint_chain(f, e)).collect();
        let mut items = vec![
            serde_json::json!({"chain": {"name": svc}}),
            serde_json::json!({"chain": {"name": "service-endpoints-check"}}),
            serde_json::json!({"map": {"name": "service-ips", "elem": [[
                {"concat": [f.vip.to_string(), f.proto.as_str(), f.port]},
                {"goto": {"target": svc}}
            ]]}}),
        ];
        let arms: Vec<Value> = eps
            .iter()
            .enumerate()
            .map(|(i, ep)| serde_json::json!([i, {"goto": {"target": ep}}]))
            .collect();
        items.push(serde_json::json!({"rule": {"chain": svc, "expr": [{"vmap": {"data": {"set": arms}}}]}}));
        for (e, ep) in f.backends.iter().zip(&eps) {
            items.push(serde_json::json!({"chain": {"name": ep}}));
            items.push(serde_json::json!({"rule": {"chain": ep, "expr": [
                {"counter": {"packets": 1}},
                {"dnat": {"addr": e.addr.to_string(), "port": e.port}}
            ]}}));
        }
        serde_json::json!({ "nftables": items })
    }

    #[test]
    fn adding_a_fourth_backend_plans_its_endpoint_chain_and_the_service_chain() {
        let backend = |n, h| Endpoint {
            addr: Ipv4Addr::new(10, 244, n, h),
            port: 8080,
        };
        let mut f = Frontend {
            namespace: "ns1".into(),
            service: "svc1".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: L4::Tcp,
            backends: vec![backend(1, 3), backend(2, 2), backend(2, 3)],
        };
        let listing = listed(&f);
        f.backends.push(backend(1, 4));
        let node = Node {
            name: "lab/node1".into(),
            ns: NetNs::at("lab-node1", std::path::Path::new("/run/netns/lab-node1")),
            veths: Vec::new(),
        };
        let part = node_part(
            &node,
            std::slice::from_ref(&f),
            "10.244.0.0/16",
            Some(&listing),
        );
        let t = "ip kube-proxy";
        let svc = service_chain(&f);
        let ep: Vec<String> = f.backends.iter().map(|e| endpoint_chain(&f, e)).collect();
        // As kube-proxy's nftables mode changes a service whose endpoints
        // changed: the new endpoint's chain, the service's chain flushed
        // and rewritten; the map element and the other endpoint chains
        // (and their counters) left alone.
        assert_eq!(
            part.lines,
            [
                format!("flush map {t} no-endpoint-services"),
                format!("add chain {t} {}", ep[3]),
                format!(
                    "add rule {t} {} ip saddr 10.244.1.4 jump mark-for-masquerade",
                    ep[3]
                ),
                format!(
                    "add rule {t} {} meta l4proto tcp counter dnat to 10.244.1.4:8080",
                    ep[3]
                ),
                format!("add chain {t} {svc}"),
                format!("flush chain {t} {svc}"),
                format!(
                    "add rule {t} {svc} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
                ),
                format!(
                    "add rule {t} {svc} numgen random mod 4 vmap {{ 0 : goto {}, 1 : goto {}, 2 : goto {}, 3 : goto {} }}",
                    ep[0], ep[1], ep[2], ep[3]
                ),
            ]
        );
        // The endpoint chain's two rules, the service chain's two.
        assert_eq!(part.changes, 4);
        assert_eq!(part.target, "lab/node1");
        // What is written is that transaction.
        let Write::Tool(run) = &part.write else {
            panic!("nftables writes with nft: {:?}", part.write)
        };
        assert_eq!((run.program, run.args), ("nft", &["-f", "-"][..]));
        assert_eq!(run.input.lines().collect::<Vec<_>>(), part.lines);
        assert_eq!(run.ns.name(), "lab-node1");
        // Written again, nothing changes.
        let same = node_part(
            &node,
            std::slice::from_ref(&f),
            "10.244.0.0/16",
            Some(&listed(&f)),
        );
        assert_eq!(same.changes, 0, "{:?}", same.lines);
    }
}
