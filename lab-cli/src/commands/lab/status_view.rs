//! `labctl lab status`: text and JSON views of what the kernel holds.

use std::io::Write as _;

use anstyle::Style;

use crate::{
    exercises,
    kernel::privilege,
    lab::{Lab, LabError, status},
    output::OutputFormat,
    output::exit::Outcome,
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
    let mut concealed: Vec<(String, String)> = Vec::new();
    for lab in &mut statuses {
        if let Some(id) = exercises::conceals_mode(&lab.lab) {
            lab.kube_proxy = None;
            concealed.push((lab.lab.clone(), id));
        }
    }
    if output == OutputFormat::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&statuses)?)?;
        return Ok(Outcome::Success);
    }
    let bold = Style::new().bold();
    for lab in &statuses {
        let state = if lab.complete {
            ""
        } else {
            " (INCOMPLETE: `labctl lab down` removes it)"
        };
        writeln!(
            out,
            "{bold}lab {}{bold:#} (scenario {}){state}",
            lab.lab, lab.scenario
        )?;
        for m in &lab.members {
            writeln!(
                out,
                "  {bold}{}{bold:#} [{}] {} (ip netns: {})",
                m.name, m.role, m.display, m.netns
            )?;
            for l in &m.links {
                let master = l
                    .master
                    .as_deref()
                    .map(|b| format!(" master {b}"))
                    .unwrap_or_default();
                let kind = l.kind.as_deref().unwrap_or("");
                let state = if l.up { "UP" } else { "DOWN" };
                writeln!(
                    out,
                    "    {:<12} {:<7} mtu {:<5} {:<4} {}{master}",
                    l.name,
                    kind,
                    l.mtu,
                    state,
                    l.addresses.join(" ")
                )?;
            }
            for r in &m.routes {
                let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
                let dev = r.dev.as_deref().unwrap_or("?");
                writeln!(out, "    route {}{via} dev {dev}", r.dst)?;
            }
            if let Some(n) = &m.ebpf_nat {
                writeln!(
                    out,
                    "    eBPF masquerading on eth0: {} of {} mappings, {} allocated, {} port collisions, {} dropped for lack of a port (labctl masq nat-table --netns {})",
                    n.used, n.capacity, n.allocated, n.collisions, n.alloc_failed, m.netns
                )?;
            }
            if let Some(rules) = &m.ruleset {
                for line in rules.lines().filter(|l| l.contains("counter")) {
                    writeln!(out, "    nft: {}", line.trim())?;
                }
            }
        }
        if let Some((_, id)) = concealed.iter().find(|(l, _)| *l == lab.lab) {
            writeln!(
                out,
                "  {bold}services{bold:#}: the mode is hidden while exercise `{id}` runs"
            )?;
        }
        if let Some(mode) = lab.kube_proxy {
            writeln!(
                out,
                "  {bold}services{bold:#} ({mode}; from the kernel: labctl svc list --lab {})",
                lab.lab
            )?;
            for s in &lab.services {
                let protos: Vec<&str> = s.protocols.iter().map(|p| p.as_str()).collect();
                let backends = if s.backends.is_empty() {
                    "no endpoints".to_owned()
                } else {
                    s.backends.join(" ")
                };
                writeln!(
                    out,
                    "    {} {}:{} {} -> :{} {backends}",
                    s.name,
                    s.vip,
                    s.port,
                    protos.join(","),
                    s.target_port
                )?;
            }
        }
    }
    Ok(Outcome::Success)
}
