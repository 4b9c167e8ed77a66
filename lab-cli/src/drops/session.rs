//! One tracing session: attach, stream or count, stop, summarize. What it
//! sees goes to a [`Sink`] (the text and JSON printers are in
//! `output::drops`; the demo collects with its own).

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::AsFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    time::{ClockId, clock_gettime},
};
use serde::Serialize;

use super::{
    filter::Filters,
    reasons::{DropReasons, drop_name},
    record::{DropRecord, PolicyNames, Resolve},
};
use crate::{
    ebpf::drop_tracer::{self, DropTracer, Hook},
    kernel::{
        btf::KernelBtf,
        interrupt::{Gone, Stop, Trigger, Why},
        kallsyms::Kallsyms,
        names::{Aliases, Names},
        ready::ReadyFile,
    },
};

/// Where a session's drops and summaries go. Only `drop_seen` is
/// required: a sink that has nothing to do at the other moments (one that
/// collects, counts, or forwards) leaves them out.
pub trait Sink {
    /// The tracer is attached through `hook` and about to deliver.
    fn started(&mut self, _hook: Hook) -> io::Result<()> {
        Ok(())
    }
    /// One drop (not called in summary mode).
    fn drop_seen(&mut self, record: &DropRecord) -> io::Result<()>;
    /// A batch of drops has been delivered.
    fn batch_done(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// `newly` more events could not be reserved in the ring buffer since
    /// the last call (checked after every batch, not in summary mode).
    fn lost(&mut self, _newly: u64) -> io::Result<()> {
        Ok(())
    }
    /// The counts so far, every `--interval` in summary mode.
    fn progress(&mut self, _summary: &Summary, _elapsed: Duration) -> io::Result<()> {
        Ok(())
    }
    /// The final counts.
    fn finished(&mut self, _summary: &Summary, _elapsed: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// Everything `labctl trace` was asked to do.
#[derive(Debug)]
pub struct TraceOptions {
    pub filters: Filters,
    pub summary: bool,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub ready_file: Option<PathBuf>,
    pub ring_bytes: u32,
    /// Use the classic tracepoint even where tp_btf works.
    pub classic_tracepoint: bool,
    /// Record and print each drop's kernel stack.
    pub stack: bool,
    /// Bytes of each drop's packet to copy, from its network header (0:
    /// none; `--pcap`).
    pub snaplen: u32,
    /// Ends the session when fired (for callers that trace while they act,
    /// such as the demo); Ctrl-C, --duration and --count still apply.
    pub stop: Option<Trigger>,
    /// Ends the session when what it watches is gone (the namespace of
    /// `--netns`/`--pod`, the lab of `--pod-namespace`).
    pub gone: Option<Gone>,
    /// Names for namespaces that the kernel does not know (lab members).
    pub netns_aliases: Option<Aliases>,
    /// Only these namespaces (a node's scope), recomputed as they come and go.
    pub scope: Option<Scope>,
    /// Names the policy behind each policy drop (the lab layer's
    /// `lab::policy::DropPolicies`).
    pub policy_names: Option<PolicyNamer>,
}

impl Default for TraceOptions {
    /// Every drop on the machine, a line each, until Ctrl-C.
    fn default() -> Self {
        Self {
            filters: Filters::default(),
            summary: false,
            interval: Duration::from_secs(1),
            duration: None,
            count: None,
            ready_file: None,
            ring_bytes: 1 << 22,
            classic_tracepoint: false,
            stack: false,
            snaplen: 0,
            stop: None,
            gone: None,
            netns_aliases: None,
            scope: None,
            policy_names: None,
        }
    }
}

/// A policy drop to explain: where it was dropped, its tuple, and what the
/// mark said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyQuery {
    pub netns_ino: u64,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    /// The destination port (0 without ports: ICMP, a later fragment).
    pub dport: u16,
    /// The IP protocol number.
    pub l4proto: u8,
    pub egress: bool,
    pub deny: bool,
}

impl PolicyQuery {
    /// The query of a record that is a policy drop with an IP tuple.
    pub fn of(record: &DropRecord) -> Option<Self> {
        let policy = record.policy.as_ref()?;
        let ip = |s: &Option<String>| s.as_deref()?.parse().ok();
        Some(Self {
            netns_ino: record.netns_ino,
            src: ip(&record.src)?,
            dst: ip(&record.dst)?,
            dport: record.dport.unwrap_or(0),
            l4proto: lab_common::proto::number(&record.proto).unwrap_or(0),
            egress: policy.direction == "egress",
            deny: record.reason == super::reasons::POLICY_DENY,
        })
    }
}

/// What names the policy behind a policy drop (implemented by the lab
/// layer, which judges the packet with its lab's policies).
pub trait NamePolicy: Send {
    fn name(&mut self, query: &PolicyQuery) -> Option<PolicyNames>;
}

/// A [`NamePolicy`] for a session (locked only for a policy drop).
pub struct PolicyNamer(std::sync::Mutex<Box<dyn NamePolicy>>);

impl PolicyNamer {
    pub fn new(namer: impl NamePolicy + 'static) -> Self {
        Self(std::sync::Mutex::new(Box::new(namer)))
    }

    /// Fills in the names of `record`'s policy, where known.
    pub fn fill(&self, record: &mut DropRecord) {
        let Some(query) = PolicyQuery::of(record) else {
            return;
        };
        let Ok(mut namer) = self.0.lock() else {
            return;
        };
        if let Some(policy) = &mut record.policy {
            policy.names = namer.name(&query);
        }
    }
}

impl std::fmt::Debug for PolicyNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyNamer(..)")
    }
}

