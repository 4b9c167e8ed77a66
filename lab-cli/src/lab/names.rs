//! Lab members and pods as namespace names: what a learner reads and types.
//!
//! Output names a lab's namespace `LAB/MEMBER` (`drops/pod-b`): stable
//! whichever other labs come and go. `--netns` accepts that, a bare member
//! (`pod-b`) when only one lab has it, and everything
//! [`netns::lookup`](crate::kernel::netns::lookup) accepts. A lab pod's
//! Kubernetes namespace (`kube-system` for `starwars/coredns`) is one of
//! its attributes, not part of its name: `LAB/NAMESPACE/POD` is accepted
//! as well (`starwars/kube-system/coredns`), output keeps `LAB/POD`.
//!
//! On a Kubernetes node the pods the node's container runtime runs (kind's
//! `cni-UUID` namespaces) are named the same way, `NAMESPACE/NAME`, through
//! [`cri`]: a lab pod and a cluster pod read alike, and `--pod`,
//! `--pod-namespace` and `--netns` accept both. A lab wins where a lab and
//! a Kubernetes namespace share a name.
//!
//! Naming has one home, this module's resolver ([`pods`]): one reading of
//! the runtime's pods and of the labs, shared by every view of the process
//! (the drop session through [`member_names`], conntrack views and observe
//! through [`PodAddrs`], masquerade and metrics through [`pods_by_addr`] and
//! [`pods`]). A thread of its own refreshes it; the CRI call is bounded by
//! [`cri::TIMEOUT`] and never made by a caller: a scrape or an event uses
//! the last names read ([`Want::Known`]). A runtime socket that does not
//! answer is said once per process, and pods are then named from kubelet's
//! cgroups.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    Lab, LabError,
    plan::{Role, validate_name},
};
pub use crate::kernel::names::Want;
use crate::kernel::{
    cri::{self, CriError, Sandbox},
    names::{Identity, PodRef},
    netns::{self, NetNs, NetnsError},
    node, podcgroup,
};

/// The ready pods of the node's container runtime that have their own
/// namespace, as the resolver last read them.
fn runtime_pods() -> Vec<Sandbox> {
    pods(Want::Known).runtime.clone()
}

/// The pods the node's container runtime runs now, as its CRI says
/// (read after this call, through the resolver): ready, with their own
/// namespace and an address. Pods named from kubelet's cgroups (no
/// runtime) are not among them: they have no address or labels.
pub fn runtime_pods_now() -> Vec<Sandbox> {
    pods(Want::Newer)
        .runtime
        .iter()
        .filter(|s| !s.id.is_empty() && runtime_ipv4(s).is_some())
        .cloned()
        .collect()
}

/// Pods named from kubelet's cgroups and log directories (no runtime, or
/// one that does not answer): their namespaces, not their addresses.
fn cgroup_pods() -> Vec<Sandbox> {
    let mut inodes = node::scope();
    // A host-network pod's processes live in the node's namespace, which
    // is not that pod's.
    if let Ok(host) = netns::host().inode() {
        inodes.remove(&host);
    }
    podcgroup::pods(&inodes, std::path::Path::new(podcgroup::POD_LOG_DIR))
        .into_iter()
        .map(|p| Sandbox {
            id: String::new(),
            name: p.name,
            namespace: p.namespace,
            uid: p.uid,
            ready: true,
            netns_ino: Some(p.netns_ino),
            netns_path: Some(p.netns_path),
            ips: Vec::new(),
            labels: Default::default(),
        })
        .collect()
}

/// The runtime's pods from its CRI, else from kubelet's cgroups; and
/// whether the runtime kept us waiting (it then is not asked for names
/// read after a call: [`Want::Newer`] gets the known ones).
fn read_runtime_pods() -> (Vec<Sandbox>, bool) {
    let started = Instant::now();
    match cri::sandboxes(cri::socket()) {
        Ok(pods) => (
            pods.into_iter()
                .filter(|s| s.ready && s.netns_ino.is_some())
                .collect(),
            started.elapsed() >= STALLED,
        ),
        Err(e) => {
            const INSTEAD: &str =
                "pods are named from kubelet's cgroups instead (without their addresses)";
            match e {
                // A plain host: no runtime, nothing to say.
                CriError::NoSocket(_) => tracing::debug!("no pod names from the runtime: {e}"),
                CriError::Timeout(socket) => warn_once(&format!(
                    "the container runtime at {} did not answer within {:?}: {INSTEAD} until it does. Is it running (`ctr version`)? Another socket: --cri-socket PATH.",
                    socket.display(),
                    cri::TIMEOUT
                )),
                e => warn_once(&format!("{e}: {INSTEAD}.")),
            }
            (cgroup_pods(), started.elapsed() >= STALLED)
        }
    }
}

