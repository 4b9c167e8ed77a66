//! `cargo xtask bench masq`: netfilter masquerade against labctl's eBPF
//! masquerading, pod -> world, on two `basic` labs, in one run.
//!
//! 1. New connections, where the rule count should matter: netfilter
//!    evaluates its NAT rules once per new connection (the first packet),
//!    eBPF looks a mapping up in a hash. With 0, 1,000, 10,000 and 50,000
//!    extra non-matching NAT rules (netfilter) and as many extra map
//!    entries (eBPF), each round measures connections per second (connect,
//!    56-byte echo, close) and connect latency (the SYN's round trip:
//!    median and p99), netfilter and eBPF interleaved; the client is pinned
//!    to one CPU and the echo server to the other.
//! 2. The time to add one more rule (`nft add rule`, a process as kube-proxy
//!    runs one, minus `nft` doing nothing) and one more map entry (the
//!    bpf() call), at each size.
//! 3. Per-packet cost of the programs on an established flow, from the
//!    kernel's run-time statistics (BPF_ENABLE_STATS, on only while this
//!    runs) during UDP floods, next to a program that does nothing on the
//!    same hook (the floor every program pays there), and under
//!    BPF_PROG_TEST_RUN (the program alone, caches warm).
//!
//! Every figure is a median over 7 rounds with its 87.5% confidence
//! interval (the 2nd lowest to the 2nd highest round: one disturbed round
//! does not move it). Verdicts are on connect latency, the figure NAT rule
//! evaluation moves directly: netfilter against eBPF on the ratio within
//! each round (both measured back to back, so the machine's drift cancels),
//! growth from 0 to 50,000 extra on the medians. Connection rate also
//! carries the client's own work and the machine's load (two disturbed
//! rounds moved it ×1.5 here), so it is shown with its interval, not
//! judged. A difference is called only where the whole interval is beyond
//! ×2 (VERDICT): on this 2-core shared machine reruns moved medians by up
//! to ×1.4 at the same settings, so smaller differences are shown but not
//! called, and two runs give the same verdicts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::{
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
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use common::{Crr, Spread, VERDICT, crr, echo_server};
use lab_cli::{
    ebpf::{
        floor::{self, NoopTc, NoopXmit},
        nat::{Direction, TestBench},
    },
    kernel::netns::NetNs,
    lab::{
        Lab,
        firewall::TABLE,
        plan::{LabOptions, MasqMode},
    },
    masq::{MasqCounter, nat},
};
use lab_common::nat::{NO_SLOT, NatConfig, NatEntry, NatKey};

/// Rounds per figure (netfilter and eBPF alternate within each).
const ROUNDS: usize = 7;
/// One connection-rate measurement.
const RUN: Duration = Duration::from_secs(2);
const SIZES: [u32; 4] = [0, 1_000, 10_000, 50_000];
/// Datagrams per flood (per-packet costs).
const FLOOD: u32 = 100_000;
const ECHO_PORT: u16 = 5002;
const FLOOD_PORT: u16 = 5003;

/// Inserts `n` non-matching NAT rules at the head of the node's postrouting
/// chain (so every new connection walks them before the masquerade rule).
fn add_nat_rules(node: &NetNs, from: u32, to: u32) -> anyhow::Result<()> {
    let mut script = String::new();
    for i in from..to {
        script.push_str(&format!(
            "insert rule ip {TABLE} postrouting ip saddr 10.{}.{}.{} ip daddr 198.18.0.1 masquerade\n",
            200 + i / 62_500,
            (i / 250) % 250,
            i % 250 + 1
        ));
    }
    nft(node, &script)
}

fn nft(node: &NetNs, script: &str) -> anyhow::Result<()> {
    let status = node.run(|| -> std::io::Result<_> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")
            .map_err(std::io::Error::other)?
            .write_all(script.as_bytes())?;
        child.wait()
    })??;
    if !status.success() {
        bail!("nft refused the rules");
    }
    Ok(())
}

