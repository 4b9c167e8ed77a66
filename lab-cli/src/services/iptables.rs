//! kube-proxy's iptables mode, with its own chain and rule layout, so what
//! a learner sees here (`iptables-save -t nat` in a node) is what a real
//! node shows:
//!
//! ```text
//! PREROUTING/OUTPUT -> KUBE-SERVICES
//!   -d VIP -p tcp --dport 80 -j KUBE-SVC-<hash16>         one per service port
//! KUBE-SVC-<hash16>
//!   ! -s CLUSTER_CIDR ... -j KUBE-MARK-MASQ                from outside the cluster
//!   -m statistic --mode random --probability 1/n -j KUBE-SEP-<hash16>, 1/(n-1), ... last always
//! KUBE-SEP-<hash16>
//!   -s BACKEND -j KUBE-MARK-MASQ                           hairpin
//!   -p tcp -j DNAT --to-destination BACKEND:PORT
//! POSTROUTING -> KUBE-POSTROUTING: masquerade packets marked 0x4000
//! filter FORWARD/OUTPUT (new connections) -> KUBE-SERVICES
//!   -d VIP -p tcp --dport 80 -j REJECT                    a service without endpoints
//! ```
//!
//! Chain names are kube-proxy's: `KUBE-SVC-` + the first 16 characters of
//! base32(sha256("NS/NAME:PORT" + "tcp")), `KUBE-SEP-` the same over the
//! endpoint too. A sync rewrites both tables in one `iptables-restore`
//! (see [`plan_node`] for why not `--noflush`), carrying the counters of
//! the DNAT rules that stay: a DNAT rule's packet counter is its backend's
//! connection count (the nat table sees only the first packet of a
//! connection).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{
    FrontendView, ServiceError, chain_view,
    datapath::{Cluster, Node, ServiceDatapath, ServicePlan, Write, merged},
    model::{Endpoint, Frontend, KubeProxyMode, L4, kube_hash},
};
use crate::kernel::{
    datapath::{Part, Plan, ToolRun},
    tool,
};

pub const SERVICES: &str = "KUBE-SERVICES";
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const POSTROUTING: &str = "KUBE-POSTROUTING";

/// `KUBE-SVC-…` of a service port.
pub fn svc_chain(f: &Frontend) -> String {
    let h = kube_hash(&format!("{}{}", f.port_name(), f.proto.as_str()));
    format!("KUBE-SVC-{}", &h[..16])
}

/// `KUBE-SEP-…` of one of its endpoints.
pub fn sep_chain(f: &Frontend, e: &Endpoint) -> String {
    let h = kube_hash(&format!("{}{}{e}", f.port_name(), f.proto.as_str()));
    format!("KUBE-SEP-{}", &h[..16])
}

/// The probability kube-proxy gives endpoint `i` of `n` (the rest of the
/// traffic, split evenly): 1/n, 1/(n-1), ..., the last takes all.
fn probability(i: usize, n: usize) -> Option<String> {
    (i + 1 < n).then(|| format!("{:.10}", 1.0 / (n - i) as f64))
}

/// One node's sync: the whole tables to restore, how many rules differ
/// from before, and those changes as a partial restore would write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// The `iptables-restore --counters` input (both tables, whole).
    pub input: String,
    /// Rules written or deleted, counted as kube-proxy's partial sync
    /// would write them (a changed service's chain is rewritten whole).
    pub changes: usize,
    /// Those changes in `iptables-restore --noflush` form: the chains
    /// declared (new, rewritten or going), the rules added (`-A`) or
    /// deleted (`-D`), the chains deleted (`-X`).
    pub lines: Vec<String>,
}

