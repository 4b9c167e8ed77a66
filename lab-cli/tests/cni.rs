//! labctl as a CNI plugin, called exactly as a runtime calls it: the
//! binary as /opt/cni/bin/labctl-cni (a link named so), CNI_* in the
//! environment, the config on stdin, the answer on stdout. Each test runs
//! the plugin inside a throwaway "node" namespace of its own (so the node's
//! veths, routes, ip_forward and nft table are the test's), with pods as
//! throwaway namespaces, and its IPAM store and call log in a temporary
//! directory. Names start with `c28`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lab_cli::kernel::{netns::NetNs, rtnl::Rtnl};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A node: its namespace, the plugin installed as `labctl-cni`, its store
/// and log directories.
struct Node {
    ns: NetNs,
    dir: tempfile::TempDir,
    plugin: PathBuf,
}

impl Node {
    fn new() -> Self {
        let ns = common::netns("c28node");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let plugin = bin.join("labctl-cni");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_labctl"), &plugin).unwrap();
        Self { ns, dir, plugin }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// A network config for this node.
    fn conf(&self, version: &str, name: &str, ipam: Value, masquerade: &str) -> Value {
        let mut ipam = ipam;
        ipam["type"] = json!("labctl");
        ipam["dataDir"] = json!(self.data_dir());
        json!({
            "cniVersion": version,
            "name": name,
            "type": "labctl-cni",
            "mtu": 1400,
            "ipam": ipam,
            "labctl": {"masquerade": masquerade},
        })
    }

    /// One call: (exit code, stdout as JSON or Null when empty).
    fn call(&self, verb: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> (i32, Value) {
        self.call_raw(
            &[
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            conf.to_string().as_bytes(),
        )
    }

    fn call_raw(&self, env: &[(&str, &str)], stdin: &[u8]) -> (i32, Value) {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path().display()))
            .arg(&self.plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LABCTL_CNI_LOG_DIR", self.log_dir())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A call refused before stdin is read may close it first.
        child.stdin.take().unwrap().write_all(stdin).ok();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (out.status.code().unwrap(), v)
    }

    fn add(&self, id: &str, pod: &NetNs, conf: &Value) -> Value {
        let (rc, v) = self.call("ADD", id, &path(pod), "eth0", conf);
        assert_eq!(rc, 0, "ADD {id}: {v:#}");
        v
    }

    fn del(&self, id: &str, pod: &str, conf: &Value) {
        let (rc, v) = self.call("DEL", id, pod, "eth0", conf);
        assert_eq!((rc, &v), (0, &Value::Null), "DEL {id}");
    }

    /// The node's interfaces other than lo (and the uplink of
    /// [`uplink`]).
    fn links(&self) -> Vec<String> {
        rtnl(&self.ns)
            .links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n != "lo" && n != "c28up")
            .collect()
    }

    /// The allocation files of network `name`.
    fn allocations(&self, name: &str) -> BTreeSet<String> {
        std::fs::read_dir(self.data_dir().join(name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn nft_tables(&self) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path().display()))
            .args(["nft", "list", "tables"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Nothing of the plugin's is left on the node.
    fn assert_clean(&self, name: &str) {
        assert_eq!(self.links(), Vec::<String>::new(), "veths left");
        assert_eq!(self.allocations(name), BTreeSet::new(), "addresses left");
        assert!(!self.nft_tables().contains("labctl-cni"), "nft table left");
    }

    /// `labctl cni log -o json` with this node's log.
    fn log(&self) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
            .args(["cni", "log", "-o", "json"])
            .env("LABCTL_CNI_LOG_DIR", self.log_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn path(ns: &NetNs) -> String {
    ns.path().display().to_string()
}

fn rtnl(ns: &NetNs) -> Rtnl {
    Rtnl::open(ns).unwrap()
}

/// The address (ADDR/PREFIX) of eth0 in `pod`, if any.
fn pod_addresses(pod: &NetNs) -> Vec<String> {
    rtnl(pod)
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == "eth0")
        .map(|l| l.addresses)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !a.contains(':'))
        .collect()
}

fn ip_of(result: &Value) -> Ipv4Addr {
    let a = result["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().parse().unwrap()
}

fn ip(ns: &NetNs, args: &[&str]) {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns.name())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_verb_in_every_version() {
    if !common::privileged("every_verb_in_every_version") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new();
        let pod = common::netns("c28pod");
        let conf = node.conf(
            version,
            "c28verbs",
            json!({"subnet": "10.28.1.0/24"}),
            "none",
        );
        let old = !matches!(version, "1.0.0" | "1.1.0");

        let (rc, v) = node.call_raw(&[("CNI_COMMAND", "VERSION")], conf.to_string().as_bytes());
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], version);
        assert_eq!(v["supportedVersions"], json!(VERSIONS));

        let r = node.add("c28-verbs", &pod, &conf);
        assert_eq!(r["cniVersion"], version);
        assert_eq!(
            keys(&r),
            BTreeSet::from(["cniVersion", "interfaces", "ips", "routes", "dns"].map(String::from))
        );
        let ipc = &r["ips"][0];
        assert_eq!(ipc.get("version").is_some(), old, "{version}: {ipc}");
        if old {
            assert_eq!(ipc["version"], "4");
        }
        assert_eq!(ipc["interface"], 1);
        assert_eq!(ipc["gateway"], "10.28.1.1");
        let addr = ipc["address"].as_str().unwrap();
        assert_eq!(pod_addresses(&pod), vec![addr.to_owned()], "{version}");
        // The interfaces as the kernel has them: the node's veth, the pod's eth0.
        let host = &r["interfaces"][0];
        let eth0 = &r["interfaces"][1];
        assert_eq!(eth0["name"], "eth0");
        assert_eq!(eth0["sandbox"], path(&pod));
        assert!(host.get("sandbox").is_none());
        assert_eq!(host.get("mtu").is_some(), version == "1.1.0");
        let pod_link = rtnl(&pod)
            .links()
            .unwrap()
            .into_iter()
            .find(|l| l.name == "eth0")
            .unwrap();
        assert_eq!(eth0["mac"].as_str(), pod_link.mac.as_deref());
        assert_eq!(pod_link.mtu, 1400);
        let host_name = host["name"].as_str().unwrap();
        assert_eq!(node.links(), vec![host_name.to_owned()]);
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.28.1.1"}])
        );

        let mut with_prev = conf.clone();
        with_prev["prevResult"] = r.clone();
        let (rc, v) = node.call("CHECK", "c28-verbs", &path(&pod), "eth0", &with_prev);
        if old && version != "0.4.0" {
            assert_eq!(
                (rc, v["code"].as_u64()),
                (1, Some(1)),
                "CHECK in {version}: {v}"
            );
        } else {
            assert_eq!((rc, &v), (0, &Value::Null), "CHECK in {version}");
        }

        let (rc, v) = node.call_raw(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
            conf.to_string().as_bytes(),
        );
        if version == "1.1.0" {
            assert_eq!((rc, &v), (0, &Value::Null), "STATUS");
        } else {
            assert_eq!(
                (rc, v["code"].as_u64()),
                (1, Some(1)),
                "STATUS in {version}: {v}"
            );
        }

        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "c28-verbs", "ifname": "eth0"}]);
        let (rc, v) = node.call_raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
        if version == "1.1.0" {
            assert_eq!((rc, &v), (0, &Value::Null), "GC");
            assert_eq!(node.links().len(), 1, "GC kept the valid attachment");
        } else {
            assert_eq!(
                (rc, v["code"].as_u64()),
                (1, Some(1)),
                "GC in {version}: {v}"
            );
        }

        node.del("c28-verbs", &path(&pod), &conf);
        node.del("c28-verbs", &path(&pod), &conf);
        node.assert_clean("c28verbs");
        assert_eq!(pod_addresses(&pod), Vec::<String>::new());
    }
}

