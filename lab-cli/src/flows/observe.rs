//! The observe loop: conntrack watchers in every namespace of the
//! selection, the eBPF tracker's tables where they run, and the drop tracer
//! in a thread of its own, merged into one stream of [`Item`]s.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io,
    net::IpAddr,
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::{
    Flow, FlowFilter, Item, Lost, LostSource, PodsByAddr, PolicyEvent, PolicySource, VerdictPacket,
};
use crate::{
    conntrack::{
        entry::CtEntry,
        netlink::EventKind,
        tracker,
        watcher::{Batch, Watcher},
    },
    drops::{
        reasons::{POLICY_DENIED, POLICY_DENY},
        record::DropRecord,
        session::{self, PolicyQuery, Scope, Sink, TraceOptions},
    },
    ebpf::{
        pins,
        policy::{self as policy_progs, Events, PolicyMaps},
    },
    kernel::{
        interrupt::{Gone, Stop, Why},
        names::{Names, PodRef},
        netns::{NetNs, Selection},
        nflog::{Nflog, NflogError},
        ready::ReadyFile,
    },
    lab::{
        gone,
        names::{self as lab_names, PodAddrs},
        policy::{DropPolicies, node_policy_mode},
    },
    policy::{
        PolicyMode,
        bpf::port_proto,
        nft::{NFLOG_GROUP, parse_log_prefix},
    },
};
use lab_common::policy::{
    DIR_EGRESS, EVENT_ENFORCED, MATCH_NONE, POLICY_STATIC_PREFIX, PolicyKey, REASON_FORWARDED,
    REASON_POLICY_DENY, VerdictEvent, stat,
};

/// Everything `labctl observe` was asked to do.
pub struct ObserveOptions {
    pub namespaces: Selection,
    pub filter: FlowFilter,
    /// Stop after this many flows (lost records are not counted).
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub ready_file: Option<PathBuf>,
    /// What the ready file says (default `observing`; `--serve` puts its
    /// address there).
    pub ready_text: Option<String>,
    /// The drop tracer's ring buffer.
    pub ring_bytes: u32,
    /// Receive buffer of each conntrack event socket.
    pub ct_buffer: usize,
    /// Ends the stream when what it watches is gone (`--lab`'s lab, the
    /// `--netns` namespaces).
    pub gone: Option<Gone>,
    /// Says something on the side (standard error): a watched lab or
    /// namespace that went away while the stream goes on.
    pub notice: fn(&str),
}

/// What a run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Flows shown (after the filters).
    pub flows: u64,
    /// Events lost (ring buffer) and flows found only by resynchronizing.
    pub lost: u64,
    /// Why the stream stopped when it was not asked to: what it watched is
    /// gone (the sentence says what).
    #[serde(skip)]
    pub gone: Option<String>,
}

/// How often the namespaces are listed again (new pods, gone labs) and the
/// eBPF tracker's tables compared with their last reading.
const REFRESH: Duration = Duration::from_millis(500);

/// Pod names by address, per namespace (IPv4 only: lab and node pods).
#[derive(Default)]
struct Pods(HashMap<u64, PodAddrs>);

