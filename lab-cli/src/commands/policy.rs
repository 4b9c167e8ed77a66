//! `labctl policy ...`: apply, delete, list and trace a lab's network
//! policies; the work is in `crate::lab::policy` and `crate::policy`.

use std::{
    io::{self, Write},
    path::Path,
};

use anstyle::Style;
use anyhow::Context as _;

use crate::{
    cli::policy::{
        PolicyApplyArgs, PolicyCommand, PolicyDeleteArgs, PolicyListArgs, PolicySyncArgs,
        PolicyTraceArgs,
    },
    kernel::privilege,
    lab::{
        Lab,
        policy::{self as lab_policy, Applied, Enforced, Target, Trace},
        policy_node,
    },
    output::{OutputFormat, exit::Outcome as Exit, plan, width},
    policy::{
        PolicyError, PolicyMode,
        eval::{Evaluator, Hop, Outcome},
        identity,
        model::{Direction, Policy, PolicyKey},
        yaml,
    },
};

pub fn run(command: PolicyCommand) -> anyhow::Result<Exit> {
    match command {
        PolicyCommand::Apply(args) => apply(args),
        PolicyCommand::Delete(args) => delete(args),
        PolicyCommand::List(args) => list(args),
        PolicyCommand::Trace(args) => trace(args),
        PolicyCommand::Identities(args) => super::policy_maps::identities(args),
        PolicyCommand::Endpoints(args) => super::policy_maps::endpoints(args),
        PolicyCommand::Map(args) => super::policy_maps::map(args),
        PolicyCommand::Sync(args) => sync(args),
    }
}

/// `policy sync [--watch]`: the node's policies enforced on its pods now,
/// and (watching) whenever its pods change.
fn sync(args: PolicySyncArgs) -> anyhow::Result<Exit> {
    privilege::require_netns_admin("policy sync")?;
    if !on_node(args.node, None) {
        return Err(PolicyError::SyncOnNode.into());
    }
    if args.watch {
        crate::kernel::interrupt::install().context("cannot install the Ctrl-C handler")?;
    }
    let mut ready = crate::kernel::ready::ReadyFile::claim(args.ready_file.as_deref())?;
    let mut last: Option<
        std::collections::BTreeSet<(String, String, crate::policy::model::Labels)>,
    > = None;
    loop {
        let scope = policy_node::NodeScope::read()?;
        let now = policy_node::fingerprint(&scope);
        if last.as_ref() != Some(&now) {
            let names = |set: &std::collections::BTreeSet<(
                String,
                String,
                crate::policy::model::Labels,
            )>| {
                set.iter()
                    .map(|(n, id, _)| (n.clone(), id.clone()))
                    .collect::<std::collections::BTreeSet<_>>()
            };
            let (added, removed): (Vec<String>, Vec<String>) = match &last {
                None => (Vec::new(), Vec::new()),
                Some(before) => {
                    let (b, a) = (names(before), names(&now));
                    (
                        a.difference(&b).map(|(n, _)| n.clone()).collect(),
                        b.difference(&a).map(|(n, _)| n.clone()).collect(),
                    )
                }
            };
            let scope = policy_node::synced()?;
            let mut out = anstream::stdout().lock();
            match args.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "node": scope.node,
                        "pods": scope.cluster.pods.len(),
                        "added": added,
                        "removed": removed,
                        "policies": scope.record.policies.len(),
                    })
                )?,
                OutputFormat::Text => {
                    let change = if last.is_none() {
                        format!("{} pods", scope.cluster.pods.len())
                    } else {
                        let mut parts: Vec<String> =
                            added.iter().map(|n| format!("+{n}")).collect();
                        parts.extend(removed.iter().map(|n| format!("-{n}")));
                        format!("pods changed: {}", parts.join(" "))
                    };
                    let held = if !scope.record.policies.is_empty() {
                        format!(
                            "{} policies enforced ({} datapath)",
                            scope.record.policies.len(),
                            scope.mode()
                        )
                    } else {
                        "no policies: nothing enforced".to_owned()
                    };
                    width::write_fill(
                        &mut out,
                        &format!("node {}: {change}; {held}", scope.node),
                        "",
                        "  ",
                    )?;
                }
            }
            out.flush()?;
            last = Some(now);
        }
        if !args.watch {
            return Ok(Exit::Success);
        }
        ready.signal("synced")?;
        if crate::kernel::interrupt::wait(std::time::Duration::from_secs(1)) {
            return Ok(Exit::Success);
        }
    }
}