/// The `iptables-restore --counters` input that makes a node's nat and
/// filter tables hold exactly `frontends` (a full sync, as kube-proxy's
/// periodic one: both tables are rewritten in one commit each), given what
/// `iptables-save -c` printed before (`existing`): every DNAT rule that
/// stays keeps its packet counter, so connection counts survive changes.
/// Also says which rules differ from before (what a partial sync would
/// have had to write), and how many.
///
/// Why not `--noflush` and only the changed chains, as kube-proxy's partial
/// syncs do: with Debian's iptables-nft 1.8.9 a `--noflush` restore costs
/// about the size of the whole table anyway (it loads and checks it all),
/// and far more than a full one: 4,000 services took 7.3 s with
/// `--noflush` and 1.3 s without, 10,000 took over 5 minutes (measured
/// here with `cargo xtask bench services`' ruleset).
pub fn plan_node(frontends: &[Frontend], cluster_cidr: &str, existing: &str) -> NodePlan {
    let before = parse(existing);
    let before_by_chain: BTreeMap<&str, &SavedFrontend> =
        before.iter().map(|b| (b.chain.as_str(), b)).collect();
    let counters: BTreeMap<String, (u64, u64)> = dnat_counters(existing);
    let old_chains = chains(existing);
    // Each reject rule by its service port's name, as saved (no counters).
    let old_rejects: BTreeMap<&str, &str> = existing
        .lines()
        .filter_map(|l| {
            let name = l.split_once(" has no endpoints\"")?.0.rsplit_once('"')?.1;
            let rule = l.split_once("-A ")?.1;
            Some((name, rule))
        })
        .collect();
    let first = !old_chains.contains(SERVICES);
    let mut chains = vec![
        SERVICES.to_owned(),
        MARK_MASQ.to_owned(),
        POSTROUTING.to_owned(),
    ];
    let mut rules = Vec::new();
    for hook in ["PREROUTING", "OUTPUT"] {
        rules.push(format!(
            "-A {hook} -m comment --comment \"kubernetes service portals\" -j {SERVICES}"
        ));
    }
    rules.push(format!(
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j {POSTROUTING}"
    ));
    rules.push(format!("-A {MARK_MASQ} -j MARK --or-mark 0x4000"));
    rules.push(format!(
        "-A {POSTROUTING} -m mark ! --mark 0x4000/0x4000 -j RETURN"
    ));
    rules.push(format!("-A {POSTROUTING} -j MARK --xor-mark 0x4000"));
    rules.push(format!(
        "-A {POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    ));
    // The changes, as a partial restore would write them: the fixed part
    // only on the first sync (uncounted, as before).
    let mut shown = Changes::default();
    if first {
        shown.nat_chains.extend(chains.iter().map(|c| declare(c)));
        shown.nat_rules.extend(rules.iter().cloned());
    }
    let mut changed = 0;
    let mut wanted = BTreeSet::new();
    let mut sep_rules = Vec::new();
    for f in frontends {
        let svc = svc_chain(f);
        let name = f.port_name();
        let (p, vip, port) = (f.proto.as_str(), f.vip, f.port);
        wanted.insert(svc.clone());
        chains.push(svc.clone());
        let n = f.backends.len();
        let seps: Vec<String> = f.backends.iter().map(|e| sep_chain(f, e)).collect();
        let same = before_by_chain
            .get(svc.as_str())
            .is_some_and(|b| b.endpoints.iter().map(|e| &e.chain).eq(seps.iter()));
        let new_chain = !old_chains.contains(&svc);
        let jump = format!(
            "-A {SERVICES} -d {vip}/32 -p {p} -m comment --comment \"{name} cluster IP\" -m {p} --dport {port} -j {svc}"
        );
        let mut svc_rules = vec![format!(
            "-A {svc} ! -s {cluster_cidr} -d {vip}/32 -p {p} -m comment --comment \"{name} cluster IP\" -m {p} --dport {port} -j {MARK_MASQ}"
        )];
        for (i, (e, sep)) in f.backends.iter().zip(&seps).enumerate() {
            let stat = probability(i, n)
                .map(|p| format!(" -m statistic --mode random --probability {p}"))
                .unwrap_or_default();
            svc_rules.push(format!(
                "-A {svc} -m comment --comment \"{name} -> {e}\"{stat} -j {sep}"
            ));
        }
        if !same {
            // The KUBE-SERVICES jump (if new), the mark rule and the jumps.
            changed += 1 + n + usize::from(new_chain);
            shown.nat_chains.push(declare(&svc));
            if new_chain {
                shown.nat_rules.push(jump.clone());
            }
            shown.nat_rules.extend(svc_rules.iter().cloned());
        }
        rules.push(jump);
        rules.extend(svc_rules);
        for (e, sep) in f.backends.iter().zip(&seps) {
            if wanted.insert(sep.clone()) {
                chains.push(sep.clone());
                let mark = format!(
                    "-A {sep} -s {}/32 -m comment --comment \"{name}\" -j {MARK_MASQ}",
                    e.addr
                );
                let dnat = format!(
                    "-A {sep} -p {p} -m comment --comment \"{name}\" -m {p} -j DNAT --to-destination {e}"
                );
                if !old_chains.contains(sep) {
                    changed += 2;
                    shown.nat_chains.push(declare(sep));
                    shown.nat_rules.extend([mark.clone(), dnat.clone()]);
                }
                let (pk, by) = counters.get(sep).copied().unwrap_or((0, 0));
                sep_rules.push(mark);
                sep_rules.push(format!("[{pk}:{by}] {dnat}"));
            }
        }
    }
    // Chains that go: their rules are gone (a partial sync deletes them).
    let mut gone = BTreeSet::new();
    for b in &before {
        if !wanted.contains(&b.chain) {
            changed += 2 + b.endpoints.len();
            let p = b.proto.as_str();
            shown.nat_chains.push(declare(&b.chain));
            shown.nat_rules.push(format!(
                "-D {SERVICES} -d {}/32 -p {p} -m comment --comment \"{} cluster IP\" -m {p} --dport {} -j {}",
                b.vip, b.name, b.port, b.chain
            ));
            shown.nat_gone.push(format!("-X {}", b.chain));
        }
        for e in &b.endpoints {
            if !wanted.contains(&e.chain) && gone.insert(e.chain.as_str()) {
                changed += 2;
                shown.nat_chains.push(declare(&e.chain));
                shown.nat_gone.push(format!("-X {}", e.chain));
            }
        }
    }
    let mut out = String::from("*nat\n");
    for builtin in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        out.push_str(&format!(":{builtin} ACCEPT [0:0]\n"));
    }
    for c in &chains {
        out.push_str(&declare(c));
        out.push('\n');
    }
    for r in rules.iter().chain(&sep_rules) {
        out.push_str(r);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    // kube-proxy rejects new connections to a service without endpoints
    // in the filter table (an ICMP port unreachable: `connection refused`).
    out.push_str("*filter\n");
    for builtin in ["INPUT", "FORWARD", "OUTPUT"] {
        out.push_str(&format!(":{builtin} ACCEPT [0:0]\n"));
    }
    out.push_str(&format!("{}\n", declare(SERVICES)));
    if first {
        shown.filter.push(declare(SERVICES));
    }
    for hook in ["FORWARD", "OUTPUT"] {
        let rule = format!(
            "-A {hook} -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j {SERVICES}"
        );
        out.push_str(&format!("{rule}\n"));
        if first {
            shown.filter.push(rule);
        }
    }
    let mut kept_rejects = BTreeSet::new();
    for f in frontends {
        let p = f.proto.as_str();
        let name = f.port_name();
        let had = old_rejects.get(name.as_str()).copied();
        if f.backends.is_empty() {
            let rule = format!(
                "-A {SERVICES} -d {}/32 -p {p} -m comment --comment \"{name} has no endpoints\" -m {p} --dport {} -j REJECT --reject-with icmp-port-unreachable",
                f.vip, f.port
            );
            out.push_str(&format!("{rule}\n"));
            if had.is_none() {
                changed += 1;
                shown.filter.push(rule);
            }
            kept_rejects.insert(name);
        }
    }
    // Rejects that go: their service has endpoints now, or is gone.
    for (name, rule) in &old_rejects {
        if !kept_rejects.contains(*name) {
            changed += 1;
            shown.filter.push(format!("-D {rule}"));
        }
    }
    out.push_str("COMMIT\n");
    NodePlan {
        input: out,
        changes: changed,
        lines: shown.lines(),
    }
}

/// `:CHAIN - [0:0]`: declares (creates, or flushes) a chain in a restore.
fn declare(chain: &str) -> String {
    format!(":{chain} - [0:0]")
}

/// The changes of a sync, by table and kind, in restore order.
#[derive(Default)]
struct Changes {
    nat_chains: Vec<String>,
    nat_rules: Vec<String>,
    nat_gone: Vec<String>,
    filter: Vec<String>,
}

impl Changes {
    fn lines(self) -> Vec<String> {
        let mut out = Vec::new();
        let nat: Vec<String> = [self.nat_chains, self.nat_rules, self.nat_gone].concat();
        for (table, lines) in [("*nat", nat), ("*filter", self.filter)] {
            if !lines.is_empty() {
                out.push(table.to_owned());
                out.extend(lines);
                out.push("COMMIT".to_owned());
            }
        }
        out
    }
}

/// The packet and byte counters of each KUBE-SEP chain's DNAT rule in
/// `iptables-save -c` output.
fn dnat_counters(save: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in save.lines().filter(|l| l.contains("-j DNAT")) {
        let Some((c, rest)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) else {
            continue;
        };
        let w = words(rest);
        let (Some(chain), Some((p, b))) = (w.get(1), c.split_once(':')) else {
            continue;
        };
        if let (Ok(p), Ok(b)) = (p.parse(), b.parse()) {
            out.insert(chain.clone(), (p, b));
        }
    }
    out
}

/// The chains in `iptables-save` output.
pub fn chains(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// One service port as read back from `iptables-save -c -t nat`.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedFrontend {
    /// `NS/NAME:PORT` from the rule's comment.
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: L4,
    pub chain: String,
    /// Each endpoint, its KUBE-SEP chain, the probability its jump has
    /// (None: the last, always), and its DNAT rule's packet count.
    pub endpoints: Vec<SavedEndpoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SavedEndpoint {
    pub endpoint: Option<Endpoint>,
    pub chain: String,
    pub probability: Option<f64>,
    pub connections: u64,
}

/// Splits a saved rule into words, keeping "quoted strings" whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn option<'a>(w: &'a [String], name: &str) -> Option<&'a str> {
    w.iter()
        .position(|x| x == name)
        .and_then(|i| w.get(i + 1))
        .map(String::as_str)
}

/// Reads kube-proxy's chains back from `iptables-save -c -t nat`.
pub fn parse(save: &str) -> Vec<SavedFrontend> {
    // (counters, words) of every rule, by chain.
    let mut by_chain: BTreeMap<String, Vec<(u64, Vec<String>)>> = BTreeMap::new();
    for line in save.lines() {
        let (packets, rest) = match line.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((c, rest)) => (
                    c.split(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    rest,
                ),
                None => continue,
            },
            None => (0, line),
        };
        let w = words(rest);
        if w.first().map(String::as_str) != Some("-A") {
            continue;
        }
        let Some(chain) = w.get(1).cloned() else {
            continue;
        };
        by_chain.entry(chain).or_default().push((packets, w));
    }
    let mut out = Vec::new();
    for (_, w) in by_chain.get(SERVICES).map(Vec::as_slice).unwrap_or(&[]) {
        let Some(target) = option(w, "-j").filter(|t| t.starts_with("KUBE-SVC-")) else {
            continue;
        };
        let vip = option(w, "-d")
            .and_then(|d| d.trim_end_matches("/32").parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let port = option(w, "--dport")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let proto = option(w, "-p").and_then(L4::parse).unwrap_or(L4::Tcp);
        let name = option(w, "--comment")
            .map(|c| c.trim_end_matches(" cluster IP").to_owned())
            .unwrap_or_default();
        let mut endpoints = Vec::new();
        for (_, sw) in by_chain.get(target).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(sep) = option(sw, "-j").filter(|t| t.starts_with("KUBE-SEP-")) else {
                continue;
            };
            let probability = option(sw, "--probability").and_then(|p| p.parse().ok());
            let mut endpoint = None;
            let mut connections = 0;
            for (packets, ew) in by_chain.get(sep).map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(to) = option(ew, "--to-destination") {
                    endpoint = to.split_once(':').and_then(|(a, p)| {
                        Some(Endpoint {
                            addr: a.parse().ok()?,
                            port: p.parse().ok()?,
                        })
                    });
                    connections = *packets;
                }
            }
            endpoints.push(SavedEndpoint {
                endpoint,
                chain: sep.to_owned(),
                probability,
                connections,
            });
        }
        out.push(SavedFrontend {
            name,
            vip,
            port,
            proto,
            chain: target.to_owned(),
            endpoints,
        });
    }
    out
}

