//! The allow/deny matrix of the Star Wars lab, with real traffic, for any
//! `--policy-mode`: the policy sets of tests/fixtures/policy (the same
//! files `policy::eval`'s unit tests read), servers on TCP and UDP 80 and
//! 53 in every pod, and probes from every pod to every other, all at once
//! with one deadline (a probe ends at its reply; a denied one at the
//! deadline).
//!
//! A mode is tested by one line in a test file: `run_matrix(MODE, TAG)`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    kernel::netns::NetNs,
    lab::{Lab, plan::LabOptions},
    policy::{Flavor, PolicyMode},
};

/// The fixtures' short names and the lab's pods, in the fixtures' order.
pub const PODS: [(&str, &str); 5] = [
    ("ds1", "deathstar-1"),
    ("ds2", "deathstar-2"),
    ("tf", "tiefighter"),
    ("xw", "xwing"),
    ("dns", "coredns"),
];

/// The fixtures' addresses of those pods (the unit tests' cluster): the
/// lab must give its pods the same, or the ipBlock sets mean other pods.
pub const ADDRS: [[u8; 4]; 5] = [
    [10, 244, 1, 2],
    [10, 244, 2, 2],
    [10, 244, 1, 3],
    [10, 244, 2, 3],
    [10, 244, 2, 4],
];

/// The matrix's columns: (TCP?, port).
pub const PROBES: [(bool, u16); 4] = [(true, 80), (false, 80), (true, 53), (false, 53)];

/// How long a probe waits for its reply: a denied probe takes all of it.
pub const DEADLINE: Duration = Duration::from_millis(1500);

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy")
}

/// One policy set and what it should give.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub path: PathBuf,
    /// Whether it has any YAML document (not only comments).
    pub has_policies: bool,
    /// Whether it has a CiliumNetworkPolicy (netfilter mode refuses it).
    pub cilium: bool,
    /// (flavor, rows).
    pub matrices: Vec<(Flavor, String)>,
}

impl Fixture {
    /// The expected matrix for `mode`, with `D` (a deny rule) read as `d`:
    /// traffic shows dropped, not why.
    pub fn expected(&self, mode: PolicyMode) -> Option<String> {
        self.matrices
            .iter()
            .find(|(f, _)| *f == mode.flavor())
            .map(|(_, rows)| rows.replace('D', "d"))
    }
}

pub fn fixture(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap();
    let mut matrices: Vec<(Flavor, String)> = Vec::new();
    let mut current = 0;
    for line in text.lines() {
        let Some(c) = line.strip_prefix('#') else {
            continue;
        };
        let words: Vec<&str> = c.split_whitespace().collect();
        match words.as_slice() {
            ["matrix", flavors @ ..] if !flavors.is_empty() => {
                // One header may name both flavors: the same matrix for each.
                current = flavors.len();
                for f in flavors {
                    matrices.push((
                        match *f {
                            "netfilter" => Flavor::Netfilter,
                            "cilium" => Flavor::Cilium,
                            other => panic!("`# matrix {other}`: netfilter or cilium"),
                        },
                        String::new(),
                    ));
                }
            }
            [name, blocks @ ..] if PODS.iter().any(|(s, _)| s == name) && blocks.len() == 4 => {
                assert!(current > 0, "a row before `# matrix`");
                let n = matrices.len();
                for (_, rows) in &mut matrices[n - current..] {
                    rows.push_str(&format!("{name} {}\n", blocks.join(" ")));
                }
            }
            _ => {}
        }
    }
    let yaml: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    Fixture {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        path: path.to_owned(),
        has_policies: !yaml.is_empty(),
        cilium: yaml.iter().any(|l| l.trim() == "kind: CiliumNetworkPolicy"),
        matrices,
    }
}

/// Every fixture, by name.
pub fn fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| fixture(p)).collect()
}

/// A pod of the lab: its namespace and address.
pub fn pod(lab: &Lab, name: &str) -> (NetNs, Ipv4Addr) {
    let p = lab.plan.find_pod(name).unwrap();
    (NetNs::open(&p.netns).unwrap(), p.addr)
}