fn nat_maps(node_ino: u64) -> anyhow::Result<[BpfHashMap<MapData, NatKey, NatEntry>; 2]> {
    let dir = nat::pin_dir(node_ino);
    let open = |file: &str| -> anyhow::Result<BpfHashMap<MapData, NatKey, NatEntry>> {
        let data = MapData::from_pin(dir.join(file))?;
        Ok(BpfHashMap::try_from(Map::HashMap(data))?)
    };
    Ok([open("out")?, open("in")?])
}

/// Mapping `i` (and its reverse entry) for an unrelated flow.
fn entry(i: u32, reverse: bool) -> (NatKey, NatEntry) {
    let pod = u32::from_ne_bytes([
        10,
        (200 + i / 62_500) as u8,
        ((i / 250) % 250) as u8,
        (i % 250 + 1) as u8,
    ]);
    let far = u32::from_ne_bytes([198, 18, 0, 1]);
    let port = (20000 + (i % 40000) as u16).to_be();
    let key = if reverse {
        NatKey::new(far, pod, port, port, 6)
    } else {
        NatKey::new(pod, far, port, port, 6)
    };
    let value = NatEntry {
        created_ns: 0,
        last_ns: u64::MAX / 2,
        to_addr: pod,
        to_port: port,
        flags: 0,
        _pad: 0,
        slot: NO_SLOT,
        _pad2: 0,
    };
    (key, value)
}

fn add_nat_entries(node_ino: u64, from: u32, to: u32) -> anyhow::Result<()> {
    let [mut out, mut back] = nat_maps(node_ino)?;
    for i in from..to {
        let (k, v) = entry(i, false);
        out.insert(k, v, 0)?;
        let (k, v) = entry(i, true);
        back.insert(k, v, 0)?;
    }
    Ok(())
}