/// The policies of a file (`-`: standard input), as `file:line` names
/// them.
fn read(path: &Path) -> Result<Vec<Policy>, PolicyError> {
    let text = yaml::read_file(path)?;
    let name = if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    Ok(yaml::parse(&name, &text)?)
}

/// What enforces a lab's policies, and what it wrote, in one sentence.
pub(crate) fn enforcement(lab: &str, e: &Enforced) -> String {
    match (e.policy_mode, &e.plan) {
        (None, _) => format!(
            "lab `{lab}` has no --policy-mode: its policies are recorded and traced (`labctl policy trace`), not enforced, as on a CNI without policy support"
        ),
        (Some(mode), None) => format!(
            "lab `{lab}` has --policy-mode {mode}: recorded; `labctl policy trace` shows what the {mode} datapath is to decide (this version does not build it yet)"
        ),
        (Some(mode), Some(p)) if e.dry_run => format!(
            "{mode} datapath: {} {} would be written on {} node(s){} (dry run: nothing was written or recorded)",
            p.changes,
            p.unit,
            e.nodes,
            per_node(p)
        ),
        (Some(mode), Some(p)) => format!(
            "{mode} datapath: {} {} written on {} node(s){}",
            p.changes,
            p.unit,
            e.nodes,
            per_node(p)
        ),
    }
}

/// ` (lab/node1 3, lab/node2 0)`: what each node got.
fn per_node(p: &crate::kernel::datapath::Shown) -> String {
    if p.parts.len() < 2 {
        return String::new();
    }
    let each: Vec<String> = p
        .parts
        .iter()
        .map(|part| format!("{} {}", part.target, part.changes))
        .collect();
    format!(" ({})", each.join(", "))
}

/// The enforcement of a change as JSON fields.
fn enforcement_json(e: &Enforced) -> serde_json::Value {
    serde_json::json!({
        "policy_mode": e.policy_mode,
        "enforced": e.enforced,
        "dry_run": e.dry_run,
        "nodes": e.nodes,
        "changes": e.plan.as_ref().map(|p| p.changes),
        "unit": e.plan.as_ref().map(|p| p.unit),
        "plan": e.plan.as_ref().map(|p| &p.parts),
    })
}

/// Merges the enforcement's fields into a JSON object.
pub(crate) fn with_enforcement(mut v: serde_json::Value, e: &Enforced) -> serde_json::Value {
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), enforcement_json(e)) {
        obj.extend(more);
    }
    v
}

/// The enforcement line, then the plan when asked for (always in a dry
/// run).
pub(crate) fn write_enforced(
    out: &mut impl Write,
    lab: &str,
    e: &Enforced,
    show_plan: bool,
) -> io::Result<()> {
    width::write_fill(out, &enforcement(lab, e), "", "  ")?;
    if let Some(p) = &e.plan
        && (show_plan || e.dry_run)
    {
        write!(out, "{}", plan::render(p))?;
    }
    Ok(())
}

/// Whether a policy command acts on this Kubernetes node: `--node`, or
/// no `--lab` while no lab is up and the container runtime answers.
pub(crate) fn on_node(node: bool, lab: Option<&str>) -> bool {
    node || (lab.is_none() && policy_node::implied())
}