/// A session in its own thread, for callers that trace while they act (the
/// demo, exercise checks): it is attached when [`start`] returns, and
/// [`Background::stop`] ends it (delivering what is queued) and returns
/// what it counted.
pub struct Background {
    handle: std::thread::JoinHandle<anyhow::Result<Summary>>,
    stop: Trigger,
}

/// Starts `opts` with `sink` in a thread and waits (20 s at most) until the
/// tracer is attached. Ctrl-C while waiting stops it again.
pub fn start(
    mut opts: TraceOptions,
    mut sink: impl Sink + Send + 'static,
) -> anyhow::Result<Background> {
    let ready = std::env::temp_dir().join(crate::kernel::netns::unique_name("labctl-ready"));
    let stop = Trigger::new();
    opts.ready_file = Some(ready.clone());
    opts.stop = Some(stop.clone());
    let handle = std::thread::spawn(move || run(&opts, &mut sink));
    let bg = Background { handle, stop };
    let waiting = Stop::new().duration(Some(Duration::from_secs(20)));
    while !ready.exists() {
        if bg.is_finished() || waiting.wait(Duration::from_millis(10)) {
            // Ended early (an error), interrupted, or stuck: report why.
            bg.stop()?;
            waiting.check()?;
            anyhow::bail!("the drop tracer did not start within 20 s");
        }
    }
    if let Err(e) = std::fs::remove_file(&ready) {
        tracing::debug!("removing {}: {e}", ready.display());
    }
    Ok(bg)
}

impl Background {
    /// Whether the session already ended (an error, Ctrl-C, --duration).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Ends the session and returns its summary.
    pub fn stop(self) -> anyhow::Result<Summary> {
        self.stop.fire();
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the tracer thread panicked"))?
    }
}

/// The namespaces (inodes) a session watches; called again every couple of
/// seconds, so pods that start or stop are followed.
pub struct Scope(pub Box<dyn Fn() -> BTreeSet<u64> + Send>);

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scope(..)")
    }
}

/// How often a scope is recomputed: pods come and go all the time in a
/// workshop, and a new pod's drops are not shown until its namespace is in
/// scope. Recomputing is a directory read (and, for `--pod-namespace`, the
/// pod names `lab::names` last read: never a CRI call).
const SCOPE_REFRESH: Duration = Duration::from_millis(500);

