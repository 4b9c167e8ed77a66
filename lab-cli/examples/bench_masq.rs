//! `cargo xtask bench masq`: pod -> world through (a) netfilter masquerade
//! and (b) eBPF masquerading, in one run: TCP throughput (one stream) and
//! connection rate (connect, 56-byte echo, close: every one a new NAT
//! mapping), with 0, 1,000 and 10,000 extra non-matching netfilter NAT rules
//! versus as many extra eBPF NAT map entries; then the per-packet cost of
//! the NAT programs and of the masquerade counter from BPF run-time stats
//! (BPF_ENABLE_STATS, on only while this runs). Prints ratios.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lab_cli::{
    lab::{
        Lab,
        firewall::TABLE,
        plan::{LabOptions, MasqMode},
        traffic::{self, Proto, TrafficSpec},
    },
    masq::{MasqCounter, nat},
};
use lab_common::nat::{NatEntry, NatKey};

const RUN: Duration = Duration::from_secs(1);
/// Measurements per figure; the median is kept (single runs vary ±15% on
/// a 2-core machine).
const REPEAT: usize = 3;
const SIZES: [u32; 3] = [0, 1_000, 10_000];

struct Figures {
    mbit: f64,
    conn_per_s: f64,
}

fn measure(lab: &Lab) -> anyhow::Result<Figures> {
    let mut runs = Vec::new();
    for _ in 0..REPEAT {
        runs.push(measure_once(lab)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Figures {
        mbit: median(runs.iter().map(|f| f.mbit).collect()),
        conn_per_s: median(runs.iter().map(|f| f.conn_per_s).collect()),
    })
}

fn measure_once(lab: &Lab) -> anyhow::Result<Figures> {
    let (a, w) = (
        lab.endpoint("pod-a").context("pod-a")?,
        lab.endpoint("world").context("world")?,
    );
    let stream = traffic::run(
        &a,
        &w,
        &TrafficSpec {
            proto: Proto::TcpStream,
            duration: Some(RUN),
            ..TrafficSpec::default()
        },
    )?;
    let crr = traffic::run(
        &a,
        &w,
        &TrafficSpec {
            proto: Proto::Tcp,
            duration: Some(RUN),
            ..TrafficSpec::default()
        },
    )?;
    if !stream.all_answered() || !crr.all_answered() {
        bail!("traffic failed: {} / {}", stream.text(), crr.text());
    }
    Ok(Figures {
        mbit: stream.mbit_per_s.unwrap_or(0.0),
        conn_per_s: f64::from(crr.answered) / RUN.as_secs_f64(),
    })
}

/// Inserts `n` non-matching NAT rules at the head of the node's postrouting
/// chain (so every new connection walks them before the masquerade rule).
fn add_nat_rules(lab: &Lab, n: u32) -> anyhow::Result<()> {
    let node = lab.netns("node1")?;
    let mut script = String::new();
    for i in 0..n {
        script.push_str(&format!(
            "insert rule ip {TABLE} postrouting ip saddr 10.200.{}.{} ip daddr 198.18.0.1 masquerade\n",
            i / 250,
            i % 250 + 1
        ));
    }
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
        bail!("nft refused the extra rules");
    }
    Ok(())
}

/// Inserts `n` unrelated mappings (and their reverse entries) into the
/// pinned eBPF NAT maps.
fn add_nat_entries(lab: &Lab, n: u32) -> anyhow::Result<()> {
    let ino = lab.netns("node1")?.inode()?;
    let dir = nat::pin_dir(ino);
    for (file, reverse) in [("out", false), ("in", true)] {
        let data = MapData::from_pin(dir.join(file))?;
        let mut map: BpfHashMap<_, NatKey, NatEntry> = BpfHashMap::try_from(Map::LruHashMap(data))?;
        for i in 0..n {
            let pod = u32::from_ne_bytes([10, 200, (i / 250) as u8, (i % 250 + 1) as u8]);
            let far = u32::from_ne_bytes([198, 18, 0, 1]);
            let port = (20000 + (i % 40000) as u16).to_be();
            let key = NatKey::new(
                if reverse { far } else { pod },
                if reverse { pod } else { far },
                port,
                port,
                6,
            );
            let entry = NatEntry {
                created_ns: 0,
                last_ns: u64::MAX / 2,
                to_addr: pod,
                to_port: port,
                flags: 0,
                _pad: 0,
                slot: lab_common::nat::NO_SLOT,
                _pad2: 0,
            };
            map.insert(key, entry, 0)?;
        }
    }
    Ok(())
}

