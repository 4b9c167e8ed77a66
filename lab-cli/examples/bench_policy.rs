//! `cargo xtask bench policy`: network policy two ways, measured in one
//! run (about 2 to 3 minutes) on two `starwars` labs, one per
//! `--policy-mode`, each enforcing the same NetworkPolicy (deathstar
//! takes TCP and UDP 80 from the empire):
//!
//! 1. the time to add one policy and one pod (a relabel: into an identity
//!    that exists, then into a new one the policy selects), plan and apply
//!    as `labctl policy apply` / `lab pod label` do them, with what each
//!    wrote in the mode's own units;
//! 2. with 10 / 1,000 / 10,000 identities and 10 / 100 / 1,000 rules in
//!    front of the deciding one (eBPF: extra ipcache entries on the node
//!    and extra entries in deathstar-1's policy map; netfilter: a set of as
//!    many addresses and as many rules matching it at the top of
//!    deathstar-1's ingress chain, none matching the client), per round:
//!    connect latency tiefighter → deathstar-1:80 through both modes
//!    (same node: one ingress judgement), and the eBPF ingress program's
//!    per-packet cost in traffic (a UDP flood) next to a program that does
//!    nothing on the same veth (the floor);
//! 3. the eBPF program alone under BPF_PROG_TEST_RUN for every
//!    identities × rules pair.
//!
//! Every figure is a median with its interval over ROUNDS rounds; a
//! difference is called only when every round's ratio is beyond ×2
//! ([`common::VERDICT`]). The extra entries are written straight into the
//! node (as `bench masq` does), after the add timings: a plan would take
//! them out again, since they are no policy's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark fails loudly at the first surprise"
)]

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

mod common;

use anyhow::{Context as _, bail};
use common::{Spread, crr, echo_server};
use ipnet::Ipv4Net;
use lab_cli::{
    ebpf::{
        floor::{self, NoopTc},
        pins,
        policy::{PolicyMaps, Side, TestBench},
    },
    kernel::netns::NetNs,
    lab::{
        Lab,
        plan::LabOptions,
        policy::{self as lab_policy, LabelChange, Target},
    },
    policy::{
        PolicyMode,
        bpf::{encode, ipcache_key},
        maps::MapEntry,
        model::{Direction, Protocol},
        nft::TABLE,
        yaml,
    },
};
use lab_common::policy::{EP_INGRESS_DEFAULT_DENY, EndpointInfo, PolicyEntry, RemoteEndpointInfo};

const ROUNDS: usize = 5;
/// One connect-latency measurement.
const RUN: Duration = Duration::from_millis(1500);
/// Datagrams per flood.
const FLOOD: u32 = 20_000;
/// Runs per BPF_PROG_TEST_RUN measurement.
const REPEAT: u32 = 200_000;
const IDENTITIES: [u32; 3] = [10, 1_000, 10_000];
const RULES: [u32; 3] = [10, 100, 1_000];
/// The traffic sizes: (identities, rules).
const SIZES: [(u32, u32); 3] = [(10, 10), (1_000, 100), (10_000, 1_000)];
/// The first extra identity (above the lab's, below CIDR identities).
const EXTRA_ID: u32 = 100_000;
/// The first port of the extra rules.
const EXTRA_PORT: u32 = 10_000;

const BASE: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deathstar-empire}
spec:
  podSelector: {matchLabels: {class: deathstar}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {org: empire}}
    ports:
    - {protocol: TCP, port: 80}
    - {protocol: UDP, port: 80}
";

/// The policy added (and deleted again) in each round of the add timing.
const ADDED: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-from-default, namespace: kube-system}
spec:
  podSelector: {matchLabels: {k8s-app: kube-dns}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: default}}
    ports:
    - {protocol: UDP, port: 53}
";

fn main() -> anyhow::Result<()> {
    // Run-time statistics only while this fd is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    // LABCTL_BENCH_ONLY=test-run: the program alone, no labs.
    if std::env::var("LABCTL_BENCH_ONLY").is_ok_and(|v| v == "test-run") {
        return test_runs();
    }
    let pid = std::process::id() % 10_000;
    let mut labs: Vec<Lab> = Vec::new();
    for (tag, mode) in [("nf", PolicyMode::Netfilter), ("eb", PolicyMode::Ebpf)] {
        let up = Lab::up(
            Some(&format!("bp{pid}-{tag}")),
            "starwars",
            LabOptions {
                policy_mode: Some(mode),
                ..LabOptions::default()
            },
        );
        match up {
            Ok(l) => labs.push(l),
            Err(e) => {
                for l in labs {
                    l.down()?;
                }
                return Err(e.into());
            }
        }
    }
    let result = run(&labs[0], &labs[1]);
    let mut downs = Vec::new();
    for l in labs {
        downs.push(l.down());
    }
    for d in downs {
        d?;
    }
    result
}

