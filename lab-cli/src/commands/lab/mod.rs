//! `labctl lab ...`: one function per subcommand; the work is in `crate::lab`.

pub(crate) mod status_view;

use std::{
    io::{self, Write},
    net::Ipv4Addr,
};

use anstyle::{AnsiColor, Style};
use anyhow::Context as _;

use crate::{
    cli::lab::{
        LabCommand, LabDownArgs, LabExecArgs, LabListArgs, LabPodCommand, LabPodLabelArgs,
        LabStatusArgs, LabTrafficArgs, LabTriggerArgs, LabUpArgs,
    },
    cli::values,
    kernel::{cgroup, interrupt, privilege},
    lab::{
        self, Endpoint, Lab, exec,
        faults::{self, TriggerReport},
        names,
        plan::{LabOptions, MasqMode},
        policy::Relabelled,
        scenario::{SCENARIOS, Scenario},
        traffic::{self, TrafficReport, TrafficSpec},
    },
    output::{
        OutputFormat,
        exit::{Outcome, UsageError},
        width,
    },
    services,
};

pub fn run(command: LabCommand) -> anyhow::Result<Outcome> {
    match command {
        LabCommand::List(LabListArgs { output }) => list(output),
        LabCommand::Up(LabUpArgs {
            scenario,
            name,
            mtu,
            masq,
            nat_udp_timeout,
            nat_ports,
            tc_attach,
            kube_proxy,
            policy_mode,
            output,
        }) => up(
            &scenario,
            name.as_deref(),
            LabOptions {
                mtu,
                masq,
                nat_udp_timeout,
                nat_ports,
                tc_attach,
                kube_proxy,
                policy_mode,
            },
            output,
        ),
        LabCommand::Down(LabDownArgs { lab, output }) => down(lab.name(), output),
        LabCommand::Status(LabStatusArgs { lab, output }) => status_view::run(lab.name(), output),
        LabCommand::Exec(LabExecArgs {
            lab,
            member,
            command,
        }) => exec(lab.as_deref(), &member, &command),
        LabCommand::Traffic(LabTrafficArgs {
            from,
            to,
            lab,
            proto,
            port,
            count,
            size,
            timeout,
            duration,
            source_port,
            backend,
            output,
        }) => {
            values::traffic_size_for(size, proto).map_err(UsageError)?;
            let spec = TrafficSpec {
                proto,
                port: port.unwrap_or(TrafficSpec::default().port),
                count: count.unwrap_or(TrafficSpec::default().count),
                size,
                timeout,
                duration,
                source_port,
                servers: Vec::new(),
                named: false,
            };
            traffic(
                lab.as_deref(),
                (&from, &to),
                port.is_some(),
                backend.as_deref(),
                spec,
                output,
            )
        }
        LabCommand::Trigger(LabTriggerArgs {
            fault,
            lab,
            count,
            output,
        }) => trigger(lab.as_deref(), &fault, count, output),
        LabCommand::Pod(args) => match args.command {
            LabPodCommand::Label(args) => label(args),
        },
    }
}

fn label(args: LabPodLabelArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("lab pod label")?;
    let (lab, pod) = Lab::split_member(args.lab.as_deref(), &args.pod);
    let lab = Lab::find_member(lab, pod)?;
    let r = lab::policy::relabel(lab.name(), pod, &args.changes, args.overwrite)
        .with_context(|| format!("cannot relabel pod `{}`", args.pod))?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&r)?)?,
        OutputFormat::Text => {
            write_relabelled(&mut out, &r)?;
            if r.enforced.enforced {
                crate::commands::policy::write_enforced(&mut out, lab.name(), &r.enforced, false)?;
            }
        }
    }
    Ok(Outcome::Success)
}