/// A read that took this long kept us waiting: the runtime does not answer
/// (or hardly).
const STALLED: Duration = Duration::from_millis(500);

static WARNED: AtomicBool = AtomicBool::new(false);
static PRINTER: OnceLock<fn(&str)> = OnceLock::new();

/// How the resolver's one warning is printed (the CLI fills it to 80
/// columns on stderr); without a printer it is logged.
pub fn set_warning_printer(print: fn(&str)) {
    if PRINTER.set(print).is_err() {
        tracing::debug!("the naming warning printer is already set");
    }
}

/// Says `message` the first time only, whichever thread and view meets it.
fn warn_once(message: &str) {
    if WARNED.swap(true, Ordering::SeqCst) {
        tracing::debug!("{message}");
        return;
    }
    match PRINTER.get() {
        Some(print) => print(message),
        None => tracing::warn!("{message}"),
    }
}

/// One reading of every name the resolver knows.
#[derive(Debug, Default)]
pub struct PodNames {
    /// The runtime's ready pods that have their own namespace.
    runtime: Vec<Sandbox>,
    /// `LAB/MEMBER` and `NAMESPACE/NAME` by namespace inode.
    netns: Arc<HashMap<u64, Identity>>,
    /// Each lab's namespaces and its pods by address.
    labs: Vec<(BTreeSet<u64>, HashMap<Ipv4Addr, PodRef>)>,
}

impl PodNames {
    /// Reads the runtime's pods (bounded by [`cri::TIMEOUT`]) and the labs;
    /// the second is whether the runtime kept us waiting.
    fn read() -> (Self, bool) {
        let (runtime, stalled) = read_runtime_pods();
        let labs = Lab::all().unwrap_or_else(|e| {
            tracing::debug!("no lab names: {e}");
            Vec::new()
        });
        (Self::of(runtime, &labs), stalled)
    }

    fn of(runtime: Vec<Sandbox>, labs: &[Lab]) -> Self {
        let mut netns = HashMap::new();
        for pod in &runtime {
            if let Some(ino) = pod.netns_ino {
                let pod = runtime_pod_ref(pod);
                netns.insert(
                    ino,
                    Identity {
                        name: pod.to_string(),
                        pod: Some(pod),
                    },
                );
            }
        }
        for lab in labs {
            for record in &lab.state.namespaces {
                let Some((member, role, _)) = lab
                    .plan
                    .members()
                    .find(|(_, _, netns)| *netns == record.name)
                else {
                    continue;
                };
                if record.inode == 0 {
                    continue;
                }
                netns.insert(
                    record.inode,
                    Identity {
                        name: display(lab.name(), member),
                        pod: (role == Role::Pod).then(|| pod_ref(lab.name(), member)),
                    },
                );
            }
        }
        let labs = labs
            .iter()
            .map(|l| {
                (
                    l.state.namespaces.iter().map(|r| r.inode).collect(),
                    l.plan
                        .pods
                        .iter()
                        .map(|p| (p.addr, pod_ref(l.name(), &p.name)))
                        .collect(),
                )
            })
            .collect();
        Self {
            runtime,
            netns: Arc::new(netns),
            labs,
        }
    }

    /// The pods by address as namespace `netns_ino` sees them: the
    /// runtime's (unique in the cluster) and those of the lab the
    /// namespace belongs to (pod addresses repeat across labs).
    pub fn by_addr(&self, netns_ino: u64) -> HashMap<Ipv4Addr, PodRef> {
        let mut out: HashMap<_, _> = self
            .runtime
            .iter()
            .filter_map(|s| Some((runtime_ipv4(s)?, runtime_pod_ref(s))))
            .collect();
        if let Some((_, pods)) = self
            .labs
            .iter()
            .find(|(inodes, _)| inodes.contains(&netns_ino))
        {
            out.extend(pods.iter().map(|(a, p)| (*a, p.clone())));
        }
        out
    }
}

