//! Privileged: `labctl metrics` scraped by the real Prometheus (Debian's
//! `prometheus`), its exposition checked by `promtool check metrics`; the
//! endpoint's bounds (clients that never finish a request, Ctrl-C with
//! clients connected, a container runtime that never answers).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lab_cli::lab::{
    plan::{LabOptions, MasqMode},
    traffic::{self, Proto, TrafficSpec},
};
use serde_json::Value;

/// GET `url` (http://HOST:PORT/PATH) with HTTP/1.0; the body.
fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// A free TCP port on 127.0.0.1 (released for the caller to bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child killed when dropped (even on panic).
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Queries Prometheus until `query` returns one sample (30 s at most).
fn prom_query(base: &str, query: &str) -> Value {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("{base}/api/v1/query?query={q}");
        let reply = TcpStream::connect(base.strip_prefix("http://").unwrap())
            .is_ok()
            .then(|| http_get(&url));
        if let Some(reply) = reply {
            let v: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(v["status"], "success", "{v}");
            if let Some(sample) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                return sample.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned {query}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_the_exact_drop_count() {
    if !common::privileged("prometheus_scrapes_the_exact_drop_count") {
        return;
    }
    let ns = common::netns("labtest-me");
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut labctl = Killed(
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["metrics", "--listen", "127.0.0.1:0", "--netns", ns.name()])
            .args(["--netns", "host", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::wait_ready(&mut labctl.0, &ready);
    common::send_udp(&ns, 9, 37);

    // The exposition, as promtool reads it.
    let text = http_get(&url);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/setup.sh installs prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let line = format!(
        "labctl_drops_total{{netns=\"{}\",pod=\"\",reason=\"NO_SOCKET\"}} 37",
        ns.name()
    );
    assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");

    // Prometheus itself scrapes labctl.
    let target = url
        .strip_prefix("http://")
        .unwrap()
        .trim_end_matches("/metrics");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: labctl\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus (scripts/setup.sh installs it)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let sample = prom_query(
        &base,
        &format!(
            "labctl_drops_total{{netns=\"{}\",reason=\"NO_SOCKET\"}}",
            ns.name()
        ),
    );
    assert_eq!(sample["value"][1], "37", "{sample}");
    assert_eq!(sample["metric"]["job"], "labctl");
    // Per-namespace conntrack values came with it.
    let limit = prom_query(
        &base,
        &format!("labctl_conntrack_entries_limit{{netns=\"{}\"}}", ns.name()),
    );
    assert!(limit["value"][1].as_str().unwrap().parse::<u64>().unwrap() > 0);
    // More drops show in the next scrape, still exact.
    common::send_udp(&ns, 9, 5);
    let query = format!(
        "labctl_drops_total{{netns=\"{}\",reason=\"NO_SOCKET\"}} == 42",
        ns.name()
    );
    prom_query(&base, &query);

    common::interrupt(&labctl.0);
    let status = common::wait_exit(&mut labctl.0, 10);
    assert!(status.success(), "{status}");
}

/// The metric line `name{labels} value` of an exposition, if present.
fn sample(text: &str, name_and_labels: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn ebpf_masquerading_is_exported_per_pod_with_the_nat_table() {
    if !common::privileged("ebpf_masquerading_is_exported_per_pod_with_the_nat_table") {
        return;
    }
    let lab = common::lab_with(
        "basic",
        "metnat",
        LabOptions {
            masq: MasqMode::Ebpf,
            ..LabOptions::default()
        },
    );
    let node = format!("{}/node1", lab.name());
    let pod_a = format!("{}/pod-a", lab.name());
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut labctl = Killed(
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["metrics", "--listen", "127.0.0.1:0", "--netns", &node])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::wait_ready(&mut labctl.0, &ready);
    // pod-a → world: 3 TCP connections, each one mapping in the NAT table.
    let (a, world) = (
        lab.endpoint("pod-a").unwrap(),
        lab.endpoint("world").unwrap(),
    );
    let spec = TrafficSpec {
        proto: Proto::Tcp,
        count: 3,
        ..TrafficSpec::default()
    };
    let report = traffic::run(&a, &world, &spec).unwrap();
    assert!(report.all_answered(), "{}", report.text());

    let text = http_get(&url);
    let table = lab_cli::masq::nat::table(lab.netns("node1").unwrap().inode().unwrap()).unwrap();
    let node_labels = format!("{{netns=\"{node}\"}}");
    assert_eq!(
        sample(&text, &format!("labctl_nat_entries{node_labels}")),
        Some(table.used as u64),
        "{text}"
    );
    assert!(table.used >= 3, "3 connections, {} mappings", table.used);
    assert_eq!(
        sample(&text, &format!("labctl_nat_entries_limit{node_labels}")),
        Some(table.capacity as u64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("labctl_nat_events_total{{event=\"allocated\",netns=\"{node}\"}}")
        ),
        Some(table.allocated)
    );
    let pod = format!("{{netns=\"{node}\",pod=\"{pod_a}\"}}");
    assert_eq!(
        sample(&text, &format!("labctl_masquerade_connections_total{pod}")),
        Some(3),
        "{text}"
    );
    let egress = format!(
        "labctl_masquerade_packets_total{{direction=\"egress\",netns=\"{node}\",pod=\"{pod_a}\"}}"
    );
    assert!(sample(&text, &egress).unwrap_or(0) >= 3 * 3, "{text}");
    common::interrupt(&labctl.0);
    assert!(common::wait_exit(&mut labctl.0, 10).success());
}

/// Local-out drops (an OUTPUT rule: no device yet, UDP over IPv4 and IPv6)
/// count in their namespace: a lab pod's with its pod label, a node's
/// without, exactly as nft counted them.
#[test]
fn local_out_drops_count_in_their_namespace() {
    if !common::privileged("local_out_drops_count_in_their_namespace") {
        return;
    }
    use std::net::{Ipv6Addr, SocketAddr};
    const PORT: u16 = 5001;
    let lab = common::lab("basic", "metlo");
    let (pod_a, node1) = (lab.netns("pod-a").unwrap(), lab.netns("node1").unwrap());
    for ns in [&pod_a, &node1] {
        common::drop_udp_out(ns, PORT);
        common::enable_ipv6_on_lo(ns);
    }
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let node = format!("{}/node1", lab.name());
    let mut labctl = Killed(
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["metrics", "--listen", "127.0.0.1:0", "--netns", &node])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::wait_ready(&mut labctl.0, &ready);
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, PORT).into();
    let (b, world) = (
        lab.endpoint("pod-b").unwrap().addr,
        lab.endpoint("world").unwrap().addr,
    );
    common::send_udp_dropped_out(&pod_a, (b, PORT).into(), 5);
    common::send_udp_dropped_out(&pod_a, v6, 3);
    common::send_udp_dropped_out(&node1, (world, PORT).into(), 6);
    common::send_udp_dropped_out(&node1, v6, 2);
    let counted = |ns| {
        common::nft_counted(ns, "ip", "labtest_out") + common::nft_counted(ns, "ip6", "labtest_out")
    };
    assert_eq!((counted(&pod_a), counted(&node1)), (8, 8));

    // The counter counts as the drop happens: one scrape has them all.
    let text = http_get(&url);
    let pod = format!("{}/pod-a", lab.name());
    assert_eq!(
        sample(
            &text,
            &format!(
                "labctl_drops_total{{netns=\"{pod}\",pod=\"{pod}\",reason=\"NETFILTER_DROP\"}}"
            )
        ),
        Some(8),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("labctl_drops_total{{netns=\"{node}\",pod=\"\",reason=\"NETFILTER_DROP\"}}")
        ),
        Some(8),
        "{text}"
    );
    common::interrupt(&labctl.0);
    assert!(common::wait_exit(&mut labctl.0, 10).success());
}

/// GET `url` with HTTP/1.0, giving up after `limit`: the status line and
/// the body, or why it failed.
fn try_get(url: &str, limit: Duration) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let addr: std::net::SocketAddr = host.parse().unwrap();
    let mut stream = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("{e} after {} bytes", reply.len()))?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP reply: {reply:?}"))?;
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

/// A connection that sent half a request head and waits.
fn half_sent(url: &str) -> TcpStream {
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap()
        .0;
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {host}\r\n").unwrap();
    stream
}

/// `labctl [pre...] metrics --listen LISTEN --netns host --ready-file F`,
/// stderr piped; with `nofile`, that file-descriptor limit.
fn metrics(pre: &[&str], listen: &str, ready: &std::path::Path, nofile: Option<u64>) -> Killed {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labctl"));
    c.args(pre)
        .args([
            "metrics",
            "--listen",
            listen,
            "--netns",
            "host",
            "--ready-file",
        ])
        .arg(ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            c.pre_exec(move || {
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
                    .map_err(std::io::Error::from)
            });
        }
    }
    Killed(c.spawn().unwrap())
}

/// What a child wrote on stderr, once it exited.
fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn a_half_sent_request_does_not_hold_the_exit_after_ctrl_c() {
    if !common::privileged("a_half_sent_request_does_not_hold_the_exit_after_ctrl_c") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut labctl = metrics(&[], "127.0.0.1:0", &ready, None);
    let url = common::wait_ready(&mut labctl.0, &ready);
    let held = half_sent(&url);
    // Served while it waits.
    let (status, body) = try_get(&url, Duration::from_secs(10)).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        body.contains("labctl_scrape_errors{source=\"conntrack\"} 0"),
        "{body}"
    );

    common::interrupt(&labctl.0);
    let asked = Instant::now();
    let status = common::wait_exit(&mut labctl.0, 10);
    let took = asked.elapsed();
    assert!(status.success(), "{status}: {}", stderr_of(&mut labctl.0));
    // The grace is 2 s; Ctrl-C is seen within 0.1 s.
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after Ctrl-C"
    );
    drop(held);
}