/// Microseconds to add one rule (the nft process, minus an nft process
/// that adds nothing) and one map entry, over ROUNDS tries each.
fn add_one(nf_node: &NetNs, eb_ino: u64, size: u32) -> anyhow::Result<(Spread, Spread, Spread)> {
    let (mut rule, mut noop, mut entry_us) = (Vec::new(), Vec::new(), Vec::new());
    let [mut out, _] = nat_maps(eb_ino)?;
    for r in 0..ROUNDS as u32 {
        let t = Instant::now();
        nft(nf_node, "")?;
        noop.push(t.elapsed().as_secs_f64() * 1e6);
        let i = 900_000 + size + r;
        let t = Instant::now();
        nft(
            nf_node,
            &format!(
                "insert rule ip {TABLE} postrouting ip saddr 10.254.{}.{} ip daddr 198.18.0.2 masquerade\n",
                (i / 250) % 250,
                i % 250 + 1
            ),
        )?;
        rule.push(t.elapsed().as_secs_f64() * 1e6);
        let (k, v) = entry(i, false);
        let t = Instant::now();
        out.insert(k, v, 0)?;
        entry_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((Spread::of(&rule), Spread::of(&noop), Spread::of(&entry_us)))
}

/// A UDP flow pod -> world that conntrack in `node` holds as assured
/// (answered, and used again after two seconds, as netfilter requires for
/// UDP): the established flow the counter is measured on. Polls conntrack
/// with a deadline.
fn assured_flow(
    pod: &NetNs,
    world: &NetNs,
    node: &NetNs,
    world_addr: Ipv4Addr,
) -> anyhow::Result<(UdpSocket, UdpSocket)> {
    let rx = world.run(|| UdpSocket::bind(SocketAddrV4::new(world_addr, FLOOD_PORT)))??;
    rx.set_read_timeout(Some(Duration::from_secs(2)))?;
    let tx = pod.run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))??;
    let to = SocketAddrV4::new(world_addr, FLOOD_PORT);
    let sport = tx.local_addr()?.port();
    let mut buf = [0u8; 64];
    tx.send_to(&[1; 32], to)?;
    let (_, from) = rx.recv_from(&mut buf)?;
    rx.send_to(&[2; 32], from)?;
    let mut ct = lab_cli::conntrack::netlink::Ctnetlink::open_in(Some(node))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tx.send_to(&[1; 32], to)?;
        let assured = ct.dump(None)?.iter().any(|e| {
            e.orig.sport == Some(sport) && e.orig.dport == Some(FLOOD_PORT) && e.has_flag("ASSURED")
        });
        if assured {
            return Ok((tx, rx));
        }
        if Instant::now() > deadline {
            bail!("the UDP flow never became assured in conntrack");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// FLOOD datagrams from `pod` to `world:FLOOD_PORT`, then (`back`) as many
/// from world to the address and port the first one arrived from: the
/// egress program, then the ingress one, on an established flow.
fn flood(pod: &NetNs, world: &NetNs, world_addr: Ipv4Addr, back: bool) -> anyhow::Result<()> {
    let rx = world.run(|| UdpSocket::bind(SocketAddrV4::new(world_addr, FLOOD_PORT)))??;
    rx.set_read_timeout(Some(Duration::from_secs(2)))?;
    let tx = pod.run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))??;
    let to = SocketAddrV4::new(world_addr, FLOOD_PORT);
    let mut buf = [0u8; 64];
    if back {
        tx.send_to(&[1; 32], to)?;
        let (_, from) = rx.recv_from(&mut buf)?;
        for _ in 0..FLOOD {
            // A full receive queue drops: the programs still ran.
            rx.send_to(&[2; 32], from).ok();
        }
    } else {
        for _ in 0..FLOOD {
            tx.send_to(&[1; 32], to).ok();
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Run-time statistics only while this fd is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    let pid = std::process::id() % 10_000;
    let (nf_name, eb_name) = (format!("bm{pid}-nf"), format!("bm{pid}-eb"));
    let nf = Lab::up(Some(&nf_name), "basic", LabOptions::default())?;
    let eb = Lab::up(
        Some(&eb_name),
        "basic",
        LabOptions {
            masq: MasqMode::Ebpf,
            ..LabOptions::default()
        },
    );
    let eb = match eb {
        Ok(l) => l,
        Err(e) => {
            nf.down()?;
            return Err(e.into());
        }
    };
    let result = run(&nf, &eb);
    let downs = (nf.down(), eb.down());
    downs.0?;
    downs.1?;
    result
}

fn run(nf: &Lab, eb: &Lab) -> anyhow::Result<()> {
    let world_addr = nf.endpoint("world").context("world")?.addr;
    let mut servers = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for lab in [nf, eb] {
        // Tens of thousands of short connections leave the client's ports in
        // TIME_WAIT; without reuse, connect() slows down scanning for a free
        // port and the measurement would show that instead of the NAT.
        lab.netns("pod-a")?
            .run(|| lab_cli::kernel::sysctl::write(&["net", "ipv4", "tcp_tw_reuse"], "1"))??;
        servers.push(echo_server(
            &lab.netns("world")?,
            world_addr,
            ECHO_PORT,
            stop.clone(),
        ));
    }
    let result = measure(nf, eb, world_addr);
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().ok();
    }
    result
}

