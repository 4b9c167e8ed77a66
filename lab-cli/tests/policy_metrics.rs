//! Privileged: `labctl metrics` exports what each `--policy-mode`
//! datapath counted, by policy, direction and verdict: N allowed UDP flows
//! and M denied datagrams into deathstar-1 give exactly N and M more in the
//! right series, in both modes; the exposition passes `promtool check
//! metrics`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

mod common;
#[path = "common/policy.rs"]
mod matrix;

use std::{
    io::{ErrorKind, Write as _},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lab_cli::{lab::Lab, policy::PolicyMode};
use matrix::{Servers, labctl_ok, pod, starwars};

/// deathstar-1 and -2 take UDP/80 from the empire only.
const POLICY: &str = "\
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
    - {protocol: UDP, port: 80}
";

const N: u64 = 7;
const M: u64 = 5;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn http_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    body.to_owned()
}

/// The value of `name{labels}` in an exposition (0: no such series).
fn sample(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn promtool(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/setup.sh installs prometheus)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One datagram from a new socket of `from` (a new flow), answered.
fn flow(lab: &Lab, from: &str, to: SocketAddr) {
    let (ns, _) = pod(lab, from);
    ns.run(|| {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"flow").unwrap();
        let mut buf = [0u8; 16];
        s.recv(&mut buf).expect("an allowed flow is answered");
    })
    .unwrap();
}

/// `n` datagrams from one socket of `from`, none answered.
fn denied(lab: &Lab, from: &str, to: SocketAddr, n: u64) {
    let (ns, _) = pod(lab, from);
    ns.run(|| {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.connect(to).unwrap();
        for _ in 0..n {
            s.send(b"denied").unwrap();
        }
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 16];
        match s.recv(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a denied datagram was answered: {other:?}"),
        }
    })
    .unwrap();
}

fn verdicts_counted_exactly(mode: PolicyMode, tag: &str) {
    let lab = starwars(mode, tag);
    let name = lab.name().to_owned();
    let _servers = Servers::start(&lab);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), POLICY).unwrap();
    let applied = labctl_ok(&[
        "policy",
        "apply",
        "-f",
        file.path().to_str().unwrap(),
        "--lab",
        &name,
        "-o",
        "json",
    ]);
    assert_eq!(applied["enforced"], true, "{applied}");

    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut labctl = Killed(
        Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["metrics", "--listen", "127.0.0.1:0", "--netns", "host"])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::wait_ready(&mut labctl.0, &ready);

    let ds1 = lab.plan.find_pod("deathstar-1").unwrap();
    let node = &lab.plan.nodes[ds1.node].name;
    let series = |verdict: &str, reason: &str| {
        format!(
            "labctl_policy_verdicts_total{{direction=\"ingress\",lab=\"{name}\",node=\"{node}\",policy=\"default/deathstar-empire\",reason=\"{reason}\",verdict=\"{verdict}\"}}"
        )
    };
    let bytes_series = series("allowed", "").replace(
        "labctl_policy_verdicts_total",
        "labctl_policy_verdict_bytes_total",
    );
    let allowed = series("allowed", "");
    let default_denied = series("denied", "POLICY_DENIED");
    let before = http_get(&url);
    promtool(&before);
    let (allowed0, denied0, bytes0) = (
        sample(&before, &allowed),
        sample(&before, &default_denied),
        sample(&before, &bytes_series),
    );

    let to = SocketAddr::from((ds1.addr, 80));
    for _ in 0..N {
        flow(&lab, "tiefighter", to);
    }
    denied(&lab, "xwing", to, M);

    // Counted in the kernel as the packets pass: poll until both show.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = http_get(&url);
        let got = (sample(&text, &allowed), sample(&text, &default_denied));
        if got == (allowed0 + N, denied0 + M) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    promtool(&text);
    assert_eq!(
        (sample(&text, &allowed), sample(&text, &default_denied)),
        (allowed0 + N, denied0 + M),
        "{mode}: allowed {allowed}, default-denied {default_denied} in\n{text}"
    );
    // Each allowed datagram: 20 (IP) + 8 (UDP) + 4 bytes, netfilter's
    // counter and tc's skb length alike (tc's includes the 14-byte
    // Ethernet header).
    let per = match mode {
        PolicyMode::Netfilter => 32,
        PolicyMode::Ebpf => 46,
    };
    assert_eq!(sample(&text, &bytes_series), bytes0 + N * per, "{mode}");
    // Nothing the policy does not name: no explicit deny anywhere.
    assert!(
        !text.contains("reason=\"POLICY_DENY\""),
        "{mode}: a POLICY_DENY series in\n{text}"
    );
    assert!(
        text.contains("labctl_scrape_errors{source=\"policy\"} 0"),
        "{text}"
    );
    drop(labctl);
    lab.down().unwrap();
}

#[test]
fn netfilter_verdicts_are_counted_exactly_by_policy() {
    if !common::privileged("netfilter_verdicts_are_counted_exactly_by_policy") {
        return;
    }
    verdicts_counted_exactly(PolicyMode::Netfilter, "pmnft");
}

#[test]
fn ebpf_verdicts_are_counted_exactly_by_policy() {
    if !common::privileged("ebpf_verdicts_are_counted_exactly_by_policy") {
        return;
    }
    verdicts_counted_exactly(PolicyMode::Ebpf, "pmbpf");
}