/// The keys of a result, recursively in `interfaces` and `ips` entries.
fn shape(v: &Value) -> Value {
    let entries = |k: &str| -> Vec<BTreeSet<String>> {
        v[k].as_array()
            .map(|a| a.iter().map(keys).collect())
            .unwrap_or_default()
    };
    json!({
        "top": keys(v),
        "interfaces": entries("interfaces"),
        "ips": entries("ips"),
    })
}

#[test]
fn results_have_the_shape_of_the_reference_ptp_plugin() {
    if !common::privileged("results_have_the_shape_of_the_reference_ptp_plugin") {
        return;
    }
    let ptp = Path::new("/usr/lib/cni/ptp");
    assert!(
        ptp.exists(),
        "containernetworking-plugins is not installed (scripts/setup.sh)"
    );
    // The reference plugins of Debian 12 speak up to 1.0.0.
    for version in &VERSIONS[..4] {
        let node = Node::new();
        let pod = common::netns("c28pod");
        let ref_pod = common::netns("c28ref");
        let conf = node.conf(
            version,
            "c28shape",
            json!({"subnet": "10.28.2.0/24"}),
            "none",
        );
        let ours = node.add("c28-shape", &pod, &conf);
        let ref_conf = json!({
            "cniVersion": version,
            "name": "c28shape-ref",
            "type": "ptp",
            "mtu": 1400,
            "ipam": {"type": "host-local", "subnet": "10.28.3.0/24", "dataDir": node.dir.path().join("ref")},
        });
        let run_ref = |verb: &str| {
            let mut child = Command::new("nsenter")
                .arg(format!("--net={}", node.ns.path().display()))
                .arg(ptp)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .envs([
                    ("CNI_COMMAND", verb),
                    ("CNI_CONTAINERID", "c28-shape-ref"),
                    ("CNI_NETNS", &path(&ref_pod)),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_PATH", "/usr/lib/cni"),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(ref_conf.to_string().as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "ptp {verb}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            out.stdout
        };
        let theirs: Value = serde_json::from_slice(&run_ref("ADD")).unwrap();
        // The reference lists routes only when its ipam config has some;
        // labctl always has the default route.
        let mut ours_shape = shape(&ours);
        ours_shape["top"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k != "routes");
        assert_eq!(
            ours_shape,
            shape(&theirs),
            "{version}: ours {ours:#} theirs {theirs:#}"
        );
        assert_eq!(
            ours["ips"][0].get("version"),
            theirs["ips"][0].get("version")
        );
        run_ref("DEL");
        node.del("c28-shape", &path(&pod), &conf);
        node.assert_clean("c28shape");
    }
}

#[test]
fn del_works_without_the_netns_and_twice() {
    if !common::privileged("del_works_without_the_netns_and_twice") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "c28del",
        json!({"subnet": "10.28.4.0/24"}),
        "netfilter",
    );
    let pod = common::netns("c28pod");
    let pod_path = path(&pod);
    node.add("c28-del-a", &pod, &conf);
    assert!(node.nft_tables().contains("table ip labctl-cni"));
    // The pod's namespace is gone before DEL (a crashed sandbox).
    pod.delete().unwrap();
    node.del("c28-del-a", &pod_path, &conf);
    node.del("c28-del-a", "", &conf);
    node.assert_clean("c28del");
    // And without any netns, for an attachment never made.
    node.del("c28-never", "", &conf);
}

#[test]
fn check_fails_after_tampering() {
    if !common::privileged("check_fails_after_tampering") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.0.0",
        "c28check",
        json!({"subnet": "10.28.5.0/24"}),
        "none",
    );
    let pod = common::netns("c28pod");
    let r = node.add("c28-check", &pod, &conf);
    let mut conf_prev = conf.clone();
    conf_prev["prevResult"] = r.clone();
    let check = || node.call("CHECK", "c28-check", &path(&pod), "eth0", &conf_prev);
    assert_eq!(check(), (0, Value::Null));
    let addr = format!("{}/32", ip_of(&r));

    ip(&pod, &["addr", "del", &addr, "dev", "eth0"]);
    let (rc, v) = check();
    assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");
    assert!(
        v["msg"].as_str().unwrap().contains("lost its address"),
        "{v}"
    );
    ip(&pod, &["addr", "add", &addr, "dev", "eth0"]);
    // The address back: its routes are gone with it, and CHECK says so.
    let (rc, v) = check();
    assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");
    ip(
        &pod,
        &[
            "route",
            "replace",
            "10.28.5.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ],
    );
    ip(
        &pod,
        &[
            "route",
            "replace",
            "default",
            "via",
            "10.28.5.1",
            "dev",
            "eth0",
        ],
    );
    assert_eq!(check(), (0, Value::Null));

    ip(&pod, &["route", "del", "default"]);
    let (rc, v) = check();
    assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("default route"), "{v}");
    ip(
        &pod,
        &["route", "add", "default", "via", "10.28.5.1", "dev", "eth0"],
    );
    assert_eq!(check(), (0, Value::Null));

    // A prevResult that lists another address.
    let mut wrong = conf_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.28.5.200/32");
    let (rc, v) = node.call("CHECK", "c28-check", &path(&pod), "eth0", &wrong);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(101)), "{v}");

    // An attachment labctl never made.
    let (rc, v) = node.call("CHECK", "c28-nobody", &path(&pod), "eth0", &conf);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(3)), "{v}");

    node.del("c28-check", &path(&pod), &conf);
    node.assert_clean("c28check");
}