/// TCP and UDP servers on 80 and 53 in every pod (UDP ones echo), until
/// dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Servers {
    pub fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (_, name) in PODS {
            let (ns, addr) = pod(lab, name);
            for (tcp, port) in PROBES {
                let at = SocketAddr::from((addr, port));
                let stop = stop.clone();
                if tcp {
                    let l = ns.run(|| TcpListener::bind(at)).unwrap().unwrap();
                    l.set_nonblocking(true).unwrap();
                    threads.push(thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match l.accept() {
                                Ok((s, _)) => drop(s),
                                Err(_) => thread::sleep(Duration::from_millis(2)),
                            }
                        }
                    }));
                } else {
                    let s = ns.run(|| UdpSocket::bind(at)).unwrap().unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                    threads.push(thread::spawn(move || {
                        let mut buf = [0u8; 64];
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                                s.send_to(&buf[..n], peer).ok();
                            }
                        }
                    }));
                }
            }
        }
        Self { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

/// The next source port for a UDP probe: one no earlier probe of this
/// process used. A port the kernel picks may be one an earlier probe had,
/// whose conntrack entry (30 s for UDP) an earlier policy set allowed: the
/// new probe then passes as established (seen once: a denied cell read
/// allowed, the cell allowed in the matrix just before).
static NEXT_UDP_PORT: AtomicU16 = AtomicU16::new(20_000);

/// A UDP socket bound to a source port no earlier probe used (see
/// [`NEXT_UDP_PORT`]; ports taken in the namespace are skipped).
fn fresh_udp_socket() -> UdpSocket {
    loop {
        let port = NEXT_UDP_PORT.fetch_add(1, Ordering::Relaxed);
        assert!(port < 65_000, "UDP probes ran out of fresh source ports");
        match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)) {
            Ok(s) => return s,
            Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
            Err(e) => panic!("binding a probe to port {port}: {e}"),
        }
    }
}

/// One probe from `ns` to `to`: whether it was answered before `until`.
pub fn probe(ns: &NetNs, tcp: bool, to: SocketAddr, until: Instant) -> bool {
    ns.run(|| {
        if tcp {
            let left = until.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(&to, left.max(Duration::from_millis(1))) {
                Ok(_) => true,
                Err(e) if e.kind() == ErrorKind::TimedOut => false,
                Err(e) => panic!("connect to {to}: {e} (a server should listen there)"),
            }
        } else {
            let s = fresh_udp_socket();
            s.connect(to).unwrap();
            let mut buf = [0u8; 64];
            // Sent again every 200 ms (a lost datagram is not a denial);
            // answered as soon as an echo comes.
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                s.send(b"probe").unwrap();
                s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
                    .unwrap();
                match s.recv(&mut buf) {
                    Ok(_) => return true,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        panic!("{to}: port unreachable (a server should listen there)")
                    }
                    Err(e) => panic!("{to}: {e}"),
                }
            }
        }
    })
    .unwrap()
}

/// The matrix traffic gives now, in the fixtures' format (`A` answered,
/// `d` not): every probe at once, one deadline.
pub fn observe(lab: &Lab) -> String {
    observe_rows(lab, &PODS.map(|(s, _)| s))
}