fn apply_scope(tracer: &mut DropTracer, scope: &Scope) -> anyhow::Result<()> {
    let inodes: BTreeSet<u32> = (scope.0)()
        .into_iter()
        .filter_map(|i| u32::try_from(i).ok())
        .collect();
    tracer
        .set_scope(&inodes)
        .context("updating the namespaces in scope")?;
    Ok(())
}

/// What a session saw; the JSON summary line is this, serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Events delivered through the ring buffer (0 in `--summary` mode).
    pub events: u64,
    /// Events that could not be reserved in the ring buffer.
    pub lost: u64,
    /// Drops counted but neither shown nor lost: still queued when the
    /// session stopped (`--count` reached, Ctrl-C). 0 in `--summary` mode.
    pub not_shown: u64,
    /// Why the session stopped when it was not asked to: what it watched
    /// is gone (the sentence says what). Not in the JSON summary.
    #[serde(skip)]
    pub gone: Option<String>,
    /// Exact drops per reason, counted in the kernel after filtering.
    pub by_reason: BTreeMap<String, u64>,
    /// Exact drops per location (symbol+offset).
    pub by_location: BTreeMap<String, u64>,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
}

struct Resolver {
    reasons: DropReasons,
    names: Names,
    kallsyms: Kallsyms,
    locations: std::collections::HashMap<u64, String>,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, to date bpf_ktime_get_ns().
    epoch_offset_ns: i128,
    /// The last event's namespace (name, pod) and interface, named:
    /// drops come in runs from one place, and naming costs hash lookups and
    /// a clock read per call (profiled: a tenth of the JSON stream's time
    /// in a drop storm). Forgotten at every batch, so names stay as fresh
    /// as `Names` keeps them.
    last_netns: Option<NetnsNames>,
    last_ifname: Option<((u64, u32), Option<String>)>,
    /// The last addresses formatted (a source and a destination, mostly).
    addresses: [Option<(AddressKey, Option<String>)>; 2],
}

/// A namespace's inode, name and pod.
type NetnsNames = (u64, String, Option<crate::kernel::names::PodRef>);

/// An event's address: family and bytes.
type AddressKey = (u8, [u8; 16]);

impl Resolver {
    fn netns_named(&mut self, ino: u64) -> &NetnsNames {
        if self.last_netns.as_ref().is_none_or(|l| l.0 != ino) {
            self.last_netns = None;
        }
        let names = &mut self.names;
        self.last_netns
            .get_or_insert_with(|| (ino, names.netns(ino), names.pod(ino)))
    }

    /// A new batch: names may have changed since the last one.
    fn forget(&mut self) {
        self.last_netns = None;
        self.last_ifname = None;
    }
}

impl Resolve for Resolver {
    fn reason(&self, code: u32, out: &mut String) {
        self.reasons.name_into(code, out);
    }
    fn netns(&mut self, ino: u64) -> &str {
        &self.netns_named(ino).1
    }
    fn pod(&mut self, ino: u64) -> Option<&crate::kernel::names::PodRef> {
        self.netns_named(ino).2.as_ref()
    }
    fn ifname(&mut self, netns_ino: u64, ifindex: u32) -> Option<&str> {
        let key = (netns_ino, ifindex);
        if self.last_ifname.as_ref().is_none_or(|l| l.0 != key) {
            self.last_ifname = None;
        }
        let names = &mut self.names;
        self.last_ifname
            .get_or_insert_with(|| (key, names.ifname(netns_ino, ifindex)))
            .1
            .as_deref()
    }
    fn address(&mut self, family: u8, bytes: [u8; 16], to: &mut Option<String>) {
        let key = (family, bytes);
        if let Some(hit) = self.addresses.iter().flatten().find(|(k, _)| *k == key) {
            super::record::set_opt(to, hit.1.as_deref());
            return;
        }
        let text = super::record::format_address(family, bytes);
        super::record::set_opt(to, text.as_deref());
        self.addresses.swap(0, 1);
        self.addresses[0] = Some((key, text));
    }
    fn location(&mut self, addr: u64) -> &str {
        // Drops come from a handful of places: format each once.
        self.locations
            .entry(addr)
            .or_insert_with(|| self.kallsyms.describe(addr))
    }
    fn wall_ns(&self, ktime_ns: u64) -> u64 {
        (i128::from(ktime_ns) + self.epoch_offset_ns).max(0) as u64
    }
}