/// `lab pod label` as text: the labels before and after, the identity
/// and the policies that select the pod.
pub(crate) fn write_relabelled(out: &mut impl Write, r: &Relabelled) -> io::Result<()> {
    let text = |l: &std::collections::BTreeMap<String, String>| {
        l.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keys = |k: &[crate::policy::PolicyKey]| {
        if k.is_empty() {
            "none".to_owned()
        } else {
            k.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if r.before == r.after {
        width::write_fill(
            out,
            &format!(
                "pod {} not changed: its labels are {}",
                r.pod,
                text(&r.after)
            ),
            "",
            "  ",
        )?;
    } else {
        width::write_fill(
            out,
            &format!(
                "pod {} labelled {} (was {})",
                r.pod,
                text(&r.after),
                text(&r.before)
            ),
            "",
            "  ",
        )?;
    }
    let identity = if r.identity_before == r.identity_after {
        format!("identity {} (unchanged)", r.identity_after)
    } else {
        format!("identity {} -> {}", r.identity_before, r.identity_after)
    };
    let mut ids = Vec::new();
    if !r.change.allocated.is_empty() {
        ids.push(format!("allocated {:?}", r.change.allocated));
    }
    if !r.change.released.is_empty() {
        ids.push(format!("released {:?}", r.change.released));
    }
    let ids = if ids.is_empty() {
        String::new()
    } else {
        format!(" ({})", ids.join(", "))
    };
    width::write_fill(out, &format!("{identity}{ids}"), "  ", "    ")?;
    let policies = if r.selected_before == r.selected_after {
        format!("selected by {}", keys(&r.selected_after))
    } else {
        format!(
            "selected by {} (was {})",
            keys(&r.selected_after),
            keys(&r.selected_before)
        )
    };
    width::write_fill(out, &policies, "  ", "    ")
}

fn list(output: OutputFormat) -> anyhow::Result<Outcome> {
    let mut out = anstream::stdout().lock();
    if output == OutputFormat::Json {
        for s in SCENARIOS {
            let faults: Vec<_> = s
                .faults
                .iter()
                .map(|f| serde_json::json!({"name": f.name(), "reason": f.reason, "at": f.at, "summary": f.summary}))
                .collect();
            let line = serde_json::json!({
                "name": s.name, "summary": s.summary, "teaches": s.teaches,
                "nodes": s.nodes, "pods": s.pods.iter().map(|p| p.name).collect::<Vec<_>>(),
                "routing": s.routing, "faults": faults,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(Outcome::Success);
    }
    write_list(&mut out, SCENARIOS)?;
    Ok(Outcome::Success)
}

/// `lab list` as text: each scenario with its summary, and its faults.
pub(crate) fn write_list(out: &mut impl Write, scenarios: &[Scenario]) -> io::Result<()> {
    let bold = Style::new().bold();
    for s in scenarios {
        let name = format!("{bold}{}{bold:#} ", width::pad(s.name, 10));
        width::write_fill(out, s.summary, &name, &" ".repeat(11))?;
        for f in s.faults {
            width::write_fill(
                out,
                &format!("fault {:<12} -> {}", f.name(), f.reason),
                &" ".repeat(12),
                &" ".repeat(18),
            )?;
        }
    }
    writeln!(out)?;
    width::write_fill(
        out,
        "labctl lab up SCENARIO builds one; `labctl lab list -o json` has each lesson.",
        "",
        "",
    )
}

fn up(
    scenario: &str,
    name: Option<&str>,
    options: LabOptions,
    output: OutputFormat,
) -> anyhow::Result<Outcome> {
    // The options against the scenario, before privileges (exit 2).
    if let Some(sc) = lab::scenario::find(scenario) {
        lab::plan::Plan::new(name.unwrap_or(sc.name), sc, options.clone())
            .map_err(lab::LabError::from)?;
    }
    if options.masq == MasqMode::Ebpf
        || options
            .kube_proxy
            .is_some_and(|m| services::about(m).loads_programs())
    {
        // Loading the NAT programs needs the eBPF capabilities too.
        privilege::require("lab up")?;
    }
    privilege::require_netns_admin("lab up")?;
    let lab = Lab::up(name, scenario, options)
        .with_context(|| format!("cannot bring up scenario `{scenario}`"))?;
    let several = Lab::all().map(|l| l.len() > 1).unwrap_or(false);
    let mut out = anstream::stdout().lock();
    if output == OutputFormat::Json {
        let members: Vec<_> = lab
            .endpoints()
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "addr": e.addr,
                    "netns": names::display(lab.name(), &e.name),
                    "ip_netns": e.netns,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "lab": lab.name(),
                "scenario": lab.plan.scenario.name,
                "options": lab.plan.options,
                "members": members,
                "teaches": lab.plan.scenario.teaches,
                "hints": lab::hints::hints(&lab, several),
            })
        )?;
        return Ok(Outcome::Success);
    }
    write_up(&mut out, &lab, &lab::hints::hints(&lab, several))?;
    Ok(Outcome::Success)
}

/// `lab up` as text: what was built, its members, the lesson and `hints`.
pub(crate) fn write_up(out: &mut impl Write, lab: &Lab, hints: &[String]) -> io::Result<()> {
    let green = Style::new().fg_color(Some(AnsiColor::Green.into())).bold();
    width::write_fill(
        out,
        &format!(
            "lab `{}` is up (scenario {}): {}",
            lab.name(),
            lab.plan.scenario.name,
            lab.plan.scenario.summary
        ),
        &format!("{green}✓{green:#} "),
        "  ",
    )?;
    let members: Vec<(String, Endpoint)> = lab
        .endpoints()
        .into_iter()
        .map(|e| (names::display(lab.name(), &e.name), e))
        .collect();
    let display_w = members
        .iter()
        .map(|(d, _)| width::width(d))
        .max()
        .unwrap_or(0);
    for (display, e) in &members {
        if let Some(ns) = &e.netns {
            let line = [
                format!("  {}", width::pad(display, display_w)),
                width::pad(&e.addr.to_string(), 15),
                format!("(ip netns: {ns})"),
            ];
            writeln!(out, "{}", width::pieces(&line, 4))?;
        }
    }
    // The lesson, without its generic "Try:" (the hints below fit this lab).
    let teaches = lab.plan.scenario.teaches;
    let teaches = teaches.split(" Try: ").next().unwrap_or(teaches);
    writeln!(out)?;
    width::write_fill(out, teaches, "", "")?;
    writeln!(out, "\nTry:")?;
    for hint in hints {
        write_hint(out, hint)?;
    }
    Ok(())
}

/// A command to try, its `# comment` on the next line where both do not fit.
fn write_hint(out: &mut impl Write, hint: &str) -> io::Result<()> {
    if 2 + width::width(hint) <= width::COLUMNS {
        return writeln!(out, "  {hint}");
    }
    match hint.split_once("   # ") {
        Some((command, comment)) => {
            width::write_fill(out, command.trim_end(), "  ", "    ")?;
            width::write_fill(out, &format!("# {comment}"), "    ", "      ")
        }
        None => width::write_fill(out, hint, "  ", "    "),
    }
}

fn down(name: Option<&str>, output: OutputFormat) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("lab down")?;
    let removed = lab::down(name).context("cannot tear the lab down")?;
    let mut out = anstream::stdout().lock();
    if output == OutputFormat::Json {
        writeln!(out, "{}", serde_json::json!({ "removed": removed }))?;
        return Ok(Outcome::Success);
    }
    if removed.is_empty() {
        writeln!(out, "no lab is up; nothing to remove")?;
    }
    for lab in removed {
        writeln!(
            out,
            "lab `{lab}` removed (namespaces, links, routes and rules)"
        )?;
    }
    Ok(Outcome::Success)
}

fn exec(lab: Option<&str>, member: &str, command: &[String]) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("lab exec")?;
    let (lab, member) = Lab::split_member(lab, member);
    let lab = Lab::find_member(lab, member)?;
    // `NAMESPACE/POD` as the pod's own name.
    let member = lab.endpoint(member).map_or(member.to_owned(), |e| e.name);
    let member = member.as_str();
    let ns = lab.netns(member)?;
    let status = match exec::run(&ns, lab.pod_cgroup(member).as_deref(), command) {
        Ok(status) => status,
        Err(e) => match e.shell_code() {
            // As a shell: one line on stderr, 127 or 126.
            Some(code) => {
                eprintln!("{}", width::fill(&e.to_string(), "labctl: ", "  "));
                return Ok(Outcome::Child(code));
            }
            None => return Err(e.into()),
        },
    };
    // A child killed by a signal exits 128+N, as shells report it.
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt as _;
        128 + status.signal().unwrap_or(0)
    });
    Ok(Outcome::Child(u8::try_from(code).unwrap_or(1)))
}

