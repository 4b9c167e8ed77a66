//! How `labctl trace` prints: a line per drop (coloured on a terminal,
//! with explanations on request) or NDJSON, the summary table, and the
//! explanation of a reason (also `labctl explain`).

use std::{collections::BTreeSet, io::Write, time::Duration};

use anstyle::{AnsiColor, Style};

use crate::{
    drops::{
        explain,
        record::{DropRecord, PolicyVerdict},
        session::{Sink, Summary},
    },
    ebpf::drop_tracer::Hook,
};

use super::width;

/// Lines for people: one per drop, then a table.
pub struct TextSink<W: Write> {
    out: W,
    /// `--summary`: only tables, every `--interval`.
    summary_mode: bool,
    /// `--explain`: each reason explained the first time it is seen.
    explain: bool,
    explained: BTreeSet<String>,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, summary_mode: bool, explain: bool) -> Self {
        Self {
            out,
            summary_mode,
            explain,
            explained: BTreeSet::new(),
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn started(&mut self, hook: Hook) -> std::io::Result<()> {
        if !self.summary_mode {
            writeln!(
                self.out,
                "tracing packet drops ({}); Ctrl-C to stop",
                hook.describe()
            )?;
        }
        Ok(())
    }

    fn drop_seen(&mut self, record: &DropRecord) -> std::io::Result<()> {
        writeln!(self.out, "{}", drop_line(record, true))?;
        for frame in record.stack.iter().flatten() {
            writeln!(
                self.out,
                "      {}",
                width::elide(frame, width::COLUMNS - 6)
            )?;
        }
        if self.explain && self.explained.insert(record.reason.clone()) {
            write_explanation(&mut self.out, &record.reason, "    ")?;
        }
        Ok(())
    }

    fn batch_done(&mut self) -> std::io::Result<()> {
        // `out` may be buffered (one write per batch instead of per line):
        // show each batch as it comes.
        self.out.flush()
    }

    fn progress(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        write_table(&mut self.out, summary, elapsed, false)
    }

    fn finished(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        write_table(&mut self.out, summary, elapsed, true)?;
        if self.explain {
            for reason in summary.by_reason.keys() {
                if self.explained.insert(reason.clone()) {
                    writeln!(self.out, "{reason}:")?;
                    write_explanation(&mut self.out, reason, "  ")?;
                }
            }
        }
        self.out.flush()
    }
}

/// NDJSON: an object per drop, then the summary object.
pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer, back (e.g. the bytes a test collected).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn drop_seen(&mut self, record: &DropRecord) -> std::io::Result<()> {
        super::drops_json::write(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    fn batch_done(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn finished(&mut self, summary: &Summary, _: Duration) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, summary)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// The counts: a title line, then drops by reason and by location.
pub fn write_table(
    out: &mut impl Write,
    s: &Summary,
    elapsed: Duration,
    last: bool,
) -> std::io::Result<()> {
    let title = if last { "summary" } else { "so far" };
    let mut title = vec![
        format!("── {title} after {:.1}s:", elapsed.as_secs_f64()),
        format!("{} drops,", s.total()),
        format!("{} events delivered,", s.events),
        format!("{} lost", s.lost),
    ];
    if s.not_shown > 0 {
        if let Some(lost) = title.last_mut() {
            lost.push(',');
        }
        title.push(format!(
            "{} counted but not shown (still queued at the stop)",
            s.not_shown
        ));
    }
    title.push("──".into());
    writeln!(out, "{}", width::pieces(&title, 3))?;
    let mut by_reason: Vec<_> = s.by_reason.iter().collect();
    by_reason.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    // COUNT is 10 wide, the name gets the rest (a location can be long).
    let name = width::COLUMNS - 12;
    writeln!(out, "{:>10}  REASON", "COUNT")?;
    for (reason, n) in by_reason {
        writeln!(out, "{n:>10}  {}", width::elide(reason, name))?;
    }
    let mut by_loc: Vec<_> = s.by_location.iter().collect();
    by_loc.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if !by_loc.is_empty() {
        writeln!(out, "{:>10}  LOCATION", "COUNT")?;
        for (loc, n) in by_loc.into_iter().take(10) {
            writeln!(out, "{n:>10}  {}", width::elide(loc, name))?;
        }
    }
    Ok(())
}

/// Writes the explanation of `reason`, or says there is none, each part
/// filled to 80 columns under its label.
pub fn write_explanation(out: &mut impl Write, reason: &str, indent: &str) -> std::io::Result<()> {
    let hang = format!("{indent}      ");
    match explain::lookup(reason) {
        Some(e) => {
            width::write_fill(out, e.meaning, &format!("{indent}what: "), &hang)?;
            width::write_fill(out, e.causes, &format!("{indent}why:  "), &hang)?;
            for c in e.commands {
                write_command(out, c, &format!("{indent}try:  "), &hang)?;
            }
        }
        None => width::write_fill(
            out,
            &format!("(no explanation for {reason} yet; the name comes from this kernel's BTF)"),
            indent,
            indent,
        )?,
    }
    Ok(())
}

/// A command to type, with its `# comment` on a line of its own when the
/// two do not fit one line (so the command can still be copied whole).
fn write_command(out: &mut impl Write, c: &str, first: &str, hang: &str) -> std::io::Result<()> {
    if width::width(first) + width::width(c) <= width::COLUMNS {
        return writeln!(out, "{first}{c}");
    }
    match c.split_once("   # ") {
        Some((command, comment)) => {
            width::write_fill(out, command.trim_end(), first, hang)?;
            width::write_fill(out, &format!("# {comment}"), hang, &format!("{hang}  "))
        }
        None => width::write_fill(out, c, first, hang),
    }
}

/// Under `--pod-namespace`, when no drop was seen: drops on a node
/// (forwarding, NAT, policy) are in the node's namespace, not a pod's.
/// `nodes` are the lab's node names when the namespace is a lab's.
pub fn write_pod_namespace_note(
    out: &mut impl Write,
    namespace: &str,
    nodes: &[String],
) -> std::io::Result<()> {
    let how = match nodes {
        [] => "`--scope node` (inside a node) or no filter shows them".to_owned(),
        [one] => format!("`labctl trace --netns {namespace}/{one}` shows them"),
        [first, rest @ ..] => format!(
            "`labctl trace --netns {namespace}/{first}` (or {}) shows them",
            rest.iter()
                .map(|n| format!("{namespace}/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    width::write_fill(
        out,
        &format!(
            "note: no drop in the pods of `{namespace}`. A drop on a node (forwarding, NAT, a policy) is in the node's namespace, not a pod's: {how}."
        ),
        "",
        "      ",
    )
}

/// A drop as one line: `HH:MM:SS.micros netns iface proto src:port →
/// dst:port REASON len N at location`, continued on lines indented under
/// the namespace where it does not fit 80 columns. With `color`, the
/// reason, namespace and location are styled; the output stream (anstream)
/// strips the styles when not on a terminal.
pub fn drop_line(r: &DropRecord, color: bool) -> String {
    let paint = |style: Style, text: &str| {
        if color {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    };
    let secs = r.ts_ns / 1_000_000_000;
    let micros = (r.ts_ns % 1_000_000_000) / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let iface = r.ifname.clone().unwrap_or_else(|| {
        if r.ifindex == 0 {
            "-".into()
        } else {
            format!("if{}", r.ifindex)
        }
    });
    let endpoint = |addr: &Option<String>, port: Option<u16>| match (addr, port) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.clone(),
        (None, _) => "-".into(),
    };
    let mut proto = r.proto.clone();
    if let Some(f) = &r.tcp_flags {
        proto = format!("{proto} [{f}]");
    }
    if let (Some(t), Some(c)) = (r.icmp_type, r.icmp_code) {
        proto = format!("{proto} type {t} code {c}");
    }
    match r.fragment {
        Some("first") => proto.push_str(" (first fragment)"),
        Some(_) => proto.push_str(" (fragment)"),
        None => {}
    }
    let (src, dst) = (endpoint(&r.src, r.sport), endpoint(&r.dst, r.dport));
    let mut pieces = vec![
        format!("{h:02}:{m:02}:{s:02}.{micros:06}"),
        paint(
            Style::new().fg_color(Some(AnsiColor::Cyan.into())),
            &width::pad(&r.netns, 14),
        ),
        width::pad(&iface, 6),
        width::pad(&proto, 7),
    ];
    // The flow stays on one line where it fits one.
    let flow = format!("{src} → {dst}");
    if width::width(&flow) <= width::COLUMNS - DROP_INDENT {
        pieces.push(flow);
    } else {
        pieces.extend([format!("{src} →"), dst]);
    }
    pieces.push(paint(
        Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        &r.reason,
    ));
    if let Some(p) = &r.policy {
        pieces.push(p.direction.to_owned());
    }
    pieces.extend([
        format!("len {}", r.len),
        paint(Style::new().dimmed(), &format!("at {}", r.location)),
    ]);
    if let Some(p) = &r.policy {
        pieces.extend(policy_pieces(p));
    }
    width::pieces(&pieces, DROP_INDENT)
}

/// A policy drop's words after the line: the kernel's own reason, the
/// policy and rule, the two ends and their identities.
pub fn policy_pieces(p: &PolicyVerdict) -> Vec<String> {
    let mut pieces = vec![format!("(kernel: {})", p.kernel_reason)];
    let Some(n) = &p.names else {
        return pieces;
    };
    match (&n.rule, n.policies.as_slice()) {
        (Some(rule), _) => pieces.push(format!("rule {rule}")),
        (None, []) => {}
        (None, policies) => pieces.push(format!(
            "default deny of {}",
            policies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    pieces.push(format!(
        "{} (ID:{}) → {} (ID:{})",
        n.from, n.src_identity, n.to, n.dst_identity
    ));
    if let Some(note) = &n.note {
        pieces.push(note.clone());
    }
    pieces
}

/// Where a drop's continuation lines start: under its namespace.
const DROP_INDENT: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_golden() {
        let rec = crate::drops::record::tests::sample_udp();
        // 1700003723 s after the epoch is 23:15:23 UTC.
        assert_eq!(
            drop_line(&rec, false),
            "23:15:23.000456 labtest-a      lo     UDP     127.0.0.1:40000 → 127.0.0.2:9\n                NO_SOCKET len 32 at __udp4_lib_rcv+0x5a3"
        );
        // On a terminal the reason stands out; stripped, it is the same line.
        let colored = drop_line(&rec, true);
        assert!(
            colored.contains("\u{1b}[1m\u{1b}[31mNO_SOCKET\u{1b}[0m"),
            "{colored:?}"
        );
        assert_eq!(
            anstream::adapter::strip_str(&colored).to_string(),
            drop_line(&rec, false)
        );
    }

    #[test]
    fn a_policy_drop_names_its_direction_policy_and_identities() {
        use crate::drops::record::{PolicyNames, PolicyRef};
        let mut rec = crate::drops::record::tests::sample_udp();
        rec.reason = "POLICY_DENIED".into();
        rec.reason_code = 133;
        rec.policy = Some(PolicyVerdict {
            direction: "ingress",
            kernel_reason: "NETFILTER_DROP".into(),
            kernel_reason_code: 6,
            mark: "0x1ab50000".into(),
            names: None,
        });
        assert_eq!(
            drop_line(&rec, false),
            "23:15:23.000456 labtest-a      lo     UDP     127.0.0.1:40000 → 127.0.0.2:9\n                POLICY_DENIED ingress len 32 at __udp4_lib_rcv+0x5a3\n                (kernel: NETFILTER_DROP)"
        );
        if let Some(p) = &mut rec.policy {
            p.names = Some(PolicyNames {
                lab: "sw".into(),
                from: "sw/xwing".into(),
                to: "sw/deathstar-1".into(),
                pod: Some("sw/deathstar-1".into()),
                policies: vec![PolicyRef {
                    kind: "NetworkPolicy",
                    namespace: "default".into(),
                    name: "deathstar-only-empire".into(),
                }],
                rule: None,
                src_identity: 258,
                dst_identity: 257,
                note: None,
            });
        }
        let line = drop_line(&rec, false);
        assert_eq!(
            line,
            "23:15:23.000456 labtest-a      lo     UDP     127.0.0.1:40000 → 127.0.0.2:9\n                POLICY_DENIED ingress len 32 at __udp4_lib_rcv+0x5a3\n                (kernel: NETFILTER_DROP)\n                default deny of default/deathstar-only-empire\n                sw/xwing (ID:258) → sw/deathstar-1 (ID:257)"
        );
        for l in line.lines() {
            assert!(width::width(l) <= width::COLUMNS, "{l}");
        }
        if let Some(p) = &mut rec.policy
            && let Some(n) = &mut p.names
        {
            n.rule = Some("default/no-xwing ingressDeny[0] (p.yaml:9)".into());
        }
        assert!(drop_line(&rec, false).contains("rule default/no-xwing ingressDeny[0] (p.yaml:9)"));
    }

    #[test]
    fn fragments_are_said() {
        let mut rec = crate::drops::record::tests::sample_udp();
        rec.fragment = Some("later");
        rec.sport = None;
        rec.dport = None;
        let line = drop_line(&rec, false);
        assert!(
            line.contains("UDP (fragment) 127.0.0.1 → 127.0.0.2"),
            "{line}"
        );
        rec.fragment = Some("first");
        assert!(drop_line(&rec, false).contains("UDP (first fragment)"));
    }

    #[test]
    fn a_drop_without_a_device_shows_a_dash_for_its_interface() {
        let mut rec = crate::drops::record::tests::sample_udp();
        rec.ifname = None;
        rec.ifindex = 0;
        assert_eq!(
            drop_line(&rec, false),
            "23:15:23.000456 labtest-a      -      UDP     127.0.0.1:40000 → 127.0.0.2:9\n                NO_SOCKET len 32 at __udp4_lib_rcv+0x5a3"
        );
        rec.ifindex = 7;
        assert!(drop_line(&rec, false).contains(" if7 "));
    }
}
