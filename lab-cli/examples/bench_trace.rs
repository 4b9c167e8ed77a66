//! `cargo xtask bench trace`: a drop storm (UDP to a closed port across a
//! veth pair between two throwaway namespaces) measured in one run with no
//! tracer and under each tracer, on the same storm:
//!
//! - `labctl trace --summary` and its peers that count in the kernel:
//!   bpftrace counting `skb:kfree_skb` by reason (filtered to the
//!   namespace, as labctl is), `perf stat -e skb:kfree_skb -a`, and an empty
//!   bpftrace probe (the floor of any attached program);
//! - `labctl trace -o json` and its peer that ships every drop to
//!   userspace: bpftrace printing one line per drop (reason, location,
//!   addresses);
//! - dropwatch, where the kernel has the NET_DM drop monitor.
//!
//! Rounds are interleaved; each contender's run sits between two no-tracer
//! storms and its rate is a ratio to their mean, reported as median
//! (min–max) with events delivered and lost. `LABCTL_BENCH_ONLY=json,summary`
//! runs only the contenders whose label holds one of those words.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use common::Spread;
use lab_cli::{
    drops::reasons::DropReasons,
    kernel::{btf::KernelBtf, netns, rtnl},
};

const STORM: Duration = Duration::from_secs(3);
const ROUNDS: usize = 9;
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const RECEIVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), 9);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    LabctlSummary,
    BpftraceCount,
    PerfStat,
    BpftraceEmpty,
    LabctlJson,
    BpftracePrint,
}

impl Contender {
    const ALL: [Contender; 6] = [
        Contender::LabctlSummary,
        Contender::BpftraceCount,
        Contender::PerfStat,
        Contender::BpftraceEmpty,
        Contender::LabctlJson,
        Contender::BpftracePrint,
    ];

    fn label(self) -> &'static str {
        match self {
            Contender::LabctlSummary => "labctl trace --summary",
            Contender::BpftraceCount => "bpftrace count by reason",
            Contender::PerfStat => "perf stat skb:kfree_skb",
            Contender::BpftraceEmpty => "bpftrace empty probe",
            Contender::LabctlJson => "labctl trace -o json",
            Contender::BpftracePrint => "bpftrace printf per drop",
        }
    }
}

/// What a contender reported: events it delivered to userspace, events it
/// lost, drops it counted.
#[derive(Default, Clone, Copy)]
struct Counts {
    sent: u64,
    delivered: u64,
    lost: u64,
    counted: u64,
}

struct Ctx {
    labctl: PathBuf,
    ns: String,
    ino: u64,
    consumed: u32,
}

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
    let reasons = DropReasons::from_btf(&KernelBtf::from_sys()?)?;
    let ctx = Ctx {
        labctl,
        ns: ns.name().to_owned(),
        ino: ns.inode()?,
        consumed: reasons.value("CONSUMED").unwrap_or(1),
    };

    let chosen = chosen()?;
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Contender::ALL.len()];
    let mut counts: Vec<Vec<Counts>> = vec![Vec::new(); Contender::ALL.len()];
    let mut base = Vec::new();
    for round in 0..ROUNDS {
        // Each run between two no-tracer storms, its rate a ratio to their
        // mean: the VM's rate drifts by several percent within a round
        // (one baseline per round gave no-tracer spreads of
        // 191,000–212,000 pkt/s and contender ratios swinging with them;
        // one just before each run still left a drift within the pair).
        let (mut before, _) = storm(&socket)?;
        base.push(before);
        for (i, c) in Contender::ALL.iter().enumerate() {
            if !chosen.contains(c) {
                continue;
            }
            let (rate, n) =
                run(&ctx, *c, &socket).with_context(|| format!("round {round}: {}", c.label()))?;
            let (after, _) = storm(&socket)?;
            base.push(after);
            ratios[i].push(rate / ((before + after) / 2.0));
            counts[i].push(n);
            before = after;
        }
    }

    println!(
        "drop storm: {} s per run, {ROUNDS} interleaved rounds, UDP to a closed port across a veth pair into {}",
        STORM.as_secs(),
        ctx.ns
    );
    println!(
        "  no tracer                   {} pkt/s",
        Spread::of(&base).show(0)
    );
    println!(
        "  ratio to the mean of the no-tracer runs around it, median (min–max); events per round (median)"
    );
    for (i, c) in Contender::ALL.iter().enumerate() {
        if !chosen.contains(c) {
            continue;
        }
        let med = |f: fn(&Counts) -> u64| {
            let mut v: Vec<u64> = counts[i].iter().map(f).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let detail = match c {
            Contender::LabctlJson | Contender::BpftracePrint => format!(
                "delivered {} lost {} of {}",
                med(|c| c.delivered),
                med(|c| c.lost),
                med(|c| c.sent)
            ),
            Contender::BpftraceEmpty => String::new(),
            _ => format!("counted {} of {}", med(|c| c.counted), med(|c| c.sent)),
        };
        println!(
            "  {:<27} {}  {detail}",
            c.label(),
            Spread::of(&ratios[i]).show(3)
        );
    }
    match dropwatch_available() {
        Ok(()) => println!("  dropwatch: available but not measured (interactive only)"),
        Err(why) => println!("  dropwatch: not measured: {why}"),
    }
    ns.delete()?;
    tx.delete()?;
    Ok(())
}