#[test]
fn gc_removes_what_is_not_in_the_valid_list() {
    if !common::privileged("gc_removes_what_is_not_in_the_valid_list") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "c28gc",
        json!({"subnet": "10.28.6.0/24"}),
        "netfilter",
    );
    let pods: Vec<NetNs> = (0..3).map(|_| common::netns("c28pod")).collect();
    let results: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| node.add(&format!("c28-gc-{i}"), p, &conf))
        .collect();
    assert_eq!(node.allocations("c28gc").len(), 3);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c28-gc-1", "ifname": "eth0"}]);
    let (rc, v) = node.call_raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
    assert_eq!((rc, &v), (0, &Value::Null));
    assert_eq!(
        node.allocations("c28gc"),
        BTreeSet::from([ip_of(&results[1]).to_string()])
    );
    assert_eq!(
        node.links(),
        vec![
            results[1]["interfaces"][0]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        ]
    );
    assert_eq!(
        pod_addresses(&pods[0]),
        Vec::<String>::new(),
        "the veth went with its node side"
    );
    assert!(
        node.nft_tables().contains("labctl-cni"),
        "one pod still masqueraded"
    );
    // The kept one is intact.
    let (rc, v) = node.call("CHECK", "c28-gc-1", &path(&pods[1]), "eth0", &conf);
    assert_eq!((rc, &v), (0, &Value::Null));
    // An empty list removes the rest.
    gc["cni.dev/valid-attachments"] = json!([]);
    let (rc, _) = node.call_raw(&[("CNI_COMMAND", "GC")], gc.to_string().as_bytes());
    assert_eq!(rc, 0);
    node.assert_clean("c28gc");
}