impl PodsByAddr for Pods {
    fn pod(&mut self, netns_ino: u64, ip: IpAddr) -> Option<PodRef> {
        let IpAddr::V4(v4) = ip else {
            return None;
        };
        self.0
            .entry(netns_ino)
            .or_insert_with(|| PodAddrs::new(netns_ino))
            .get()
            .get(&v4)
            .cloned()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The drop tracer's side: each drop becomes a flow on the channel, each
/// loss a lost record.
struct ChannelSink {
    tx: mpsc::Sender<Item>,
    pods: Pods,
}

impl ChannelSink {
    fn send(&self, item: Item) -> io::Result<()> {
        self.tx
            .send(item)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the observer stopped"))
    }
}

impl Sink for ChannelSink {
    fn drop_seen(&mut self, record: &DropRecord) -> io::Result<()> {
        let flow = Flow::from_drop(record, &mut self.pods);
        self.send(Item::Flow(Box::new(flow)))
    }
    fn lost(&mut self, newly: u64) -> io::Result<()> {
        self.send(Item::Lost(Lost {
            time_ns: now_ns(),
            source: LostSource::TracerRing,
            count: newly,
            node: "drop tracer".into(),
        }))
    }
}

/// A namespace being watched.
struct Watched {
    name: String,
    /// None where conntrack cannot be reached (the module is not loaded).
    watcher: Option<Watcher>,
    /// The eBPF tracker's table at its last reading, where one runs.
    tracked: HashMap<(u8, crate::conntrack::entry::Tuple), CtEntry>,
    /// The lab it belongs to, if any.
    lab: Option<String>,
    /// Whether it is a pod's (named `NAMESPACE/NAME`).
    pod: bool,
    /// Where its policy verdicts come from, once found.
    verdicts: Option<Verdicts>,
}

/// A node's policy verdicts on new connections.
enum Verdicts {
    /// The eBPF policy programs' ring buffer (`--policy-mode ebpf`, a lab's
    /// node or a Kubernetes node), with the maps whose counter says how
    /// many verdicts the full ring lost, and that count when last read.
    Ebpf(Box<(Events, PolicyMaps, u64)>),
    /// The netfilter rules' `log group` (`--policy-mode netfilter`).
    Nflog(Nflog),
}

/// The policy-verdict side of the stream: sources are read, NFLOG's
/// repeats folded, and verdicts named with the labs' policies.
struct VerdictReader {
    names: DropPolicies,
    /// NFLOG's last report of each (namespace, tuple, direction,
    /// verdict): netfilter's rules see every packet of a connection until
    /// its first reply (a dropped connection's retransmissions, an
    /// unanswered UDP flow's datagrams), the eBPF CT only its first.
    seen: HashMap<(u64, [u8; 13], bool, bool), Instant>,
}

/// How long NFLOG's reports of one tuple are one connection: past
/// conntrack's wait for a SYN's reply (120 s) and an unreplied UDP
/// flow's (30 s).
const NFLOG_FOLD: Duration = Duration::from_secs(120);
/// Tuples remembered at most (a scan is forgotten, not kept).
const NFLOG_SEEN_MAX: usize = 65536;

/// The merged stream, handed to `emit` item by item until Ctrl-C,
/// `duration` or `count`.
pub fn observe(
    opts: ObserveOptions,
    emit: &mut dyn FnMut(&Item) -> io::Result<()>,
) -> anyhow::Result<Stats> {
    let mut ready = ReadyFile::claim(opts.ready_file.as_deref())?;
    let mut names = Names::with_aliases(Some(lab_names::member_names));
    let mut pods = Pods::default();
    let mut stats = Stats::default();

    let (tx, rx) = mpsc::channel();
    let scope = match &opts.namespaces {
        Selection::Listed(_) => {
            let inodes: BTreeSet<u64> = opts
                .namespaces
                .resolve()
                .iter()
                .filter_map(|ns| ns.inode().ok())
                .collect();
            Scope(Box::new(move || inodes.clone()))
        }
        Selection::HostAndNamed => Scope(Box::new(|| {
            Selection::HostAndNamed
                .resolve()
                .iter()
                .filter_map(|ns| ns.inode().ok())
                .collect()
        })),
    };
    let tracer = session::start(
        TraceOptions {
            ring_bytes: opts.ring_bytes,
            netns_aliases: Some(lab_names::member_names),
            scope: Some(scope),
            policy_names: Some(crate::lab::policy::drop_namer()),
            ..TraceOptions::default()
        },
        ChannelSink {
            tx,
            pods: Pods::default(),
        },
    )
    .context("starting the drop tracer")?;

    let mut watched: HashMap<u64, Watched> = HashMap::new();
    let mut verdicts = VerdictReader {
        names: DropPolicies::new(),
        seen: HashMap::new(),
    };
    // Labs whose going was said (said again if they come back and go).
    let mut said = HashSet::new();
    refresh(&opts, &mut names, &mut watched, &mut said);
    ready.signal(opts.ready_text.as_deref().unwrap_or("observing"))?;
    let stop = Stop::new()
        .duration(opts.duration)
        .count(opts.count)
        .gone(opts.gone.clone());
    let mut refreshed = Instant::now();

    let mut show = |item: &Item, stats: &mut Stats| -> io::Result<bool> {
        match item {
            Item::Flow(f) if !opts.filter.matches(f) => return Ok(false),
            Item::Flow(_) => stats.flows += 1,
            Item::Lost(l) => stats.lost += l.count,
        }
        emit(item)?;
        Ok(stop.counted(stats.flows))
    };

    'observe: loop {
        // The tracer thread ends early only on an error, reported below.
        let stopping = stop.stopped() || tracer.is_finished();
        wait_for_events(&watched, &stop)?;
        for (ino, w) in &mut watched {
            let Some(watcher) = &mut w.watcher else {
                continue;
            };
            // Each read returns what one receive brought: read until empty.
            loop {
                let batch = watcher.next(0).context("reading conntrack events")?;
                if batch.events.is_empty() && batch.overrun.is_none() {
                    break;
                }
                for item in batch_items(batch, &w.name, *ino, &mut pods) {
                    if show(&item, &mut stats)? {
                        break 'observe;
                    }
                }
            }
        }
        for item in verdicts.read(&mut watched, &mut pods) {
            if show(&item, &mut stats)? {
                break 'observe;
            }
        }
        if refreshed.elapsed() >= REFRESH {
            for flow in tracker_changes(&mut watched, &mut pods) {
                if show(&Item::Flow(Box::new(flow)), &mut stats)? {
                    break 'observe;
                }
            }
            refresh(&opts, &mut names, &mut watched, &mut said);
            refreshed = Instant::now();
        }
        // Drops: what the tracer thread queued meanwhile.
        for item in rx.try_iter() {
            if show(&item, &mut stats)? {
                break 'observe;
            }
        }
        if stopping {
            break;
        }
    }
    // Everything the tracer already counted is delivered at its stop.
    let counted_at_stop = stop.why() != Some(Why::Count);
    tracer.stop().context("the drop tracer failed")?;
    if counted_at_stop {
        // The tracker's table once more, so a stop right after the
        // traffic shows its connections too.
        for flow in tracker_changes(&mut watched, &mut pods) {
            if show(&Item::Flow(Box::new(flow)), &mut stats)? {
                break;
            }
        }
        for item in rx.try_iter() {
            if show(&item, &mut stats)? {
                break;
            }
        }
        for item in verdicts.read(&mut watched, &mut pods) {
            if show(&item, &mut stats)? {
                break;
            }
        }
        'reconcile: for (ino, w) in &mut watched {
            let Some(watcher) = &mut w.watcher else {
                continue;
            };
            let batch = watcher.reconcile().context("resynchronizing conntrack")?;
            for item in batch_items(batch, &w.name, *ino, &mut pods) {
                if show(&item, &mut stats)? {
                    break 'reconcile;
                }
            }
        }
    }
    if let Some(Why::Gone(why)) = stop.why() {
        stats.gone = Some(why);
    }
    Ok(stats)
}

