//! `labctl demo`: the drops lab traced live, or (`--counter`) a bare eBPF
//! counter counting real drops. The work is in `crate::demo`.

use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use anyhow::Context as _;

use crate::{
    demo::{
        counter::{self, CLOSED_PORT},
        drops_lab::{self, DEMO_LAB, Step},
    },
    kernel::{interrupt, netns, privilege},
    output::{
        OutputFormat,
        drops::{JsonSink, TextSink},
        exit::{self, Outcome},
        width,
    },
};

fn bold() -> Style {
    Style::new().bold()
}

fn green() -> Style {
    Style::new().fg_color(Some(AnsiColor::Green.into())).bold()
}

/// `labctl demo --counter`: the minimal version, one eBPF counter and no lab.
pub fn counter(count: u32) -> anyhow::Result<Outcome> {
    privilege::require("demo")?;
    let name = netns::unique_name("labctl-demo");
    let mut out = anstream::stdout().lock();
    width::write_fill(
        &mut out,
        &format!(
            "demo: attaching the drop counter (tracepoint skb:kfree_skb) to new netns {name}, \
             sending {count} UDP datagrams to 127.0.0.1:{CLOSED_PORT} where nothing listens"
        ),
        "",
        "  ",
    )?;
    let outcome = counter::run(&name, count).context("the drop demo failed")?;
    interrupt::check()?;
    let (bold, green) = (bold(), green());
    writeln!(
        out,
        "drops counted in netns {name} (inode {}):",
        outcome.netns_ino
    )?;
    for (reason, n) in &outcome.by_reason {
        writeln!(out, "  {bold}{reason:<24}{bold:#} {n}")?;
    }
    let no_socket = outcome.count("NO_SOCKET");
    let verdict = if no_socket == u64::from(count) {
        format!(
            "{green}✓{green:#} {no_socket} of {count} datagrams dropped with NO_SOCKET, as expected"
        )
    } else {
        format!("✗ expected {count} NO_SOCKET drops, counted {no_socket}")
    };
    writeln!(out, "{verdict}")?;
    writeln!(out, "namespace {name} deleted; program detached")?;
    Ok(Outcome::Success)
}

/// Prints one step of the drops-lab demo.
fn print_step(step: Step<'_>) {
    let bold = bold();
    let mut out = anstream::stdout();
    // Best effort: a closed stdout must not stop the demo's teardown.
    let written = match step {
        Step::LabUp => width::write_fill(
            &mut out,
            "(one node, two pods, a world, six planted faults)",
            &format!("{bold}1. bringing up the `drops` lab{bold:#} "),
            "   ",
        ),
        Step::Tracing => writeln!(
            out,
            "{bold}2. tracing every packet drop on this machine while each fault fires{bold:#}"
        ),
        Step::Fault(fault) => writeln!(out).and_then(|()| {
            width::write_fill(
                &mut out,
                &format!("{} (expect {})", fault.summary, fault.reason),
                &format!("{bold}▶ fault `{}`{bold:#}: ", fault.name()),
                "  ",
            )
        }),
        Step::Traced => writeln!(out),
        Step::LabDown(Ok(())) => writeln!(
            out,
            "lab `{DEMO_LAB}` removed: namespaces, links, routes and rules"
        ),
        Step::LabDown(Err(e)) => width::write_fill(
            &mut anstream::stderr(),
            &format!(
                "{}; run `sudo labctl lab down {DEMO_LAB}`",
                exit::one_line(e)
            ),
            "error: ",
            "       ",
        ),
    };
    if let Err(e) = written {
        tracing::debug!("printing the demo: {e}");
    }
}

/// `labctl demo -o json`: the drops as NDJSON, then the verdict.
fn run_json(per_fault: u32) -> anyhow::Result<Outcome> {
    let sink = JsonSink::new(std::io::BufWriter::new(std::io::stdout()));
    let report = drops_lab::run(per_fault, sink, |step| {
        if let Step::LabDown(Err(e)) = step {
            eprintln!(
                "{}",
                width::fill(
                    &format!(
                        "{}; run `sudo labctl lab down {DEMO_LAB}`",
                        exit::one_line(e)
                    ),
                    "error: ",
                    "       "
                )
            );
        }
    })?;
    let faults: Vec<_> = report
        .faults
        .iter()
        .map(|r| {
            serde_json::json!({
                "fault": r.fault.name(),
                "reason": r.fault.reason,
                "sent": r.sent,
                "seen": r.seen,
                "passed": r.passed(),
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "type": "demo",
            "faults": faults,
            "passed": report.passed(),
            "elapsed_s": report.elapsed.as_secs_f64(),
        })
    )?;
    Ok(if report.passed() {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

/// `labctl demo`: the README's quick-start demo.
pub fn run(per_fault: u32, output: OutputFormat) -> anyhow::Result<Outcome> {
    privilege::require("demo")?;
    if output == OutputFormat::Json {
        return run_json(per_fault);
    }
    let sink = TextSink::new(anstream::stdout(), false, true);
    let report = drops_lab::run(per_fault, sink, print_step)?;
    let (bold, green) = (bold(), green());
    let mut out = anstream::stdout();
    writeln!(
        out,
        "\n{bold}3. did every fault produce its drop reason?{bold:#}"
    )?;
    for r in &report.faults {
        let sent = u64::from(r.sent);
        let mark = if r.seen == sent {
            format!("{green}✓{green:#}")
        } else if r.seen > sent {
            // Something else on this machine dropped packets for the same reason.
            format!("{green}✓{green:#} (+{} from elsewhere)", r.seen - sent)
        } else {
            "✗".to_owned()
        };
        writeln!(
            out,
            "  {mark} {:<12} sent {:>3}, kernel counted {:>3} {}",
            r.fault.name(),
            r.sent,
            r.seen,
            r.fault.reason
        )?;
    }
    width::write_fill(
        &mut out,
        "Next: `sudo labctl lab up drops`, then `sudo labctl trace --explain` in one terminal and `sudo labctl lab trigger rp-filter` in another.",
        &format!(
            "{bold}4. done in {:.1}s.{bold:#} ",
            report.elapsed.as_secs_f64()
        ),
        "   ",
    )?;
    std::io::stdout().flush()?;
    Ok(if report.passed() {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}
