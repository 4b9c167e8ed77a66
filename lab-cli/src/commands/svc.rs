//! `labctl svc ...`: list services as the kernel holds them, and change a
//! lab's services live.

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cli::svc::{
        PlanArgs, SvcAddArgs, SvcBackendChangeArgs, SvcBackendCommand, SvcCommand, SvcDelArgs,
        SvcListArgs,
    },
    kernel::{netns::NetNs, privilege},
    lab::{
        Lab, LabError,
        names::lookup_netns,
        services::{self as lab_services, Change},
    },
    output::{
        OutputFormat,
        exit::Outcome,
        plan,
        services::{render, render_flows},
        width,
    },
    services::{
        self, FrontendView, L4, ServiceError, ServiceSpec, SpecError, cilium,
        model::{self, APP_PORT},
    },
};

pub fn run(command: SvcCommand) -> anyhow::Result<Outcome> {
    match command {
        SvcCommand::List(args) => list(args),
        SvcCommand::Flows(args) => flows(args.lab.as_deref(), args.output),
        SvcCommand::Add(args) => add(args),
        SvcCommand::Del(SvcDelArgs {
            name,
            lab,
            output,
            plan,
        }) => {
            let lab = pick_lab(lab.as_deref())?;
            apply(
                &lab,
                Change::Delete(name.clone()),
                What {
                    done: format!("service `{name}` deleted"),
                    would: format!("service `{name}` would be deleted"),
                },
                output,
                plan,
            )
        }
        SvcCommand::Backend(args) => match args.command {
            SvcBackendCommand::Add(a) => backend(a, true),
            SvcBackendCommand::Del(a) => backend(a, false),
            SvcBackendCommand::Set(a) => {
                let lab = pick_lab(a.lab.as_deref())?;
                let pods = model::backend_pods(&lab, &a.pods).map_err(usage)?;
                let what = if pods.is_empty() {
                    What {
                        done: format!("service `{}` has no endpoints now", a.service),
                        would: format!("service `{}` would have no endpoints", a.service),
                    }
                } else {
                    What {
                        done: format!("service `{}` now goes to {}", a.service, pods.join(", ")),
                        would: format!("service `{}` would go to {}", a.service, pods.join(", ")),
                    }
                };
                apply(
                    &lab,
                    Change::SetBackends {
                        service: a.service.clone(),
                        pods,
                    },
                    what,
                    a.output,
                    a.plan,
                )
            }
        },
    }
}

/// A service spec the user got wrong, as the lab layer reports it (exit 2).
fn usage(e: SpecError) -> LabError {
    ServiceError::from(e).into()
}

/// Lab `name`, or the only lab with services.
fn pick_lab(name: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = name {
        return Ok(name.to_owned());
    }
    let with: Vec<String> = Lab::all()?
        .into_iter()
        .filter(|l| l.plan.kube_proxy().is_some())
        .map(|l| l.name().to_owned())
        .collect();
    match with.len() {
        1 => Ok(with[0].clone()),
        0 => Err(LabError::NotUp("service".into()))
            .context("no lab with services is up; start one with `labctl lab up service`"),
        _ => Err(LabError::AmbiguousMember {
            name: "services".into(),
            labs: with.join(", "),
        }
        .into()),
    }
}

fn list(args: SvcListArgs) -> anyhow::Result<Outcome> {
    privilege::require_netns_admin("svc list")?;
    let mut views: Vec<FrontendView> = Vec::new();
    if let Some(spec) = &args.netns {
        let ns = lookup_netns(spec)?;
        views.extend(services::read_netns(&ns).context("cannot read kube-proxy's chains")?);
    } else {
        let labs: Vec<Lab> = match &args.lab {
            Some(name) => vec![Lab::open(name)?],
            None => Lab::all()?
                .into_iter()
                .filter(|l| l.plan.kube_proxy().is_some())
                .collect(),
        };
        for lab in &labs {
            views
                .extend(lab_services::list(lab).with_context(|| {
                    format!("cannot read the services of lab `{}`", lab.name())
                })?);
        }
        if args.lab.is_none() && labs.is_empty() {
            let here = NetNs::at("this namespace", std::path::Path::new("/proc/self/ns/net"));
            views.extend(services::read_netns(&here).context("cannot read kube-proxy's chains")?);
        }
        if args.lab.is_none() && cilium::present() {
            views.extend(services::map_views(
                cilium::read().context("cannot read Cilium's service maps")?,
                "cilium",
            ));
        }
    }
    if let Some(pod) = &args.pod {
        let short = pod.rsplit('/').next().unwrap_or(pod);
        views.retain(|v| {
            v.backends.iter().any(|b| {
                b.pod
                    .as_deref()
                    .is_some_and(|p| p == pod || p.rsplit('/').next() == Some(short))
            })
        });
    }
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            for v in &views {
                writeln!(out, "{}", serde_json::to_string(v)?)?;
            }
        }
        OutputFormat::Text if views.is_empty() => width::write_fill(
            &mut out,
            "no services found (no lab with services is up, no kube-proxy chains here, no Cilium maps); try `labctl lab up service`",
            "",
            "",
        )?,
        OutputFormat::Text => write!(out, "{}", render(&views))?,
    }
    Ok(Outcome::Success)
}

