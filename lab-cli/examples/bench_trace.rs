//! `cargo xtask bench trace`: a drop storm (UDP to a closed port across a
//! veth pair between two throwaway namespaces) measured in one run without a
//! tracer, with `labctl trace --output json`, and with `labctl trace
//! --summary`. Prints sender rates, their ratios to the baseline, and
//! delivered/lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lab_cli::kernel::{netns, rtnl};

const STORM: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const RECEIVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), 9);

fn main() -> anyhow::Result<()> {
    let labctl = PathBuf::from(std::env::var("LABCTL").context("set LABCTL to the labctl binary")?);
    // Sender and receiver namespaces joined by one veth pair; the receiver
    // has nothing on port 9, so every datagram is a NO_SOCKET drop there.
    let tx = netns::NetNs::create(&netns::unique_name("labbench-tx"))?;
    let ns = netns::NetNs::create(&netns::unique_name("labbench-rx"))?;
    let tx_rt = rtnl::Rtnl::open(&tx)?;
    tx_rt.add_veth("storm0", "storm0", 1500, &ns)?;
    tx_rt.add_address("storm0", IpAddr::V4(SENDER), 24)?;
    tx_rt.set_up("storm0")?;
    let rx_rt = rtnl::Rtnl::open(&ns)?;
    rx_rt.add_address("storm0", IpAddr::V4(*RECEIVER.ip()), 24)?;
    rx_rt.set_up("storm0")?;
    let socket = tx.run(|| UdpSocket::bind((SENDER, 0)))??;
    // Resolve the receiver's MAC before measuring.
    socket.send_to(b"warm-up", RECEIVER)?;
    thread::sleep(Duration::from_millis(200));

    // Three interleaved rounds, medians reported: one round is noisy on a
    // 2-core machine (±5%), and interleaving spreads any drift over all three.
    let (mut base, mut json, mut summ) = (Vec::new(), Vec::new(), Vec::new());
    let (mut json_counts, mut summ_counts) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        base.push(storm(&socket)?);
        let (rate, counts) = with_tracer(&labctl, ns.name(), &["--output", "json"], &socket)?;
        json.push(rate);
        json_counts.push(counts);
        let (rate, counts) = with_tracer(
            &labctl,
            ns.name(),
            &["--summary", "--output", "json"],
            &socket,
        )?;
        summ.push(rate);
        summ_counts.push(counts);
    }
    let (base, json, summ) = (median(&base), median(&json), median(&summ));
    let sum = |c: &[(u64, u64, u64)], f: fn(&(u64, u64, u64)) -> u64| c.iter().map(f).sum::<u64>();

    println!(
        "drop storm, {} s per run, {ROUNDS} interleaved rounds (medians), UDP to a closed port across a veth pair into {}",
        STORM.as_secs(),
        ns.name()
    );
    println!("  no tracer            {:>10.0} pkt/s", base);
    println!(
        "  trace --output json  {:>10.0} pkt/s  ratio {:.3}  events delivered {} lost {} (kernel counted {})",
        json,
        json / base,
        sum(&json_counts, |c| c.0),
        sum(&json_counts, |c| c.1),
        sum(&json_counts, |c| c.2)
    );
    println!(
        "  trace --summary      {:>10.0} pkt/s  ratio {:.3}  lost {} (kernel counted {})",
        summ,
        summ / base,
        sum(&summ_counts, |c| c.1),
        sum(&summ_counts, |c| c.2)
    );
    ns.delete()?;
    tx.delete()?;
    Ok(())
}

/// The last line of a (possibly large) file.
fn last_line(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail)?;
    tail.lines()
        .last()
        .map(str::to_owned)
        .context("labctl trace wrote nothing")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sends as fast as possible for STORM; returns packets per second.
fn storm(socket: &UdpSocket) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < STORM {
        for _ in 0..256 {
            socket.send_to(b"storm", RECEIVER)?;
        }
        n += 256;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs a storm under `labctl trace ARGS`; returns the rate and the
/// summary's (events, lost, kernel total).
fn with_tracer(
    labctl: &PathBuf,
    ns: &str,
    args: &[&str],
    socket: &UdpSocket,
) -> anyhow::Result<(f64, (u64, u64, u64))> {
    let ready = std::env::temp_dir().join(netns::unique_name("labbench-ready"));
    // The events go to a file in /dev/shm (memory, like `> /dev/null` but
    // keeping the summary line): no reader competes for the CPU.
    let sink = PathBuf::from("/dev/shm").join(netns::unique_name("labbench-trace"));
    let mut child = Command::new(labctl)
        .args(["trace", "--netns", ns, "--ready-file"])
        .arg(&ready)
        .args(args)
        .stdout(std::fs::File::create(&sink)?)
        .spawn()
        .context("starting labctl trace")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline {
            bail!("labctl trace never became ready");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let rate = storm(socket)?;
    thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )?;
    child.wait()?;
    std::fs::remove_file(&ready).ok();
    let last = last_line(&sink)?;
    std::fs::remove_file(&sink)?;
    let summary: serde_json::Value = serde_json::from_str(&last)?;
    let total: u64 = summary["by_reason"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    Ok((
        rate,
        (
            summary["events"].as_u64().unwrap_or(0),
            summary["lost"].as_u64().unwrap_or(0),
            total,
        ),
    ))
}