/// How the resolver waits and refreshes (shorter in its unit test).
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Names older than this start a refresh (the caller keeps them).
    refresh_after: Duration,
    /// The longest [`Want::Newer`] waits: a runtime that answers at all
    /// does so in milliseconds.
    newer_wait: Duration,
    /// The longest the very first caller waits for the first names.
    first_wait: Duration,
    /// After a reading the runtime kept waiting, the next one is this late.
    stalled_retry: Duration,
}

const TIMING: Timing = Timing {
    refresh_after: Duration::from_secs(1),
    newer_wait: Duration::from_secs(1),
    first_wait: Duration::from_secs(cri::TIMEOUT.as_secs() + 2),
    stalled_retry: Duration::from_secs(5),
};

/// A reader: one reading, and whether it kept us waiting.
type Read = Box<dyn Fn() -> (PodNames, bool) + Send + Sync>;

/// The cache and its refresher thread (see the module docs).
struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified when a reading is asked for and when one is done.
    changed: Condvar,
    read: Read,
    timing: Timing,
}

#[derive(Default)]
struct State {
    names: Option<Arc<PodNames>>,
    /// When the reading in `names` started.
    read_at: Option<Instant>,
    /// When it ended.
    done_at: Option<Instant>,
    /// Readings asked for: the n-th is answered once `covered >= n`.
    asked: u64,
    covered: u64,
    /// A refresh is wanted: the names are old.
    nudged: bool,
    /// The last reading kept us waiting.
    stalled: bool,
    started: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Resolver {
    fn new(read: Read, timing: Timing) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                read,
                timing,
            }),
        }
    }

    /// The names, as fresh as `want` says (see [`Want`]).
    fn names(&self, want: Want) -> Arc<PodNames> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if !state.started {
            state.started = true;
            let thread = Arc::clone(shared);
            if let Err(e) = std::thread::Builder::new()
                .name("labctl-names".into())
                .spawn(move || thread.refresh_forever())
            {
                // No thread: read here, every time (names stay right, a
                // runtime that does not answer slows each caller).
                tracing::debug!("cannot start the naming thread: {e}");
                state.started = false;
                drop(state);
                return Arc::new((shared.read)().0);
            }
        }
        let wait = match (&state.names, want) {
            (None, _) => Some(shared.timing.first_wait),
            (Some(_), Want::Newer) if !state.stalled => Some(shared.timing.newer_wait),
            _ => None,
        };
        if let Some(bound) = wait {
            state.asked += 1;
            let ticket = state.asked;
            shared.changed.notify_all();
            let deadline = Instant::now() + bound;
            while state.covered < ticket {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    tracing::debug!("no names read within {bound:?}: using the last ones");
                    break;
                };
                state = shared
                    .changed
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        } else if state
            .read_at
            .is_some_and(|at| at.elapsed() > shared.timing.refresh_after)
            && !state.nudged
        {
            state.nudged = true;
            shared.changed.notify_all();
        }
        state.names.clone().unwrap_or_default()
    }
}

impl Shared {
    /// The refresher: a reading whenever one is asked for or the names are
    /// old and used; after a reading the runtime kept waiting, the next
    /// waits `stalled_retry` (unless nothing was ever read).
    fn refresh_forever(&self) {
        loop {
            let covers = {
                let mut state = lock(&self.state);
                loop {
                    let wanted = state.asked > state.covered || state.nudged;
                    let backoff = match state.done_at {
                        Some(done) if state.stalled && state.names.is_some() => self
                            .timing
                            .stalled_retry
                            .checked_sub(done.elapsed())
                            .filter(|d| !d.is_zero()),
                        _ => None,
                    };
                    state = match (wanted, backoff) {
                        (true, None) => break,
                        (true, Some(left)) => {
                            self.changed
                                .wait_timeout(state, left)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                        (false, _) => self
                            .changed
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner),
                    };
                }
                state.nudged = false;
                state.asked
            };
            let started = Instant::now();
            let (names, stalled) = (self.read)();
            let mut state = lock(&self.state);
            state.names = Some(Arc::new(names));
            state.read_at = Some(started);
            state.done_at = Some(Instant::now());
            state.stalled = stalled;
            state.covered = covers;
            self.changed.notify_all();
        }
    }
}