fn policies(name: &str, text: &str) -> anyhow::Result<Vec<lab_cli::policy::Policy>> {
    Ok(yaml::parse(name, text)?)
}

fn run(nf: &Lab, eb: &Lab) -> anyhow::Result<()> {
    for lab in [nf, eb] {
        lab_policy::apply(lab.name(), policies("base.yaml", BASE)?, false)?;
    }
    add_timings(nf, eb)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    let ds1 = nf.plan.find_pod("deathstar-1").context("deathstar-1")?;
    for lab in [nf, eb] {
        lab.netns("tiefighter")?
            .run(|| lab_cli::kernel::sysctl::write(&["net", "ipv4", "tcp_tw_reuse"], "1"))??;
        servers.push(echo_server(
            &lab.netns("deathstar-1")?,
            ds1.addr,
            80,
            stop.clone(),
        ));
    }
    let result = traffic(nf, eb).and_then(|()| test_runs());
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().ok();
    }
    result
}

/// Times `f` (ms) and the changes of the plan it returns.
fn timed(f: impl FnOnce() -> anyhow::Result<lab_policy::Enforced>) -> anyhow::Result<(f64, usize)> {
    let t = Instant::now();
    let enforced = f()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    Ok((ms, enforced.plan.map_or(0, |p| p.changes)))
}

/// Adding one policy, and a pod appearing (a relabel), in each mode.
fn add_timings(nf: &Lab, eb: &Lab) -> anyhow::Result<()> {
    println!(
        "adding, plan + apply as `policy apply` and `lab pod label` do them, ms (median of {ROUNDS}, min–max) and what was written"
    );
    let xwing = ["org=alliance", "class=xwing"];
    for (mode, lab) in [("netfilter", nf), ("ebpf", eb)] {
        let unit = lab_policy::enforce(lab, true)?
            .plan
            .map(|p| p.unit)
            .unwrap_or_default();
        let (mut policy, mut same, mut new) = (vec![], vec![], vec![]);
        let mut written = (0, 0, 0);
        for _ in 0..ROUNDS {
            let (ms, n) = timed(|| {
                Ok(lab_policy::apply(lab.name(), policies("added.yaml", ADDED)?, false)?.1)
            })?;
            policy.push(ms);
            written.0 = n;
            lab_policy::delete(
                lab.name(),
                &[Target::Name("kube-system/dns-from-default".to_owned())],
            )?;
            let label = |pairs: &[&str]| -> anyhow::Result<lab_policy::Enforced> {
                let changes = pairs
                    .iter()
                    .map(|p| LabelChange::parse(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(lab_policy::relabel(lab.name(), "xwing", &changes, true)?.enforced)
            };
            // xwing takes tiefighter's labels: an identity that exists.
            let (ms, n) = timed(|| label(&["org=empire", "class=tiefighter"]))?;
            same.push(ms);
            written.1 = n;
            label(&xwing)?;
            // xwing joins the empire as itself: a new identity the
            // deathstar policy selects.
            let (ms, n) = timed(|| label(&["org=empire", "class=xwing"]))?;
            new.push(ms);
            written.2 = n;
            label(&xwing)?;
        }
        for (what, v, n) in [
            ("one policy (coredns ingress)", &policy, written.0),
            ("a pod into an existing identity", &same, written.1),
            ("a pod into a new identity", &new, written.2),
        ] {
            println!(
                "  {mode:9} {what:32} {} ms, {n} {unit}",
                Spread::of(v).show(1)
            );
        }
    }
    Ok(())
}

fn ne(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// The address of extra identity `i`: 10.200.0.0/16 upwards.
fn extra_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i)
}

fn remote(id: u32) -> RemoteEndpointInfo {
    RemoteEndpointInfo {
        sec_identity: id,
        tunnel_endpoint: 0,
        pad: 0,
        key: 0,
        flags: 0,
    }
}

/// Extra identities `from..to` in `maps`' ipcache.
fn extra_identities(maps: &mut PolicyMaps, from: u32, to: u32) -> anyhow::Result<()> {
    for i in from..to {
        let (prefix, key) = ipcache_key(Ipv4Net::from(extra_addr(i)));
        maps.set_ipcache(prefix, key, remote(EXTRA_ID + i))?;
    }
    Ok(())
}

/// Extra rules `from..to` of endpoint `ep` (ingress, TCP, one port each,
/// from the extra identities): none decides the measured traffic.
fn extra_rules(
    maps: &mut PolicyMaps,
    ep: u32,
    identities: u32,
    from: u32,
    to: u32,
) -> anyhow::Result<()> {
    let set: BTreeSet<MapEntry> = (from..to)
        .map(|j| MapEntry {
            direction: Direction::Ingress,
            identity: EXTRA_ID + j % identities,
            protocol: Protocol::Tcp,
            port: Some(u16::try_from(EXTRA_PORT + j).unwrap_or(u16::MAX)),
            end_port: None,
            deny: false,
        })
        .collect();
    for ((prefix, key), flags) in encode(ep, &set) {
        maps.set_policy(
            prefix,
            key,
            PolicyEntry {
                flags,
                ..PolicyEntry::default()
            },
        )?;
    }
    Ok(())
}

/// `nft -f -` in `ns`.
fn nft(ns: &NetNs, script: &str) -> anyhow::Result<()> {
    ns.run(|| -> anyhow::Result<()> {
        let mut c = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        c.stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    })?
}

/// Netfilter's extras on `node`: addresses `from..to` in a set, rules
/// `rfrom..rto` matching it at the top of `chain`.
fn nft_extras(
    node: &NetNs,
    chain: &str,
    (from, to): (u32, u32),
    (rfrom, rto): (u32, u32),
) -> anyhow::Result<()> {
    let mut s = format!("add set ip {TABLE} bench-peers {{ type ipv4_addr; }}\n");
    let addrs: Vec<String> = (from..to).map(|i| extra_addr(i).to_string()).collect();
    for chunk in addrs.chunks(1000) {
        s.push_str(&format!(
            "add element ip {TABLE} bench-peers {{ {} }}\n",
            chunk.join(", ")
        ));
    }
    for j in rfrom..rto {
        s.push_str(&format!(
            "insert rule ip {TABLE} {chain} ip saddr @bench-peers tcp dport {} counter return\n",
            EXTRA_PORT + j
        ));
    }
    nft(node, &s)
}

/// FLOOD datagrams from `from` to `to` (a socket bound there takes them;
/// a full receive queue drops: the programs still ran).
fn flood(from: &NetNs, to: SocketAddrV4) -> anyhow::Result<()> {
    let tx = from.run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))??;
    for _ in 0..FLOOD {
        tx.send_to(&[1; 32], to).ok();
    }
    Ok(())
}

