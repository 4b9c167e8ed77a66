//! A lab's services: building the chosen datapath at `lab up`, changing
//! services live (`svc add|del|backend`), reading them back with names,
//! and the cgroups socket-LB needs.
//!
//! The lab's record holds the services as the learner last set them; every
//! change is planned and written by the lab's `ServiceDatapath` (built
//! here from the lab's mode, by [`datapath`]), each mode its own way (a
//! whole-table iptables-restore, one nft transaction, a few map writes).

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use super::{
    Endpoint as Member, Lab, LabError,
    plan::{CLUSTER_CIDR, Plan},
    state::{CgroupRecord, LabLock, LabState},
};
use crate::{
    conntrack::netlink::Ctnetlink,
    kernel::{
        cgroup::{self, CgroupError},
        datapath::Shown,
        interrupt::{Stop, Why},
        netns::NetNs,
    },
    services::{
        self, Cluster, Endpoint, Flow, Frontend, FrontendView, KubeProxyMode, L4, LabCgroup, Node,
        ServiceDatapath, ServiceError, ServiceSpec, SpecError,
        model::{self, APP_PORT},
    },
};

/// The scenario's services, as first recorded.
fn initial(plan: &Plan) -> Vec<ServiceSpec> {
    plan.scenario
        .services
        .iter()
        .map(|d| ServiceSpec {
            name: d.name.to_owned(),
            vip: d.vip,
            port: d.port,
            target_port: d.target_port,
            protocols: vec![L4::Tcp, L4::Udp],
            backends: d.backends.iter().map(|b| (*b).to_owned()).collect(),
        })
        .collect()
}

/// Builds the services' datapath during `lab up` (the caller rolls back
/// on error: every object made is recorded first).
pub(super) fn build(plan: &Plan, state: &mut LabState) -> Result<(), LabError> {
    let mode = plan.kube_proxy().unwrap_or_default();
    if services::about(mode).pod_cgroups() {
        // Fails here, before anything is made, without a cgroup2 tree.
        cgroup::path(&plan.cgroup(None)).map_err(ServiceError::from)?;
        make_cgroup(state, &plan.cgroup(None))?;
        for pod in &plan.pods {
            make_cgroup(state, &plan.cgroup(Some(&pod.name)))?;
        }
    }
    let dp = datapath(plan)?;
    dp.install()?;
    state.services = initial(plan);
    state.save()?;
    services::sync(&*dp, &frontends(plan, &state.services)?)?;
    Ok(())
}

/// Creates cgroup `rel`, recorded before (inode 0) and after it exists.
fn make_cgroup(state: &mut LabState, rel: &str) -> Result<(), LabError> {
    let path = cgroup::path(rel).map_err(ServiceError::from)?;
    state.cgroups.push(CgroupRecord {
        path: rel.to_owned(),
        inode: 0,
    });
    state.save()?;
    match cgroup::create(&path) {
        Ok(ino) => {
            if let Some(r) = state.cgroups.last_mut() {
                r.inode = ino;
            }
            state.save()?;
            Ok(())
        }
        Err(e) => {
            state.cgroups.pop();
            state.save()?;
            Err(ServiceError::from(e).into())
        }
    }
}

/// Removes the services' datapath from the lab's nodes that are still
/// its own (`ours`: namespaces whose inode is the recorded one) and the
/// lab's cgroups (pods first): what could not be. Works from the record
/// alone, whatever state a killed `up` left.
pub(super) fn teardown(state: &LabState, ours: &[NetNs]) -> Vec<String> {
    let mut errors = Vec::new();
    // The mode and the nodes from the lab's plan; a record whose scenario
    // is unknown (an older labctl's) has every namespace as a node.
    let plan = super::scenario::find(&state.scenario)
        .and_then(|sc| Plan::new(&state.lab, sc, state.options.clone()).ok());
    let mode = match &plan {
        Some(p) => p.kube_proxy(),
        None => state.options.kube_proxy,
    };
    if let Some(mode) = mode {
        let nodes = ours
            .iter()
            .filter(|ns| {
                plan.as_ref()
                    .is_none_or(|p| p.nodes.iter().any(|n| n.netns == ns.name()))
            })
            .map(|ns| Node {
                name: ns.name().to_owned(),
                ns: ns.handle(),
                veths: Vec::new(),
            })
            .collect();
        let cgroup = state
            .cgroups
            .first()
            .filter(|r| r.inode != 0)
            .map(|r| LabCgroup {
                name: r.path.clone(),
                inode: r.inode,
            });
        let cluster = Cluster {
            nodes,
            cgroup,
            cluster_cidr: String::new(),
        };
        let dp = services::datapath(mode, cluster);
        // Socket-LB without a cgroup made has nothing to remove.
        if !(dp.pod_cgroups() && dp.cluster().cgroup.is_none())
            && let Err(e) = dp.teardown()
        {
            errors.push(format!("cannot remove the services' {}: {e}", dp.holder()));
        }
    }
    for r in state.cgroups.iter().rev() {
        let path = match cgroup::path(&r.path) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if let Err(e) = cgroup::remove(&path, r.inode) {
            errors.push(match e {
                CgroupError::Io { ref source, .. }
                    if source.raw_os_error() == Some(libc::EBUSY) =>
                {
                    format!(
                        "{e} (a process still runs in it: end `labctl lab exec`/`lab traffic` in this lab, then run `labctl lab down` again)"
                    )
                }
                e => e.to_string(),
            });
        }
    }
    errors
}

