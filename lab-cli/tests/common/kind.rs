//! A kind-like cluster for the tests: nodes that are privileged containers
//! (runc, an OCI bundle written here) in namespaces the test made, each
//! running Debian's containerd with its CRI plugin, pods created through CRI
//! exactly as kubelet creates them, ptp CNI with per-node pod CIDRs (as
//! kindnet), and the nodes on a bridge in a test-owned namespace.
//!
//! What a kind node is and this is too: a container with its own pid, mount,
//! uts, ipc and cgroup namespaces and all capabilities, tmpfs on /run and
//! /tmp, /sys read-only, no bpffs or tracefs mounted, containerd on
//! /run/containerd/containerd.sock (namespace `k8s.io`), pods' namespaces at
//! /var/run/netns/cni-UUID. What differs: no systemd or kubelet (the test is
//! the kubelet), the host's /usr read-only instead of an image (no registry
//! here), and runc instead of docker/podman (podman 4.3 sets RLIMIT_NOFILE
//! above what root may set on this machine kind).
//!
//! Everything is torn down on drop, errors collected; killing a node's init
//! kills everything in its pid namespace, and its cgroups are removed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a fixture fails loudly at the first surprise"
)]
#![allow(dead_code, reason = "each test uses a different part of the fixture")]

use std::{
    fs,
    future::Future,
    net::Ipv4Addr,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;

/// Cgroup `name` (at the root) in every hierarchy of the host: each v1
/// controller's and v2 (`unified` on a hybrid host), or v2 alone.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.join(name)];
    }
    fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("cgroup.procs").exists())
        .map(|e| e.path().join(name))
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn try_run(cmd: &mut Command) -> Result<(), String> {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{cmd:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    }
}

/// The pause image as an OCI archive in `d`: a static program that waits
/// for a signal, packed with umoci.
fn pause_image(d: &Path) -> PathBuf {
    fs::write(
        d.join("pause.c"),
        "#include <signal.h>\n#include <unistd.h>\n\
             static void bye(int s) { (void)s; _exit(0); }\n\
             int main(void) { signal(SIGTERM, bye); signal(SIGINT, bye);\n\
             for (;;) pause(); }\n",
    )
    .unwrap();
    run(Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(d.join("pause"))
        .arg(d.join("pause.c")));
    let layout = d.join("oci");
    let image = format!("{}:3.9", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = d.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    fs::copy(d.join("pause"), bundle.join("rootfs/pause")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args(["config", "--image", &image, "--config.entrypoint", "/pause"]));
    let tar = d.join("pause.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    tar
}

/// Every capability, CAP_BPF and CAP_PERFMON included (docker's privileged
/// mode lacks those two on older engines).
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const CONTAINERD_CONFIG: &str = r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"#;

/// A pod created through CRI.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    /// Inside the node (`/var/run/netns/cni-UUID`).
    pub netns_path: String,
    pub netns_ino: u64,
}

/// The conflist `scripts/kind.sh --cni` installs, for one node's pod CIDR.
pub fn labctl_conflist(pod_cidr: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "labctl",
        "plugins": [{
            "type": "labctl-cni",
            "mtu": 1500,
            "ipam": {"subnet": pod_cidr},
            "labctl": {"masquerade": "netfilter", "clusterCIDR": "10.244.0.0/16"}
        }]
    })
}

/// The network plugin containerd calls for pods.
#[derive(Clone)]
pub enum Cni {
    /// Debian's reference plugins, as kindnet: ptp with host-local IPAM,
    /// masquerading.
    Reference,
    /// labctl itself (`/opt/cni/bin/labctl-cni`, a link to the node's
    /// /usr/local/bin/labctl, as scripts/kind.sh --cni installs it), with
    /// the conflist made for a node's pod CIDR (`10.244.N.0/24`).
    Labctl {
        binary: PathBuf,
        conflist: fn(pod_cidr: &str) -> serde_json::Value,
    },
}