fn apply(args: PolicyApplyArgs) -> anyhow::Result<Exit> {
    let policies = read(&args.file)?;
    privilege::require_netns_admin("policy apply")?;
    if on_node(args.node, args.lab.as_deref()) {
        let (node, applied, enforced) =
            policy_node::apply(policies, args.policy_mode, args.plan.dry_run)?;
        let mut out = anstream::stdout().lock();
        match args.output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                with_enforcement(
                    serde_json::json!({ "node": node, "applied": applied }),
                    &enforced
                )
            )?,
            OutputFormat::Text => {
                write_applied(&mut out, &applied)?;
                write_enforced(
                    &mut out,
                    &format!("node {node}"),
                    &enforced,
                    args.plan.show_plan,
                )?;
            }
        }
        return Ok(Exit::Success);
    }
    if args.policy_mode.is_some() {
        return Err(PolicyError::ModeOfLab.into());
    }
    let lab = lab_policy::pick_lab(args.lab.as_deref())?;
    let (applied, enforced) = lab_policy::apply(lab.name(), policies, args.plan.dry_run)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            with_enforcement(
                serde_json::json!({ "lab": lab.name(), "applied": applied }),
                &enforced
            )
        )?,
        OutputFormat::Text => {
            write_applied(&mut out, &applied)?;
            write_enforced(&mut out, lab.name(), &enforced, args.plan.show_plan)?;
        }
    }
    Ok(Exit::Success)
}

/// `policy apply` as text: one line per policy as kubectl says it.
pub(crate) fn write_applied(out: &mut impl Write, applied: &[Applied]) -> io::Result<()> {
    for a in applied {
        let selects = if a.selects.is_empty() {
            "selects no pod".to_owned()
        } else {
            format!("selects {}", a.selects.join(", "))
        };
        width::write_fill(
            out,
            &format!(
                "{} {} {} ({selects})",
                a.policy.kind.as_str().to_lowercase(),
                a.policy,
                a.action.as_str()
            ),
            "",
            "  ",
        )?;
    }
    Ok(())
}

fn delete(args: PolicyDeleteArgs) -> anyhow::Result<Exit> {
    let targets: Vec<Target> = match &args.file {
        Some(path) => read(path)?
            .into_iter()
            .map(|p| Target::Key(p.key()))
            .collect(),
        None => args.names.iter().cloned().map(Target::Name).collect(),
    };
    privilege::require_netns_admin("policy delete")?;
    if on_node(args.node, args.lab.as_deref()) {
        let (node, deleted, enforced) = policy_node::delete(&targets, args.all)?;
        let mut out = anstream::stdout().lock();
        match args.output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                with_enforcement(
                    serde_json::json!({ "node": node, "deleted": deleted }),
                    &enforced
                )
            )?,
            OutputFormat::Text => {
                for key in &deleted {
                    writeln!(
                        out,
                        "{} {key} deleted from node `{node}`",
                        key.kind.as_str().to_lowercase(),
                    )?;
                }
                if enforced.enforced {
                    write_enforced(&mut out, &format!("node {node}"), &enforced, false)?;
                } else {
                    width::write_fill(
                        &mut out,
                        &format!(
                            "node `{node}` has no policies left: its policy datapath was removed"
                        ),
                        "",
                        "  ",
                    )?;
                }
            }
        }
        return Ok(Exit::Success);
    }
    if args.all {
        return Err(PolicyError::AllOnNode.into());
    }
    let lab = lab_policy::pick_lab(args.lab.as_deref())?;
    let (deleted, enforced) = lab_policy::delete(lab.name(), &targets)?;
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            with_enforcement(
                serde_json::json!({ "lab": lab.name(), "deleted": deleted }),
                &enforced
            )
        )?,
        OutputFormat::Text => {
            for key in &deleted {
                writeln!(
                    out,
                    "{} {key} deleted from lab `{}`",
                    key.kind.as_str().to_lowercase(),
                    lab.name()
                )?;
            }
            if enforced.enforced {
                write_enforced(&mut out, lab.name(), &enforced, false)?;
            }
        }
    }
    Ok(Exit::Success)
}