/// (run time ns, run count) of loaded programs named `name`, from bpftool.
fn prog_stats(name: &str) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool (scripts/setup.sh installs it)")?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut total = (0, 0);
    for p in progs.as_array().into_iter().flatten() {
        if p["name"] == name {
            total.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            total.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

fn ns_per_run(before: (u64, u64), after: (u64, u64)) -> f64 {
    let runs = after.1.saturating_sub(before.1);
    if runs == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / runs as f64
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
    // Tens of thousands of short connections leave the client's ports in
    // TIME_WAIT; without reuse, connect() slows down scanning for a free
    // port and the measurement would show that instead of the NAT.
    for lab in [nf, eb] {
        lab.netns("pod-a")?
            .run(|| lab_cli::kernel::sysctl::write(&["net", "ipv4", "tcp_tw_reuse"], "1"))??;
    }
    println!(
        "pod -> world through masquerade; medians of {REPEAT} runs of {} s; stream = one TCP connection, conn/s = connect + 56-byte echo + close",
        RUN.as_secs()
    );
    println!(
        "{:>12}  {:>22}  {:>22}  {:>10}  {:>10}",
        "extra", "netfilter Mbit/s conn/s", "eBPF Mbit/s conn/s", "Mbit ratio", "conn ratio"
    );
    let mut added = 0;
    let mut first: Option<(Figures, Figures)> = None;
    let mut last: Option<(Figures, Figures)> = None;
    for n in SIZES {
        add_nat_rules(nf, n - added)?;
        add_nat_entries(eb, n - added)?;
        added = n;
        let before = (prog_stats("nat_egress")?, prog_stats("nat_ingress")?);
        let (f, e) = (measure(nf)?, measure(eb)?);
        let after = (prog_stats("nat_egress")?, prog_stats("nat_ingress")?);
        println!(
            "{:>12}  {:>11.0} {:>10.0}  {:>11.0} {:>10.0}  {:>10.3}  {:>10.3}   (eBPF NAT: egress {:.0} ns/pkt, ingress {:.0} ns/pkt)",
            format!("{n} rules"),
            f.mbit,
            f.conn_per_s,
            e.mbit,
            e.conn_per_s,
            e.mbit / f.mbit,
            e.conn_per_s / f.conn_per_s,
            ns_per_run(before.0, after.0),
            ns_per_run(before.1, after.1),
        );
        if first.is_none() {
            first = Some((f, e));
        } else {
            last = Some((f, e));
        }
    }
    if let (Some((f0, e0)), Some((fn_, en))) = (first, last) {
        println!(
            "growth from 0 to {} extra: netfilter conn/s ×{:.3}, eBPF conn/s ×{:.3}; netfilter Mbit/s ×{:.3}, eBPF Mbit/s ×{:.3}",
            SIZES[SIZES.len() - 1],
            fn_.conn_per_s / f0.conn_per_s,
            en.conn_per_s / e0.conn_per_s,
            fn_.mbit / f0.mbit,
            en.mbit / e0.mbit,
        );
    }
    // The counter's own cost, on the netfilter lab.
    let node = nf.netns("node1")?;
    let base = measure(nf)?;
    let counter = MasqCounter::attach(&node, "eth0")?;
    let before = prog_stats("masq_counter")?;
    let with = measure(nf)?;
    let after = prog_stats("masq_counter")?;
    drop(counter);
    println!(
        "masquerade counter: {:.0} ns per transmitted packet; stream ×{:.3}, conn/s ×{:.3} with it attached",
        ns_per_run(before, after),
        with.mbit / base.mbit,
        with.conn_per_s / base.conn_per_s
    );
    Ok(())
}