#[test]
fn idle_partial_connections_do_not_lock_out_a_scrape() {
    if !common::privileged("idle_partial_connections_do_not_lock_out_a_scrape") {
        return;
    }
    const HELD: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    // 128 descriptors: about 20 of labctl's own, room for the 64
    // connections it keeps, not for 300.
    let mut labctl = metrics(&[], "127.0.0.1:0", &ready, Some(128));
    let url = common::wait_ready(&mut labctl.0, &ready);
    let held: Vec<TcpStream> = (0..HELD).map(|_| half_sent(&url)).collect();

    let asked = Instant::now();
    let (status, body) = try_get(&url, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no scrape with {HELD} half-sent requests open: {e}"));
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        body.contains("labctl_scrape_errors{source=\"conntrack\"} 0"),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // The oldest were closed to make room; the youngest are closed by the
    // header timeout (10 s) without an answer.
    let read_end = |mut s: &TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
            Err(e) => Err(e),
        }
    };
    assert_eq!(read_end(&held[0], Duration::from_secs(1)).unwrap(), 0);
    let youngest = &held[HELD - 1];
    assert_eq!(read_end(youngest, Duration::from_secs(15)).unwrap(), 0);

    common::interrupt(&labctl.0);
    assert!(common::wait_exit(&mut labctl.0, 10).success());
}

