//! `cargo xtask bench services`: one ClusterIP service reached from a pod,
//! with 10, 1,000 and 10,000 services defined (3 backends each; the extra
//! ones never match), implemented by kube-proxy's iptables mode,
//! kube-proxy's nftables mode, per-packet eBPF (tc) and socket-LB, each in
//! its own `service` lab, all four in one run.
//!
//! - New connections per second from the client pod to the VIP (connect,
//!   56-byte echo, close) and connect latency (the first packet's round
//!   trip through the translation: median and p99). The four modes are
//!   measured back to back in each round; the client is pinned to CPU 0
//!   and the echo servers in the three backend pods to CPU 1.
//! - The time to add one service at each size: the same sync `labctl svc
//!   add` does, its plan and its writing (iptables: iptables-save, then one
//!   iptables-restore of both tables; nftables: the table listed as JSON,
//!   then one nft transaction of what changed; eBPF: the maps read, then a
//!   few map writes), on the
//!   client's node, where its connections are translated (node 2 keeps the
//!   lab's one service).
//!
//! The service measured sits in the middle of the list: kube-proxy's
//! iptables KUBE-SERVICES is walked rule by rule, so a new connection to it
//! passes half of the other services' rules, the average case. Figures are
//! medians over 5 rounds with min–max; a difference is called only where
//! every round's ratio is beyond ×2 (see `common`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Crr, Spread, VERDICT, crr, echo_server};
use lab_cli::{
    kernel::{cgroup, sysctl},
    lab::{Lab, plan::LabOptions, services as lab_services},
    services::{self, Endpoint, Frontend, KubeProxyMode, L4, model::APP_PORT},
};

const ROUNDS: usize = 5;
const RUN: Duration = Duration::from_secs(2);
const SIZES: [usize; 3] = [10, 1_000, 10_000];
const MODES: [KubeProxyMode; 4] = [
    KubeProxyMode::Iptables,
    KubeProxyMode::Nftables,
    KubeProxyMode::Ebpf,
    KubeProxyMode::EbpfSocket,
];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// `n` services: the measured one (VIP 10.96.0.10:80 -> web-1..3) in the
/// middle, the others on their own VIPs from 10.100.0.0 with the same
/// backends (they never match the client's traffic).
fn frontends(lab: &Lab, n: usize) -> Vec<Frontend> {
    let backends: Vec<Endpoint> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|p| Endpoint {
            addr: lab.endpoint(p).unwrap().addr,
            port: APP_PORT,
        })
        .collect();
    let one = |vip: Ipv4Addr, name: String| Frontend {
        namespace: lab.name().to_owned(),
        service: name,
        vip,
        port: 80,
        proto: L4::Tcp,
        backends: backends.clone(),
    };
    let mut out: Vec<Frontend> = (1..n)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i as u32);
            one(vip, format!("extra-{i}"))
        })
        .collect();
    out.insert(out.len() / 2, one(VIP, "web".into()));
    out
}

struct Row {
    conn_per_s: Vec<f64>,
    median_us: Vec<f64>,
    p99_us: Vec<f64>,
    failed: u32,
}

fn main() -> anyhow::Result<()> {
    println!("bench services: new connections to one ClusterIP from a pod, as services grow");
    let tag = std::process::id() % 10_000;
    let mut labs = Vec::new();
    for mode in MODES {
        let name = format!("bs{tag}-{}", &mode.as_str()[..3.min(mode.as_str().len())]);
        let name = if mode == KubeProxyMode::EbpfSocket {
            format!("bs{tag}-sock")
        } else {
            name
        };
        labs.push(Lab::up(
            Some(&name),
            "service",
            LabOptions {
                kube_proxy: Some(mode),
                ..Default::default()
            },
        )?);
    }
    let result = run(&labs);
    for lab in labs {
        if let Err(e) = lab.down() {
            eprintln!("tearing down: {e}");
        }
    }
    result
}

