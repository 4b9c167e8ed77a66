//! Running an exercise against a live lab: its actions (break, solution,
//! alternatives, shortcuts), and its checks, each observed with labctl's
//! own instruments. A check only sends its probes; it never changes the
//! lab.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use serde::Serialize;
use thiserror::Error;

use super::{
    attempt::{Attempt, Snapshot},
    model::{Action, Check, Exercise, PolicyParty, Probe, Traffic, WireSide},
};
use crate::{
    conntrack::netlink::Ctnetlink,
    drops::{
        filter::Filters,
        record::DropRecord,
        session::{self, Sink, TraceOptions},
    },
    kernel::{child, interrupt, netns::NetNs, sysctl},
    lab::{
        self, Endpoint, Lab, LabError, faults,
        traffic::{self, Proto, TrafficSpec},
    },
};

#[derive(Debug, Error)]
pub enum ObserveError {
    #[error("`{run}` in {member} failed ({status}): {stderr}")]
    Action {
        member: String,
        run: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{run}` in {member}: {source}")]
    Spawn {
        member: String,
        run: String,
        source: std::io::Error,
    },
    #[error("interrupted while `{run}` ran in {member}")]
    Interrupted {
        member: String,
        run: String,
        source: interrupt::Interrupted,
    },
    #[error(transparent)]
    Lab(#[from] LabError),
}

/// Applies one action to the lab (an `answer` is the attempt's business:
/// see `exercises::apply_actions`).
pub fn apply(lab: &Lab, action: &Action) -> Result<(), ObserveError> {
    match action {
        Action::NatPorts { ports } => {
            let range = parse_ports(ports).ok_or_else(|| ObserveError::Action {
                member: "the lab".into(),
                run: format!("nat-ports {ports}"),
                status: "invalid".into(),
                stderr: "not a port range such as 32768-60999".into(),
            })?;
            lab::reconfigure_nat(lab.name(), Some(range), None)?;
        }
        Action::SvcBackends { service, pods } => {
            lab::services::change(
                lab.name(),
                lab::services::Change::SetBackends {
                    service: service.clone(),
                    pods: pods.clone(),
                },
                false,
            )?;
        }
        Action::Probe(p) => {
            // Only the state it leaves matters, not whether it was answered.
            if let Err(e) = Ctx::bare(lab).send(p) {
                tracing::debug!("exercise traffic: {e}");
            }
        }
        Action::Run { member, command } => {
            let ns = lab.netns(member)?;
            let spawn = |source: std::io::Error| match source.kind() {
                std::io::ErrorKind::Interrupted => ObserveError::Interrupted {
                    member: member.clone(),
                    run: command.clone(),
                    source: interrupt::Interrupted,
                },
                _ => ObserveError::Spawn {
                    member: member.clone(),
                    run: command.clone(),
                    source,
                },
            };
            let out = ns
                .run(|| child::output(Command::new("sh").arg("-c").arg(command)))
                .map_err(LabError::from)?
                .map_err(spawn)?;
            if !out.status.success() {
                return Err(ObserveError::Action {
                    member: member.clone(),
                    run: command.clone(),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
        Action::Policy { yaml } => {
            let policies = crate::policy::yaml::parse("exercise", yaml)
                .map_err(|e| LabError::from(crate::policy::PolicyError::from(e)))?;
            lab::policy::apply(lab.name(), policies, false)?;
        }
        Action::PolicyDelete { name } => {
            lab::policy::delete(lab.name(), &[lab::policy::Target::Name(name.clone())])?;
        }
        Action::Answer { .. } => {}
    }
    Ok(())
}

/// `LO-HI`.
pub fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo > 0 && lo <= hi).then_some((lo, hi))
}

/// `cmd` (a shell line) inside `ns`: its exit status and output.
fn shell(ns: &NetNs, cmd: &str) -> Option<std::process::Output> {
    ns.run(|| child::output(Command::new("sh").arg("-c").arg(cmd)))
        .ok()?
        .ok()
}

/// `cmd`'s stdout, or None when it failed.
fn output(ns: &NetNs, cmd: &str) -> Option<String> {
    let out = shell(ns, cmd)?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The snapshot key of an `unchanged` check.
pub fn snapshot_key(member: &str, table: Option<&str>) -> String {
    match table {
        Some(t) => format!("{member} {t}"),
        None => member.to_owned(),
    }
}

/// What `unchanged` compares: one table, or the whole ruleset and the
/// routes; without counters (`nft -s`).
pub fn snapshot(lab: &Lab, member: &str, table: Option<&str>) -> Result<Snapshot, ObserveError> {
    let ns = lab.netns(member)?;
    Ok(match table {
        // `table` passed the lint: `FAMILY NAME`, plain words.
        Some(t) => Snapshot {
            nft: output(&ns, &format!("nft -s list table {t}")).unwrap_or_default(),
            routes: String::new(),
        },
        None => Snapshot {
            nft: output(&ns, "nft -s list ruleset").unwrap_or_default(),
            routes: output(&ns, "ip -4 route show table all").unwrap_or_default(),
        },
    })
}

/// The snapshots an exercise's `unchanged` checks compare against.
pub fn watched(ex: &Exercise) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = ex
        .checks()
        .filter_map(|c| match c {
            Check::Unchanged { member, table } => Some((member.clone(), table.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One task's or guard's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub title: String,
    pub passed: bool,
    /// Not checked: a task it needs did not pass.
    pub skipped: bool,
    /// A task that works in the broken lab and must keep working.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_working: bool,
    /// What was observed, one sentence per failed check.
    pub failures: Vec<String>,
    /// A guard: why it matters (shown when it fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub exercise: String,
    pub lab: String,
    pub tasks: Vec<Outcome>,
    pub guards: Vec<Outcome>,
    pub passed: bool,
    pub elapsed_ms: u64,
}

impl CheckReport {
    pub fn guard_failed(&self) -> bool {
        self.guards.iter().any(|g| !g.passed)
    }

    /// A guard failed, or a task that says why it matters: a shortcut was
    /// caught, and the participant is told why.
    pub fn caught(&self) -> bool {
        self.guard_failed()
            || self
                .tasks
                .iter()
                .any(|t| !t.passed && !t.skipped && t.why.is_some())
    }
}

/// Runs every task's checks (in order, honouring `needs`) and every
/// guard. Ctrl-C ends it with `Interrupted` (nothing is judged).
pub fn check(
    lab: &Lab,
    attempt: &Attempt,
    ex: &Exercise,
) -> Result<CheckReport, interrupt::Interrupted> {
    let started = Instant::now();
    let ctx = Ctx {
        lab,
        attempt: Some(attempt),
    };
    let run_all = |checks: &[Check]| -> Result<Vec<String>, interrupt::Interrupted> {
        let mut failures = Vec::new();
        for c in checks {
            let result = ctx.run(c);
            // A probe cut short by Ctrl-C is not a failure to report.
            interrupt::check()?;
            if let Err(f) = result {
                failures.push(f);
            }
        }
        Ok(failures)
    };
    let mut tasks: Vec<Outcome> = Vec::new();
    for t in &ex.tasks {
        let blocked: Vec<&String> = t
            .needs
            .iter()
            .filter(|n| !tasks.iter().any(|o| &o.id == *n && o.passed))
            .collect();
        let (failures, skipped) = if blocked.is_empty() {
            (run_all(&t.checks)?, false)
        } else {
            let names: Vec<&str> = blocked.iter().map(|s| s.as_str()).collect();
            (
                vec![format!(
                    "not checked yet: it needs {} first",
                    names.join(", ")
                )],
                true,
            )
        };
        tasks.push(Outcome {
            id: t.id.clone(),
            title: t.title.clone(),
            passed: failures.is_empty(),
            skipped,
            keep_working: t.keep_working,
            failures,
            why: t.why.as_ref().map(|w| w.trim().to_owned()),
        });
    }
    let mut guards: Vec<Outcome> = Vec::new();
    for (i, g) in ex.guards.iter().enumerate() {
        let failures = run_all(&g.checks)?;
        guards.push(Outcome {
            id: format!("guard-{}", i + 1),
            title: g.title.clone(),
            passed: failures.is_empty(),
            skipped: false,
            keep_working: false,
            failures,
            why: Some(g.why.trim().to_owned()),
        });
    }
    let passed = tasks.iter().all(|t| t.passed) && guards.iter().all(|g| g.passed);
    Ok(CheckReport {
        exercise: ex.id.clone(),
        lab: lab.name().to_owned(),
        tasks,
        guards,
        passed,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// How an answer fares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Right,
    Wrong,
    /// Not an answer this exercise can judge: which answers are possible.
    Unjudgeable(String),
}

/// Every name labctl prints for a member, lowercase: `pod-a`,
/// `LAB/pod-a` (the tracer, observe, pods), `LAB-pod-a` (its namespace).
fn member_of(lab: &Lab, word: &str) -> Option<String> {
    let w = word.to_ascii_lowercase();
    let l = lab.name().to_ascii_lowercase();
    let bare = w
        .strip_prefix(&format!("{l}/"))
        .or_else(|| w.strip_prefix(&format!("{l}-")))
        .unwrap_or(&w);
    lab.endpoints()
        .into_iter()
        .find(|e| e.name.eq_ignore_ascii_case(bare))
        .map(|e| e.name)
}

/// Words of an answer: split on spaces and commas, members by their
/// member name, the rest uppercase; sorted.
fn words(lab: &Lab, text: &str) -> Vec<String> {
    let mut w: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| member_of(lab, w).unwrap_or_else(|| w.to_ascii_uppercase()))
        .collect();
    w.sort();
    w
}

/// The VIP of service `to`, and its backends' addresses.
fn service_addrs(lab: &Lab, to: &str) -> Option<(Ipv4Addr, Vec<Ipv4Addr>)> {
    let (vip, _) = lab.service(to)?;
    let backends = lab
        .state
        .services
        .iter()
        .find(|s| s.vip == vip)
        .map(|s| {
            s.backends
                .iter()
                .filter_map(|b| lab.endpoint(b).map(|e| e.addr))
                .collect()
        })
        .unwrap_or_default();
    Some((vip, backends))
}

/// Judges `text` against the exercise's question(s) as the lab stands
/// (a wire answer by what the exercise expects the wire to show; the
/// `wire` check then also captures it).
pub fn judge(lab: &Lab, ex: &Exercise, text: &str) -> Judgement {
    let reasons = super::lint::kernel_reasons().unwrap_or_default();
    for c in ex.checks() {
        match c {
            Check::Answer { expect } => {
                let want = words(lab, expect);
                let got = words(lab, text);
                if got == want {
                    return Judgement::Right;
                }
                // The same kinds of words: members where members are
                // expected, reasons where reasons are.
                let kinds = |ws: &[String]| {
                    let mut k: Vec<u8> = ws
                        .iter()
                        .map(|w| {
                            if lab.endpoint(w).is_some() {
                                0
                            } else if reasons.iter().any(|r| r == w) {
                                1
                            } else {
                                2
                            }
                        })
                        .collect();
                    k.sort();
                    k
                };
                if kinds(&got) == kinds(&want) {
                    return Judgement::Wrong;
                }
                let parts: Vec<String> = kinds(&want)
                    .into_iter()
                    .map(|k| match k {
                        0 => format!(
                            "a member ({}, or as LAB/MEMBER)",
                            lab.endpoints()
                                .iter()
                                .map(|e| e.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        1 => "a drop reason as the tracer prints it (see `labctl explain`)"
                            .to_owned(),
                        _ => "a word".to_owned(),
                    })
                    .collect();
                return Judgement::Unjudgeable(format!(
                    "an answer here is {}",
                    parts.join(" and ")
                ));
            }
            Check::Wire { to, expect, .. } => {
                let (vip, backends) =
                    service_addrs(lab, to).unwrap_or((Ipv4Addr::UNSPECIFIED, Vec::new()));
                let t = text.trim().to_ascii_lowercase();
                let side = match t.as_str() {
                    "vip" => Some(WireSide::Vip),
                    "backend" => Some(WireSide::Backend),
                    _ => match t.parse::<Ipv4Addr>() {
                        Ok(a) if a == vip => Some(WireSide::Vip),
                        Ok(a) if backends.contains(&a) => Some(WireSide::Backend),
                        Ok(_) => return Judgement::Wrong,
                        Err(_) => None,
                    },
                };
                return match side {
                    Some(s) if s == *expect => Judgement::Right,
                    Some(_) => Judgement::Wrong,
                    None => Judgement::Unjudgeable(format!(
                        "an answer here is `vip` or `backend`, or the address the SYNs carry (the VIP {vip} or a backend's)"
                    )),
                };
            }
            _ => {}
        }
    }
    Judgement::Unjudgeable(
        "this exercise asks no question; fix the lab and run `labctl exercise check`".into(),
    )
}

/// Which conntrack entries a `conntrack` check counts.
struct Filter<'a> {
    proto: Option<&'a str>,
    sport: Option<u16>,
    dport: Option<u16>,
    reply_src: Option<Ipv4Addr>,
    snat: Option<bool>,
}

struct Ctx<'a> {
    lab: &'a Lab,
    attempt: Option<&'a Attempt>,
}

/// A trace sink that keeps nothing: the check reads the kernel's counts.
struct CountOnly;

impl Sink for CountOnly {
    fn drop_seen(&mut self, _: &DropRecord) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> Ctx<'a> {
    fn bare(lab: &'a Lab) -> Self {
        Self { lab, attempt: None }
    }

    fn endpoint(&self, name: &str) -> Result<Endpoint, String> {
        if let Some(e) = self.lab.endpoint(name) {
            return Ok(e);
        }
        name.parse::<Ipv4Addr>()
            .map(|addr| Endpoint {
                name: name.to_owned(),
                netns: None,
                addr,
            })
            .map_err(|_| format!("`{name}` is neither a member of the lab nor an address"))
    }

    fn netns(&self, member: &str) -> Result<NetNs, String> {
        self.lab.netns(member).map_err(|e| e.to_string())
    }

    fn answer(&self) -> Option<&str> {
        self.attempt.and_then(|a| a.answer.as_deref())
    }

    /// Ok, or one sentence saying what was observed.
    fn run(&self, check: &Check) -> Result<(), String> {
        match check {
            Check::Probe(p) => self.probe(p),
            Check::Drops {
                member,
                during,
                reason,
                at_least,
            } => self.drops(member, during, reason.as_deref(), *at_least),
            Check::Conntrack {
                member,
                proto,
                sport,
                dport,
                reply_src,
                snat,
                at_least,
                at_most,
            } => {
                let reply_src = reply_src
                    .as_deref()
                    .map(|r| self.endpoint(r).map(|e| e.addr))
                    .transpose()?;
                self.conntrack(
                    member,
                    Filter {
                        proto: proto.as_deref(),
                        sport: *sport,
                        dport: *dport,
                        reply_src,
                        snat: *snat,
                    },
                    *at_least,
                    *at_most,
                )
            }
            Check::Sysctl {
                member,
                key,
                equals,
                at_least,
            } => self.sysctl(member, key, equals.as_deref(), *at_least),
            Check::Route {
                member,
                to,
                dev,
                via,
                reachable,
            } => self.route(member, to, dev.as_deref(), via.as_deref(), *reachable),
            Check::Unchanged { member, table } => self.unchanged(member, table.as_deref()),
            Check::Service { name, backends } => self.service(name, backends),
            Check::Wire { from, to, expect } => self.wire(from, to, *expect),
            Check::Verdict {
                from,
                to,
                proto,
                port,
                allowed,
            } => self.verdict(from, to, *proto, *port, *allowed),
            Check::Answer { expect } => {
                let want = words(self.lab, expect);
                match self.answer() {
                    None => Err("no answer yet: `labctl exercise answer ...`".into()),
                    Some(a) if words(self.lab, a) == want => Ok(()),
                    Some(a) => Err(format!("the answer `{a}` is not what the lab shows")),
                }
            }
            Check::Script { member, command } => {
                let ns = self.netns(member)?;
                let out = shell(&ns, command)
                    .ok_or_else(|| format!("cannot run `{command}` in {member}"))?;
                if out.status.success() {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                let text: String = text.trim().chars().take(400).collect();
                Err(format!(
                    "`{command}` in {member} failed ({}){}",
                    out.status,
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                ))
            }
        }
    }

    /// A `verdict` check: the lab's policies judge the connection.
    fn verdict(
        &self,
        from: &PolicyParty,
        to: &PolicyParty,
        proto: Proto,
        port: u16,
        allowed: bool,
    ) -> Result<(), String> {
        let who = |p: &PolicyParty| match p {
            PolicyParty::Member(m) => lab::policy::Who::Member(m.clone()),
            PolicyParty::New { namespace, labels } => lab::policy::Who::New {
                namespace: namespace.clone(),
                labels: labels.clone(),
            },
        };
        let protocol = match proto {
            Proto::Udp => crate::policy::model::Protocol::Udp,
            Proto::Tcp => crate::policy::model::Protocol::Tcp,
            other => return Err(format!("a verdict is for tcp or udp, not {other:?}")),
        };
        let v = lab::policy::would_allow(self.lab, &who(from), &who(to), port, protocol)
            .map_err(|e| e.to_string())?;
        if v.allowed == allowed {
            return Ok(());
        }
        let hop = v.deciding();
        let by: Vec<String> = hop.selected_by.iter().map(ToString::to_string).collect();
        let port = format!("{port}/{}", format!("{proto:?}").to_lowercase());
        Err(if v.allowed {
            format!("{from} → {to} {port} is allowed by the policies")
        } else if by.is_empty() {
            format!("{from} → {to} {port} is denied")
        } else {
            format!("{from} → {to} {port} is denied ({})", by.join(", "))
        })
    }

    fn sysctl(
        &self,
        member: &str,
        key: &str,
        equals: Option<&str>,
        at_least: Option<i64>,
    ) -> Result<(), String> {
        if !super::lint::valid_sysctl_key(key) {
            return Err(format!("`{key}` is not a network sysctl"));
        }
        let ns = self.netns(member)?;
        let parts: Vec<&str> = key.split('.').collect();
        let value = ns
            .run(|| sysctl::read(&parts))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read {key} in {member}: {e}"))?;
        let ok = match (equals, at_least) {
            (Some(want), _) => value == want,
            (None, Some(min)) => value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v >= min),
            (None, None) => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{key} is {value} in {member}"))
        }
    }

    fn unchanged(&self, member: &str, table: Option<&str>) -> Result<(), String> {
        let key = snapshot_key(member, table);
        let before = self
            .attempt
            .and_then(|a| a.snapshots.get(&key))
            .ok_or_else(|| format!("no snapshot of {key} was taken at the start"))?;
        let now = snapshot(self.lab, member, table).map_err(|e| e.to_string())?;
        match table {
            Some(t) if now.nft.trim().is_empty() => {
                Err(format!("{member}'s nft table {t} is gone"))
            }
            Some(t) if now.nft != before.nft => Err(format!(
                "{member}'s nft table {t} is not what it was at the start (`nft list table {t}`)"
            )),
            None if now.nft != before.nft => Err(format!(
                "{member}'s nft ruleset is not what it was at the start"
            )),
            None if now.routes != before.routes => Err(format!(
                "{member}'s routes are not what they were at the start"
            )),
            _ => Ok(()),
        }
    }

    fn service(&self, name: &str, backends: &[String]) -> Result<(), String> {
        let views = lab::services::list(self.lab)
            .map_err(|e| format!("cannot read the services from the kernel: {e}"))?;
        let full = format!("{}/{name}", self.lab.name());
        let want: BTreeSet<String> = backends.iter().cloned().collect();
        let ours: Vec<_> = views
            .iter()
            .filter(|v| v.service.as_deref() == Some(&full))
            .collect();
        if ours.is_empty() {
            return Err(format!(
                "service {name} is not in the datapath's tables any more"
            ));
        }
        for v in ours {
            let got: BTreeSet<String> = v
                .backends
                .iter()
                .map(|b| {
                    b.pod
                        .as_deref()
                        .map(|p| self.lab.local_name(p).to_owned())
                        .or_else(|| b.addr.map(|a| a.to_string()))
                        .unwrap_or_else(|| "nothing".into())
                })
                .collect();
            if got != want {
                let got: Vec<String> = got.into_iter().collect();
                return Err(format!(
                    "service {name} ({}) goes to {} in the datapath's own tables ({})",
                    v.address(),
                    if got.is_empty() {
                        "no backend".to_owned()
                    } else {
                        got.join(", ")
                    },
                    v.source
                ));
            }
        }
        Ok(())
    }

    fn spec(&self, p: &Probe) -> Result<TrafficSpec, String> {
        let mut spec = TrafficSpec {
            proto: p.proto,
            source_port: p.sport,
            ..TrafficSpec::default()
        };
        if let Some(backend) = &p.backend {
            let (member, port) = backend
                .split_once(':')
                .ok_or_else(|| format!("`{backend}` is not MEMBER:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("`{port}` is not a port"))?;
            spec.servers = vec![(self.endpoint(member)?, port)];
        }
        if let Some(port) = p.port {
            spec.port = port;
        }
        if let Some(c) = p.count {
            spec.count = c;
        }
        if let Some(s) = p.size {
            spec.size = s;
        }
        if p.proto == Proto::TcpStream {
            spec.duration = Some(Duration::from_secs_f64(p.seconds.unwrap_or(2.0)));
        }
        Ok(spec)
    }

    fn send(&self, p: &Probe) -> Result<traffic::TrafficReport, String> {
        let mut spec = self.spec(p)?;
        let from = self.endpoint(&p.from)?;
        // A service (unless the probe names its own backend server).
        let service = match p.backend {
            None => self.lab.service_traffic(&p.to, &mut spec, p.port.is_some()),
            Some(_) => None,
        };
        let to = match service {
            Some(to) => to,
            None => self.endpoint(&p.to)?,
        };
        // Under socket-LB the pod's sockets are made in its cgroup.
        let _as_pod = self
            .lab
            .pod_cgroup(&p.from)
            .map(|c| crate::kernel::cgroup::Joined::enter(&c))
            .transpose()
            .map_err(|e| format!("cannot act as pod {}: {e}", p.from))?;
        traffic::run(&from, &to, &spec)
            .map_err(|e| format!("cannot send from {} to {}: {e}", p.from, p.to))
    }

    /// The [`Check::Wire`] check.
    fn wire(&self, from: &str, to: &str, expect: WireSide) -> Result<(), String> {
        let (vip, _) = self
            .lab
            .service(to)
            .ok_or_else(|| format!("`{to}` is not a service of this lab"))?;
        let probe = Probe {
            from: from.to_owned(),
            to: to.to_owned(),
            proto: Proto::Tcp,
            port: None,
            count: Some(3),
            size: None,
            seconds: None,
            answered: true,
            seen_as: None,
            min_bytes: None,
            sport: None,
            backend: None,
            backends_at_least: None,
        };
        let mut sent = Ok(());
        let dsts = lab::services::capture_syn_destinations(self.lab, from, || {
            sent = self.send(&probe).map(drop);
        })
        .map_err(|e| e.to_string())?;
        sent?;
        let kinds: BTreeSet<WireSide> = dsts
            .iter()
            .map(|d| {
                if *d == vip {
                    WireSide::Vip
                } else {
                    WireSide::Backend
                }
            })
            .collect();
        let seen = match kinds.into_iter().collect::<Vec<_>>()[..] {
            [one] => one,
            [] => return Err(format!("no SYN from {from} to {to} was captured")),
            _ => {
                return Err(format!(
                    "a capture on {from}'s eth0 shows both the VIP and backend addresses"
                ));
            }
        };
        if seen != expect {
            return Err(format!(
                "a capture on {from}'s eth0 shows the {} address, where this lab should show the {}",
                seen.as_str(),
                expect.as_str()
            ));
        }
        // The word, or an address of the kind the capture shows (any
        // backend's: which one a SYN goes to is the balancer's draw).
        let backends = service_addrs(self.lab, to)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let said = |a: &str| {
            let a = a.trim();
            a.eq_ignore_ascii_case(seen.as_str())
                || a.parse::<Ipv4Addr>().is_ok_and(|addr| {
                    dsts.contains(&addr) || (seen == WireSide::Backend && backends.contains(&addr))
                })
        };
        match self.answer() {
            None => Err(
                "no answer yet: `labctl exercise answer vip` or `... backend` (or the address)"
                    .into(),
            ),
            Some(a) if said(a) => Ok(()),
            Some(a) => Err(format!("the answer `{a}` is not what the wire shows")),
        }
    }

    fn probe(&self, p: &Probe) -> Result<(), String> {
        let r = self.send(p)?;
        let what = format!(
            "{}{} from {} to {}{}",
            p.proto,
            p.size
                .map(|s| format!(" of {s} bytes (--size {s})"))
                .unwrap_or_default(),
            p.from,
            p.to,
            r.port
                .map(|port| format!(" port {port}"))
                .unwrap_or_default()
        );
        if p.proto == Proto::TcpStream {
            let bytes = r.bytes.unwrap_or(0);
            let min = p.min_bytes.unwrap_or(1);
            return if (bytes >= min) == p.answered {
                Ok(())
            } else {
                Err(format!(
                    "{what}: {bytes} bytes arrived in {:.0} s",
                    p.seconds.unwrap_or(2.0)
                ))
            };
        }
        let answered = if p.answered {
            r.all_answered()
        } else {
            r.answered == 0
        };
        if !answered {
            let errors: Vec<String> = r.errors.iter().map(|(e, n)| format!("{n}× {e}")).collect();
            return Err(format!(
                "{what}: {} of {} answered{}",
                r.answered,
                r.sent,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join(", "))
                }
            ));
        }
        if let Some(n) = p.backends_at_least
            && r.backends.len() < n
        {
            let by: Vec<String> = r
                .backends
                .iter()
                .map(|(b, c)| format!("{b} ×{c}"))
                .collect();
            return Err(format!(
                "{what}: answered by {} backend(s) ({}), not at least {n}",
                r.backends.len(),
                if by.is_empty() {
                    "none named".into()
                } else {
                    by.join(", ")
                }
            ));
        }
        if let Some(seen) = &p.seen_as {
            let want = self.endpoint(seen)?.addr;
            let saw: Vec<Ipv4Addr> = r.server_saw.keys().copied().collect();
            if saw.is_empty() || saw.iter().any(|a| *a != want) {
                let saw: Vec<String> = saw.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{what}: the server saw the source as {}",
                    if saw.is_empty() {
                        "nothing".to_owned()
                    } else {
                        saw.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }

    fn drops(
        &self,
        at: &str,
        during: &Traffic,
        reason: Option<&str>,
        at_least: Option<u64>,
    ) -> Result<(), String> {
        let ns = self.netns(at)?;
        let opts = TraceOptions {
            filters: Filters {
                netns: Some(ns),
                ..Filters::default()
            },
            // Counts only: the kernel's per-reason counters are exact.
            summary: true,
            interval: Duration::from_secs(3600),
            duration: Some(Duration::from_secs(60)),
            ring_bytes: 1 << 16,
            ..TraceOptions::default()
        };
        let tracer = session::start(opts, CountOnly)
            .map_err(|e| format!("cannot trace drops in {at}: {e:#}"))?;
        let sent = match during {
            Traffic::Probe(p) => self.send(p).map(|_| ()),
            Traffic::Spoofed {
                from,
                src,
                to,
                count,
            } => {
                let parse = |a: &str| {
                    a.parse::<Ipv4Addr>()
                        .map_err(|_| format!("`{a}` is not an IPv4 address"))
                };
                faults::send_spoofed(self.lab, from, parse(src)?, parse(to)?, count.unwrap_or(5))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        let summary = tracer
            .stop()
            .map_err(|e| format!("cannot trace drops in {at}: {e:#}"))?;
        sent?;
        let total = summary.total();
        let what = match during {
            Traffic::Probe(p) => format!("{} from {} to {}", p.proto, p.from, p.to),
            Traffic::Spoofed { from, src, to, .. } => {
                format!("datagrams from {from} forged as {src} to {to}")
            }
        };
        match reason {
            None if total == 0 => Ok(()),
            None => Err(format!(
                "{at} dropped {total} packets of {what} ({})",
                summary
                    .by_reason
                    .iter()
                    .map(|(r, n)| format!("{n}× {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(r) => {
                let n = summary.by_reason.get(r).copied().unwrap_or(0);
                let want = at_least.unwrap_or(1);
                if n >= want {
                    Ok(())
                } else {
                    Err(format!(
                        "the tracer saw {n} {r} drops in {at} for {what} (expected at least {want})"
                    ))
                }
            }
        }
    }

    fn conntrack(
        &self,
        member: &str,
        f: Filter<'_>,
        at_least: Option<u64>,
        at_most: Option<u64>,
    ) -> Result<(), String> {
        let ns = self.netns(member)?;
        let entries = Ctnetlink::open_in(Some(&ns))
            .and_then(|mut c| c.dump(None))
            .map_err(|e| format!("cannot read {member}'s conntrack table: {e}"))?;
        let proto_num = f.proto.map(|p| lab_common::proto::number(p).unwrap_or(0));
        let n = entries
            .iter()
            .filter(|e| proto_num.is_none_or(|p| e.proto_num == p))
            .filter(|e| f.sport.is_none_or(|s| e.orig.sport == Some(s)))
            .filter(|e| f.dport.is_none_or(|d| e.orig.dport == Some(d)))
            .filter(|e| {
                f.reply_src
                    .is_none_or(|r| e.reply.src == std::net::IpAddr::V4(r))
            })
            .filter(|e| f.snat.is_none_or(|s| e.is_snat() == s))
            .count() as u64;
        let (proto, dport, snat) = (f.proto, f.dport, f.snat);
        if at_least.is_some_and(|m| n < m) || at_most.is_some_and(|m| n > m) {
            let mut what = proto.unwrap_or("").to_owned();
            if let Some(s) = f.sport {
                what.push_str(&format!(" from port {s}"));
            }
            if let Some(d) = dport {
                what.push_str(&format!(" port {d}"));
            }
            if let Some(r) = f.reply_src {
                what.push_str(&format!(" answered by {r}"));
            }
            Err(format!(
                "{member}'s conntrack table has {n}{}{} entries",
                if what.is_empty() {
                    String::new()
                } else {
                    format!(" {}", what.trim())
                },
                match snat {
                    Some(true) => " source-NATed",
                    Some(false) => " untranslated",
                    None => "",
                }
            ))
        } else {
            Ok(())
        }
    }

    fn route(
        &self,
        member: &str,
        to: &str,
        dev: Option<&str>,
        via: Option<&str>,
        reachable: bool,
    ) -> Result<(), String> {
        let ns = self.netns(member)?;
        let addr = self.endpoint(to)?.addr;
        let got = output(&ns, &format!("ip -o -4 route get {addr}"));
        let word_after = |key: &str| {
            got.as_deref().and_then(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == key)?;
                words.next().map(str::to_owned)
            })
        };
        let via_dev = word_after("dev");
        let gateway = word_after("via");
        match (reachable, &got) {
            (false, None) => return Ok(()),
            (false, Some(_)) => {
                return Err(format!(
                    "{member} now has a route to {to}{}",
                    via_dev
                        .map(|d| format!(" (out of {d})"))
                        .unwrap_or_default()
                ));
            }
            (true, None) => return Err(format!("{member} has no route to {to}")),
            (true, Some(_)) => {}
        }
        if let (Some(want), Some(d)) = (dev, &via_dev)
            && d != want
        {
            return Err(format!(
                "{member} sends traffic for {to} out of {d}, not {want}"
            ));
        }
        if let Some(want) = via
            && gateway.as_deref() != Some(want)
        {
            return Err(format!(
                "{member} sends traffic for {to} {}, not via {want}",
                match &gateway {
                    Some(g) => format!("via {g}"),
                    None => "straight to it (no gateway)".to_owned(),
                }
            ));
        }
        Ok(())
    }
}