fn clock_ns(id: ClockId) -> i128 {
    clock_gettime(id).map_or(0, |t| {
        i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
    })
}

/// Runs a session, handing what it sees to `sink`, until Ctrl-C,
/// `--duration`, `--count` or `stop`.
pub fn run(opts: &TraceOptions, sink: &mut impl Sink) -> anyhow::Result<Summary> {
    let mut ready = ReadyFile::claim(opts.ready_file.as_deref())?;
    let btf = KernelBtf::from_sys()?;
    let reasons = DropReasons::from_btf(&btf).context("reading drop reasons from BTF")?;
    let mut tracer = attach(opts, &btf, &reasons)?;
    if let Some(scope) = &opts.scope {
        apply_scope(&mut tracer, scope)?;
    }
    let mut scoped_at = Instant::now();
    let mut resolver = Resolver {
        reasons,
        names: Names::with_aliases(opts.netns_aliases),
        kallsyms: Kallsyms::load(),
        locations: std::collections::HashMap::new(),
        epoch_offset_ns: clock_ns(ClockId::CLOCK_REALTIME) - clock_ns(ClockId::CLOCK_MONOTONIC),
        last_netns: None,
        last_ifname: None,
        addresses: [None, None],
    };
    sink.started(tracer.hook())?;
    // Ready only once everything the loop needs is loaded (kallsyms takes a
    // moment), so a script's traffic is printed as it happens.
    ready.signal(tracer.hook().describe())?;
    let stop = Stop::new()
        .duration(opts.duration)
        .count(opts.count)
        .trigger(opts.stop.clone())
        .gone(opts.gone.clone());
    let mut last_table = Instant::now();
    let mut events = 0u64;
    let mut reported_lost = 0u64;
    let mut busy = false;
    loop {
        wait_for_events(&mut tracer, &stop, busy)?;
        let before = events;
        let reached_count;
        (events, reached_count) = deliver(opts, &stop, &mut tracer, &mut resolver, sink, events)?;
        busy = rest_after(events - before, opts);
        if reached_count {
            break;
        }
        if !opts.summary {
            reported_lost = report_lost(&tracer, sink, reported_lost)?;
        }
        sink.batch_done()?;
        if let Some(scope) = &opts.scope
            && scoped_at.elapsed() >= SCOPE_REFRESH
        {
            apply_scope(&mut tracer, scope)?;
            scoped_at = Instant::now();
        }
        if opts.summary {
            let total: u64 = tracer.reason_counts()?.values().sum();
            if stop.counted(total) {
                break;
            }
            if last_table.elapsed() >= opts.interval {
                sink.progress(&summarize(&tracer, &resolver, events)?, stop.elapsed())?;
                last_table = Instant::now();
            }
        }
        if stop.stopped() {
            if !opts.summary {
                events = drain(opts, &stop, &mut tracer, &mut resolver, sink, events)?;
            }
            break;
        }
    }
    if !opts.summary {
        report_lost(&tracer, sink, reported_lost)?;
    }
    let mut summary = summarize(&tracer, &resolver, events)?;
    if !opts.summary {
        summary.not_shown = summary
            .total()
            .saturating_sub(summary.events + summary.lost);
    }
    if let Some(Why::Gone(sentence)) = stop.why() {
        summary.gone = Some(sentence);
    }
    sink.finished(&summary, stop.elapsed())?;
    Ok(summary)
}

/// Tells the sink about events lost since `reported`; returns the new total.
fn report_lost(tracer: &DropTracer, sink: &mut impl Sink, reported: u64) -> anyhow::Result<u64> {
    let lost = tracer.lost()?;
    if lost > reported {
        sink.lost(lost - reported)?;
    }
    Ok(lost.max(reported))
}