/// A watcher's batch as items: connections starting and ending (state
/// changes are not flows) and, after lost events, the loss with the number
/// of flows the resync found.
fn batch_items(batch: Batch, node: &str, netns_ino: u64, pods: &mut Pods) -> Vec<Item> {
    let mut items: Vec<Item> = batch
        .events
        .iter()
        .filter(|seen| seen.event.kind != EventKind::Update)
        .map(|seen| {
            Item::Flow(Box::new(Flow::from_conntrack(
                &seen.event.entry,
                seen.event.kind,
                seen.resync,
                node,
                netns_ino,
                now_ns(),
                pods,
            )))
        })
        .collect();
    if let Some((new, gone)) = batch.overrun {
        items.push(Item::Lost(Lost {
            time_ns: now_ns(),
            source: LostSource::CtnetlinkBuffer,
            count: new + gone,
            node: node.to_owned(),
        }));
    }
    items
}

/// Waits up to 50 ms for conntrack events in any namespace (drops arrive on
/// the channel, read after each wait), less when the stream stops.
fn wait_for_events(watched: &HashMap<u64, Watched>, stop: &Stop) -> anyhow::Result<()> {
    let mut fds: Vec<_> = watched
        .values()
        .filter_map(|w| w.watcher.as_ref())
        .map(Watcher::fd)
        .collect();
    fds.extend(watched.values().filter_map(|w| match &w.verdicts {
        Some(Verdicts::Ebpf(e)) => Some(e.0.fd()),
        Some(Verdicts::Nflog(n)) => Some(n.fd()),
        None => None,
    }));
    stop.readable(&fds, Duration::from_millis(50))
        .context("waiting for conntrack events")?;
    Ok(())
}