#[test]
fn ipam_exhaustion_is_an_error_naming_the_range_and_release_frees() {
    if !common::privileged("ipam_exhaustion_is_an_error_naming_the_range_and_release_frees") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "c28full",
        json!({"subnet": "10.28.7.0/24", "rangeStart": "10.28.7.10", "rangeEnd": "10.28.7.11"}),
        "none",
    );
    let pods: Vec<NetNs> = (0..3).map(|_| common::netns("c28pod")).collect();
    let a = node.add("c28-full-0", &pods[0], &conf);
    let b = node.add("c28-full-1", &pods[1], &conf);
    assert_eq!(
        BTreeSet::from([ip_of(&a), ip_of(&b)]),
        BTreeSet::from([Ipv4Addr::new(10, 28, 7, 10), Ipv4Addr::new(10, 28, 7, 11)])
    );
    let (rc, v) = node.call("ADD", "c28-full-2", &path(&pods[2]), "eth0", &conf);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(102)), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.contains("10.28.7.0/24 (10.28.7.10-10.28.7.11)"),
        "{msg}"
    );
    assert_eq!(pod_addresses(&pods[2]), Vec::<String>::new());
    assert_eq!(node.links().len(), 2, "the failed ADD left nothing");
    let (rc, v) = node.call_raw(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes());
    assert_eq!((rc, v["code"].as_u64()), (1, Some(50)), "{v}");

    node.del("c28-full-0", &path(&pods[0]), &conf);
    let (rc, v) = node.call_raw(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes());
    assert_eq!((rc, &v), (0, &Value::Null));
    let c = node.add("c28-full-2", &pods[2], &conf);
    assert_eq!(
        ip_of(&c),
        ip_of(&a),
        "the released address is handed out again"
    );
    node.del("c28-full-1", &path(&pods[1]), &conf);
    node.del("c28-full-2", &path(&pods[2]), &conf);
    node.assert_clean("c28full");
}