fn measure(nf: &Lab, eb: &Lab, world_addr: Ipv4Addr) -> anyhow::Result<()> {
    // LABCTL_BENCH_ONLY=per-packet: the program costs alone (to iterate
    // on a program without the connection rounds).
    if std::env::var("LABCTL_BENCH_ONLY").as_deref() == Ok("per-packet") {
        return per_packet(nf, eb, world_addr);
    }
    // LABCTL_BENCH_ONLY=full-table: the cost of a full table alone.
    if std::env::var("LABCTL_BENCH_ONLY").as_deref() == Ok("full-table") {
        return full_table();
    }
    let (nf_pod, eb_pod) = (nf.netns("pod-a")?, eb.netns("pod-a")?);
    let nf_node = nf.netns("node1")?;
    let eb_ino = eb.netns("node1")?.inode()?;
    println!(
        "labctl bench masq — {} rounds per figure, netfilter and eBPF interleaved; median (87.5% interval: 2nd lowest–2nd highest round)",
        ROUNDS
    );
    println!(
        "new connections pod -> world: connect + 56-byte echo + close for {} s per round; connect = the SYN's round trip",
        RUN.as_secs()
    );
    println!(
        "{:>7}  {:>22} {:>22}  {:>19} {:>19}  {:>17} {:>17}",
        "extra",
        "netfilter conn/s",
        "eBPF conn/s",
        "nf connect µs",
        "eBPF connect µs",
        "nf p99 µs",
        "eBPF p99 µs"
    );
    let mut added = 0;
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut adds = Vec::new();
    for n in SIZES {
        add_nat_rules(&nf_node, added, n)?;
        add_nat_entries(eb_ino, added, n)?;
        added = n;
        let (mut f, mut e) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which goes first, so drift does not favour one.
            if round % 2 == 0 {
                f.push(crr(&nf_pod, SocketAddrV4::new(world_addr, ECHO_PORT), RUN)?);
                e.push(crr(&eb_pod, SocketAddrV4::new(world_addr, ECHO_PORT), RUN)?);
            } else {
                e.push(crr(&eb_pod, SocketAddrV4::new(world_addr, ECHO_PORT), RUN)?);
                f.push(crr(&nf_pod, SocketAddrV4::new(world_addr, ECHO_PORT), RUN)?);
            }
        }
        let stat =
            |v: &[Crr], g: &dyn Fn(&Crr) -> f64| Spread::of(&v.iter().map(g).collect::<Vec<_>>());
        // eBPF against netfilter within each round: conn/s ratio and
        // connect-latency speed-up.
        let paired = |g: &dyn Fn(&Crr, &Crr) -> f64| {
            Spread::of(&f.iter().zip(&e).map(|(a, b)| g(a, b)).collect::<Vec<_>>())
        };
        ratios.push((
            n,
            paired(&|a, b| b.conn_per_s / a.conn_per_s),
            paired(&|a, b| a.percentile(0.5) / b.percentile(0.5)),
        ));
        let row = (
            n,
            stat(&f, &|c| c.conn_per_s),
            stat(&e, &|c| c.conn_per_s),
            stat(&f, &|c| c.percentile(0.5)),
            stat(&e, &|c| c.percentile(0.5)),
            stat(&f, &|c| c.percentile(0.99)),
            stat(&e, &|c| c.percentile(0.99)),
        );
        println!(
            "{:>7}  {:>22} {:>22}  {:>19} {:>19}  {:>17} {:>17}",
            n,
            row.1.show(0),
            row.2.show(0),
            row.3.show(1),
            row.4.show(1),
            row.5.show(0),
            row.6.show(0)
        );
        let failed = |v: &[Crr]| v.iter().map(|c| c.failed).sum::<u32>();
        if failed(&f) + failed(&e) > 0 {
            println!(
                "         failed connections: netfilter {}, eBPF {} (counted as time without a connection)",
                failed(&f),
                failed(&e)
            );
        }
        rows.push(row);
        adds.push((n, add_one(&nf_node, eb_ino, n)?));
    }
    println!(
        "verdicts on connect latency (called only where the whole interval is beyond ×{VERDICT}; eBPF against netfilter from the ratio within each round), conn/s ratio shown:"
    );
    for (n, conn, lat) in &ratios {
        let conn = format!("eBPF conn/s ×{}", conn.show(2));
        let lat = match lat.called() {
            Some(true) => format!("eBPF connects faster, ×{}", lat.show(2)),
            Some(false) => format!("netfilter connects faster, eBPF ×{}", lat.show(2)),
            None => format!("connect latency within ×{VERDICT} (eBPF ×{})", lat.show(2)),
        };
        println!("  {n:>6} extra: {lat}; {conn}");
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    for (name, a, b) in [
        ("netfilter", &first.3, &last.3),
        ("eBPF", &first.4, &last.4),
    ] {
        let verdict = match b.above(a) {
            Some(true) => format!("grows ×{:.2}", b.median / a.median),
            Some(false) => format!("shrinks ×{:.2}", b.median / a.median),
            None => format!("flat within ×{VERDICT} (×{:.2})", b.median / a.median),
        };
        println!(
            "  growth 0 -> {} extra: {name} connect latency {verdict}",
            SIZES[SIZES.len() - 1]
        );
    }
    println!(
        "  conn/s 0 -> {} extra (shown, not judged): netfilter ×{:.2}, eBPF ×{:.2}",
        SIZES[SIZES.len() - 1],
        last.1.median / first.1.median,
        last.2.median / first.2.median
    );

    println!(
        "adding one more: nft add rule (process minus an empty nft run) vs one map entry (bpf syscall), µs"
    );
    for (n, (rule, noop, entry)) in &adds {
        println!(
            "  {n:>6} extra: rule {} (nft doing nothing: {}); map entry {}",
            rule.show(0),
            noop.show(0),
            entry.show(1)
        );
    }

    // What the eBPF NAT went through: a failed connection above is
    // explained here if a port could not be allocated.
    let t = nat::table(eb_ino)?;
    println!(
        "eBPF NAT after the connection rounds: {} mappings of {}; {} allocated, {} port collisions, {} packets dropped for lack of a free port, {} refused by a full table, {} expired mappings replaced, {} reclaimed by {} sweeps of the full table",
        t.used,
        t.capacity,
        t.allocated,
        t.collisions,
        t.alloc_failed,
        t.table_full,
        t.expired,
        t.reclaimed,
        t.sweeps
    );

    per_packet(nf, eb, world_addr)
}