/// One policy of `policy list`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Listed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub policy: PolicyKey,
    /// The pods it selects.
    pub selects: Vec<String>,
    pub spec: Policy,
}

fn list(args: PolicyListArgs) -> anyhow::Result<Exit> {
    if on_node(args.node, args.lab.as_deref()) {
        let scope = policy_node::synced()?;
        let eval = scope.evaluator();
        let mut policies: Vec<&Policy> = scope.record.policies.iter().collect();
        policies.sort_by_key(|p| p.key());
        let listed: Vec<Listed> = policies
            .into_iter()
            .map(|p| Listed {
                lab: None,
                node: Some(scope.node.clone()),
                policy: p.key(),
                selects: eval
                    .selected(p)
                    .into_iter()
                    .map(|i| scope.cluster.pods[i].name.clone())
                    .collect(),
                spec: p.clone(),
            })
            .collect();
        let rows = vec![(format!("node {}", scope.node), Some(scope.mode()), listed)];
        return print_list(args.output, &rows);
    }
    let labs = match &args.lab {
        Some(name) => vec![Lab::open(name)?],
        None => Lab::all()?,
    };
    let mut rows = Vec::new();
    for lab in &labs {
        let cluster = lab_policy::cluster(lab);
        let eval = Evaluator::new(
            &cluster,
            lab_policy::identities(lab, &cluster).0,
            &lab.state.policies,
            lab_policy::flavor(lab),
        );
        let mut policies: Vec<&Policy> = lab.state.policies.iter().collect();
        policies.sort_by_key(|p| p.key());
        let listed: Vec<Listed> = policies
            .into_iter()
            .map(|p| Listed {
                lab: Some(lab.name().to_owned()),
                node: None,
                policy: p.key(),
                selects: eval
                    .selected(p)
                    .into_iter()
                    .map(|i| cluster.pods[i].name.clone())
                    .collect(),
                spec: p.clone(),
            })
            .collect();
        rows.push((
            format!("lab {}", lab.name()),
            lab.plan.options.policy_mode,
            listed,
        ));
    }
    print_list(args.output, &rows)
}

fn print_list(output: OutputFormat, rows: &ListRows) -> anyhow::Result<Exit> {
    let mut out = anstream::stdout().lock();
    match output {
        OutputFormat::Json => {
            for (_, _, listed) in rows {
                for l in listed {
                    writeln!(out, "{}", serde_json::to_string(l)?)?;
                }
            }
        }
        OutputFormat::Text if rows.is_empty() => {
            width::write_fill(&mut out, &crate::lab::LabError::NoLabs.to_string(), "", "")?
        }
        OutputFormat::Text => write_list(&mut out, rows)?,
    }
    Ok(Exit::Success)
}

type ListRows = [(String, Option<PolicyMode>, Vec<Listed>)];

/// `policy list` as text: each lab, each policy with what it selects and
/// governs.
pub(crate) fn write_list(out: &mut impl Write, rows: &ListRows) -> io::Result<()> {
    let bold = Style::new().bold();
    for (lab, mode, listed) in rows {
        let mode = mode.map_or("no policy mode: recorded, not enforced".to_owned(), |m| {
            format!("policy mode {m}")
        });
        width::write_fill(
            out,
            &format!("({mode}; {})", policies(listed.len())),
            &format!("{bold}{lab}{bold:#} "),
            "  ",
        )?;
        if listed.is_empty() {
            width::write_fill(
                out,
                "no policies: every pod is open both ways; add one with `labctl policy apply -f FILE`",
                "  ",
                "    ",
            )?;
        }
        for l in listed {
            let p = &l.spec;
            width::write_fill(
                out,
                &format!(
                    "{} {} ({}:{})",
                    p.kind.short(),
                    l.policy,
                    p.origin.file,
                    p.origin.line
                ),
                "  ",
                "    ",
            )?;
            let selects = if l.selects.is_empty() {
                "no pod".to_owned()
            } else {
                l.selects.join(", ")
            };
            width::write_fill(out, &format!("selects {selects}"), "    ", "      ")?;
            width::write_fill(out, &governs(p), "    ", "      ")?;
        }
    }
    Ok(())
}

