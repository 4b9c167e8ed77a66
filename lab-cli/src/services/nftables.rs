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
//! ```
//!
//! One lookup in a verdict map finds the service whatever the number of
//! services (iptables walks KUBE-SERVICES rule by rule). Names follow
//! kube-proxy: `service-` + the first 8 characters of
//! base32(sha256("NS/NAME/tcp/PORT")) + `-NS/NAME/tcp/PORT`, and
//! `endpoint-` likewise over `…__ADDR/PORT`. One difference: the DNAT rule
//! has a `counter` (kube-proxy's has none), whose packets are the backend's
//! connections. A sync is one `nft -f` transaction that rewrites the
//! service chains and the map and adds or deletes endpoint chains.

use std::collections::BTreeSet;

use serde_json::Value;

use super::model::{Endpoint, Frontend, L4, kube_hash};

pub const TABLE: &str = "kube-proxy";

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

/// The `nft -f` transaction that brings a node from the chains in
/// `existing` (None: no table yet) to `frontends`, and how many rules and
/// map elements it writes.
pub fn sync_input(
    frontends: &[Frontend],
    cluster_cidr: &str,
    existing: Option<&BTreeSet<String>>,
) -> (String, usize) {
    let empty = BTreeSet::new();
    let mut out = match existing {
        None => base_table(),
        Some(_) => String::new(),
    };
    let existing = existing.unwrap_or(&empty);
    let t = format!("ip {TABLE}");
    let mut changes = 0;
    out.push_str(&format!("flush map {t} service-ips\n"));
    let mut wanted = BTreeSet::new();
    let mut elements = Vec::new();
    for f in frontends {
        let svc = service_chain(f);
        wanted.insert(svc.clone());
        let p = f.proto.as_str();
        out.push_str(&format!("add chain {t} {svc}\nflush chain {t} {svc}\n"));
        out.push_str(&format!(
            "add rule {t} {svc} ip daddr {} {p} dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade\n",
            f.vip, f.port
        ));
        changes += 1;
        let mut arms = Vec::new();
        for (i, e) in f.backends.iter().enumerate() {
            let ep = endpoint_chain(f, e);
            arms.push(format!("{i} : goto {ep}"));
            if wanted.insert(ep.clone()) && !existing.contains(&ep) {
                out.push_str(&format!(
                    "add chain {t} {ep}\n\
                     add rule {t} {ep} ip saddr {} jump mark-for-masquerade\n\
                     add rule {t} {ep} meta l4proto {p} counter dnat to {e}\n",
                    e.addr
                ));
                changes += 2;
            }
        }
        if !arms.is_empty() {
            out.push_str(&format!(
                "add rule {t} {svc} numgen random mod {} vmap {{ {} }}\n",
                arms.len(),
                arms.join(", ")
            ));
            changes += 1;
        }
        elements.push(format!("{} . {p} . {} : goto {svc}", f.vip, f.port));
    }
    if !elements.is_empty() {
        // Large maps go in slices: one huge line is slow for nft to parse.
        for chunk in elements.chunks(1000) {
            out.push_str(&format!(
                "add element {t} service-ips {{ {} }}\n",
                chunk.join(", ")
            ));
        }
        changes += elements.len();
    }
    let stale: Vec<_> = existing
        .iter()
        .filter(|c| {
            (c.starts_with("service-") || c.starts_with("endpoint-")) && !wanted.contains(*c)
        })
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
    let rules: Vec<(&str, &Value)> = items(listing)
        .filter_map(|i| i.get("rule"))
        .filter_map(|r| Some((r.get("chain")?.as_str()?, r)))
        .collect();
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
        for (_, r) in rules.iter().filter(|(c, _)| *c == chain) {
            gotos(r, &mut endpoint_chains);
        }
        let endpoints = endpoint_chains
            .into_iter()
            .map(|ep| {
                let mut endpoint = None;
                let mut connections = 0;
                for (_, r) in rules.iter().filter(|(c, _)| *c == ep) {
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
}
