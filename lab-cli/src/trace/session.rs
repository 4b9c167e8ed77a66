//! One tracing session: attach, stream or count, stop, summarize.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
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
    kallsyms::Kallsyms,
    names::Names,
    record::{DropRecord, Resolve},
};
use crate::{
    cli::OutputFormat,
    drop_reason::DropReasons,
    ebpf::drop_tracer::{self, DropTracer},
    explain, interrupt,
    kernel::btf::KernelBtf,
};

/// Everything `labctl trace` was asked to do.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub filters: Filters,
    pub output: OutputFormat,
    pub summary: bool,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub ready_file: Option<PathBuf>,
    pub explain: bool,
    pub ring_bytes: u32,
    /// Use the classic tracepoint even where tp_btf works.
    pub classic_tracepoint: bool,
    /// Record and print each drop's kernel stack.
    pub stack: bool,
    /// Ends the session when set (for callers that trace while they act,
    /// such as the demo); Ctrl-C, --duration and --count still apply.
    pub stop: Option<Arc<AtomicBool>>,
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
}

impl Resolve for Resolver {
    fn reason(&self, code: u32) -> String {
        self.reasons.name(code)
    }
    fn netns(&mut self, ino: u64) -> String {
        self.names.netns(ino)
    }
    fn ifname(&mut self, netns_ino: u64, ifindex: u32) -> Option<String> {
        self.names.ifname(netns_ino, ifindex)
    }
    fn location(&mut self, addr: u64) -> String {
        // Drops come from a handful of places: format each once.
        self.locations
            .entry(addr)
            .or_insert_with(|| self.kallsyms.describe(addr))
            .clone()
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

/// Runs a session, writing to `out`, until Ctrl-C, `--duration` or `--count`.
pub fn run(opts: &TraceOptions, out: &mut impl Write) -> anyhow::Result<Summary> {
    let btf = KernelBtf::from_sys()?;
    let reasons = DropReasons::from_btf(&btf).context("reading drop reasons from BTF")?;
    let mut config = opts.filters.to_config(&reasons)?;
    if opts.summary {
        drop_tracer::summary_only(&mut config);
    }
    if opts.stack {
        drop_tracer::with_stacks(&mut config);
    }
    let consumed = reasons.value("CONSUMED").unwrap_or(1);
    let mut tracer = DropTracer::attach(config, consumed, opts.ring_bytes, opts.classic_tracepoint)
        .context("attaching the drop tracer")?;
    tracing::info!("tracing drops through {}", tracer.hook().describe());
    let mut resolver = Resolver {
        reasons,
        names: Names::new(),
        kallsyms: Kallsyms::load(),
        locations: std::collections::HashMap::new(),
        epoch_offset_ns: clock_ns(ClockId::CLOCK_REALTIME) - clock_ns(ClockId::CLOCK_MONOTONIC),
    };
    if opts.output == OutputFormat::Text && !opts.summary {
        writeln!(
            out,
            "tracing packet drops ({}); Ctrl-C to stop",
            tracer.hook().describe()
        )?;
    }

    // Ready only once everything the loop needs is loaded (kallsyms takes a
    // moment), so a script's traffic is printed as it happens.
    if let Some(path) = &opts.ready_file {
        fs::write(path, format!("{}\n", tracer.hook().describe()))
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    let started = Instant::now();
    let mut last_table = Instant::now();
    let mut events = 0u64;
    let mut explained = BTreeSet::new();
    'session: loop {
        let fd = tracer.ring().as_raw_fd();
        // Safety: the fd belongs to the ring buffer, alive for this call.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut fds = [PollFd::new(borrowed.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).context("polling the ring buffer"),
        }
        loop {
            // Copy the event out so the ring's borrow ends here.
            let ev = match tracer.ring().next() {
                Some(item) => drop_tracer::decode(&item),
                None => break,
            };
            let Some(ev) = ev else {
                continue;
            };
            events += 1;
            let mut record = DropRecord::new(&ev, &mut resolver);
            if opts.stack && ev.stack_id >= 0 {
                // A stack evicted or never stored shows as absent, not as an error.
                record.stack = tracer.stack(ev.stack_id).ok().map(|ips| {
                    let frames = ips.into_iter().map(|ip| resolver.kallsyms.describe(ip));
                    trim_tracer_frames(frames)
                });
            }
            match opts.output {
                OutputFormat::Json => {
                    serde_json::to_writer(&mut *out, &record)?;
                    out.write_all(b"\n")?;
                }
                OutputFormat::Text => {
                    writeln!(out, "{}", record.colored_line())?;
                    for frame in record.stack.iter().flatten() {
                        writeln!(out, "      {frame}")?;
                    }
                    if opts.explain && explained.insert(record.reason.clone()) {
                        write_explanation(out, &record.reason, "    ")?;
                    }
                }
            }
            if opts.count.is_some_and(|n| events >= n) {
                break 'session;
            }
        }
        // `out` may be buffered (the command wraps stdout in a BufWriter, one
        // write per batch instead of per line): show each batch as it comes.
        out.flush()?;
        if opts.summary {
            let total: u64 = tracer.reason_counts()?.values().sum();
            if opts.count.is_some_and(|n| total >= n) {
                break;
            }
            if last_table.elapsed() >= opts.interval && opts.output == OutputFormat::Text {
                let s = summarize(&tracer, &resolver, events)?;
                write_table(out, &s, started.elapsed(), false)?;
                last_table = Instant::now();
            }
        }
        if interrupt::requested()
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
            || opts
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break;
        }
    }
    let summary = summarize(&tracer, &resolver, events)?;
    match opts.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&summary)?)?,
        OutputFormat::Text => {
            write_table(out, &summary, started.elapsed(), true)?;
            if opts.explain {
                for reason in summary.by_reason.keys() {
                    if explained.insert(reason.clone()) {
                        writeln!(out, "{reason}:")?;
                        write_explanation(out, reason, "  ")?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(summary)
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
    for (code, n) in tracer.reason_counts()? {
        *s.by_reason.entry(r.reasons.name(code)).or_default() += n;
    }
    for (addr, n) in tracer.location_counts()? {
        *s.by_location.entry(r.kallsyms.describe(addr)).or_default() += n;
    }
    Ok(s)
}

fn write_table(
    out: &mut impl Write,
    s: &Summary,
    elapsed: Duration,
    last: bool,
) -> std::io::Result<()> {
    let title = if last { "summary" } else { "so far" };
    writeln!(
        out,
        "── {title} after {:.1}s: {} drops, {} events delivered, {} lost ──",
        elapsed.as_secs_f64(),
        s.total(),
        s.events,
        s.lost
    )?;
    let mut by_reason: Vec<_> = s.by_reason.iter().collect();
    by_reason.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    writeln!(out, "{:>10}  REASON", "COUNT")?;
    for (reason, n) in by_reason {
        writeln!(out, "{n:>10}  {reason}")?;
    }
    let mut by_loc: Vec<_> = s.by_location.iter().collect();
    by_loc.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if !by_loc.is_empty() {
        writeln!(out, "{:>10}  LOCATION", "COUNT")?;
        for (loc, n) in by_loc.into_iter().take(10) {
            writeln!(out, "{n:>10}  {loc}")?;
        }
    }
    Ok(())
}

/// Writes the explanation of `reason`, or says there is none.
pub fn write_explanation(out: &mut impl Write, reason: &str, indent: &str) -> std::io::Result<()> {
    match explain::lookup(reason) {
        Some(e) => {
            writeln!(out, "{indent}what: {}", e.meaning)?;
            writeln!(out, "{indent}why:  {}", e.causes)?;
            for c in e.commands {
                writeln!(out, "{indent}try:  {c}")?;
            }
        }
        None => writeln!(
            out,
            "{indent}(no explanation for {reason} yet; the name comes from this kernel's BTF)"
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