/// `1 policy`, `2 policies`.
fn policies(n: usize) -> String {
    if n == 1 {
        "1 policy".to_owned()
    } else {
        format!("{n} policies")
    }
}

/// `ingress: 1 rule, default deny; egress: not governed`.
fn governs(p: &Policy) -> String {
    let part = |d: Direction, allow: usize, deny: usize| {
        if !p.applies.get(d) {
            return format!("{d}: not governed");
        }
        let mut s = format!(
            "{d}: {allow} allow rule{}",
            if allow == 1 { "" } else { "s" }
        );
        if deny > 0 {
            s.push_str(&format!(
                ", {deny} deny rule{}",
                if deny == 1 { "" } else { "s" }
            ));
        }
        if p.default_deny.get(d) {
            s.push_str(", default deny");
        }
        s
    };
    format!(
        "{}; {}",
        part(Direction::Ingress, p.ingress.len(), p.ingress_deny.len()),
        part(Direction::Egress, p.egress.len(), p.egress_deny.len())
    )
}

fn trace(args: PolicyTraceArgs) -> anyhow::Result<Exit> {
    if args.all {
        let lab = lab_policy::pick_lab(args.lab.as_deref())?;
        let m = lab_policy::trace_all(&lab, &args.port)?;
        let mut out = anstream::stdout().lock();
        match args.output {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&m)?)?,
            OutputFormat::Text => write_matrix(&mut out, &m)?,
        }
        return Ok(Exit::Success);
    }
    let (Some(from), Some(to), [(port, protocol)]) = (
        args.from.as_deref(),
        args.to.as_deref(),
        args.port.as_slice(),
    ) else {
        return Err(PolicyError::OnePort.into());
    };
    let (port, protocol) = (*port, *protocol);
    let t = if on_node(args.node, args.lab.as_deref()) {
        let scope = policy_node::synced()?;
        policy_node::trace(&scope, from, to, port, protocol)?
    } else {
        let lab = lab_policy::trace_lab(args.lab.as_deref(), from, to)?;
        lab_policy::trace(&lab, from, to, port, protocol)?
    };
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&t)?)?,
        OutputFormat::Text => write_trace(&mut out, &t)?,
    }
    Ok(Exit::Success)
}

/// A matrix cell's letter: `A` allowed, `d` default deny
/// (POLICY_DENIED), `D` a deny rule (POLICY_DENY); `!` where the datapath
/// read from the kernel decides otherwise than the policies.
fn cell_letter(c: &lab_policy::MatrixCell) -> char {
    if c.datapath_allows().is_some_and(|a| a != c.verdict.allowed) {
        return '!';
    }
    match (c.verdict.allowed, c.verdict.drop_reason) {
        (true, _) => 'A',
        (false, Some(crate::policy::eval::DropReason::PolicyDeny)) => 'D',
        (false, _) => 'd',
    }
}

