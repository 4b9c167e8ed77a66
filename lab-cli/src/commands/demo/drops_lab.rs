//! The README's demo: bring up the `drops` lab, trace while each planted
//! fault fires, print the summary with explanations, tear the lab down.

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anstyle::{AnsiColor, Style};
use anyhow::Context as _;

use crate::{
    cli::OutputFormat,
    exit::Outcome,
    interrupt,
    kernel::netns,
    lab::{self, Lab, faults, state::LabState},
    privilege,
    trace::{
        filter::Filters,
        session::{self, Summary, TraceOptions},
    },
};

/// The demo's lab name (not the scenario's, so a learner's own `drops` lab
/// is never touched).
pub const DEMO_LAB: &str = "labctl-demo";

/// Tears the demo lab down however the demo ends (error, Ctrl-C, panic).
struct LabGuard(Option<Lab>);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            // Best effort: a closed stdout or stderr must not stop the teardown.
            match lab.down() {
                Ok(()) => writeln!(
                    anstream::stdout(),
                    "lab `{DEMO_LAB}` removed: namespaces, links, routes and rules"
                )
                .ok(),
                Err(e) => writeln!(
                    anstream::stderr(),
                    "error: {}; run `sudo labctl lab down {DEMO_LAB}`",
                    crate::exit::one_line(&e)
                )
                .ok(),
            };
        }
    }
}

pub fn run(per_fault: u32) -> anyhow::Result<Outcome> {
    privilege::require("demo")?;
    let started = Instant::now();
    // A demo interrupted hard (kill -9) leaves its lab; it is ours, remove it.
    if LabState::load(DEMO_LAB)?.is_some() {
        lab::down(Some(DEMO_LAB)).context("removing the lab of an earlier demo")?;
    }
    let mut out = anstream::stdout();
    let bold = Style::new().bold();
    let green = Style::new().fg_color(Some(AnsiColor::Green.into())).bold();
    writeln!(
        out,
        "{bold}1. bringing up the `drops` lab{bold:#} (one node, two pods, a world, six planted faults)"
    )?;
    let guard = LabGuard(Some(
        Lab::up(Some(DEMO_LAB), "drops", Default::default())
            .context("cannot bring up the drops lab")?,
    ));
    let Some(lab) = guard.0.as_ref() else {
        unreachable!("the guard was just filled")
    };

    writeln!(
        out,
        "{bold}2. tracing every packet drop on this machine while each fault fires{bold:#}"
    )?;
    let ready = std::env::temp_dir().join(netns::unique_name("labctl-demo-ready"));
    let stop = Arc::new(AtomicBool::new(false));
    let opts = TraceOptions {
        filters: Filters::default(),
        output: OutputFormat::Text,
        summary: false,
        interval: Duration::from_secs(1),
        // A backstop: the demo stops the tracer itself once the faults fired.
        duration: Some(Duration::from_secs(50)),
        count: None,
        ready_file: Some(ready.clone()),
        explain: true,
        ring_bytes: 1 << 22,
        classic_tracepoint: false,
        stack: false,
        stop: Some(stop.clone()),
    };
    let tracer = thread::spawn(move || -> anyhow::Result<Summary> {
        let mut out = anstream::stdout();
        session::run(&opts, &mut out)
    });
    while !ready.exists() {
        if tracer.is_finished() {
            break;
        }
        interrupt::check()?;
        thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&ready).ok();

    let mut expected = Vec::new();
    for fault in lab.plan.scenario.faults {
        if tracer.is_finished() || interrupt::requested() {
            break;
        }
        writeln!(
            out,
            "\n{bold}▶ fault `{}`{bold:#}: {} (expect {})",
            fault.name, fault.summary, fault.reason
        )?;
        let report = faults::trigger(lab, fault, per_fault)
            .with_context(|| format!("cannot trigger fault `{}`", fault.name))?;
        expected.push((fault, report.sent));
        // Let the tracer print this fault's drops before the next header.
        thread::sleep(Duration::from_millis(300));
    }
    writeln!(out)?;
    stop.store(true, Ordering::Relaxed);
    let summary = tracer
        .join()
        .map_err(|_| anyhow::anyhow!("the tracer thread panicked"))??;
    interrupt::check()?;

    writeln!(
        out,
        "\n{bold}3. did every fault produce its drop reason?{bold:#}"
    )?;
    let mut all = true;
    for (fault, sent) in &expected {
        let seen = summary.by_reason.get(fault.reason).copied().unwrap_or(0);
        let mark = if seen == u64::from(*sent) {
            format!("{green}✓{green:#}")
        } else if seen > u64::from(*sent) {
            // Something else on this machine dropped packets for the same reason.
            format!(
                "{green}✓{green:#} (+{} from elsewhere)",
                seen - u64::from(*sent)
            )
        } else {
            all = false;
            "✗".to_owned()
        };
        writeln!(
            out,
            "  {mark} {:<12} sent {sent:>3}, kernel counted {seen:>3} {}",
            fault.name, fault.reason
        )?;
    }
    drop(guard);
    writeln!(
        out,
        "{bold}4. done in {:.1}s.{bold:#} Next: `sudo labctl lab up drops`, then `sudo labctl trace --explain` in one terminal and `sudo labctl lab trigger rp-filter` in another.",
        started.elapsed().as_secs_f64()
    )?;
    std::io::stdout().flush()?;
    Ok(if all {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}