fn per_packet(nf: &Lab, eb: &Lab, world_addr: Ipv4Addr) -> anyhow::Result<()> {
    let (eb_pod, eb_world, eb_node) = (eb.netns("pod-a")?, eb.netns("world")?, eb.netns("node1")?);
    let floor = NoopTc::attach(&eb_node, "eth0")?;
    let (mut eg, mut eg_floor, mut ig, mut ig_floor) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let [n, f] = common::per_run(["nat_egress", floor::PROGRAM], || {
            flood(&eb_pod, &eb_world, world_addr, false)
        })?;
        eg.push(n);
        eg_floor.push(f);
        let [n, f] = common::per_run(["nat_ingress", floor::PROGRAM], || {
            flood(&eb_pod, &eb_world, world_addr, true)
        })?;
        ig.push(n);
        ig_floor.push(f);
    }
    drop(floor);
    // The programs alone, caches warm.
    let cfg = NatConfig {
        node_addr: u32::from_ne_bytes([172, 18, 0, 2]),
        cluster_net: u32::from_ne_bytes([10, 244, 0, 0]),
        cluster_mask: u32::from_ne_bytes([255, 255, 0, 0]),
        ..NatConfig::DEFAULT
    };
    let mut bench = TestBench::load(&cfg)?;
    let frame = |src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut out, &[0u8; 32])
            .map(|()| out)
    };
    let out = frame([10, 244, 1, 2], 40000, [203, 0, 113, 10], 5003)?;
    let back = frame([203, 0, 113, 10], 5003, [172, 18, 0, 2], 40000)?;
    bench.run(Direction::Egress, &out, 1)?;
    let (mut tr_out, mut tr_in) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        tr_out.push(bench.run(Direction::Egress, &out, 1_000_000)?.ns_per_run as f64);
        tr_in.push(bench.run(Direction::Ingress, &back, 1_000_000)?.ns_per_run as f64);
    }

    // The masquerade counter, on the netfilter lab, beside its floor, on
    // an established (assured) flow.
    let (nf_pod, nf_world, nf_node) = (nf.netns("pod-a")?, nf.netns("world")?, nf.netns("node1")?);
    let counter = MasqCounter::attach(&nf_node, "eth0")?;
    let xmit_floor = NoopXmit::attach()?;
    let (tx, _rx) = assured_flow(&nf_pod, &nf_world, &nf_node, world_addr)?;
    let to = SocketAddrV4::new(world_addr, FLOOD_PORT);
    let (mut ctr, mut ctr_floor) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let [c, f] = common::per_run(["masq_counter", floor::XMIT_PROGRAM], || {
            for _ in 0..FLOOD {
                // A full receive queue drops: the programs still ran.
                tx.send_to(&[1; 32], to).ok();
            }
            Ok(())
        })?;
        ctr.push(c);
        ctr_floor.push(f);
    }
    drop((counter, xmit_floor));

    let sub = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>();
    println!(
        "per packet, established flow, ns: in traffic ({FLOOD} datagrams per round; run-time statistics) and as a multiple of its floor (a program doing nothing on the same hook: the machine's speed cancels out), the difference (own work); BPF_PROG_TEST_RUN (program alone, warm)"
    );
    let ratio = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>();
    for (name, v, f, t) in [
        ("NAT egress", &eg, &eg_floor, Some(&tr_out)),
        ("NAT ingress", &ig, &ig_floor, Some(&tr_in)),
        (
            "masquerade counter (per transmitted packet)",
            &ctr,
            &ctr_floor,
            None,
        ),
    ] {
        println!(
            "  {name}: {} = floor {} ×{} ; own work {}{}",
            Spread::of(v).show(0),
            Spread::of(f).show(0),
            Spread::of(&ratio(v, f)).show(1),
            Spread::of(&sub(v, f)).show(0),
            t.map(|t| format!(" ; test run {}", Spread::of(t).show(0)))
                .unwrap_or_default()
        );
    }
    full_table()
}