/// The contenders to run: all, or those whose label contains one of the
/// comma-separated words in `LABCTL_BENCH_ONLY` (`json,summary` runs
/// labctl's two modes only, for a quicker look while working on them).
fn chosen() -> anyhow::Result<Vec<Contender>> {
    let Ok(only) = std::env::var("LABCTL_BENCH_ONLY") else {
        return Ok(Contender::ALL.to_vec());
    };
    let words: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let chosen: Vec<Contender> = Contender::ALL
        .into_iter()
        .filter(|c| words.iter().any(|w| c.label().contains(w)))
        .collect();
    if chosen.is_empty() {
        bail!(
            "LABCTL_BENCH_ONLY={only:?} names no contender: words are matched against {}",
            Contender::ALL.map(Contender::label).join(", ")
        );
    }
    Ok(chosen)
}

/// Sends as fast as possible for STORM; returns packets per second and
/// how many were sent (each one a drop in the receiver's namespace).
fn storm(socket: &UdpSocket) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < STORM {
        for _ in 0..256 {
            socket.send_to(b"storm", RECEIVER)?;
        }
        n += 256;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), n))
}

/// A file in /dev/shm for a contender's output (memory, like `> /dev/null`
/// but readable afterwards): no reader competes for the CPU.
fn shm(tag: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(netns::unique_name(tag))
}

fn run(ctx: &Ctx, c: Contender, socket: &UdpSocket) -> anyhow::Result<(f64, Counts)> {
    let out = shm("labbench-out");
    let err = shm("labbench-err");
    let ready = std::env::temp_dir().join(netns::unique_name("labbench-ready"));
    let mut cmd = match c {
        Contender::LabctlSummary | Contender::LabctlJson => {
            let mut cmd = Command::new(&ctx.labctl);
            cmd.args([
                "trace",
                "--netns",
                &ctx.ns,
                "--output",
                "json",
                "--ready-file",
            ])
            .arg(&ready);
            if c == Contender::LabctlSummary {
                cmd.arg("--summary");
            }
            cmd
        }
        Contender::BpftraceCount | Contender::BpftracePrint | Contender::BpftraceEmpty => {
            let mut cmd = Command::new("bpftrace");
            cmd.arg("-e").arg(bpftrace_program(ctx, c));
            cmd
        }
        Contender::PerfStat => {
            let mut cmd = Command::new("perf");
            cmd.args(["stat", "-x,", "-e", "skb:kfree_skb", "-a", "-o"])
                .arg(&err)
                .args(["--", "sleep", "3600"]);
            cmd
        }
    };
    let mut child = cmd
        .stdout(std::fs::File::create(&out)?)
        .stderr(if c == Contender::PerfStat {
            std::fs::File::create("/dev/null")?
        } else {
            std::fs::File::create(&err)?
        })
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", c.label()))?;
    wait_ready(c, &mut child, &ready, &out)?;
    let (rate, sent) = storm(socket)?;
    // Stop after the traffic: each tool delivers what it has queued before
    // it exits on SIGINT; perf stat reports once its workload ends.
    let stop = match c {
        Contender::PerfStat => child_named(child.id(), "sleep").context("perf's workload")?,
        _ => child.id(),
    };
    interrupt(c, &mut child, stop)?;
    std::fs::remove_file(&ready).ok();
    let mut counts = read_counts(c, &out, &err)?;
    counts.sent = sent;
    std::fs::remove_file(&out).ok();
    std::fs::remove_file(&err).ok();
    Ok((rate, counts))
}