/// As [`observe`], for the rows of `sources` only.
pub fn observe_rows(lab: &Lab, sources: &[&str]) -> String {
    let until = Instant::now() + DEADLINE;
    let pods: Vec<(NetNs, Ipv4Addr)> = PODS.iter().map(|(_, n)| pod(lab, n)).collect();
    let answers: Vec<Vec<Vec<bool>>> = thread::scope(|scope| {
        let rows: Vec<_> = PODS
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| sources.contains(s))
            .map(|(from, _)| {
                let pods = &pods;
                PROBES
                    .iter()
                    .map(|&(tcp, port)| {
                        (0..PODS.len())
                            .map(|to| {
                                scope.spawn(move || {
                                    from == to
                                        || probe(
                                            &pods[from].0,
                                            tcp,
                                            SocketAddr::from((pods[to].1, port)),
                                            until,
                                        )
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        rows.into_iter()
            .map(|blocks| {
                blocks
                    .into_iter()
                    .map(|b| b.into_iter().map(|h| h.join().unwrap()).collect())
                    .collect()
            })
            .collect()
    });
    let mut out = String::new();
    let names: Vec<(usize, &str)> = PODS
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| sources.contains(s))
        .map(|(i, (s, _))| (i, *s))
        .collect();
    for ((from, short), blocks) in names.into_iter().zip(answers) {
        out.push_str(short);
        for block in blocks {
            out.push(' ');
            for (to, ok) in block.into_iter().enumerate() {
                out.push(match (to == from, ok) {
                    (true, _) => '.',
                    (false, true) => 'A',
                    (false, false) => 'd',
                });
            }
        }
        out.push('\n');
    }
    out
}

/// What `labctl policy trace --all` says for the matrix's probes (one
/// call), in the fixtures' format: the policies' verdicts, and the
/// datapath's as read from the kernel (the deciding nft rule or eBPF map
/// entry of each direction; `?` where nothing was read).
pub fn traced(lab: &str) -> (String, String) {
    let mut args = vec!["policy", "trace", "--all", "--lab", lab, "-o", "json"];
    let ports: Vec<String> = PROBES
        .iter()
        .map(|(tcp, port)| format!("{port}/{}", if *tcp { "tcp" } else { "udp" }))
        .collect();
    for p in &ports {
        args.extend(["--port", p]);
    }
    let m = labctl_ok(&args);
    let cells = m["cells"].as_array().unwrap();
    let (mut policies, mut datapath) = (String::new(), String::new());
    for (from, (short, from_pod)) in PODS.iter().enumerate() {
        policies.push_str(short);
        datapath.push_str(short);
        for (tcp, port) in PROBES {
            policies.push(' ');
            datapath.push(' ');
            for (to, (_, to_pod)) in PODS.iter().enumerate() {
                if to == from {
                    policies.push('.');
                    datapath.push('.');
                    continue;
                }
                let cell = cells
                    .iter()
                    .find(|c| {
                        c["from"] == format!("{lab}/{from_pod}")
                            && c["to"] == format!("{lab}/{to_pod}")
                            && c["port"] == port
                            && c["protocol"] == if tcp { "TCP" } else { "UDP" }
                    })
                    .unwrap_or_else(|| panic!("no {from_pod} -> {to_pod} {port} in {m}"));
                let letter = |allowed: bool| if allowed { 'A' } else { 'd' };
                policies.push(letter(cell["verdict"]["allowed"].as_bool().unwrap()));
                let decisions = cell["datapath"].as_array().cloned().unwrap_or_default();
                // Read from the kernel, not guessed: a rule or entry that
                // decides is there.
                for d in &decisions {
                    let entry = d["entry"].as_str().unwrap_or_default();
                    assert!(!entry.starts_with("not read"), "{d}");
                    assert_ne!(d["present"], false, "missing from the kernel: {d}");
                }
                datapath.push(if decisions.is_empty() {
                    '?'
                } else {
                    letter(decisions.iter().all(|d| d["allows"] == true))
                });
            }
        }
        policies.push('\n');
        datapath.push('\n');
    }
    (policies, datapath)
}

/// Everything open (no policy).
pub fn open_matrix() -> String {
    let mut out = String::new();
    for (from, (short, _)) in PODS.iter().enumerate() {
        out.push_str(short);
        for _ in PROBES {
            out.push(' ');
            for to in 0..PODS.len() {
                out.push(if to == from { '.' } else { 'A' });
            }
        }
        out.push('\n');
    }
    out
}

pub fn labctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(args)
        .output()
        .expect("run labctl")
}

#[track_caller]
pub fn labctl_ok(args: &[&str]) -> serde_json::Value {
    let out = labctl(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        super::common::said(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Star Wars lab with `mode`, checked to have the fixtures' addresses.
pub fn starwars(mode: PolicyMode, tag: &str) -> super::common::TestLab {
    let lab = super::common::lab_with(
        "starwars",
        tag,
        LabOptions {
            policy_mode: Some(mode),
            ..Default::default()
        },
    );
    for ((_, name), addr) in PODS.iter().zip(ADDRS) {
        assert_eq!(pod(&lab, name).1, Ipv4Addr::from(addr), "{name}");
    }
    lab
}

/// Every policy set of the fixtures that `mode` enforces, applied to a
/// live lab: the traffic matrix must be the fixture's; deleted, every
/// connection is back. Returns the sets run.
pub fn run_matrix(mode: PolicyMode, tag: &str) -> Vec<String> {
    let lab = starwars(mode, tag);
    let name = lab.name().to_owned();
    let _servers = Servers::start(&lab);
    let mut ran = Vec::new();
    for f in fixtures() {
        if mode == PolicyMode::Netfilter && f.cilium {
            eprintln!("{}: CiliumNetworkPolicy, refused in netfilter mode", f.name);
            continue;
        }
        let Some(want) = f.expected(mode) else {
            eprintln!("{}: no expected matrix for {mode}", f.name);
            continue;
        };
        let file = f.path.to_str().unwrap();
        if f.has_policies {
            let applied = labctl_ok(&["policy", "apply", "-f", file, "--lab", &name, "-o", "json"]);
            assert_eq!(applied["enforced"], true, "{}: {applied}", f.name);
        }
        let started = Instant::now();
        let got = observe(&lab);
        eprintln!("{}: matrix in {:?}", f.name, started.elapsed());
        assert_eq!(got, want, "{} ({mode}): got\n{got}want\n{want}", f.name);
        // `policy trace` agrees with the packets, pair by pair and port
        // by port: the policies' verdict and the datapath's entries.
        let started = Instant::now();
        let (policies, datapath) = traced(&name);
        eprintln!("{}: policy trace --all in {:?}", f.name, started.elapsed());
        assert_eq!(
            policies, got,
            "{} ({mode}): policy trace says\n{policies}packets did\n{got}",
            f.name
        );
        assert_eq!(
            datapath, got,
            "{} ({mode}): the datapath's entries, as policy trace reads them, say\n{datapath}packets did\n{got}",
            f.name
        );
        if f.has_policies {
            labctl_ok(&["policy", "delete", "-f", file, "--lab", &name, "-o", "json"]);
            assert_eq!(
                observe(&lab),
                open_matrix(),
                "{}: deleted, everything is open again",
                f.name
            );
        }
        ran.push(f.name);
    }
    lab.down().unwrap();
    ran
}