#[test]
fn concurrent_adds_never_give_one_address_twice() {
    if !common::privileged("concurrent_adds_never_give_one_address_twice") {
        return;
    }
    const N: usize = 16;
    let node = Node::new();
    // Exactly N addresses: every one must be used once.
    let conf = node.conf(
        "1.1.0",
        "c28many",
        json!({"subnet": "10.28.8.0/24", "rangeStart": "10.28.8.100", "rangeEnd": "10.28.8.115"}),
        "netfilter",
    );
    let pods: Vec<NetNs> = (0..N).map(|_| common::netns("c28pod")).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.add(&format!("c28-many-{i}"), p, conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: BTreeSet<Ipv4Addr> = results.iter().map(ip_of).collect();
    assert_eq!(ips.len(), N, "an address was given twice: {ips:?}");
    assert_eq!(node.allocations("c28many").len(), N);
    for (p, r) in pods.iter().zip(&results) {
        assert_eq!(pod_addresses(p), vec![format!("{}/32", ip_of(r))]);
    }
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (node, conf) = (&node, &conf);
            s.spawn(move || node.del(&format!("c28-many-{i}"), &path(p), conf));
        }
    });
    node.assert_clean("c28many");
}

/// Accepts one connection on `listener` within 10 s: the peer's address.
fn accept_one(listener: &TcpListener) -> SocketAddr {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((mut s, peer)) => {
                let mut b = [0u8; 4];
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.read_exact(&mut b).unwrap();
                s.write_all(b"pong").unwrap();
                return peer;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection came");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// From `from`, a TCP exchange with `to` (listening in `at`); the source
/// address `at` saw.
fn exchange(from: &NetNs, at: &NetNs, to: SocketAddr) -> SocketAddr {
    let listener = at.run(|| TcpListener::bind(to)).unwrap().unwrap();
    std::thread::scope(|s| {
        let server = s.spawn(|| accept_one(&listener));
        let mut c = from
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .unwrap()
            .unwrap_or_else(|e| panic!("{} -> {to}: {e}", from.name()));
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        server.join().unwrap()
    })
}

#[test]
fn pods_reach_each_other_the_node_and_the_world_masqueraded_by_netfilter() {
    if !common::privileged("pods_reach_each_other_the_node_and_the_world_masqueraded_by_netfilter")
    {
        return;
    }
    connectivity("netfilter");
}

#[test]
fn pods_reach_each_other_the_node_and_the_world_masqueraded_by_ebpf() {
    if !common::privileged("pods_reach_each_other_the_node_and_the_world_masqueraded_by_ebpf") {
        return;
    }
    connectivity("ebpf");
}

fn connectivity(mode: &str) {
    let node = Node::new();
    // The node's uplink to a "world" namespace: 192.0.2.1 <-> 192.0.2.2.
    let world = common::netns("c28world");
    let up = rtnl(&node.ns);
    up.add_veth("c28up", "c28world0", 1500, &world).unwrap();
    up.add_address("c28up", "192.0.2.1".parse().unwrap(), 24)
        .unwrap();
    up.set_up("c28up").unwrap();
    let w = rtnl(&world);
    w.add_address("c28world0", "192.0.2.2".parse().unwrap(), 24)
        .unwrap();
    w.set_up("c28world0").unwrap();
    // The uplink is found by the node's default route.
    up.add_route(
        Ipv4Addr::UNSPECIFIED,
        0,
        Some(Ipv4Addr::new(192, 0, 2, 2)),
        "c28up",
        false,
    )
    .unwrap();
    let node_ino = node.ns.inode().unwrap();
    let conf = node.conf("1.1.0", "c28ping", json!({"subnet": "10.28.9.0/24"}), mode);
    let (a, b) = (common::netns("c28pod"), common::netns("c28pod"));
    let ra = node.add("c28-ping-a", &a, &conf);
    let rb = node.add("c28-ping-b", &b, &conf);
    let (ia, ib) = (ip_of(&ra), ip_of(&rb));

    // Pod to pod: the source is the pod's own address (no NAT inside the node).
    let seen = exchange(&a, &b, SocketAddr::from((ib, 7001)));
    assert_eq!(seen.ip(), ia);
    let seen = exchange(&b, &a, SocketAddr::from((ia, 7002)));
    assert_eq!(seen.ip(), ib);
    // Pod to node (its gateway address).
    let seen = exchange(&a, &node.ns, SocketAddr::from(([10, 28, 9, 1], 7003)));
    assert_eq!(seen.ip(), ia);
    // Pod to the world: masqueraded to the node's uplink address, by the
    // plugin's nft rule (its counter) or by the eBPF NAT (its table).
    let seen = exchange(&a, &world, SocketAddr::from(([192, 0, 2, 2], 7004)));
    assert_eq!(seen.ip(), Ipv4Addr::new(192, 0, 2, 1));
    if mode == "netfilter" {
        assert!(common::nft_counted(&node.ns, "ip", "labctl-cni") >= 1);
        assert!(!lab_cli::masq::nat::present(node_ino));
    } else {
        assert!(!node.nft_tables().contains("labctl-cni"));
        let table = lab_cli::masq::nat::table(node_ino).unwrap();
        let out: Vec<_> = table
            .entries
            .iter()
            .filter(|e| e.src == ia && e.dst == Ipv4Addr::new(192, 0, 2, 2) && e.dport == 7004)
            .collect();
        assert_eq!(out.len(), 1, "{:?}", table.entries);
        assert_eq!(out[0].xlate_addr, Ipv4Addr::new(192, 0, 2, 1));
        // CHECK sees it in place.
        let (rc, v) = node.call("CHECK", "c28-ping-a", &path(&a), "eth0", &conf);
        assert_eq!((rc, &v), (0, &Value::Null));
    }

    node.del("c28-ping-a", &path(&a), &conf);
    // The other pod still reaches the node after one veth (and its copy of
    // the gateway address) went.
    let seen = exchange(&b, &node.ns, SocketAddr::from(([10, 28, 9, 1], 7005)));
    assert_eq!(seen.ip(), ib);
    node.del("c28-ping-b", &path(&b), &conf);
    node.assert_clean("c28ping");
    assert!(
        !lab_cli::masq::nat::present(node_ino),
        "eBPF NAT left pinned"
    );
}

#[test]
fn cni_log_shows_every_call() {
    if !common::privileged("cni_log_shows_every_call") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "c28log",
        json!({"subnet": "10.28.10.0/24"}),
        "none",
    );
    let pod = common::netns("c28pod");
    // A follower started before the calls sees them as they come.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["cni", "log", "--follow", "-o", "json"])
        .env("LABCTL_CNI_LOG_DIR", node.log_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_signal_handler(&follower);
    let r = node.add("c28-log", &pod, &conf);
    let (rc, _) = node.call("ADD", "c28-log-bad", "/nonexistent", "eth0", &conf);
    assert_eq!(rc, 1);
    node.del("c28-log", &path(&pod), &conf);

    let log = node.log();
    let verbs: Vec<&str> = log.iter().map(|r| r["verb"].as_str().unwrap()).collect();
    assert_eq!(verbs, ["ADD", "ADD", "DEL"]);
    assert_eq!(log[0]["container_id"], "c28-log");
    assert_eq!(log[0]["netns"], path(&pod));
    assert_eq!(log[0]["ifname"], "eth0");
    assert_eq!(log[0]["config"], conf);
    assert_eq!(log[0]["result"], r);
    assert_eq!(log[1]["error"]["code"], 3);
    assert!(log[2]["result"].is_null() && log[2]["error"].is_null());
    assert!(log.iter().all(|r| r["duration_ms"].as_f64().unwrap() > 0.0));

    // The text view: one line per call, details under each with -d.
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["cni", "log", "-d"])
        .env("LABCTL_CNI_LOG_DIR", node.log_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let said = common::said(&out.stdout);
    assert!(
        said.contains(&format!("ADD c28-log eth0 ok {}/32", ip_of(&r))),
        "{said}"
    );
    assert!(said.contains("ADD c28-log-bad eth0 error 3:"), "{said}");
    assert!(said.contains("DEL c28-log eth0 ok"), "{said}");
    assert!(said.contains("network c28log"), "{said}");

    // The follower printed the same three records, then ends at Ctrl-C.
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    let followed: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    assert_eq!(followed, log);
    common::interrupt(&follower);
    assert!(common::wait_exit(&mut follower, 10).success());
    node.assert_clean("c28log");
}

#[test]
fn bad_calls_get_the_spec_error_codes() {
    if !common::privileged("bad_calls_get_the_spec_error_codes") {
        return;
    }
    let node = Node::new();
    let pod = common::netns("c28pod");
    let conf = node.conf(
        "1.1.0",
        "c28bad",
        json!({"subnet": "10.28.11.0/24"}),
        "none",
    );
    let code = |(rc, v): (i32, Value)| {
        assert_eq!(rc, 1, "{v}");
        assert!(!v["msg"].as_str().unwrap().is_empty());
        v["code"].as_u64().unwrap()
    };
    let env = |verb: &'static str| {
        [
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", "c28-bad"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    };
    let stdin = conf.to_string();
    assert_eq!(
        code(node.call_raw(&[], stdin.as_bytes())),
        4,
        "no CNI_COMMAND"
    );
    assert_eq!(code(node.call_raw(&env("FROB"), stdin.as_bytes())), 4);
    assert_eq!(
        code(node.call_raw(&env("ADD"), stdin.as_bytes())),
        4,
        "ADD without CNI_NETNS"
    );
    assert_eq!(
        code(node.call("ADD", "../x", &path(&pod), "eth0", &conf)),
        4
    );
    assert_eq!(
        code(node.call("ADD", "c28-bad", &path(&pod), "a/b", &conf)),
        4
    );
    assert_eq!(code(node.call_raw(&env("DEL"), b"{not json")), 6);
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(
        code(node.call("ADD", "c28-bad", &path(&pod), "eth0", &old)),
        1
    );
    let mut no_ipam = conf.clone();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    assert_eq!(
        code(node.call("ADD", "c28-bad", &path(&pod), "eth0", &no_ipam)),
        7
    );
    // eBPF masquerading on a node without a default route (no uplink).
    let mut ebpf = conf.clone();
    ebpf["labctl"]["masquerade"] = json!("ebpf");
    let (rc, v) = node.call("ADD", "c28-bad", &path(&pod), "eth0", &ebpf);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(7)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("default route"), "{v}");
    assert_eq!(node.allocations("c28bad"), BTreeSet::new(), "rolled back");
    let (rc, v) = node.call_raw(&env("GC"), stdin.as_bytes());
    assert_eq!(
        (rc, v["code"].as_u64()),
        (1, Some(7)),
        "GC without the valid list: {v}"
    );
    // A file that is not a network namespace.
    let not_ns = node.dir.path().join("plain");
    std::fs::write(&not_ns, "").unwrap();
    assert_eq!(
        code(node.call("ADD", "c28-bad", not_ns.to_str().unwrap(), "eth0", &conf)),
        3
    );
    // A second ADD of the same interface name in the pod.
    node.add("c28-bad-a", &pod, &conf);
    let (rc, v) = node.call("ADD", "c28-bad-b", &path(&pod), "eth0", &conf);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(100)), "{v}");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains("already has an interface named eth0"),
        "{v}"
    );
    assert_eq!(node.links().len(), 1, "the failed ADD rolled back");
    node.del("c28-bad-a", &path(&pod), &conf);
    node.assert_clean("c28bad");
}