/// The tracer, configured from the filters and attached.
fn attach(
    opts: &TraceOptions,
    btf: &KernelBtf,
    reasons: &DropReasons,
) -> anyhow::Result<DropTracer> {
    let mut config = opts.filters.to_config(reasons)?;
    if opts.summary {
        drop_tracer::summary_only(&mut config);
    }
    if opts.stack {
        drop_tracer::with_stacks(&mut config);
    }
    if opts.scope.is_some() {
        config.flags |= lab_common::trace::flags::NETNS_SET;
    }
    config.snaplen = opts.snaplen.min(lab_common::trace::MAX_SNAPLEN);
    let consumed = reasons.value("CONSUMED").unwrap_or(1);
    let tracer = DropTracer::attach(
        btf,
        config,
        consumed,
        opts.ring_bytes,
        opts.classic_tracepoint,
    )
    .context("attaching the drop tracer")?;
    tracing::info!("tracing drops through {}", tracer.hook().describe());
    Ok(tracer)
}

/// How long the reader rests after a batch that had events, before reading
/// again. Reading as soon as anything is there took batches of about 20
/// events in a drop storm, with a poll, a map read and a write for each:
/// the reader then spent half of its time in syscalls, beside the sending
/// CPU (`cargo xtask bench trace`). The ring holds far more than this
/// much of a storm (4 MiB: about 200 ms at 200,000 drops a second), and
/// a drop is shown this much later at most.
const PACE: Duration = Duration::from_millis(10);

/// Whether to rest [`PACE`] after a batch of `n` events: when it had
/// events and took less than an eighth of the ring buffer, so that a small
/// ring (`--ring-size`) is read again at once rather than left to fill.
fn rest_after(n: u64, opts: &TraceOptions) -> bool {
    let record = (size_of::<lab_common::trace::DropEvent>() + 8) as u64 + u64::from(opts.snaplen);
    n > 0 && n.saturating_mul(record) < u64::from(opts.ring_bytes) / 8
}

/// Waits up to 50 ms for the ring buffer to have something, less when the
/// session stops meanwhile; after a batch that had events (`busy`), rests
/// [`PACE`] instead.
fn wait_for_events(tracer: &mut DropTracer, stop: &Stop, busy: bool) -> anyhow::Result<()> {
    if busy {
        stop.wait(PACE);
        return Ok(());
    }
    let ring = tracer.ring();
    stop.readable(&[ring.as_fd()], Duration::from_millis(50))
        .context("polling the ring buffer")?;
    Ok(())
}

/// Waits up to 50 ms for the ring buffer to have something, whether or not
/// the session stopped: what [`drain`] waits on (for a second at most).
fn wait_for_more(tracer: &mut DropTracer) -> anyhow::Result<()> {
    let ring = tracer.ring();
    let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(50u16)) {
        Ok(_) | Err(nix::Error::EINTR) => Ok(()),
        Err(e) => Err(e).context("polling the ring buffer"),
    }
}

/// Hands every queued event to the sink; returns the event count and
/// whether `--count` was reached.
fn deliver(
    opts: &TraceOptions,
    stop: &Stop,
    tracer: &mut DropTracer,
    resolver: &mut Resolver,
    sink: &mut impl Sink,
    mut events: u64,
) -> anyhow::Result<(u64, bool)> {
    resolver.forget();
    // One record per batch, filled again for each event (no allocation
    // per drop once its strings have grown).
    let mut record = DropRecord::empty();
    loop {
        // Copy the event (and its packet bytes) out so the ring's borrow
        // ends here.
        let decoded = match tracer.ring().next() {
            Some(item) => drop_tracer::decode(&item)
                .map(|(ev, packet)| (ev, (opts.snaplen > 0).then(|| packet.to_vec()))),
            None => return Ok((events, false)),
        };
        let Some((ev, packet)) = decoded else {
            continue;
        };
        events += 1;
        record.fill(&ev, resolver);
        record.packet = packet;
        if let Some(namer) = &opts.policy_names
            && record.policy.is_some()
        {
            namer.fill(&mut record);
        }
        if opts.stack && ev.stack_id >= 0 {
            // A stack evicted or never stored shows as absent, not as an error.
            record.stack = tracer.stack(ev.stack_id).ok().map(|ips| {
                let frames = ips.into_iter().map(|ip| resolver.kallsyms.describe(ip));
                trim_tracer_frames(frames)
            });
        }
        sink.drop_seen(&record)?;
        if stop.counted(events) {
            return Ok((events, true));
        }
    }
}