/// Watches the namespaces that appeared and forgets those gone, saying
/// which went (a lab once all of its are gone) while others are watched.
fn refresh(
    opts: &ObserveOptions,
    names: &mut Names,
    watched: &mut HashMap<u64, Watched>,
    said: &mut HashSet<String>,
) {
    let now: Vec<_> = opts
        .namespaces
        .resolve()
        .into_iter()
        .filter_map(|ns| ns.inode().ok().map(|ino| (ino, ns)))
        .collect();
    let live: BTreeSet<u64> = now.iter().map(|(ino, _)| *ino).collect();
    let went: Vec<Watched> = watched
        .extract_if(|ino, _| !live.contains(ino))
        .map(|(_, w)| w)
        .collect();
    if !watched.is_empty() || live.iter().any(|ino| !watched.contains_key(ino)) {
        for line in went_lines(&went, watched, said) {
            (opts.notice)(&line);
        }
    }
    let labs = if now.iter().any(|(ino, _)| !watched.contains_key(ino)) {
        gone::labs_by_netns()
    } else {
        HashMap::new()
    };
    // A node whose eBPF policy maps came after it was first seen.
    for (ino, w) in watched.iter_mut() {
        if w.verdicts.is_none() {
            w.verdicts = ebpf_verdicts(*ino);
        }
    }
    for (ino, ns) in now {
        if watched.contains_key(&ino) {
            continue;
        }
        if let Some(lab) = labs.get(&ino) {
            said.remove(lab);
        }
        let watcher = match Watcher::open(Some(&ns), opts.ct_buffer) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!("no conntrack events from {}: {e}", ns.name());
                None
            }
        };
        watched.insert(
            ino,
            Watched {
                name: names.netns(ino),
                watcher,
                tracked: tracker_table(ino),
                lab: labs.get(&ino).cloned(),
                pod: names.pod(ino).is_some(),
                verdicts: open_verdicts(&ns, ino, opts.notice),
            },
        );
    }
}

/// What to say about the namespaces that `went`: a lab once none of its
/// namespaces is watched any more (once), any other namespace by name.
fn went_lines(
    went: &[Watched],
    watched: &HashMap<u64, Watched>,
    said: &mut HashSet<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for w in went {
        match &w.lab {
            Some(lab) => {
                let left = watched.values().any(|o| o.lab.as_ref() == Some(lab));
                if !left && said.insert(lab.clone()) {
                    lines.push(format!(
                        "lab `{lab}` was taken down: its namespaces are gone; still watching the others"
                    ));
                }
            }
            None => lines.push(format!(
                "{} `{}` is gone; still watching the others",
                if w.pod { "pod" } else { "namespace" },
                w.name
            )),
        }
    }
    lines
}