fn run(labs: &[Lab]) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for lab in labs {
        // Every connection goes to one address (the VIP) from one client:
        // at thousands per second its ephemeral ports run out of TIME_WAIT
        // sockets within a round, and connect() then spends milliseconds
        // searching for a port (measured: a 4–6 ms median connect in every
        // mode but socket-LB, whose connections go to three backend
        // addresses). As netperf's TCP_CRR users do, the client may reuse
        // TIME_WAIT ports.
        lab.netns("client")?
            .run(|| sysctl::write(&["net", "ipv4", "tcp_tw_reuse"], "1"))??;
        for pod in ["web-1", "web-2", "web-3"] {
            let addr = lab.endpoint(pod).unwrap().addr;
            servers.push(echo_server(&lab.netns(pod)?, addr, APP_PORT, stop.clone()));
        }
    }
    let mut table: Vec<(usize, KubeProxyMode, Row, Spread)> = Vec::new();
    for size in SIZES {
        let mut add_ms: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
        for (i, lab) in labs.iter().enumerate() {
            // The client's node is where its connections are translated;
            // node 2 keeps the one service `lab up` wrote.
            let mut cluster = lab_services::cluster(&lab.plan)?;
            cluster.nodes.truncate(1);
            let dp = services::datapath(MODES[i], cluster);
            let dp = &*dp;
            let fronts = frontends(lab, size);
            let t = Instant::now();
            let plan = services::sync(dp, &fronts)?;
            println!(
                "  {size:>6} services, {:<11} written in {:>7.1} ms ({})",
                MODES[i].as_str(),
                t.elapsed().as_secs_f64() * 1e3,
                plan.summary()
            );
            // Adding one more service, as `svc add` does, then removing it.
            let mut more = fronts.clone();
            for r in 0..ROUNDS {
                more.push(Frontend {
                    service: format!("added-{r}"),
                    vip: Ipv4Addr::new(10, 101, 0, r as u8 + 1),
                    ..fronts[0].clone()
                });
                let t = Instant::now();
                services::sync(dp, &more)?;
                add_ms[i].push(t.elapsed().as_secs_f64() * 1e3);
                more.pop();
                services::sync(dp, &more)?;
            }
        }
        let mut rows: Vec<Row> = (0..MODES.len())
            .map(|_| Row {
                conn_per_s: Vec::new(),
                median_us: Vec::new(),
                p99_us: Vec::new(),
                failed: 0,
            })
            .collect();
        for round in 0..ROUNDS {
            // Alternate the order so no mode always runs first.
            let order: Vec<usize> = if round % 2 == 0 {
                (0..MODES.len()).collect()
            } else {
                (0..MODES.len()).rev().collect()
            };
            for i in order {
                let lab = &labs[i];
                let client = lab.netns("client")?;
                // Socket-LB translates only the pod's processes.
                let _as_pod = lab
                    .pod_cgroup("client")
                    .map(|c| cgroup::Joined::enter(&c))
                    .transpose()?;
                let c: Crr = crr(&client, SocketAddrV4::new(VIP, 80), RUN)?;
                rows[i].conn_per_s.push(c.conn_per_s);
                rows[i].median_us.push(c.percentile(0.5));
                rows[i].p99_us.push(c.percentile(0.99));
                rows[i].failed += c.failed;
            }
        }
        for (i, row) in rows.into_iter().enumerate() {
            table.push((size, MODES[i], row, Spread::of(&add_ms[i])));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().ok();
    }
    report(&table);
    Ok(())
}

fn report(table: &[(usize, KubeProxyMode, Row, Spread)]) {
    println!(
        "\n{:>8} {:<12} {:>22} {:>20} {:>18} {:>22}",
        "services",
        "mode",
        "conn/s",
        "connect µs (median)",
        "connect µs (p99)",
        "add one service (ms)"
    );
    for (size, mode, row, add) in table {
        println!(
            "{size:>8} {:<12} {:>22} {:>20} {:>18} {:>22}{}",
            mode.as_str(),
            Spread::of(&row.conn_per_s).show(0),
            Spread::of(&row.median_us).show(1),
            Spread::of(&row.p99_us).show(0),
            add.show(2),
            if row.failed > 0 {
                format!("  ({} failed)", row.failed)
            } else {
                String::new()
            }
        );
    }
    println!(
        "\nverdicts (called only where every round's ratio is beyond ×{VERDICT}; connect latency, per round against iptables):"
    );
    let get = |size: usize, mode: KubeProxyMode| {
        table
            .iter()
            .find(|(s, m, _, _)| *s == size && *m == mode)
            .map(|(_, _, r, a)| (r, a))
            .unwrap()
    };
    for size in SIZES {
        let (ipt, ipt_add) = get(size, KubeProxyMode::Iptables);
        for mode in &MODES[1..] {
            let (row, add) = get(size, *mode);
            let ratios: Vec<f64> = ipt
                .median_us
                .iter()
                .zip(&row.median_us)
                .map(|(a, b)| a / b)
                .collect();
            let r = Spread::of(&ratios);
            let verdict = match r.called() {
                Some(true) => format!("{} connects ×{} faster", mode.as_str(), r.show(2)),
                Some(false) => format!(
                    "{} connects ×{} slower",
                    mode.as_str(),
                    (1.0 / r.median * 100.0).round() / 100.0
                ),
                None => format!(
                    "{} within ×{VERDICT} of iptables (×{})",
                    mode.as_str(),
                    r.show(2)
                ),
            };
            let adds = add.median / ipt_add.median;
            println!(
                "  {size:>6} services: {verdict}; adding a service takes ×{adds:.3} iptables' time"
            );
        }
    }
    println!(
        "growth of connect latency from {} to {} services (medians):",
        SIZES[0], SIZES[2]
    );
    for mode in MODES {
        let (a, _) = get(SIZES[0], mode);
        let (b, _) = get(SIZES[2], mode);
        let g = Spread::of(&b.median_us).median / Spread::of(&a.median_us).median;
        let called = if g >= VERDICT {
            "grows"
        } else if g <= 1.0 / VERDICT {
            "shrinks"
        } else {
            "flat within ×2"
        };
        println!("  {:<12} ×{g:.2} ({called})", mode.as_str());
    }
}
