//! `cargo xtask bench trace`: a drop storm (UDP to a closed port on the
//! loopback of a throwaway namespace) measured in one run without a tracer,
//! with `labctl trace --output json`, and with `labctl trace --summary`.
//! Prints sender rates, their ratios to the baseline, and delivered/lost.

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lab_cli::kernel::{netns, rtnl};

const STORM: Duration = Duration::from_secs(3);

fn main() -> anyhow::Result<()> {
    let labctl = PathBuf::from(std::env::var("LABCTL").context("set LABCTL to the labctl binary")?);
    let ns = netns::NetNs::create(&netns::unique_name("labbench-trace"))?;
    ns.run(|| rtnl::Rtnl::current().and_then(|r| r.set_up("lo")))??;
    let socket = ns.run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))??;

    let base = storm(&socket)?;
    let (json, json_summary) = with_tracer(&labctl, ns.name(), &["--output", "json"], &socket)?;
    let (summ, summ_summary) = with_tracer(
        &labctl,
        ns.name(),
        &["--summary", "--output", "json"],
        &socket,
    )?;

    println!(
        "drop storm, {} s each, UDP to a closed port on lo in {}",
        STORM.as_secs(),
        ns.name()
    );
    println!("  no tracer            {:>10.0} pkt/s", base);
    println!(
        "  trace --output json  {:>10.0} pkt/s  ratio {:.3}  events delivered {} lost {} (kernel counted {})",
        json,
        json / base,
        json_summary.0,
        json_summary.1,
        json_summary.2
    );
    println!(
        "  trace --summary      {:>10.0} pkt/s  ratio {:.3}  lost {} (kernel counted {})",
        summ,
        summ / base,
        summ_summary.1,
        summ_summary.2
    );
    ns.delete()?;
    Ok(())
}

/// Sends as fast as possible for STORM; returns packets per second.
fn storm(socket: &UdpSocket) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < STORM {
        for _ in 0..256 {
            socket.send_to(b"storm", (Ipv4Addr::LOCALHOST, 9))?;
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
    let mut child = Command::new(labctl)
        .args(["trace", "--netns", ns, "--ready-file"])
        .arg(&ready)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting labctl trace")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).last());
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
    let last = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?
        .context("no summary line")?;
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