/// The verdict ring of the eBPF policy maps pinned for the namespace with
/// inode `ino`, if any; what it held before is stale and read away.
fn ebpf_verdicts(ino: u64) -> Option<Verdicts> {
    let dir = pins::policy(ino);
    if !policy_progs::loaded(&dir) {
        return None;
    }
    let opened = PolicyMaps::open(&dir).and_then(|m| {
        let events = m.events()?;
        let lost = m.stats()?[stat::EVENTS_LOST as usize];
        Ok((m, events, lost))
    });
    match opened {
        Ok((maps, mut events, lost)) => {
            events.drain();
            Some(Verdicts::Ebpf(Box::new((events, maps, lost))))
        }
        Err(e) => {
            tracing::debug!("no policy verdicts from {}: {e}", dir.display());
            None
        }
    }
}

/// Where a newly seen namespace's policy verdicts come from: its eBPF
/// policy maps, or, on a lab node with --policy-mode netfilter, the
/// rules' NFLOG group.
fn open_verdicts(ns: &NetNs, ino: u64, notice: fn(&str)) -> Option<Verdicts> {
    if let Some(v) = ebpf_verdicts(ino) {
        return Some(v);
    }
    if node_policy_mode(ino) != Some(PolicyMode::Netfilter) {
        return None;
    }
    match Nflog::open(ns, NFLOG_GROUP) {
        Ok(n) => Some(Verdicts::Nflog(n)),
        Err(e @ NflogError::Busy(_)) => {
            notice(&format!("{}: no policy verdicts from it: {e}", ns.name()));
            None
        }
        Err(e) => {
            tracing::debug!("no policy verdicts from {}: {e}", ns.name());
            None
        }
    }
}