#[test]
fn localhost_is_served_and_any_other_address_is_warned_about() {
    if !common::privileged("localhost_is_served_and_any_other_address_is_warned_about") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut labctl = metrics(&[], "localhost:0", &ready, None);
    let url = common::wait_ready(&mut labctl.0, &ready);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        try_get(&url, Duration::from_secs(10))
            .unwrap()
            .0
            .contains(" 200 ")
    );
    common::interrupt(&labctl.0);
    assert!(common::wait_exit(&mut labctl.0, 10).success());
    let err = stderr_of(&mut labctl.0);
    assert!(!err.contains("authentication"), "{err}");

    // Every address, in a namespace of our own (nothing reaches it).
    let ns = common::netns("labtest-mwarn");
    let ready = dir.path().join("ready-any");
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display()))
        .arg(env!("CARGO_BIN_EXE_labctl"))
        .args(["metrics", "--listen", "0.0.0.0:0", "--netns", "host"])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut labctl = Killed(c.spawn().unwrap());
    let url = common::wait_ready(&mut labctl.0, &ready);
    assert!(url.starts_with("http://0.0.0.0:"), "{url}");
    common::interrupt(&labctl.0);
    assert!(common::wait_exit(&mut labctl.0, 10).success());
    let err = common::said(stderr_of(&mut labctl.0).as_bytes());
    assert!(
        err.starts_with("warning: 0.0.0.0:") && err.contains("has no authentication"),
        "{err}"
    );
}

/// A CRI socket that accepts connections and never answers.
struct SilentRuntime {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl SilentRuntime {
    fn at(path: std::path::PathBuf) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            held.len()
        });
        Self {
            path,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting; how many connections it held.
    fn close(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for SilentRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_runtime_that_never_answers_does_not_slow_scrapes() {
    if !common::privileged("a_runtime_that_never_answers_does_not_slow_scrapes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = SilentRuntime::at(dir.path().join("cri.sock"));
    let socket = runtime.path.to_str().unwrap().to_owned();
    let ready = dir.path().join("ready");
    let mut labctl = metrics(&["--cri-socket", &socket], "127.0.0.1:0", &ready, None);
    let url = common::wait_ready(&mut labctl.0, &ready);
    // Drops in a namespace that appears now: a name never seen.
    let ns = common::netns("labtest-mcri");
    common::send_udp(&ns, 9, 3);
    let line = format!(
        "labctl_drops_total{{netns=\"{}\",pod=\"\",reason=\"NO_SOCKET\"}} 3",
        ns.name()
    );
    // Scrapes 1.5 s apart, past the names' refresh (1 s, 2 s) and the
    // runtime's timeout (3 s): each answered at once.
    let mut took = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let (status, body) = try_get(&url, Duration::from_secs(10)).unwrap();
        took.push(asked.elapsed());
        assert!(status.contains(" 200 "), "{status}");
        assert!(body.lines().any(|l| l == line), "{line} not in:\n{body}");
        thread::sleep(Duration::from_millis(1500));
    }
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(500)),
        "scrapes took {took:?}"
    );
    common::interrupt(&labctl.0);
    assert!(common::wait_exit(&mut labctl.0, 10).success());
    let err = common::said(stderr_of(&mut labctl.0).as_bytes());
    let warning = "pods are named from kubelet's cgroups instead";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert!(err.contains(&socket), "{err}");
    // labctl did ask it.
    assert!(runtime.close() >= 1);
}