/// The process's one resolver.
fn resolver() -> &'static Resolver {
    static RESOLVER: OnceLock<Resolver> = OnceLock::new();
    RESOLVER.get_or_init(|| Resolver::new(Box::new(PodNames::read), TIMING))
}

/// Every name the process knows, as fresh as `want` says: the first call
/// waits for the first reading (bounded by the runtime's timeout),
/// [`Want::Known`] never waits after that.
pub fn pods(want: Want) -> Arc<PodNames> {
    resolver().names(want)
}

fn runtime_pod_ref(s: &Sandbox) -> PodRef {
    PodRef {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        uid: Some(s.uid.clone()).filter(|u| !u.is_empty()),
    }
}

fn runtime_ipv4(s: &Sandbox) -> Option<Ipv4Addr> {
    s.ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    })
}

/// Where a pod named `NS/NAME` lives.
enum PodHome {
    Lab(Box<Lab>, usize),
    Runtime(Sandbox),
}

/// `LAB/MEMBER` for every recorded lab namespace and `NAMESPACE/NAME` for
/// the runtime's pods, by inode; a lab's pods are pods `LAB/POD` (the lab
/// is their namespace, as in a cluster). The aliases of
/// [`Names`](crate::kernel::names::Names).
pub fn member_names(want: Want) -> Arc<HashMap<u64, Identity>> {
    Arc::clone(&pods(want).netns)
}

/// The pod identity of lab pod `pod` of lab `lab`.
pub fn pod_ref(lab: &str, pod: &str) -> PodRef {
    PodRef {
        namespace: lab.to_owned(),
        name: pod.to_owned(),
        uid: None,
    }
}