/// A member of `lab`, or an IPv4 address outside the lab.
fn endpoint(lab: &Lab, name: &str) -> anyhow::Result<Endpoint> {
    if let Some(e) = lab.endpoint(name) {
        return Ok(e);
    }
    if let Ok(addr) = name.parse::<Ipv4Addr>() {
        return Ok(Endpoint {
            name: name.to_owned(),
            netns: None,
            addr,
        });
    }
    Err(Lab::find_member(Some(lab.name()), name).err().map_or_else(
        || anyhow::anyhow!("`{name}` is not a member of lab `{}`", lab.name()),
        anyhow::Error::from,
    ))
}

fn traffic(
    lab: Option<&str>,
    (from, to): (&str, &str),
    port_given: bool,
    backend: Option<&str>,
    mut spec: TrafficSpec,
    output: OutputFormat,
) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("lab traffic")?;
    let (lab, from) = Lab::split_member(lab, from);
    let lab = Lab::find_member(lab, from)?;
    // `NAMESPACE/POD` as the pod's own name.
    let from = lab.endpoint(from).map_or(from.to_owned(), |e| e.name);
    let from = from.as_str();
    let to = lab.local_name(to);
    let to = lab.endpoint(to).map_or(to.to_owned(), |e| e.name);
    let to = to.as_str();
    let src = endpoint(&lab, from)?;
    // A service: its backends' app answers, each with its name.
    let dst = match lab.service_traffic(to, &mut spec, port_given) {
        Some(dst) => dst,
        None => endpoint(&lab, to)?,
    };
    // Under socket-LB a pod's processes run in its cgroup, where the
    // programs are: so does this one (it exits when done).
    if let Some(cg) = lab.pod_cgroup(from) {
        cgroup::join(&cg).with_context(|| format!("cannot run as pod {from}"))?;
    }
    if let Some(backend) = backend {
        let (member, port) = backend.split_once(':').ok_or_else(|| {
            UsageError(format!("`{backend}` is not MEMBER:PORT, e.g. world:5353"))
        })?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| UsageError(format!("`{port}` is not a port")))?;
        spec.servers = vec![(endpoint(&lab, member)?, port)];
    }
    let spec = &spec;
    let report = traffic::run(&src, &dst, spec)
        .with_context(|| format!("cannot send {} traffic from {from} to {to}", spec.proto))?;
    let mut out = anstream::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        OutputFormat::Text => write_traffic(&mut out, &report)?,
    }
    // Stopped early: what was sent is reported, and the exit code says so.
    interrupt::check()?;
    Ok(if report.all_answered() {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

fn trigger(
    lab: Option<&str>,
    fault: &str,
    count: u32,
    output: OutputFormat,
) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("lab trigger")?;
    let lab = match lab {
        Some(name) => Lab::open(name)?,
        None => {
            let mut with_faults: Vec<_> = Lab::all()?
                .into_iter()
                .filter(|l| !l.plan.scenario.faults.is_empty())
                .collect();
            match with_faults.len() {
                0 => anyhow::bail!(faults::FaultError::NoFaults {
                    lab: "(none)".into(),
                    scenario: "(none)".into()
                }),
                1 => with_faults.remove(0),
                _ => anyhow::bail!(lab::LabError::AmbiguousMember {
                    name: fault.to_owned(),
                    labs: with_faults
                        .iter()
                        .map(|l| l.name().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
            }
        }
    };
    let planted = faults::find(&lab, fault)?;
    let report = faults::trigger(&lab, planted, count)
        .with_context(|| format!("cannot trigger fault `{fault}`"))?;
    let mut out = anstream::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        OutputFormat::Text => write_trigger(&mut out, &report)?,
    }
    Ok(Outcome::Success)
}

/// `lab trigger` as text: what was sent, and where its drops should show.
pub(crate) fn write_trigger(out: &mut impl Write, r: &TriggerReport) -> io::Result<()> {
    width::write_fill(
        out,
        &format!(
            "{}: sent {} {} packets {}:{} -> {}:{}; expect {} drops at {} ({}, {})",
            r.fault,
            r.sent,
            r.proto,
            r.src,
            r.sport,
            r.dst,
            r.dport,
            r.reason,
            r.at,
            r.netns,
            r.iface
        ),
        "",
        "  ",
    )
}

/// `lab traffic` as text: the report's sentence, filled.
pub(crate) fn write_traffic(out: &mut impl Write, report: &TrafficReport) -> io::Result<()> {
    width::write_fill(out, &report.text(), "", "  ")
}