#[test]
fn status_and_check_see_the_node_broken_under_its_pods() {
    if !common::privileged("status_and_check_see_the_node_broken_under_its_pods") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "c28status",
        json!({"subnet": "10.28.12.0/24"}),
        "netfilter",
    );
    let pod = common::netns("c28pod");
    let status = || node.call_raw(&[("CNI_COMMAND", "STATUS")], conf.to_string().as_bytes());
    let check = || {
        let (rc, v) = node.call("CHECK", "c28-status", &path(&pod), "eth0", &conf);
        (rc, v["code"].as_u64())
    };
    // No pod yet: forwarding off does not matter.
    assert_eq!(status(), (0, Value::Null));
    node.add("c28-status", &pod, &conf);
    assert_eq!(status(), (0, Value::Null));

    let sysctl = |value: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", node.ns.name(), "sysctl", "-qw"])
            .arg(format!("net.ipv4.ip_forward={value}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sysctl("0");
    let (rc, v) = status();
    assert_eq!((rc, v["code"].as_u64()), (1, Some(51)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("ip_forward"), "{v}");
    assert_eq!(check(), (1, Some(101)));
    sysctl("1");
    assert_eq!(status(), (0, Value::Null));

    // The masquerade table deleted by hand.
    common::nft(&node.ns, "delete table ip labctl-cni\n");
    let (rc, v) = status();
    assert_eq!((rc, v["code"].as_u64()), (1, Some(51)), "{v}");
    assert_eq!(check(), (1, Some(101)));
    // ADD of another pod puts it back (idempotently), and DEL of both
    // leaves nothing.
    let other = common::netns("c28pod");
    node.add("c28-status-2", &other, &conf);
    assert_eq!(check(), (0, None));
    node.del("c28-status", &path(&pod), &conf);
    node.del("c28-status-2", &path(&other), &conf);
    node.assert_clean("c28status");
}

#[test]
fn a_store_locked_too_long_answers_try_again_later() {
    if !common::privileged("a_store_locked_too_long_answers_try_again_later") {
        return;
    }
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "c28busy",
        json!({"subnet": "10.28.13.0/24"}),
        "none",
    );
    let (a, b) = (common::netns("c28pod"), common::netns("c28pod"));
    node.add("c28-busy-a", &a, &conf);
    // Another call holding the lock (as a stuck plugin would).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(node.data_dir().join("c28busy/lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let t = Instant::now();
    let (rc, v) = node.call("ADD", "c28-busy-b", &path(&b), "eth0", &conf);
    let waited = t.elapsed();
    assert_eq!((rc, v["code"].as_u64()), (1, Some(11)), "{v}");
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .contains(&std::process::id().to_string()),
        "{v}"
    );
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert_eq!(pod_addresses(&b), Vec::<String>::new());
    drop(held);
    // Free again: the same call goes through.
    node.add("c28-busy-b", &b, &conf);
    node.del("c28-busy-a", &path(&a), &conf);
    node.del("c28-busy-b", &path(&b), &conf);
    node.assert_clean("c28busy");
}
