//! `cargo xtask bench conntrack`: a conntrack table of 100,000 entries in a
//! throwaway namespace, listed by `labctl conntrack list > /dev/null` and by
//! `conntrack -L > /dev/null` in the same run (interleaved, median of
//! several), next to the floor: the same ctnetlink dump read and discarded
//! without decoding, plus a `labctl` process that does nothing (`labctl
//! --version`), the start-up every listing pays; prints the times and the
//! ratios.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lab_cli::{
    conntrack::netlink::Ctnetlink,
    kernel::{netns, rtnl, sysctl},
};

const ENTRIES: u32 = 100_000;
const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `program args` with stdout to /dev/null, from a thread inside `ns`
/// (the child starts in the namespace, with no `ip netns exec` in between).
fn timed(ns: &netns::NetNs, program: &PathBuf, args: &[&str]) -> anyhow::Result<Duration> {
    let (status, took) = ns.run(|| -> std::io::Result<_> {
        let start = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok((status, start.elapsed()))
    })??;
    if !status.success() {
        bail!("{} {args:?} failed", program.display());
    }
    Ok(took)
}

fn main() -> anyhow::Result<()> {
    let labctl = PathBuf::from(std::env::var("LABCTL").context("set LABCTL to the labctl binary")?);
    let conntrack = which("conntrack")?;
    let ns = netns::NetNs::create(&netns::unique_name("labbench-ct"))?;
    ns.run(|| rtnl::Rtnl::current().and_then(|r| r.set_up("lo")))??;
    // Conntrack is lazy: a ct rule makes the namespace track connections;
    // long UDP timeouts keep the entries for the whole run.
    let rule = "add table ip b\nadd chain ip b out { type filter hook output priority 0; }\nadd rule ip b out ct state new counter\n";
    let status = ns.run(|| -> std::io::Result<_> {
        use std::io::Write as _;
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .map(|mut s| s.write_all(rule.as_bytes()))
            .transpose()?;
        child.wait()
    })??;
    if !status.success() {
        bail!("nft refused the ct rule");
    }
    // (nf_conntrack_max is global and read-only here; 262,144 by default.)
    ns.run(|| sysctl::write(&["net", "netfilter", "nf_conntrack_udp_timeout"], "3600"))??;
    // 100,000 distinct UDP flows on lo: 4 destination addresses x 25,000 ports.
    let socket = ns.run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))??;
    for i in 0..ENTRIES {
        let dst = Ipv4Addr::new(127, 0, 0, 1 + (i / 25_000) as u8);
        socket.send_to(b"x", (dst, 10_000 + (i % 25_000) as u16))?;
    }
    let size = ns
        .run(|| Ctnetlink::open().and_then(|mut c| c.table_size()))??
        .entries;
    if size < ENTRIES {
        bail!("only {size} entries were created");
    }
    let (mut ours, mut theirs, mut ours_json) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dumps, mut starts) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ours.push(timed(&ns, &labctl, &["conntrack", "list"])?);
        ours_json.push(timed(&ns, &labctl, &["conntrack", "list", "-o", "json"])?);
        theirs.push(timed(&ns, &conntrack, &["-L"])?);
        starts.push(timed(&ns, &labctl, &["--version"])?);
        let (n, took) = ns.run(|| -> anyhow::Result<(u64, Duration)> {
            let mut ct = Ctnetlink::open()?;
            let start = Instant::now();
            let n = ct.dump_discard()?;
            Ok((n, start.elapsed()))
        })??;
        if n < u64::from(ENTRIES) {
            bail!("the raw dump returned {n} messages");
        }
        dumps.push(took);
    }
    let (o, j, t) = (median(ours), median(ours_json), median(theirs));
    let (d, st) = (median(dumps), median(starts));
    let floor = d + st;
    println!(
        "conntrack table of {size} entries; medians of {RUNS} interleaved runs, output to /dev/null"
    );
    println!(
        "  floor: raw dump {:.1} ms + a labctl that does nothing {:.1} ms = {:>6.1} ms",
        d.as_secs_f64() * 1e3,
        st.as_secs_f64() * 1e3,
        floor.as_secs_f64() * 1e3
    );
    println!(
        "  conntrack -L                        {:>8.1} ms  ×{:.2} the floor",
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  labctl conntrack list               {:>8.1} ms  ratio {:.3} to conntrack -L, ×{:.2} the floor",
        o.as_secs_f64() * 1e3,
        o.as_secs_f64() / t.as_secs_f64(),
        o.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  labctl conntrack list --output json {:>8.1} ms  ratio {:.3} to conntrack -L, ×{:.2} the floor",
        j.as_secs_f64() * 1e3,
        j.as_secs_f64() / t.as_secs_f64(),
        j.as_secs_f64() / floor.as_secs_f64()
    );
    ns.delete()?;
    Ok(())
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{name} not found; run scripts/setup.sh")
}