/// The lab `ns`, if one of that name is up; a name that is not a lab
/// name at all (a Kubernetes namespace may be spelled differently) is not
/// an error here.
fn open_lab(ns: &str) -> Result<Option<Lab>, LabError> {
    if validate_name(ns).is_err() {
        return Ok(None);
    }
    match Lab::open(ns) {
        Ok(lab) => Ok(Some(lab)),
        Err(LabError::NotUp(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The namespaces of every pod of namespace `ns` (`--pod-namespace NS`): a
/// lab's pods, or the runtime's pods in Kubernetes namespace `ns`.
pub fn pod_netns_of(ns: &str) -> Result<BTreeSet<u64>, LabError> {
    if let Some(lab) = open_lab(ns)? {
        return Ok(lab
            .state
            .namespaces
            .iter()
            .filter(|r| lab.plan.pods.iter().any(|p| p.netns == r.name))
            .map(|r| r.inode)
            .collect());
    }
    let set: BTreeSet<u64> = runtime_pods()
        .iter()
        .filter(|s| s.namespace == ns)
        .filter_map(|s| s.netns_ino)
        .collect();
    if set.is_empty() {
        return Err(LabError::NoSuchPodNamespace(ns.to_owned()));
    }
    Ok(set)
}

/// Pod `NS/NAME`: a lab pod (`LAB/POD`: nodes and the world are not pods)
/// or one of the node's container runtime.
fn find_pod(spec: &str) -> Result<PodHome, LabError> {
    let (ns, pod) = spec
        .split_once('/')
        .ok_or_else(|| NetnsError::NotFound(spec.to_owned()))?;
    let Some(l) = open_lab(ns)? else {
        return runtime_pods()
            .into_iter()
            .find(|s| s.namespace == ns && s.name == pod)
            .map(PodHome::Runtime)
            .ok_or_else(|| LabError::NoSuchPod(spec.to_owned()));
    };
    // `LAB/POD`, or `LAB/NAMESPACE/POD` with the pod's Kubernetes namespace.
    let found = l.plan.find_pod(pod).map(|p| p.name.clone());
    match l
        .plan
        .pods
        .iter()
        .position(|p| Some(&p.name) == found.as_ref())
    {
        Some(i) => Ok(PodHome::Lab(Box::new(l), i)),
        None => Err(LabError::NoSuchMember {
            name: pod.to_owned(),
            labs: format!("lab `{ns}` (as a pod)"),
            members: l
                .plan
                .pods
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The namespace of pod `NS/NAME` (`--pod`).
pub fn lookup_pod(spec: &str) -> Result<NetNs, LabError> {
    match find_pod(spec)? {
        PodHome::Lab(lab, i) => lab.netns(&lab.plan.pods[i].name),
        PodHome::Runtime(s) => match &s.netns_path {
            Some(path) => Ok(NetNs::at(spec, path)),
            None => Err(LabError::NoSuchPod(spec.to_owned())),
        },
    }
}

/// How output names member `member` of lab `lab`.
pub fn display(lab: &str, member: &str) -> String {
    format!("{lab}/{member}")
}

/// The namespace a user named with `--netns`: `LAB/MEMBER`, an `ip netns`
/// name, `host`, `pid:N`, an inode number, or a member of the one lab that
/// has it (`pod-a`).
pub fn lookup_netns(spec: &str) -> Result<NetNs, LabError> {
    // A path to a namespace file (/proc/PID/ns/net).
    if spec.starts_with('/') {
        return Ok(netns::lookup(spec)?);
    }
    if let Some((lab, member)) = spec.split_once('/') {
        return match open_lab(lab)? {
            Some(lab) => lab.netns(member),
            None => lookup_pod(spec).map_err(|e| match e {
                LabError::NoSuchPod(_) if validate_name(lab).is_ok() => {
                    LabError::NotUp(lab.to_owned())
                }
                e => e,
            }),
        };
    }
    match netns::lookup(spec) {
        Err(NetnsError::NotFound(_)) => {}
        found => return Ok(found?),
    }
    match Lab::find_member(None, spec) {
        Ok(lab) => lab.netns(spec),
        Err(e @ LabError::AmbiguousMember { .. }) => Err(e),
        Err(_) => Err(NetnsError::NotFound(spec.to_owned()).into()),
    }
}

/// `--netns` given (that namespace) or not (the caller's own: None).
pub fn lookup_netns_opt(spec: Option<&str>) -> Result<Option<NetNs>, LabError> {
    spec.map(lookup_netns).transpose()
}

/// The pods of the lab that namespace `netns_ino` belongs to, by address
/// (pod addresses repeat across labs, so only that lab's are named).
/// On a node, the runtime's pods are named too (their addresses are
/// unique in the cluster). Read after this call ([`Want::Newer`]): for a
/// command that starts; a view on its way uses [`PodAddrs`] or [`pods`].
pub fn pods_by_addr(netns_ino: u64) -> HashMap<Ipv4Addr, PodRef> {
    pods(Want::Newer).by_addr(netns_ino)
}

/// The address of pod `NS/NAME` (a lab pod: `LAB/POD`).
pub fn pod_addr(spec: &str) -> Result<Ipv4Addr, LabError> {
    match find_pod(spec)? {
        PodHome::Lab(lab, i) => Ok(lab.plan.pods[i].addr),
        PodHome::Runtime(s) => runtime_ipv4(&s).ok_or_else(|| LabError::NoSuchPod(spec.to_owned())),
    }
}

/// The addresses of every pod of namespace `ns` (a lab, or a Kubernetes
/// namespace of the node's runtime).
pub fn pod_addrs_of(ns: &str) -> Result<Vec<Ipv4Addr>, LabError> {
    if let Some(lab) = open_lab(ns)? {
        return Ok(lab.plan.pods.iter().map(|p| p.addr).collect());
    }
    let addrs: Vec<_> = runtime_pods()
        .iter()
        .filter(|s| s.namespace == ns)
        .filter_map(runtime_ipv4)
        .collect();
    if addrs.is_empty() {
        return Err(LabError::NoSuchPodNamespace(ns.to_owned()));
    }
    Ok(addrs)
}

/// [`pods_by_addr`] for a long-running view: follows the resolver's
/// readings, so pods that come and go are named and unnamed, and never
/// waits once started.
#[derive(Debug)]
pub struct PodAddrs {
    netns_ino: u64,
    names: Arc<PodNames>,
    map: HashMap<Ipv4Addr, PodRef>,
}

impl PodAddrs {
    pub fn new(netns_ino: u64) -> Self {
        let names = pods(Want::Newer);
        Self {
            netns_ino,
            map: names.by_addr(netns_ino),
            names,
        }
    }

    pub fn get(&mut self) -> &HashMap<Ipv4Addr, PodRef> {
        let now = pods(Want::Known);
        if !Arc::ptr_eq(&now, &self.names) {
            self.map = now.by_addr(self.netns_ino);
            self.names = now;
        }
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicU64, thread};

    use super::*;

    const FAST: Timing = Timing {
        refresh_after: Duration::from_millis(50),
        newer_wait: Duration::from_secs(1),
        first_wait: Duration::from_secs(5),
        stalled_retry: Duration::from_millis(1500),
    };

    /// Reading `n`: namespace 1 is named `vN`.
    fn reading(n: u64) -> PodNames {
        let identity = Identity {
            name: format!("v{n}"),
            pod: None,
        };
        PodNames {
            netns: Arc::new(HashMap::from([(1, identity)])),
            ..PodNames::default()
        }
    }

    fn name(names: &PodNames) -> &str {
        &names.netns[&1].name
    }

    /// Polls `resolver` with Want::Known (each call timed) until it names
    /// namespace 1 `want`.
    fn until_named(resolver: &Resolver, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let asked = Instant::now();
            let names = resolver.names(Want::Known);
            assert!(asked.elapsed() < Duration::from_millis(500), "Known waited");
            if name(&names) == want {
                return;
            }
            assert!(Instant::now() < deadline, "never named {want}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_resolver_refreshes_in_its_thread_and_a_stalled_source_never_holds_a_caller() {
        let reads = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicBool::new(false));
        let (count, stall) = (Arc::clone(&reads), Arc::clone(&slow));
        let resolver = Resolver::new(
            Box::new(move || {
                let stalled = stall.load(Ordering::SeqCst);
                if stalled {
                    thread::sleep(Duration::from_secs(3));
                }
                (reading(count.fetch_add(1, Ordering::SeqCst) + 1), stalled)
            }),
            FAST,
        );
        // The first caller waits for the first reading; Newer gets one that
        // started after the call; Known keeps the names it has.
        assert_eq!(name(&resolver.names(Want::Known)), "v1");
        assert_eq!(name(&resolver.names(Want::Newer)), "v2");
        assert_eq!(name(&resolver.names(Want::Known)), "v2");
        // Old names start a refresh in the background.
        thread::sleep(FAST.refresh_after * 2);
        until_named(&resolver, "v3");

        // A source that keeps us waiting (a CRI socket nobody answers on).
        slow.store(true, Ordering::SeqCst);
        thread::sleep(FAST.refresh_after * 2);
        until_named(&resolver, "v3"); // starts the slow reading v4
        // Newer waits for it, but no longer than its bound.
        let asked = Instant::now();
        assert_eq!(name(&resolver.names(Want::Newer)), "v3");
        let waited = asked.elapsed();
        assert!(
            waited >= FAST.newer_wait && waited < Duration::from_millis(2500),
            "{waited:?}"
        );
        until_named(&resolver, "v4");
        // Once a reading stalled, Newer does not wait either, and the next
        // reading waits stalled_retry.
        let asked = Instant::now();
        assert_eq!(name(&resolver.names(Want::Newer)), "v4");
        assert!(asked.elapsed() < Duration::from_millis(500));
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        thread::sleep(Duration::from_millis(500));
        resolver.names(Want::Known);
        assert_eq!(reads.load(Ordering::SeqCst), 4, "no backoff");
        // It answers again: the names follow after the backoff.
        slow.store(false, Ordering::SeqCst);
        until_named(&resolver, "v6");
    }

    #[test]
    fn runtime_pods_are_named_by_namespace_and_address() {
        let web = Sandbox {
            id: "1".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            ready: true,
            netns_path: None,
            netns_ino: Some(4026532001),
            ips: vec!["fd00::5".parse().unwrap(), "10.244.1.5".parse().unwrap()],
            labels: Default::default(),
        };
        let names = PodNames::of(vec![web], &[]);
        let pod = PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: Some("u1".into()),
        };
        assert_eq!(
            names.netns.get(&4026532001),
            Some(&Identity {
                name: "default/web".into(),
                pod: Some(pod.clone()),
            })
        );
        assert_eq!(
            names.by_addr(7),
            HashMap::from([(Ipv4Addr::new(10, 244, 1, 5), pod)])
        );
    }
}