/// At the stop, delivers what the kernel counted and queued until every
/// counted drop is shown or lost (or a second has passed), so a stop right
/// after the traffic shows all of it and the summary adds up.
fn drain(
    opts: &TraceOptions,
    stop: &Stop,
    tracer: &mut DropTracer,
    resolver: &mut Resolver,
    sink: &mut impl Sink,
    mut events: u64,
) -> anyhow::Result<u64> {
    // A bound, not a stop condition: the session has stopped already.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let reached_count;
        (events, reached_count) = deliver(opts, stop, tracer, resolver, sink, events)?;
        let counted: u64 = tracer.reason_counts()?.values().sum();
        if reached_count || events + tracer.lost()? >= counted || Instant::now() >= deadline {
            sink.batch_done()?;
            return Ok(events);
        }
        wait_for_more(tracer)?;
    }
}

/// Drops the leading frames that belong to the tracer itself (our program,
/// the BPF trampoline, the tracepoint), so a stack starts at the function
/// that freed the skb, as `perf` shows it.
fn trim_tracer_frames(frames: impl Iterator<Item = String>) -> Vec<String> {
    const TRACER: [&str; 6] = [
        "bpf_prog_",
        "bpf_trace_run",
        "__traceiter_",
        "__bpf_trace_",
        "perf_trace_",
        "trace_event_raw_event_",
    ];
    frames
        .skip_while(|f| TRACER.iter().any(|p| f.starts_with(p)))
        .collect()
}

fn summarize(tracer: &DropTracer, r: &Resolver, events: u64) -> anyhow::Result<Summary> {
    let mut s = Summary {
        kind: "summary",
        events,
        lost: tracer.lost()?,
        ..Default::default()
    };
    for (site, n) in tracer.counts()? {
        *s.by_reason
            .entry(drop_name(&r.reasons, site.reason, site.policy))
            .or_default() += n;
        *s.by_location
            .entry(r.kallsyms.describe(site.location))
            .or_default() += n;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_rests_only_while_its_ring_has_room() {
        let big = TraceOptions::default();
        assert!(!rest_after(0, &big), "an empty batch waits on the ring");
        assert!(rest_after(3_000, &big), "a storm's batch in 4 MiB");
        assert!(!rest_after(10_000, &big), "an eighth of 4 MiB or more");
        let small = TraceOptions {
            ring_bytes: 16 * 1024,
            ..TraceOptions::default()
        };
        assert!(rest_after(5, &small));
        assert!(!rest_after(30, &small), "16 KiB is read again at once");
        let pcap = TraceOptions {
            snaplen: 2048,
            ..TraceOptions::default()
        };
        assert!(!rest_after(3_000, &pcap), "packets make records larger");
    }

    #[test]
    fn stacks_start_where_the_skb_was_freed() {
        let frames = [
            "bpf_prog_a5c05e08a7bf1b9f_drop_tracer_btf+0x1251",
            "bpf_trace_run4+0xfc",
            "__traceiter_kfree_skb+0x41",
            "sk_skb_reason_drop+0x90",
            "__udp4_lib_rcv+0x4bc",
        ];
        assert_eq!(
            trim_tracer_frames(frames.iter().map(|f| f.to_string())),
            ["sk_skb_reason_drop+0x90", "__udp4_lib_rcv+0x4bc"]
        );
    }
}