/// `policy trace --all` as text: one row per source pod, one block per
/// port, one letter per destination pod (the pods in the order listed).
pub(crate) fn write_matrix(out: &mut impl Write, m: &lab_policy::Matrix) -> io::Result<()> {
    let short = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    let reading = match m.policy_mode {
        Some(PolicyMode::Ebpf) => "policy mode ebpf, read from the eBPF maps",
        Some(PolicyMode::Netfilter) => "policy mode netfilter, read from nft",
        None => "no policy mode: judged, not enforced",
    };
    width::write_fill(
        out,
        &format!(
            "Lab {} ({reading}; {}): every pod to every other pod.",
            m.lab,
            policies(m.policies)
        ),
        "",
        "",
    )?;
    writeln!(out)?;
    let names: Vec<String> = m.pods.iter().map(|p| short(p)).collect();
    width::write_fill(
        out,
        &format!("columns, in each block: {}", names.join(" ")),
        "",
        "  ",
    )?;
    width::write_fill(
        out,
        "A allowed, d default deny (POLICY_DENIED), D a deny rule (POLICY_DENY), . itself, ! the datapath decides otherwise than the policies",
        "",
        "  ",
    )?;
    let col = names.iter().map(String::len).max().unwrap_or(4).max(4);
    let block = m
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.port, p.protocol).len())
        .chain([m.pods.len()])
        .max()
        .unwrap_or(1);
    // As many port blocks side by side as 80 columns take (one at least).
    let per_table = ((width::COLUMNS.saturating_sub(col)) / (block + 1)).max(1);
    for (n, ports) in m.ports.chunks(per_table).enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        write_matrix_table(out, m, ports, &names, col, block)?;
    }
    Ok(())
}

/// One table of [`write_matrix`]: the blocks of `ports`.
fn write_matrix_table(
    out: &mut impl Write,
    m: &lab_policy::Matrix,
    ports: &[lab_policy::MatrixPort],
    names: &[String],
    col: usize,
    block: usize,
) -> io::Result<()> {
    let mut head = format!("{:<col$}", "FROM");
    for p in ports {
        head.push_str(&format!(
            " {:<block$}",
            format!("{}/{}", p.port, p.protocol)
        ));
    }
    writeln!(out, "{}", head.trim_end())?;
    for (i, from) in m.pods.iter().enumerate() {
        let mut row = format!("{:<col$}", names[i]);
        for &lab_policy::MatrixPort { port, protocol } in ports {
            let mut letters = String::new();
            for to in &m.pods {
                if to == from {
                    letters.push('.');
                    continue;
                }
                let c = m.cells.iter().find(|c| {
                    c.from == *from && c.to == *to && c.port == port && c.protocol == protocol
                });
                letters.push(c.map_or('?', cell_letter));
            }
            row.push_str(&format!(" {letters:<block$}"));
        }
        writeln!(out, "{}", row.trim_end())?;
    }
    Ok(())
}