/// Where the lab's services live: its nodes (named as output names them,
/// with their pods' host-side veths) and, when its mode puts pods in
/// cgroups, the lab's cgroup.
pub fn cluster(plan: &Plan) -> Result<Cluster, LabError> {
    let mode = plan.kube_proxy().unwrap_or_default();
    let mut nodes = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        nodes.push(Node {
            name: super::names::display(&plan.lab, &n.name),
            ns: NetNs::open(&n.netns)?,
            veths: plan
                .pods
                .iter()
                .filter(|p| p.node == i)
                .map(|p| p.host_veth.clone())
                .collect(),
        });
    }
    let cgroup = if services::about(mode).pod_cgroups() {
        let name = plan.cgroup(None);
        let path = cgroup::path(&name).map_err(ServiceError::from)?;
        cgroup::inode(&path)
            .map_err(ServiceError::from)?
            .map(|inode| LabCgroup { name, inode })
    } else {
        None
    };
    Ok(Cluster {
        nodes,
        cgroup,
        cluster_cidr: format!("{}/{}", CLUSTER_CIDR.0, CLUSTER_CIDR.1),
    })
}

/// The lab's services datapath: its mode's, over its nodes.
pub fn datapath(plan: &Plan) -> Result<Box<dyn ServiceDatapath>, LabError> {
    Ok(services::datapath(
        plan.kube_proxy().unwrap_or_default(),
        cluster(plan)?,
    ))
}

/// The recorded services resolved to frontends (one per protocol).
pub fn frontends(plan: &Plan, specs: &[ServiceSpec]) -> Result<Vec<Frontend>, LabError> {
    let mut out = Vec::new();
    for s in specs {
        let mut backends = Vec::new();
        for b in &s.backends {
            let pod = plan.pod(b).ok_or_else(|| no_such_pod(plan, b))?;
            backends.push(Endpoint {
                addr: pod.addr,
                port: s.target_port,
            });
        }
        for proto in &s.protocols {
            out.push(Frontend {
                namespace: plan.lab.clone(),
                service: s.name.clone(),
                vip: s.vip,
                port: s.port,
                proto: *proto,
                backends: backends.clone(),
            });
        }
    }
    Ok(out)
}

