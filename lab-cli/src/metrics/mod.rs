//! `labctl metrics`: what labctl knows, as Prometheus metrics.
//!
//! Every value is read from the kernel at scrape time, never accumulated
//! from an event stream: drops from the drop counter's per-(netns, reason)
//! map, conntrack from ctnetlink in each namespace, NAT and per-pod
//! masquerade from the eBPF masquerading's pinned maps, policy verdicts
//! from each `--policy-mode` lab's nft rule counters or policy maps (in a
//! thread of its own: [`policy`]). The exposition is
//! encoded by the prometheus crate in the classic text format (0.0.4), which
//! Prometheus, `promtool check metrics` and every scraper read.
//!
//! Label cardinality is bounded: `reason` by the kernel's drop reasons
//! (about 120) and the two policy reasons (a policy datapath's drops,
//! named by the mark it set: `POLICY_DENIED`, `POLICY_DENY`), `netns`/`pod` by the namespaces scraped (at most
//! [`MAX_NAMESPACES`], the rest counted in `labctl_scrape_netns_skipped`)
//! and by the drop counter's map (4,096 (netns, reason) pairs, overflow
//! counted in `labctl_drops_uncounted_total`), per-pod masquerade by the
//! NAT's pod slots, policy verdicts by the labs' nodes and policies (a
//! series per node, policy, direction and verdict). Conntrack statistics
//! are summed over CPUs (one series per statistic and namespace;
//! `labctl conntrack stats` shows each CPU).

pub mod policy;
pub mod serve;

use std::collections::BTreeMap;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use thiserror::Error;

use crate::{
    conntrack::netlink::{CPU_STATS, Ctnetlink},
    drops::counter::DropCounter,
    ebpf::{self, error::ProgramSetupError},
    kernel::{
        names::Names,
        netns::{NetNs, Selection},
    },
    lab::names as lab_names,
    masq,
};

/// The most namespaces one scrape reads conntrack and NAT from.
pub const MAX_NAMESPACES: usize = 256;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot start the drop counter: {0}")]
    DropCounter(#[source] ProgramSetupError),
    #[error("cannot read the drop counter: {0}")]
    Read(#[source] ProgramSetupError),
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] prometheus::Error),
}

/// The exporter: the drop counter it attached, and how to name things.
pub struct Exporter {
    counter: DropCounter,
    names: Names,
    namespaces: Selection,
}

/// A family registered in `registry`.
fn counters(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let family = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(family.clone()))?;
    Ok(family)
}

fn gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let family = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(family.clone()))?;
    Ok(family)
}

impl Exporter {
    /// Attaches the drop counter (counting from now on, in every namespace).
    pub fn start(namespaces: Selection) -> Result<Self, MetricsError> {
        Ok(Self {
            counter: DropCounter::attach(None).map_err(MetricsError::DropCounter)?,
            names: Names::with_aliases(Some(lab_names::member_names)),
            namespaces,
        })
    }

    /// One scrape: every metric, in the text format.
    pub fn scrape(&mut self) -> Result<String, MetricsError> {
        let registry = Registry::new();
        self.drops(&registry)?;
        let (scraped, skipped) = self.namespaces();
        let per_netns = PerNetns::register(&registry)?;
        let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
        for ns in &scraped {
            let Ok(ino) = ns.inode() else {
                continue;
            };
            let name = self.names.netns(ino);
            if let Err(source) = per_netns.conntrack(ns, &name) {
                tracing::debug!("conntrack metrics of {name}: {source}");
                *errors.entry("conntrack").or_default() += 1;
            }
            if ebpf::nat::present(ino)
                && let Err(source) = per_netns.nat(ino, &name)
            {
                tracing::debug!("NAT metrics of {name}: {source}");
                *errors.entry("nat").or_default() += 1;
            }
        }
        errors.insert("policy", policy_verdicts(&registry)?);
        let skipped_gauge = IntGauge::new(
            "labctl_scrape_netns_skipped",
            format!("Namespaces not read in this scrape (more than {MAX_NAMESPACES})"),
        )?;
        skipped_gauge.set(skipped as i64);
        registry.register(Box::new(skipped_gauge))?;
        let failed = gauges(
            &registry,
            "labctl_scrape_errors",
            "Namespaces (labs, for policy) whose values could not be read in this scrape, by source",
            &["source"],
        )?;
        for source in ["conntrack", "nat", "policy"] {
            failed
                .with_label_values(&[source])
                .set(errors.get(source).copied().unwrap_or(0) as i64);
        }
        Ok(TextEncoder::new().encode_to_string(&registry.gather())?)
    }

