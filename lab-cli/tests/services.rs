//! Privileged: the `service` scenario in each mode (kube-proxy iptables and
//! nftables, eBPF per packet, socket-LB), driven through the `labctl`
//! binary as a learner would, checked against the kernel's own records
//! (conntrack, the pinned maps, tcpdump on the wire).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    conntrack::netlink::Ctnetlink,
    ebpf::pins,
    kernel::cgroup,
    lab::{Lab, plan::LabOptions, state::LabState, up::STEP_DELAY_ENV},
    services::{KubeProxyMode, model::APP_PORT},
};
use nix::sys::signal::Signal;
use serde_json::Value;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

/// Runs labctl; its stdout, after checking it succeeded.
fn run(args: &[&str]) -> String {
    let out = labctl().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "labctl {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn traffic(lab: &str, proto: &str, count: u32) -> Value {
    let n = count.to_string();
    let out = labctl()
        .args([
            "lab", "traffic", "client", "web", "--lab", lab, "-p", proto, "-c", &n, "-o", "json",
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "traffic: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn counts(v: &Value, field: &str) -> BTreeMap<String, u64> {
    v[field]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// `svc list -o json` of lab `lab`: (proto, [(pod, connections)]).
fn listed(lab: &str) -> Vec<(String, Vec<(String, u64)>)> {
    run(&["svc", "list", "--lab", lab, "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|f| {
            assert_eq!(f["vip"], VIP.to_string(), "{f}");
            assert_eq!(f["service"], format!("{lab}/web"), "{f}");
            let backends = f["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        b["pod"].as_str().unwrap().to_owned(),
                        b["connections"].as_u64().unwrap(),
                    )
                })
                .collect();
            (f["proto"].as_str().unwrap().to_owned(), backends)
        })
        .collect()
}

/// Echo servers in the web pods that greet with their name, run by the
/// test (a connection held open across a change needs a server that
/// outlives one `lab traffic`).
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Servers {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for pod in ["web-1", "web-2", "web-3"] {
            let ep = lab.endpoint(pod).unwrap();
            let ns = lab.netns(pod).unwrap();
            let listener = ns
                .run(|| TcpListener::bind(SocketAddrV4::new(ep.addr, APP_PORT)))
                .unwrap()
                .unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    s.set_nonblocking(false).unwrap();
                    s.write_all(format!("{pod}\n").as_bytes()).unwrap();
                    let stop = stop.clone();
                    thread::spawn(move || {
                        s.set_read_timeout(Some(Duration::from_millis(100)))
                            .unwrap();
                        let mut buf = [0u8; 256];
                        while !stop.load(Ordering::Relaxed) {
                            match s.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => s.write_all(&buf[..n]).unwrap(),
                                Err(_) => continue,
                            }
                        }
                    });
                }
            }));
        }
        Self { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// A shell in the client pod (its netns and, under socket-LB, its cgroup:
/// `lab exec`) holding one TCP connection to the VIP: it prints the
/// backend's name, then, after each line on its stdin, echoes one line
/// through the connection.
struct Held {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Held {
    fn open(lab: &str) -> (Self, String) {
        let script = format!(
            "exec 3<>/dev/tcp/{VIP}/80 || exit 1; read -r name <&3; echo \"$name\"; \
             while read -r _; do echo ping >&3; read -r back <&3; echo \"$back\"; done"
        );
        let mut child = labctl()
            .args([
                "lab", "exec", "client", "--lab", lab, "--", "bash", "-c", &script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut name = String::new();
        out.read_line(&mut name).unwrap();
        (Self { child, out }, name.trim().to_owned())
    }

    fn ping(&mut self) -> String {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        let mut back = String::new();
        self.out.read_line(&mut back).unwrap();
        back.trim().to_owned()
    }

    fn close(mut self) {
        drop(self.child.stdin.take());
        common::wait_exit(&mut self.child, 10);
    }
}

fn check_mode(mode: KubeProxyMode, tag: &str) {
    let lab = common::lab_with(
        "service",
        tag,
        LabOptions {
            kube_proxy: Some(mode),
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    let client = lab.endpoint("client").unwrap().addr;

    // 300 connections reach all three backends, each at least 20%; the
    // client sees the VIP answer, the backends see the client's address.
    let t = traffic(&name, "tcp", 300);
    assert_eq!(
        (t["sent"].as_u64(), t["answered"].as_u64()),
        (Some(300), Some(300)),
        "{mode}: {t}"
    );
    let by = counts(&t, "backends");
    assert_eq!(
        by.keys().collect::<Vec<_>>(),
        ["web-1", "web-2", "web-3"],
        "{mode}: {t}"
    );
    assert!(by.values().all(|n| *n >= 60), "{mode}: {by:?}");
    assert_eq!(
        counts(&t, "replies_from"),
        BTreeMap::from([(VIP.to_string(), 300)]),
        "{mode}"
    );
    assert_eq!(
        counts(&t, "server_saw"),
        BTreeMap::from([(client.to_string(), 300)]),
        "{mode}"
    );
    // The kernel's own count of connections per backend (DNAT rule
    // counters, the eBPF programs' counters) says the same.
    let tcp = listed(&name)
        .into_iter()
        .find(|(p, _)| p == "tcp")
        .unwrap()
        .1;
    let from_kernel: BTreeMap<String, u64> = tcp
        .iter()
        .map(|(pod, n)| (pod.rsplit('/').next().unwrap().to_owned(), *n))
        .collect();
    assert_eq!(from_kernel, by, "{mode}: svc list vs what the client saw");

    // The translations, from the table that holds them (conntrack's DNAT,
    // or the load balancer's own), each a client flow to the VIP given to
    // a web pod.
    let flows: Vec<Value> = run(&["svc", "flows", "--lab", &name, "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(flows.len() >= 3, "{mode}: {flows:?}");
    let table = match mode {
        KubeProxyMode::Ebpf => "LB4_CT",
        KubeProxyMode::EbpfSocket => "LB4_REVERSE_SK",
        _ => "conntrack",
    };
    for f in &flows {
        assert_eq!(
            (f["table"].as_str(), f["vip"].as_str()),
            (Some(table), Some("10.96.0.10")),
            "{mode}: {f}"
        );
        assert!(
            f["backend_pod"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{name}/web-"))),
            "{mode}: {f}"
        );
        if mode != KubeProxyMode::EbpfSocket {
            assert_eq!(f["client_pod"], format!("{name}/client"), "{mode}: {f}");
        }
    }

    // UDP too, answered from the VIP.
    let u = traffic(&name, "udp", 10);
    assert_eq!(u["answered"].as_u64(), Some(10), "{mode}: {u}");
    assert_eq!(
        counts(&u, "replies_from"),
        BTreeMap::from([(VIP.to_string(), 10)]),
        "{mode}"
    );

    // A connection held across `svc backend del` of its backend keeps
    // working; new connections no longer reach that backend.
    let servers = Servers::start(&lab);
    let (mut held, gone) = Held::open(&name);
    assert!(gone.starts_with("web-"), "{mode}: greeting {gone:?}");
    assert_eq!(held.ping(), "ping", "{mode}");
    let changed = run(&["svc", "backend", "del", "web", &gone, "--lab", &name]);
    assert!(changed.contains("written"), "{changed}");
    assert_eq!(
        held.ping(),
        "ping",
        "{mode}: the established connection broke"
    );
    held.close();
    servers.stop();
    let after = traffic(&name, "tcp", 40);
    assert_eq!(after["answered"].as_u64(), Some(40), "{mode}: {after}");
    let by = counts(&after, "backends");
    assert!(
        !by.contains_key(&gone) && by.len() == 2,
        "{mode}: {gone} still gets connections: {by:?}"
    );
    assert!(
        listed(&name)
            .iter()
            .all(|(_, b)| b.len() == 2 && b.iter().all(|(p, _)| !p.ends_with(&gone))),
        "{mode}"
    );

    if mode == KubeProxyMode::EbpfSocket {
        socket_lb_leaves_others_alone(&lab);
    }
    if mode.is_netfilter() {
        // conntrack holds the DNAT of every connection (the learner's
        // `labctl conntrack list --netns …-node1`).
        let node = lab.netns("node1").unwrap();
        let entries = Ctnetlink::open_in(Some(&node)).unwrap().dump(None).unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e.orig.dst == VIP && e.reply.src != VIP && e.has_flag("DST_NAT")),
            "{mode}: no DNAT entry for the VIP"
        );
    }

    // `down` removes everything, pins and cgroups included.
    let inodes: Vec<u64> = lab.state.namespaces.iter().map(|n| n.inode).collect();
    let cgroups: Vec<_> = lab.state.cgroups.clone();
    lab.down().unwrap();
    for ino in inodes {
        assert!(!pins::lb(ino).exists(), "{mode}: tc LB pins left");
    }
    for c in cgroups {
        assert!(
            !cgroup::path(&c.path).unwrap().exists(),
            "{mode}: cgroup {} left",
            c.path
        );
        assert!(
            !pins::socklb(c.inode).exists(),
            "{mode}: socket-LB pins left"
        );
    }
}

/// Socket-LB translates only the lab's processes: this test process is in
/// none of the lab's cgroups, so its datagram to the VIP leaves the client
/// pod with the VIP as destination (the node's conntrack sees it so),
/// while `lab traffic` (in the pod's cgroup) never puts the VIP on the wire.
fn socket_lb_leaves_others_alone(lab: &Lab) {
    let client = lab.netns("client").unwrap();
    let node = lab.netns("node1").unwrap();
    let socket = client
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .send_to(b"outside", SocketAddrV4::new(VIP, 80))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let entries = Ctnetlink::open_in(Some(&node)).unwrap().dump(None).unwrap();
        let ours: Vec<_> = entries
            .iter()
            .filter(|e| e.orig.sport == Some(port))
            .collect();
        if let Some(e) = ours.first() {
            assert_eq!(e.orig.dst, VIP, "the outside socket was translated");
            assert!(
                entries
                    .iter()
                    .all(|e| e.orig.sport == Some(port) || e.orig.dst != VIP),
                "a lab process put the VIP on the wire"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the datagram never reached the node"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kube_proxy_iptables() {
    if common::privileged("kube_proxy_iptables") {
        check_mode(KubeProxyMode::Iptables, "svi");
    }
}

#[test]
fn kube_proxy_nftables() {
    if common::privileged("kube_proxy_nftables") {
        check_mode(KubeProxyMode::Nftables, "svn");
    }
}

#[test]
fn ebpf_per_packet() {
    if common::privileged("ebpf_per_packet") {
        check_mode(KubeProxyMode::Ebpf, "sve");
    }
}

#[test]
fn ebpf_socket_lb() {
    if common::privileged("ebpf_socket_lb") {
        check_mode(KubeProxyMode::EbpfSocket, "svs");
    }
}

/// The wire, as tcpdump sees it on the client pod's eth0: the VIP under
/// per-packet eBPF, the backend under socket-LB.
#[test]
fn the_wire_shows_the_vip_or_the_backend() {
    if !common::privileged("the_wire_shows_the_vip_or_the_backend") {
        return;
    }
    for (mode, tag, expect_vip) in [
        (KubeProxyMode::Ebpf, "swe", true),
        (KubeProxyMode::EbpfSocket, "sws", false),
    ] {
        let lab = common::lab_with(
            "service",
            tag,
            LabOptions {
                kube_proxy: Some(mode),
                ..Default::default()
            },
        );
        let dsts = lab_cli::lab::services::capture_syn_destinations(&lab, "client", || {
            let t = traffic(lab.name(), "tcp", 3);
            assert_eq!(t["answered"].as_u64(), Some(3), "{t}");
        })
        .unwrap();
        assert_eq!(dsts.len(), 3, "{mode}: {dsts:?}");
        assert!(
            dsts.iter().all(|d| (*d == VIP) == expect_vip),
            "{mode}: {dsts:?}"
        );
    }
}

/// `lab up` killed at any moment under socket-LB: `lab down` removes what
/// it left (cgroups, programs, pins), and the host's cgroup tree is clean.
#[test]
fn a_killed_socket_lb_up_is_recovered_by_down() {
    if !common::privileged("a_killed_socket_lb_up_is_recovered_by_down") {
        return;
    }
    let name = common::lab_name("svk");
    let mut up = labctl()
        .args([
            "lab",
            "up",
            "service",
            "--kube-proxy",
            "ebpf-socket",
            "--name",
            &name,
        ])
        .env(STEP_DELAY_ENV, "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the pods' cgroups are being made.
    let deadline = Instant::now() + Duration::from_secs(30);
    while LabState::load(&name)
        .unwrap()
        .is_none_or(|s| s.cgroups.len() < 2)
    {
        assert!(Instant::now() < deadline, "up never reached its cgroups");
        thread::sleep(Duration::from_millis(1));
    }
    common::signal(&up, Signal::SIGKILL);
    common::wait_exit(&mut up, 10);
    let state = LabState::load(&name).unwrap().unwrap();
    run(&["lab", "down", &name]);
    assert!(LabState::load(&name).unwrap().is_none());
    for c in &state.cgroups {
        assert!(
            !cgroup::path(&c.path).unwrap().exists(),
            "cgroup {} left",
            c.path
        );
    }
    let lab_cg = cgroup::path(&format!("labctl-{name}")).unwrap();
    assert!(!lab_cg.exists());
    if let Some(first) = state.cgroups.first() {
        assert!(!pins::socklb(first.inode).exists());
    }
    for m in [
        "world", "node1", "node2", "client", "web-1", "web-2", "web-3",
    ] {
        assert!(!common::netns_exists(&format!("{name}-{m}")), "{m}");
    }
    assert!(!Path::new(&format!("/run/netns/{name}-client")).exists());
}

/// IPVS is detected, never faked: this kernel has none, and asking for it
/// fails before anything is built, with the alternatives.
#[test]
fn ipvs_is_refused_with_the_alternatives_where_the_kernel_lacks_it() {
    if !common::privileged("ipvs_is_refused_with_the_alternatives_where_the_kernel_lacks_it") {
        return;
    }
    let name = common::lab_name("svv");
    let out = labctl()
        .args([
            "lab",
            "up",
            "service",
            "--kube-proxy",
            "ipvs",
            "--name",
            &name,
        ])
        .output()
        .unwrap();
    let stderr = common::said(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let has_ipvs = Path::new("/proc/net/ip_vs").exists();
    assert!(
        stderr.contains(if has_ipvs {
            "does not build"
        } else {
            "no IPVS"
        }),
        "{stderr}"
    );
    assert!(stderr.contains("--kube-proxy iptables, nftables, ebpf or ebpf-socket"));
    assert!(!common::netns_exists(&format!("{name}-world")));
}

/// What a learner can get wrong with `svc`, each one sentence and exit 2,
/// nothing changed.
#[test]
fn svc_mistakes_are_usage_errors_that_change_nothing() {
    if !common::privileged("svc_mistakes_are_usage_errors_that_change_nothing") {
        return;
    }
    let lab = common::lab("service", "svu");
    let name = lab.name().to_owned();
    let before = run(&["svc", "list", "--lab", &name, "-o", "json"]);
    for (args, says) in [
        (vec!["svc", "add", "Web"], "is not valid"),
        (
            vec!["svc", "add", "api", "--vip", "192.0.2.1"],
            "not in the service CIDR",
        ),
        (
            vec!["svc", "add", "api", "--vip", "10.96.0.10"],
            "already the address of service `web`",
        ),
        (vec!["svc", "add", "web"], "already exists"),
        (
            vec!["svc", "add", "api", "--backend", "nope"],
            "is not a pod of lab",
        ),
        (vec!["svc", "del", "nope"], "no service `nope`"),
        (
            vec!["svc", "backend", "del", "web", "client"],
            "is not a backend of service `web`",
        ),
        (
            vec!["svc", "backend", "add", "web", "web-1"],
            "already a backend",
        ),
        (
            vec!["svc", "backend", "set", "web", "ghost"],
            "is not a pod of lab",
        ),
        (
            vec!["svc", "backend", "set", "web", "web-1", "web-1", "web-2"],
            "pod `web-1` is given more than once",
        ),
        (
            vec!["svc", "add", "api", "--vip", "10.96.0.0"],
            "network address",
        ),
        (
            vec!["svc", "add", "api", "-b", "web-1", "-b", "otherlab/web-2"],
            "is a pod of lab `otherlab`",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--lab", &name]);
        let out = labctl().args(&args).output().unwrap();
        let stderr = common::said(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(run(&["svc", "list", "--lab", &name, "-o", "json"]), before);
    let other = common::lab_name("svb");
    let out = labctl()
        .args([
            "lab",
            "up",
            "basic",
            "--name",
            &other,
            "--kube-proxy",
            "nftables",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(common::said(&out.stderr).contains("has no services"));
    assert!(!common::netns_exists(&format!("{other}-world")));
}

/// `svc ... --dry-run` prints the change's plan in the mode's own units and
/// changes nothing (the kernel, as nft and `svc list` show it, nor the
/// lab's record); the same change made writes that same plan (`-o json`,
/// `--show-plan`), and the kernel then holds what it said.
#[test]
fn a_dry_run_plans_what_the_change_then_writes() {
    if !common::privileged("a_dry_run_plans_what_the_change_then_writes") {
        return;
    }
    for (mode, tag) in [
        (KubeProxyMode::Nftables, "sdn"),
        (KubeProxyMode::Ebpf, "sde"),
    ] {
        let lab = common::lab_with(
            "service",
            tag,
            LabOptions {
                kube_proxy: Some(mode),
                ..Default::default()
            },
        );
        let name = lab.name().to_owned();
        let node1 = lab.netns("node1").unwrap();
        let nft_table = || {
            lab_cli::kernel::tool::run(&node1, "nft", &["list", "table", "ip", "kube-proxy"], None)
                .unwrap_or_default()
        };
        let svc_list = || run(&["svc", "list", "--lab", &name, "-o", "json"]);
        let (list_before, nft_before) = (svc_list(), nft_table());
        let del = ["svc", "backend", "del", "web", "web-1", "--lab", &name];
        let json = |extra: &[&str]| -> Value {
            let args: Vec<&str> = del.iter().chain(extra).copied().collect();
            serde_json::from_str(&run(&args)).unwrap()
        };
        let dry = json(&["--dry-run", "-o", "json"]);
        assert_eq!(dry["dry_run"], true, "{mode}: {dry}");
        let parts = dry["plan"].as_array().unwrap();
        let targets: Vec<&str> = parts
            .iter()
            .map(|p| p["target"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            [format!("{name}/node1"), format!("{name}/node2")],
            "{mode}"
        );
        let sum: u64 = parts.iter().map(|p| p["changes"].as_u64().unwrap()).sum();
        assert!(
            sum > 0 && Some(sum) == dry["changes"].as_u64(),
            "{mode}: {dry}"
        );
        // Nothing changed: the kernel, and the record (the same change is
        // still to make, with the same plan).
        assert_eq!(
            svc_list(),
            list_before,
            "{mode}: a dry run changed the maps"
        );
        assert_eq!(
            nft_table(),
            nft_before,
            "{mode}: a dry run changed the table"
        );
        assert_eq!(
            json(&["--dry-run", "-o", "json"])["plan"],
            dry["plan"],
            "{mode}"
        );
        // The text says so, prints each node's part, and fits 80 columns.
        let text = run(&[&del[..], &["--dry-run"]].concat());
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("(dry run: nothing was written)"), "{text}");
        for p in parts {
            let head = format!(
                "{}: {} {}",
                p["target"].as_str().unwrap(),
                p["changes"],
                dry["unit"].as_str().unwrap()
            );
            assert!(text.contains(&head), "{mode}: no `{head}` in\n{text}");
        }
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");

        // Made: the same plan, written.
        let done = json(&["-o", "json"]);
        assert_eq!(done["dry_run"], false, "{mode}: {done}");
        assert_eq!(done["plan"], dry["plan"], "{mode}");
        let lines: Vec<&str> = parts[0]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        if mode == KubeProxyMode::Nftables {
            // Each chain the plan deletes was in node1's table (nft's own
            // listing) and is gone from it.
            let deleted: Vec<&str> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("delete chain ip kube-proxy "))
                .collect();
            assert_eq!(deleted.len(), 2, "TCP and UDP: {lines:?}");
            let (before, after) = (nft_before.clone(), nft_table());
            for c in deleted {
                assert!(
                    before.contains(&format!("chain {c} {{")),
                    "{c} not in\n{before}"
                );
                assert!(!after.contains(c), "{c} still in\n{after}");
            }
        } else {
            // The backend entry the plan deletes was web-1's and is gone.
            let deleted: Vec<String> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("delete LB4_BACKENDS "))
                .map(|id| format!("backend {id}"))
                .collect();
            assert_eq!(deleted.len(), 2, "TCP and UDP: {lines:?}");
            let objects = |list: &str, pod: &str| -> Vec<String> {
                list.lines()
                    .flat_map(|l| {
                        let f: Value = serde_json::from_str(l).unwrap();
                        f["backends"].as_array().unwrap().clone()
                    })
                    .filter(|b| b["pod"] == pod)
                    .map(|b| b["object"].as_str().unwrap().to_owned())
                    .collect()
            };
            let mut was = objects(&list_before, &format!("{name}/web-1"));
            was.sort();
            was.dedup();
            let mut want = deleted.clone();
            want.sort();
            assert_eq!(was, want, "{mode}");
        }
        assert!(
            listed(&name)
                .iter()
                .all(|(_, b)| b.len() == 2 && b.iter().all(|(p, _)| !p.ends_with("web-1"))),
            "{mode}"
        );
        // `--show-plan` prints the plan after the summary.
        let text = run(&[
            "svc",
            "backend",
            "add",
            "web",
            "web-1",
            "--lab",
            &name,
            "--show-plan",
        ]);
        assert!(text.starts_with("`web-1` added to service `web`"), "{text}");
        assert!(text.contains(&format!("\n{name}/node1: ")), "{text}");
        assert!(text.contains(&format!("\n{name}/node2: ")), "{text}");
        lab.down().unwrap();
    }
}

/// `svc add` killed between its two nodes' writes: node1 holds the new
/// service (and `svc list` shows it, read from the kernel), node2 does
/// not, and the record does not claim it; the obvious next command (the
/// same `svc add`) writes only what node2 misses, and both nodes then hold
/// it.
#[test]
fn a_killed_svc_add_is_completed_by_the_next_one() {
    if !common::privileged("a_killed_svc_add_is_completed_by_the_next_one") {
        return;
    }
    let lab = common::lab_with(
        "service",
        "skl",
        LabOptions {
            kube_proxy: Some(KubeProxyMode::Nftables),
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    let holds_api = |node: &str| {
        let ns = lab.netns(node).unwrap();
        lab_cli::kernel::tool::run(&ns, "nft", &["list", "table", "ip", "kube-proxy"], None)
            .unwrap_or_default()
            .contains("10.96.0.77")
    };
    let add = ["svc", "add", "api", "--vip", "10.96.0.77", "--lab", &name];
    let child = labctl()
        .args(add)
        .env(lab_cli::kernel::datapath::PART_DELAY_ENV, "5000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds_api("node1") {
        assert!(Instant::now() < deadline, "node1 never written");
        thread::sleep(Duration::from_millis(10));
    }
    common::signal(&child, Signal::SIGKILL);
    let mut child = child;
    child.wait().unwrap();
    assert!(!holds_api("node2"), "killed before node2");

    // The record does not claim it (or this add would be refused as
    // existing); node1's half is not written twice.
    let done: Value = serde_json::from_str(&run(&[&add[..], &["-o", "json"]].concat())).unwrap();
    // The no-endpoints map is rewritten whole on every sync (as
    // kube-proxy does); the service's chains only where they are missing.
    let chains = |i: usize| {
        done["plan"][i]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l.as_str().unwrap().starts_with("add chain"))
            .count()
    };
    assert_eq!(chains(0), 0, "node1 had it already: {done}");
    assert_eq!(chains(1), 2, "node2 gets what it missed (tcp, udp): {done}");
    assert!(holds_api("node1") && holds_api("node2"));
    let out = run(&["svc", "list", "--lab", &name, "-o", "json"]);
    assert!(out.contains(&format!("{name}/api")), "{out}");
}