fn no_such_pod(plan: &Plan, pod: &str) -> LabError {
    ServiceError::from(SpecError::NoSuchPod {
        pod: pod.to_owned(),
        lab: plan.lab.clone(),
        known: plan
            .pods
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
    .into()
}

fn no_such_service(lab: &str, specs: &[ServiceSpec], name: &str) -> LabError {
    ServiceError::from(SpecError::NoSuchService {
        name: name.to_owned(),
        lab: lab.to_owned(),
        known: specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
    .into()
}

/// A change to a lab's services, as `labctl svc` makes it.
#[derive(Debug, Clone)]
pub enum Change {
    Add(ServiceSpec),
    Delete(String),
    AddBackend {
        service: String,
        pod: String,
    },
    DeleteBackend {
        service: String,
        pod: String,
    },
    /// Exactly these backends (possibly none).
    SetBackends {
        service: String,
        pods: Vec<String>,
    },
}

/// What a change to a lab's services wrote (or, in a dry run, would
/// write), in the mode's own units.
#[derive(Debug, Clone)]
pub struct Changed {
    pub plan: Shown,
    /// The lab's nodes.
    pub nodes: usize,
    /// False: a dry run, nothing was written (the record neither).
    pub applied: bool,
}

/// Applies `change` to lab `lab`'s record and writes the result into its
/// nodes (`dry_run`: only plans it, and changes nothing).
pub fn change(lab: &str, change: Change, dry_run: bool) -> Result<Changed, LabError> {
    let _lock = LabLock::acquire()?;
    let mut lab = Lab::open(lab)?;
    let plan = &lab.plan;
    if plan.kube_proxy().is_none() {
        return Err(ServiceError::from(SpecError::NoSuchService {
            name: match &change {
                Change::Add(s) => s.name.clone(),
                Change::Delete(n)
                | Change::AddBackend { service: n, .. }
                | Change::DeleteBackend { service: n, .. }
                | Change::SetBackends { service: n, .. } => n.clone(),
            },
            lab: plan.lab.clone(),
            known: "(none: this lab's scenario has no services; try `labctl lab up service`)"
                .into(),
        })
        .into());
    }
    let lab_name = plan.lab.clone();
    let specs = &mut lab.state.services;
    let find = |specs: &[ServiceSpec], name: &str| specs.iter().position(|s| s.name == name);
    match change {
        Change::Add(mut spec) => {
            model::validate_name(&spec.name).map_err(ServiceError::from)?;
            if find(specs, &spec.name).is_some() {
                return Err(ServiceError::from(SpecError::Exists(spec.name)).into());
            }
            model::check_vip(spec.vip).map_err(ServiceError::from)?;
            spec.backends =
                model::backend_pods(&lab_name, &spec.backends).map_err(ServiceError::from)?;
            if let Some(other) = specs.iter().find(|s| s.vip == spec.vip) {
                return Err(ServiceError::from(SpecError::VipTaken {
                    vip: spec.vip,
                    service: other.name.clone(),
                })
                .into());
            }
            for b in &spec.backends {
                plan.pod(b).ok_or_else(|| no_such_pod(plan, b))?;
            }
            specs.push(spec);
        }
        Change::Delete(name) => {
            let i = find(specs, &name).ok_or_else(|| no_such_service(&lab_name, specs, &name))?;
            specs.remove(i);
        }
        Change::AddBackend { service, pod } => {
            let pod = model::backend_pod(&lab_name, &pod).map_err(ServiceError::from)?;
            plan.pod(&pod).ok_or_else(|| no_such_pod(plan, &pod))?;
            let i =
                find(specs, &service).ok_or_else(|| no_such_service(&lab_name, specs, &service))?;
            if specs[i].backends.contains(&pod) {
                return Err(ServiceError::from(SpecError::AlreadyBackend { pod, service }).into());
            }
            specs[i].backends.push(pod);
        }
        Change::DeleteBackend { service, pod } => {
            let pod = model::backend_pod(&lab_name, &pod).map_err(ServiceError::from)?;
            let i =
                find(specs, &service).ok_or_else(|| no_such_service(&lab_name, specs, &service))?;
            let Some(j) = specs[i].backends.iter().position(|b| *b == pod) else {
                return Err(ServiceError::from(SpecError::NotBackend {
                    known: specs[i].backends.join(", "),
                    pod,
                    service,
                })
                .into());
            };
            specs[i].backends.remove(j);
        }
        Change::SetBackends { service, pods } => {
            let pods = model::backend_pods(&lab_name, &pods).map_err(ServiceError::from)?;
            for pod in &pods {
                plan.pod(pod).ok_or_else(|| no_such_pod(plan, pod))?;
            }
            let i =
                find(specs, &service).ok_or_else(|| no_such_service(&lab_name, specs, &service))?;
            specs[i].backends = pods;
        }
    }
    let dp = datapath(plan)?;
    let planned = dp.plan(&frontends(plan, &lab.state.services)?)?;
    if !dry_run {
        dp.apply(&planned)?;
        lab.state.save()?;
    }
    Ok(Changed {
        plan: planned.shown(),
        nodes: dp.cluster().nodes.len(),
        applied: !dry_run,
    })
}

/// A free VIP in lab `lab` (for `svc add` without --vip).
pub fn free_vip(lab: &Lab) -> Result<Ipv4Addr, LabError> {
    Ok(model::free_vip(&lab.state.services).map_err(ServiceError::from)?)
}

/// The lab's frontends as read from the kernel, named: services from the
/// lab's record, backends by pod (`LAB/POD`).
pub fn list(lab: &Lab) -> Result<Vec<FrontendView>, LabError> {
    let mut views = datapath(&lab.plan)?.read()?;
    for v in &mut views {
        if let Some(s) = lab
            .state
            .services
            .iter()
            .find(|s| s.vip == v.vip && s.port == v.port)
        {
            v.service = Some(format!("{}/{}", lab.name(), s.name));
        }
        for b in &mut v.backends {
            b.pod = b.addr.and_then(|a| {
                lab.plan
                    .pods
                    .iter()
                    .find(|p| p.addr == a)
                    .map(|p| format!("{}/{}", lab.name(), p.name))
            });
        }
    }
    Ok(views)
}

/// The lab's translated connections, named: netfilter's DNAT entries
/// (conntrack in each node) for the kube-proxy modes, the load balancer's
/// own tables for the eBPF modes.
pub fn flows(lab: &Lab) -> Result<Vec<Flow>, LabError> {
    let dp = datapath(&lab.plan)?;
    let mut flows = if dp.netfilter() {
        let vips: Vec<Ipv4Addr> = lab.state.services.iter().map(|s| s.vip).collect();
        let mut out = Vec::new();
        for node in &dp.cluster().nodes {
            let entries = Ctnetlink::open_in(Some(&node.ns))
                .and_then(|mut ct| ct.dump(None))
                .map_err(|e| LabError::Conntrack(Box::new(e)))?;
            for e in entries {
                let (IpAddr::V4(vip), IpAddr::V4(client), IpAddr::V4(backend)) =
                    (e.orig.dst, e.orig.src, e.reply.src)
                else {
                    continue;
                };
                if !vips.contains(&vip) || backend == vip {
                    continue;
                }
                out.push(Flow {
                    table: "conntrack",
                    node: Some(node.name.clone()),
                    proto: L4::from_number(e.proto_num),
                    client: Some(client),
                    client_port: e.orig.sport,
                    client_pod: None,
                    socket: None,
                    vip,
                    port: e.orig.dport.unwrap_or(0),
                    backend,
                    backend_port: e.reply.sport.unwrap_or(0),
                    backend_pod: None,
                });
            }
        }
        out
    } else {
        dp.flows()?
    };
    let pod = |a: Option<Ipv4Addr>| {
        lab.plan
            .pods
            .iter()
            .find(|p| Some(p.addr) == a)
            .map(|p| format!("{}/{}", lab.name(), p.name))
    };
    for f in &mut flows {
        f.client_pod = pod(f.client);
        f.backend_pod = pod(Some(f.backend));
    }
    Ok(flows)
}

impl Lab {
    /// The cgroup `pod`'s processes run in, when the lab uses socket-LB.
    pub fn pod_cgroup(&self, pod: &str) -> Option<PathBuf> {
        let cgroups = |m: KubeProxyMode| services::about(m).pod_cgroups();
        if !self.plan.kube_proxy().is_some_and(cgroups) || self.plan.pod(pod).is_none() {
            return None;
        }
        let path = cgroup::path(&self.plan.cgroup(Some(pod))).ok()?;
        path.is_dir().then_some(path)
    }

    /// The service `name` (or with VIP `name`): its address and port.
    pub fn service(&self, name: &str) -> Option<(Ipv4Addr, u16)> {
        let vip = name.parse::<Ipv4Addr>().ok();
        self.state
            .services
            .iter()
            .find(|s| s.name == name || Some(s.vip) == vip)
            .map(|s| (s.vip, s.port))
    }

    /// Traffic to `to` when it names one of the lab's services (or its
    /// VIP): the destination, with `spec` set to start the app's servers
    /// in the backend pods, named, on the service's port (unless the
    /// caller gave one). None: not a service.
    pub fn service_traffic(
        &self,
        to: &str,
        spec: &mut super::traffic::TrafficSpec,
        port_given: bool,
    ) -> Option<Member> {
        if self.endpoint(to).is_some() {
            return None;
        }
        let (vip, port) = self.service(to)?;
        if !port_given {
            spec.port = port;
        }
        spec.servers = self.app_servers();
        spec.named = true;
        Some(Member {
            name: to.to_owned(),
            netns: None,
            addr: vip,
        })
    }

    /// The pods that run the scenario's app (an echo server naming itself
    /// on the app port), whether or not a service points at them now.
    pub fn app_servers(&self) -> Vec<(Member, u16)> {
        let mut seen = std::collections::BTreeSet::new();
        self.plan
            .scenario
            .services
            .iter()
            .flat_map(|s| s.backends.iter().copied())
            .filter(|p| seen.insert(*p))
            .filter_map(|p| self.endpoint(p))
            .map(|e| (e, APP_PORT))
            .collect()
    }
}

impl From<ServiceError> for LabError {
    fn from(e: ServiceError) -> Self {
        LabError::Services(Box::new(e))
    }
}

/// How long a capture waits for tcpdump to start, and for the end marker
/// once the traffic is sent.
const CAPTURE_WAIT: Duration = Duration::from_secs(10);

/// Where a capture's end marker goes: TEST-NET-1's discard port (routed
/// out of the pod like anything else, answered by nobody).
const MARKER: (Ipv4Addr, u16) = (Ipv4Addr::new(192, 0, 2, 1), 9);

/// The destinations of the TCP SYNs `member` sends on its eth0 while
/// `traffic` runs, as tcpdump (the learner's tool) sees them. The capture
/// ends when a marker datagram sent after the traffic shows up, so every
/// SYN before it has been read: no fixed observation window.
pub fn capture_syn_destinations(
    lab: &Lab,
    member: &str,
    traffic: impl FnOnce(),
) -> Result<Vec<Ipv4Addr>, LabError> {
    use std::{
        io::{BufRead as _, BufReader},
        process::{Command, Stdio},
    };

    use crate::kernel::tool::ToolError;

    let ns = lab.netns(member)?;
    let filter = format!(
        "(tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn) or (udp and dst host {} and dst port {})",
        MARKER.0, MARKER.1
    );
    let run_err = |source| {
        LabError::from(ServiceError::from(ToolError::Run {
            program: "tcpdump",
            netns: ns.name().to_owned(),
            source,
        }))
    };
    let mut child = ns
        .run(|| {
            Command::new("tcpdump")
                .args(["-nli", super::plan::POD_IFNAME, &filter])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })?
        .map_err(run_err)?;
    let refused = |stderr: String| {
        LabError::from(ServiceError::from(ToolError::Refused {
            program: "tcpdump",
            netns: ns.name().to_owned(),
            stderr,
        }))
    };
    // Its output, line by line, through threads: every wait below is
    // bounded and ends at Ctrl-C / SIGTERM (the caller checks for it).
    let lines = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let Some(pipe) = pipe else { return };
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        (rx, reader)
    };
    let (err, err_reader) = lines(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let (out, out_reader) = lines(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    // Once tcpdump is killed its pipes close and the readers end.
    let join = |readers: [std::thread::JoinHandle<()>; 2]| {
        for r in readers {
            if r.join().is_err() {
                tracing::debug!("a tcpdump reader panicked");
            }
        }
    };
    let next_line = |rx: &std::sync::mpsc::Receiver<String>, stop: &Stop| loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => return Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stop.stopped() => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    let stop_tcpdump = |child: &mut std::process::Child| {
        if let Err(e) = child.kill() {
            tracing::debug!("tcpdump: {e}");
        }
        if let Err(e) = child.wait() {
            tracing::debug!("tcpdump: {e}");
        }
    };
    // tcpdump says "listening on eth0" once its socket is open.
    let starting = Stop::new().duration(Some(CAPTURE_WAIT));
    let mut listening = false;
    while let Some(line) = next_line(&err, &starting) {
        if line.contains("listening on") {
            listening = true;
            break;
        }
    }
    if !listening {
        stop_tcpdump(&mut child);
        join([err_reader, out_reader]);
        return Err(refused(match starting.why() {
            Some(Why::Duration) => format!("not capturing after {} s", CAPTURE_WAIT.as_secs()),
            Some(_) => "stopped before capturing".into(),
            None => "exited before capturing".into(),
        }));
    }
    traffic();
    let marker = ns
        .run(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?
        .and_then(|s| s.send_to(b"end", MARKER))
        .map_err(run_err);
    let mut dsts = Vec::new();
    let mut saw_marker = false;
    let reading = Stop::new().duration(Some(CAPTURE_WAIT));
    while marker.is_ok()
        && let Some(line) = next_line(&out, &reading)
    {
        // "… IP 10.244.1.2.57080 > 10.96.0.10.80: Flags [S], …"
        let Some(dst) = line.split(" > ").nth(1).and_then(|r| r.split(':').next()) else {
            continue;
        };
        let Some(addr) = dst
            .rsplit_once('.')
            .and_then(|(a, _)| a.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        if addr == MARKER.0 {
            saw_marker = true;
            break;
        }
        dsts.push(addr);
    }
    stop_tcpdump(&mut child);
    join([err_reader, out_reader]);
    marker?;
    if !saw_marker {
        return Err(refused("stopped before the end of the capture".into()));
    }
    Ok(dsts)
}