    fn drops(&mut self, registry: &Registry) -> Result<(), MetricsError> {
        let drops = counters(
            registry,
            "labctl_drops_total",
            "Packets the kernel dropped (skb:kfree_skb with a reason), by namespace and reason",
            &["netns", "pod", "reason"],
        )?;
        let policy_drops = counters(
            registry,
            "labctl_policy_drops_total",
            "Packets a policy datapath dropped (marked before the drop), by namespace, reason (POLICY_DENIED: default deny, POLICY_DENY: a deny rule) and the pod's direction judged",
            &["netns", "pod", "reason", "direction"],
        )?;
        for (key, n) in self.counter.counts().map_err(MetricsError::Read)? {
            let ino = u64::from(key.netns_ino);
            let pod = self
                .names
                .pod(ino)
                .map(|p| p.to_string())
                .unwrap_or_default();
            let netns = self.names.netns(ino);
            let reason = self.counter.name(&key);
            drops.with_label_values(&[&netns, &pod, &reason]).inc_by(n);
            if let Some(p) = crate::drops::reasons::PolicyDrop::from_mark(key.policy) {
                policy_drops
                    .with_label_values(&[&netns, &pod, p.name(), p.direction()])
                    .inc_by(n);
            }
        }
        let uncounted = IntCounter::new(
            "labctl_drops_uncounted_total",
            "Drops the counter could not count because its map was full (4,096 namespace-reason pairs)",
        )?;
        uncounted.inc_by(self.counter.uncounted().map_err(MetricsError::Read)?);
        registry.register(Box::new(uncounted))?;
        Ok(())
    }

    /// The namespaces of this scrape (at most MAX_NAMESPACES, by name) and
    /// how many were left out.
    fn namespaces(&self) -> (Vec<NetNs>, usize) {
        let mut all = self.namespaces.resolve();
        let skipped = all.len().saturating_sub(MAX_NAMESPACES);
        all.truncate(MAX_NAMESPACES);
        (all, skipped)
    }
}

/// The policy verdict counters of every `--policy-mode` lab (see
/// [`policy`]); returns how many labs could not be read.
fn policy_verdicts(registry: &Registry) -> Result<u64, prometheus::Error> {
    let labels = &["lab", "node", "policy", "direction", "verdict", "reason"];
    let packets = counters(
        registry,
        "labctl_policy_verdicts_total",
        "Packets a lab's policy datapath decided, by node, policy, direction and verdict (netfilter: a connection's first packet; ebpf: every packet of its original direction)",
        labels,
    )?;
    let bytes = counters(
        registry,
        "labctl_policy_verdict_bytes_total",
        "Bytes of the packets counted in labctl_policy_verdicts_total",
        labels,
    )?;
    let reading = policy::reading();
    for (lab, counts) in &reading.labs {
        for c in counts {
            let node = c.node.strip_prefix(&format!("{lab}/")).unwrap_or(&c.node);
            let values = [
                lab.as_str(),
                node,
                c.policy.as_str(),
                c.direction.as_str(),
                c.verdict.verdict(),
                c.verdict.reason(),
            ];
            packets.with_label_values(&values).inc_by(c.packets);
            bytes.with_label_values(&values).inc_by(c.bytes);
        }
    }
    Ok(reading.failed)
}