/// What a change is counted as.
pub const UNIT: &str = "changed iptables rules (in a whole-table rewrite)";

/// kube-proxy's iptables mode on a cluster's nodes.
pub struct Iptables {
    mode: KubeProxyMode,
    cluster: Cluster,
}

impl Iptables {
    pub fn new(mode: KubeProxyMode, cluster: Cluster) -> Self {
        Self { mode, cluster }
    }
}

/// One node's part of a plan, from what `iptables-save` printed there
/// (`-c -t nat`, then `-t filter`): the changed rules shown, both tables
/// written.
fn node_part(node: &Node, frontends: &[Frontend], cluster_cidr: &str, save: &str) -> Part<Write> {
    let p = plan_node(frontends, cluster_cidr, save);
    Part {
        target: node.name.clone(),
        lines: p.lines,
        changes: p.changes,
        write: Write::Tool(ToolRun {
            ns: node.ns.handle(),
            program: "iptables-restore",
            args: &["--counters"],
            input: p.input,
        }),
    }
}

impl ServiceDatapath for Iptables {
    fn mode(&self) -> KubeProxyMode {
        self.mode
    }

    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn check(&self) -> Result<(), ServiceError> {
        ["iptables-restore", "iptables-save"]
            .into_iter()
            .try_for_each(|t| {
                which::which(t)
                    .map(drop)
                    .map_err(|_| ServiceError::ToolMissing(t))
            })
    }