/// A new UDP flow (number `n`) from a pod: a frame for the egress program.
fn new_flow(n: u32) -> anyhow::Result<Vec<u8>> {
    let dst = (u32::from(Ipv4Addr::new(198, 51, 100, 0)) + n / 60_000).to_be_bytes();
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 244, 1, 9], dst, 64)
        .udp(5353, 1 + (n % 60_000) as u16)
        .write(&mut out, &[0u8; 32])?;
    Ok(out)
}

/// What a full table costs, under BPF_PROG_TEST_RUN: a new mapping while
/// the table fills (mean over the fill), and the packet that finds it full
/// and sweeps it (`bpf_for_each_map_elem` over 65,536 reverse entries),
/// when nothing can be freed (every mapping live: the packet is dropped)
/// and when everything can (every mapping expired: the sweep stops after
/// freeing 4,096, and the packet gets one).
fn full_table() -> anyhow::Result<()> {
    const SWEEP_ROUNDS: usize = 5;
    let cfg = NatConfig {
        node_addr: u32::from_ne_bytes([172, 18, 0, 2]),
        cluster_net: u32::from_ne_bytes([10, 244, 0, 0]),
        cluster_mask: u32::from_ne_bytes([255, 255, 0, 0]),
        udp_timeout_s: 1,
        ..NatConfig::DEFAULT
    };
    let capacity = lab_common::nat::CAPACITY;
    let (mut fill, mut live, mut expired) = (vec![], vec![], vec![]);
    for _ in 0..SWEEP_ROUNDS {
        let mut bench = TestBench::load(&cfg)?;
        let mut total = 0u64;
        for n in 0..capacity {
            let out = bench.run(Direction::Egress, &new_flow(n)?, 1)?;
            if out.verdict == 2 {
                bail!("flow {n} refused before the table was full");
            }
            total += out.ns_per_run;
        }
        fill.push(total as f64 / f64::from(capacity));
        let out = bench.run(Direction::Egress, &new_flow(capacity)?, 1)?;
        if out.verdict != 2 {
            bail!("a full table of live mappings took a new flow");
        }
        live.push(out.ns_per_run as f64 / 1000.0);
        // Past the 1 s UDP timeout and the sweep's back-off.
        std::thread::sleep(Duration::from_millis(2100));
        let out = bench.run(Direction::Egress, &new_flow(capacity + 1)?, 1)?;
        if out.verdict == 2 {
            bail!("a full table of expired mappings refused a new flow");
        }
        expired.push(out.ns_per_run as f64 / 1000.0);
        // A sweep stops once it freed a sixteenth of the table.
        let freed = bench.stats()?[lab_common::nat::stat::RECLAIMED as usize];
        if freed != u64::from(capacity / lab_common::nat::SWEEP_MAX_DIVISOR) {
            bail!("the sweep freed {freed} of {capacity} expired mappings");
        }
    }
    println!(
        "full table ({capacity} mappings; BPF_PROG_TEST_RUN, median (min–max) of {SWEEP_ROUNDS} rounds): a new mapping while it fills {} ns; the packet that finds it full and sweeps it: {} µs when every mapping is live (dropped, counted), {} µs when every one is expired (4,096 reclaimed, the packet mapped)",
        Spread::of(&fill).show(0),
        Spread::of(&live).show(0),
        Spread::of(&expired).show(0)
    );
    Ok(())
}