/// The per-namespace families of one scrape.
struct PerNetns {
    ct_entries: IntGaugeVec,
    ct_limit: IntGaugeVec,
    ct_stats: Vec<(&'static str, IntCounterVec)>,
    nat_entries: IntGaugeVec,
    nat_limit: IntGaugeVec,
    nat_events: IntCounterVec,
    masq_connections: IntCounterVec,
    masq_packets: IntCounterVec,
    masq_bytes: IntCounterVec,
}

type Failure = Box<dyn std::error::Error>;

impl PerNetns {
    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let netns = &["netns"];
        let pod = &["netns", "pod"];
        let pod_dir = &["netns", "pod", "direction"];
        Ok(Self {
            ct_entries: gauges(
                r,
                "labctl_conntrack_entries",
                "Entries in the namespace's conntrack table",
                netns,
            )?,
            ct_limit: gauges(
                r,
                "labctl_conntrack_entries_limit",
                "The conntrack table's maximum (nf_conntrack_max)",
                netns,
            )?,
            ct_stats: CPU_STATS
                .iter()
                .map(|(_, stat)| {
                    let name = format!("labctl_conntrack_{stat}_total");
                    let help =
                        format!("conntrack's {stat} statistic, summed over CPUs (conntrack -S)");
                    counters(r, &name, &help, netns).map(|c| (*stat, c))
                })
                .collect::<Result<_, _>>()?,
            nat_entries: gauges(
                r,
                "labctl_nat_entries",
                "Mappings in the eBPF masquerading's NAT table",
                netns,
            )?,
            nat_limit: gauges(
                r,
                "labctl_nat_entries_limit",
                "Capacity of the eBPF masquerading's NAT table",
                netns,
            )?,
            nat_events: counters(
                r,
                "labctl_nat_events_total",
                "eBPF NAT events: allocated, collision, alloc_failed (a packet dropped: no free port), table_full (a new flow's packet dropped: the table full of live mappings), reclaimed (mappings freed by sweeps of the full table), expired",
                &["netns", "event"],
            )?,
            masq_connections: counters(
                r,
                "labctl_masquerade_connections_total",
                "Connections masqueraded per pod by the eBPF masquerading",
                pod,
            )?,
            masq_packets: counters(
                r,
                "labctl_masquerade_packets_total",
                "Packets masqueraded per pod and direction",
                pod_dir,
            )?,
            masq_bytes: counters(
                r,
                "labctl_masquerade_bytes_total",
                "Bytes masqueraded per pod and direction",
                pod_dir,
            )?,
        })
    }

    fn conntrack(&self, ns: &NetNs, name: &str) -> Result<(), Failure> {
        let mut ct = Ctnetlink::open_in(Some(ns))?;
        let size = ct.table_size()?;
        self.ct_entries
            .with_label_values(&[name])
            .set(i64::from(size.entries));
        self.ct_limit
            .with_label_values(&[name])
            .set(i64::from(size.max));
        let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
        for cpu in ct.cpu_stats()? {
            for (stat, n) in cpu.counters {
                *sums.entry(stat).or_default() += u64::from(n);
            }
        }
        for (stat, family) in &self.ct_stats {
            family
                .with_label_values(&[name])
                .inc_by(sums.get(stat).copied().unwrap_or(0));
        }
        Ok(())
    }

    fn nat(&self, ino: u64, name: &str) -> Result<(), Failure> {
        let table = masq::nat::table(ino)?;
        self.nat_entries
            .with_label_values(&[name])
            .set(table.used as i64);
        self.nat_limit
            .with_label_values(&[name])
            .set(table.capacity as i64);
        for (event, n) in [
            ("allocated", table.allocated),
            ("collision", table.collisions),
            ("alloc_failed", table.alloc_failed),
            ("table_full", table.table_full),
            ("reclaimed", table.reclaimed),
            ("expired", table.expired),
        ] {
            self.nat_events.with_label_values(&[name, event]).inc_by(n);
        }
        // The names known now: a scrape never waits for the runtime.
        let pods = lab_names::pods(lab_names::Want::Known).by_addr(ino);
        for row in masq::nat::pod_rows(ino)? {
            let pod = pods
                .get(&row.pod)
                .map_or_else(|| row.pod.to_string(), |p| p.to_string());
            self.masq_connections
                .with_label_values(&[name, &pod])
                .inc_by(row.connections);
            for (direction, packets, bytes) in [
                ("egress", row.packets_out, row.bytes_out),
                ("ingress", row.packets_in, row.bytes_in),
            ] {
                let labels = [name, pod.as_str(), direction];
                self.masq_packets.with_label_values(&labels).inc_by(packets);
                self.masq_bytes.with_label_values(&labels).inc_by(bytes);
            }
        }
        Ok(())
    }
}
