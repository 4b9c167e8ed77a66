//! `labctl lab status`: text and JSON views of what the kernel holds.

use std::io::{self, Write};

use anstyle::Style;

use crate::{
    exercises,
    kernel::privilege,
    lab::{
        Lab, LabError,
        status::{self, LabStatus},
    },
    output::{OutputFormat, exit::Outcome, width},
};

pub fn run(name: Option<&str>, output: OutputFormat) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("lab status")?;
    let labs = match name {
        Some(n) => vec![Lab::open(n)?],
        None => Lab::all()?,
    };
    let mut out = anstream::stdout().lock();
    if labs.is_empty() {
        if output == OutputFormat::Json {
            writeln!(out, "[]")?;
        } else {
            writeln!(out, "{}", LabError::NoLabs)?;
        }
        return Ok(Outcome::Success);
    }
    let mut statuses = labs
        .iter()
        .map(status::status)
        .collect::<Result<Vec<_>, _>>()?;
    // An exercise whose answer is the service mode hides it while it runs.
    for lab in &mut statuses {
        if let Some(id) = exercises::conceals_mode(&lab.lab) {
            lab.kube_proxy = None;
            lab.mode_hidden_by = Some(id);
        }
    }
    if output == OutputFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&statuses)?)?;
        return Ok(Outcome::Success);
    }
    write_status(&mut out, &statuses)?;
    Ok(Outcome::Success)
}

/// `lab status` as text: each lab, its members with their links, routes,
/// NAT and counted nft rules, and its services; long lines continue
/// indented under their start.
pub(crate) fn write_status(out: &mut impl Write, statuses: &[LabStatus]) -> io::Result<()> {
    let bold = Style::new().bold();
    for lab in statuses {
        let state = if lab.complete {
            ""
        } else {
            " (INCOMPLETE: `labctl lab down` removes it)"
        };
        width::write_fill(
            out,
            &format!("(scenario {}){state}", lab.scenario),
            &format!("{bold}lab {}{bold:#} ", lab.lab),
            "  ",
        )?;
        for m in &lab.members {
            let head = [
                format!("  {bold}{}{bold:#}", m.name),
                format!("[{}]", m.role),
                m.display.clone(),
                format!("(ip netns: {})", m.netns),
            ];
            writeln!(out, "{}", width::pieces(&head, 6))?;
            if let (Some(ns), Some(labels)) = (&m.namespace, &m.labels) {
                let labels = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                width::write_fill(
                    out,
                    &format!("namespace {ns}, labels {labels}"),
                    "    k8s: ",
                    "      ",
                )?;
            }
            for l in &m.links {
                let mut line = vec![format!(
                    "    {} {} mtu {} {}",
                    width::pad(&l.name, 12),
                    width::pad(l.kind.as_deref().unwrap_or(""), 7),
                    width::pad(&l.mtu.to_string(), 5),
                    width::pad(if l.up { "UP" } else { "DOWN" }, 4)
                )];
                line.extend(l.addresses.iter().cloned());
                if let Some(b) = &l.master {
                    line.push(format!("master {b}"));
                }
                writeln!(out, "{}", width::pieces(&line, 8))?;
            }
            for r in &m.routes {
                let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
                let dev = r.dev.as_deref().unwrap_or("?");
                width::write_fill(
                    out,
                    &format!("route {}{via} dev {dev}", r.dst),
                    "    ",
                    "      ",
                )?;
            }
            if let Some(n) = &m.ebpf_nat {
                width::write_fill(
                    out,
                    &format!(
                        "eBPF masquerading on eth0: {} of {} mappings, {} allocated, {} port collisions, {} dropped for lack of a port, {} refused by a full table (labctl masq nat-table --netns {})",
                        n.used,
                        n.capacity,
                        n.allocated,
                        n.collisions,
                        n.alloc_failed,
                        n.table_full,
                        m.display
                    ),
                    "    ",
                    "      ",
                )?;
            }
            if let Some(rules) = &m.ruleset {
                for line in rules.lines().filter(|l| l.contains("counter")) {
                    width::write_fill(out, line.trim(), "    nft: ", "           ")?;
                }
            }
        }
        if let Some(id) = &lab.mode_hidden_by {
            writeln!(
                out,
                "  {bold}services{bold:#}: the mode is hidden while exercise `{id}` runs"
            )?;
        }
        if let Some(mode) = lab.kube_proxy {
            width::write_fill(
                out,
                &format!(
                    "({mode}; from the kernel: labctl svc list --lab {})",
                    lab.lab
                ),
                &format!("  {bold}services{bold:#} "),
                "    ",
            )?;
            for s in &lab.services {
                let protos: Vec<&str> = s.protocols.iter().map(|p| p.as_str()).collect();
                let backends = if s.backends.is_empty() {
                    "no endpoints".to_owned()
                } else {
                    s.backends.join(" ")
                };
                width::write_fill(
                    out,
                    &format!(
                        "{} {}:{} {} -> :{} {backends}",
                        s.name,
                        s.vip,
                        s.port,
                        protos.join(","),
                        s.target_port
                    ),
                    "    ",
                    "      ",
                )?;
            }
        }
        if lab.policy_mode.is_some() || !lab.policies.is_empty() {
            let mode = lab
                .policy_mode
                .map_or("no policy mode: recorded, not enforced".to_owned(), |m| {
                    format!("policy mode {m}")
                });
            let names = if lab.policies.is_empty() {
                "none yet".to_owned()
            } else {
                lab.policies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            width::write_fill(
                out,
                &format!("({mode}): {names}; labctl policy list --lab {}", lab.lab),
                &format!("  {bold}policies{bold:#} "),
                "    ",
            )?;
        }
    }
    Ok(())
}