impl Cni {
    fn conflist(&self, pod_cidr: &str) -> (&'static str, serde_json::Value) {
        match self {
            Cni::Reference => (
                "10-kindnet.conflist",
                serde_json::json!({
                    "cniVersion": "0.4.0",
                    "name": "kindnet",
                    "plugins": [{
                        "type": "ptp",
                        "ipMasq": true,
                        "mtu": 1500,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": "/run/cni-ipam-state",
                            "ranges": [[{"subnet": pod_cidr}]],
                            "routes": [{"dst": "0.0.0.0/0"}]
                        }
                    }]
                }),
            ),
            Cni::Labctl { conflist, .. } => ("10-labctl.conflist", conflist(pod_cidr)),
        }
    }
}

pub struct Node {
    pub name: String,
    /// The namespace the node's container runs in (made by the test).
    netns: Option<lab_cli::kernel::netns::NetNs>,
    pub addr: Ipv4Addr,
    pub pod_cidr: u8,
    dir: tempfile::TempDir,
    runc_root: PathBuf,
    /// The node container's cgroup directories on the host, one per
    /// hierarchy (every v1 controller, and v2).
    cgroups: Vec<PathBuf>,
    started: bool,
    pod_count: u32,
}

fn runc(root: &Path) -> Command {
    let mut c = Command::new("runc");
    c.arg("--root").arg(root);
    c
}