    fn unit(&self) -> &'static str {
        UNIT
    }

    fn plan(&self, frontends: &[Frontend]) -> Result<ServicePlan, ServiceError> {
        let mut plan = Plan::new(UNIT);
        for node in &self.cluster.nodes {
            let mut save = tool::run(&node.ns, "iptables-save", &["-c", "-t", "nat"], None)?;
            save.push_str(&tool::run(
                &node.ns,
                "iptables-save",
                &["-t", "filter"],
                None,
            )?);
            plan.push(node_part(
                node,
                frontends,
                &self.cluster.cluster_cidr,
                &save,
            ));
        }
        Ok(plan)
    }

    fn read(&self) -> Result<Vec<FrontendView>, ServiceError> {
        let mut per_node = Vec::new();
        for node in &self.cluster.nodes {
            let save = tool::run(&node.ns, "iptables-save", &["-c", "-t", "nat"], None)?;
            per_node.push(
                parse(&save)
                    .into_iter()
                    .map(|f| {
                        let service = f.name.rsplit_once(':').map(|(n, _)| n.to_owned());
                        let source = self.mode.as_str();
                        chain_view(source, service, (f.vip, f.port, f.proto), f.chain, {
                            f.endpoints.into_iter().map(|e| {
                                let p = Some(e.probability.unwrap_or(1.0));
                                (e.endpoint, e.connections, p, e.chain)
                            })
                        })
                    })
                    .collect(),
            );
        }
        Ok(merged(per_node))
    }

    /// The mode owns the nat and filter tables whole (every sync rewrites
    /// them): they are emptied.
    fn teardown(&self) -> Result<(), ServiceError> {
        let empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     :POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n\
                     :FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        for node in &self.cluster.nodes {
            tool::run(&node.ns, "iptables-restore", &[], Some(empty))?;
        }
        Ok(())
    }

    fn netfilter(&self) -> bool {
        true
    }

    fn holder(&self) -> &'static str {
        "iptables chains"
    }

    fn inspect(&self, netns: &str) -> Option<String> {
        Some(format!(
            "ip netns exec {netns} iptables-save -t nat | grep KUBE"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(backends: &[(u8, u8)]) -> Frontend {
        Frontend {
            namespace: "ns1".into(),
            service: "svc1".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: L4::Tcp,
            backends: backends
                .iter()
                .map(|&(n, h)| Endpoint {
                    addr: Ipv4Addr::new(10, 244, n, h),
                    port: 8080,
                })
                .collect(),
        }
    }

    #[test]
    fn probabilities_split_the_rest_evenly_as_kube_proxy_does() {
        assert_eq!(probability(0, 3).as_deref(), Some("0.3333333333"));
        assert_eq!(probability(1, 3).as_deref(), Some("0.5000000000"));
        assert_eq!(probability(2, 3), None);
    }

    #[test]
    fn a_sync_rewrites_the_tables_and_keeps_the_counters_of_endpoints_that_stay() {
        let f = web(&[(1, 3), (2, 2), (2, 3)]);
        let NodePlan {
            input: first,
            changes: changed,
            ..
        } = plan_node(std::slice::from_ref(&f), "10.244.0.0/16", "");
        assert!(first.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ));
        assert!(first.contains("--probability 0.3333333333 -j KUBE-SEP-"));
        assert!(
            first.contains("[0:0] -A KUBE-SEP-")
                && first.contains("-j DNAT --to-destination 10.244.1.3:8080")
        );
        // KUBE-SERVICES jump, mark rule, 3 jumps, 3 × 2 endpoint rules.
        assert_eq!(changed, 11);
        // What iptables-save -c prints after some traffic.
        let kept = sep_chain(&f, &f.backends[0]);
        let saved = format!(
            "{first}\n[42:2520] -A {kept} -p tcp -m comment --comment \"ns1/svc1:tcp\" -m tcp -j DNAT --to-destination 10.244.1.3:8080\n"
        )
        .replace("[0:0] -A", "-A");
        let g = web(&[(1, 3), (2, 3)]);
        let NodePlan {
            input: second,
            changes: changed,
            ..
        } = plan_node(std::slice::from_ref(&g), "10.244.0.0/16", &saved);
        assert!(
            second.contains(&format!("[42:2520] -A {kept} -p tcp")),
            "{second}"
        );
        assert!(!second.contains(&sep_chain(&f, &f.backends[1])), "{second}");
        // The service's jumps (mark + 2) and the deleted endpoint's 2 rules.
        assert_eq!(changed, 5);
    }

    #[test]
    fn saved_chains_read_back_with_counters() {
        let f = web(&[(1, 3), (2, 2)]);
        let sep = [sep_chain(&f, &f.backends[0]), sep_chain(&f, &f.backends[1])];
        let svc = svc_chain(&f);
        let save = format!(
            "*nat\n:KUBE-SERVICES - [0:0]\n\
             [7:420] -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"ns1/svc1:tcp cluster IP\" -m tcp --dport 80 -j {svc}\n\
             [3:180] -A {svc} -m comment --comment \"ns1/svc1:tcp -> 10.244.1.3:8080\" -m statistic --mode random --probability 0.50000000000 -j {}\n\
             [4:240] -A {svc} -m comment --comment \"ns1/svc1:tcp -> 10.244.2.2:8080\" -j {}\n\
             [0:0] -A {} -s 10.244.1.3/32 -m comment --comment \"ns1/svc1:tcp\" -j KUBE-MARK-MASQ\n\
             [3:180] -A {} -p tcp -m comment --comment \"ns1/svc1:tcp\" -m tcp -j DNAT --to-destination 10.244.1.3:8080\n\
             [4:240] -A {} -p tcp -m comment --comment \"ns1/svc1:tcp\" -m tcp -j DNAT --to-destination 10.244.2.2:8080\n",
            sep[0], sep[1], sep[0], sep[0], sep[1]
        );
        let got = parse(&save);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "ns1/svc1:tcp");
        assert_eq!((got[0].vip, got[0].port), (f.vip, 80));
        let conns: Vec<_> = got[0].endpoints.iter().map(|e| e.connections).collect();
        assert_eq!(conns, [3, 4]);
        assert_eq!(got[0].endpoints[0].probability, Some(0.5));
        assert_eq!(got[0].endpoints[1].endpoint, Some(f.backends[1].clone()));
    }

    #[test]
    fn adding_a_fourth_backend_plans_the_service_chain_and_one_endpoint_chain() {
        let f = web(&[(1, 3), (2, 2), (2, 3)]);
        // What iptables-save -c -t nat, then -t filter, prints after it.
        let saved = plan_node(std::slice::from_ref(&f), "10.244.0.0/16", "").input;
        let g = web(&[(1, 3), (2, 2), (2, 3), (1, 4)]);
        let node = Node {
            name: "lab/node1".into(),
            ns: crate::kernel::netns::NetNs::at(
                "lab-node1",
                std::path::Path::new("/run/netns/lab-node1"),
            ),
            veths: Vec::new(),
        };
        let part = node_part(&node, std::slice::from_ref(&g), "10.244.0.0/16", &saved);
        let svc = svc_chain(&g);
        let sep: Vec<String> = g.backends.iter().map(|e| sep_chain(&g, e)).collect();
        let c = "--comment \"ns1/svc1:tcp";
        // As kube-proxy's partial sync writes it: the service chain whole
        // (its probabilities all change), the new endpoint's chain.
        assert_eq!(
            part.lines,
            [
                "*nat".to_owned(),
                format!(":{svc} - [0:0]"),
                format!(":{} - [0:0]", sep[3]),
                format!(
                    "-A {svc} ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment {c} cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ"
                ),
                format!(
                    "-A {svc} -m comment {c} -> 10.244.1.3:8080\" -m statistic --mode random --probability 0.2500000000 -j {}",
                    sep[0]
                ),
                format!(
                    "-A {svc} -m comment {c} -> 10.244.2.2:8080\" -m statistic --mode random --probability 0.3333333333 -j {}",
                    sep[1]
                ),
                format!(
                    "-A {svc} -m comment {c} -> 10.244.2.3:8080\" -m statistic --mode random --probability 0.5000000000 -j {}",
                    sep[2]
                ),
                format!("-A {svc} -m comment {c} -> 10.244.1.4:8080\" -j {}", sep[3]),
                format!(
                    "-A {} -s 10.244.1.4/32 -m comment {c}\" -j KUBE-MARK-MASQ",
                    sep[3]
                ),
                format!(
                    "-A {} -p tcp -m comment {c}\" -m tcp -j DNAT --to-destination 10.244.1.4:8080",
                    sep[3]
                ),
                "COMMIT".to_owned(),
            ]
        );
        // The mark rule, 4 jumps, the endpoint's 2 rules.
        assert_eq!(part.changes, 7);
        // What is written is both tables, whole.
        let Write::Tool(run) = &part.write else {
            panic!("iptables writes with iptables-restore: {:?}", part.write)
        };
        assert_eq!(
            (run.program, run.args),
            ("iptables-restore", &["--counters"][..])
        );
        assert!(run.input.starts_with("*nat\n") && run.input.ends_with("COMMIT\n"));
        assert_eq!(run.input.matches(" -j DNAT ").count(), 4);

        // Then without endpoints: the jumps and endpoint chains go, a
        // reject comes; then the service goes, its reject too.
        let saved = plan_node(std::slice::from_ref(&g), "10.244.0.0/16", "").input;
        let none = web(&[]);
        let p = plan_node(std::slice::from_ref(&none), "10.244.0.0/16", &saved);
        assert_eq!(
            p.lines
                .iter()
                .filter(|l| l.starts_with("-X KUBE-SEP-"))
                .count(),
            4
        );
        assert!(
            p.lines
                .iter()
                .any(|l| l.starts_with("-A KUBE-SERVICES") && l.ends_with("icmp-port-unreachable")),
            "{:?}",
            p.lines
        );
        // The mark rule, 4 × 2 endpoint rules, the reject.
        assert_eq!(p.changes, 10);
        let gone = plan_node(&[], "10.244.0.0/16", &p.input);
        assert_eq!(
            gone.lines,
            [
                "*nat".to_owned(),
                format!(":{svc} - [0:0]"),
                format!(
                    "-D KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment {c} cluster IP\" -m tcp --dport 80 -j {svc}"
                ),
                format!("-X {svc}"),
                "COMMIT".to_owned(),
                "*filter".to_owned(),
                format!(
                    "-D KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment {c} has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"
                ),
                "COMMIT".to_owned(),
            ]
        );
        // Its jump, its mark rule; the reject.
        assert_eq!(gone.changes, 3);
    }
}