fn traffic(nf: &Lab, eb: &Lab) -> anyhow::Result<()> {
    let ds1 = eb.plan.find_pod("deathstar-1").context("deathstar-1")?;
    let node_name = &eb.plan.nodes[ds1.node].name;
    let (nf_node, eb_node) = (nf.netns(node_name)?, eb.netns(node_name)?);
    let (nf_tf, eb_tf) = (nf.netns("tiefighter")?, eb.netns("tiefighter")?);
    let to = SocketAddrV4::new(ds1.addr, 80);
    let _sink = eb.netns("deathstar-1")?.run(|| UdpSocket::bind(to))??;
    let mut maps = PolicyMaps::open(&pins::policy(eb_node.inode()?))?;
    let ep = maps
        .endpoint_rows()?
        .into_iter()
        .find(|(_, e)| e.ip4 == ne(ds1.addr))
        .map(|(_, e)| e.id)
        .context("deathstar-1 is no endpoint of its node")?;
    let chain =
        lab_cli::policy::nft::chain_name(Direction::Ingress, &format!("{}/deathstar-1", nf.name()));
    let floor = NoopTc::attach(&eb_node, &ds1.host_veth)?;
    println!(
        "\ntiefighter → deathstar-1:80 (same node), {ROUNDS} rounds: connect µs median (p99) per mode; eBPF ingress program per packet in traffic ({FLOOD} UDP datagrams per round; run-time statistics) against the floor (a program doing nothing on the same veth)"
    );
    let (mut ids_done, mut rules_done) = (0, 0);
    let mut medians: Vec<(f64, f64)> = Vec::new();
    for (ids, rules) in SIZES {
        extra_identities(&mut maps, ids_done, ids)?;
        extra_rules(&mut maps, ep, ids, rules_done, rules)?;
        nft_extras(&nf_node, &chain, (ids_done, ids), (rules_done, rules))?;
        (ids_done, rules_done) = (ids, rules);
        let (mut nf_us, mut eb_us, mut nf_p99, mut eb_p99, mut ratio) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut prog, mut fl, mut x) = (vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let n = crr(&nf_tf, to, RUN)?;
            let e = crr(&eb_tf, to, RUN)?;
            let (nm, em) = (n.percentile(0.5), e.percentile(0.5));
            nf_us.push(nm);
            eb_us.push(em);
            nf_p99.push(n.percentile(0.99));
            eb_p99.push(e.percentile(0.99));
            ratio.push(nm / em);
            let [p, f] = common::per_run(["policy_to_pod", floor::PROGRAM], || flood(&eb_tf, to))?;
            prog.push(p);
            fl.push(f);
            x.push(p / f);
        }
        medians.push((Spread::of(&nf_us).median, Spread::of(&eb_us).median));
        let r = Spread::of(&ratio);
        let verdict = match r.called() {
            Some(true) => format!("**eBPF connects ×{} faster**", r.show(2)),
            Some(false) => format!(
                "**netfilter connects ×{} faster**",
                Spread::of(&ratio.iter().map(|v| 1.0 / v).collect::<Vec<_>>()).show(2)
            ),
            None => format!("within ×2: netfilter/eBPF ×{}", r.show(2)),
        };
        let px = Spread::of(&x);
        let pverdict = if px.called() == Some(true) {
            format!("beyond ×2 the floor: ×{}", px.show(1))
        } else {
            format!("within ×2 of the floor: ×{}", px.show(1))
        };
        println!(
            "  {ids} identities, {rules} rules: netfilter {} ({:.0}) µs, eBPF {} ({:.0}) µs: {verdict}",
            Spread::of(&nf_us).show(1),
            Spread::of(&nf_p99).median,
            Spread::of(&eb_us).show(1),
            Spread::of(&eb_p99).median,
        );
        println!(
            "    eBPF per packet {} ns, floor {} ns, own work {} ns: {pverdict}",
            Spread::of(&prog).show(0),
            Spread::of(&fl).show(0),
            Spread::of(&prog.iter().zip(&fl).map(|(p, f)| p - f).collect::<Vec<_>>()).show(0),
        );
    }
    drop(floor);
    if let (Some(first), Some(last)) = (medians.first(), medians.last()) {
        println!(
            "  connect latency growth from the smallest to the largest size (medians): netfilter ×{:.2}, eBPF ×{:.2}",
            last.0 / first.0,
            last.1 / first.1
        );
    }
    Ok(())
}