impl VerdictReader {
    /// Every verdict the watched nodes reported since the last read, as
    /// flows.
    fn read(&mut self, watched: &mut HashMap<u64, Watched>, pods: &mut Pods) -> Vec<Item> {
        let mut items = Vec::new();
        for (ino, w) in watched.iter_mut() {
            match &mut w.verdicts {
                Some(Verdicts::Ebpf(ring)) => {
                    let (events, maps, lost) = &mut **ring;
                    for ev in events.drain() {
                        if let Some(flow) = self.ebpf_flow(&ev, &w.name, *ino, pods) {
                            items.push(Item::Flow(Box::new(flow)));
                        }
                    }
                    if let Ok(stats) = maps.stats() {
                        let now = stats[stat::EVENTS_LOST as usize];
                        if now > *lost {
                            items.push(Item::Lost(Lost {
                                time_ns: now_ns(),
                                source: LostSource::PolicyRing,
                                count: now - *lost,
                                node: w.name.clone(),
                            }));
                        }
                        *lost = now;
                    }
                }
                Some(Verdicts::Nflog(nflog)) => match nflog.drain() {
                    Ok((logged, lost)) => {
                        if lost > 0 {
                            items.push(Item::Lost(Lost {
                                time_ns: now_ns(),
                                source: LostSource::NflogBuffer,
                                count: lost,
                                node: w.name.clone(),
                            }));
                        }
                        for l in logged {
                            if let Some(flow) =
                                self.nflog_flow(&l.prefix, &l.payload, &w.name, *ino, pods)
                            {
                                items.push(Item::Flow(Box::new(flow)));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("NFLOG of {}: {e}", w.name);
                        w.verdicts = None;
                    }
                },
                None => {}
            }
        }
        items
    }

    /// The names of a verdict, from the lab's policies.
    fn names(
        &mut self,
        ino: u64,
        p: &VerdictPacket,
        egress: bool,
        allowed: bool,
        deny: bool,
    ) -> Option<crate::lab::policy::VerdictNames> {
        let dport = if p.proto == 1 {
            u16::from(p.info)
        } else {
            p.dport
        };
        self.names.verdict(
            &PolicyQuery {
                netns_ino: ino,
                src: p.src.into(),
                dst: p.dst.into(),
                dport,
                l4proto: p.proto,
                egress,
                deny,
            },
            allowed,
        )
    }

    /// A verdict event of the eBPF programs: shown where Cilium would
    /// send a policy verdict notification (the direction enforces policy)
    /// and wherever a deny entry dropped.
    fn ebpf_flow(
        &mut self,
        ev: &VerdictEvent,
        node: &str,
        ino: u64,
        pods: &mut Pods,
    ) -> Option<Flow> {
        if ev.flags & EVENT_ENFORCED == 0 && ev.reason == REASON_FORWARDED {
            return None;
        }
        let packet = VerdictPacket {
            src: std::net::Ipv4Addr::from(ev.saddr.to_ne_bytes()),
            dst: std::net::Ipv4Addr::from(ev.daddr.to_ne_bytes()),
            sport: u16::from_be(ev.sport),
            dport: u16::from_be(ev.dport),
            proto: ev.proto,
            info: ev.tcp_flags,
        };
        let egress = ev.dir == DIR_EGRESS;
        let allowed = ev.reason == REASON_FORWARDED;
        let deny = ev.reason == REASON_POLICY_DENY;
        let direction = if egress { "egress" } else { "ingress" };
        let entry = if ev.match_type == MATCH_NONE {
            format!(
                "endpoint {} {direction}: no entry{}",
                ev.endpoint,
                if allowed { "" } else { ", default deny" }
            )
        } else {
            let key = PolicyKey {
                endpoint: ev.endpoint,
                sec_label: ev.match_identity,
                egress: u8::from(egress),
                protocol: ev.match_proto,
                dport: ev.match_dport,
                pad: 0,
            };
            format!(
                "endpoint {} {direction} {} {} {}",
                ev.endpoint,
                crate::policy::bpf::peer_name(ev.match_identity),
                port_proto(POLICY_STATIC_PREFIX + u32::from(ev.match_prefix), &key),
                if allowed { "allow" } else { "deny" }
            )
        };
        let names = self.names(ino, &packet, egress, allowed, deny);
        let (src_identity, dst_identity) = if egress {
            (ev.local_identity, ev.remote_identity)
        } else {
            (ev.remote_identity, ev.local_identity)
        };
        let reason = verdict_reason(allowed, deny);
        Some(Flow::from_policy(
            &packet,
            reason,
            node,
            ino,
            now_ns(),
            PolicyEvent {
                source: PolicySource::Ebpf,
                direction,
                match_type: ev.match_type,
                entry,
                src_identity: Some(src_identity),
                dst_identity: Some(dst_identity),
                names,
            },
            pods,
        ))
    }

    /// A packet one of the netfilter rules logged: the first of its
    /// connection in this direction and verdict is a flow.
    fn nflog_flow(
        &mut self,
        prefix: &str,
        payload: &[u8],
        node: &str,
        ino: u64,
        pods: &mut Pods,
    ) -> Option<Flow> {
        let v = parse_log_prefix(prefix)?;
        let packet = VerdictPacket::parse(payload)?;
        let egress = v.direction == crate::policy::model::Direction::Egress;
        let mut tuple = [0u8; 13];
        tuple[..4].copy_from_slice(&packet.src.octets());
        tuple[4..8].copy_from_slice(&packet.dst.octets());
        tuple[8..10].copy_from_slice(&packet.sport.to_be_bytes());
        tuple[10..12].copy_from_slice(&packet.dport.to_be_bytes());
        tuple[12] = packet.proto;
        let now = Instant::now();
        let key = (ino, tuple, egress, v.allowed);
        if self
            .seen
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < NFLOG_FOLD)
        {
            return None;
        }
        if self.seen.len() >= NFLOG_SEEN_MAX {
            self.seen.retain(|_, t| now.duration_since(*t) < NFLOG_FOLD);
            if self.seen.len() >= NFLOG_SEEN_MAX {
                self.seen.clear();
            }
        }
        self.seen.insert(key, now);
        let names = self.names(ino, &packet, egress, v.allowed, v.deny_rule);
        let reason = verdict_reason(v.allowed, v.deny_rule);
        Some(Flow::from_policy(
            &packet,
            reason,
            node,
            ino,
            now_ns(),
            PolicyEvent {
                source: PolicySource::Nflog,
                direction: v.direction.as_str(),
                match_type: v.match_type,
                entry: format!("rule \"{}\"", v.rule),
                src_identity: None,
                dst_identity: None,
                names,
            },
            pods,
        ))
    }
}

fn tracker_table(ino: u64) -> HashMap<(u8, crate::conntrack::entry::Tuple), CtEntry> {
    let mut table = HashMap::new();
    for pin in tracker::running(ino).unwrap_or_default() {
        match tracker::read_pinned(&pin) {
            Ok(entries) => table.extend(entries.into_iter().map(|e| (e.key(), e))),
            Err(e) => tracing::debug!("reading the tracker table {}: {e}", pin.display()),
        }
    }
    table
}

/// Connections the eBPF tracker's tables gained or lost since their last
/// reading, as flows.
fn tracker_changes(watched: &mut HashMap<u64, Watched>, pods: &mut Pods) -> Vec<Flow> {
    let mut flows = Vec::new();
    for (ino, w) in watched.iter_mut() {
        let now = tracker_table(*ino);
        if now.is_empty() && w.tracked.is_empty() {
            continue;
        }
        let flow = |e: &CtEntry, kind, pods: &mut Pods| {
            Flow::from_conntrack(e, kind, false, &w.name, *ino, now_ns(), pods)
        };
        for (k, e) in &now {
            if !w.tracked.contains_key(k) {
                flows.push(flow(e, EventKind::New, pods));
            }
        }
        for (k, e) in &w.tracked {
            if !now.contains_key(k) {
                flows.push(flow(e, EventKind::Destroy, pods));
            }
        }
        w.tracked = now;
    }
    flows
}

/// The drop reason a policy verdict carries: none when allowed,
/// `POLICY_DENY` for a deny rule, `POLICY_DENIED` for a default deny.
fn verdict_reason(allowed: bool, deny_rule: bool) -> Option<&'static str> {
    match (allowed, deny_rule) {
        (true, _) => None,
        (false, true) => Some(POLICY_DENY),
        (false, false) => Some(POLICY_DENIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str, lab: Option<&str>, pod: bool) -> Watched {
        Watched {
            name: name.into(),
            watcher: None,
            tracked: HashMap::new(),
            lab: lab.map(str::to_owned),
            pod,
            verdicts: None,
        }
    }

    #[test]
    fn a_lab_is_said_gone_once_when_its_last_namespace_goes() {
        let mut said = HashSet::new();
        let mut watched = HashMap::from([
            (1, ns("host", None, false)),
            (2, ns("b/node1", Some("b"), false)),
        ]);
        // One of two: not yet.
        let went = [ns("b/pod-a", Some("b"), true)];
        assert!(went_lines(&went, &watched, &mut said).is_empty());
        watched.remove(&2);
        let went = [ns("b/node1", Some("b"), false)];
        assert_eq!(
            went_lines(&went, &watched, &mut said),
            ["lab `b` was taken down: its namespaces are gone; still watching the others"]
        );
        // Said once.
        assert!(went_lines(&went, &watched, &mut said).is_empty());
        // Anything else by name, a pod as a pod.
        let went = [ns("blue", None, false), ns("default/web", None, true)];
        assert_eq!(
            went_lines(&went, &watched, &mut said),
            [
                "namespace `blue` is gone; still watching the others",
                "pod `default/web` is gone; still watching the others"
            ]
        );
    }
}