impl Node {
    /// Boots node `name` with address 172.31.0.`10+index` on the fabric and
    /// pod CIDR 10.244.`index`.0/24; containerd is ready when this returns.
    fn boot(prefix: &str, index: u8, pause: &Path, cni: &Cni) -> Self {
        let name = format!("{prefix}-n{index}");
        let netns = lab_cli::kernel::netns::NetNs::create(&name).expect("node netns");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap();
        let runc_root = dir.path().join("runc");
        let mut node = Self {
            cgroups: cgroup_dirs(&name),
            name,
            netns: Some(netns),
            addr: Ipv4Addr::new(172, 31, 0, 10 + index),
            pod_cidr: index,
            dir,
            runc_root,
            started: false,
            pod_count: 0,
        };
        node.write_bundle(pause, cni);
        let t = Instant::now();
        run(runc(&node.runc_root)
            .args(["run", "--detach", "--bundle"])
            .arg(node.dir.path())
            .arg(&node.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
        node.started = true;
        node.wait_for_containerd();
        node.exec(&[
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "import",
            "--base-name",
            "registry.k8s.io/pause",
            "/var/pause.tar",
        ]);
        eprintln!("node {} up in {:?}", node.name, t.elapsed());
        node
    }

    /// The `ip netns` name of the namespace the node runs in.
    pub fn netns_name(&self) -> &str {
        self.netns.as_ref().map(|n| n.name()).unwrap_or("")
    }

    fn netns_path(&self) -> &Path {
        self.netns
            .as_ref()
            .map(|n| n.path())
            .unwrap_or(Path::new(""))
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Where the node's binaries copied in live (`/usr/local/bin` inside,
    /// over the host's read-only /usr), as `docker cp` puts them in kind.
    pub fn local_bin(&self) -> PathBuf {
        self.dir.path().join("local-bin")
    }

    /// The pod CIDR containerd's plugin allocates from.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.pod_cidr)
    }

    fn write_bundle(&self, pause: &Path, cni: &Cni) {
        let root = self.rootfs();
        for d in [
            "usr", "proc", "sys", "dev", "run", "tmp", "etc", "var/lib", "var/log", "root", "opt",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for (link, to) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("var/run", "../run"),
        ] {
            std::os::unix::fs::symlink(to, root.join(link)).unwrap();
        }
        for f in ["passwd", "group", "hosts", "ld.so.cache", "nsswitch.conf"] {
            if Path::new("/etc").join(f).exists() {
                fs::copy(Path::new("/etc").join(f), root.join("etc").join(f)).unwrap();
            }
        }
        // Pods get a copy (no DNS here: nothing answers; nothing asks).
        fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        // iptables and friends are symlinks through /etc/alternatives.
        run(Command::new("cp")
            .args(["-a", "/etc/alternatives"])
            .arg(root.join("etc/alternatives")));
        fs::create_dir_all(root.join("etc/containerd")).unwrap();
        fs::write(root.join("etc/containerd/config.toml"), CONTAINERD_CONFIG).unwrap();
        fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
        let (file, conflist) = cni.conflist(&self.pod_cidr());
        fs::write(root.join("etc/cni/net.d").join(file), conflist.to_string()).unwrap();
        // The CNI bin directory: the reference plugins (containerd's CRI
        // calls `loopback` for every pod), and labctl where it is the plugin.
        let bin = root.join("opt/cni/bin");
        fs::create_dir_all(&bin).unwrap();
        for plugin in fs::read_dir("/usr/lib/cni").unwrap().flatten() {
            std::os::unix::fs::symlink(plugin.path(), bin.join(plugin.file_name())).unwrap();
        }
        fs::create_dir_all(self.local_bin()).unwrap();
        fs::set_permissions(self.local_bin(), fs::Permissions::from_mode(0o755)).unwrap();
        if let Cni::Labctl { binary, .. } = cni {
            fs::copy(binary, self.local_bin().join("labctl")).unwrap();
            std::os::unix::fs::symlink("/usr/local/bin/labctl", bin.join("labctl-cni")).unwrap();
        }
        fs::copy(pause, root.join("var/pause.tar")).unwrap();

        let mounts = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "rw"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            // As the host has them (v1 controllers, v2 at `unified` on a
            // hybrid host), rooted at the node's cgroup: the runtime in the
            // node needs the v1 cpu controller for pods' cpu shares.
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "rw"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/usr/local/bin", "type": "bind", "source": self.local_bin(), "options": ["bind", "ro"]},
            {"destination": "/lib/modules", "type": "bind", "source": "/lib/modules", "options": ["rbind", "ro"]},
        ]);
        let mut mounts = mounts.as_array().unwrap().clone();
        if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            mounts.insert(4, serde_json::json!(
                {"destination": "/sys/fs/cgroup/unified", "type": "cgroup2", "source": "cgroup2", "options": ["nosuid", "noexec", "nodev", "rw"]}
            ));
        }
        if !Path::new("/lib/modules").exists() {
            mounts.retain(|m| m["destination"] != "/lib/modules");
        }
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/bin/sh", "-c",
                    "exec containerd --config /etc/containerd/config.toml >>/var/log/containerd.log 2>&1"],
                "env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "container=docker",
                ],
                "cwd": "/",
                "capabilities": {
                    "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
                    "inheritable": CAPS, "ambient": CAPS,
                },
                "noNewPrivileges": false,
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": self.name,
            "mounts": mounts,
            "linux": {
                "cgroupsPath": format!("/{}", self.name),
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                    {"type": "cgroup"},
                    {"type": "network", "path": self.netns_path()},
                ],
                "devices": [],
                "resources": {"devices": [{"allow": true, "access": "rwm"}]},
            },
        });
        fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// The node's init process as the host sees it (for /proc/PID/root).
    pub fn pid(&self) -> u32 {
        let state = run(runc(&self.runc_root).args(["state", &self.name]));
        let v: serde_json::Value = serde_json::from_str(&state).unwrap();
        v["pid"].as_u64().unwrap() as u32
    }

    /// A path inside the node, reached from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.pid()))
    }

    /// The last lines of the node's containerd log.
    fn log_tail(&self) -> String {
        let log =
            fs::read_to_string(self.rootfs().join("var/log/containerd.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn wait_for_containerd(&self) {
        let socket = self.path("/run/containerd/containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start in node {}: {}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `docker exec NODE ARGS…`: runs a command in the node, returns its
    /// output; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        run(self.exec_cmd(args).stderr(Stdio::piped()))
    }

    /// The command that runs `args` in the node (to spawn or inspect).
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = runc(&self.runc_root);
        c.args([
            "exec",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]);
        c.args(["--env", "container=docker", &self.name]);
        c.args(args);
        c
    }

    async fn cri(&self) -> RuntimeServiceClient<Channel> {
        lab_cli::kernel::cri::connect(&self.path("/run/containerd/containerd.sock"))
            .await
            .expect("connect to the node's containerd")
    }

    /// Creates pod `namespace/name` as kubelet would (RunPodSandbox with
    /// kubelet's metadata, log directory and cgroup parent).
    pub fn run_pod(&mut self, namespace: &str, name: &str) -> Pod {
        self.run_pod_labelled(namespace, name, &[])
    }

    /// [`Node::run_pod`] with the pod's Kubernetes labels: kubelet puts
    /// them in the sandbox's labels beside its own `io.kubernetes.*`.
    pub fn run_pod_labelled(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Pod {
        self.pod_count += 1;
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            fastrand::u32(..),
            u64::from(self.pod_count)
        );
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
            labels: [
                ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    namespace.to_owned(),
                ),
                ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
            ]
            .into_iter()
            .chain(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Pod as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // kubelet makes the pod's log directory before the sandbox.
        fs::create_dir_all(
            self.rootfs()
                .join(format!("var/log/pods/{namespace}_{name}_{uid}")),
        )
        .unwrap();
        let t = Instant::now();
        let (id, status) = block_on(async {
            let mut cri = self.cri().await;
            let id = cri
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "RunPodSandbox {namespace}/{name} in {}: {e}\n{}",
                        self.name,
                        self.log_tail()
                    )
                })
                .into_inner()
                .pod_sandbox_id;
            let status = cri
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: true,
                })
                .await
                .expect("PodSandboxStatus")
                .into_inner();
            (id, status)
        });
        let ip: Ipv4Addr = status
            .status
            .as_ref()
            .and_then(|s| s.network.as_ref())
            .map(|n| n.ip.parse().expect("pod IP"))
            .expect("pod has an IP");
        let info = status.info.get("info").cloned().unwrap_or_default();
        let (path, _) = lab_cli::kernel::cri::netns_from_info(&info);
        let netns_path = path
            .expect("the sandbox's netns path")
            .display()
            .to_string();
        let netns_ino = fs::metadata(self.path(&netns_path)).unwrap().ino();
        eprintln!(
            "pod {namespace}/{name} ({ip}) on {} in {:?}",
            self.name,
            t.elapsed()
        );
        Pod {
            id,
            namespace: namespace.into(),
            name: name.into(),
            uid,
            ip,
            netns_path,
            netns_ino,
        }
    }

    /// Stops and removes a pod as kubelet would, and its cgroup.
    pub fn remove_pod(&self, pod: &Pod) {
        block_on(async {
            let mut cri = self.cri().await;
            cri.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .expect("StopPodSandbox");
            cri.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .expect("RemovePodSandbox");
        });
        let logs = self.rootfs().join(format!(
            "var/log/pods/{}_{}_{}",
            pod.namespace, pod.name, pod.uid
        ));
        fs::remove_dir_all(logs).unwrap();
        for dir in &self.cgroups {
            let cg = dir.join(format!("kubepods/besteffort/pod{}", pod.uid));
            if cg.exists() {
                remove_cgroup_tree(&cg).unwrap();
            }
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.started {
            // Killing the init of the node's pid namespace kills every
            // process in it: containerd, its shims, the pods' pause.
            if let Err(e) = try_run(runc(&self.runc_root).args(["kill", &self.name, "KILL"])) {
                errors.push(e);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let out = runc(&self.runc_root)
                    .args(["state", &self.name])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if !out.contains("\"running\"") || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The pods' cgroups below the node's, then the node's own.
            for dir in &self.cgroups {
                for child in fs::read_dir(dir).into_iter().flatten().flatten() {
                    if child.path().is_dir()
                        && let Err(e) = remove_cgroup_tree(&child.path())
                    {
                        errors.push(format!("{}: {e}", child.path().display()));
                    }
                }
            }
            if let Err(e) = try_run(runc(&self.runc_root).args(["delete", "--force", &self.name])) {
                errors.push(e);
            }
            for dir in &self.cgroups {
                if let Err(e) = remove_cgroup_tree(dir) {
                    errors.push(format!("{}: {e}", dir.display()));
                }
            }
        }
        self.started = false;
        if let Some(ns) = self.netns.take() {
            let name = ns.name().to_owned();
            if let Err(e) = ns.delete() {
                errors.push(format!("netns {name}: {e}"));
            }
        }
        errors
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let errors = self.teardown();
        if !errors.is_empty() {
            eprintln!("node teardown left:\n  {}", errors.join("\n  "));
        }
    }
}

/// rmdir depth first; a cgroup with processes left fails (EBUSY), which
/// the caller reports.
fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Processes just killed leave their cgroup a moment later.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Nodes on a bridge in a test-owned namespace, with routes to each
/// other's pod CIDRs (as kindnet sets them up).
pub struct Cluster {
    pub nodes: Vec<Node>,
    fabric: Option<lab_cli::kernel::netns::NetNs>,
    /// Where the pause image was built.
    _images: tempfile::TempDir,
}

impl Cluster {
    /// Nodes with Debian's reference plugins (ptp, host-local) as kindnet.
    pub fn up(tag: &str, nodes: u8) -> Self {
        Self::up_with(tag, nodes, &Cni::Reference)
    }

    /// Nodes whose containerd calls `cni` for pods.
    pub fn up_with(tag: &str, nodes: u8, cni: &Cni) -> Self {
        let prefix = format!("lk{tag}{:04x}", fastrand::u16(..));
        let fabric =
            lab_cli::kernel::netns::NetNs::create(&format!("{prefix}-fab")).expect("fabric netns");
        let images = tempfile::Builder::new()
            .prefix(&format!("{prefix}-images-"))
            .tempdir()
            .unwrap();
        let pause = pause_image(images.path());
        let mut cluster = Self {
            nodes: Vec::new(),
            fabric: Some(fabric),
            _images: images,
        };
        let fab = cluster.fabric.as_ref().unwrap().name().to_owned();
        run(Command::new("ip").args(["-n", &fab, "link", "add", "br0", "type", "bridge"]));
        run(Command::new("ip").args(["-n", &fab, "link", "set", "br0", "up"]));
        for i in 1..=nodes {
            let node = Node::boot(&prefix, i, &pause, cni);
            let ns = node.netns_name().to_owned();
            let outside = format!("{prefix}v{i}");
            run(Command::new("ip").args([
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &outside,
                "netns", &fab,
            ]));
            run(Command::new("ip")
                .args(["-n", &fab, "link", "set", &outside, "master", "br0", "up"]));
            run(Command::new("ip").args([
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", node.addr),
                "dev",
                "eth0",
            ]));
            run(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]));
            run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
            run(Command::new("ip").args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ]));
            cluster.nodes.push(node);
        }
        for a in &cluster.nodes {
            for b in &cluster.nodes {
                if a.name != b.name {
                    run(Command::new("ip").args([
                        "-n",
                        a.netns_name(),
                        "route",
                        "add",
                        &format!("10.244.{}.0/24", b.pod_cidr),
                        "via",
                        &b.addr.to_string(),
                    ]));
                }
            }
        }
        cluster
    }

    /// The `ip netns` name of the namespace the nodes' bridge (`br0`, the
    /// "fabric") lives in: outside every node, where a test puts "the
    /// world".
    pub fn fabric_name(&self) -> &str {
        self.fabric.as_ref().map(|n| n.name()).unwrap_or("")
    }

    /// Tears everything down, returning every error (none expected).
    pub fn down(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for mut node in self.nodes.drain(..) {
            errors.extend(node.teardown());
        }
        if let Some(fabric) = self.fabric.take()
            && let Err(e) = fabric.delete()
        {
            errors.push(format!("fabric netns: {e}"));
        }
        errors
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let errors = self.teardown();
        if !errors.is_empty() {
            eprintln!("cluster teardown left:\n  {}", errors.join("\n  "));
        }
    }
}