/// The labels worth a line of text: Cilium's bookkeeping ones (service
/// account, cluster, namespace labels) are in `-o json`.
fn short_labels(labels: &[String]) -> String {
    labels
        .iter()
        .filter(|l| {
            !l.starts_with(&format!("k8s:{}", identity::NAMESPACE_LABELS_PREFIX))
                && !l.starts_with(&format!("k8s:{}", identity::SERVICE_ACCOUNT_LABEL))
                && !l.starts_with(&format!("k8s:{}", identity::CLUSTER_LABEL))
        })
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `policy trace` as text, as `cilium policy trace` reads: both sides and
/// their identities, each direction's policies and deciding rule, the
/// verdict.
pub(crate) fn write_trace(out: &mut impl Write, t: &Trace) -> io::Result<()> {
    let bold = Style::new().bold();
    let reading = match t.policy_mode {
        Some(PolicyMode::Ebpf) => "policy mode ebpf: Cilium's reading",
        Some(PolicyMode::Netfilter) => "policy mode netfilter: Calico's reading",
        None => "no policy mode: netfilter's reading, not enforced",
    };
    width::write_fill(
        out,
        &format!(
            "{} -> {} on {}/{} ({}, {reading}; {})",
            t.from.name,
            t.to.name,
            t.port,
            t.protocol,
            match (&t.lab, &t.node) {
                (Some(lab), _) => format!("lab {lab}"),
                (None, Some(node)) => format!("node {node}"),
                (None, None) => "?".to_owned(),
            },
            policies(t.policies)
        ),
        "Tracing ",
        "  ",
    )?;
    writeln!(out)?;
    for (head, side) in [("From", &t.from), ("To", &t.to)] {
        let ns = side
            .namespace
            .as_ref()
            .map(|n| format!(" (namespace {n})"))
            .unwrap_or_default();
        let addr = if side.name == side.addr.to_string()
            || (side.addr.prefix_len() == 32 && side.name == side.addr.addr().to_string())
        {
            String::new()
        } else {
            format!(" {}", side.addr)
        };
        width::write_fill(
            out,
            &format!("{}{ns}{addr}", side.name),
            &format!("{bold}{head:<5}{bold:#} "),
            "      ",
        )?;
        let id = match side.reserved {
            Some(name) => format!("identity {} (reserved:{name})", side.identity),
            None => format!("identity {}", side.identity),
        };
        width::write_fill(
            out,
            &format!("{id}: {}", short_labels(&side.labels)),
            "      ",
            "        ",
        )?;
    }
    writeln!(out)?;
    for hop in [&t.verdict.egress, &t.verdict.ingress] {
        write_hop(out, hop)?;
    }
    if let Some(mode) = t.policy_mode
        && !t.datapath.is_empty()
    {
        writeln!(out)?;
        writeln!(out, "{bold}In the {mode} datapath:{bold:#}")?;
        for d in &t.datapath {
            let counted = match (d.present, d.packets) {
                (Some(false), _) => {
                    " (not in the kernel: run `labctl policy apply` again)".to_owned()
                }
                (_, Some(n)) => format!(" (counted {n} packets)"),
                _ => String::new(),
            };
            width::write_fill(
                out,
                &format!(
                    "{} of {} on {}: {}, {}{counted}",
                    d.direction, d.pod, d.node, d.place, d.entry
                ),
                "  ",
                "    ",
            )?;
        }
    }
    writeln!(out)?;
    let verdict = match t.verdict.drop_reason {
        None => "ALLOWED (replies of this connection pass too)".to_owned(),
        Some(reason) => {
            let hop = t.verdict.deciding();
            format!(
                "DENIED: {} (drop reason {}) at the {} of {}",
                reason.as_str(),
                reason.code(),
                hop.direction,
                hop.pod.as_deref().unwrap_or("?")
            )
        }
    };
    width::write_fill(
        out,
        &verdict,
        &format!("{bold}Final verdict:{bold:#} "),
        "  ",
    )
}

fn write_hop(out: &mut impl Write, hop: &Hop) -> io::Result<()> {
    let head = match (&hop.pod, hop.direction) {
        (Some(p), Direction::Egress) => format!("Egress of {p}: "),
        (Some(p), Direction::Ingress) => format!("Ingress of {p}: "),
        (None, Direction::Egress) => "Egress: ".to_owned(),
        (None, Direction::Ingress) => "Ingress: ".to_owned(),
    };
    let selected = hop
        .selected_by
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let deny = if hop.enforced {
        " (default deny)"
    } else {
        " (none turns default deny on)"
    };
    let text = match &hop.outcome {
        Outcome::NoEndpoint => "the source is not a pod: no policy of its own".to_owned(),
        Outcome::NotSelected => "no policy selects it: allowed".to_owned(),
        Outcome::NotEnforced => format!("selected by {selected}{deny}; no rule matches: allowed"),
        Outcome::Allowed { rule } => {
            format!("selected by {selected}{deny}; allowed by {rule}")
        }
        Outcome::AllowedHost => {
            format!(
                "selected by {selected}{deny}; allowed: from its own node, which may always reach it"
            )
        }
        Outcome::DefaultDenied => {
            format!("selected by {selected}{deny}; no rule allows it: denied")
        }
        Outcome::Denied { rule } => format!("selected by {selected}; denied by {rule}"),
    };
    let text = if matches!(hop.outcome, Outcome::NoEndpoint) && hop.direction == Direction::Ingress
    {
        "the destination is not a pod: no policy of its own".to_owned()
    } else {
        text
    };
    width::write_fill(out, &format!("{head}{text}"), "", "  ")?;
    for note in &hop.notes {
        width::write_fill(out, note, "  note: ", "    ")?;
    }
    Ok(())
}