/// SIGINT to `stop` until `child` exits: bpftrace can miss a SIGINT that
/// arrives as it enters its wait (seen once in a run here: the bench hung
/// for minutes until a second SIGINT), so it is sent again every second,
/// and the run fails after ten.
fn interrupt(c: Contender, child: &mut Child, stop: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The workload (perf's) may be gone already: then only the wait matters.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stop as i32),
            nix::sys::signal::SIGINT,
        )
        .ok();
        let resend = Instant::now() + Duration::from_secs(1);
        while Instant::now() < resend {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait()?;
            bail!("{} did not stop within 10 s of SIGINT", c.label());
        }
    }
}

fn bpftrace_program(ctx: &Ctx, c: Contender) -> String {
    let filter = format!(
        "/((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == {} && args->reason != {}/",
        ctx.ino, ctx.consumed
    );
    let body = match c {
        Contender::BpftraceCount => "{ @[args->reason] = count(); }".to_owned(),
        Contender::BpftracePrint => "{ $skb = (struct sk_buff *)args->skbaddr; \
             $ip = (struct iphdr *)($skb->head + $skb->network_header); \
             printf(\"%d %s %s %s\\n\", args->reason, ksym(args->location), \
             ntop($ip->saddr), ntop($ip->daddr)); }"
            .to_owned(),
        _ => "{ }".to_owned(),
    };
    // BEGIN runs once every probe is attached: the ready signal.
    let filter = if c == Contender::BpftraceEmpty {
        ""
    } else {
        &filter
    };
    format!("BEGIN {{ printf(\"ready\\n\"); }} tracepoint:skb:kfree_skb {filter} {body}")
}

fn wait_ready(c: Contender, child: &mut Child, ready: &Path, out: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let is_ready = match c {
            Contender::LabctlSummary | Contender::LabctlJson => ready.exists(),
            Contender::BpftraceCount | Contender::BpftracePrint | Contender::BpftraceEmpty => {
                std::fs::read_to_string(out).is_ok_and(|s| s.lines().any(|l| l == "ready"))
            }
            // perf stat enables its counters and then starts the workload.
            Contender::PerfStat => child_named(child.id(), "sleep").is_some(),
        };
        if is_ready {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{} exited before it was ready ({status})", c.label());
        }
        if Instant::now() > deadline {
            bail!("{} never became ready", c.label());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn child_named(pid: u32, name: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|comm| comm.trim() == name)
        })
}

/// The last line of a (possibly large) file.
fn last_line(path: &Path) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail)?;
    tail.lines()
        .last()
        .map(str::to_owned)
        .context("the tracer wrote nothing")
}

fn read_counts(c: Contender, out: &Path, err: &Path) -> anyhow::Result<Counts> {
    let mut n = Counts::default();
    match c {
        Contender::LabctlSummary | Contender::LabctlJson => {
            let summary: serde_json::Value = serde_json::from_str(&last_line(out)?)?;
            n.delivered = summary["events"].as_u64().unwrap_or(0);
            n.lost = summary["lost"].as_u64().unwrap_or(0);
            n.counted = summary["by_reason"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
        }
        Contender::BpftraceCount => {
            // @[3]: 123456
            n.counted = std::fs::read_to_string(out)?
                .lines()
                .filter_map(|l| l.strip_prefix("@[")?.split_once("]: "))
                .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                .sum();
        }
        Contender::BpftracePrint => {
            use std::io::BufRead as _;
            let file = std::io::BufReader::new(std::fs::File::open(out)?);
            n.delivered = file
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.split(' ').count() == 4)
                .count() as u64;
            // "Lost 1234 events"
            n.lost = std::fs::read_to_string(err)?
                .lines()
                .filter_map(|l| l.strip_prefix("Lost ")?.split_once(' '))
                .filter_map(|(v, _)| v.parse::<u64>().ok())
                .sum();
        }
        Contender::PerfStat => {
            // 123456,,skb:kfree_skb,...
            n.counted = std::fs::read_to_string(err)?
                .lines()
                .find(|l| l.contains("skb:kfree_skb"))
                .and_then(|l| l.split(',').next()?.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Contender::BpftraceEmpty => {}
    }
    Ok(n)
}

/// Whether dropwatch can run here: it needs the kernel's NET_DM netlink
/// family (CONFIG_NET_DROP_MONITOR).
fn dropwatch_available() -> Result<(), String> {
    let out = Command::new("dropwatch")
        .args(["-l", "kas"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run dropwatch: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if text.contains("NET_DM") {
        Err("this kernel has no NET_DM drop monitor (CONFIG_NET_DROP_MONITOR)".into())
    } else {
        Ok(())
    }
}
