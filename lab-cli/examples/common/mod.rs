//! What the benchmarks share: a median with its interval, verdicts, and
//! a TCP connect/request/response loop against an echo server.

#![allow(
    dead_code,
    reason = "each benchmark uses a different part of the helpers"
)]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lab_cli::kernel::netns::NetNs;

/// The smallest ratio called a difference: on this 2-core shared machine
/// reruns moved medians by up to ×1.4 at the same settings, so smaller
/// differences are shown but not called.
pub const VERDICT: f64 = 2.0;

/// Median of a set of measurements and its interval: from 7 values on,
/// the 2nd lowest to the 2nd highest (a distribution-free 87.5% confidence
/// interval of the median for 7); below that, min to max.
#[derive(Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Self {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let trim = usize::from(v.len() >= 7);
        Self {
            median: v[v.len() / 2],
            min: v[trim],
            max: v[v.len() - 1 - trim],
        }
    }

    /// Some(true) when the whole interval is at or above ×VERDICT,
    /// Some(false) when at or below 1/VERDICT, None otherwise (a ratio).
    pub fn called(&self) -> Option<bool> {
        if self.min >= VERDICT {
            Some(true)
        } else if self.max <= 1.0 / VERDICT {
            Some(false)
        } else {
            None
        }
    }

    /// `median (min–max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }

    /// Some(true) when self's interval is above other's and its median
    /// at least ×VERDICT other's, Some(false) when below, None otherwise.
    pub fn above(&self, other: &Spread) -> Option<bool> {
        if self.min > other.max && self.median >= other.median * VERDICT {
            Some(true)
        } else if self.max < other.min && self.median * VERDICT <= other.median {
            Some(false)
        } else {
            None
        }
    }
}

pub fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Pinning only steadies the figures; without it they still hold.
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).ok();
    }
}

/// An echo server in `ns` on `addr:port` (56 bytes back per connection),
/// pinned to CPU 1, until `stop`.
pub fn echo_server(
    ns: &NetNs,
    addr: Ipv4Addr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let listener = ns
        .run(|| TcpListener::bind(SocketAddrV4::new(addr, port)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        pin_to_cpu(1);
        let mut buf = [0u8; 56];
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).ok();
                    if s.read_exact(&mut buf).is_ok() {
                        s.write_all(&buf).ok();
                    }
                }
                // Wait for the next connection without spinning: several
                // idle servers polling every 50 µs kept a CPU busy enough
                // to defer the veths' packet processing to ksoftirqd (a
                // scheduler tick, ~5 ms per connect here).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                    let mut fds = [PollFd::new(
                        std::os::fd::AsFd::as_fd(&listener),
                        PollFlags::POLLIN,
                    )];
                    if let Err(e) = poll(&mut fds, PollTimeout::from(50u8)) {
                        eprintln!("echo server: poll: {e}");
                    }
                }
                Err(_) => {}
            }
        }
    })
}

pub struct Crr {
    pub conn_per_s: f64,
    /// Connections that failed (a lost SYN retransmitted past the timeout
    /// on a disturbed machine, say); reported, not fatal.
    pub failed: u32,
    /// Connect latencies, sorted, in microseconds.
    pub connect_us: Vec<f64>,
}

impl Crr {
    pub fn percentile(&self, p: f64) -> f64 {
        let i = ((self.connect_us.len() as f64 - 1.0) * p).round() as usize;
        self.connect_us[i]
    }
}

/// Connections from `pod` to the echo server at `to` for `run`, pinned to
/// CPU 0.
pub fn crr(pod: &NetNs, to: SocketAddrV4, run: Duration) -> anyhow::Result<Crr> {
    pod.run(move || -> anyhow::Result<Crr> {
        pin_to_cpu(0);
        let target = to;
        let mut lat = Vec::with_capacity(20_000);
        let mut failed = 0;
        let msg = [7u8; 56];
        let mut back = [0u8; 56];
        let start = Instant::now();
        while start.elapsed() < run {
            let t = Instant::now();
            let Ok(mut s) = TcpStream::connect_timeout(&target.into(), Duration::from_secs(3))
            else {
                failed += 1;
                continue;
            };
            let connected = t.elapsed().as_secs_f64() * 1e6;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            if s.write_all(&msg)
                .and_then(|()| s.read_exact(&mut back))
                .is_err()
            {
                failed += 1;
                continue;
            }
            lat.push(connected);
        }
        if lat.is_empty() {
            bail!("no connection to {target} succeeded in {run:?}");
        }
        let secs = start.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        Ok(Crr {
            conn_per_s: lat.len() as f64 / secs,
            failed,
            connect_us: lat,
        })
    })?
}

/// (run time ns, run count) of loaded programs named `name`, from bpftool.
pub fn prog_stats(name: &str) -> anyhow::Result<(u64, u64)> {
    let out = std::process::Command::new("bpftool")
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

/// ns per run of each program while `f` runs.
pub fn per_run<const N: usize>(
    names: [&str; N],
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<[f64; N]> {
    let before = names.map(prog_stats);
    f()?;
    let mut out = [0.0; N];
    for (i, name) in names.iter().enumerate() {
        let b = before[i].as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let a = prog_stats(name)?;
        let runs = a.1.saturating_sub(b.1);
        if runs == 0 {
            bail!("{name} did not run");
        }
        out[i] = a.0.saturating_sub(b.0) as f64 / runs as f64;
    }
    Ok(out)
}