/// The eBPF ingress program alone (BPF_PROG_TEST_RUN) for every
/// identities × rules pair: tiefighter → deathstar UDP 80, allowed by an
/// entry, with the extra identities and rules beside it.
fn test_runs() -> anyhow::Result<()> {
    const IFINDEX: u32 = 999_999;
    const EP: u32 = 7;
    const DS_ID: u32 = 300;
    const TF_ID: u32 = 301;
    let (ds, tf) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3));
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(tf.octets(), ds.octets(), 64)
        .udp(40000, 80)
        .write(&mut frame, &[0u8; 32])?;
    println!(
        "\neBPF ingress program under BPF_PROG_TEST_RUN (alone, caches warm), ns per run, median (min–max) of {ROUNDS} × {REPEAT} runs"
    );
    println!("  identities \\ rules: {RULES:?}");
    for ids in IDENTITIES {
        let mut cells = Vec::new();
        for rules in RULES {
            let mut bench = TestBench::load()?;
            {
                let mut maps = bench.maps()?;
                for (block, id) in [
                    ("0.0.0.0/0", 2),
                    ("10.244.1.2/32", DS_ID),
                    ("10.244.1.3/32", TF_ID),
                ] {
                    let (prefix, key) = ipcache_key(block.parse::<Ipv4Net>()?);
                    maps.set_ipcache(prefix, key, remote(id))?;
                }
                extra_identities(&mut maps, 0, ids)?;
                maps.set_endpoint(
                    IFINDEX,
                    EndpointInfo {
                        id: EP,
                        identity: DS_ID,
                        ip4: ne(ds),
                        flags: EP_INGRESS_DEFAULT_DENY,
                    },
                )?;
                extra_rules(&mut maps, EP, ids, 0, rules)?;
                let allow = BTreeSet::from([MapEntry {
                    direction: Direction::Ingress,
                    identity: TF_ID,
                    protocol: Protocol::Udp,
                    port: Some(80),
                    end_port: None,
                    deny: false,
                }]);
                for ((prefix, key), flags) in encode(EP, &allow) {
                    maps.set_policy(
                        prefix,
                        key,
                        PolicyEntry {
                            flags,
                            ..PolicyEntry::default()
                        },
                    )?;
                }
            }
            let first = bench.run(Side::ToPod, IFINDEX, &frame)?;
            if first.verdict != 0 && first.verdict != -1 {
                bail!("the measured packet was not let through: {first:?}");
            }
            let mut ns = Vec::new();
            for _ in 0..ROUNDS {
                ns.push(
                    bench
                        .run_repeat(Side::ToPod, IFINDEX, &frame, REPEAT)?
                        .ns_per_run as f64,
                );
            }
            cells.push(Spread::of(&ns).show(0));
        }
        println!("  {ids:>6}: {}", cells.join(" | "));
    }
    println!("  (each cell is a fresh load)");
    Ok(())
}