fn flows(lab: Option<&str>, output: OutputFormat) -> anyhow::Result<Outcome> {
    privilege::require("svc flows")?;
    let labs: Vec<Lab> = match lab {
        Some(name) => vec![Lab::open(name)?],
        None => Lab::all()?
            .into_iter()
            .filter(|l| l.plan.kube_proxy().is_some())
            .collect(),
    };
    let mut all = Vec::new();
    for lab in &labs {
        all.extend(
            lab_services::flows(lab)
                .with_context(|| format!("cannot read the flows of lab `{}`", lab.name()))?,
        );
    }
    let mut out = anstream::stdout().lock();
    match output {
        OutputFormat::Json => {
            for f in &all {
                writeln!(out, "{}", serde_json::to_string(f)?)?;
            }
        }
        OutputFormat::Text if all.is_empty() => width::write_fill(
            &mut out,
            "no translated connections (send some: `labctl lab traffic client web -p tcp`)",
            "",
            "",
        )?,
        OutputFormat::Text => write!(out, "{}", render_flows(&all))?,
    }
    Ok(Outcome::Success)
}

fn add(args: SvcAddArgs) -> anyhow::Result<Outcome> {
    let name = pick_lab(args.lab.as_deref())?;
    let backends = model::backend_pods(&name, &args.backends).map_err(usage)?;
    let lab = Lab::open(&name)?;
    let vip = match args.vip {
        Some(v) => v,
        None => lab_services::free_vip(&lab)?,
    };
    let mut protocols = args.protocols.clone();
    if protocols.is_empty() {
        protocols = vec![L4::Tcp, L4::Udp];
    }
    protocols.dedup();
    let spec = ServiceSpec {
        name: args.name.clone(),
        vip,
        port: args.port,
        target_port: args.target_port,
        protocols,
        backends,
    };
    let note = if args.target_port == APP_PORT {
        String::new()
    } else {
        format!(
            " (the lab's app listens on {APP_PORT}, not {})",
            args.target_port
        )
    };
    apply(
        &name,
        Change::Add(spec),
        What {
            done: format!("service `{}` added at {vip}:{}{note}", args.name, args.port),
            would: format!(
                "service `{}` would be added at {vip}:{}{note}",
                args.name, args.port
            ),
        },
        args.output,
        args.plan,
    )
}

fn backend(args: SvcBackendChangeArgs, add: bool) -> anyhow::Result<Outcome> {
    let lab = pick_lab(args.lab.as_deref())?;
    let pod = model::backend_pod(&lab, &args.pod).map_err(usage)?;
    let service = &args.service;
    let (change, what) = if add {
        (
            Change::AddBackend {
                service: service.clone(),
                pod: pod.clone(),
            },
            What {
                done: format!("`{pod}` added to service `{service}`"),
                would: format!("`{pod}` would be added to service `{service}`"),
            },
        )
    } else {
        (
            Change::DeleteBackend {
                service: service.clone(),
                pod: pod.clone(),
            },
            What {
                done: format!(
                    "`{pod}` removed from service `{service}` (new connections only: established ones keep it)"
                ),
                would: format!(
                    "`{pod}` would be removed from service `{service}` (new connections only: established ones would keep it)"
                ),
            },
        )
    };
    apply(&lab, change, what, args.output, args.plan)
}

/// A change in words: done, or (a dry run) what would be done.
struct What {
    done: String,
    would: String,
}

fn apply(
    lab: &str,
    change: Change,
    what: What,
    output: OutputFormat,
    show: PlanArgs,
) -> anyhow::Result<Outcome> {
    privilege::require("svc")?;
    let changed = lab_services::change(lab, change, show.dry_run)
        .with_context(|| format!("cannot change lab `{lab}`"))?;
    let (p, nodes) = (&changed.plan, changed.nodes);
    let mut out = anstream::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "lab": lab,
                "done": if changed.applied { &what.done } else { &what.would },
                "changes": p.changes, "unit": p.unit, "nodes": nodes,
                "dry_run": !changed.applied, "plan": p.parts,
            })
        )?,
        OutputFormat::Text => {
            let line = if changed.applied {
                format!(
                    "{}; {} {} written on {nodes} node(s)",
                    what.done, p.changes, p.unit
                )
            } else {
                format!(
                    "{}; {} {} would be written on {nodes} node(s) (dry run: nothing was written)",
                    what.would, p.changes, p.unit
                )
            };
            width::write_fill(&mut out, &line, "", "  ")?;
            if show.show_plan || !changed.applied {
                write!(out, "{}", plan::render(p))?;
            }
        }
    }
    Ok(Outcome::Success)
}
